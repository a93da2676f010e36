//! DefaultPreemption (PostFilter): when no node fits, find a node where
//! evicting lower-priority pods would make room, choosing the fewest and
//! least important victims; otherwise explain why preemption cannot help,
//! in upstream's words.

use std::sync::Arc;

use crate::cache::{Cache, PodInfo};
use crate::filters::Code;
use crate::schedule::{histogram_message, FitError, Prepared};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
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
    let prep = Prepared::new(cache, pod);
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
        // Reprieve as many victims as possible, most important first.
        lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
        let mut victims = Vec::new();
        for v in lower {
            sim.add_pod(v.clone());
            if prep.filter(&sim).is_err() {
                sim.remove_pod(&v.key);
                victims.push(v);
            }
        }
        candidates.push(Candidate { node: name.clone(), victims });
    }
    if candidates.is_empty() {
        let absent = fit.num_nodes.saturating_sub(fit.failures.len());
        let all = statuses.into_iter().chain((0..absent).map(|_| vec![NOT_HELPFUL.to_string()]));
        return (format!("preemption: {}", histogram_message(fit.num_nodes, all)), None);
    }
    let best = candidates.into_iter().min_by_key(|c| {
        let max = c.victims.iter().map(|v| v.priority as i64).max().unwrap_or(i64::MIN);
        let sum: i64 = c.victims.iter().map(|v| v.priority as i64 + i32::MAX as i64 + 1).sum();
        (max, sum, c.victims.len())
    });
    (String::new(), best)
}
