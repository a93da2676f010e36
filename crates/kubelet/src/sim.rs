//! `skiff sim`: simulated nodes. Each registers a Node, renews its Lease in
//! kube-node-lease and plays the node's part for the pods bound to it
//! (see `sim_pods`), without running any container. One pod watch and one
//! node watch serve all nodes, and writes go through bounded worker pools,
//! so thousands of nodes fit in one process.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use kube::Client;

use crate::{sim_node, sim_pods};

/// What `skiff sim` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    pub name_prefix: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { nodes: 1, cpu: "8".into(), memory: "32Gi".into(), pods: 110, ephemeral_storage: "100Gi".into(), name_prefix: "sim-".into() }
    }
}

/// Kubelet-ish identity of the simulated nodes.
pub const KUBELET_VERSION: &str = "v1.33.4-skiff";
pub const RUNTIME_VERSION: &str = "skiff-sim://1";
/// Pods with this annotation set to "true" keep running for their whole grace period when deleted.
pub const USE_GRACE_PERIOD: &str = "sim.skiff.dev/use-grace-period";
/// Job pods with this annotation ("<seconds>") succeed that long after they start.
pub const SUCCEED_AFTER: &str = "sim.skiff.dev/succeed-after";

/// Concurrent API writes (node registration, pod status).
pub(crate) const WRITERS: usize = 64;
/// Concurrent lease renewals: a pool of their own, so heartbeats never wait
/// for pod status writes (a node that misses them for 40 s is marked NotReady).
pub(crate) const LEASE_WRITERS: usize = 256;

pub(crate) struct SimNode {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The node's podCIDR (base address and prefix length): the node IPAM
    /// controller's when it set one, else one the sim picked.
    pub pod_cidr: Mutex<(u32, u8)>,
    pub next_ip: AtomicU32,
    pub uid: Mutex<Option<String>>,
}

impl SimNode {
    /// The next pod address in the node's podCIDR (skipping network, gateway and broadcast).
    pub fn allocate_ip(&self) -> Ipv4Addr {
        let (base, prefix) = *self.pod_cidr.lock().unwrap();
        let size = 1u32 << (32 - prefix.min(30) as u32);
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % (size - 3);
        Ipv4Addr::from(base + 2 + n)
    }
}

pub(crate) struct Sim {
    pub client: Client,
    /// Renews the Leases; best on a connection of its own.
    pub lease_client: Client,
    pub opts: Options,
    pub nodes: Vec<SimNode>,
    pub by_name: HashMap<String, usize>,
    /// Timers already armed (pod uid + purpose), so each is armed once.
    pub timers: Mutex<HashSet<String>>,
}

/// The sim's own podCIDR for node `i`: a /24 from 10.42.0.0/16 for the
/// first 256 nodes, then from 10.100.0.0/14 (the node IPAM controller
/// normally assigns one first).
fn fallback_cidr(i: usize) -> (u32, u8) {
    let i = i as u32;
    let base = if i < 256 { u32::from(Ipv4Addr::new(10, 42, 0, 0)) + (i << 8) } else { u32::from(Ipv4Addr::new(10, 100, 0, 0)) + ((i - 256) << 8) };
    (base, 24)
}

pub(crate) fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(ip), len))
}

/// Runs the simulated nodes until cancelled (dropped). Dropping it stops
/// the lease renewals, so the nodes go NotReady.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    run_with_lease_client(client.clone(), client, opts).await
}

/// Like [`run`], renewing the Leases through `lease_client`: given its own
/// connection, heartbeats do not queue behind pod traffic on a busy one.
pub async fn run_with_lease_client(client: Client, lease_client: Client, opts: Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(opts.nodes <= 60_000, "--nodes: at most 60000 simulated nodes");
    let nodes: Vec<SimNode> = (0..opts.nodes)
        .map(|i| SimNode {
            name: format!("{}{i}", opts.name_prefix),
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i as u32),
            pod_cidr: Mutex::new(fallback_cidr(i)),
            next_ip: AtomicU32::new(0),
            uid: Mutex::new(None),
        })
        .collect();
    let by_name = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
    let sim = Arc::new(Sim { client, lease_client, opts, nodes, by_name, timers: Mutex::default() });
    let started = std::time::Instant::now();
    sim_node::register_all(&sim).await?;
    tracing::info!(nodes = sim.nodes.len(), "registered simulated nodes in {:?}", started.elapsed());
    tokio::try_join!(
        async { sim_node::renew_leases(&sim).await; Ok::<_, anyhow::Error>(()) },
        async { sim_node::watch_nodes(&sim).await; Ok(()) },
        async { sim_pods::run(&sim).await; Ok(()) },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_addresses() {
        assert_eq!(fallback_cidr(0), (u32::from(Ipv4Addr::new(10, 42, 0, 0)), 24));
        assert_eq!(fallback_cidr(255).0, u32::from(Ipv4Addr::new(10, 42, 255, 0)));
        assert_eq!(fallback_cidr(256).0, u32::from(Ipv4Addr::new(10, 100, 0, 0)));
        assert_eq!(parse_cidr("10.42.3.0/24"), Some((u32::from(Ipv4Addr::new(10, 42, 3, 0)), 24)));
        let n = SimNode { name: "n".into(), ip: Ipv4Addr::LOCALHOST, pod_cidr: Mutex::new(fallback_cidr(1)), next_ip: AtomicU32::new(0), uid: Mutex::new(None) };
        assert_eq!(n.allocate_ip(), Ipv4Addr::new(10, 42, 1, 2));
        assert_eq!(n.allocate_ip(), Ipv4Addr::new(10, 42, 1, 3));
        n.next_ip.store(252, Ordering::Relaxed);
        assert_eq!(n.allocate_ip(), Ipv4Addr::new(10, 42, 1, 254));
        assert_eq!(n.allocate_ip(), Ipv4Addr::new(10, 42, 1, 2));
    }
}
