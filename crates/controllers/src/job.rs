//! Job controller: runs a Job's pods to completion as upstream does —
//! completions and parallelism, Indexed jobs, the pod failure back-off,
//! backoffLimit (and per index), activeDeadlineSeconds, pod failure and
//! success policies, suspend — and tracks finished pods with the
//! `batch.kubernetes.io/job-tracking` finalizer, so a pod removed before it
//! was counted is never lost: a finished pod goes into
//! `status.uncountedTerminatedPods`, its finalizer is removed, then it moves
//! to the counters. The decisions are in job_status.rs, the pods in job_pods.rs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};

use crate::job_pods;
use crate::job_status::{self as js, BackoffRecord, Indexes};
use crate::workload::{self, controller_of, is_status, pod_phase, pod_ready, selector_matches, Result};
use client::informer::{ByController, Watched};

pub const COMPONENT: &str = "job-controller";
/// Jobs whose `spec.managedBy` names another controller are left to it.
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream's ExpectationsTimeout: a create whose pod never shows up stops blocking after this.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    by_controller: ByController<Pod>,
    /// By Job uid: pods created but not yet in the store.
    creating: Mutex<HashMap<String, (HashSet<String>, Instant)>>,
    /// By Job uid: pods whose finalizer we removed (and counted) while the store may still show it.
    uncounting: Mutex<HashMap<String, HashSet<String>>>,
    backoff: Mutex<HashMap<String, BackoffRecord>>,
    pub writes: tokio::sync::Semaphore,
}

pub async fn run(client: Client, (store, touched): Watched<Pod>, by_controller: ByController<Pod>) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let ctx = Arc::new(Ctx {
        client,
        pods: store,
        by_controller,
        creating: Mutex::default(),
        uncounting: Mutex::default(),
        backoff: Mutex::default(),
        writes: tokio::sync::Semaphore::new(64),
    });
    let seen = ctx.clone();
    controller
        .watches_shared_stream(touched, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            if let Some(r) = controller_of(pod.as_ref()) {
                if r.kind != "Job" {
                    return vec![];
                }
                seen.observe(&r.uid, &pod);
                return vec![ObjectRef::new(&r.name).within(&ns)];
            }
            // An orphan: the Jobs in its namespace that would adopt it.
            jobs.state()
                .iter()
                .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
                .filter(|j| j.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !workload::selector_is_empty(s) && selector_matches(s, pod.labels())))
                .map(|j| ObjectRef::from_obj(j.as_ref()))
                .collect()
        })
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("job controller: {e}");
            }
        })
        .await
}

impl Ctx {
    fn observe(&self, job_uid: &str, pod: &Pod) {
        let mut creating = self.creating.lock().unwrap();
        if let Some((names, _)) = creating.get_mut(job_uid) {
            names.remove(&pod.name_any());
            if names.is_empty() {
                creating.remove(job_uid);
            }
        }
    }

    fn settled(&self, job_uid: &str) -> bool {
        let mut creating = self.creating.lock().unwrap();
        match creating.get(job_uid) {
            Some((_, since)) if since.elapsed() < EXPECTATIONS_TIMEOUT => false,
            Some(_) => {
                creating.remove(job_uid);
                true
            }
            None => true,
        }
    }

    /// Remembers created pods the store does not show yet.
    pub fn expect_created<'a>(&self, job_uid: &str, pods: impl IntoIterator<Item = &'a Pod>) {
        let mut creating = self.creating.lock().unwrap();
        let entry = creating.entry(job_uid.to_string()).or_insert_with(|| (HashSet::new(), Instant::now()));
        entry.0.extend(pods.into_iter().filter(|p| self.pods.get(&ObjectRef::from_obj(*p)).is_none()).map(|p| p.name_any()));
        entry.1 = Instant::now();
        if entry.0.is_empty() {
            creating.remove(job_uid);
        }
    }

    fn forget(&self, job_uid: &str) {
        self.creating.lock().unwrap().remove(job_uid);
        self.uncounting.lock().unwrap().remove(job_uid);
        self.backoff.lock().unwrap().remove(job_uid);
    }
}

