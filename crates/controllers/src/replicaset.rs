//! ReplicaSet controller, and the ReplicationController through the same code
//! (its map selector adapted to a LabelSelector): adopt matching orphan pods,
//! release pods that stop matching, create and delete pods to reach
//! `spec.replicas` in slow-start batches, and keep the status counts current.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, VersionMatch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::workload::{self, controller_of, controller_ref, is_status, pod_active, pod_available, pod_ready, selector_matches, Result};

/// Upstream's burstReplicas: at most this many creations or deletions per sync.
const BURST: usize = 500;

/// What the controller needs from a ReplicaSet or a ReplicationController.
pub struct View {
    pub replicas: i32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub min_ready_seconds: i32,
}

pub trait Replicated: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static {
    /// The event source component, as upstream names it.
    const COMPONENT: &'static str;
    fn view(&self) -> Option<View>;
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn view(&self) -> Option<View> {
        let spec = self.spec.as_ref()?;
        Some(View {
            replicas: spec.replicas.unwrap_or(1),
            selector: spec.selector.clone(),
            template: spec.template.clone()?,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        })
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn view(&self) -> Option<View> {
        let spec = self.spec.as_ref()?;
        let template = spec.template.clone()?;
        // An RC without a selector selects its template's labels.
        let labels = spec.selector.clone().or_else(|| template.metadata.as_ref().and_then(|m| m.labels.clone()))?;
        if labels.is_empty() {
            return None;
        }
        Some(View {
            replicas: spec.replicas.unwrap_or(1),
            selector: LabelSelector { match_labels: Some(labels), match_expressions: None },
            template,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        })
    }
}

/// Pods (by namespace, owner and pod name) that the pod watch saw stop
/// matching their owner's selector: the owner releases them on its next pass.
type Releases = Arc<Mutex<HashMap<(String, String), HashSet<String>>>>;

struct Ctx {
    client: Client,
    releases: Releases,
    /// The newest resourceVersion among our own pod writes: lists are served
    /// from the API server's cache once it has caught up to it, so they read
    /// our writes without forcing a consistent read (which, when the cache
    /// lags under load, falls back to scanning the store).
    written: AtomicI64,
}

impl Ctx {
    fn wrote(&self, pod: &Pod) {
        if let Some(rv) = pod.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()) {
            self.written.fetch_max(rv, AtomicOrdering::Relaxed);
        }
    }

    /// Lists that see every pod event we were triggered by (the watch feeding
    /// us trails the cache) and every write of ours.
    fn fresh_enough(&self) -> ListParams {
        ListParams::default().at(&self.written.load(AtomicOrdering::Relaxed).to_string()).matching(VersionMatch::NotOlderThan)
    }
}

/// `pods`: every pod touched (the shared pod watch), which triggers its owner.
pub async fn run_replicasets(client: Client, pods: BoxStream<'static, Arc<Pod>>) {
    run::<ReplicaSet>(client, pods).await
}

pub async fn run_replication_controllers(client: Client, pods: BoxStream<'static, Arc<Pod>>) {
    run::<ReplicationController>(client, pods).await
}

async fn run<K: Replicated>(client: Client, pods: BoxStream<'static, Arc<Pod>>) {
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let owners = controller.store();
    let kind = K::kind(&()).into_owned();
    let releases = Releases::default();
    let found = releases.clone();
    controller
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = controller_of(pod.as_ref()) {
                if r.kind != kind {
                    return vec![];
                }
                let owner = ObjectRef::new(&r.name).within(&ns);
                let stale = owners.get(&owner).and_then(|o| o.view()).is_some_and(|v| !selector_matches(&v.selector, pod.labels()));
                if stale {
                    found.lock().unwrap().entry((ns.clone(), r.name.clone())).or_default().insert(pod.name_any());
                }
                return vec![owner];
            }
            // An orphan: every owner in its namespace that would adopt it.
            owners
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                .filter(|o| o.view().is_some_and(|v| selector_matches(&v.selector, pod.labels())))
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect()
        })
        .run(reconcile::<K>, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(Ctx { client, releases, written: AtomicI64::new(0) }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("{} controller: {e}", K::kind(&()));
            }
        })
        .await
}

