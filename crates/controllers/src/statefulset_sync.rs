//! StatefulSet controller: the writes behind statefulset.rs's plan. Each
//! sync finds the current and update revisions (a new template makes a
//! ControllerRevision; going back to an older template renumbers its
//! revision, as `kubectl rollout undo` expects), claims the set's pods,
//! carries out the plan's steps and writes the status.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use client::informer::{self, ready, ByController, Watched};
use crate::history::{self, Created, HASH_LABEL};
use crate::statefulset::{self, claims_for, is_member, Set, Step, COMPONENT, POD_INDEX_LABEL, POD_NAME_LABEL};
use crate::workload::{self, controller_of, controller_ref, is_status, selector_matches, Error, Result};

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    by_controller: ByController<Pod>,
    revisions: Store<ControllerRevision>,
}

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>, by_controller: ByController<Pod>) {
    if pods.wait_until_ready().await.is_err() {
        return;
    }
    let (revisions, revision_events) = informer::watch(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default());
    let controller = Controller::new(Api::<StatefulSet>::all(client.clone()), watcher::Config::default());
    let owners = controller.store();
    let ctx = Arc::new(Ctx { client, pods, by_controller, revisions });
    controller
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = controller_of(pod.as_ref()) {
                return if r.kind == "StatefulSet" { vec![ObjectRef::new(&r.name).within(&ns)] } else { vec![] };
            }
            owners
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()) && is_member(&o.name_any(), &pod))
                .filter(|o| o.spec.as_ref().is_some_and(|s| selector_matches(&s.selector, pod.labels())))
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect()
        })
        .watches_shared_stream(revision_events, |rev: Arc<ControllerRevision>| match controller_of(rev.as_ref()) {
            Some(r) if r.kind == "StatefulSet" => vec![ObjectRef::new(&r.name).within(&rev.namespace().unwrap_or_default())],
            _ => vec![],
        })
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("statefulset controller: {e}");
            }
        })
        .await
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    if !ready(&ctx.revisions) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let Some(spec) = sts.spec.clone() else { return Ok(Action::await_change()) };
    let ns = sts.namespace().unwrap_or_default();
    let revs = history::owned(&ctx.revisions, &ns, &sts.uid().unwrap_or_default(), &spec.selector);
    let (current, update, collisions) = revisions(&ctx, &sts, &revs).await?;
    let current_template = history::template_of(&current).unwrap_or_else(|| spec.template.clone());
    let pods = claim_pods(&ctx, &sts).await?;
    let set = Set::new(&sts);
    let (steps, mut counts) = statefulset::plan(&sts, &set, &pods, &current.name_any(), &update.name_any(), Utc::now());
    let result = execute(&ctx, &sts, &set, &pods, &current, &current_template, &update, steps).await;

    let mut status = json!({
        "replicas": counts.replicas,
        "readyReplicas": counts.ready,
        "currentReplicas": counts.current,
        "updatedReplicas": counts.updated,
        "availableReplicas": counts.available,
        "currentRevision": current.name_any(),
        "updateRevision": update.name_any(),
        "observedGeneration": sts.metadata.generation.unwrap_or(0),
        "collisionCount": collisions,
    });
    // Upstream completeRollingUpdate: every pod updated and ready makes the update revision current.
    if !set.on_delete && counts.updated == counts.replicas && counts.ready == counts.replicas {
        counts.current = counts.updated;
        status["currentReplicas"] = counts.current.into();
        status["currentRevision"] = update.name_any().into();
    }
    let old = serde_json::to_value(sts.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
    if status.as_object().into_iter().flatten().any(|(k, v)| old.get(k).unwrap_or(&json!(0)) != v) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&sts.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await {
            Err(e) if is_status(&e, &[404]) => return Ok(Action::await_change()),
            r => _ = r?,
        }
    }
    result?;
    // Upstream truncateHistory: revisions no pod runs, beyond revisionHistoryLimit, go.
    let mut live: HashSet<String> = pods.iter().map(|p| statefulset::revision_of(p).to_string()).collect();
    live.extend([current.name_any(), update.name_any(), status["currentRevision"].as_str().unwrap_or_default().to_string()]);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    for rev in history::to_trim(&revs, &live, spec.revision_history_limit.unwrap_or(10)) {
        history::delete(&api, &rev.name_any()).await?;
    }
    if set.min_ready_seconds > 0 && counts.ready != counts.available {
        return Ok(Action::requeue(Duration::from_secs(set.min_ready_seconds as u64)));
    }
    Ok(Action::await_change())
}

