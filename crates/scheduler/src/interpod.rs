//! InterPodAffinity: required pod affinity and anti-affinity (the incoming
//! pod's and the existing pods'), and the preferred terms for scoring. The
//! per-pod state is built once per scheduling attempt ("PreFilter"); the
//! per-node checks are then map lookups.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::PodAffinityTerm;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::filters::{Code, Failure};
use crate::labels::selector_matches;

pub const ERR_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI: &str = "node(s) didn't match pod anti-affinity rules";

type Domain = (String, String);

/// Does `term` (declared by `owner`) select `candidate`?
pub fn term_matches(term: &PodAffinityTerm, owner: &PodInfo, candidate: &PodInfo) -> bool {
    let namespaces = term.namespaces.as_deref().unwrap_or(&[]);
    let ns_ok = if !namespaces.is_empty() {
        namespaces.contains(&candidate.namespace)
    } else {
        match &term.namespace_selector {
            // An empty namespaceSelector selects every namespace; others would need namespace labels.
            Some(sel) => sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty()),
            None => candidate.namespace == owner.namespace,
        }
    };
    if !ns_ok {
        return false;
    }
    let mut sel: Option<LabelSelector> = term.label_selector.clone();
    let extra = |keys: &Option<Vec<String>>, op: &str, sel: &mut Option<LabelSelector>| {
        for k in keys.iter().flatten() {
            if let (Some(s), Some(v)) = (sel.as_mut(), owner.labels.get(k)) {
                s.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
                    key: k.clone(),
                    operator: op.into(),
                    values: Some(vec![v.clone()]),
                });
            }
        }
    };
    extra(&term.match_label_keys, "In", &mut sel);
    extra(&term.mismatch_label_keys, "NotIn", &mut sel);
    selector_matches(sel.as_ref(), &candidate.labels)
}

fn required_terms(p: &PodInfo, anti: bool) -> &[PodAffinityTerm] {
    let a = p.spec().affinity.as_ref();
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref())
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref())
    };
    terms.map(|v| v.as_slice()).unwrap_or(&[])
}

fn preferred_terms(p: &PodInfo) -> Vec<(i64, &PodAffinityTerm)> {
    let a = p.spec().affinity.as_ref();
    let aff = a.and_then(|a| a.pod_affinity.as_ref()).and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref());
    let anti = a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref());
    aff.into_iter()
        .flatten()
        .map(|w| (w.weight as i64, &w.pod_affinity_term))
        .chain(anti.into_iter().flatten().map(|w| (-(w.weight as i64), &w.pod_affinity_term)))
        .collect()
}

/// The PreFilter state for one pod.
#[derive(Debug, Default)]
pub struct State {
    /// Domains where an existing pod's required anti-affinity selects the incoming pod.
    existing_anti: HashSet<Domain>,
    /// Per required affinity term: matching pods per domain.
    affinity: Vec<HashMap<Domain, i64>>,
    affinity_any: bool,
    pod_matches_own_affinity: bool,
    /// Per required anti-affinity term: matching pods per domain.
    anti: Vec<HashMap<Domain, i64>>,
    /// Preferred (anti-)affinity score per domain.
    pub scores: HashMap<Domain, i64>,
    pub has_scores: bool,
}

fn domain(node: &NodeInfo, key: &str) -> Option<Domain> {
    node.labels.get(key).map(|v| (key.to_string(), v.clone()))
}

impl State {
    pub fn build(cache: &Cache, pod: &PodInfo) -> State {
        let mut s = State::default();
        let (aff, anti, pref) = (required_terms(pod, false), required_terms(pod, true), preferred_terms(pod));
        s.affinity = vec![HashMap::new(); aff.len()];
        s.anti = vec![HashMap::new(); anti.len()];
        s.pod_matches_own_affinity = !aff.is_empty() && aff.iter().all(|t| term_matches(t, pod, pod));
        let scan_all = !aff.is_empty() || !anti.is_empty() || !pref.is_empty();
        for node in cache.nodes.values() {
            // Existing pods' terms: only pods that declare some.
            for key in &node.affinity_pods {
                let Some(ex) = node.pods.get(key) else { continue };
                for t in required_terms(ex, true) {
                    if term_matches(t, ex, pod) {
                        if let Some(d) = domain(node, &t.topology_key) {
                            s.existing_anti.insert(d);
                        }
                    }
                }
                for t in required_terms(ex, false) {
                    if term_matches(t, ex, pod) {
                        if let Some(d) = domain(node, &t.topology_key) {
                            *s.scores.entry(d).or_default() += 1; // hardPodAffinityWeight
                            s.has_scores = true;
                        }
                    }
                }
                for (w, t) in preferred_terms(ex) {
                    if term_matches(t, ex, pod) {
                        if let Some(d) = domain(node, &t.topology_key) {
                            *s.scores.entry(d).or_default() += w;
                            s.has_scores = true;
                        }
                    }
                }
            }
            if !scan_all {
                continue;
            }
            for ex in node.pods.values() {
                for (i, t) in aff.iter().enumerate() {
                    if term_matches(t, pod, ex) {
                        s.affinity_any = true;
                        if let Some(d) = domain(node, &t.topology_key) {
                            *s.affinity[i].entry(d).or_default() += 1;
                        }
                    }
                }
                for (i, t) in anti.iter().enumerate() {
                    if term_matches(t, pod, ex) {
                        if let Some(d) = domain(node, &t.topology_key) {
                            *s.anti[i].entry(d).or_default() += 1;
                        }
                    }
                }
                for (w, t) in &pref {
                    if term_matches(t, pod, ex) {
                        if let Some(d) = domain(node, &t.topology_key) {
                            *s.scores.entry(d).or_default() += w;
                            s.has_scores = true;
                        }
                    }
                }
            }
        }
        s
    }

    /// Upstream's order: the pod's affinity, its anti-affinity, then the existing pods' anti-affinity.
    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let aff = required_terms(pod, false);
        let satisfied = aff.iter().enumerate().all(|(i, t)| domain(node, &t.topology_key).is_some_and(|d| self.affinity[i].get(&d).copied().unwrap_or(0) > 0));
        // The first pod of a group that selects itself may go anywhere.
        if !satisfied && (self.affinity_any || !self.pod_matches_own_affinity) {
            return Err(Failure::new(Code::Unresolvable, ERR_AFFINITY));
        }
        let anti = required_terms(pod, true);
        for (i, t) in anti.iter().enumerate() {
            if domain(node, &t.topology_key).is_some_and(|d| self.anti[i].get(&d).copied().unwrap_or(0) > 0) {
                return Err(Failure::new(Code::Unschedulable, ERR_ANTI));
            }
        }
        if !self.existing_anti.is_empty() && node.labels.iter().any(|(k, v)| self.existing_anti.contains(&(k.clone(), v.clone()))) {
            return Err(Failure::new(Code::Unschedulable, ERR_EXISTING_ANTI));
        }
        Ok(())
    }

    /// Raw preferred-affinity score of a node: the sum over its topology domains.
    pub fn score(&self, labels: &BTreeMap<String, String>) -> i64 {
        if !self.has_scores {
            return 0;
        }
        labels.iter().map(|(k, v)| self.scores.get(&(k.clone(), v.clone())).copied().unwrap_or(0)).sum()
    }
}
