//! The Job controller's pod writes: claiming pods, creating them from the
//! template (with the completion index for Indexed Jobs), deleting them,
//! and taking the tracking finalizer off once a pod is counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::job::{taken_indexes, Ctx, Pass, COMPONENT};
use crate::job_status::{self as js, BackoffRecord, Indexes};
use crate::workload::{self, controller_ref, is_status, pod_active, pod_phase, pod_ready, selector_matches, Result};

/// What `manage` needs besides the pods.
pub(crate) struct Counts {
    pub succeeded: i32,
    pub failed_indexes: i32,
    pub terminating: i32,
}

/// The Job's pods: those it controls, plus matching orphans it adopts (with the finalizer).
pub(crate) async fn claim(ctx: &Ctx, job: &Job, spec: &JobSpec) -> Result<Vec<Arc<Pod>>> {
    let uid = job.uid().unwrap_or_default();
    let mut pods = ctx.owned(&uid);
    let Some(selector) = spec.selector.as_ref().filter(|s| !workload::selector_is_empty(s)) else { return Ok(pods) };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(pods);
    }
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for pod in ctx.orphans(&ns).into_iter().filter(|p| pod_active(p) && selector_matches(selector, p.labels())) {
        let mut refs = pod.owner_references().to_vec();
        refs.push(controller_ref(job));
        let mut finalizers = pod.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == js::TRACKING_FINALIZER) {
            finalizers.push(js::TRACKING_FINALIZER.into());
        }
        let patch = json!({ "metadata": { "ownerReferences": refs, "finalizers": finalizers, "resourceVersion": pod.resource_version() } });
        match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(p) => pods.push(Arc::new(p)),
            Err(e) if is_status(&e, &[404, 409]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pods)
}

/// Pods held by the finalizer for a Job of this name that is gone: nobody
/// else would ever let them go.
pub(crate) async fn release_strays(ctx: &Ctx, ns: &str, name: &str, job: Option<&Job>) {
    if job.is_some() {
        return;
    }
    let strays: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && p.finalizers().iter().any(|f| f == js::TRACKING_FINALIZER))
        .filter(|p| workload::controller_of(p.as_ref()).is_some_and(|r| r.kind == "Job" && r.name == name))
        .collect();
    remove_finalizers(ctx, "", &strays).await;
}

/// Takes the tracking finalizer off each pod; returns the uids now free of
/// it (a pod already gone counts). Remembered, so a stale cache cannot make
/// the controller count a pod twice.
pub(crate) async fn remove_finalizers(ctx: &Ctx, job_uid: &str, pods: &[Arc<Pod>]) -> Vec<String> {
    let results = futures::future::join_all(pods.iter().map(|pod| async move {
        let _permit = ctx.writes.acquire().await;
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let mut current = Some(pod.as_ref().clone());
        // The cached copy first; after a failed test, the live one.
        for _ in 0..2 {
            let Some(p) = current.take() else { return true };
            let Some(i) = p.finalizers().iter().position(|f| f == js::TRACKING_FINALIZER) else { return true };
            let ops = json!([
                { "op": "test", "path": format!("/metadata/finalizers/{i}"), "value": js::TRACKING_FINALIZER },
                { "op": "remove", "path": format!("/metadata/finalizers/{i}") },
            ]);
            let Ok(patch) = serde_json::from_value::<json_patch::Patch>(ops) else { return false };
            match api.patch(&p.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                Ok(_) => return true,
                Err(e) if is_status(&e, &[404]) => return true,
                Err(e) => {
                    tracing::debug!("removing the job-tracking finalizer of {}: {e}", p.name_any());
                    current = match api.get_opt(&p.name_any()).await {
                        Ok(Some(fresh)) if fresh.metadata.uid == p.metadata.uid => Some(fresh),
                        Ok(_) => return true,
                        Err(_) => return false,
                    };
                }
            }
        }
        false
    }))
    .await;
    let freed: Vec<String> = pods.iter().zip(results).filter(|(_, ok)| *ok).filter_map(|(p, _)| p.metadata.uid.clone()).collect();
    if !job_uid.is_empty() {
        ctx.note_uncounted(job_uid, &freed);
    }
    freed
}