/// Upstream getStatefulSetRevisions: the update revision is the one whose
/// data is the current template's — the newest if it already is, an older
/// one renumbered to be the newest (a rollback), or a new one; the current
/// revision is the one the status names, else the update revision.
async fn revisions(ctx: &Ctx, sts: &StatefulSet, revs: &[ControllerRevision]) -> Result<(ControllerRevision, ControllerRevision, i32)> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let template = sts.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let data = history::template_patch(&template);
    let mut collisions = sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    let next = history::next_revision(revs);
    let update = match revs.iter().rev().find(|r| history::data(r) == data) {
        Some(r) if revs.last().map(|l| l.name_any()) == Some(r.name_any()) => r.clone(),
        Some(r) => history::renumber(&api, r, next).await?,
        None => loop {
            let hash = history::hash_data(&data, collisions);
            let mut labels: BTreeMap<String, String> = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let rev = history::new_revision(sts, history::revision_name(&sts.name_any(), &hash), labels, data.clone(), next);
            match history::create(&api, &rev).await? {
                Created::Stored(r) => break r,
                Created::Collision if collisions < i32::MAX => collisions += 1,
                Created::Collision => return Err(Error("no free revision name".into())),
            }
        },
    };
    let wanted = sts.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = revs.iter().find(|r| Some(r.name_any()) == wanted).cloned().unwrap_or_else(|| update.clone());
    Ok((current, update, collisions))
}

/// Ours that still match (released when not), and adopted orphans that
/// match and carry the set's name.
async fn claim_pods(ctx: &Ctx, sts: &StatefulSet) -> Result<Vec<Arc<Pod>>> {
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.uid().unwrap_or_default();
    let selector = sts.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut owned = Vec::new();
    let refs = ctx.by_controller.controlled_by(&uid).into_iter().chain(ctx.by_controller.orphans_in(&ns));
    for pod in refs.filter_map(|r| ctx.pods.get(&r)) {
        let matches = selector_matches(&selector, pod.labels()) && is_member(&sts.name_any(), &pod);
        let refs = match controller_of(pod.as_ref()) {
            Some(r) if r.uid == uid && matches => {
                owned.push(pod);
                continue;
            }
            Some(r) if r.uid == uid => pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect::<Vec<_>>(),
            None if matches && pod.metadata.deletion_timestamp.is_none() && sts.metadata.deletion_timestamp.is_none() => {
                let mut refs = pod.owner_references().to_vec();
                refs.push(controller_ref(sts));
                refs
            }
            _ => continue,
        };
        let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": pod.resource_version() } });
        match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(p) if controller_of(&p).is_some_and(|r| r.uid == uid) => owned.push(Arc::new(p)),
            Ok(_) => {}
            Err(e) if is_status(&e, &[404, 409]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(owned)
}

async fn event(ctx: &Ctx, sts: &StatefulSet, type_: &str, reason: &str, message: String) {
    workload::record(&ctx.client, COMPONENT, sts, type_, reason, message).await
}

/// Carries out the plan in order; consecutive creations (Parallel) run
/// together in slow-start batches. Stops at the first failure.
#[allow(clippy::too_many_arguments)]
async fn execute(ctx: &Ctx, sts: &StatefulSet, set: &Set, pods: &[Arc<Pod>], current: &ControllerRevision, current_template: &k8s_openapi::api::core::v1::PodTemplateSpec, update: &ControllerRevision, steps: Vec<Step>) -> Result<()> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let by_name = |name: &str| pods.iter().find(|p| p.metadata.name.as_deref() == Some(name)).cloned();
    let claims = if sts.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref()).is_some_and(|t| !t.is_empty()) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        api.list(&ListParams::default()).await?.items.into_iter().map(|c| (c.name_any(), c)).collect()
    } else {
        BTreeMap::new()
    };
    let update_template = sts.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut creates = Vec::new();
    let mut steps = steps.into_iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Create { ordinal, current: use_current } => {
                let (template, rev) = if use_current { (current_template, current) } else { (&update_template, update) };
                creates.push(statefulset::new_pod(sts, template, ordinal, &rev.name_any()));
                if !matches!(steps.peek(), Some(Step::Create { .. })) {
                    create_pods(ctx, sts, set, &claims, std::mem::take(&mut creates)).await?;
                }
            }
            Step::Recreate { name, failed } => {
                let (reason, kind, what) = if failed { ("RecreatingFailedPod", "Warning", "failed") } else { ("RecreatingTerminatedPod", "Normal", "terminated") };
                event(ctx, sts, kind, reason, format!("StatefulSet {ns}/{} is recreating {what} Pod {name}", sts.name_any())).await;
                delete_pod(ctx, sts, &api, &name).await?;
            }
            Step::EnsureClaims { ordinal } => ensure_claims(ctx, sts, &claims, ordinal, &format!("{}-{ordinal}", sts.name_any())).await?,
            Step::FixIdentity { name } => {
                let index = statefulset::parent_and_ordinal(&name).map(|(_, o)| o.to_string()).unwrap_or_default();
                let patch = json!({ "metadata": { "labels": { POD_NAME_LABEL: name, POD_INDEX_LABEL: index } } });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            Step::ClaimOwners { name } => {
                if let Some(pod) = by_name(&name) {
                    claim_owners(ctx, sts, set, &claims, &pod).await?;
                }
            }
            Step::ScaleDown { name } | Step::Update { name } => delete_pod(ctx, sts, &api, &name).await?,
        }
    }
    Ok(())
}

