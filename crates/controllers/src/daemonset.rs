//! DaemonSet decisions, free of I/O (upstream pkg/controller/daemon): which
//! nodes should run a daemon pod, which pods to create and delete to get one
//! per such node, how a RollingUpdate replaces them within maxUnavailable
//! and maxSurge, and the status counts. daemonset_sync.rs does the writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use scheduler::labels::{node_term_matches, tolerated};

use crate::history::REVISION_LABEL;
use crate::workload::{pod_available, pod_phase, pod_ready};

pub const COMPONENT: &str = "daemonset-controller";
/// Upstream's BurstReplicas: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 250;
/// The apiserver's template generation, when set, also marks a pod as current.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Upstream AddOrUpdateDaemonPodTolerations: daemon pods stay on nodes that
/// are not ready, unreachable, under pressure or cordoned (and, with
/// hostNetwork, without a pod network), since they often are what fixes them.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![(NOT_READY, "NoExecute"), (UNREACHABLE, "NoExecute"), (DISK_PRESSURE, "NoSchedule"), (MEMORY_PRESSURE, "NoSchedule"), (PID_PRESSURE, "NoSchedule"), (UNSCHEDULABLE, "NoSchedule")];
    if spec.host_network == Some(true) {
        wanted.push((NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
        let same = |x: &Toleration| x.key == t.key && x.effect == t.effect && x.operator.as_deref().unwrap_or("Equal") == "Exists";
        match tolerations.iter_mut().find(|x| same(x)) {
            Some(existing) => *existing = t,
            None => tolerations.push(t),
        }
    }
}

/// Upstream NodeShouldRunDaemonPod: (should run, may keep running). `spec`
/// is the daemon pod's spec, tolerations added. A pod that no longer fits
/// only for a NoSchedule taint may keep running.
pub fn should_run(node: &Node, spec: &PodSpec) -> (bool, bool) {
    let name = node.name_any();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return (false, false);
    }
    let labels = node.labels();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = match spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref()) {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| node_term_matches(t, &name, labels)),
    };
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    let untolerated = |effect: &str| taints.iter().any(|t| t.effect == effect && !tolerated(tolerations, t));
    if untolerated("NoSchedule") || untolerated("NoExecute") {
        return (false, !untolerated("NoExecute"));
    }
    (true, true)
}

/// Upstream ReplaceDaemonSetPodNodeNameNodeAffinity: the pod may only go to
/// `node`; the scheduler binds it there.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.into()]) }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] });
    affinity
}

/// The node a daemon pod is bound or pinned to (upstream GetTargetNodeName).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find(|f| f.key == "metadata.name" && f.operator == "In").and_then(|f| f.values.as_ref()?.first().cloned())
}

/// What a DaemonSet asks for, resolved once per sync.
pub struct Daemon {
    /// The daemon pod spec, with the daemon tolerations.
    pub spec: PodSpec,
    /// The current revision's hash.
    pub hash: String,
    pub template_generation: Option<String>,
    pub min_ready_seconds: i32,
    /// None for OnDelete.
    pub rolling: Option<(IntOrString, IntOrString)>,
}

impl Daemon {
    pub fn new(ds: &DaemonSet, hash: String) -> Daemon {
        let spec = ds.spec.clone().unwrap_or_default();
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut pod_spec);
        let strategy = spec.update_strategy.unwrap_or_default();
        let rolling = (strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate").then(|| {
            let ru = strategy.rolling_update.unwrap_or_default();
            (ru.max_surge.unwrap_or(IntOrString::Int(0)), ru.max_unavailable.unwrap_or(IntOrString::Int(1)))
        });
        Daemon {
            spec: pod_spec,
            hash,
            template_generation: ds.annotations().get(TEMPLATE_GENERATION_ANNOTATION).cloned(),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            rolling,
        }
    }

    pub fn allows_surge(&self) -> bool {
        self.rolling.as_ref().is_some_and(|(surge, _)| scaled(surge, 1) > 0)
    }

    /// Upstream IsPodUpdated: made from the current revision (or template generation).
    pub fn is_updated(&self, pod: &Pod) -> bool {
        let labels = pod.labels();
        let hash_ok = !self.hash.is_empty() && labels.get(REVISION_LABEL) == Some(&self.hash);
        let gen_ok = self.template_generation.as_ref().is_some_and(|g| labels.get(TEMPLATE_GENERATION_LABEL) == Some(g));
        hash_ok || gen_ok
    }

    fn available(&self, pod: &Pod, now: DateTime<Utc>) -> bool {
        pod_available(pod, self.min_ready_seconds, now)
    }
}

