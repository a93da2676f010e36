//! The service proxy: kube-proxy's job in every node agent, on nftables, in
//! the shape of upstream's nftables mode (KEP-3866). It watches Services and
//! EndpointSlices and keeps one table, `<nft-table>_proxy`, in step:
//!
//! - `model`: Service + EndpointSlices -> one `ServicePort` each (pure);
//! - `rules`: `ServicePort` -> nftables text (pure), `batch` orders it;
//! - `apply`: what is installed, full and incremental batches;
//! - `replace`, `netlink`: a full sync (the next table built beside the
//!   live one, its bulk elements over netlink, then one atomic switch);
//! - `runner`, `nftlib`: batches into the kernel (libnftables, else `nft`);
//! - `health`: the healthCheckNodePort HTTP servers;
//! - this file: the watch loop (Services, EndpointSlices and our own Node,
//!   whose podCIDR says which endpoints can hairpin).

pub mod apply;
mod batch;
pub mod health;
pub mod model;
mod netlink;
mod nftlib;
mod replace;
pub mod rules;
pub mod runner;
pub mod testbed;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;

pub use apply::{Applied, Proxier, ServiceKey};
pub use runner::Runner;
pub use health::{HealthServers, HealthStatus};
pub use model::{service_ports, Endpoint, Protocol, ServicePort};

use crate::cidr::Ipv4Cidr;

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// The node's addresses (logged; NodePorts answer on every local address).
    pub node_ips: Vec<Ipv4Addr>,
    /// e.g. "10.42.0.0/16": traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: String,
    /// The node agent's `--nft-table`; the proxy's table is `<it>_proxy`
    /// (or `<it>_proxy_b`: a full sync builds the next table beside the live one).
    pub nft_table: String,
    /// Address the healthCheckNodePort servers listen on.
    pub health_bind: IpAddr,
    /// Network namespace to program (tests); None = the host's.
    pub netns: Option<PathBuf>,
    /// Changes arriving within this time are applied in one batch.
    pub debounce: Duration,
}

impl ProxyConfig {
    pub fn new(node_name: &str, node_ips: Vec<Ipv4Addr>, cluster_cidr: &str, nft_table: &str) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.to_string(),
            node_ips,
            cluster_cidr: cluster_cidr.to_string(),
            nft_table: nft_table.to_string(),
            health_bind: Ipv4Addr::UNSPECIFIED.into(),
            netns: None,
            // Long enough to batch a burst (a rollout), short enough that one
            // change still reaches the kernel within the 10 ms aim.
            debounce: Duration::from_millis(5),
        }
    }

    fn runner(&self) -> Runner {
        self.netns.clone().map(Runner::in_netns).unwrap_or_default()
    }
}

/// The proxy's table for a node whose `--nft-table` is `nft_table`.
pub fn table_name(nft_table: &str) -> String {
    format!("{nft_table}_proxy")
}

/// Removes the proxy's table (both names) of the node whose `--nft-table`
/// is `nft_table` from the host (`skiff cleanup`). A missing table is fine.
pub async fn remove_table(nft_table: &str) -> anyhow::Result<()> {
    apply::remove_table_with(&Runner::host(), &table_name(nft_table)).await
}

enum Change {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    /// Boxed: a Node is much larger than the others.
    Node(Box<watcher::Event<Node>>),
}

/// Pause before retrying a failed sync.
const RETRY: Duration = Duration::from_secs(1);

