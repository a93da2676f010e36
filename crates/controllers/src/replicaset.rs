//! ReplicaSet controller, and the ReplicationController through the same code
//! (its map selector adapted to a LabelSelector): adopt matching orphan pods,
//! release pods that stop matching, create and delete pods to reach
//! `spec.replicas` in slow-start batches, and keep the status counts current.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use client::informer::{ByController, Watched};
use crate::workload::{self, controller_of, controller_ref, is_status, pod_active, pod_available, pod_ready, selector_matches, Result};

/// Upstream's burstReplicas: at most this many creations or deletions per sync.
const BURST: usize = 500;
/// Pod creations and deletions in flight across all owners. Without a bound,
/// a hundred owners scaling up at once queue tens of thousands of writes in
/// the API server, and every other request (lease renewals too) waits
/// behind them; upstream bounds its clients by QPS instead.
const WRITES_IN_FLIGHT: usize = 64;

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

/// Upstream's ControllerExpectations: pods an owner created or deleted that
/// the shared store does not show yet. Until it does, the owner's count of
/// its pods trails its own writes, so it creates and deletes nothing more.
#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.deletes.is_empty()
    }
}

/// Upstream's ExpectationsTimeout: a write whose event never shows up (a pod
/// created and deleted before we noted it) stops blocking its owner after this.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    by_controller: ByController<Pod>,
    /// By owner uid.
    pending: Mutex<HashMap<String, Pending>>,
    writes: tokio::sync::Semaphore,
}

impl Ctx {
    /// Notes what the pod watch shows of an owner's pending writes.
    fn observe(&self, owner_uid: &str, pod: &Pod) {
        let mut pending = self.pending.lock().unwrap();
        let Some(p) = pending.get_mut(owner_uid) else { return };
        let name = pod.name_any();
        p.creates.remove(&name);
        if pod.metadata.deletion_timestamp.is_some() || self.pods.get(&ObjectRef::from_obj(pod)).is_none() {
            p.deletes.remove(&name);
        }
        if p.is_empty() {
            pending.remove(owner_uid);
        }
    }

    /// True when the store shows every write this owner made, or they timed out.
    fn settled(&self, owner_uid: &str) -> bool {
        let mut pending = self.pending.lock().unwrap();
        match pending.get(owner_uid) {
            Some(p) if p.since.is_some_and(|t| t.elapsed() < EXPECTATIONS_TIMEOUT) => false,
            Some(_) => {
                pending.remove(owner_uid);
                true
            }
            None => true,
        }
    }

    fn expect(&self, owner_uid: &str, f: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().unwrap();
        let p = pending.entry(owner_uid.to_string()).or_default();
        p.since = Some(Instant::now());
        f(p);
        if p.is_empty() {
            pending.remove(owner_uid);
        }
    }

    fn pods<'a>(&'a self, refs: Vec<ObjectRef<Pod>>) -> impl Iterator<Item = Arc<Pod>> + 'a {
        refs.into_iter().filter_map(|r| self.pods.get(&r))
    }
}

/// `pods`: the shared pod store, its controller index and its touched pods,
/// which trigger their owners.
pub async fn run_replicasets(client: Client, pods: Watched<Pod>, by_controller: ByController<Pod>) {
    run::<ReplicaSet>(client, pods, by_controller).await
}

pub async fn run_replication_controllers(client: Client, pods: Watched<Pod>, by_controller: ByController<Pod>) {
    run::<ReplicationController>(client, pods, by_controller).await
}

