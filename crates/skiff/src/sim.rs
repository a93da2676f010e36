//! `skiff sim`: simulated nodes against any API server (see the kubelet crate).

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// CPU capacity of each node.
    #[arg(long, default_value = "8")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "32Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "100Gi")]
    ephemeral_storage: String,
    /// Node names are this prefix followed by 0, 1, 2, ...
    #[arg(long, default_value = "sim-")]
    name_prefix: String,
}

/// Runs until SIGINT/SIGTERM; the nodes' leases then stop being renewed.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let client = client::kubeconfig::from_kubeconfig(&args.kubeconfig).await?;
    let opts = kubelet::sim::Options {
        nodes: args.nodes,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        ephemeral_storage: args.ephemeral_storage,
        name_prefix: args.name_prefix,
    };
    tokio::select! {
        r = kubelet::sim::run(client, opts) => r,
        _ = crate::shutdown_signal() => Ok(()),
    }
}
