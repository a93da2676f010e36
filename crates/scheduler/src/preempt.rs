//! DefaultPreemption (PostFilter): when no node fits, find a node where
//! evicting lower-priority pods would make room, choosing the fewest and
//! least important victims and, first of all, the fewest whose eviction
//! would break a PodDisruptionBudget; otherwise explain why preemption
//! cannot help, in upstream's words.

use std::sync::Arc;

use crate::cache::{Cache, Pdb, PodInfo};
use crate::filters::Code;
use crate::schedule::{histogram_message, FitError, Prepared};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    /// Victims whose eviction breaks a PodDisruptionBudget.
    pub pdb_violations: usize,
}

/// Returns the PostFilter message ("" when a candidate was found) and the candidate.
pub fn preempt(cache: &Cache, pod: &PodInfo, fit: &FitError) -> (String, Option<Candidate>) {
    let spec = pod.spec();
    if spec.preemption_policy.as_deref() == Some("Never") {
        return ("preemption: not eligible due to preemptionPolicy=Never.".into(), None);
    }
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| cache.nodes.get(n)) {
        if node.pods.values().any(|p| p.terminating() && p.priority < pod.priority) {
            return ("preemption: not eligible due to a terminating pod on the nominated node.".into(), None);
        }
    }
    let Ok(prep) = Prepared::new(cache, pod) else {
        let n = cache.nodes.len();
        return (format!("preemption: 0/{n} nodes are available: {n} {NOT_HELPFUL}."), None);
    };
    let mut statuses: Vec<Vec<String>> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (name, failure) in &fit.failures {
        if failure.code == Code::Unresolvable {
            statuses.push(vec![NOT_HELPFUL.into()]);
            continue;
        }
        let Some(node) = cache.nodes.get(name) else { continue };
        let mut lower: Vec<Arc<PodInfo>> = node.pods.values().filter(|p| p.priority < pod.priority).cloned().collect();
        if lower.is_empty() {
            statuses.push(vec![NO_VICTIMS.into()]);
            continue;
        }
        let mut sim = node.clone();
        for v in &lower {
            sim.remove_pod(&v.key);
        }
        if let Err(f) = prep.filter(&sim) {
            statuses.push(f.reasons);
            continue;
        }
        // Reprieve as many victims as possible: those a budget protects
        // first, then the rest, most important first within each.
        lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
        let (violating, other) = split_by_budget(cache.pdbs.values(), lower);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (v, breaks_budget) in violating.into_iter().map(|v| (v, true)).chain(other.into_iter().map(|v| (v, false))) {
            sim.add_pod(v.clone());
            if prep.filter(&sim).is_err() {
                sim.remove_pod(&v.key);
                victims.push(v);
                pdb_violations += breaks_budget as usize;
            }
        }
        candidates.push(Candidate { node: name.clone(), victims, pdb_violations });
    }
    if candidates.is_empty() {
        let absent = fit.num_nodes.saturating_sub(fit.failures.len());
        let all = statuses.into_iter().chain((0..absent).map(|_| vec![NOT_HELPFUL.to_string()]));
        return (format!("preemption: {}", histogram_message(fit.num_nodes, all)), None);
    }
    let best = candidates.into_iter().min_by_key(|c| {
        let max = c.victims.iter().map(|v| v.priority as i64).max().unwrap_or(i64::MIN);
        let sum: i64 = c.victims.iter().map(|v| v.priority as i64 + i32::MAX as i64 + 1).sum();
        (c.pdb_violations, max, sum, c.victims.len())
    });
    (String::new(), best)
}

/// Splits victims (most important first) into those whose eviction, taken
/// in this order, would exceed a budget's disruptionsAllowed, and the rest.
fn split_by_budget<'a>(pdbs: impl Iterator<Item = &'a Pdb>, pods: Vec<Arc<PodInfo>>) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut budgets: Vec<(&Pdb, i32)> = pdbs.map(|p| (p, p.disruptions_allowed)).collect();
    pods.into_iter().partition(|pod| {
        let mut violated = false;
        let name = pod.key.rsplit('/').next().unwrap_or("");
        for (_, allowed) in budgets.iter_mut().filter(|(pdb, _)| pdb.covers(pod) && !pdb.disrupted.iter().any(|d| d == name)) {
            *allowed -= 1;
            violated |= *allowed < 0;
        }
        violated
    })
}
