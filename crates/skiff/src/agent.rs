//! Wiring of the node agent: the image store, the runc runtime, the pod
//! network and the streaming server around `kubelet::agent::run`, for
//! `skiff server`'s own host and for `skiff agent` on a joined one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use runtime::containers::{Runtime, ShimCommand};
use runtime::images::{ImageResolver, Registries, Store};

/// The hidden subcommand the runtime re-executes this binary as, one shim per container.
pub const SHIM_SUBCOMMAND: &str = "container-shim";

/// Node agent settings shared by `skiff server` (its own node) and `skiff agent`.
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
    #[command(flatten)]
    pub net: NodeNetworkArgs,
    /// Registry host[:port] pulled from over plain HTTP (localhost and 127.0.0.1 always are). Repeatable.
    #[arg(long)]
    pub insecure_registry: Vec<String>,
    /// Registry mirrors, repository rewrites, credentials and TLS settings, in k3s's registries.yaml
    /// format; a missing file means none, a malformed one stops startup.
    #[arg(long, value_name = "FILE", default_value = runtime::images::mirrors::DEFAULT_REGISTRIES_FILE, value_parser = parse_registries)]
    pub registries: Registries,
    /// Directory of static pod manifests the agent runs and mirrors into the API.
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Cluster DNS address written into pods' resolv.conf (the kube-dns Service's ClusterIP)
    /// [default: on a server the 10th address of --service-cidr (10.43.0.10), on an agent 10.43.0.10].
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// Cluster domain: pods' DNS search list, and the zone the node's DNS server answers for.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Most processes one pod may run (its cgroup's pids.max); -1 for no limit, as the kubelet's --pod-max-pids.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub pod_max_pids: i64,
    /// A container's log file is rotated when it would grow past this size (a quantity: 10Mi, 512Ki, ...).
    #[arg(long, default_value = "10Mi", value_parser = parse_log_size)]
    pub container_log_max_size: u64,
    /// Log files kept per container, the live one included (at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    pub container_log_max_files: u16,
}

/// What names the node's pod network on the host; `skiff cleanup` takes the same.
#[derive(clap::Args, Clone)]
pub struct NodeNetworkArgs {
    /// Linux bridge the pods' veths are attached to.
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// nftables table holding masquerade and hostPort rules (the service proxy's is `<table>_proxy`).
    #[arg(long, default_value = "skiff")]
    pub nft_table: String,
    /// How pods reach other nodes' pods: vxlan (an overlay, as flannel's default) or host-gw (direct routes; nodes on one L2 segment).
    #[arg(long, default_value = "vxlan")]
    pub flannel_backend: network::overlay::Backend,
}

/// Reads and checks the registries file while the command line is parsed,
/// so a bad one is reported (with its field) before anything starts.
pub(crate) fn parse_registries(s: &str) -> Result<Registries, String> {
    Registries::load(std::path::Path::new(s)).map_err(|e| format!("{e:#}"))
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    let q = resources::quantity::Quantity::parse(s).map_err(|e| format!("{s:?} is not a quantity such as 10Mi: {e}"))?;
    u64::try_from(q.value()).ok().filter(|v| *v > 0).ok_or_else(|| format!("{s:?} must be a positive size"))
}

/// `skiff agent`: join a cluster from another machine and run its node agent.
#[derive(clap::Args, Clone)]
pub struct JoinArgs {
    /// URL of the API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    pub server: String,
    /// Join token (K10<CA hash>::server:<secret>): the contents of the server's DATA_DIR/server/token.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Directory for the node's certificates, kubeconfig, images and containers (under DATA_DIR/agent).
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The streaming server's TLS material.
struct StreamingTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// How long a joined agent waits for node IPAM before falling back: the
/// fallback range is likely another node's, so the server's controllers get time.
const JOINED_POD_CIDR_WAIT: Duration = Duration::from_secs(120);
/// k3s's cluster DNS address: the 10th address of the default service range.
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// Pause before a node agent that stopped on an error starts again.
const AGENT_RESTART: Duration = Duration::from_secs(10);
/// Pause between attempts to reach the server while joining.
const JOIN_RETRY: Duration = Duration::from_secs(5);

impl AgentArgs {
    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| kubelet::agent::AgentConfig::default().node_name).to_lowercase()
    }

    fn node_ip(&self) -> Ipv4Addr {
        self.node_ip.unwrap_or_else(kubelet::agent::hostinfo::internal_ip)
    }
}

/// The addresses the streaming server is reached at: its certificate's IP SANs.
fn serving_ips(node_ip: Ipv4Addr) -> Vec<IpAddr> {
    vec![node_ip.into(), Ipv4Addr::LOCALHOST.into()]
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
    let (cert_pem, key_pem) = pki.issue_node_serving_cert(&args.node_name(), &serving_ips(args.node_ip()))?;
    let tls = StreamingTls { ca_pem, cert_pem, key_pem };
    // kubeadm's role label: `kubectl get nodes` shows the server's node as the control plane.
    let labels = [("node-role.kubernetes.io/control-plane".to_string(), String::new())].into();
    run_node(client, tls, data_dir, cluster_cidr, None, labels, args).await
}

