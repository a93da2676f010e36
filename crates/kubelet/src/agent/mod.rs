//! The node agent: registers the Node, renews its Lease and runs the pods
//! bound to it through the runtime and the pod network.
//!
//! `run` registers the Node, waits briefly for node IPAM's podCIDR (else
//! uses the fallback), builds the pod network from it through the caller's
//! factory, then watches the pods bound to the node: one worker task per
//! pod UID (`worker`) syncs sandbox, volumes, images and containers with
//! the spec (kubelet's SyncPod), runs probes and writes status.

pub mod actions;
pub mod atomic_writer;
pub mod backoff;
pub mod containers_spec;
pub mod env;
pub mod events;
pub mod grpc_probe;
pub mod hostinfo;
pub mod image_gc;
pub mod images;
mod local_path;
pub mod node;
mod overlay;
mod pods;
pub mod probes;
mod start;
pub mod static_pods;
pub mod status;
mod sync;
mod terminate;
pub mod volume_sources;
pub mod volumes;
mod worker;
mod worker_status;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use network::PodNetwork;
use runtime::cri::{ImageService, RuntimeService};

/// What the agent is told. `Default` gives the k3s-like defaults noted per field.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (default: the host name, lower-cased).
    pub node_name: String,
    /// Pod directories (volumes, termination logs) go under `<data_dir>/pods` (default /var/lib/skiff/agent).
    pub data_dir: PathBuf,
    /// Node capacity `pods` (default 110).
    pub max_pods: u32,
    /// Port of the streaming server, published as daemonEndpoints.kubeletEndpoint (default 10250).
    pub streaming_port: u16,
    /// Nameserver for ClusterFirst pods (default 10.43.0.10).
    pub cluster_dns: String,
    /// Cluster domain (default cluster.local).
    pub cluster_domain: String,
    /// podCIDR used when node IPAM assigns none within `pod_cidr_wait` (default 10.42.0.0/24, 10 s).
    pub pod_cidr_fallback: String,
    pub pod_cidr_wait: Duration,
    /// Directory of static pod manifests (default none).
    pub pod_manifest_path: Option<PathBuf>,
    /// Extra Node labels (e.g. node-role.kubernetes.io/control-plane).
    pub node_labels: BTreeMap<String, String>,
    /// InternalIP override (default: first IPv4 of the default-route interface, else 127.0.0.1).
    pub node_ip: Option<Ipv4Addr>,
    /// The host's resolv.conf, for dnsPolicy Default (default /etc/resolv.conf).
    pub resolv_conf: PathBuf,
    /// Most processes one pod may run, as the kubelet's --pod-max-pids (default none).
    pub pod_max_pids: Option<i64>,
    /// Version shown as containerRuntimeVersion `skiff://<version>` (default this crate's version).
    pub runtime_version: String,
    /// How pods reach other nodes' pods (default vxlan, as flannel's).
    pub flannel_backend: network::overlay::Backend,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: hostinfo::hostname().to_lowercase(),
            data_dir: PathBuf::from("/var/lib/skiff/agent"),
            max_pods: 110,
            streaming_port: 10250,
            cluster_dns: "10.43.0.10".into(),
            cluster_domain: "cluster.local".into(),
            pod_cidr_fallback: "10.42.0.0/24".into(),
            pod_cidr_wait: Duration::from_secs(10),
            pod_manifest_path: None,
            node_labels: BTreeMap::new(),
            node_ip: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            pod_max_pids: None,
            flannel_backend: network::overlay::Backend::default(),
        }
    }
}

/// Everything a pod worker needs, shared.
pub(crate) struct Agent {
    pub client: kube::Client,
    pub config: AgentConfig,
    pub runtime: Arc<dyn RuntimeService>,
    pub images: Arc<dyn ImageService>,
    pub network: Arc<PodNetwork>,
    pub node_ip: Ipv4Addr,
    pub capacity: node::Capacity,
    pub events: events::Recorder,
    /// One container listing shared by all pod workers (see `containers`).
    pub container_snapshot: tokio::sync::Mutex<(Option<std::time::Instant>, Arc<Vec<runtime::cri::ContainerStatus>>)>,
    /// Wakes the static pod loop (a mirror pod is being deleted).
    pub static_kick: tokio::sync::Notify,
}

/// How old a shared container listing may be for a periodic sync.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(500);

