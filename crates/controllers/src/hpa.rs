//! The HorizontalPodAutoscaler controller, as upstream's: every
//! [`SYNC_PERIOD`] each HPA reads its target's `/scale`, the target's pods
//! and their usage from the resource metrics API (metrics.k8s.io), turns
//! each metric into a replica count (`hpa_replicas`), takes the highest,
//! normalizes it (`hpa_behavior`), writes the new scale, and reports
//! currentMetrics, conditions (AbleToScale, ScalingActive,
//! ScalingLimited) and events. Pods, Object and External metrics need a
//! custom metrics API, which is not served: such metrics report
//! ScalingActive False, as upstream does without an adapter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use resources::quantity::Quantity;
use serde_json::{json, Value};

use crate::hpa_behavior::{History, Normalized};
use crate::hpa_replicas::{resource_replicas, PodFacts, PodMetric, Target};
use crate::workload::{record, Result};

/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
const COMPONENT: &str = "horizontal-pod-autoscaler";

#[derive(Default)]
struct State {
    /// Per HPA (namespace/name): its recommendations and scale events, and its last sync.
    history: Mutex<HashMap<String, (History, Option<DateTime<Utc>>)>>,
}

pub async fn run(client: Client) {
    let ctx = Arc::new((client.clone(), State::default()));
    Controller::new(Api::<HorizontalPodAutoscaler>::all(client), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(SYNC_PERIOD), ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("horizontal pod autoscaler: {e}");
            }
        })
        .await
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<(Client, State)>) -> Result<Action> {
    let (client, state) = (&ctx.0, &ctx.1);
    let key = format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any());
    if hpa.metadata.deletion_timestamp.is_some() {
        state.history.lock().unwrap().remove(&key);
        return Ok(Action::await_change());
    }
    // Our own status writes wake us too; like upstream's queue, sync at most once a period.
    let now = Utc::now();
    if let Some((_, Some(last))) = state.history.lock().unwrap().get(&key) {
        let next = *last + chrono::Duration::from_std(SYNC_PERIOD).unwrap();
        if next > now {
            return Ok(Action::requeue((next - now).to_std().unwrap_or(SYNC_PERIOD)));
        }
    }
    sync(client, state, &key, &hpa, now).await?;
    Ok(Action::requeue(SYNC_PERIOD))
}

/// The HPA's new status, built up as upstream's reconcileAutoscaler goes.
struct Outcome {
    conditions: Vec<(String, bool, String, String)>,
    current_metrics: Vec<Value>,
}

impl Outcome {
    fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        self.conditions.retain(|c| c.0 != type_);
        self.conditions.push((type_.to_string(), status, reason.to_string(), message.into()));
    }
}

