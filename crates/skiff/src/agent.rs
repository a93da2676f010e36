//! Wiring of the node agent: the image store, the runc runtime, the pod
//! network and the streaming server around `kubelet::agent::run`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use runtime::containers::{Runtime, ShimCommand};
use runtime::images::{ImageResolver, Store};

/// The hidden subcommand the runtime re-executes this binary as, one shim per container.
pub const SHIM_SUBCOMMAND: &str = "container-shim";

/// Node agent settings shared by `skiff server` (its own node).
#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// Name of this node [default: the host name].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Port of the agent's HTTPS endpoint (logs, exec, attach, port-forward), as the kubelet's 10250.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Address other nodes and the API server reach this node at [default: the default route's address].
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// Linux bridge the pods' veths are attached to.
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// nftables table holding masquerade and hostPort rules.
    #[arg(long, default_value = "skiff")]
    pub nft_table: String,
    /// Registry host[:port] pulled from over plain HTTP (localhost and 127.0.0.1 always are). Repeatable.
    #[arg(long)]
    pub insecure_registry: Vec<String>,
    /// Directory of static pod manifests the agent runs and mirrors into the API.
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Cluster DNS server written into pods' resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: String,
}

/// Runs the agent for this host against an in-process API server.
pub async fn run_local(
    client: kube::Client,
    pki: apiserver::pki::Pki,
    ca_pem: String,
    data_dir: PathBuf,
    cluster_cidr: String,
    args: AgentArgs,
) -> anyhow::Result<()> {
    let root = data_dir.join("agent");
    let images = Arc::new(Store::open(root.join("images"), args.insecure_registry.clone()).context("opening the image store")?);
    let shim = ShimCommand { program: std::env::current_exe()?, args_prefix: vec![SHIM_SUBCOMMAND.into()] };
    let resolver: Arc<dyn ImageResolver> = images.clone();
    let runtime = Arc::new(Runtime::open(root.clone(), resolver, shim).context("opening the container runtime")?);

    let defaults = kubelet::agent::AgentConfig::default();
    let node_name = args.node_name.clone().unwrap_or(defaults.node_name.clone()).to_lowercase();
    let node_ip = args.node_ip.unwrap_or_else(kubelet::agent::hostinfo::internal_ip);
    let ips: Vec<IpAddr> = vec![node_ip.into(), Ipv4Addr::LOCALHOST.into()];
    let (cert_pem, key_pem) = pki.issue_node_serving_cert(&node_name, &ips)?;
    let mut streaming = kubelet::server::ServerConfig::new(cert_pem, key_pem, ca_pem, runtime.clone());
    streaming.listen = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), args.kubelet_port);
    tokio::spawn(async move {
        if let Err(e) = kubelet::server::serve(streaming).await {
            tracing::error!("agent streaming server stopped: {e:#}");
        }
    });

    let config = kubelet::agent::AgentConfig {
        node_name,
        data_dir: root.clone(),
        streaming_port: args.kubelet_port,
        cluster_dns: args.cluster_dns,
        pod_cidr_fallback: first_subnet(&cluster_cidr),
        pod_manifest_path: args.pod_manifest_path,
        node_ip: Some(node_ip),
        ..defaults
    };
    let (bridge, nft_table, state_dir) = (args.bridge, args.nft_table, root.join("network"));
    let network = move |pod_cidr: String| {
        let net = network::NetConfig { bridge, pod_cidr, cluster_cidr, mtu: None, state_dir, nft_table };
        Ok(Arc::new(network::PodNetwork::new(net)?))
    };
    kubelet::agent::run(client, config, runtime, images, network).await
}

/// The first /24 of the cluster CIDR: the pod range to use until node IPAM assigns one.
fn first_subnet(cluster_cidr: &str) -> String {
    let base = cluster_cidr.split('/').next().unwrap_or("10.42.0.0");
    format!("{base}/24")
}
