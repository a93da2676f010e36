//! TTL-after-finished controller: deletes a finished Job (Complete or
//! Failed) `spec.ttlSecondsAfterFinished` seconds after it finished, with
//! background propagation so its pods go too, as upstream's.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};

use crate::workload::{is_status, Result};

/// When the Job may be deleted: the finish time (the terminal condition's
/// transition) plus the TTL. None while it runs, has no TTL, or is being deleted.
pub fn expires_at(job: &Job) -> Option<DateTime<Utc>> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let conditions = job.status.as_ref()?.conditions.as_deref()?;
    let done = conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let finished = done.last_transition_time.as_ref().map(|t| t.0).or_else(|| job.status.as_ref()?.completion_time.as_ref().map(|t| t.0))?;
    Some(finished + chrono::Duration::seconds(ttl as i64))
}

/// How long until the Job expires; zero once it has.
pub fn time_left(job: &Job, now: DateTime<Utc>) -> Option<Duration> {
    expires_at(job).map(|at| (at - now).to_std().unwrap_or_default())
}

pub async fn run(client: Client) {
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(5)), Arc::new(client))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("ttl-after-finished controller: {e}");
            }
        })
        .await
}

async fn reconcile(job: Arc<Job>, client: Arc<Client>) -> Result<Action> {
    let Some(left) = time_left(&job, Utc::now()) else { return Ok(Action::await_change()) };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    // The cached copy may be stale (a TTL just raised): decide on a fresh one.
    let api: Api<Job> = Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
    let Some(fresh) = api.get_opt(&job.name_any()).await? else { return Ok(Action::await_change()) };
    match time_left(&fresh, Utc::now()) {
        Some(left) if left.is_zero() => {}
        Some(left) => return Ok(Action::requeue(left)),
        None => return Ok(Action::await_change()),
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: fresh.metadata.uid.clone(), resource_version: fresh.metadata.resource_version.clone() }),
        ..DeleteParams::background()
    };
    match api.delete(&fresh.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_status(&e, &[404]) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_status as js;
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};

    fn job(ttl: Option<i32>, finished_at: Option<DateTime<Utc>>) -> Job {
        Job {
            spec: Some(JobSpec { ttl_seconds_after_finished: ttl, ..Default::default() }),
            status: Some(JobStatus {
                conditions: finished_at.map(|t| vec![js::condition("Complete", "True", js::REASON_COMPLETIONS_REACHED, "", t)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_counts_from_the_finish() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(time_left(&job(Some(30), Some(t0)), t0 + chrono::Duration::seconds(10)), Some(Duration::from_secs(20)));
        assert_eq!(time_left(&job(Some(30), Some(t0)), t0 + chrono::Duration::seconds(40)), Some(Duration::ZERO));
        assert_eq!(time_left(&job(Some(0), Some(t0)), t0), Some(Duration::ZERO));
        assert_eq!(time_left(&job(None, Some(t0)), t0), None);
        assert_eq!(time_left(&job(Some(30), None), t0), None);
    }
}
