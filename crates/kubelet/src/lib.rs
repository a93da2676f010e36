//! The node agent (`agent`) with its streaming endpoint (`server`), simulated
//! nodes (`skiff sim`) that play the node's part without running anything,
//! and a kube client built from a kubeconfig.

pub mod agent;
pub mod client;
mod node_lease;
pub mod server;
pub mod sim;
mod sim_node;
mod sim_pods;