/// Watches Services and EndpointSlices and keeps the node's table in step,
/// until the watches end (the client is gone).
pub async fn run(client: kube::Client, config: ProxyConfig) -> anyhow::Result<()> {
    let cluster_cidr: Ipv4Cidr = config.cluster_cidr.parse().context("parsing the cluster CIDR")?;
    let runner = config.runner();
    runner.ensure_bridge_nf_call().await?;
    let table = table_name(&config.nft_table);
    tracing::info!(node = %config.node_name, node_ips = ?config.node_ips, %table, "service proxy starting");
    let mut proxier = Proxier::new(&table, cluster_cidr, runner).with_node_ips(config.node_ips.clone());
    let mut health = HealthServers::new(config.health_bind);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default()).default_backoff();
    let own_node = watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let nodes = watcher(Api::<Node>::all(client), own_node).default_backoff();
    let tasks = [
        tokio::spawn(forward(services, tx.clone(), Change::Service)),
        tokio::spawn(forward(slices, tx.clone(), Change::Slice)),
        tokio::spawn(forward(nodes, tx, |e| Change::Node(Box::new(e)))),
    ];
    let _abort = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());

    let mut cache = Cache::default();
    let mut full = true;
    let mut dirty: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        // Wait for a change (or a retry), then gather what follows it closely.
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { anyhow::bail!("the Service, EndpointSlice and Node watches ended") };
                full |= cache.apply(change, &mut dirty);
            }
            _ = retry => {}
        }
        let deadline = tokio::time::Instant::now() + config.debounce;
        while let Ok(Some(change)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            full |= cache.apply(change, &mut dirty);
        }
        if !cache.listed() {
            continue;
        }
        proxier.set_pod_cidr(cache.pod_cidr);
        let result = if full || !proxier.is_synced() {
            let ports: Vec<ServicePort> = cache.services.keys().flat_map(|k| cache.ports(k, &config.node_name)).collect();
            let n = ports.len();
            proxier.sync_all(ports).await.map(|a| {
                tracing::info!(service_ports = n, lines = a.lines, elapsed_ms = a.elapsed.as_millis() as u64, "service rules fully synced");
            })
        } else if !dirty.is_empty() {
            let changed: BTreeMap<ServiceKey, Vec<ServicePort>> =
                dirty.iter().map(|k| (k.clone(), cache.ports(k, &config.node_name))).collect();
            let n = changed.len();
            proxier.update(changed).await.map(|a| {
                tracing::debug!(services = n, lines = a.lines, elapsed_ms = a.elapsed.as_secs_f64() * 1000.0, "service rules updated");
            })
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                full = false;
                dirty.clear();
                retry_at = None;
                health.update(&cache.health(&config.node_name)).await;
            }
            Err(e) => {
                tracing::error!("service proxy: {e:#}; full sync again in {RETRY:?}");
                full = true;
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn forward<K, S>(stream: S, tx: mpsc::UnboundedSender<Change>, wrap: fn(watcher::Event<K>) -> Change)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if tx.send(wrap(event)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("service proxy watch: {e}"),
        }
    }
}

/// The Services and EndpointSlices seen so far.
#[derive(Default)]
struct Cache {
    services: BTreeMap<ServiceKey, Service>,
    /// (namespace, slice name) -> slice.
    slices: BTreeMap<(String, String), EndpointSlice>,
    /// Service -> names of its slices.
    by_service: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Objects of a (re)list in progress.
    listing_services: Option<Vec<Service>>,
    listing_slices: Option<Vec<EndpointSlice>>,
    services_listed: bool,
    slices_listed: bool,
    /// Our Node's podCIDR (None: unknown or unassigned), and its (re)list.
    pod_cidr: Option<Ipv4Cidr>,
    listing_node: Option<Option<Ipv4Cidr>>,
    node_listed: bool,
}

/// The node's IPv4 pod range (`podCIDRs`, else `podCIDR`).
fn pod_cidr_of(node: &Node) -> Option<Ipv4Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.as_ref()).find_map(|c| c.parse().ok())
}

fn key_of<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

fn service_of(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.labels().get(model::SERVICE_NAME_LABEL)?;
    Some((slice.namespace().unwrap_or_default(), name.clone()))
}

impl Cache {
    fn listed(&self) -> bool {
        self.services_listed && self.slices_listed && self.node_listed
    }

    /// Records a change; marks the Services it touches dirty. True when a
    /// full (re)list completed, which calls for a full sync.
    fn apply(&mut self, change: Change, dirty: &mut BTreeSet<ServiceKey>) -> bool {
        match change {
            Change::Service(event) => match event {
                watcher::Event::Apply(s) => {
                    dirty.insert(key_of(&s));
                    self.services.insert(key_of(&s), s);
                }
                watcher::Event::Delete(s) => {
                    dirty.insert(key_of(&s));
                    self.services.remove(&key_of(&s));
                }
                watcher::Event::Init => self.listing_services = Some(Vec::new()),
                watcher::Event::InitApply(s) => self.listing_services.get_or_insert_with(Vec::new).push(s),
                watcher::Event::InitDone => {
                    let list = self.listing_services.take().unwrap_or_default();
                    self.services = list.into_iter().map(|s| (key_of(&s), s)).collect();
                    self.services_listed = true;
                    return true;
                }
            },
            Change::Slice(event) => match event {
                watcher::Event::Apply(s) => {
                    let key = key_of(&s);
                    self.remove_slice(&key, dirty);
                    if let Some(svc) = service_of(&s) {
                        self.by_service.entry(svc.clone()).or_default().insert(key.1.clone());
                        dirty.insert(svc);
                    }
                    self.slices.insert(key, s);
                }
                watcher::Event::Delete(s) => self.remove_slice(&key_of(&s), dirty),
                watcher::Event::Init => self.listing_slices = Some(Vec::new()),
                watcher::Event::InitApply(s) => self.listing_slices.get_or_insert_with(Vec::new).push(s),
                watcher::Event::InitDone => {
                    let list = self.listing_slices.take().unwrap_or_default();
                    self.slices.clear();
                    self.by_service.clear();
                    for s in list {
                        if let Some(svc) = service_of(&s) {
                            self.by_service.entry(svc).or_default().insert(s.name_any());
                        }
                        self.slices.insert(key_of(&s), s);
                    }
                    self.slices_listed = true;
                    return true;
                }
            },
            // A new podCIDR reaches the proxier, which then syncs in full.
            Change::Node(event) => match *event {
                watcher::Event::Apply(n) => self.pod_cidr = pod_cidr_of(&n),
                watcher::Event::Delete(_) => self.pod_cidr = None,
                watcher::Event::Init => self.listing_node = Some(None),
                watcher::Event::InitApply(n) => self.listing_node = Some(pod_cidr_of(&n)),
                watcher::Event::InitDone => {
                    self.pod_cidr = self.listing_node.take().flatten();
                    self.node_listed = true;
                }
            },
        }
        false
    }

