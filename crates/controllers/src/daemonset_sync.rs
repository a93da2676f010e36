//! DaemonSet controller: the writes behind daemonset.rs's decisions. Each
//! sync keeps the ControllerRevisions current (one per template, the pods
//! labelled with its hash), claims the DaemonSet's pods, creates and deletes
//! pods for the plan (new pods are pinned to their node by a required node
//! affinity, and the scheduler binds them), and writes the status.

use std::collections::{hash_map::DefaultHasher, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use client::informer::{self, ready, ByController, Watched};
use crate::daemonset::{self, target_node, ByNode, Daemon, Plan, BURST_REPLICAS, COMPONENT, TEMPLATE_GENERATION_LABEL};
use crate::expectations::Expectations;
use crate::history::{self, Created, REVISION_LABEL};
use crate::workload::{self, controller_of, controller_ref, is_status, selector_is_empty, selector_matches, Error, Result};

/// Pod writes in flight across all DaemonSets (see replicaset.rs).
const WRITES_IN_FLIGHT: usize = 64;
/// Upstream's failed-pod back-off: 1 s, doubling, at most 15 min.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(900);

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    by_controller: ByController<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    /// By "<ds uid>/<node>": when a failed pod there may next be replaced, and the delay after that.
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    writes: tokio::sync::Semaphore,
}

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>, by_controller: ByController<Pod>, (nodes, node_events): Watched<Node>) {
    // Planning from a store still being filled would create pods again.
    if pods.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let (revisions, revision_events) = informer::watch(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default());
    let controller = Controller::new(Api::<DaemonSet>::all(client.clone()), watcher::Config::default());
    let (owners, all_owners) = (controller.store(), controller.store());
    let ctx = Arc::new(Ctx {
        client,
        pods,
        by_controller,
        nodes: nodes.clone(),
        revisions,
        expectations: Expectations::default(),
        backoff: Mutex::default(),
        writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
    });
    let seen = ctx.clone();
    let fingerprints: Mutex<HashMap<String, u64>> = Mutex::default();
    controller
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = controller_of(pod.as_ref()) {
                if r.kind != "DaemonSet" {
                    return vec![];
                }
                let gone = pod.metadata.deletion_timestamp.is_some() || seen.pods.get(&ObjectRef::from_obj(pod.as_ref())).is_none();
                seen.expectations.observe(&r.uid, &pod.name_any(), gone);
                return vec![ObjectRef::new(&r.name).within(&ns)];
            }
            owners
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                .filter(|o| o.spec.as_ref().is_some_and(|s| !selector_is_empty(&s.selector) && selector_matches(&s.selector, pod.labels())))
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect()
        })
        // Only what decides placement wakes every DaemonSet: node status heartbeats do not.
        .watches_shared_stream(node_events, move |node: Arc<Node>| {
            let name = node.name_any();
            let print = if nodes.get(&ObjectRef::new(&name)).is_some() { placement_fingerprint(&node) } else { 0 };
            if fingerprints.lock().unwrap_or_else(|e| e.into_inner()).insert(name, print) == Some(print) {
                return vec![];
            }
            all_owners.state().iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
        })
        .watches_shared_stream(revision_events, |rev: Arc<ControllerRevision>| match controller_of(rev.as_ref()) {
            Some(r) if r.kind == "DaemonSet" => vec![ObjectRef::new(&r.name).within(&rev.namespace().unwrap_or_default())],
            _ => vec![],
        })
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("daemonset controller: {e}");
            }
        })
        .await
}