async fn sync(client: &Client, state: &State, key: &str, hpa: &HorizontalPodAutoscaler, now: DateTime<Utc>) -> Result<()> {
    let ns = hpa.namespace().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let mut out = Outcome { conditions: Vec::new(), current_metrics: Vec::new() };
    let target_scale = match scale_path(&ns, target.api_version.as_deref().unwrap_or_default(), &target.kind, &target.name) {
        Ok(path) => get_scale(client, &path).await.map(|scale| (path, scale)),
        Err(e) => Err(e),
    };
    let (path, mut scale) = match target_scale {
        Ok(x) => x,
        Err(e) => {
            record(client, COMPONENT, hpa, "Warning", "FailedGetScale", e.clone()).await;
            out.set("AbleToScale", false, "FailedGetScale", format!("the HPA controller was unable to get the target's current scale: {e}"));
            let current = hpa.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0);
            return write_status(client, hpa, out, current, hpa.status.as_ref().map_or(0, |s| s.desired_replicas), None, now).await;
        }
    };
    out.set("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale");
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let min = spec.min_replicas.unwrap_or(1);
    state.history.lock().unwrap().entry(key.to_string()).or_insert_with(|| (History::starting(current, now), None)).1 = Some(now);

    let mut desired = current;
    let mut reason = String::new();
    let mut rescale = true;
    if current == 0 && min != 0 {
        rescale = false;
        out.set("ScalingActive", false, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero");
    } else if current > spec.max_replicas {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = spec.max_replicas;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        let proposal = match selector.is_empty() {
            true => {
                record(client, COMPONENT, hpa, "Warning", "SelectorRequired", "selector is required".into()).await;
                out.set("ScalingActive", false, "InvalidSelector", "the HPA target's scale is missing a selector");
                None
            }
            false => metrics_proposal(client, hpa, &ns, &selector, current, &spec.metrics.clone().unwrap_or_default(), &mut out, now).await,
        };
        let Some((proposed, metric_name)) = proposal else {
            return write_status(client, hpa, out, current, hpa.status.as_ref().map_or(current, |s| s.desired_replicas), None, now).await;
        };
        reason = match proposed.cmp(&current) {
            std::cmp::Ordering::Greater => format!("{metric_name} above target"),
            std::cmp::Ordering::Less => "All metrics below target".into(),
            std::cmp::Ordering::Equal => String::new(),
        };
        let Normalized { replicas, able_to_scale, scaling_limited } = {
            let mut history = state.history.lock().unwrap();
            let h = &mut history.get_mut(key).expect("recorded above").0;
            match &spec.behavior {
                Some(b) => h.normalize_with_behavior(b, current, proposed, min, spec.max_replicas, now),
                None => h.normalize(current, proposed, min, spec.max_replicas, now),
            }
        };
        out.set("AbleToScale", able_to_scale.0, able_to_scale.1, able_to_scale.2);
        out.set("ScalingLimited", scaling_limited.0, scaling_limited.1, scaling_limited.2);
        desired = replicas;
        rescale = desired != current;
    }
    if !rescale {
        return write_status(client, hpa, out, current, current, None, now).await;
    }
    scale.spec.get_or_insert_with(Default::default).replicas = Some(desired);
    if let Err(e) = put_scale(client, &path, &scale).await {
        record(client, COMPONENT, hpa, "Warning", "FailedRescale", format!("New size: {desired}; reason: {reason}; error: {e}")).await;
        out.set("AbleToScale", false, "FailedUpdateScale", format!("the HPA controller was unable to update the target scale: {e}"));
        return write_status(client, hpa, out, current, hpa.status.as_ref().map_or(current, |s| s.desired_replicas), None, now).await;
    }
    out.set("AbleToScale", true, "SucceededRescale", format!("the HPA controller was able to update the target scale to {desired}"));
    record(client, COMPONENT, hpa, "Normal", "SuccessfulRescale", format!("New size: {desired}; reason: {reason}")).await;
    if let Some((h, _)) = state.history.lock().unwrap().get_mut(key) {
        h.record_scale(current, desired, now, spec.behavior.as_ref());
    }
    write_status(client, hpa, out, current, desired, Some(now), now).await
}

/// The highest count any metric asks for, with its name; None when no
/// metric could be computed (ScalingActive False says why).
#[allow(clippy::too_many_arguments)]
async fn metrics_proposal(
    client: &Client,
    hpa: &HorizontalPodAutoscaler,
    ns: &str,
    selector: &str,
    current: i32,
    specs: &[MetricSpec],
    out: &mut Outcome,
    now: DateTime<Utc>,
) -> Option<(i32, String)> {
    let default_cpu;
    let specs = if specs.is_empty() {
        // An HPA without metrics scales on 80% CPU, as upstream defaults it.
        default_cpu = [serde_json::from_value::<MetricSpec>(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}})).unwrap()];
        &default_cpu[..]
    } else {
        specs
    };
    let mut best: Option<(i32, String)> = None;
    let mut failure: Option<(&'static str, String)> = None;
    for spec in specs {
        match metric_replicas(client, ns, selector, current, spec, now).await {
            Ok((replicas, name, status)) => {
                out.current_metrics.push(status);
                if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                    best = Some((replicas, name));
                }
            }
            Err((reason, message)) => {
                out.current_metrics.push(json!({"type": spec.type_}));
                record(client, COMPONENT, hpa, "Warning", reason, message.clone()).await;
                failure = Some((reason, message));
            }
        }
    }
    match (&best, failure) {
        (None, Some((reason, message))) => {
            out.set("ScalingActive", false, reason, format!("the HPA was unable to compute the replica count: {message}"));
            record(client, COMPONENT, hpa, "Warning", "FailedComputeMetricsReplicas", format!("invalid metrics ({} invalid out of {}), first error is: {message}", specs.len(), specs.len())).await;
        }
        (Some((_, name)), _) => out.set("ScalingActive", true, "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {name}")),
        (None, None) => {}
    }
    best
}