    fn remove_slice(&mut self, key: &(String, String), dirty: &mut BTreeSet<ServiceKey>) {
        let Some(old) = self.slices.remove(key) else { return };
        if let Some(svc) = service_of(&old) {
            if let Some(names) = self.by_service.get_mut(&svc) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            dirty.insert(svc);
        }
    }

    fn ports(&self, key: &ServiceKey, node_name: &str) -> Vec<ServicePort> {
        let Some(svc) = self.services.get(key) else { return Vec::new() };
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())))
            .collect();
        service_ports(svc, &slices, node_name)
    }

    /// healthCheckNodePort -> what it reports.
    fn health(&self, node_name: &str) -> BTreeMap<u16, HealthStatus> {
        let mut out = BTreeMap::new();
        for (key, svc) in &self.services {
            let wants = svc.spec.as_ref().and_then(|s| s.health_check_node_port).is_some();
            if !wants {
                continue;
            }
            let ports = self.ports(key, node_name);
            let Some(port) = ports.iter().find_map(|p| p.health_check_node_port) else { continue };
            let mut local: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
            for p in &ports {
                local.extend(p.local_endpoints().iter().map(|e| (e.ip, e.port)));
            }
            let local_ips: BTreeSet<Ipv4Addr> = local.iter().map(|(ip, _)| *ip).collect();
            out.insert(port, HealthStatus { namespace: key.0.clone(), name: key.1.clone(), local_endpoints: local_ips.len() });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5", "externalTrafficPolicy": "Local",
                     "healthCheckNodePort": 32001, "ports": [{"port": 80, "nodePort": 30001}]}}))
        .unwrap()
    }

    fn slice(name: &str, service: &str, node: &str) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name, "labels": {model::SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.42.0.3"], "nodeName": node}]}))
        .unwrap()
    }

    #[test]
    fn the_cache_marks_touched_services_and_asks_for_a_full_sync_after_a_list() {
        let mut cache = Cache::default();
        let mut dirty = BTreeSet::new();
        assert!(!cache.apply(Change::Service(watcher::Event::Init), &mut dirty));
        assert!(!cache.apply(Change::Service(watcher::Event::InitApply(svc("web"))), &mut dirty));
        assert!(cache.apply(Change::Service(watcher::Event::InitDone), &mut dirty));
        assert!(!cache.listed(), "slices not listed yet");
        assert!(cache.apply(Change::Slice(watcher::Event::InitDone), &mut dirty));
        assert!(!cache.listed(), "our Node not listed yet");
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "me"}, "spec": {"podCIDR": "10.42.3.0/24", "podCIDRs": ["fd00::/64", "10.42.3.0/24"]}})).unwrap();
        cache.apply(Change::Node(Box::new(watcher::Event::Init)), &mut dirty);
        cache.apply(Change::Node(Box::new(watcher::Event::InitApply(node))), &mut dirty);
        let done = Change::Node(Box::new(watcher::Event::InitDone));
        assert!(!cache.apply(done, &mut dirty), "the proxier decides whether a new podCIDR needs a full sync");
        assert!(cache.listed());
        assert_eq!(cache.pod_cidr, Some("10.42.3.0/24".parse().unwrap()));
        assert!(dirty.is_empty());

        let web = ("ns".to_string(), "web".to_string());
        cache.apply(Change::Slice(watcher::Event::Apply(slice("web-1", "web", "me"))), &mut dirty);
        assert_eq!(dirty, BTreeSet::from([web.clone()]));
        assert_eq!(cache.ports(&web, "me")[0].endpoints.len(), 1);
        assert_eq!(cache.health("me")[&32001].local_endpoints, 1);
        assert_eq!(cache.health("other")[&32001].local_endpoints, 0);

        // A slice that moves to another Service dirties both.
        dirty.clear();
        cache.apply(Change::Slice(watcher::Event::Apply(slice("web-1", "api", "me"))), &mut dirty);
        assert_eq!(dirty, BTreeSet::from([("ns".to_string(), "api".to_string()), web.clone()]));
        assert!(cache.ports(&web, "me")[0].endpoints.is_empty());

        dirty.clear();
        cache.apply(Change::Service(watcher::Event::Delete(svc("web"))), &mut dirty);
        assert_eq!(dirty, BTreeSet::from([web.clone()]));
        assert!(cache.ports(&web, "me").is_empty());
        assert!(cache.health("me").is_empty());
    }
}