/// Upstream GetScaledValueFromIntOrPercent, rounding up as the DaemonSet does.
pub fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * total as i64 + 99) / 100) as i32
        }
    }
}

/// A node's daemon pods, as the controller groups them.
pub type ByNode = BTreeMap<String, Vec<Arc<Pod>>>;

/// Scheduled first, then oldest, then by name (upstream podByCreationTimestampAndPhase).
pub fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    let unscheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
    pods.sort_by(|a, b| {
        unscheduled(a).cmp(&unscheduled(b)).then_with(|| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp)).then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// Writes one sync asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a daemon pod for.
    pub create: Vec<String>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// Failed pods being deleted, as (node, pod), for events and back-off.
    pub failed: Vec<(String, String)>,
    /// A failed pod was left for its back-off to pass.
    pub backing_off: bool,
}

/// Upstream manage + podsShouldBeOnNode: one daemon pod per node that
/// should run one, none elsewhere; failed pods replaced (unless the node is
/// in back-off), extra pods removed.
pub fn manage(d: &Daemon, nodes: &[Arc<Node>], by_node: &ByNode, now: DateTime<Utc>, in_backoff: &dyn Fn(&str) -> bool) -> Plan {
    let mut plan = Plan::default();
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(node, &d.spec);
        let pods = by_node.get(&name).filter(|p| !p.is_empty());
        match pods {
            None if run => plan.create.push(name),
            None => {}
            Some(pods) if keep => {
                let mut running = Vec::new();
                for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                    match pod_phase(pod) {
                        "Failed" if in_backoff(&name) => plan.backing_off = true,
                        "Failed" => {
                            plan.failed.push((name.clone(), pod.name_any()));
                            plan.delete.push(pod.name_any());
                        }
                        "Succeeded" => plan.delete.push(pod.name_any()),
                        _ => running.push(pod.clone()),
                    }
                }
                plan.delete.extend(extra_pods(d, running, now));
            }
            Some(pods) => plan.delete.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any())),
        }
    }
    // Pods pinned to nodes that are gone never get scheduled, so pod GC never sees them.
    for (node, pods) in by_node {
        if !nodes.iter().any(|n| n.metadata.name.as_ref() == Some(node)) {
            let unscheduled = pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty));
            plan.delete.extend(unscheduled.filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any()));
        }
    }
    plan
}

/// The running pods on one node beyond the one it should have: without
/// surge all but the oldest; with surge an old and a new pod may overlap
/// while the new one is not yet available.
fn extra_pods(d: &Daemon, mut running: Vec<Arc<Pod>>, now: DateTime<Utc>) -> Vec<String> {
    if running.len() < 2 {
        return vec![];
    }
    sort_oldest_first(&mut running);
    if !d.allows_surge() {
        return running[1..].iter().map(|p| p.name_any()).collect();
    }
    let (mut oldest_new, mut oldest_old, mut extra) = (None, None, Vec::new());
    for pod in running {
        let slot = if d.is_updated(&pod) { &mut oldest_new } else { &mut oldest_old };
        if slot.is_none() {
            *slot = Some(pod);
        } else {
            extra.push(pod.name_any());
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !pod_ready(&old) || d.available(&new, now) {
            extra.push(old.name_any());
        }
    }
    extra
}

/// The nodes that should run a pod, each with its pods (maybe none).
fn wanted_nodes<'a>(d: &Daemon, nodes: &'a [Arc<Node>], by_node: &ByNode) -> (ByNode, usize) {
    let mut all = by_node.clone();
    let mut desired = 0;
    for node in nodes {
        if should_run(node, &d.spec).0 {
            desired += 1;
            all.entry(node.name_any()).or_default();
        }
    }
    (all, desired)
}