async fn reconcile<K: Replicated>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(view) = obj.view() else { return Ok(Action::await_change()) };
    let ns = obj.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = obj.uid().unwrap_or_default();
    let deleting = obj.meta().deletion_timestamp.is_some();

    // The server filters by selector; pods of ours that stopped matching come
    // from the pod watch, or from a full list when the spec (maybe the selector) changed.
    let current = serde_json::to_value(obj.as_ref()).ok().map(|v| v["status"].clone()).unwrap_or(Value::Null);
    let spec_changed = current["observedGeneration"].as_i64() != obj.meta().generation;
    let key = (ns.clone(), obj.name_any());
    let stale: Vec<String> = ctx.releases.lock().unwrap().get(&key).map(|s| s.iter().cloned().collect()).unwrap_or_default();
    let lp = if spec_changed { ctx.fresh_enough() } else { ctx.fresh_enough().labels(&workload::selector_string(&view.selector)) };
    let mut candidates = pods.list(&lp).await?.items;
    for name in &stale {
        if !candidates.iter().any(|p| p.metadata.name.as_ref() == Some(name)) {
            candidates.extend(pods.get_opt(name).await?);
        }
    }

    // Claim: keep ours that still match, release ours that don't, adopt matching orphans.
    let mut owned = Vec::new();
    for pod in candidates.into_iter().filter(pod_active) {
        let matches = selector_matches(&view.selector, pod.labels());
        match controller_of(&pod) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else {
                    set_owner_refs(&ctx, &pods, &pod, pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect()).await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting => {
                let mut refs = pod.owner_references().to_vec();
                refs.push(controller_ref(obj.as_ref()));
                match set_owner_refs(&ctx, &pods, &pod, refs).await {
                    Ok(Some(adopted)) => owned.push(adopted),
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
    }

    let mut status = status_of(obj.as_ref(), &view, &owned);
    let managed = if deleting { Ok(()) } else { manage_replicas(&ctx, obj.as_ref(), &view, owned.clone()).await };
    // Upstream's ReplicaFailure condition: set while creating or deleting fails, removed after.
    let mut conditions = current["conditions"].as_array().cloned().unwrap_or_default();
    let failing = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match &managed {
        Err(e) if !failing => {
            let reason = if (owned.len() as i32) < view.replicas { "FailedCreate" } else { "FailedDelete" };
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            conditions.push(json!({ "type": "ReplicaFailure", "status": "True", "reason": reason, "message": e.0, "lastTransitionTime": now }));
            status["conditions"] = Value::Array(conditions);
        }
        Ok(()) if failing => {
            conditions.retain(|c| c["type"] != "ReplicaFailure");
            status["conditions"] = Value::Array(conditions);
        }
        _ => {}
    }
    if let Some(set) = ctx.releases.lock().unwrap().get_mut(&key) {
        set.retain(|n| !stale.contains(n));
    }
    let changed = status.as_object().unwrap().iter().any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v);
    if changed {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await {
            Ok(_) => {}
            Err(e) if is_status(&e, &[404]) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    managed?;
    // Pods ready but not yet available become available without any event: look again then.
    let now = Utc::now();
    if view.min_ready_seconds > 0 && owned.iter().any(|p| pod_ready(p) && !pod_available(p, view.min_ready_seconds, now)) {
        return Ok(Action::requeue(Duration::from_secs(view.min_ready_seconds as u64)));
    }
    Ok(Action::await_change())
}

/// Rewrites a pod's ownerReferences, guarded by its resourceVersion. None when the pod is gone.
async fn set_owner_refs(ctx: &Ctx, pods: &Api<Pod>, pod: &Pod, refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>) -> Result<Option<Pod>> {
    let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": pod.resource_version() } });
    match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(p) => {
            ctx.wrote(&p);
            Ok(Some(p))
        }
        Err(e) if is_status(&e, &[404]) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn status_of<K: Replicated>(obj: &K, view: &View, owned: &[Pod]) -> Value {
    let template_labels = view.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let now = Utc::now();
    let fully_labeled = owned.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count();
    json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": owned.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": owned.iter().filter(|p| pod_available(p, view.min_ready_seconds, now)).count(),
        "observedGeneration": obj.meta().generation.unwrap_or(0),
    })
}

async fn manage_replicas<K: Replicated>(ctx: &Ctx, obj: &K, view: &View, mut owned: Vec<Pod>) -> Result<()> {
    let client = &ctx.client;
    let ns = obj.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let diff = owned.len() as i64 - view.replicas as i64;
    if diff < 0 {
        let want = ((-diff) as usize).min(BURST);
        let pod = pod_from_template(obj, view);
        let pp = PostParams::default();
        // Slow start: batches of 1, 2, 4, ... so a failing template costs one call, not hundreds.
        let (mut done, mut batch) = (0, 1);
        while done < want {
            let n = batch.min(want - done);
            let results = futures::future::join_all((0..n).map(|_| pods.create(&pp, &pod))).await;
            let mut failed = None;
            let mut events = Vec::new();
            for r in results {
                match r {
                    Ok(p) => {
                        ctx.wrote(&p);
                        events.push(("Normal", "SuccessfulCreate", format!("Created pod: {}", p.name_any())));
                    }
                    Err(e) => {
                        if !is_status(&e, &[403]) {
                            events.push(("Warning", "FailedCreate", format!("Error creating: {e}")));
                        }
                        failed = Some(e);
                    }
                }
            }
            record_all(client, obj, events).await;
            if let Some(e) = failed {
                return Err(e.into());
            }
            done += n;
            batch *= 2;
        }
    } else if diff > 0 {
        owned.sort_by(deletion_order);
        let doomed = &owned[..(diff as usize).min(BURST)];
        let dp = DeleteParams::default();
        let results = futures::future::join_all(doomed.iter().map(|p| pods.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp))).await;
        let mut events = Vec::new();
        let mut failed = None;
        for (pod, r) in doomed.iter().zip(results) {
            match r {
                Ok(gone) => {
                    if let Some(p) = gone.left() {
                        ctx.wrote(&p);
                    }
                    events.push(("Normal", "SuccessfulDelete", format!("Deleted pod: {}", pod.name_any())));
                }
                Err(e) if is_status(&e, &[404]) => {}
                Err(e) => {
                    events.push(("Warning", "FailedDelete", format!("Error deleting: {e}")));
                    failed = Some(e);
                }
            }
        }
        record_all(client, obj, events).await;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok(())
}

async fn record_all<K: Replicated>(client: &Client, obj: &K, events: Vec<(&str, &str, String)>) {
    futures::future::join_all(events.into_iter().map(|(type_, reason, msg)| workload::record(client, K::COMPONENT, obj, type_, reason, msg))).await;
}

/// Upstream GetPodFromTemplate: the template's labels, annotations,
/// finalizers and spec, a generated name and our controller reference.
fn pod_from_template<K: Replicated>(obj: &K, view: &View) -> Pod {
    let meta = view.template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", obj.name_any())),
            namespace: obj.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(obj)]),
            ..Default::default()
        },
        spec: view.template.spec.clone(),
        status: None,
    }
}