/// One pass over one Job: everything `sync` decides from a fresh copy of
/// the Job and the cached pods.
pub(crate) struct Pass {
    pub job: Job,
    pub spec: JobSpec,
    pub pods: Vec<Arc<Pod>>,
    /// Pod uids that still carry our finalizer (as far as we know).
    pub tracked: HashSet<String>,
    pub now: DateTime<Utc>,
}

impl Pass {
    pub fn indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some("Indexed")
    }
    pub fn completions(&self) -> i32 {
        self.spec.completions.unwrap_or(0)
    }
    fn has_finalizer(&self, pod: &Pod) -> bool {
        pod.metadata.uid.as_ref().is_some_and(|u| self.tracked.contains(u))
    }
    fn only_replace_failed(&self) -> bool {
        self.spec.pod_replacement_policy.as_deref() == Some("Failed")
    }
    /// Upstream's isPodFailed: Failed, or (unless only failed pods are replaced) being deleted unfinished.
    pub fn is_failed(&self, pod: &Pod) -> bool {
        let phase = pod_phase(pod);
        if phase == "Failed" {
            return true;
        }
        !self.only_replace_failed() && pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded"
    }
    fn policy(&self, pod: &Pod) -> js::PolicyMatch {
        match &self.spec.pod_failure_policy {
            Some(p) if pod_phase(pod) == "Failed" => js::match_pod_failure_policy(p, pod),
            _ => js::PolicyMatch { action: None, count_failed: true, fail_job_message: None },
        }
    }
    fn valid_index(&self, pod: &Pod) -> Option<i32> {
        js::completion_index(pod).filter(|i| *i < self.completions())
    }
}

async fn reconcile(obj: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh: the counters must never be computed from a stale copy.
    let job = api.get_opt(&obj.name_any()).await?;
    job_pods::release_strays(&ctx, &ns, &obj.name_any(), job.as_ref()).await;
    let Some(job) = job else {
        ctx.forget(&obj.uid().unwrap_or_default());
        return Ok(Action::await_change());
    };
    let uid = job.uid().unwrap_or_default();
    let Some(spec) = job.spec.clone() else { return Ok(Action::await_change()) };
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    let conditions = job.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let pods = job_pods::claim(&ctx, &job, &spec).await?;
    let tracked = tracked_uids(&ctx, &uid, &pods);
    if js::finished(&conditions) {
        // Finished earlier: only let go of pods still held by the finalizer.
        let held: Vec<_> = pods.iter().filter(|p| p.metadata.uid.as_ref().is_some_and(|u| tracked.contains(u))).cloned().collect();
        job_pods::remove_finalizers(&ctx, &uid, &held).await;
        ctx.backoff.lock().unwrap().remove(&uid);
        return Ok(Action::await_change());
    }
    if !matches!(spec.completion_mode.as_deref(), None | Some("NonIndexed") | Some("Indexed")) {
        workload::record(&ctx.client, COMPONENT, &job, "Warning", "UnknownCompletionMode", "Skipped Job sync because completion mode is unknown".into()).await;
        return Ok(Action::await_change());
    }
    let pass = Pass { job, spec, pods, tracked, now: Utc::now() };
    sync(&ctx, &api, pass).await
}

/// Uids of pods carrying the tracking finalizer, less those whose removal we
/// already counted (the store may not show it yet).
fn tracked_uids(ctx: &Ctx, job_uid: &str, pods: &[Arc<Pod>]) -> HashSet<String> {
    let mut uncounting = ctx.uncounting.lock().unwrap();
    let gone = uncounting.entry(job_uid.to_string()).or_default();
    let with: HashSet<String> = pods
        .iter()
        .filter(|p| p.finalizers().iter().any(|f| f == js::TRACKING_FINALIZER))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    // Once the store shows a removal, stop remembering it.
    gone.retain(|u| with.contains(u));
    let tracked = with.iter().filter(|u| !gone.contains(*u)).cloned().collect();
    if gone.is_empty() {
        uncounting.remove(job_uid);
    }
    tracked
}

