//! PodTopologySpread: DoNotSchedule constraints as a filter, ScheduleAnyway
//! constraints as a score. Counts of matching pods per topology domain are
//! built once per scheduling attempt from the cache.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::filters::{node_affinity_matches, Code, Failure};
use crate::labels::selector_matches;

pub const ERR_SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: i64,
    selector: Option<LabelSelector>,
    self_match: i64,
    counts: HashMap<String, i64>,
}

#[derive(Default)]
pub struct State {
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
}

fn constraint(c: &TopologySpreadConstraint, pod: &PodInfo) -> Constraint {
    let mut selector = c.label_selector.clone();
    for k in c.match_label_keys.iter().flatten() {
        if let (Some(s), Some(v)) = (selector.as_mut(), pod.labels.get(k)) {
            s.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
                key: k.clone(),
                operator: "In".into(),
                values: Some(vec![v.clone()]),
            });
        }
    }
    let self_match = selector_matches(selector.as_ref(), &pod.labels) as i64;
    Constraint {
        key: c.topology_key.clone(),
        max_skew: c.max_skew.max(1) as i64,
        min_domains: c.min_domains.unwrap_or(1).max(1) as i64,
        selector,
        self_match,
        counts: HashMap::new(),
    }
}

fn has_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.labels.contains_key(&c.key))
}

impl State {
    pub fn build(cache: &Cache, pod: &PodInfo) -> State {
        let all = pod.spec().topology_spread_constraints.as_deref().unwrap_or(&[]);
        if all.is_empty() {
            return State::default();
        }
        let mut s = State {
            hard: all.iter().filter(|c| c.when_unsatisfiable == "DoNotSchedule").map(|c| constraint(c, pod)).collect(),
            soft: all.iter().filter(|c| c.when_unsatisfiable != "DoNotSchedule").map(|c| constraint(c, pod)).collect(),
        };
        let spec = pod.spec();
        for node in cache.nodes.values() {
            // nodeAffinityPolicy Honor (the default): only nodes the pod could go to count.
            if !node_affinity_matches(spec, node) {
                continue;
            }
            for set in [&mut s.hard, &mut s.soft] {
                if !has_keys(node, set) {
                    continue;
                }
                for c in set.iter_mut() {
                    let n = node
                        .pods
                        .values()
                        .filter(|p| p.namespace == pod.namespace && !p.terminating() && selector_matches(c.selector.as_ref(), &p.labels))
                        .count() as i64;
                    *c.counts.entry(node.labels[&c.key].clone()).or_default() += n;
                }
            }
        }
        s
    }

    pub fn filter(&self, node: &NodeInfo) -> Result<(), Failure> {
        for c in &self.hard {
            let Some(value) = node.labels.get(&c.key) else {
                return Err(Failure::new(Code::Unresolvable, ERR_MISSING_LABEL));
            };
            let min = if (c.counts.len() as i64) < c.min_domains { 0 } else { c.counts.values().copied().min().unwrap_or(0) };
            let here = c.counts.get(value).copied().unwrap_or(0);
            if here + c.self_match - min > c.max_skew {
                return Err(Failure::new(Code::Unschedulable, ERR_SKEW));
            }
        }
        Ok(())
    }

    pub fn has_soft(&self) -> bool {
        !self.soft.is_empty()
    }

    /// Raw ScheduleAnyway score (lower is better); None for nodes missing a key.
    pub fn score(&self, node: &NodeInfo) -> Option<f64> {
        if !has_keys(node, &self.soft) {
            return None;
        }
        Some(
            self.soft
                .iter()
                .map(|c| {
                    let weight = ((c.counts.len() + 2) as f64).ln();
                    c.counts.get(&node.labels[&c.key]).copied().unwrap_or(0) as f64 * weight + (c.max_skew - 1) as f64
                })
                .sum(),
        )
    }
}
