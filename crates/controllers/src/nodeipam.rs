//! Node IPAM: gives every Node a `/24` pod CIDR out of the cluster CIDR
//! (`spec.podCIDR` and `spec.podCIDRs`). What is in use is read from the
//! nodes themselves, so allocations survive restarts and are never handed
//! out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use client::informer::{ready, Watched};

const NODE_PREFIX: u8 = 24;

/// An IPv4 network: base address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Cidr { base: u32::from(ip) & mask, prefix })
    }

    /// How many node subnets fit.
    fn subnets(&self) -> u32 {
        if self.prefix > NODE_PREFIX {
            0
        } else {
            1u32.checked_shl((NODE_PREFIX - self.prefix) as u32).unwrap_or(u32::MAX)
        }
    }

    fn subnet(&self, i: u32) -> String {
        let base = self.base + (i << (32 - NODE_PREFIX));
        format!("{}/{NODE_PREFIX}", Ipv4Addr::from(base))
    }
}

/// The lowest free subnet not in `used`.
#[cfg(test)]
fn allocate(cluster: &Cidr, used: &BTreeSet<String>) -> Option<String> {
    allocate_from(cluster, used, &mut 0)
}

/// The lowest free subnet not in `used` at index `next` or above; `next`
/// moves past it, so one pass over many nodes scans the range once.
fn allocate_from(cluster: &Cidr, used: &BTreeSet<String>, next: &mut u32) -> Option<String> {
    while *next < cluster.subnets() {
        let c = cluster.subnet(*next);
        *next += 1;
        if !used.contains(&c) {
            return Some(c);
        }
    }
    None
}

pub async fn run(client: Client, cluster_cidr: String, (nodes, events): Watched<Node>) {
    let Some(cluster) = Cidr::parse(&cluster_cidr).filter(|c| c.subnets() > 0) else {
        tracing::error!(cluster_cidr, "node IPAM: not an IPv4 CIDR of /24 or larger; pod CIDRs will not be assigned");
        return;
    };
    let api: Api<Node> = Api::all(client.clone());
    // A periodic pass retries assignments that failed.
    let resync = futures::stream::unfold((), |()| async {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        Some((None, ()))
    });
    let mut batches = futures::stream::select(events.map(Some), resync.boxed()).ready_chunks(1024);
    // Allocations we made that the cache may not show yet.
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    // Nodes told once that no CIDR was left (upstream's recorder folds the repeats into one Event).
    let mut reported: BTreeSet<String> = BTreeSet::new();
    while batches.next().await.is_some() {
        if !ready(&nodes) {
            continue;
        }
        let all = nodes.state();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for n in &all {
            let spec = n.spec.clone().unwrap_or_default();
            used.extend(spec.pod_cidr.clone());
            used.extend(spec.pod_cidrs.clone().unwrap_or_default());
        }
        let names: BTreeSet<String> = all.iter().map(|n| n.name_any()).collect();
        pending.retain(|node, cidr| names.contains(node) && !used.contains(cidr));
        used.extend(pending.values().cloned());
        reported.retain(|n| names.contains(n));
        let mut next = 0;
        for node in all.iter().filter(|n| n.spec.as_ref().is_none_or(|s| s.pod_cidr.as_deref().unwrap_or("").is_empty())) {
            let name = node.name_any();
            if node.metadata.deletion_timestamp.is_some() || pending.contains_key(&name) {
                continue;
            }
            let Some(cidr) = allocate_from(&cluster, &used, &mut next) else {
                if !reported.insert(name.clone()) {
                    continue;
                }
                tracing::warn!(node = name, "no pod CIDR left in {cluster_cidr}");
                let about = ObjectReference { kind: Some("Node".into()), name: Some(name.clone()), uid: Some(name.clone()), ..Default::default() };
                client::eventlog::record(&client, "cidrAllocator", about, "Normal", "CIDRNotAvailable", format!("Node {name} status is now: CIDRNotAvailable")).await;
                continue;
            };
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(node = name, cidr, "assigned pod CIDR");
                    used.insert(cidr.clone());
                    reported.remove(&name);
                    pending.insert(name, cidr);
                }
                Err(e) => tracing::warn!(node = name, "assigning pod CIDR: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_slash_24() {
        let c = Cidr::parse("10.42.0.0/16").unwrap();
        assert_eq!(c.subnets(), 256);
        let mut used = BTreeSet::from(["10.42.0.0/24".to_string(), "10.42.2.0/24".to_string()]);
        assert_eq!(allocate(&c, &used).as_deref(), Some("10.42.1.0/24"));
        used.insert("10.42.1.0/24".into());
        assert_eq!(allocate(&c, &used).as_deref(), Some("10.42.3.0/24"));
        let small = Cidr::parse("10.0.0.0/24").unwrap();
        assert_eq!(allocate(&small, &BTreeSet::from(["10.0.0.0/24".to_string()])), None);
        assert!(Cidr::parse("10.0.0.0/25").is_some_and(|c| c.subnets() == 0));
    }
}