/// `skiff agent`: joins `args.server` (or reuses an earlier join) and runs the agent against it.
pub async fn run_joined(args: JoinArgs) -> anyhow::Result<()> {
    let token = apiserver::join::JoinToken::parse(&args.token).context("--token")?;
    let (node, node_ip) = (args.agent.node_name(), args.agent.node_ip());
    let agent_dir = args.data_dir.join("agent");
    let joined = loop {
        match crate::join::ensure_joined(&agent_dir, &args.server, &token, &node, &serving_ips(node_ip)).await {
            Ok(joined) => break joined,
            Err(e) if e.is::<crate::join::Refused>() => return Err(e),
            Err(e) => tracing::warn!("joining {} failed, retrying in {JOIN_RETRY:?}: {e:#}", args.server),
        }
        tokio::time::sleep(JOIN_RETRY).await;
    };
    // The server may be down (an agent restarting): static pods run regardless.
    let client = client::kubeconfig::from_kubeconfig_lazy(&joined.kubeconfig)?;
    let tls = StreamingTls { ca_pem: joined.ca_pem, cert_pem: joined.serving_cert_pem, key_pem: joined.serving_key_pem };
    run_node(client, tls, args.data_dir, joined.cluster_cidr, Some(JOINED_POD_CIDR_WAIT), Default::default(), args.agent).await
}

/// The node agent: image store, runc runtime, streaming server and pod network around `kubelet::agent::run`.
async fn run_node(
    client: kube::Client,
    tls: StreamingTls,
    data_dir: PathBuf,
    cluster_cidr: String,
    pod_cidr_wait: Option<Duration>,
    node_labels: std::collections::BTreeMap<String, String>,
    args: AgentArgs,
) -> anyhow::Result<()> {
    let root = data_dir.join("agent");
    let images_dir = root.join("images");
    if let Some(file) = &args.registries.source {
        tracing::info!(file = %file.display(), mirrors = ?args.registries.describe(), "registry settings loaded");
    }
    let store = Store::open(images_dir.clone(), args.insecure_registry.clone()).context("opening the image store")?;
    let images = Arc::new(store.with_registries(args.registries.clone()));
    // Air-gap: image archives dropped into DATA_DIR/agent/images are there before any pod starts.
    images.import_directory(&images_dir).await.context("importing image archives")?;
    let shim = ShimCommand { program: std::env::current_exe()?, args_prefix: vec![SHIM_SUBCOMMAND.into()] };
    let resolver: Arc<dyn ImageResolver> = images.clone();
    let rotation = runtime::containers::LogRotation { max_size: args.container_log_max_size, max_files: args.container_log_max_files.into() };
    let runtime = Arc::new(Runtime::open(root.clone(), resolver, shim).context("opening the container runtime")?.with_log_rotation(rotation));

    let mut streaming = kubelet::server::ServerConfig::new(tls.cert_pem, tls.key_pem, tls.ca_pem, runtime.clone());
    streaming.listen = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), args.kubelet_port);
    streaming.node_name = args.node_name();
    tokio::spawn(async move {
        if let Err(e) = kubelet::server::serve(streaming).await {
            tracing::error!("agent streaming server stopped: {e:#}");
        }
    });

    let defaults = kubelet::agent::AgentConfig::default();
    let (node_name, node_ip) = (args.node_name(), args.node_ip());
    let config = kubelet::agent::AgentConfig {
        node_name,
        data_dir: root.clone(),
        streaming_port: args.kubelet_port,
        cluster_dns: args.cluster_dns.unwrap_or(DEFAULT_CLUSTER_DNS).to_string(),
        cluster_domain: args.cluster_domain.trim_end_matches('.').to_lowercase(),
        pod_cidr_fallback: first_subnet(&cluster_cidr),
        pod_cidr_wait: pod_cidr_wait.unwrap_or(defaults.pod_cidr_wait),
        pod_manifest_path: args.pod_manifest_path,
        pod_max_pids: (args.pod_max_pids >= 0).then_some(args.pod_max_pids),
        node_ip: Some(node_ip),
        flannel_backend: args.net.flannel_backend,
        node_labels,
        ..defaults
    };
    // The service proxy (kube-proxy's job) runs beside the agent and, like
    // it, starts over after an error.
    let proxy = network::proxy::ProxyConfig::new(&config.node_name, vec![node_ip], &cluster_cidr, &args.net.nft_table);
    let proxy_client = client.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = network::proxy::run(proxy_client.clone(), proxy.clone()).await {
                tracing::error!("service proxy stopped: {e:#}; starting it again in {AGENT_RESTART:?}");
            }
            tokio::time::sleep(AGENT_RESTART).await;
        }
    });
    // Like a kubelet under systemd, an agent that stops on an error (the
    // API server gone for long, the pod network failing) starts over; it
    // adopts the pods it left running.
    loop {
        let (bridge, nft_table, state_dir, cluster_cidr) = (args.net.bridge.clone(), args.net.nft_table.clone(), root.join("network"), cluster_cidr.clone());
        let backend = args.net.flannel_backend;
        let mtu = tokio::task::spawn_blocking(move || network::overlay::pod_mtu(backend, node_ip)).await?;
        let network = move |pod_cidr: String| {
            let net = network::NetConfig { bridge, pod_cidr, cluster_cidr, mtu, state_dir, nft_table };
            Ok(Arc::new(network::PodNetwork::new(net)?))
        };
        let Err(e) = kubelet::agent::run(client.clone(), config.clone(), runtime.clone(), images.clone(), network).await;
        tracing::error!("node agent stopped: {e:#}; starting it again in {AGENT_RESTART:?}");
        tokio::time::sleep(AGENT_RESTART).await;
    }
}

/// The first /24 of the cluster CIDR: the pod range to use until node IPAM assigns one.
fn first_subnet(cluster_cidr: &str) -> String {
    let base = cluster_cidr.split('/').next().unwrap_or("10.42.0.0");
    format!("{base}/24")
}