/// One metric: (replicas, the name upstream gives it in messages, its currentMetrics entry).
async fn metric_replicas(
    client: &Client,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
    now: DateTime<Utc>,
) -> std::result::Result<(i32, String, Value), (&'static str, String)> {
    let (resource, target, container) = match (spec.type_.as_str(), &spec.resource, &spec.container_resource) {
        ("Resource", Some(r), _) => (r.name.clone(), r.target.clone(), None),
        ("ContainerResource", _, Some(c)) => (c.name.clone(), c.target.clone(), Some(c.container.clone())),
        ("Pods", ..) => return Err(("FailedGetPodsMetric", "unable to get metric: no custom metrics API (custom.metrics.k8s.io) is served".into())),
        ("Object", ..) => return Err(("FailedGetObjectMetric", "unable to get metric: no custom metrics API (custom.metrics.k8s.io) is served".into())),
        ("External", ..) => return Err(("FailedGetExternalMetric", "unable to get metric: no external metrics API (external.metrics.k8s.io) is served".into())),
        (other, ..) => return Err(("InvalidMetricSourceType", format!("unknown metric source type {other:?}"))),
    };
    let failed = if container.is_some() { "FailedGetContainerResourceMetric" } else { "FailedGetResourceMetric" };
    let target = match (target.type_.as_str(), target.average_utilization, &target.average_value) {
        ("Utilization", Some(u), _) => Target::Utilization(u),
        ("AverageValue", _, Some(v)) => Target::AverageValue(Quantity::parse(&v.0).map(|q| q.milli_value()).unwrap_or(0)),
        _ => return Err((failed, format!("invalid resource metric source: {resource} target needs averageUtilization or averageValue"))),
    };
    let what = if matches!(target, Target::Utilization(_)) { "utilization" } else { "usage" };
    let (pods, metrics) = match pods_and_usage(client, ns, selector, &resource, container.as_deref()).await {
        Ok(x) => x,
        Err(e) => return Err((failed, format!("failed to get {resource} {what}: unable to get metrics for resource {resource}: {e}"))),
    };
    let r = resource_replicas(current, target, resource == "cpu", &pods, metrics, now).map_err(|e| (failed, format!("failed to get {resource} {what}: {e}")))?;
    let mut current_value = json!({"averageValue": milli_quantity(r.average_milli)});
    if let Some(u) = r.utilization {
        current_value["averageUtilization"] = json!(u);
    }
    let (name, status) = match container {
        None => (
            if r.utilization.is_some() { format!("{resource} resource utilization (percentage of request)") } else { format!("{resource} resource") },
            json!({"type": "Resource", "resource": {"name": resource, "current": current_value}}),
        ),
        Some(c) => (
            if r.utilization.is_some() { format!("{resource} container resource utilization (percentage of request)") } else { format!("{resource} container resource") },
            json!({"type": "ContainerResource", "containerResource": {"name": resource, "container": c, "current": current_value}}),
        ),
    };
    Ok((r.replicas, name, status))
}

/// `resource.NewMilliQuantity(v, DecimalSI).String()`.
fn milli_quantity(v: i64) -> String {
    Quantity::from_milli(v).canonical()
}

/// The target's pods, and their usage of `resource` from the metrics API.
async fn pods_and_usage(
    client: &Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> std::result::Result<(Vec<PodFacts>, BTreeMap<String, PodMetric>), String> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
    let facts = pods.items.iter().map(|p| pod_facts(p, resource, container)).collect();
    let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("labelSelector", selector).finish();
    let req = http::Request::get(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?{query}")).body(Vec::new()).map_err(|e| e.to_string())?;
    let list: Value = client.request(req).await.map_err(|e| e.to_string())?;
    let mut metrics = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(name) = item["metadata"]["name"].as_str() else { continue };
        let containers = item["containers"].as_array().into_iter().flatten().filter(|c| container.is_none_or(|want| c["name"] == want));
        let milli: i64 = containers.filter_map(|c| c["usage"][resource].as_str()).filter_map(|q| Quantity::parse(q).ok()).map(|q| q.milli_value()).sum();
        let timestamp = item["timestamp"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc)).unwrap_or_default();
        let window = item["window"].as_str().and_then(|w| w.trim_end_matches('s').parse::<f64>().ok()).unwrap_or(0.0);
        metrics.insert(name.to_string(), PodMetric { milli, timestamp, window: chrono::Duration::milliseconds((window * 1000.0) as i64) });
    }
    if metrics.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    Ok((facts, metrics))
}