/// Deletes pods (taking the finalizer off first when asked, so they are not
/// counted); returns how many went and how many of those were ready.
pub(crate) async fn delete_pods(ctx: &Ctx, job: &Job, pods: &[Arc<Pod>], uncount: bool) -> (i32, i32) {
    if pods.is_empty() {
        return (0, 0);
    }
    if uncount {
        remove_finalizers(ctx, &job.uid().unwrap_or_default(), pods).await;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let dp = DeleteParams::background();
    let results = futures::future::join_all(pods.iter().map(|p| {
        let (api, dp) = (&api, &dp);
        async move {
            let _permit = ctx.writes.acquire().await;
            api.delete(&p.name_any(), dp).await
        }
    }))
    .await;
    let (mut deleted, mut ready) = (0, 0);
    let mut events = Vec::new();
    for (pod, r) in pods.iter().zip(results) {
        match r {
            Ok(_) => events.push(("Normal", "SuccessfulDelete", format!("Deleted pod: {}", pod.name_any()))),
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => {
                events.push(("Warning", "FailedDelete", format!("Error deleting: {e}")));
                continue;
            }
        }
        deleted += 1;
        ready += pod_ready(pod) as i32;
    }
    record_all(ctx, job, events).await;
    (deleted, ready)
}

async fn record_all(ctx: &Ctx, job: &Job, events: Vec<(&str, &str, String)>) {
    futures::future::join_all(events.into_iter().map(|(t, r, m)| workload::record(&ctx.client, COMPONENT, job, t, r, m))).await;
}

/// Upstream's manageJob: deletes pods beyond what is wanted (and Indexed
/// pods whose index is taken twice or out of range), creates the missing
/// ones after the failure back-off. Returns the active count and when to look again.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn manage(
    ctx: &Ctx,
    p: &Pass,
    active_pods: &[Arc<Pod>],
    ok: &Indexes,
    failed: Option<&Indexes>,
    counts: Counts,
    record: &BackoffRecord,
    settled: bool,
) -> Result<(i32, Option<Duration>)> {
    let mut active: Vec<Arc<Pod>> = active_pods.to_vec();
    if !settled {
        return Ok((active.len() as i32, None));
    }
    let suspended = p.spec.suspend == Some(true);
    if p.indexed() && !suspended {
        let extra = extra_indexed(p, &active, ok, failed);
        if !extra.is_empty() {
            let (n, _) = delete_pods(ctx, &p.job, &extra, true).await;
            active.retain(|a| !extra.iter().any(|x| x.metadata.uid == a.metadata.uid));
            return Ok((active.len() as i32 + extra.len() as i32 - n, None));
        }
    }
    let parallelism = p.spec.parallelism.unwrap_or(1);
    let want = js::want_active(suspended, parallelism, p.spec.completions, counts.succeeded, counts.failed_indexes, active.len() as i32);
    let have = active.len() as i32;
    if have > want {
        // Not ready before ready, highest index first, newest first.
        active.sort_by_key(|x| (pod_ready(x), std::cmp::Reverse(js::completion_index(x)), std::cmp::Reverse(workload::creation(&x.metadata))));
        let n = ((have - want) as usize).min(js::MAX_POD_CREATE_DELETE_PER_SYNC);
        let doomed: Vec<_> = active[..n].to_vec();
        let (deleted, _) = delete_pods(ctx, &p.job, &doomed, true).await;
        return Ok((have - deleted, None));
    }
    let mut diff = want - have;
    if p.spec.pod_replacement_policy.as_deref() == Some("Failed") {
        diff -= counts.terminating;
    }
    if diff <= 0 {
        return Ok((have, None));
    }
    let wait = record.remaining(p.now);
    if !wait.is_zero() {
        return Ok((have, Some(wait)));
    }
    let diff = (diff as usize).min(js::MAX_POD_CREATE_DELETE_PER_SYNC);
    let templates: Vec<Pod> = if p.indexed() {
        let taken = taken_indexes(p, &active);
        let empty = Indexes::default();
        js::indexes_to_start(p.completions(), diff, ok, failed.unwrap_or(&empty), &taken).into_iter().map(|i| pod_for(p, Some(i))).collect()
    } else {
        (0..diff).map(|_| pod_for(p, None)).collect()
    };
    let created = create_pods(ctx, &p.job, templates).await?;
    Ok((have + created, None))
}

/// Indexed pods to delete: a second pod of one index, or an index that is out of range, done or failed.
fn extra_indexed(p: &Pass, active: &[Arc<Pod>], ok: &Indexes, failed: Option<&Indexes>) -> Vec<Arc<Pod>> {
    let mut seen = BTreeMap::new();
    let mut sorted = active.to_vec();
    // Keep the ready, then the oldest, pod of an index.
    sorted.sort_by_key(|x| (!pod_ready(x), workload::creation(&x.metadata)));
    let mut extra = Vec::new();
    for pod in sorted {
        match js::completion_index(&pod).filter(|i| *i < p.completions()) {
            Some(i) if !ok.has(i) && !failed.is_some_and(|f| f.has(i)) && seen.insert(i, ()).is_none() => {}
            _ => extra.push(pod),
        }
    }
    extra
}

