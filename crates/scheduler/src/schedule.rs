//! One scheduling attempt: PreFilter state, filters over (a rotating
//! sample of) the nodes, scores, and a random choice among the best.

use std::collections::BTreeMap;

use rand::Rng;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::filters::{self, Failure};
use crate::scores::{self, *};
use crate::{interpod, spread, volumes};

/// Why no node fits: each filtered node's failure.
#[derive(Debug, Default)]
pub struct FitError {
    pub num_nodes: usize,
    pub failures: BTreeMap<String, Failure>,
    /// Why no node was even tried (a PreFilter plugin's verdict).
    pub pre_filter: Option<String>,
}

/// Upstream's "0/N nodes are available: <count reason>, ...." form.
pub fn histogram_message(num_nodes: usize, failures: impl Iterator<Item = Vec<String>>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reasons in failures {
        for r in reasons {
            *counts.entry(r).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if !parts.is_empty() {
        msg += &format!(" {}.", parts.join(", "));
    }
    msg
}

impl FitError {
    pub fn message(&self, post_filter: &str) -> String {
        if self.num_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut msg = match &self.pre_filter {
            Some(why) => format!("0/{} nodes are available: {why}.", self.num_nodes),
            None => histogram_message(self.num_nodes, self.failures.values().map(|f| f.reasons.clone())),
        };
        if !post_filter.is_empty() {
            msg += &format!(" {post_filter}");
        }
        msg
    }
}

/// The per-pod state the filters and scores share.
pub struct Prepared<'a> {
    pub pod: &'a PodInfo,
    pub interpod: interpod::State,
    pub spread: spread::State,
    pub volumes: volumes::State,
}

impl<'a> Prepared<'a> {
    /// The PreFilter step: fails (with the reason) when no node can take the pod.
    pub fn new(cache: &Cache, pod: &'a PodInfo) -> Result<Prepared<'a>, String> {
        let volumes = cache.volumes.prepare(pod)?;
        Ok(Prepared { pod, interpod: interpod::State::build(cache, pod), spread: spread::State::build(cache, pod), volumes })
    }

    pub fn filter(&self, node: &NodeInfo) -> Result<(), Failure> {
        filters::check(self.pod, node)?;
        self.volumes.filter(node)?;
        self.spread.filter(node)?;
        self.interpod.filter(self.pod, node)
    }
}

impl Prepared<'_> {
    fn place(&self, node: &NodeInfo) -> Placement {
        Placement { node: node.name.clone(), delayed_claims: self.volumes.delayed.iter().map(|(c, _)| c.clone()).collect() }
    }

    /// Filters as if the higher- or equal-priority pods nominated to the node were already there.
    pub fn filter_with_nominated(&self, cache: &Cache, node: &NodeInfo) -> Result<(), Failure> {
        let nominated = cache.nominated_for(&node.name, self.pod);
        if nominated.is_empty() {
            return self.filter(node);
        }
        let mut with = node.clone();
        nominated.into_iter().for_each(|p| with.add_pod(p));
        self.filter(&with)
    }
}

/// How many feasible nodes to look for (upstream percentageOfNodesToScore, adaptive).
pub fn feasible_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let pct = (50 - n as i64 / 125).max(5) as usize;
    (n * pct / 100).max(100)
}

/// Where a pod goes, and its claims to provision there before binding.
#[derive(Debug)]
pub struct Placement {
    pub node: String,
    pub delayed_claims: Vec<std::sync::Arc<k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
}

/// Picks a node for `pod`; `start` rotates where the search begins, as upstream does.
pub fn schedule(cache: &Cache, pod: &PodInfo, start: &mut usize, rng: &mut impl Rng) -> Result<Placement, FitError> {
    let n = cache.nodes.len();
    if n == 0 {
        return Err(FitError::default());
    }
    let prep = Prepared::new(cache, pod).map_err(|why| FitError { num_nodes: n, pre_filter: Some(why), ..Default::default() })?;
    let want = feasible_to_find(n);
    let nodes: Vec<&NodeInfo> = cache.nodes.values().collect();
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut failures = BTreeMap::new();
    let mut examined = 0;
    while examined < n && feasible.len() < want {
        let node = nodes[(*start + examined) % n];
        examined += 1;
        match prep.filter_with_nominated(cache, node) {
            Ok(()) => feasible.push(node),
            Err(f) => {
                failures.insert(node.name.clone(), f);
            }
        }
    }
    *start = (*start + examined) % n;
    if feasible.is_empty() {
        return Err(FitError { num_nodes: n, failures, pre_filter: None });
    }
    if feasible.len() == 1 {
        return Ok(prep.place(feasible[0]));
    }
    let totals = score(&prep, &feasible);
    let best = totals.iter().copied().max().unwrap_or(0);
    // Reservoir sampling among the best.
    let (mut chosen, mut seen) = (0, 0);
    for (i, s) in totals.iter().enumerate() {
        if *s == best {
            seen += 1;
            if rng.gen_range(0..seen) == 0 {
                chosen = i;
            }
        }
    }
    Ok(prep.place(feasible[chosen]))
}

fn has_spread_constraints(spec: &k8s_openapi::api::core::v1::PodSpec) -> bool {
    spec.topology_spread_constraints.as_ref().is_some_and(|c| !c.is_empty())
}

/// Weighted sum of every score plugin for each feasible node.
pub fn score(prep: &Prepared, nodes: &[&NodeInfo]) -> Vec<i64> {
    let spec = prep.pod.spec();
    let mut total: Vec<i64> = nodes
        .iter()
        .map(|n| W_FIT * least_allocated(prep.pod, n) + W_BALANCED * balanced_allocation(prep.pod, n))
        .collect();
    let mut add = |raw: Vec<i64>, w: i64| total.iter_mut().zip(raw).for_each(|(t, s)| *t += w * s);
    let mut aff: Vec<i64> = nodes.iter().map(|n| node_affinity_raw(spec, n)).collect();
    scores::normalize(&mut aff, false);
    add(aff, W_NODE_AFFINITY);
    let mut taint: Vec<i64> = nodes.iter().map(|n| taint_raw(spec, n)).collect();
    scores::normalize(&mut taint, true);
    add(taint, W_TAINT);
    if prep.interpod.has_scores {
        let mut ip: Vec<i64> = nodes.iter().map(|n| prep.interpod.score(&n.labels)).collect();
        scores::normalize_min_max(&mut ip);
        add(ip, W_INTERPOD);
    }
    if prep.spread.has_soft() {
        let raw: Vec<Option<f64>> = nodes.iter().map(|n| prep.spread.score(n)).collect();
        add(scores::normalize_spread(&raw), W_SPREAD);
    } else if let Some(owner) = prep.pod.controller.as_ref().filter(|_| !has_spread_constraints(spec)) {
        // Upstream's system-default spreading (ScheduleAnyway over hostnames)
        // for pods of one controller, counted per node in O(1).
        let raw: Vec<Option<f64>> = nodes.iter().map(|n| Some(n.controller_pods.get(owner).copied().unwrap_or(0) as f64)).collect();
        add(scores::normalize_spread(&raw), W_SPREAD);
    }
    total
}