async fn delete_pod(ctx: &Ctx, sts: &StatefulSet, api: &Api<Pod>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            event(ctx, sts, "Normal", "SuccessfulDelete", format!("delete Pod {name} in StatefulSet {} successful", sts.name_any())).await;
            Ok(())
        }
        Err(e) if is_status(&e, &[404]) => Ok(()),
        Err(e) => {
            event(ctx, sts, "Warning", "FailedDelete", format!("delete Pod {name} in StatefulSet {} failed error: {e}", sts.name_any())).await;
            Err(e.into())
        }
    }
}

/// Upstream CreateStatefulPod: the claims first, then the pod, then the
/// claims' owners for the retention policy. Batches of 1, 2, 4, ...
async fn create_pods(ctx: &Ctx, sts: &StatefulSet, set: &Set, claims: &BTreeMap<String, PersistentVolumeClaim>, pods: Vec<Pod>) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &sts.namespace().unwrap_or_default());
    let mut rest = pods.as_slice();
    let mut batch = 1;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        let results = futures::future::join_all(now.iter().map(|pod| async {
            let name = pod.name_any();
            let ordinal = statefulset::parent_and_ordinal(&name).map_or(0, |(_, o)| o);
            ensure_claims(ctx, sts, claims, ordinal, &name).await?;
            match api.create(&PostParams::default(), pod).await {
                Ok(created) => {
                    event(ctx, sts, "Normal", "SuccessfulCreate", format!("create Pod {name} in StatefulSet {} successful", sts.name_any())).await;
                    claim_owners(ctx, sts, set, claims, &created).await
                }
                Err(e) if is_status(&e, &[409]) => Ok(()),
                Err(e) => {
                    event(ctx, sts, "Warning", "FailedCreate", format!("create Pod {name} in StatefulSet {} failed error: {e}", sts.name_any())).await;
                    Err(Error::from(e))
                }
            }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        rest = later;
        batch *= 2;
    }
    Ok(())
}

/// Upstream createPersistentVolumeClaims: each missing claim of the ordinal
/// is created; one still being deleted holds the pod back.
async fn ensure_claims(ctx: &Ctx, sts: &StatefulSet, claims: &BTreeMap<String, PersistentVolumeClaim>, ordinal: i32, pod: &str) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &sts.namespace().unwrap_or_default());
    for claim in claims_for(sts, ordinal).into_values() {
        let name = claim.name_any();
        match claims.get(&name) {
            Some(c) if c.metadata.deletion_timestamp.is_some() => return Err(Error(format!("pvc {name} is being deleted"))),
            Some(_) => continue,
            None => {}
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => event(ctx, sts, "Normal", "SuccessfulCreate", format!("create Claim {name} Pod {pod} in StatefulSet {} success", sts.name_any())).await,
            Err(e) if is_status(&e, &[409]) => {}
            Err(e) => {
                event(ctx, sts, "Warning", "FailedCreate", format!("create Claim {name} for Pod {pod} in StatefulSet {} failed error: {e}", sts.name_any())).await;
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Upstream UpdatePodClaimForRetentionPolicy, for the claims that exist.
async fn claim_owners(ctx: &Ctx, sts: &StatefulSet, set: &Set, claims: &BTreeMap<String, PersistentVolumeClaim>, pod: &Pod) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &sts.namespace().unwrap_or_default());
    let Some((_, ordinal)) = statefulset::parent_and_ordinal(&pod.name_any()) else { return Ok(()) };
    for name in claims_for(sts, ordinal).into_values().map(|c| c.name_any()) {
        let fresh;
        let claim = match claims.get(&name) {
            Some(c) => c,
            None => match api.get_opt(&name).await? {
                Some(c) => {
                    fresh = c;
                    &fresh
                }
                None => continue,
            },
        };
        let Some(refs) = statefulset::claim_owner_refs(sts, set, pod, claim) else {
            let msg = format!("PersistentVolumeClaim {name} has a conflicting OwnerReference that acts as a manging controller, the retention policy is ignored for this claim");
            event(ctx, sts, "Warning", "ConflictingController", msg).await;
            continue;
        };
        if refs.as_slice() == claim.owner_references() {
            continue;
        }
        let patch = json!({ "metadata": { "ownerReferences": refs } });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