async fn sync(ctx: &Ctx, api: &Api<Job>, mut p: Pass) -> Result<Action> {
    let uid = p.job.uid().unwrap_or_default();
    let now = p.now;
    let mut status = p.job.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let unc_ok: HashSet<String> = uncounted.succeeded.clone().unwrap_or_default().into_iter().collect();
    let unc_failed: HashSet<String> = uncounted.failed.clone().unwrap_or_default().into_iter().collect();
    let suspended = p.spec.suspend == Some(true);
    let active_pods: Vec<Arc<Pod>> = p.pods.iter().filter(|x| workload::pod_active(x)).cloned().collect();
    let mut terminating = p.pods.iter().filter(|x| x.metadata.deletion_timestamp.is_some() && !matches!(pod_phase(x), "Succeeded" | "Failed")).count() as i32;
    let mut ready = active_pods.iter().filter(|x| pod_ready(x)).count() as i32;
    let uid_of = |x: &Pod| x.metadata.uid.clone().unwrap_or_default();

    // Newly finished pods: still tracked, not yet in the uncounted lists.
    let new_ok: Vec<&Arc<Pod>> = p.pods.iter().filter(|x| p.has_finalizer(x) && pod_phase(x) == "Succeeded" && !unc_ok.contains(&uid_of(x))).collect();
    let new_failed: Vec<&Arc<Pod>> =
        p.pods.iter().filter(|x| p.has_finalizer(x) && pod_phase(x) != "Succeeded" && p.is_failed(x) && !unc_failed.contains(&uid_of(x))).collect();
    let mut succeeded = status.succeeded.unwrap_or(0) + (new_ok.len() + unc_ok.len()) as i32;
    let failed = status.failed.unwrap_or(0) + new_failed.iter().filter(|x| p.policy(x).count_failed).count() as i32 + unc_failed.len() as i32;
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }
    let times = |v: &[&Arc<Pod>]| v.iter().map(|x| js::finish_time(x, now)).collect::<Vec<_>>();
    let record = ctx.backoff.lock().unwrap().get(&uid).copied().unwrap_or_default().next(&times(&new_ok), &times(&new_failed));

    // The end state, in upstream's order: earlier interim conditions, then failures, then success.
    let mut finished: Option<JobCondition> = js::find(&conditions, "SuccessCriteriaMet").filter(|c| c.status == "True").cloned();
    if finished.is_none() {
        if let Some(target) = js::find(&conditions, "FailureTarget").filter(|c| c.status == "True") {
            finished = Some(target.clone());
        } else if let Some(msg) = fail_job_message(&p) {
            finished = Some(js::condition("FailureTarget", "True", js::REASON_POD_FAILURE_POLICY, &msg, now));
        }
    }
    let backoff_limit = p.spec.backoff_limit.unwrap_or(6);
    let start = status.start_time.as_ref().map(|t| t.0);
    let mut requeue: Option<Duration> = None;
    if finished.is_none() {
        if failed > backoff_limit || past_backoff_limit_on_failure(&p, &active_pods, backoff_limit) {
            finished = Some(js::condition("FailureTarget", "True", js::REASON_BACKOFF_LIMIT, "Job has reached the specified backoff limit", now));
        } else if !suspended && js::past_active_deadline(start, p.spec.active_deadline_seconds, now) {
            finished = Some(js::condition("FailureTarget", "True", js::REASON_DEADLINE, "Job was active longer than specified deadline", now));
        } else if !suspended {
            requeue = js::until_deadline(start, p.spec.active_deadline_seconds, now);
        }
    }
    let (prev_ok_indexes, mut ok_indexes, mut failed_indexes) = (
        Indexes::parse(status.completed_indexes.as_deref().unwrap_or(""), p.completions()),
        Indexes::default(),
        None::<Indexes>,
    );
    if p.indexed() {
        ok_indexes = prev_ok_indexes.clone();
        ok_indexes.0.extend(p.pods.iter().filter(|x| pod_phase(x) == "Succeeded" && p.has_finalizer(x)).filter_map(|x| p.valid_index(x)));
        succeeded = ok_indexes.total() as i32;
        if p.spec.backoff_limit_per_index.is_some() {
            let fi = job_pods::failed_indexes(&p, status.failed_indexes.as_deref());
            if finished.is_none() {
                if p.spec.max_failed_indexes.is_some_and(|m| fi.total() as i32 > m) {
                    finished = Some(js::condition("FailureTarget", "True", js::REASON_MAX_FAILED_INDEXES, "Job has exceeded the specified maximal number of failed indexes", now));
                } else if fi.total() > 0 && (fi.total() + ok_indexes.total()) as i32 >= p.completions() {
                    finished = Some(js::condition("FailureTarget", "True", js::REASON_FAILED_INDEXES, "Job has failed indexes", now));
                }
            }
            failed_indexes = Some(fi);
        }
        if finished.is_none() {
            if let Some(msg) = js::match_success_policy(p.spec.success_policy.as_ref(), p.completions(), &ok_indexes) {
                finished = Some(js::condition("SuccessCriteriaMet", "True", js::REASON_SUCCESS_POLICY, &msg, now));
            }
        }
    }

    let mut active = active_pods.len() as i32;
    let mut manage_err = None;
    let mut suspend_changed = false;
    if finished.is_some() {
        // Stop whatever still runs; the finalizers go below.
        let (deleted, deleted_ready) = job_pods::delete_pods(ctx, &p.job, &active_pods, false).await;
        active -= deleted;
        terminating += deleted;
        ready -= deleted_ready;
    } else {
        if p.job.metadata.deletion_timestamp.is_none() {
            let counts = job_pods::Counts { succeeded, failed_indexes: failed_indexes.as_ref().map_or(0, |f| f.total() as i32), terminating };
            match job_pods::manage(ctx, &p, &active_pods, &ok_indexes, failed_indexes.as_ref(), counts, &record, ctx.settled(&uid)).await {
                Ok((a, again)) => {
                    active = a;
                    requeue = min_some(requeue, again);
                }
                Err(e) => manage_err = Some(e),
            }
        }
        let complete = match p.spec.completions {
            None => succeeded > 0 && active == 0,
            Some(c) => succeeded >= c && active == 0,
        };
        if complete {
            finished = Some(js::condition("SuccessCriteriaMet", "True", js::REASON_COMPLETIONS_REACHED, "Reached expected number of succeeded pods", now));
        } else if p.job.metadata.deletion_timestamp.is_none() {
            let (st, reason, message, event) = if suspended { ("True", "JobSuspended", "Job suspended", "Suspended") } else { ("False", "JobResumed", "Job resumed", "Resumed") };
            // A Job that was never suspended has no Suspended condition to flip.
            if (suspended || js::find(&conditions, "Suspended").is_some()) && js::ensure(&mut conditions, js::condition("Suspended", st, reason, message, now)) {
                suspend_changed = true;
                workload::record(&ctx.client, COMPONENT, &p.job, "Normal", event, message.into()).await;
                if !suspended {
                    // activeDeadlineSeconds counts time while not suspended.
                    status.start_time = Some(Time(now));
                }
            }
        }
    }

    // Count finished pods: uncounted first, then finalizers off, then counters.
    let mut unc = UncountedSets { ok: uncounted.succeeded.unwrap_or_default(), failed: uncounted.failed.unwrap_or_default() };
    let mut release = Vec::new();
    let mut new_indexes = Vec::new();
    let deleting = p.job.metadata.deletion_timestamp.is_some();
    let failing = finished.as_ref().is_some_and(|c| c.type_ == "FailureTarget");
    for pod in p.pods.iter().filter(|x| p.has_finalizer(x)) {
        let considered_failed = p.is_failed(pod);
        if !(deleting || finished.is_some() || pod_phase(pod) == "Succeeded" || considered_failed) {
            continue;
        }
        release.push(pod.clone());
        let pod_uid = uid_of(pod);
        if pod_phase(pod) == "Succeeded" && !unc.failed.contains(&pod_uid) {
            match p.indexed() {
                true => new_indexes.extend(p.valid_index(pod).filter(|i| !prev_ok_indexes.has(*i))),
                false if !unc.ok.contains(&pod_uid) => unc.ok.push(pod_uid),
                false => {}
            }
        } else if (considered_failed || failing) && !unc.failed.contains(&pod_uid) && (!p.indexed() || p.valid_index(pod).is_some()) && p.policy(pod).count_failed {
            unc.failed.push(pod_uid);
        }
        if new_indexes.len() + unc.ok.len() + unc.failed.len() >= js::MAX_UNCOUNTED_PODS {
            break;
        }
    }
    let capped = new_indexes.len() + unc.ok.len() + unc.failed.len() >= js::MAX_UNCOUNTED_PODS;
    if p.indexed() {
        status.completed_indexes = Some(ok_indexes.to_string());
        status.succeeded = Some(ok_indexes.total() as i32);
        status.failed_indexes = failed_indexes.map(|f| f.to_string());
    }
    // The interim condition goes out with the first write; the terminal one once every pod is let go.
    let mut terminal = None;
    if let Some(c) = finished.take() {
        if js::find(&conditions, &c.type_).is_none() {
            conditions.push(c.clone());
        }
        let final_type = if c.type_ == "FailureTarget" { "Failed" } else { "Complete" };
        terminal = Some(js::condition(final_type, "True", c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or(""), now));
    }
    status.active = Some(active);
    status.ready = Some(ready);
    status.terminating = Some(terminating);
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.uncounted_terminated_pods = Some(unc.to_api());
    normalize(&mut status);
    let before = p.job.status.clone().unwrap_or_default();
    if before != status || suspend_changed {
        p.job.status = Some(status);
        p.job = write_status(api, &p.job).await?;
    }
    ctx.backoff.lock().unwrap().insert(uid.clone(), record);
    let removed = job_pods::remove_finalizers(ctx, &uid, &release).await;
    for r in &removed {
        p.tracked.remove(r);
    }
    let mut status = p.job.status.clone().unwrap_or_default();
    let mut unc = UncountedSets::from(status.uncounted_terminated_pods.clone().unwrap_or_default());
    let (ok_moved, failed_moved) = unc.count_released(&p.tracked);
    status.succeeded = Some(status.succeeded.unwrap_or(0) + if p.indexed() { 0 } else { ok_moved });
    status.failed = Some(status.failed.unwrap_or(0) + failed_moved);
    status.uncounted_terminated_pods = Some(unc.to_api());
    let mut event = None;
    if let Some(t) = terminal.filter(|_| !capped && unc.is_empty() && status.terminating.unwrap_or(0) == 0) {
        let mut cs = status.conditions.clone().unwrap_or_default();
        if t.type_ == "Complete" {
            status.completion_time = Some(Time(now));
            event = Some(("Normal".to_string(), "Completed".to_string(), "Job completed".to_string()));
        } else {
            event = Some(("Warning".into(), t.reason.clone().unwrap_or_default(), t.message.clone().unwrap_or_default()));
        }
        // A finished Job is no longer suspended.
        if let Some(s) = cs.iter_mut().find(|c| c.type_ == "Suspended" && c.status == "True") {
            *s = js::condition("Suspended", "False", "JobResumed", "Job resumed", now);
        }
        cs.push(t);
        status.conditions = Some(cs);
    }
    normalize(&mut status);
    if p.job.status.as_ref() != Some(&status) {
        p.job.status = Some(status);
        write_status(api, &p.job).await?;
    }
    if let Some((type_, reason, message)) = event {
        workload::record(&ctx.client, COMPONENT, &p.job, &type_, &reason, message).await;
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d.max(Duration::from_millis(100))),
        None => Action::await_change(),
    })
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Upstream's getFailJobMessage: the first failed, still tracked pod a FailJob rule matches.
fn fail_job_message(p: &Pass) -> Option<String> {
    p.spec.pod_failure_policy.as_ref()?;
    p.pods.iter().filter(|x| p.has_finalizer(x) && pod_phase(x) == "Failed").find_map(|x| p.policy(x).fail_job_message)
}

