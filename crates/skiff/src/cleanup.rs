//! `skiff cleanup`: stops the node's pods and removes everything the node
//! agent put on the host (the job of k3s's killall script). A stopped
//! `skiff server` or `skiff agent` leaves all of it in place on purpose, so
//! that a restart interrupts no pod.
//!
//! Removal goes through the runtime's, the agent's and the pod network's
//! own code: sandboxes (their containers, shims, mounts, network namespaces
//! and cgroups), pod directories with their volume mounts, veths and addresses, the bridge, the VXLAN device (routes,
//! neighbour and FDB entries go with it), host-gw routes, and the nftables
//! tables of the pod network (`<table>`) and the service proxy
//! (`<table>_proxy`). Images, certificates and the datastore stay.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use runtime::containers::{Runtime, ShimCommand};
use runtime::cri::RuntimeService;
use runtime::images::{ImageResolver, Store};

#[derive(clap::Args)]
pub struct CleanupArgs {
    /// The node's data directory, as given to `skiff server` or `skiff agent`.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// The node's network names, as given to the server or agent (both backends' leftovers are removed).
    #[command(flatten)]
    pub net: crate::agent::NodeNetworkArgs,
}

pub async fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("agent");
    let mut failures = Vec::new();
    if root.join("sandboxes").exists() || root.join("containers").exists() {
        if let Err(e) = remove_pods(&root).await {
            failures.push(format!("{e:#}"));
        }
    }
    if let Err(e) = remove_pod_dirs(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = remove_network(&args, &root).await {
        failures.push(format!("{e:#}"));
    }
    anyhow::ensure!(failures.is_empty(), "cleanup left something behind:\n{}", failures.join("\n"));
    eprintln!(
        "node cleaned: pods stopped and removed; bridge {}, VXLAN device {}, host-gw routes and nftables tables {} and {}_proxy deleted",
        args.net.bridge,
        network::overlay::device_name(&args.net.bridge),
        args.net.nft_table,
        args.net.nft_table
    );
    Ok(())
}

/// Stops and removes every sandbox and container of the node's runtime.
async fn remove_pods(root: &std::path::Path) -> anyhow::Result<()> {
    let images: Arc<dyn ImageResolver> = Arc::new(Store::open(root.join("images"), vec![]).context("opening the image store")?);
    let shim = ShimCommand { program: std::env::current_exe()?, args_prefix: vec![crate::agent::SHIM_SUBCOMMAND.into()] };
    let runtime = Runtime::open(root.to_path_buf(), images, shim).context("opening the container runtime")?;
    let mut failures = Vec::new();
    for sandbox in runtime.list_pod_sandboxes().await.context("listing the sandboxes")? {
        let _ = runtime.stop_pod_sandbox(&sandbox.id).await;
        if let Err(e) = runtime.remove_pod_sandbox(&sandbox.id).await {
            failures.push(format!("removing sandbox {}: {e:#}", sandbox.id));
        }
    }
    // Containers whose sandbox was already gone.
    for c in runtime.list_containers(None).await.context("listing the containers")? {
        if let Err(e) = runtime.remove_container(&c.id).await {
            failures.push(format!("removing container {}: {e:#}", c.id));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Each pod's directory with its volume mounts (secret and configMap
/// tmpfs, local-path binds), which the agent, not the runtime, made.
fn remove_pod_dirs(root: &std::path::Path) -> anyhow::Result<()> {
    let Ok(pods) = std::fs::read_dir(root.join("pods")) else { return Ok(()) };
    for pod in pods {
        kubelet::agent::volumes::teardown(&pod?.path())?;
    }
    Ok(())
}

async fn remove_network(args: &CleanupArgs, root: &std::path::Path) -> anyhow::Result<()> {
    // Any podCIDR does: the addresses to free come from the IPAM state, and
    // the bridge and table are found by name.
    let pod_cidr = std::fs::read_to_string(root.join("pod-cidr")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(|| "10.42.0.0/24".into());
    let config = network::NetConfig {
        bridge: args.net.bridge.clone(),
        cluster_cidr: pod_cidr.clone(),
        pod_cidr,
        mtu: Some(1500),
        state_dir: root.join("network"),
        nft_table: args.net.nft_table.clone(),
    };
    let net = network::PodNetwork::new(config).context("reading the pod network's state")?;
    for (sandbox, _) in net.allocations() {
        net.detach(&sandbox).await?;
    }
    net.teardown_host().await?;
    network::proxy::remove_table(&args.net.nft_table).await?;
    network::overlay::teardown(&args.net.bridge).await
}