/// Which pod goes first when scaling down (upstream ActivePods): unscheduled
/// before scheduled, Pending < Unknown < Running, not-ready before ready,
/// ready more recently before ready longer, more restarts first, newer first.
fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = |p: &Pod| match workload::pod_phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let ready_since = |p: &Pod| workload::pod_condition_true(p, "Ready").flatten().map(|t| t.0);
    let restarts = |p: &Pod| {
        p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase(a).cmp(&phase(b)))
        .then(pod_ready(a).cmp(&pod_ready(b)))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) if pod_ready(a) && pod_ready(b) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then(workload::creation(&b.metadata).cmp(&workload::creation(&a.metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, age_secs: i64) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), creation_timestamp: Some(Time(Utc::now() - chrono::Duration::seconds(age_secs))), ..Default::default() },
            spec: Some(PodSpec { node_name: node.map(String::from), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_and_newer_pods() {
        let mut pods = vec![
            pod("running-ready-old", Some("n"), "Running", true, 100),
            pod("running-ready-new", Some("n"), "Running", true, 10),
            pod("running-unready", Some("n"), "Running", false, 100),
            pod("pending", Some("n"), "Pending", false, 100),
            pod("unscheduled", None, "Pending", false, 100),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["unscheduled", "pending", "running-unready", "running-ready-new", "running-ready-old"]);
    }
}
