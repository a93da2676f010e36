//! Node lifecycle: watches node Leases (kube-node-lease) and node status.
//! A node that has not renewed its lease or posted status for the grace
//! period gets its conditions set to Unknown; nodes are tainted by their
//! conditions (`node.kubernetes.io/unreachable`, `not-ready`, pressure,
//! unschedulable) and untainted when healthy again. The taint manager part
//! deletes pods on nodes with NoExecute taints they do not tolerate, after
//! the shortest matching `tolerationSeconds`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::eventlog::record;
use crate::informer::{benign, ready, strip_managed_fields, Shared, Watched};

pub const GRACE_PERIOD: Duration = Duration::from_secs(40);
const MONITOR_PERIOD: Duration = Duration::from_secs(1);
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const COMPONENT: &str = "node-controller";

pub async fn run(client: Client, (nodes, node_events): Watched<Node>, (pods, pod_events): Watched<Pod>) {
    // The lease cache is kept current by its own pump: a long pass below
    // must not leave it stale, or healthy nodes would look silent.
    let mut lease_watch = Shared::new(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"), strip_managed_fields);
    let (leases, lease_events) = lease_watch.subscribe();
    let mut events = futures::stream::select_all([node_events.map(drop).boxed(), lease_events.map(drop).boxed(), pod_events.map(drop).boxed()])
        .ready_chunks(4096);
    let mut tick = tokio::time::interval(MONITOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut c = Controller { client, nodes, leases, pods, health: HashMap::new(), seen_tainted: HashMap::new() };
    let control = async {
        loop {
            tokio::select! {
                e = events.next() => if e.is_none() { return },
                _ = tick.tick() => {
                    if ready(&c.nodes) && ready(&c.leases) && ready(&c.pods) {
                        c.monitor().await;
                        c.evict().await;
                    }
                }
            }
        }
    };
    tokio::join!(lease_watch.run(), control);
}

struct Health {
    /// Lease renewTime and Ready heartbeat as last seen; a change means the node is alive.
    signal: String,
    observed: Instant,
    ready: Option<String>,
}

struct Controller {
    client: Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HashMap<String, Health>,
    /// Pods on NoExecute-tainted nodes: when we first saw them there.
    seen_tainted: HashMap<String, Instant>,
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

impl Controller {
    async fn monitor(&mut self) {
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let removed: Vec<String> = self.health.keys().filter(|n| !names.contains(*n)).cloned().collect();
        for name in removed {
            self.health.remove(&name);
            let about = ObjectReference { kind: Some("Node".into()), name: Some(name.clone()), uid: Some(name.clone()), ..Default::default() };
            record(&self.client, COMPONENT, about, "Normal", "RemovingNode", format!("Node {name} event: Removing Node {name} from Controller")).await;
        }
        for node in nodes {
            let name = node.name_any();
            if !self.health.contains_key(&name) {
                let msg = format!("Node {name} event: Registered Node {name} in Controller");
                record(&self.client, COMPONENT, node_ref(&node), "Normal", "RegisteredNode", msg).await;
            }
            let lease = self.leases.get(&ObjectRef::new(&name).within("kube-node-lease"));
            let renew = lease.and_then(|l| l.spec.clone()).and_then(|s| s.renew_time).map(|t| t.0.to_rfc3339());
            let heartbeat = condition(&node, "Ready").and_then(|c| c.last_heartbeat_time.clone()).map(|t| t.0.to_rfc3339());
            let signal = format!("{renew:?}/{heartbeat:?}");
            let h = self.health.entry(name.clone()).or_insert_with(|| Health { signal: signal.clone(), observed: Instant::now(), ready: None });
            if h.signal != signal {
                h.signal = signal;
                h.observed = Instant::now();
            }
            let stale = h.observed.elapsed() > GRACE_PERIOD;
            let mut node = (*node).clone();
            if stale && condition(&node, "Ready").is_none_or(|c| c.status != "Unknown") {
                match self.mark_unknown(&node).await {
                    Ok(updated) => node = updated,
                    Err(e) => {
                        if !benign(&e) {
                            tracing::warn!(node = name, "marking node status unknown: {e}");
                        }
                        continue;
                    }
                }
            }
            let now_ready = condition(&node, "Ready").map(|c| c.status.clone());
            let was_ready = self.health.get(&name).and_then(|h| h.ready.clone());
            if was_ready.as_deref() == Some("True") && now_ready.as_deref() != Some("True") {
                let about = node_ref(&node);
                record(&self.client, COMPONENT, about, "Normal", "NodeNotReady", format!("Node {name} status is now: NodeNotReady")).await;
                self.mark_pods_not_ready(&name).await;
            }
            if let Some(h) = self.health.get_mut(&name) {
                h.ready = now_ready;
            }
            if let Err(e) = self.taint(&node).await {
                if !benign(&e) {
                    tracing::warn!(node = name, "updating node taints: {e}");
                }
            }
        }
    }

    async fn mark_unknown(&self, node: &Node) -> kube::Result<Node> {
        let now = Time(Utc::now());
        let mut next = node.clone();
        let status = next.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        for c in conditions.iter_mut() {
            if c.status != "Unknown" {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
            }
        }
        for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            if !conditions.iter().any(|c| c.type_ == type_) {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
            }
        }
        Api::<Node>::all(self.client.clone()).replace_status(&node.name_any(), &PostParams::default(), serde_json::to_vec(&next).unwrap()).await
    }

    /// Upstream's MarkPodsNotReady: pods on a node that stopped being Ready are not ready either.
    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self.pods.state().into_iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)) {
            let mut next = (*pod).clone();
            let Some(conds) = next.status.as_mut().and_then(|s| s.conditions.as_mut()) else { continue };
            let Some(c) = conds.iter_mut().find(|c| c.type_ == "Ready" && c.status == "True") else { continue };
            c.status = "False".into();
            c.last_transition_time = Some(Time(Utc::now()));
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            if let Err(e) = api.replace_status(&pod.name_any(), &PostParams::default(), serde_json::to_vec(&next).unwrap()).await {
                tracing::debug!(pod = pod.name_any(), "marking pod not ready: {e}");
            }
        }
    }

    /// Brings the controller-managed taints in line with the node's conditions.
    async fn taint(&self, node: &Node) -> kube::Result<()> {
        let wanted = wanted_taints(node);
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let managed = |t: &Taint| MANAGED.iter().any(|(k, e)| t.key == *k && t.effect == *e);
        let mut next: Vec<Taint> = current.iter().filter(|t| !managed(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str()))).cloned().collect();
        for (key, effect) in &wanted {
            if !next.iter().any(|t| t.key == *key && t.effect == *effect) {
                next.push(Taint { key: key.to_string(), effect: effect.to_string(), value: None, time_added: Some(Time(Utc::now())) });
            }
        }
        if next == current {
            return Ok(());
        }
        let mut updated = node.clone();
        updated.spec.get_or_insert_with(Default::default).taints = (!next.is_empty()).then_some(next);
        Api::<Node>::all(self.client.clone()).replace(&node.name_any(), &PostParams::default(), &updated).await.map(drop)
    }

    /// The taint manager: deletes pods that do not (or no longer) tolerate their node's NoExecute taints.
    async fn evict(&mut self) {
        let mut tainted: HashMap<String, Vec<Taint>> = HashMap::new();
        for n in self.nodes.state() {
            let taints: Vec<Taint> = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().filter(|t| t.effect == "NoExecute").collect();
            if !taints.is_empty() {
                tainted.insert(n.name_any(), taints);
            }
        }
        let mut still: HashSet<String> = HashSet::new();
        if tainted.is_empty() {
            // Nothing to look for: spare the walk over every pod.
            self.seen_tainted.clear();
            return;
        }
        for pod in self.pods.state() {
            let Some(taints) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| tainted.get(n)) else { continue };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            still.insert(uid.clone());
            let first_seen = *self.seen_tainted.entry(uid).or_insert_with(Instant::now);
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
            let Some(wait) = toleration_time(taints, &tolerations) else { continue };
            // Count from when the taint was added when it says so, else from when we saw it.
            let newest_added = taints.iter().filter_map(|t| t.time_added.as_ref()).map(|t| t.0).max();
            let elapsed = match newest_added {
                Some(at) => (Utc::now() - at).to_std().unwrap_or_default(),
                None => first_seen.elapsed(),
            };
            if elapsed < wait {
                continue;
            }
            let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let about = ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: pod.uid(),
                ..Default::default()
            };
            record(&self.client, "taint-eviction-controller", about, "Normal", "TaintManagerEviction", format!("Marking for deletion Pod {ns}/{name}")).await;
            self.mark_disruption_target(&pod).await;
            match Api::<Pod>::namespaced(self.client.clone(), &ns).delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = format!("{ns}/{name}"), "evicted by NoExecute taint"),
                Err(e) if benign(&e) => {}
                Err(e) => tracing::warn!(pod = format!("{ns}/{name}"), "taint eviction: {e}"),
            }
        }
        self.seen_tainted.retain(|uid, _| still.contains(uid));
    }
}

