//! CronJob controller: creates a Job for each activation time of the
//! schedule (in `spec.timeZone`), as upstream's cronjob controller v2 —
//! concurrencyPolicy Allow/Forbid/Replace, startingDeadlineSeconds, missed
//! activations (only the latest one runs), suspend — keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, and deletes finished Jobs
//! beyond the history limits. Time arithmetic is in cronjob_schedule.rs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use resources::validation::cron;

use crate::cronjob_schedule as sched;
use crate::job_status as js;
use crate::workload::{self, controller_of, controller_ref, is_status, Result};

pub const COMPONENT: &str = "cronjob-controller";

struct Ctx {
    client: Client,
    jobs: Store<Job>,
}

pub async fn run(client: Client) {
    let (jobs, touched) = client::informer::watch(Api::<Job>::all(client.clone()), watcher::Config::default());
    let controller = Controller::new(Api::<CronJob>::all(client.clone()), watcher::Config::default());
    controller
        .watches_shared_stream(touched, |job: Arc<Job>| {
            let ns = job.namespace().unwrap_or_default();
            controller_of(job.as_ref()).filter(|r| r.kind == "CronJob").map(|r| ObjectRef::new(&r.name).within(&ns)).into_iter().collect::<Vec<_>>()
        })
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(5)), Arc::new(Ctx { client, jobs }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("cronjob controller: {e}");
            }
        })
        .await
}

fn job_finished(job: &Job) -> Option<&'static str> {
    let cs = job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    if js::is_true(cs, "Complete") {
        Some("Complete")
    } else if js::is_true(cs, "Failed") {
        Some("Failed")
    } else {
        None
    }
}

