//! Pod garbage collector: force-deletes pods bound to nodes that no longer
//! exist (after a quarantine, confirmed with a fresh read), terminating pods
//! that were never scheduled, and the oldest terminated (Succeeded/Failed)
//! pods beyond a threshold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use client::informer::{benign, ready, Watched};

/// Upstream's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_POD_THRESHOLD: usize = 12500;
const CHECK_PERIOD: Duration = Duration::from_secs(5);
/// How long a node must be missing before its pods are collected.
const QUARANTINE: Duration = Duration::from_secs(10);

pub async fn run(client: Client, (nodes, node_events): Watched<Node>, (pods, pod_events): Watched<Pod>) {
    let mut events = futures::stream::select(node_events.map(drop), pod_events.map(drop)).ready_chunks(4096);
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            e = events.next() => if e.is_none() { return },
            _ = tick.tick() => {
                if ready(&nodes) && ready(&pods) {
                    let all = pods.state();
                    gc_terminated(&client, &all).await;
                    gc_orphaned(&client, &all, &nodes.state(), &mut missing_since).await;
                    gc_unscheduled_terminating(&client, &all).await;
                }
            }
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn node_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

async fn force_delete(client: &Client, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut dp = DeleteParams::default().grace_period(0);
    dp.preconditions = Some(kube::api::Preconditions { uid: pod.uid(), resource_version: None });
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => tracing::info!(pod = format!("{ns}/{}", pod.name_any()), "pod GC: deleted"),
        Err(e) if benign(&e) => {}
        Err(e) => tracing::warn!(pod = format!("{ns}/{}", pod.name_any()), "pod GC: {e}"),
    }
}

/// Oldest terminated pods beyond the threshold.
fn excess_terminated(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut terminated: Vec<Arc<Pod>> =
        pods.iter().filter(|p| matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()).cloned().collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let n = terminated.len() - threshold;
    terminated.truncate(n);
    terminated
}

async fn gc_terminated(client: &Client, pods: &[Arc<Pod>]) {
    for pod in excess_terminated(pods, TERMINATED_POD_THRESHOLD) {
        force_delete(client, &pod).await;
    }
}

async fn gc_orphaned(client: &Client, pods: &[Arc<Pod>], nodes: &[Arc<Node>], missing_since: &mut HashMap<String, Instant>) {
    let existing: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let mut missing: HashSet<String> = HashSet::new();
    for p in pods {
        let n = node_name(p);
        if !n.is_empty() && !existing.contains(n) {
            missing.insert(n.to_string());
        }
    }
    missing_since.retain(|n, _| missing.contains(n));
    let node_api: Api<Node> = Api::all(client.clone());
    let mut gone: HashSet<String> = HashSet::new();
    for n in missing {
        let since = *missing_since.entry(n.clone()).or_insert_with(Instant::now);
        // Quarantine, then make sure the cache is not just behind.
        if since.elapsed() >= QUARANTINE && matches!(node_api.get_opt(&n).await, Ok(None)) {
            gone.insert(n);
        }
    }
    for pod in pods.iter().filter(|p| gone.contains(node_name(p))) {
        mark_failed(client, pod, "PodGC: node no longer exists").await;
        force_delete(client, pod).await;
    }
}

/// Upstream marks a pod it collects as Failed with a DisruptionTarget condition first.
async fn mark_failed(client: &Client, pod: &Pod, message: &str) {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return;
    }
    let mut next = pod.clone();
    let status = next.status.get_or_insert_with(Default::default);
    status.phase = Some("Failed".into());
    let conds = status.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByPodGC".into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(chrono::Utc::now())),
        ..Default::default()
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    if let Err(e) = api.replace_status(&pod.name_any(), &PostParams::default(), serde_json::to_vec(&next).unwrap()).await {
        tracing::debug!(pod = pod.name_any(), "pod GC: marking failed: {e}");
    }
}

async fn gc_unscheduled_terminating(client: &Client, pods: &[Arc<Pod>]) {
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty()) {
        force_delete(client, pod).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created}, "status": {"phase": phase}})).unwrap(),
        )
    }

    #[test]
    fn oldest_terminated_pods_over_the_threshold_go_first() {
        let pods = vec![
            pod("new", "Succeeded", "2024-01-03T00:00:00Z"),
            pod("running", "Running", "2024-01-01T00:00:00Z"),
            pod("old", "Failed", "2024-01-01T00:00:00Z"),
            pod("mid", "Succeeded", "2024-01-02T00:00:00Z"),
        ];
        let names: Vec<String> = excess_terminated(&pods, 1).iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["old", "mid"]);
        assert!(excess_terminated(&pods, 3).is_empty());
    }
}