impl Controller {
    /// As upstream, the pod says why it is going before it is deleted.
    async fn mark_disruption_target(&self, pod: &Pod) {
        let mut next = pod.clone();
        let conds = next.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
        conds.retain(|c| c.type_ != "DisruptionTarget");
        conds.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(Utc::now())),
            ..Default::default()
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        if let Err(e) = api.replace_status(&pod.name_any(), &PostParams::default(), serde_json::to_vec(&next).unwrap()).await {
            tracing::debug!(pod = pod.name_any(), "setting DisruptionTarget: {e}");
        }
    }
}

fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference { kind: Some("Node".into()), api_version: Some("v1".into()), name: Some(node.name_any()), uid: Some(node.name_any()), ..Default::default() }
}

const MANAGED: &[(&str, &str)] = &[
    (NOT_READY, "NoSchedule"),
    (NOT_READY, "NoExecute"),
    (UNREACHABLE, "NoSchedule"),
    (UNREACHABLE, "NoExecute"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut wanted = Vec::new();
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => wanted.extend([(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]),
        Some("Unknown") => wanted.extend([(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]),
        _ => {}
    }
    let pressure = BTreeMap::from([
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        ("NetworkUnavailable", "node.kubernetes.io/network-unavailable"),
    ]);
    for (cond, key) in pressure {
        if condition(node, cond).is_some_and(|c| c.status == "True") {
            wanted.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        wanted.push(("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    wanted
}

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// How long a pod may stay on a node with these NoExecute taints: None when
/// forever, zero when some taint is not tolerated at all.
fn toleration_time(taints: &[Taint], tolerations: &[Toleration]) -> Option<Duration> {
    let mut min: Option<Duration> = None;
    for taint in taints {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                let d = Duration::from_secs(s.max(0) as u64);
                min = Some(min.map_or(d, |m| m.min(d)));
            }
        }
    }
    min
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint { key: key.into(), effect: "NoExecute".into(), value: None, time_added: None }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some("NoExecute".into()), toleration_seconds: secs, value: None }
    }

    #[test]
    fn toleration_seconds_pick_the_shortest_and_untolerated_evicts_now() {
        let taints = [taint(UNREACHABLE)];
        assert_eq!(toleration_time(&taints, &[]), Some(Duration::ZERO));
        assert_eq!(toleration_time(&taints, &[tol(UNREACHABLE, Some(300)), tol("", Some(60))]), Some(Duration::from_secs(60)));
        assert_eq!(toleration_time(&taints, &[tol(UNREACHABLE, None)]), None);
        assert_eq!(toleration_time(&[taint("dedicated")], &[tol(UNREACHABLE, Some(300))]), Some(Duration::ZERO));
        let eq = Toleration { key: Some("k".into()), value: Some("v".into()), ..Default::default() };
        let t = Taint { key: "k".into(), value: Some("v".into()), effect: "NoExecute".into(), time_added: None };
        assert!(tolerates(&eq, &t));
    }
}
