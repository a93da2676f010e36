//! Score plugins and upstream's weights: NodeResourcesFit (LeastAllocated),
//! NodeResourcesBalancedAllocation, NodeAffinity (preferred terms),
//! TaintToleration (PreferNoSchedule), InterPodAffinity (preferred terms) and
//! PodTopologySpread (ScheduleAnyway). Every plugin scores 0..=100.

use k8s_openapi::api::core::v1::PodSpec;

use crate::cache::{NodeInfo, PodInfo};
use crate::labels::{node_term_matches, tolerated};

pub const MAX: i64 = 100;

pub const W_FIT: i64 = 1;
pub const W_BALANCED: i64 = 1;
pub const W_NODE_AFFINITY: i64 = 2;
pub const W_TAINT: i64 = 3;
pub const W_INTERPOD: i64 = 2;
pub const W_SPREAD: i64 = 2;

/// LeastAllocated over cpu and memory, with non-zero default requests.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let one = |req: i64, alloc: i64| if alloc == 0 || req > alloc { 0 } else { (alloc - req) * MAX / alloc };
    let cpu = one(node.nonzero_requested.0 + pod.nonzero.0, node.allocatable.milli_cpu);
    let mem = one(node.nonzero_requested.1 + pod.nonzero.1, node.allocatable.memory);
    (cpu + mem) / 2
}

/// BalancedAllocation: 100 * (1 - standard deviation of the cpu and memory fractions).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let frac = |req: i64, alloc: i64| if alloc == 0 { 1.0 } else { (req as f64 / alloc as f64).min(1.0) };
    let cpu = frac(node.requested.milli_cpu + pod.requests.milli_cpu, node.allocatable.milli_cpu);
    let mem = frac(node.requested.memory + pod.requests.memory, node.allocatable.memory);
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms the node matches.
pub fn node_affinity_raw(spec: &PodSpec, node: &NodeInfo) -> i64 {
    let preferred = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref());
    preferred
        .into_iter()
        .flatten()
        .filter(|p| node_term_matches(&p.preference, &node.name, &node.labels))
        .map(|p| p.weight as i64)
        .sum()
}

/// Number of PreferNoSchedule taints the pod does not tolerate.
pub fn taint_raw(spec: &PodSpec, node: &NodeInfo) -> i64 {
    let tolerations: Vec<_> = spec
        .tolerations
        .iter()
        .flatten()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .cloned()
        .collect();
    node.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations, t)).count() as i64
}

/// Scales raw scores to 0..=100 by the maximum (upstream DefaultNormalizeScore).
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for s in raw.iter_mut() {
        *s = match (max, reverse) {
            (0, true) => MAX,
            (0, false) => 0,
            (m, false) => *s * MAX / m,
            (m, true) => MAX - *s * MAX / m,
        };
    }
}

/// InterPodAffinity: min-max scaling of possibly negative sums.
pub fn normalize_min_max(raw: &mut [i64]) {
    let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
    for s in raw.iter_mut() {
        *s = if max > min { (*s - min) * MAX / (max - min) } else { 0 };
    }
}

/// PodTopologySpread: fewer matching pods is better; nodes missing a key get 0.
pub fn normalize_spread(raw: &[Option<f64>]) -> Vec<i64> {
    let vals = raw.iter().flatten().copied();
    let (min, max) = vals.clone().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0.0 => MAX,
            Some(v) => (MAX as f64 * (max + min - v) / max) as i64,
        })
        .collect()
}
