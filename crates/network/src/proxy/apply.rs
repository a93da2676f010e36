//! Getting rules into the kernel: what is installed is kept in memory, a
//! change sends only the difference, a (re)sync replaces the table
//! (`replace`); `runner` says where batches go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cidr::Ipv4Cidr;

use super::model::ServicePort;
use super::replace::{self, alternate};
use super::rules::{self, Batch, Fragment, NodeInfo, Sizes, HAIRPIN};
use super::runner::Runner;

/// The least size a shared map is declared with.
const MIN_SIZE: usize = 1024;

/// A Service: namespace and name.
pub type ServiceKey = (String, String);

/// Installs service rules into one table and remembers what it installed.
pub struct Proxier {
    /// The table's name; a full sync may move it to `alternate(table)` and back.
    table: String,
    /// Which of the two is in the kernel, once known.
    live: Option<String>,
    node: NodeInfo,
    runner: Runner,
    installed: BTreeMap<ServiceKey, BTreeMap<String, Fragment>>,
    /// The shared chains in the table.
    shared: BTreeSet<String>,
    /// Endpoint address -> how many installed service ports put it in the hairpin set.
    hairpin: BTreeMap<Ipv4Addr, usize>,
    /// Shared map or set -> elements in it, and the size it was declared with.
    counts: Sizes,
    sizes: Sizes,
    /// False until a full sync succeeded, and again after a failed change.
    synced: bool,
}

/// What one apply did.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Lines of nft text.
    pub lines: usize,
    /// Elements sent over netlink.
    pub elements: usize,
    pub elapsed: Duration,
}

impl Proxier {
    pub fn new(table: &str, cluster_cidr: Ipv4Cidr, runner: Runner) -> Proxier {
        let node = NodeInfo::new(cluster_cidr);
        Proxier {
            table: table.to_string(),
            live: None,
            node,
            runner,
            installed: BTreeMap::new(),
            shared: BTreeSet::new(),
            hairpin: BTreeMap::new(),
            counts: Sizes::new(),
            sizes: Sizes::new(),
            synced: false,
        }
    }

    /// The node's addresses (see `NodeInfo::node_ips`).
    pub fn with_node_ips(mut self, ips: Vec<Ipv4Addr>) -> Proxier {
        self.node.node_ips = ips;
        self
    }

    /// This node's pod range (see `NodeInfo::pod_cidr`).
    pub fn with_pod_cidr(mut self, pod_cidr: Option<Ipv4Cidr>) -> Proxier {
        self.set_pod_cidr(pod_cidr);
        self
    }

    /// A new pod range changes which endpoints can hairpin: the next sync is a full one.
    pub fn set_pod_cidr(&mut self, pod_cidr: Option<Ipv4Cidr>) {
        if self.node.pod_cidr != pod_cidr {
            self.node.pod_cidr = pod_cidr;
            self.synced = false;
        }
    }

