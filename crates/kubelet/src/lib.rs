//! The node agent. For now: simulated nodes (`skiff sim`), which register
//! Nodes, renew their Leases and play the node's part for pods bound to
//! them without running anything; and a kube client built from a kubeconfig.

pub mod client;
pub mod sim;
mod sim_node;
mod sim_pods;
