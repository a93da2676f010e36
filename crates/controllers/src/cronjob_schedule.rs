//! The CronJob controller's time arithmetic, as upstream's cronjob utils:
//! which scheduled time (if any) is due now, how many were missed, when to
//! look again, the Job's name for a scheduled time, and which finished Jobs
//! fall out of the history. Time is passed in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use resources::validation::cron::Schedule;

/// Past this many missed start times the controller says so (upstream's limit for its warning).
pub const MAX_MISSED_SCHEDULES_REPORTED: i64 = 100;
/// Upstream's nextScheduleDelta: look again a little after the activation time.
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What `most_recent` found.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    /// The time scheduling is reckoned from (last schedule, creation, or the starting deadline).
    pub earliest: DateTime<Utc>,
    /// The latest activation time at or before now, if any was missed since `earliest`.
    pub most_recent: Option<DateTime<Utc>>,
    pub missed: i64,
}

/// Upstream's mostRecentScheduleTime: the latest unmet activation time and
/// how many there were since the last schedule (or creation), counting only
/// those within `startingDeadlineSeconds` when asked to.
pub fn most_recent(
    schedule: &Schedule,
    zone: Tz,
    created: DateTime<Utc>,
    last_schedule: Option<DateTime<Utc>>,
    starting_deadline_seconds: Option<i64>,
    now: DateTime<Utc>,
) -> Due {
    let mut earliest = last_schedule.unwrap_or(created);
    if let Some(sds) = starting_deadline_seconds {
        let deadline = now - chrono::Duration::seconds(sds);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let none = Due { earliest, most_recent: None, missed: 0 };
    let Some(t1) = schedule.next(earliest, zone) else { return none };
    if now < t1 {
        return none;
    }
    let Some(t2) = schedule.next(t1, zone) else { return Due { earliest, most_recent: Some(t1), missed: 1 } };
    if now < t2 {
        return Due { earliest, most_recent: Some(t1), missed: 1 };
    }
    // Many missed: estimate from the interval, then walk to the exact latest one.
    let interval = (t2 - t1).num_seconds().max(1);
    let missed = (now - t1).num_seconds() / interval + 1;
    let mut latest = t1 + chrono::Duration::seconds((missed - 1) * interval);
    if latest > now {
        latest = t1;
    }
    let mut steps = 0;
    while let Some(t) = schedule.next(latest, zone) {
        if t > now || steps > 1_000_000 {
            break;
        }
        latest = t;
        steps += 1;
    }
    Due { earliest, most_recent: Some(latest), missed }
}

/// Upstream's nextScheduleTimeDuration: how long until the next activation
/// after the most recent one (plus a small delta); None when there is none.
pub fn until_next(
    schedule: &Schedule,
    zone: Tz,
    created: DateTime<Utc>,
    last_schedule: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let due = most_recent(schedule, zone, created, last_schedule, None, now);
    let from = due.most_recent.unwrap_or(due.earliest);
    let next = schedule.next(from, zone)?;
    Some((next - now).to_std().unwrap_or_default() + NEXT_SCHEDULE_DELTA)
}

/// True when the scheduled time is further back than startingDeadlineSeconds allows.
pub fn too_late(scheduled: DateTime<Utc>, starting_deadline_seconds: Option<i64>, now: DateTime<Utc>) -> bool {
    starting_deadline_seconds.is_some_and(|s| scheduled + chrono::Duration::seconds(s) < now)
}

/// Upstream's getJobName: the CronJob's name and the scheduled time in minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", scheduled.timestamp().div_euclid(60))
}

/// The scheduled-timestamp annotation: RFC 3339 in the CronJob's zone.
pub fn scheduled_timestamp(scheduled: DateTime<Utc>, zone: Tz) -> String {
    scheduled.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Which finished Jobs to delete to keep `limit` of them: the oldest by
/// start time (Jobs never started count as oldest), as upstream removeOldestJobs.
pub fn beyond_history<T: Clone>(mut jobs: Vec<(Option<DateTime<Utc>>, String, T)>, limit: i32) -> Vec<T> {
    let limit = limit.max(0) as usize;
    if jobs.len() <= limit {
        return Vec::new();
    }
    jobs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let n = jobs.len() - limit;
    jobs.into_iter().take(n).map(|(_, _, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use resources::validation::cron::parse_standard;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_times_and_missed_counts() {
        let every_min = parse_standard("* * * * *").unwrap();
        let created = t("2024-01-01T10:00:30Z");
        let due = |last: Option<&str>, sds: Option<i64>, now: &str| most_recent(&every_min, Tz::UTC, created, last.map(t), sds, t(now));
        assert_eq!(due(None, None, "2024-01-01T10:00:50Z").most_recent, None);
        let d = due(None, None, "2024-01-01T10:01:05Z");
        assert_eq!((d.most_recent, d.missed), (Some(t("2024-01-01T10:01:00Z")), 1));
        // Three hours down: 180 missed, the latest one is due.
        let d = due(Some("2024-01-01T10:01:00Z"), None, "2024-01-01T13:01:10Z");
        assert_eq!((d.most_recent, d.missed), (Some(t("2024-01-01T13:01:00Z")), 180));
        assert!(d.missed > MAX_MISSED_SCHEDULES_REPORTED);
        // A starting deadline only looks that far back.
        let d = due(Some("2024-01-01T10:01:00Z"), Some(200), "2024-01-01T13:01:10Z");
        assert_eq!((d.most_recent, d.missed), (Some(t("2024-01-01T13:01:00Z")), 4));
        assert!(too_late(t("2024-01-01T13:00:00Z"), Some(30), t("2024-01-01T13:01:10Z")));
        assert!(!too_late(t("2024-01-01T13:01:00Z"), Some(30), t("2024-01-01T13:01:10Z")));
        assert!(!too_late(t("2024-01-01T10:00:00Z"), None, t("2024-01-01T13:01:10Z")));
    }

    #[test]
    fn next_look_names_and_history() {
        let hourly = parse_standard("0 * * * *").unwrap();
        let wait = until_next(&hourly, Tz::UTC, t("2024-01-01T10:00:30Z"), None, t("2024-01-01T10:30:00Z")).unwrap();
        assert_eq!(wait, Duration::from_secs(1800) + NEXT_SCHEDULE_DELTA);
        assert_eq!(job_name("hello", t("2024-01-01T10:01:00Z")), "hello-28401721");
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(scheduled_timestamp(t("2024-01-01T10:01:00Z"), tokyo), "2024-01-01T19:01:00+09:00");
        assert_eq!(scheduled_timestamp(t("2024-01-01T10:01:00Z"), Tz::UTC), "2024-01-01T10:01:00Z");
        let jobs = vec![(Some(t("2024-01-01T10:03:00Z")), "c".to_string(), 3), (None, "z".into(), 0), (Some(t("2024-01-01T10:01:00Z")), "a".into(), 1)];
        assert_eq!(beyond_history(jobs.clone(), 1), [0, 1]);
        assert_eq!(beyond_history(jobs.clone(), 3), Vec::<i32>::new());
        assert_eq!(beyond_history(jobs, 0), [0, 1, 3]);
    }
}