fn pod_facts(pod: &Pod, resource: &str, container: Option<&str>) -> PodFacts {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| {
        (c.status == "True", c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_default())
    });
    let mut request_milli = Ok(0);
    for c in pod.spec.iter().flat_map(|s| &s.containers).filter(|c| container.is_none_or(|want| c.name == want)) {
        let request = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
        match (request, &mut request_milli) {
            (Some(q), Ok(sum)) => *sum += Quantity::parse(&q.0).map(|q| q.milli_value()).unwrap_or(0),
            (None, Ok(_)) => request_milli = Err(c.name.clone()),
            (_, Err(_)) => {}
        }
    }
    PodFacts {
        name: pod.name_any(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        phase: status.phase.unwrap_or_default(),
        ready,
        start_time: status.start_time.map(|t| t.0),
        request_milli,
    }
}

/// The `/scale` path of the target, from its apiVersion and kind.
fn scale_path(ns: &str, api_version: &str, kind: &str, name: &str) -> std::result::Result<String, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let info = resources::catalog::by_kind(group, kind)
        .filter(|i| i.scale.is_some())
        .ok_or_else(|| format!("unable to find the scale subresource of {kind} in {api_version}"))?;
    let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    Ok(format!("{prefix}/namespaces/{ns}/{}/{name}/scale", info.plural))
}

async fn get_scale(client: &Client, path: &str) -> std::result::Result<Scale, String> {
    let req = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    client.request::<Scale>(req).await.map_err(|e| e.to_string())
}

async fn put_scale(client: &Client, path: &str, scale: &Scale) -> std::result::Result<Scale, String> {
    let body = serde_json::to_vec(scale).map_err(|e| e.to_string())?;
    let req = http::Request::put(path).header(http::header::CONTENT_TYPE, "application/json").body(body).map_err(|e| e.to_string())?;
    client.request::<Scale>(req).await.map_err(|e| e.to_string())
}

/// Writes the status when it changed; conditions keep their transition
/// time while their status stays the same.
async fn write_status(
    client: &Client,
    hpa: &HorizontalPodAutoscaler,
    out: Outcome,
    current: i32,
    desired: i32,
    scaled_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let old = hpa.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let mut conditions: Vec<Value> = Vec::new();
    // Upstream's order: AbleToScale, ScalingActive, ScalingLimited.
    for type_ in ["AbleToScale", "ScalingActive", "ScalingLimited"] {
        let kept = old_conditions.iter().find(|c| c.type_ == type_);
        let Some((_, status, reason, message)) = out.conditions.iter().find(|c| c.0 == type_) else {
            if let Some(k) = kept {
                conditions.push(serde_json::to_value(k).unwrap());
            }
            continue;
        };
        let status = if *status { "True" } else { "False" };
        let since = kept.filter(|k| k.status == status).and_then(|k| k.last_transition_time.as_ref()).map(|t| t.0).unwrap_or(now);
        conditions.push(json!({"type": type_, "status": status, "lastTransitionTime": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "reason": reason, "message": message}));
    }
    let mut status = json!({
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": if out.current_metrics.is_empty() { Value::Null } else { json!(out.current_metrics) },
        "conditions": conditions,
    });
    match scaled_at.or(old.last_scale_time.as_ref().map(|t| t.0)) {
        Some(t) => status["lastScaleTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => status["lastScaleTime"] = Value::Null,
    }
    let before = serde_json::to_value(&old).unwrap_or_default();
    let unchanged = ["observedGeneration", "currentReplicas", "desiredReplicas", "currentMetrics", "conditions", "lastScaleTime"]
        .iter()
        .all(|f| before.get(*f).unwrap_or(&Value::Null) == status.get(*f).unwrap_or(&Value::Null));
    if unchanged {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &hpa.namespace().unwrap_or_default());
    api.patch_status(&hpa.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_paths_come_from_the_catalog() {
        assert_eq!(scale_path("ns", "apps/v1", "Deployment", "web").unwrap(), "/apis/apps/v1/namespaces/ns/deployments/web/scale");
        assert_eq!(scale_path("ns", "v1", "ReplicationController", "rc").unwrap(), "/api/v1/namespaces/ns/replicationcontrollers/rc/scale");
        assert!(scale_path("ns", "v1", "ConfigMap", "x").unwrap_err().contains("scale subresource of ConfigMap"));
    }

    #[test]
    fn pod_requests_sum_the_containers_and_name_one_without() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.2"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}))
        .unwrap();
        let f = pod_facts(&pod, "cpu", None);
        assert_eq!(f.request_milli, Ok(300));
        assert_eq!(f.ready.map(|r| r.0), Some(true));
        assert_eq!(pod_facts(&pod, "cpu", Some("b")).request_milli, Ok(200));
        assert_eq!(pod_facts(&pod, "memory", None).request_milli, Err("a".to_string()));
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(2000), "2");
    }
}