/// Creates pods in slow-start batches (1, 2, 4, ...), so a template the API
/// server rejects costs one request, not hundreds; returns how many were made.
async fn create_pods(ctx: &Ctx, job: &Job, pods: Vec<Pod>) -> Result<i32> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let uid = job.uid().unwrap_or_default();
    let pp = PostParams::default();
    let (mut done, mut batch, mut created) = (0, 1, 0);
    while done < pods.len() {
        let chunk = &pods[done..(done + batch).min(pods.len())];
        let results = futures::future::join_all(chunk.iter().map(|pod| async {
            let _permit = ctx.writes.acquire().await;
            api.create(&pp, pod).await
        }))
        .await;
        ctx.expect_created(&uid, results.iter().flatten());
        let mut events = Vec::new();
        let mut failed = None;
        for r in results {
            match r {
                Ok(p) => {
                    created += 1;
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
        record_all(ctx, job, events).await;
        if let Some(e) = failed {
            return Err(e.into());
        }
        done += chunk.len();
        batch *= 2;
    }
    Ok(created)
}

/// A pod from the Job's template: our controller reference and the
/// tracking finalizer; for an Indexed Job the completion index as
/// annotation, label and `JOB_COMPLETION_INDEX`, and the hostname `NAME-INDEX`.
fn pod_for(p: &Pass, index: Option<i32>) -> Pod {
    let job = &p.job;
    let name = job.name_any();
    let meta = p.spec.template.metadata.clone().unwrap_or_default();
    let mut spec = p.spec.template.spec.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    finalizers.push(js::TRACKING_FINALIZER.into());
    let mut generate_name = format!("{name}-");
    if let Some(i) = index {
        annotations.insert(js::COMPLETION_INDEX.into(), i.to_string());
        labels.insert(js::COMPLETION_INDEX.into(), i.to_string());
        generate_name = format!("{name}-{i}-");
        if spec.hostname.as_deref().unwrap_or("").is_empty() {
            spec.hostname = Some(format!("{name}-{i}"));
        }
        let env = EnvVar {
            name: js::COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { api_version: Some("v1".into()), field_path: format!("metadata.annotations['{}']", js::COMPLETION_INDEX) }),
                ..Default::default()
            }),
        };
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            let vars = c.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == js::COMPLETION_INDEX_ENV) {
                vars.push(env.clone());
            }
        }
        if p.spec.backoff_limit_per_index.is_some() {
            let (failures, ignored) = index_failure_counts(p, i);
            annotations.insert(js::INDEX_FAILURE_COUNT.into(), failures.to_string());
            if ignored > 0 {
                annotations.insert(js::INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Failures (counted, ignored) of an index so far: the latest failed pod's
/// annotations plus its own failure.
fn index_failure_counts(p: &Pass, index: i32) -> (i32, i32) {
    let last = p
        .pods
        .iter()
        .filter(|x| pod_phase(x) == "Failed" && js::completion_index(x) == Some(index))
        .max_by_key(|x| (js::annotation_count(x, js::INDEX_FAILURE_COUNT) + js::annotation_count(x, js::INDEX_IGNORED_FAILURE_COUNT), workload::creation(&x.metadata)));
    let Some(last) = last else { return (0, 0) };
    let (f, i) = (js::annotation_count(last, js::INDEX_FAILURE_COUNT), js::annotation_count(last, js::INDEX_IGNORED_FAILURE_COUNT));
    let counted = p.spec.pod_failure_policy.as_ref().is_none_or(|pol| js::match_pod_failure_policy(pol, last).count_failed);
    if counted {
        (f + 1, i)
    } else {
        (f, i + 1)
    }
}

/// Upstream's calculateFailedIndexes: indexes already failed, plus those
/// whose latest pod failed past backoffLimitPerIndex or by a FailIndex rule.
pub(crate) fn failed_indexes(p: &Pass, previous: Option<&str>) -> Indexes {
    let mut failed = Indexes::parse(previous.unwrap_or(""), p.completions());
    let limit = p.spec.backoff_limit_per_index.unwrap_or(i32::MAX);
    for pod in p.pods.iter().filter(|x| pod_phase(x) == "Failed" || (p.is_failed(x) && x.finalizers().iter().any(|f| f == js::TRACKING_FINALIZER))) {
        let Some(i) = js::completion_index(pod).filter(|i| *i < p.completions()) else { continue };
        let m = match &p.spec.pod_failure_policy {
            Some(pol) if pod_phase(pod) == "Failed" => js::match_pod_failure_policy(pol, pod),
            _ => js::PolicyMatch { action: None, count_failed: true, fail_job_message: None },
        };
        if m.action.as_deref() == Some("FailIndex") || (m.count_failed && js::annotation_count(pod, js::INDEX_FAILURE_COUNT) + 1 > limit) {
            failed.0.insert(i);
        }
    }
    failed
}