/// What of a node decides where daemon pods run: its labels, taints and name.
fn placement_fingerprint(node: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    node.labels().hash(&mut h);
    serde_json::to_string(&node.spec.as_ref().and_then(|s| s.taints.clone())).unwrap_or_default().hash(&mut h);
    h.finish() | 1
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    if !ready(&ctx.revisions) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let Some(spec) = ds.spec.as_ref() else { return Ok(Action::await_change()) };
    if selector_is_empty(&spec.selector) {
        let msg = "This daemon set is selecting all pods. A non-empty selector is required.".to_string();
        workload::record(&ctx.client, COMPONENT, ds.as_ref(), "Warning", "SelectingAll", msg).await;
        return Ok(Action::await_change());
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = ds.uid().unwrap_or_default();
    let (cur, old) = construct_history(&ctx, &ds).await?;
    let hash = cur.labels().get(REVISION_LABEL).cloned().unwrap_or_else(|| cur.name_any());
    let d = Daemon::new(&ds, hash);
    let nodes = ctx.nodes.state();
    let by_node = claim_pods(&ctx, &ds).await?;
    let now = Utc::now();
    let satisfied = ctx.expectations.satisfied(&uid);
    let mut result = Ok(());
    let mut backing_off = false;
    if satisfied {
        let in_backoff = |node: &str| ctx.backoff.lock().unwrap_or_else(|e| e.into_inner()).get(&format!("{uid}/{node}")).is_some_and(|(next, _)| *next > Instant::now());
        let plan = daemonset::manage(&d, &nodes, &by_node, now, &in_backoff);
        backing_off = plan.backing_off;
        for (node, pod) in &plan.failed {
            note_failure(&ctx, &uid, node);
            let msg = format!("Found failed daemon pod {}/{pod} on node {node}, will try to kill it", ds.namespace().unwrap_or_default());
            workload::record(&ctx.client, COMPONENT, ds.as_ref(), "Warning", "FailedDaemonPod", msg).await;
        }
        result = sync_pods(&ctx, &ds, &d, &plan).await;
        if result.is_ok() && ctx.expectations.satisfied(&uid) {
            result = sync_pods(&ctx, &ds, &d, &daemonset::rolling_update(&d, &nodes, &by_node, now)).await;
        }
        if result.is_ok() {
            result = cleanup_history(&ctx, &ds, &old, &by_node).await;
        }
    }
    let c = daemonset::counts(&d, &nodes, &by_node, now);
    let observed = if satisfied { ds.metadata.generation } else { ds.status.as_ref().and_then(|s| s.observed_generation) };
    let status = json!({
        "desiredNumberScheduled": c.desired,
        "currentNumberScheduled": c.current,
        "numberMisscheduled": c.misscheduled,
        "numberReady": c.ready,
        "numberAvailable": c.available,
        "numberUnavailable": c.desired - c.available,
        "updatedNumberScheduled": c.updated,
        "observedGeneration": observed.unwrap_or(0),
    });
    let current = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
    if status.as_object().into_iter().flatten().any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
        match api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await {
            Err(e) if is_status(&e, &[404]) => return Ok(Action::await_change()),
            r => _ = r?,
        }
    }
    result?;
    // Ready pods become available without any event; failed pods wait out their back-off.
    if d.min_ready_seconds > 0 && c.ready != c.available {
        return Ok(Action::requeue(Duration::from_secs(d.min_ready_seconds as u64)));
    }
    if backing_off {
        return Ok(Action::requeue(BACKOFF_START));
    }
    Ok(Action::await_change())
}

fn note_failure(ctx: &Ctx, uid: &str, node: &str) {
    let mut backoff = ctx.backoff.lock().unwrap_or_else(|e| e.into_inner());
    let entry = backoff.entry(format!("{uid}/{node}")).or_insert((Instant::now(), BACKOFF_START / 2));
    entry.1 = (entry.1 * 2).min(BACKOFF_MAX);
    entry.0 = Instant::now() + entry.1;
}

/// Upstream constructHistory: the revision of the current template (made
/// when missing, renumbered to be the newest) and the older ones.
async fn construct_history(ctx: &Ctx, ds: &DaemonSet) -> Result<(ControllerRevision, Vec<ControllerRevision>)> {
    let ns = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = history::template_patch(&spec.template);
    let (mut current, old): (Vec<_>, Vec<_>) = history::owned(&ctx.revisions, &ns, &ds.uid().unwrap_or_default(), &spec.selector).into_iter().partition(|r| history::data(r) == patch);
    let next = history::next_revision(&old);
    let Some(keep) = current.pop() else { return Ok((snapshot(ctx, ds, patch, next).await?, old)) };
    // Two revisions of one template (made by two controllers at once): keep the newest.
    for dup in current {
        history::delete(&api, &dup.name_any()).await?;
    }
    let keep = if keep.revision < next { history::renumber(&api, &keep, next).await? } else { keep };
    Ok((keep, old))
}

/// Upstream snapshot: stores the current template as revision `revision`;
/// a name taken by another template raises the collision count.
async fn snapshot(ctx: &Ctx, ds: &DaemonSet, patch: Value, revision: i64) -> Result<ControllerRevision> {
    let ns = ds.namespace().unwrap_or_default();
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = crate::deployment::template_hash(&template, collisions);
    let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.clone());
    let mut rev = history::new_revision(ds, history::revision_name(&ds.name_any(), &hash), labels, patch, revision);
    rev.metadata.annotations = ds.metadata.annotations.clone();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    match history::create(&api, &rev).await? {
        Created::Stored(r) => Ok(r),
        Created::Collision => {
            let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
            let fresh = ds_api.get(&ds.name_any()).await?;
            let count = fresh.status.as_ref().and_then(|s| s.collision_count);
            if count != collisions {
                return Err(Error(format!("stale collision count of DaemonSet {}; retrying", ds.name_any())));
            }
            let patch = json!({ "status": { "collisionCount": count.unwrap_or(0) + 1 } });
            ds_api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
            Err(Error(format!("revision {} already exists with another template", rev.name_any())))
        }
    }
}

