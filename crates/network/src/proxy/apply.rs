//! Getting rules into the kernel: what is installed is kept in memory, a
//! change sends only the difference, a (re)sync replaces the table in one
//! atomic batch. `nft` runs in the host's network namespace or, for tests
//! and the benchmark, in another one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;

use crate::cidr::Ipv4Cidr;

use super::model::ServicePort;
use super::rules::{self, Batch, Fragment};

/// Runs `nft -f -` batches, in the host's network namespace or in `netns`.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    netns: Option<PathBuf>,
}

impl Runner {
    pub fn host() -> Runner {
        Runner { netns: None }
    }

    /// `path` is a namespace file such as /run/netns/NAME.
    pub fn in_netns(path: impl Into<PathBuf>) -> Runner {
        Runner { netns: Some(path.into()) }
    }

    pub async fn run(&self, script: &str) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(nft_binary());
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(path) = &self.netns {
            let ns = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
            // SAFETY: only setns(2), which is async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().context("running nft (is the nftables package installed?)")?;
        let mut stdin = child.stdin.take().context("nft stdin")?;
        stdin.write_all(script.as_bytes()).await.context("writing to nft")?;
        drop(stdin);
        let out = child.wait_with_output().await.context("waiting for nft")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // nft repeats the offending line; a few are enough.
            let short: Vec<&str> = err.lines().take(6).collect();
            bail!("nft failed: {}", short.join("\n"));
        }
        Ok(())
    }

    /// Bridged pod-to-service traffic needs br_netfilter's call into the IP
    /// hooks (so replies from a pod on the same bridge are un-NATed). Turns
    /// it on when it is off; loads nothing.
    pub async fn ensure_bridge_nf_call(&self) -> anyhow::Result<()> {
        const KEY: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        let check = || -> anyhow::Result<()> {
            match std::fs::read_to_string(KEY) {
                Err(_) => {
                    tracing::warn!("{KEY} is missing (br_netfilter not loaded): pods on one bridge may not reach each other through Services");
                }
                Ok(v) if v.trim() == "0" => {
                    tracing::info!("setting {KEY} to 1 so bridged pod traffic passes the service rules");
                    std::fs::write(KEY, "1").with_context(|| format!("writing {KEY}"))?;
                }
                Ok(_) => {}
            }
            Ok(())
        };
        match &self.netns {
            None => check(),
            Some(path) => crate::in_netns(path, check)?,
        }
    }
}

pub(crate) fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("nft")
}

/// A Service: namespace and name.
pub type ServiceKey = (String, String);

/// Installs service rules into one table and remembers what it installed.
pub struct Proxier {
    table: String,
    cluster_cidr: Ipv4Cidr,
    runner: Runner,
    installed: BTreeMap<ServiceKey, BTreeMap<String, Fragment>>,
    /// The shared chains in the table.
    shared: BTreeSet<String>,
    /// Endpoint address -> how many installed service ports put it in the hairpin set.
    hairpin: BTreeMap<Ipv4Addr, usize>,
    /// False until a full sync succeeded, and again after a failed change.
    synced: bool,
}

/// What one apply did.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub lines: usize,
    pub elapsed: Duration,
}

impl Proxier {
    pub fn new(table: &str, cluster_cidr: Ipv4Cidr, runner: Runner) -> Proxier {
        Proxier { table: table.to_string(), cluster_cidr, runner, installed: BTreeMap::new(), shared: BTreeSet::new(), hairpin: BTreeMap::new(), synced: false }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether incremental changes can be applied (else a full sync is due).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Replaces the whole table with these service ports, atomically.
    pub async fn sync_all(&mut self, ports: impl IntoIterator<Item = ServicePort>) -> anyhow::Result<Applied> {
        let mut next: BTreeMap<ServiceKey, BTreeMap<String, Fragment>> = BTreeMap::new();
        for sp in ports {
            let f = rules::fragment(&sp, self.cluster_cidr);
            next.entry((sp.namespace.clone(), sp.name.clone())).or_default().insert(sp.key(), f);
        }
        let (script, shared) = rules::full(&self.table, next.values().flat_map(|ports| ports.values()));
        let mut hairpin: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for f in next.values().flat_map(|ports| ports.values()) {
            for ip in &f.hairpin {
                *hairpin.entry(*ip).or_default() += 1;
            }
        }
        self.synced = false;
        let applied = self.send(&script).await.context("full sync of the service rules")?;
        self.installed = next;
        self.shared = shared;
        self.hairpin = hairpin;
        self.synced = true;
        Ok(applied)
    }

    /// Replaces the rules of the given Services (an empty list removes a
    /// Service) in one batch that touches nothing else.
    pub async fn update(&mut self, services: BTreeMap<ServiceKey, Vec<ServicePort>>) -> anyhow::Result<Applied> {
        anyhow::ensure!(self.synced, "the service rules need a full sync first");
        let mut batch = Batch::with_shared(&self.table, self.shared.clone());
        let mut next = Vec::new();
        // Address -> change in the number of service ports using it for hairpin.
        let mut delta: BTreeMap<Ipv4Addr, isize> = BTreeMap::new();
        for (key, ports) in services {
            let new: BTreeMap<String, Fragment> =
                ports.iter().map(|sp| (sp.key(), rules::fragment(sp, self.cluster_cidr))).collect();
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
        Ok(Applied { lines: script.lines().count(), elapsed: started.elapsed() })
    }

    /// Deletes the table (missing is fine) and forgets what was installed.
    pub async fn remove(&mut self) -> anyhow::Result<()> {
        self.installed.clear();
        self.shared.clear();
        self.hairpin.clear();
        self.synced = false;
        remove_table_with(&self.runner, &self.table).await
    }
}

pub(crate) async fn remove_table_with(runner: &Runner, table: &str) -> anyhow::Result<()> {
    match runner.run(&format!("delete table ip {table}\n")).await {
        Err(e) if format!("{e:#}").contains("No such file or directory") => Ok(()),
        r => r.with_context(|| format!("deleting nftables table ip {table}")),
    }
}
