//! The node agent (`agent`) with its streaming endpoint (`server`), simulated
//! nodes (`skiff sim`) that play the node's part without running anything.

pub mod agent;
mod node_lease;
pub mod server;
pub mod sim;
mod sim_node;
mod sim_pods;
