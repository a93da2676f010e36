//! Node lifecycle: watches node Leases (kube-node-lease) and node status.
//! A node that has not renewed its lease or posted status for the grace
//! period gets its conditions set to Unknown; nodes are tainted by their
//! conditions (`node.kubernetes.io/unreachable`, `not-ready`, pressure,
//! unschedulable) and untainted when healthy again. The NoExecute taints of
//! unhealthy nodes are rate-limited per zone, as upstream: 0.1 nodes/s, 0.01
//! in a large zone where most nodes are down (none in a small one), and
//! none at all while every node of the cluster is down, which looks like
//! the control plane's own partition rather than the nodes'. The taint
//! manager part deletes pods on nodes with NoExecute taints they do not
//! tolerate, after the shortest matching `tolerationSeconds`.

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

use client::eventlog::record;
use client::informer::{benign, ready, strip_managed_fields, Shared, Watched};

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
    let mut c = Controller { client, nodes, leases, pods, health: HashMap::new(), seen_tainted: HashMap::new(), zones: HashMap::new(), all_down: false };
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
    /// NoExecute tainting budget per zone.
    zones: HashMap<String, TokenBucket>,
    /// Every node is down (upstream's master disruption mode).
    all_down: bool,
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
        let mut seen = Vec::new();
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
            seen.push(node);
        }
        let states = zone_states(&seen);
        let all_down = !states.is_empty() && states.values().all(|z| z.state == ZoneState::FullDisruption);
        if all_down != self.all_down {
            self.all_down = all_down;
            self.zones.clear();
            if all_down {
                tracing::warn!("every node is not Ready: no NoExecute taints (full disruption mode) until one is back");
            } else {
                tracing::info!("a node is Ready again: leaving full disruption mode");
            }
        }
        for node in seen {
            let zone = zone_of(&node);
            let rate = states[&zone].eviction_rate();
            let mut bucket = self.zones.remove(&zone).unwrap_or_else(TokenBucket::new);
            if let Err(e) = self.taint(&node, all_down, || bucket.take(rate)).await {
                if !benign(&e) {
                    tracing::warn!(node = node.name_any(), "updating node taints: {e}");
                }
            }
            self.zones.insert(zone, bucket);
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

    /// Brings the controller-managed taints in line with the node's
    /// conditions. A missing not-ready/unreachable NoExecute taint is added
    /// only when `may_add_no_execute` allows it (the zone's rate), and none
    /// is kept while every node is down.
    async fn taint(&self, node: &Node, all_down: bool, may_add_no_execute: impl FnOnce() -> bool) -> kube::Result<()> {
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let has = |(key, effect): &(&str, &str)| current.iter().any(|t| t.key == *key && t.effect == *effect);
        let (no_execute, mut wanted): (Vec<_>, Vec<_>) = wanted_taints(node).into_iter().partition(|(_, effect)| *effect == "NoExecute");
        let no_execute: Vec<_> = no_execute.into_iter().filter(|_| !all_down).collect();
        if no_execute.iter().all(has) || may_add_no_execute() {
            wanted.extend(no_execute);
        } else {
            wanted.extend(no_execute.into_iter().filter(has));
        }
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
            // Counted from when this pod was first seen on the tainted node,
            // as upstream: a pod arriving on a node tainted long ago still
            // gets its whole tolerationSeconds.
            if first_seen.elapsed() < wait {
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

/// Upstream's defaults: --node-eviction-rate, --secondary-node-eviction-rate,
/// --large-cluster-size-threshold, --unhealthy-zone-threshold.
const EVICTION_RATE: f64 = 0.1;
const SECONDARY_EVICTION_RATE: f64 = 0.01;
const LARGE_ZONE: usize = 50;
const UNHEALTHY_ZONE: f64 = 0.55;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ZoneState {
    Normal,
    /// More than two nodes and at least 55 % of them not Ready.
    PartialDisruption,
    /// No node Ready.
    FullDisruption,
}

#[derive(Clone, Copy, Debug)]
struct Zone {
    state: ZoneState,
    nodes: usize,
}

impl Zone {
    /// Nodes per second that may get a NoExecute taint.
    fn eviction_rate(&self) -> f64 {
        match self.state {
            ZoneState::Normal | ZoneState::FullDisruption => EVICTION_RATE,
            ZoneState::PartialDisruption if self.nodes > LARGE_ZONE => SECONDARY_EVICTION_RATE,
            ZoneState::PartialDisruption => 0.0,
        }
    }
}

/// A node's failure zone: its region and zone labels (empty when unset).
fn zone_of(node: &Node) -> String {
    let label = |k: &str| node.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default();
    format!("{}:{}", label("topology.kubernetes.io/region"), label("topology.kubernetes.io/zone"))
}

fn zone_states(nodes: &[Node]) -> HashMap<String, Zone> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for node in nodes {
        let (ready, not_ready) = counts.entry(zone_of(node)).or_default();
        if condition(node, "Ready").is_some_and(|c| c.status == "True") {
            *ready += 1;
        } else {
            *not_ready += 1;
        }
    }
    counts
        .into_iter()
        .map(|(zone, (ready, not_ready))| {
            let state = if ready == 0 && not_ready > 0 {
                ZoneState::FullDisruption
            } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE {
                ZoneState::PartialDisruption
            } else {
                ZoneState::Normal
            };
            (zone, Zone { state, nodes: ready + not_ready })
        })
        .collect()
}

/// A token bucket holding at most one token (upstream's burst of 1).
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new() -> TokenBucket {
        TokenBucket { tokens: 1.0, last: Instant::now() }
    }

    fn take(&mut self, per_second: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * per_second).min(1.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
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

    fn node(name: &str, zone: &str, ready: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    #[test]
    fn zones_are_normal_partially_or_fully_disrupted() {
        let mut nodes = vec![node("a1", "a", "True"), node("a2", "a", "Unknown"), node("b1", "b", "False")];
        let states = zone_states(&nodes);
        assert_eq!((states[":a"].state, states[":b"].state), (ZoneState::Normal, ZoneState::FullDisruption));
        assert_eq!(states[":b"].eviction_rate(), EVICTION_RATE);
        // Three of four down in a small zone: partial disruption, no NoExecute tainting at all.
        nodes.extend([node("a3", "a", "Unknown"), node("a4", "a", "False")]);
        let a = zone_states(&nodes)[":a"];
        assert_eq!((a.state, a.eviction_rate()), (ZoneState::PartialDisruption, 0.0));
        // The same share in a zone of more than 50 nodes: the secondary rate.
        let large: Vec<Node> = (0..60).map(|i| node(&format!("n{i}"), "c", if i < 40 { "Unknown" } else { "True" })).collect();
        assert_eq!(zone_states(&large)[":c"].eviction_rate(), SECONDARY_EVICTION_RATE);
    }

    #[test]
    fn token_bucket_allows_one_then_waits_for_the_rate() {
        let mut b = TokenBucket::new();
        assert!(b.take(0.1));
        assert!(!b.take(0.1));
        b.last -= Duration::from_secs(11);
        assert!(b.take(0.1));
        assert!(!b.take(0.0) && !TokenBucket { tokens: 0.0, last: Instant::now() }.take(0.0));
    }
}
