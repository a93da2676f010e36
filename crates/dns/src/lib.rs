//! Cluster DNS, answered by every node agent for the pods of its node
//! (the job CoreDNS does upstream): the records of the Kubernetes DNS
//! specification from a watch of Services and EndpointSlices, everything
//! else forwarded to the host's resolvers.
//!
//! - `wire`: the DNS message format;
//! - `index`: the compact tables answers are made from;
//! - `answer`: the specification's records, from the index;
//! - `watch`: the index kept in step with the API;
//! - `forward`: the host's resolvers, for what is not ours;
//! - `serve`: UDP and TCP;
//! - `publish`: this node's EndpointSlice of `kube-system/kube-dns`.

pub mod answer;
pub mod forward;
pub mod index;
pub mod publish;
pub mod serve;
pub mod watch;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use index::Index;

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to answer, UDP and TCP (the agent: its pod bridge's gateway, port 53).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (default cluster.local).
    pub zone: String,
    /// Where the upstream resolvers are read from (default /etc/resolv.conf).
    pub resolv_conf: PathBuf,
    /// Upstream resolvers instead of the resolv.conf's (tests).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// How long one upstream resolver is waited for (default 2 s).
    pub upstream_timeout: Duration,
    /// Addresses that are this DNS service itself (its ClusterIP), never
    /// forwarded to.
    pub own_addresses: Vec<IpAddr>,
    /// Publish this node's endpoint of kube-system/kube-dns: (node name, address).
    pub publish: Option<(String, Ipv4Addr)>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: Vec::new(),
            zone: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            upstreams: None,
            upstream_timeout: Duration::from_secs(2),
            own_addresses: Vec::new(),
            publish: None,
        }
    }
}

impl DnsConfig {
    /// The upstream resolvers: the configured ones, else the resolv.conf's
    /// without our own addresses.
    pub async fn upstream_servers(&self) -> Vec<SocketAddr> {
        if let Some(u) = &self.upstreams {
            return u.clone();
        }
        let text = tokio::fs::read_to_string(&self.resolv_conf).await.unwrap_or_else(|e| {
            tracing::warn!("cluster DNS: reading {}: {e}; names outside the cluster will not resolve", self.resolv_conf.display());
            String::new()
        });
        let own: Vec<IpAddr> = self.own_addresses.iter().copied().chain(self.listen.iter().map(|a| a.ip())).collect();
        forward::resolv_conf_servers(&text, &own)
    }
}

/// Serves cluster DNS until the task is aborted. Binding the sockets is the
/// first thing it does, so a bind failure is its error at once; after
/// that it answers from whatever the watches have delivered, and keeps
/// answering from the index while the API server is away.
pub async fn run(client: kube::Client, config: DnsConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!config.listen.is_empty(), "no address to listen on");
    let index = Index::new(&config.zone);
    serve_index(Some(client), index, config).await
}

/// `run` on a given index: with a client it is kept in step with the API;
/// without one it is served as it is (tests, benchmarks).
pub async fn serve_index(client: Option<kube::Client>, index: Arc<Index>, config: DnsConfig) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let upstreams = forward::Upstreams { servers: config.upstream_servers().await, timeout: config.upstream_timeout };
    tracing::info!(listen = ?config.listen, upstreams = ?upstreams.servers, zone = config.zone, "cluster DNS starting");
    let handler = Arc::new(serve::Handler { index: index.clone(), upstreams });
    for addr in &config.listen {
        let udp = tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("binding DNS to {addr}/udp"))?;
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding DNS to {addr}/tcp"))?;
        tasks.spawn(serve::serve_udp(udp, handler.clone()));
        tasks.spawn(serve::serve_tcp(tcp, handler.clone()));
    }
    if let Some(client) = client {
        tasks.spawn(watch::run(client.clone(), index));
        if let Some((node, address)) = config.publish.clone() {
            tasks.spawn(publish::keep(client, node, address));
        }
    }
    // The tasks run until aborted (dropping the set aborts them all).
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            anyhow::ensure!(!e.is_panic(), "cluster DNS task panicked: {e}");
        }
    }
    Ok(())
}