/// Ours that still match (released when not), matching orphans adopted;
/// grouped by the node each is bound or pinned to. Terminal pods already
/// being deleted are left out.
async fn claim_pods(ctx: &Ctx, ds: &DaemonSet) -> Result<ByNode> {
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let selector = ds.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut by_node = ByNode::new();
    let refs = ctx.by_controller.controlled_by(&uid).into_iter().chain(ctx.by_controller.orphans_in(&ns));
    for pod in refs.filter_map(|r| ctx.pods.get(&r)) {
        let matches = selector_matches(&selector, pod.labels());
        let pod = match controller_of(pod.as_ref()) {
            Some(r) if r.uid == uid && matches => pod,
            Some(r) if r.uid == uid => {
                set_owner_refs(&api, &pod, pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect()).await?;
                continue;
            }
            None if matches && pod.metadata.deletion_timestamp.is_none() => {
                let mut refs = pod.owner_references().to_vec();
                refs.push(controller_ref(ds));
                match set_owner_refs(&api, &pod, refs).await? {
                    Some(p) => Arc::new(p),
                    None => continue,
                }
            }
            _ => continue,
        };
        let terminal = matches!(workload::pod_phase(&pod), "Succeeded" | "Failed");
        if terminal && pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(node) = target_node(&pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    Ok(by_node)
}

async fn set_owner_refs(api: &Api<Pod>, pod: &Pod, refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>) -> Result<Option<Pod>> {
    let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": pod.resource_version() } });
    match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_status(&e, &[404, 409]) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The pod for `node`: the template with the daemon tolerations, the
/// revision hash label and the node pin.
fn daemon_pod(ds: &DaemonSet, d: &Daemon, node: &str) -> Pod {
    let meta = ds.spec.as_ref().and_then(|s| s.template.metadata.clone()).unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), d.hash.clone());
    if let Some(g) = &d.template_generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.clone());
    }
    let mut spec = d.spec.clone();
    spec.affinity = Some(daemonset::pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream syncNodes: deletes, then creates in slow-start batches (1, 2,
/// 4, ...), at most BURST_REPLICAS of each per sync, noting expectations.
async fn sync_pods(ctx: &Ctx, ds: &DaemonSet, d: &Daemon, plan: &Plan) -> Result<()> {
    let uid = ds.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let mut failed = None;
    let doomed = &plan.delete[..plan.delete.len().min(BURST_REPLICAS)];
    ctx.expectations.expect_deletes(&uid, doomed.iter().cloned());
    let results = futures::future::join_all(doomed.iter().map(|name| {
        let api = &api;
        async move {
        let _permit = ctx.writes.acquire().await;
        (name, api.delete(name, &DeleteParams::default()).await)
    }}))
    .await;
    for (name, r) in results {
        match r {
            Ok(_) => workload::record(&ctx.client, COMPONENT, ds, "Normal", "SuccessfulDelete", format!("Deleted pod: {name}")).await,
            Err(e) => {
                ctx.expectations.forget_delete(&uid, name);
                if !is_status(&e, &[404]) {
                    workload::record(&ctx.client, COMPONENT, ds, "Warning", "FailedDelete", format!("Error deleting: {e}")).await;
                    failed = Some(e);
                }
            }
        }
    }
    let nodes = &plan.create[..plan.create.len().min(BURST_REPLICAS)];
    let (mut done, mut batch) = (0, 1);
    while done < nodes.len() && failed.is_none() {
        let n = batch.min(nodes.len() - done);
        let results = futures::future::join_all(nodes[done..done + n].iter().map(|node| async {
            let _permit = ctx.writes.acquire().await;
            api.create(&PostParams::default(), &daemon_pod(ds, d, node)).await
        }))
        .await;
        let unseen = results.iter().flatten().filter(|p| ctx.pods.get(&ObjectRef::from_obj(*p)).is_none()).map(|p| p.name_any());
        ctx.expectations.expect_creates(&uid, unseen.collect::<Vec<_>>());
        for r in results {
            match r {
                Ok(p) => workload::record(&ctx.client, COMPONENT, ds, "Normal", "SuccessfulCreate", format!("Created pod: {}", p.name_any())).await,
                Err(e) => {
                    if !is_status(&e, &[403]) {
                        workload::record(&ctx.client, COMPONENT, ds, "Warning", "FailedCreate", format!("Error creating: {e}")).await;
                    }
                    failed = Some(e);
                }
            }
        }
        done += n;
        batch *= 2;
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// Upstream cleanupHistory: the oldest revisions beyond revisionHistoryLimit
/// go, unless a pod still runs them.
async fn cleanup_history(ctx: &Ctx, ds: &DaemonSet, old: &[ControllerRevision], by_node: &ByNode) -> Result<()> {
    let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
    let live_hashes: std::collections::HashSet<&String> = by_node.values().flatten().filter_map(|p| p.labels().get(REVISION_LABEL)).collect();
    let live = old.iter().filter(|r| r.labels().get(REVISION_LABEL).is_some_and(|h| live_hashes.contains(h))).map(|r| r.name_any()).collect();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    for rev in history::to_trim(old, &live, limit) {
        history::delete(&api, &rev.name_any()).await?;
    }
    Ok(())
}
