//! Disruption controller: keeps every PodDisruptionBudget's status current —
//! expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed and the
//! DisruptionAllowed condition — which the `pods/eviction` subresource
//! (and so `kubectl drain`) relies on; and drops `status.disruptedPods`
//! entries once the pod is gone or the entry is older than two minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::endpoints::pod_ready;
use client::informer::{self, benign, ready, Watched};

const DELETION_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(2);
const RESYNC: Duration = Duration::from_secs(5);

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>) {
    let (pdbs, pdb_events) = informer::watch(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default());
    let ns_of = |m: &kube::api::ObjectMeta| m.namespace.clone().unwrap_or_default();
    let mut events = futures::stream::select(pdb_events.map(move |p| Some(ns_of(&p.metadata))), pod_events.map(move |p| Some(ns_of(&p.metadata))))
        .ready_chunks(4096);
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let namespaces: Option<BTreeSet<String>> = tokio::select! {
            e = events.next() => match e { Some(batch) => Some(batch.into_iter().flatten().collect()), None => return },
            _ = tick.tick() => None,
        };
        if !(ready(&pdbs) && ready(&pods)) {
            continue;
        }
        let budgets: Vec<Arc<PodDisruptionBudget>> = pdbs
            .state()
            .into_iter()
            .filter(|p| namespaces.as_ref().is_none_or(|ns| ns.contains(&p.namespace().unwrap_or_default())))
            .collect();
        if budgets.is_empty() {
            continue;
        }
        let all_pods = pods.state();
        for pdb in budgets {
            let ns = pdb.namespace().unwrap_or_default();
            let selected: Vec<&Arc<Pod>> = all_pods
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && selects(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()), p.labels()))
                .collect();
            if let Err(e) = sync(&client, &pdb, &selected).await {
                if !benign(&e) {
                    tracing::warn!(pdb = format!("{ns}/{}", pdb.name_any()), "syncing disruption budget: {e}");
                }
            }
        }
    }
}

/// policy/v1: a nil selector selects nothing, an empty one every pod.
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector else { return false };
    let labels_ok = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The scale of the controllers owning these pods; a pod without a known
/// controller counts as one.
async fn expected_scale(client: &Client, ns: &str, pods: &[&Arc<Pod>]) -> i32 {
    let mut controllers: BTreeMap<(String, String), i32> = BTreeMap::new();
    let mut loose = 0;
    for pod in pods {
        let Some(owner) = pod.owner_references().iter().find(|o| o.controller == Some(true)).cloned() else {
            loose += 1;
            continue;
        };
        let key = (owner.kind.clone(), owner.name.clone());
        if controllers.contains_key(&key) {
            continue;
        }
        match scale_of(client, ns, &owner.kind, &owner.name).await {
            Some((controller, replicas)) => drop(controllers.insert(controller, replicas)),
            None => loose += 1,
        }
    }
    controllers.values().sum::<i32>() + loose
}

/// The top controller (a Deployment for its ReplicaSets) and its replicas.
async fn scale_of(client: &Client, ns: &str, kind: &str, name: &str) -> Option<((String, String), i32)> {
    match kind {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
            if let Some(d) = rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment") {
                if let Some(dep) = Api::<Deployment>::namespaced(client.clone(), ns).get_opt(&d.name).await.ok()? {
                    return Some((("Deployment".into(), d.name.clone()), dep.spec.and_then(|s| s.replicas).unwrap_or(1)));
                }
            }
            Some(((kind.into(), name.into()), rs.spec.and_then(|s| s.replicas).unwrap_or(1)))
        }
        "StatefulSet" => {
            let ss = Api::<StatefulSet>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
            Some(((kind.into(), name.into()), ss.spec.and_then(|s| s.replicas).unwrap_or(1)))
        }
        "ReplicationController" => {
            let rc = Api::<ReplicationController>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
            Some(((kind.into(), name.into()), rc.spec.and_then(|s| s.replicas).unwrap_or(1)))
        }
        _ => None,
    }
}

/// An int, or a percentage of `total` rounded up.
fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * total as i64 + 99) / 100) as i32
        }
    }
}

async fn sync(client: &Client, pdb: &PodDisruptionBudget, pods: &[&Arc<Pod>]) -> kube::Result<()> {
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = expected_scale(client, &ns, pods).await;
            (expected, (expected - scaled(max, expected)).max(0))
        }
        (None, Some(IntOrString::Int(n))) => (pods.len() as i32, *n),
        (None, Some(pct)) => {
            let expected = expected_scale(client, &ns, pods).await;
            (expected, scaled(pct, expected))
        }
        (None, None) => (pods.len() as i32, pods.len() as i32),
    };
    let now = Utc::now();
    let old = pdb.status.clone().unwrap_or_default();
    // Disrupted pods are kept while the pod exists, is not being deleted, and the entry is fresh.
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(t) = old.disrupted_pods.as_ref().and_then(|d| d.get(&pod.name_any())) {
            if t.0 + DELETION_TIMEOUT > now {
                disrupted.insert(pod.name_any(), t.clone());
            }
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !disrupted.contains_key(&p.name_any()) && pod_ready(p))
        .count() as i32;
    let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
    let (cond_status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let old_cond = old.conditions.iter().flatten().find(|c| c.type_ == "DisruptionAllowed");
    let condition = Condition {
        type_: "DisruptionAllowed".into(),
        status: cond_status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: match old_cond {
            Some(c) if c.status == cond_status => c.last_transition_time.clone(),
            _ => Time(now),
        },
    };
    let mut conditions: Vec<Condition> = old.conditions.clone().unwrap_or_default().into_iter().filter(|c| c.type_ != "DisruptionAllowed").collect();
    conditions.push(condition);
    let status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(conditions),
    };
    let old_cmp = PodDisruptionBudgetStatus { disrupted_pods: old.disrupted_pods.clone().filter(|d| !d.is_empty()), ..old.clone() };
    if old_cmp == status {
        return Ok(());
    }
    let mut next = pdb.clone();
    next.status = Some(status);
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .replace_status(&pdb.name_any(), &PostParams::default(), serde_json::to_vec(&next).unwrap())
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_and_selectors_follow_policy_v1() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::Int(2), 10), 2);
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(!selects(None, &labels));
        assert!(selects(Some(&LabelSelector::default()), &labels));
        let sel = LabelSelector { match_labels: Some(BTreeMap::from([("app".into(), "db".into())])), ..Default::default() };
        assert!(!selects(Some(&sel), &labels));
    }
}