async fn reconcile(obj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    // Counting Jobs from a store still being filled would start them again.
    if ctx.jobs.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(mut cj) = api.get_opt(&obj.name_any()).await? else { return Ok(Action::await_change()) };
    let uid = cj.uid().unwrap_or_default();
    let now = Utc::now();
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()) && controller_of(j.as_ref()).is_some_and(|r| r.uid == uid))
        .collect();
    let before = cj.status.clone();
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active = status.active.clone().unwrap_or_default();
    let mut events: Vec<(&str, &str, String)> = Vec::new();
    for j in &jobs {
        let found = active.iter().any(|r| r.uid == j.metadata.uid);
        let finished = job_finished(j);
        match finished {
            None if !found => events.push(("Warning", "UnexpectedJob", format!("Saw a job that the controller did not create or forgot: {}", j.name_any()))),
            Some(c) if found => {
                active.retain(|r| r.uid != j.metadata.uid);
                events.push(("Normal", "SawCompletedJob", format!("Saw completed job: {}, condition: {c}", j.name_any())));
            }
            _ => {}
        }
        if finished == Some("Complete") {
            let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
            if done.is_some() && status.last_successful_time.as_ref().is_none_or(|t| done.as_ref().is_some_and(|d| d.0 > t.0)) {
                status.last_successful_time = done;
            }
        }
    }
    // Active Jobs we no longer see: gone, or replaced by another of the same name.
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut kept = Vec::new();
    for r in active {
        if jobs.iter().any(|j| j.metadata.uid == r.uid) {
            kept.push(r);
            continue;
        }
        match jobs_api.get_opt(r.name.as_deref().unwrap_or_default()).await? {
            Some(j) if j.metadata.uid == r.uid => kept.push(r),
            _ => events.push(("Normal", "MissingJob", format!("Active job went missing: {}", r.name.as_deref().unwrap_or_default()))),
        }
    }
    let mut active = kept;
    let spec = cj.spec.clone().unwrap_or_default();
    let action = if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        Action::await_change()
    } else {
        schedule(&cj, &jobs_api, &mut active, &mut status, &mut events, now).await?
    };
    status.active = (!active.is_empty()).then_some(active);
    for (t, r, m) in events.drain(..) {
        workload::record(&ctx.client, COMPONENT, &cj, t, r, m).await;
    }
    if before.as_ref() != Some(&status) && !(before.is_none() && status == Default::default()) {
        cj.status = Some(status);
        let body = serde_json::to_vec(&cj).map_err(|e| workload::Error(e.to_string()))?;
        match api.replace_status(&cj.name_any(), &PostParams::default(), body).await {
            Ok(_) => {}
            Err(e) if is_status(&e, &[404]) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    cleanup_history(&ctx, &cj, &jobs_api, &jobs).await;
    Ok(action)
}

/// Starts the Job due now, if one is; returns when to look again.
async fn schedule(
    cj: &CronJob,
    jobs_api: &Api<Job>,
    active: &mut Vec<ObjectReference>,
    status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    events: &mut Vec<(&'static str, &'static str, String)>,
    now: DateTime<Utc>,
) -> Result<Action> {
    let spec = cj.spec.clone().unwrap_or_default();
    let zone = match spec.time_zone.as_deref() {
        None => cron::local_zone(),
        Some(tz) => match cron::zone(tz) {
            Some(z) => z,
            None => {
                events.push(("Warning", "UnknownTimeZone", format!("invalid timeZone: {tz:?}: unknown time zone {tz}")));
                return Ok(Action::await_change());
            }
        },
    };
    let schedule = match cron::parse_standard(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            events.push(("Warning", "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule)));
            return Ok(Action::await_change());
        }
    };
    let created = workload::creation(&cj.metadata);
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    let look_again = |last: Option<DateTime<Utc>>| match sched::until_next(&schedule, zone, created, last, now) {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    };
    let due = sched::most_recent(&schedule, zone, created, last, spec.starting_deadline_seconds, now);
    if due.missed > sched::MAX_MISSED_SCHEDULES_REPORTED {
        events.push((
            "Warning",
            "TooManyMissedTimes",
            format!("too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew", due.missed),
        ));
    }
    let Some(scheduled) = due.most_recent else { return Ok(look_again(last)) };
    if sched::too_late(scheduled, spec.starting_deadline_seconds, now) {
        events.push(("Warning", "MissSchedule", format!("Missed scheduled time to start a job: {}", scheduled.to_rfc2822())));
        return Ok(look_again(last));
    }
    let name = sched::job_name(&cj.name_any(), scheduled);
    if active.iter().any(|r| r.name.as_deref() == Some(name.as_str())) || last == Some(scheduled) {
        return Ok(look_again(last));
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            events.push(("Normal", "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into()));
            return Ok(look_again(last));
        }
        Some("Replace") => {
            for r in std::mem::take(active) {
                let job_name = r.name.clone().unwrap_or_default();
                let dp = DeleteParams { preconditions: r.uid.clone().map(|u| kube::api::Preconditions { uid: Some(u), resource_version: None }), ..DeleteParams::background() };
                match jobs_api.delete(&job_name, &dp).await {
                    Ok(_) => events.push(("Normal", "SuccessfulDelete", format!("Deleted job {job_name}"))),
                    Err(e) if is_status(&e, &[404, 409]) => {}
                    Err(e) => {
                        active.push(r);
                        events.push(("Warning", "FailedDelete", format!("Deleted job: {e}")));
                        return Err(e.into());
                    }
                }
            }
        }
        _ => {}
    }
    let template = spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(sched::SCHEDULED_TIMESTAMP.into(), sched::scheduled_timestamp(scheduled, zone));
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            events.push(("Normal", "SuccessfulCreate", format!("Created job {name}")));
            active.push(ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(name),
                namespace: created.namespace(),
                uid: created.metadata.uid.clone(),
                resource_version: created.metadata.resource_version.clone(),
                ..Default::default()
            });
            status.last_schedule_time = Some(Time(scheduled));
            Ok(look_again(Some(scheduled)))
        }
        // Made by someone else (or by us, before a lost status write): not ours to start again.
        Err(e) if is_status(&e, &[409]) => Ok(look_again(last)),
        Err(e) => {
            events.push(("Warning", "FailedCreate", format!("Error creating job: {e}")));
            Err(e.into())
        }
    }
}

/// Deletes the oldest finished Jobs beyond successfulJobsHistoryLimit and failedJobsHistoryLimit.
async fn cleanup_history(ctx: &Ctx, cj: &CronJob, jobs_api: &Api<Job>, jobs: &[Arc<Job>]) {
    let spec = cj.spec.clone().unwrap_or_default();
    let entry = |j: &Arc<Job>| (j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0), j.name_any(), j.clone());
    let live = |j: &&Arc<Job>| j.metadata.deletion_timestamp.is_none();
    let mut doomed = Vec::new();
    for (kind, limit) in [("Complete", spec.successful_jobs_history_limit), ("Failed", spec.failed_jobs_history_limit)] {
        if let Some(limit) = limit {
            let finished = jobs.iter().filter(live).filter(|j| job_finished(j) == Some(kind)).map(entry).collect();
            doomed.extend(sched::beyond_history(finished, limit));
        }
    }
    for j in doomed {
        let dp = DeleteParams::background();
        match jobs_api.delete(&j.name_any(), &dp).await {
            Ok(_) => workload::record(&ctx.client, COMPONENT, cj, "Normal", "SuccessfulDelete", format!("Deleted job {}", j.name_any())).await,
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => tracing::debug!("deleting job {}: {e}", j.name_any()),
        }
    }
}