/// restartPolicy OnFailure: container restarts in running pods count toward backoffLimit.
fn past_backoff_limit_on_failure(p: &Pass, active: &[Arc<Pod>], limit: i32) -> bool {
    if p.spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter(|x| matches!(pod_phase(x), "Running" | "Pending"))
        .flat_map(|x| x.status.iter().flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())))
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Zero counters and an empty completedIndexes are left out, as upstream
/// writes them (omitempty), so a status read back compares equal.
fn normalize(status: &mut k8s_openapi::api::batch::v1::JobStatus) {
    for n in [&mut status.active, &mut status.succeeded, &mut status.failed] {
        if *n == Some(0) {
            *n = None;
        }
    }
    if status.completed_indexes.as_deref() == Some("") {
        status.completed_indexes = None;
    }
}

async fn write_status(api: &Api<Job>, job: &Job) -> Result<Job> {
    let body = serde_json::to_vec(job).map_err(|e| workload::Error(e.to_string()))?;
    match api.replace_status(&job.name_any(), &PostParams::default(), body).await {
        Ok(j) => Ok(j),
        // Someone changed the Job: the next pass starts from the new copy.
        Err(e) if is_status(&e, &[404, 409]) => Err(workload::Error(format!("job status: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// `status.uncountedTerminatedPods` as lists we edit.
struct UncountedSets {
    ok: Vec<String>,
    failed: Vec<String>,
}

impl From<UncountedTerminatedPods> for UncountedSets {
    fn from(u: UncountedTerminatedPods) -> Self {
        UncountedSets { ok: u.succeeded.unwrap_or_default(), failed: u.failed.unwrap_or_default() }
    }
}

impl UncountedSets {
    fn is_empty(&self) -> bool {
        self.ok.is_empty() && self.failed.is_empty()
    }
    /// Moves out the uids no longer held by the finalizer; returns how many of each.
    fn count_released(&mut self, tracked: &HashSet<String>) -> (i32, i32) {
        let (ok, failed) = (self.ok.len(), self.failed.len());
        self.ok.retain(|u| tracked.contains(u));
        self.failed.retain(|u| tracked.contains(u));
        ((ok - self.ok.len()) as i32, (failed - self.failed.len()) as i32)
    }
    /// Empty lists are left out, as upstream writes them (`{}`).
    fn to_api(&self) -> UncountedTerminatedPods {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        UncountedTerminatedPods { succeeded: list(&self.ok), failed: list(&self.failed) }
    }
}

/// Indexes taken by a pod that still runs (or, when only failed pods are replaced, still terminates).
pub(crate) fn taken_indexes(p: &Pass, active: &[Arc<Pod>]) -> BTreeSet<i32> {
    let mut taken: BTreeSet<i32> = active.iter().filter_map(|x| p.valid_index(x)).collect();
    if p.only_replace_failed() {
        taken.extend(p.pods.iter().filter(|x| x.metadata.deletion_timestamp.is_some() && !matches!(pod_phase(x), "Succeeded" | "Failed")).filter_map(|x| p.valid_index(x)));
    }
    taken
}

impl Ctx {
    pub(crate) fn note_uncounted(&self, job_uid: &str, pod_uids: &[String]) {
        self.uncounting.lock().unwrap().entry(job_uid.to_string()).or_default().extend(pod_uids.iter().cloned());
    }
    pub(crate) fn owned(&self, job_uid: &str) -> Vec<Arc<Pod>> {
        self.by_controller.controlled_by(job_uid).into_iter().filter_map(|r| self.pods.get(&r)).collect()
    }
    pub(crate) fn orphans(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.by_controller.orphans_in(ns).into_iter().filter_map(|r| self.pods.get(&r)).collect()
    }
}
