//! The per-node filter plugins that need no cluster-wide state:
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts and
//! NodeResourcesFit, in upstream's order. Each failure carries upstream's
//! reason strings and whether preemption could help.

use k8s_openapi::api::core::v1::{PodSpec, Taint};

use crate::cache::{NodeInfo, PodInfo};
use crate::labels::{node_term_matches, tolerated};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Removing pods might make the node fit.
    Unschedulable,
    /// Preemption cannot help (UnschedulableAndUnresolvable).
    Unresolvable,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Failure {
    pub fn new(code: Code, reason: impl Into<String>) -> Failure {
        Failure { code, reasons: vec![reason.into()] }
    }
}

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";

/// Runs the simple filters in upstream's order; the first failing plugin decides.
pub fn check(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    let spec = pod.spec();
    node_unschedulable(spec, node)?;
    node_name(spec, node)?;
    taint_toleration(spec, node)?;
    if !node_affinity_matches(spec, node) {
        return Err(Failure::new(Code::Unresolvable, ERR_NODE_AFFINITY));
    }
    node_ports(pod, node)?;
    resources_fit(pod, node)
}

pub fn node_unschedulable(spec: &PodSpec, node: &NodeInfo) -> Result<(), Failure> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
    if tolerated(spec.tolerations.as_deref().unwrap_or(&[]), &taint) {
        return Ok(());
    }
    Err(Failure::new(Code::Unresolvable, ERR_UNSCHEDULABLE))
}

pub fn node_name(spec: &PodSpec, node: &NodeInfo) -> Result<(), Failure> {
    match spec.node_name.as_deref() {
        Some(n) if !n.is_empty() && n != node.name => Err(Failure::new(Code::Unresolvable, ERR_NODE_NAME)),
        _ => Ok(()),
    }
}

pub fn taint_toleration(spec: &PodSpec, node: &NodeInfo) -> Result<(), Failure> {
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    for t in &node.taints {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t) {
            let reason = format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or(""));
            return Err(Failure::new(Code::Unresolvable, reason));
        }
    }
    Ok(())
}

/// nodeSelector and required node affinity (also used by topology spread).
pub fn node_affinity_matches(spec: &PodSpec, node: &NodeInfo) -> bool {
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(ns) => ns.node_selector_terms.iter().any(|t| node_term_matches(t, &node.name, &node.labels)),
        None => true,
    }
}

pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    for (ip, proto, port) in &pod.host_ports {
        let conflict = node.used_ports.keys().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (ip == "0.0.0.0" || uip == "0.0.0.0" || uip == ip)
        });
        if conflict {
            return Err(Failure::new(Code::Unschedulable, ERR_PORTS));
        }
    }
    Ok(())
}

pub fn resources_fit(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push(ERR_TOO_MANY_PODS.to_string());
    }
    let (r, a, u) = (&pod.requests, &node.allocatable, &node.requested);
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        reasons.push("Insufficient cpu".into());
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        reasons.push("Insufficient memory".into());
    }
    if r.ephemeral > 0 && r.ephemeral > a.ephemeral - u.ephemeral {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (k, v) in &r.scalar {
        let free = a.scalar.get(k).copied().unwrap_or(0) - u.scalar.get(k).copied().unwrap_or(0);
        if *v > 0 && *v > free {
            reasons.push(format!("Insufficient {k}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Failure { code: Code::Unschedulable, reasons })
    }
}