impl Agent {
    /// All the runtime's containers, listed at most every 500 ms for all
    /// workers together unless `fresh` asks for a listing begun after the
    /// call: workers that asked while one was under way share the next one,
    /// so many pods starting at once do not queue one listing each.
    pub async fn containers(&self, fresh: bool) -> anyhow::Result<Arc<Vec<runtime::cri::ContainerStatus>>> {
        let asked = std::time::Instant::now();
        let mut snap = self.container_snapshot.lock().await;
        // snap.0 is when the stored listing began.
        let usable = |began: std::time::Instant| if fresh { began >= asked } else { began.elapsed() < SNAPSHOT_MAX_AGE };
        if snap.0.is_some_and(usable) {
            return Ok(snap.1.clone());
        }
        let began = std::time::Instant::now();
        let list = Arc::new(self.runtime.list_containers(None).await?);
        *snap = (Some(began), list.clone());
        Ok(list)
    }

    /// Allocatable resources for resourceFieldRef defaults and host facts for the downward API.
    pub fn field_context(&self, pod_ips: Vec<String>) -> env::FieldContext {
        env::FieldContext {
            host_ip: self.node_ip.to_string(),
            pod_ips,
            node_cpu_milli: self.capacity.cpus as i64 * 1000,
            node_memory: self.capacity.memory as i64,
            node_ephemeral_storage: self.capacity.ephemeral_storage as i64,
        }
    }
}

/// Runs the node agent until an error it cannot get past. `network_factory` is
/// called once with the node's podCIDR (from node IPAM, or the fallback)
/// and returns the pod network; `run` then calls `ensure_host` on it.
pub async fn run<F>(client: kube::Client, config: AgentConfig, runtime: Arc<dyn RuntimeService>, images: Arc<dyn ImageService>, network_factory: F) -> anyhow::Result<std::convert::Infallible>
where
    F: FnOnce(String) -> anyhow::Result<Arc<PodNetwork>> + Send,
{
    anyhow::ensure!(!config.node_name.is_empty(), "the node name must not be empty");
    std::fs::create_dir_all(config.data_dir.join("pods")).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let node_ip = config.node_ip.unwrap_or_else(hostinfo::internal_ip);
    let network_ready = Arc::new(AtomicBool::new(false));
    let kick = Arc::new(tokio::sync::Notify::new());
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), config.clone(), node_ip, images.clone(), network_ready.clone(), kick.clone()));
    let _abort_heartbeat = AbortOnDrop(heartbeat);

    let cidr = node::register_and_pod_cidr(&client, &config).await?;
    let network = network_factory(cidr.clone()).with_context(|| format!("setting up the pod network for {cidr}"))?;
    let mut attempt = 0u64;
    while let Err(e) = network.ensure_host().await {
        attempt += 1;
        anyhow::ensure!(attempt < 10, "setting up the host side of the pod network: {e:#}");
        tracing::warn!("setting up the pod network: {e:#}; retrying");
        tokio::time::sleep(Duration::from_secs(attempt.min(5))).await;
    }
    network_ready.store(true, Ordering::Relaxed);
    kick.notify_one();
    tracing::info!(node = config.node_name, pod_cidr = cidr, "pod network ready");
    let overlay = network.overlay(config.flannel_backend, &config.node_name, node_ip);
    let _abort_overlay = AbortOnDrop(tokio::spawn(overlay::run(client.clone(), config.node_name.clone(), overlay)));
    let _abort_dns = AbortOnDrop(tokio::spawn(cluster_dns(client.clone(), &config, network.gateway())));

    let agent = Arc::new(Agent {
        events: events::Recorder::new(client.clone(), config.node_name.clone()),
        capacity: node::capacity(&config),
        container_snapshot: tokio::sync::Mutex::new((None, Arc::new(Vec::new()))),
        static_kick: tokio::sync::Notify::new(),
        client,
        config,
        runtime,
        images,
        network,
        node_ip,
    });
    let _abort_image_gc = AbortOnDrop(tokio::spawn(image_gc::run(agent.clone())));
    let _abort_local_path = AbortOnDrop(tokio::spawn(local_path::run(agent.client.clone(), agent.config.node_name.clone())));
    pods::run(agent).await
}

/// Cluster DNS for this node's pods on the bridge's gateway address, port
/// 53, published as this node's endpoint of kube-system/kube-dns. A
/// failure (port 53 taken) is logged; the agent runs on without DNS.
fn cluster_dns(client: kube::Client, config: &AgentConfig, gateway: Ipv4Addr) -> impl std::future::Future<Output = ()> + Send + 'static {
    let dns_config = dns::DnsConfig {
        listen: vec![std::net::SocketAddr::from((gateway, 53))],
        zone: config.cluster_domain.clone(),
        resolv_conf: config.resolv_conf.clone(),
        own_addresses: config.cluster_dns.parse().into_iter().collect(),
        publish: Some((config.node_name.clone(), gateway)),
        ..Default::default()
    };
    async move {
        if let Err(e) = dns::run(client, dns_config).await {
            tracing::error!("cluster DNS on {gateway}:53 is not running: {e:#}; pods on this node cannot resolve names");
        }
    }
}

pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