/// Upstream findUpdatedPodsOnNode: the node's live new and old pod; None
/// when it has two of a kind (manage will remove one first).
fn new_and_old(d: &Daemon, pods: &[Arc<Pod>]) -> Option<(Option<Arc<Pod>>, Option<Arc<Pod>>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if d.is_updated(pod) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod.clone());
    }
    Some((new, old))
}

/// Upstream rollingUpdate. Without surge: delete old pods while fewer than
/// maxUnavailable pods are unavailable (manage recreates them). With surge:
/// start new pods next to old ones, at most maxSurge at a time, and delete
/// each old pod once its replacement is available.
pub fn rolling_update(d: &Daemon, nodes: &[Arc<Node>], by_node: &ByNode, now: DateTime<Utc>) -> Plan {
    let Some((surge, unavailable)) = &d.rolling else { return Plan::default() };
    let (all, desired) = wanted_nodes(d, nodes, by_node);
    let (mut max_surge, mut max_unavailable) = (scaled(surge, desired as i32), scaled(unavailable, desired as i32));
    if desired > 0 && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    max_surge = max_surge.max(0);
    let mut plan = Plan::default();
    if max_surge == 0 {
        let (mut unavailable, mut replace, mut candidates) = (0, Vec::new(), Vec::new());
        for pods in all.values() {
            match new_and_old(d, pods) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => unavailable += i32::from(!d.available(&new, now)),
                Some((None, Some(old))) if !d.available(&old, now) => replace.push(old.name_any()),
                Some((None, Some(_))) if unavailable >= max_unavailable => {}
                Some((None, Some(old))) => candidates.push(old.name_any()),
            }
        }
        let room = ((max_unavailable - unavailable).max(0) as usize).min(candidates.len());
        plan.delete = replace;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    let (mut surging, mut available) = (0, 0);
    let (mut allowed, mut candidates, mut should_not_run) = (Vec::new(), Vec::new(), Vec::new());
    for (node_name, pods) in &all {
        let Some((new, old)) = new_and_old(d, pods) else {
            surging += 1;
            continue;
        };
        match (&new, &old) {
            (None, Some(old)) if d.available(old, now) => available += 1,
            (Some(new), _) if d.available(new, now) => available += 1,
            _ => {}
        }
        let runs = nodes.iter().find(|n| n.metadata.name.as_ref() == Some(node_name)).is_some_and(|n| should_run(n, &d.spec).0);
        if !runs {
            should_not_run.extend(old.map(|p| p.name_any()));
            continue;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !d.available(&old, now) => allowed.push(node_name.clone()),
            (None, Some(_)) if surging >= max_surge => {}
            (None, Some(_)) => candidates.push(node_name.clone()),
            (Some(new), Some(_)) if !d.available(&new, now) => surging += 1,
            (Some(_), Some(old)) => plan.delete.push(old.name_any()),
        }
    }
    // Pods on nodes that no longer want one go only while enough others are available.
    let deletable = (available - desired as i32).max(0) as usize;
    plan.delete.extend(should_not_run.into_iter().take(deletable));
    let room = ((max_surge - surging).max(0) as usize).min(candidates.len());
    plan.create = allowed;
    plan.create.extend(candidates.into_iter().take(room));
    plan
}

/// The counts upstream's updateDaemonSetStatus reports.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
}

pub fn counts(d: &Daemon, nodes: &[Arc<Node>], by_node: &ByNode, now: DateTime<Utc>) -> Counts {
    let mut c = Counts::default();
    for node in nodes {
        let pods = by_node.get(&node.name_any()).filter(|p| !p.is_empty());
        if !should_run(node, &d.spec).0 {
            c.misscheduled += i32::from(pods.is_some());
            continue;
        }
        c.desired += 1;
        let Some(pods) = pods else { continue };
        c.current += 1;
        let mut pods = pods.clone();
        sort_oldest_first(&mut pods);
        let pod = &pods[0];
        if pod_ready(pod) {
            c.ready += 1;
            c.available += i32::from(d.available(pod, now));
        }
        c.updated += i32::from(d.is_updated(pod));
    }
    c
}

#[cfg(test)]
#[path = "daemonset_tests.rs"]
mod tests;
