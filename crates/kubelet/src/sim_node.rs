//! Simulated nodes: registration (Node object, then its status through
//! nodes/status, since create ignores status), Lease renewal in
//! kube-node-lease, and a node watch that learns podCIDRs and re-registers
//! nodes that were deleted or marked not ready.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{json, Value};

use crate::sim::{parse_cidr, Sim, SimNode, KUBELET_VERSION, LEASE_WRITERS, RUNTIME_VERSION, WRITERS};

use crate::node_lease::RENEW_EVERY;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn node_object(n: &SimNode) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n.name, "labels": {
            "kubernetes.io/hostname": n.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "skiff-sim",
        }},
        "spec": {},
    })
}

fn node_status(sim: &Sim, n: &SimNode) -> Value {
    let o = &sim.opts;
    let t = now();
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    let resources = json!({"cpu": o.cpu, "memory": o.memory, "pods": o.pods.to_string(), "ephemeral-storage": o.ephemeral_storage});
    json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}, {"type": "Hostname", "address": n.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("{:032x}", fnv(&n.name)),
            "systemUUID": format!("{:032x}", fnv(&n.name) ^ 1),
            "bootID": format!("{:032x}", fnv(&n.name) ^ 2),
            "kernelVersion": "6.1.0-skiff-sim",
            "osImage": "skiff simulated node",
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }})
}

/// A stable fake id from a name.
pub(crate) fn fnv(s: &str) -> u128 {
    s.bytes().fold(0x6c62272e07bb014262b821756295c58d_u128, |h, b| (h ^ b as u128).wrapping_mul(0x0000000001000000000000000000013B))
}

/// Creates the Node (or adopts an existing one of that name) and posts its status.
async fn register(sim: &Sim, idx: usize) -> anyhow::Result<()> {
    let n = &sim.nodes[idx];
    let api: Api<Node> = Api::all(sim.client.clone());
    let node: Node = serde_json::from_value(node_object(n))?;
    let node = match api.create(&PostParams::default(), &node).await {
        Ok(node) => node,
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(&n.name).await?,
        Err(e) => return Err(e.into()),
    };
    learn(n, &node);
    api.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(node_status(sim, n))).await?;
    renew(sim, n).await;
    Ok(())
}

/// Remembers the node's uid and podCIDR.
fn learn(n: &SimNode, node: &Node) {
    *n.uid.lock().unwrap() = node.metadata.uid.clone();
    if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(parse_cidr) {
        let mut cur = n.pod_cidr.lock().unwrap();
        if *cur != cidr {
            *cur = cidr;
            n.next_ip.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Registers, retrying conflicts (a controller may write the node at the same time) and server hiccups.
async fn register_retrying(sim: &Sim, idx: usize) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match register(sim, idx).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                tracing::debug!(node = sim.nodes[idx].name, "registering: {e}; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) async fn register_all(sim: &Sim) -> anyhow::Result<()> {
    futures::stream::iter(0..sim.nodes.len())
        .map(|i| async move { register_retrying(sim, i).await.map_err(|e| anyhow::anyhow!("registering node {}: {e}", sim.nodes[i].name)) })
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Renews (or creates) the node's Lease.
async fn renew(sim: &Sim, n: &SimNode) {
    let uid = n.uid.lock().unwrap().clone();
    crate::node_lease::renew(&sim.lease_client, &n.name, uid).await;
}

pub(crate) async fn renew_leases(sim: &Sim) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // registration just renewed them
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        futures::stream::iter(&sim.nodes).for_each_concurrent(LEASE_WRITERS, |n| renew(sim, n)).await;
        if started.elapsed() > 2 * RENEW_EVERY {
            tracing::warn!(nodes = sim.nodes.len(), "renewing the leases took {:?}; nodes may go NotReady", started.elapsed());
        }
    }
}

/// Learns podCIDRs, and registers again nodes that were deleted or are not Ready.
pub(crate) async fn watch_nodes(sim: &Sim) {
    let api: Api<Node> = Api::all(sim.client.clone());
    let mut stream = watcher(api).boxed();
    let (redo_tx, mut redo_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let redo = async {
        let mut pending = std::collections::HashSet::new();
        loop {
            let Some(i) = redo_rx.recv().await else { return };
            pending.insert(i);
            while let Ok(i) = redo_rx.try_recv() {
                pending.insert(i);
            }
            let batch: Vec<usize> = pending.drain().collect();
            futures::stream::iter(batch)
                .for_each_concurrent(WRITERS, |i| async move {
                    tracing::info!(node = sim.nodes[i].name, "registering the node again");
                    if let Err(e) = register_retrying(sim, i).await {
                        tracing::warn!(node = sim.nodes[i].name, "re-registering: {e}");
                    }
                })
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let events = async {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Apply(node)) | Ok(Event::InitApply(node)) => {
                    let Some(&i) = node.metadata.name.as_ref().and_then(|n| sim.by_name.get(n)) else { continue };
                    learn(&sim.nodes[i], &node);
                    let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                        c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    if !ready && node.metadata.deletion_timestamp.is_none() {
                        let _ = redo_tx.send(i);
                    }
                }
                Ok(Event::Delete(node)) => {
                    if let Some(&i) = node.metadata.name.as_ref().and_then(|n| sim.by_name.get(n)) {
                        let _ = redo_tx.send(i);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("node watch: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::join!(redo, events);
}

fn watcher(api: Api<Node>) -> impl futures::Stream<Item = Result<Event<Node>, watcher::Error>> {
    watcher::watcher(api, watcher::Config::default())
}