    /// "libnftables" or "nft": what batches go through.
    pub fn backend(&self) -> &'static str {
        self.runner.backend()
    }

    /// The table in the kernel: the name given or its alternate.
    pub fn table(&self) -> &str {
        self.live.as_deref().unwrap_or(&self.table)
    }

    /// Whether incremental changes can be applied (else a full sync is due).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Replaces the whole table with these service ports, atomically (as
    /// the kernel sees it).
    pub async fn sync_all(&mut self, ports: impl IntoIterator<Item = ServicePort>) -> anyhow::Result<Applied> {
        let mut next: BTreeMap<ServiceKey, BTreeMap<String, Fragment>> = BTreeMap::new();
        for sp in ports {
            let f = rules::fragment(&sp, &self.node);
            next.entry((sp.namespace.clone(), sp.name.clone())).or_default().insert(sp.key(), f);
        }
        self.replace(next).await
    }

    async fn replace(&mut self, next: BTreeMap<ServiceKey, BTreeMap<String, Fragment>>) -> anyhow::Result<Applied> {
        let fragments: Vec<&Fragment> = next.values().flat_map(|ports| ports.values()).collect();
        let mut hairpin: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for ip in fragments.iter().flat_map(|f| &f.hairpin) {
            *hairpin.entry(*ip).or_default() += 1;
        }
        let mut counts = Sizes::new();
        for (map, _) in fragments.iter().flat_map(|f| f.elements.keys()) {
            *counts.entry(map.to_string()).or_default() += 1;
        }
        counts.insert(HAIRPIN.to_string(), hairpin.len());
        // Room to double before the next full sync.
        let sizes: Sizes = rules::sized_maps().map(|m| (m.to_string(), (2 * counts.get(m).copied().unwrap_or(0)).next_power_of_two().max(MIN_SIZE))).collect();
        self.synced = false;
        let done = replace::replace(&self.runner, &self.table, self.live.as_deref(), &sizes, &fragments).await.context("full sync of the service rules")?;
        self.live = Some(done.live);
        self.installed = next;
        self.shared = done.shared;
        self.hairpin = hairpin;
        self.counts = counts;
        self.sizes = sizes;
        self.synced = true;
        Ok(done.applied)
    }

    /// Replaces the rules of the given Services (an empty list removes a
    /// Service) in one batch that touches nothing else.
    pub async fn update(&mut self, services: BTreeMap<ServiceKey, Vec<ServicePort>>) -> anyhow::Result<Applied> {
        anyhow::ensure!(self.synced, "the service rules need a full sync first");
        let mut batch = Batch::with_shared(self.table(), self.shared.clone());
        let mut next = Vec::new();
        // Address -> change in the number of service ports using it for hairpin.
        let mut delta: BTreeMap<Ipv4Addr, isize> = BTreeMap::new();
        for (key, ports) in services {
            let new: BTreeMap<String, Fragment> =
                ports.iter().map(|sp| (sp.key(), rules::fragment(sp, &self.node))).collect();
            let empty = BTreeMap::new();
            let old = self.installed.get(&key).unwrap_or(&empty);
            for (port, f) in &new {
                batch.change(old.get(port), Some(f));
            }
            for (port, f) in old {
                if !new.contains_key(port) {
                    batch.change(Some(f), None);
                }
            }
            for ip in old.values().flat_map(|f| &f.hairpin) {
                *delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.values().flat_map(|f| &f.hairpin) {
                *delta.entry(*ip).or_default() += 1;
            }
            next.push((key, new));
        }
        delta.retain(|_, d| *d != 0);
        let counts: Vec<(Ipv4Addr, usize, usize)> = delta
            .iter()
            .map(|(ip, d)| {
                let before = self.hairpin.get(ip).copied().unwrap_or(0);
                (*ip, before, before.saturating_add_signed(*d))
            })
            .collect();
        batch.hairpin(
            counts.iter().filter(|(_, b, a)| *b == 0 && *a > 0).map(|c| c.0),
            counts.iter().filter(|(_, b, a)| *b > 0 && *a == 0).map(|c| c.0),
        );
        // A shared map about to outgrow its declared size: a full sync, with larger sizes.
        let mut elements = self.counts.clone();
        for (key, new) in &next {
            for (map, _) in self.installed.get(key).into_iter().flat_map(|old| old.values()).flat_map(|f| f.elements.keys()) {
                let n = elements.entry(map.to_string()).or_default();
                *n = n.saturating_sub(1);
            }
            for (map, _) in new.values().flat_map(|f| f.elements.keys()) {
                *elements.entry(map.to_string()).or_default() += 1;
            }
        }
        let (gained, lost) = (counts.iter().filter(|(_, b, a)| *b == 0 && *a > 0).count(), counts.iter().filter(|(_, b, a)| *b > 0 && *a == 0).count());
        let hairpin_after = (self.hairpin.len() + gained).saturating_sub(lost);
        elements.insert(HAIRPIN.to_string(), hairpin_after);
        if elements.iter().any(|(map, n)| self.sizes.get(map).is_some_and(|size| n > size)) {
            let mut all = std::mem::take(&mut self.installed);
            for (key, new) in next {
                if new.is_empty() {
                    all.remove(&key);
                } else {
                    all.insert(key, new);
                }
            }
            tracing::info!("service proxy: a shared map outgrew its size; syncing in full");
            return self.replace(all).await;
        }
        let shared = batch.shared_chains().clone();
        let applied = if batch.is_empty() { Applied::default() } else {
            let script = batch.finish();
            match self.send(&script).await {
                Ok(a) => a,
                Err(e) => {
                    // The batch was atomic, but our picture may be wrong: start over.
                    self.synced = false;
                    return Err(e.context("updating the service rules"));
                }
            }
        };
        self.shared = shared;
        self.counts = elements;
        for (ip, _, after) in counts {
            if after == 0 {
                self.hairpin.remove(&ip);
            } else {
                self.hairpin.insert(ip, after);
            }
        }
        for (key, new) in next {
            if new.is_empty() {
                self.installed.remove(&key);
            } else {
                self.installed.insert(key, new);
            }
        }
        Ok(applied)
    }

    async fn send(&self, script: &str) -> anyhow::Result<Applied> {
        let started = Instant::now();
        self.runner.run(script).await?;
        Ok(Applied { lines: script.lines().count(), elements: 0, elapsed: started.elapsed() })
    }

    /// Deletes the table (missing is fine) and forgets what was installed.
    pub async fn remove(&mut self) -> anyhow::Result<()> {
        self.installed.clear();
        self.shared.clear();
        self.hairpin.clear();
        self.counts.clear();
        self.sizes.clear();
        self.synced = false;
        self.live = None;
        remove_table_with(&self.runner, &self.table).await
    }
}

/// Deletes `table` and its alternate, whichever exist.
pub(crate) async fn remove_table_with(runner: &Runner, table: &str) -> anyhow::Result<()> {
    let script: String = [table.to_string(), alternate(table)].iter().map(|t| format!("add table ip {t}\ndelete table ip {t}\n")).collect();
    runner.run(&script).await.with_context(|| format!("deleting nftables tables ip {table} and {}", alternate(table)))
}