async fn run<K: Replicated>(client: Client, (store, touched): Watched<Pod>, by_controller: ByController<Pod>) {
    // Counting pods in a store still being filled would create them all again.
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let owners = controller.store();
    let kind = K::kind(&()).into_owned();
    let ctx = Arc::new(Ctx { client, pods: store, by_controller, pending: Mutex::default(), writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT) });
    let seen = ctx.clone();
    controller
        .watches_shared_stream(touched, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = controller_of(pod.as_ref()) {
                if r.kind != kind {
                    return vec![];
                }
                seen.observe(&r.uid, &pod);
                return vec![ObjectRef::new(&r.name).within(&ns)];
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
        .run(reconcile::<K>, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
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
    let current = serde_json::to_value(obj.as_ref()).ok().map(|v| v["status"].clone()).unwrap_or(Value::Null);

    // Claim, from the shared store: keep ours that still match, release ours
    // that don't, adopt matching orphans.
    let mut owned = Vec::new();
    for pod in ctx.pods(ctx.by_controller.controlled_by(&uid)).filter(|p| pod_active(p)) {
        if controller_of(pod.as_ref()).is_none_or(|r| r.uid != uid) {
            continue;
        }
        if selector_matches(&view.selector, pod.labels()) {
            owned.push(pod);
        } else {
            set_owner_refs(&pods, &pod, pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect()).await?;
        }
    }
    if !deleting {
        let orphans = ctx.pods(ctx.by_controller.orphans_in(&ns)).filter(|p| pod_active(p) && controller_of(p.as_ref()).is_none());
        for pod in orphans.filter(|p| selector_matches(&view.selector, p.labels())).collect::<Vec<_>>() {
            let mut refs = pod.owner_references().to_vec();
            refs.push(controller_ref(obj.as_ref()));
            if let Some(adopted) = set_owner_refs(&pods, &pod, refs).await? {
                owned.push(Arc::new(adopted));
            }
        }
    }

    let mut status = status_of(obj.as_ref(), &view, &owned);
    let managed = if deleting || !ctx.settled(&uid) { Ok(()) } else { manage_replicas(&ctx, obj.as_ref(), &view, owned.clone()).await };
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
async fn set_owner_refs(pods: &Api<Pod>, pod: &Pod, refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>) -> Result<Option<Pod>> {
    let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": pod.resource_version() } });
    match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_status(&e, &[404]) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn status_of<K: Replicated>(obj: &K, view: &View, owned: &[Arc<Pod>]) -> Value {
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

async fn manage_replicas<K: Replicated>(ctx: &Ctx, obj: &K, view: &View, mut owned: Vec<Arc<Pod>>) -> Result<()> {
    let client = &ctx.client;
    let uid = obj.uid().unwrap_or_default();
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
            let results = futures::future::join_all((0..n).map(|_| async {
                let _permit = ctx.writes.acquire().await;
                pods.create(&pp, &pod).await
            }))
            .await;
            let mut failed = None;
            let mut events = Vec::new();
            // A pod the store already holds was seen; wait for the others.
            let unseen = |p: &Pod| ctx.pods.get(&ObjectRef::from_obj(p)).is_none();
            let created: Vec<String> = results.iter().flatten().filter(|p| unseen(p)).map(|p| p.name_any()).collect();
            ctx.expect(&uid, |pending| pending.creates.extend(created));
            for r in results {
                match r {
                    Ok(p) => {
                        events.push(("Normal", "SuccessfulCreate", format!("Created pod: {}", p.name_any())));
                    }
                    Err(e) => {
                        // Refusals (quota, limits) are recorded too: they are how users learn why replicas are missing.
                        if !workload::namespace_terminating(&e) {
                            events.push(("Warning", "FailedCreate", format!("Error creating: {}", workload::error_message(&e))));
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
        owned.sort_by(|a, b| deletion_order(a, b));
        let doomed = &owned[..(diff as usize).min(BURST)];
        ctx.expect(&uid, |pending| pending.deletes.extend(doomed.iter().map(|p| p.name_any())));
        let dp = DeleteParams::default();
        let results = futures::future::join_all(doomed.iter().map(|p| async {
            let _permit = ctx.writes.acquire().await;
            pods.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp).await
        }))
        .await;
        let mut events = Vec::new();
        let mut failed = None;
        for (pod, r) in doomed.iter().zip(results) {
            match r {
                Ok(_) => events.push(("Normal", "SuccessfulDelete", format!("Deleted pod: {}", pod.name_any()))),
                Err(e) if is_status(&e, &[404]) => ctx.expect(&uid, |pending| _ = pending.deletes.remove(&pod.name_any())),
                Err(e) => {
                    ctx.expect(&uid, |pending| _ = pending.deletes.remove(&pod.name_any()));
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
