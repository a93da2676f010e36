//! The Job controller's decisions that need no API: completion index sets
//! in upstream's interval form, pod failure and success policies, the pod
//! failure back-off, and the conditions with upstream's reasons. Time is
//! passed in, so every rule here is tested without a cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{JobCondition, PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Upstream's DefaultJobPodFailureBackOff: the delay after the first failure, doubled for each further one.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's MaxJobPodFailureBackOff (the code's cap; the docs' "six minutes" is the last step below it).
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Upstream's MaxUncountedPods: uids held in `status.uncountedTerminatedPods` at once.
pub const MAX_UNCOUNTED_PODS: usize = 500;
/// Upstream's MaxPodCreateDeletePerSync.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

pub const REASON_BACKOFF_LIMIT: &str = "BackoffLimitExceeded";
pub const REASON_DEADLINE: &str = "DeadlineExceeded";
pub const REASON_POD_FAILURE_POLICY: &str = "PodFailurePolicy";
pub const REASON_MAX_FAILED_INDEXES: &str = "MaxFailedIndexesExceeded";
pub const REASON_FAILED_INDEXES: &str = "FailedIndexes";
pub const REASON_SUCCESS_POLICY: &str = "SuccessPolicy";
pub const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";

/// A set of completion indexes, written as upstream does: "0,2-4,7".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Indexes(pub BTreeSet<i32>);

impl Indexes {
    /// Parses the interval form, keeping only indexes below `completions`;
    /// malformed parts are skipped (the API server wrote them, or a user did).
    pub fn parse(s: &str, completions: i32) -> Indexes {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            if let (Ok(lo), Ok(hi)) = (lo, hi) {
                set.extend((lo.max(0)..=hi.min(completions - 1)).filter(|i| *i >= lo));
            }
        }
        Indexes(set)
    }

    pub fn total(&self) -> usize {
        self.0.len()
    }

    pub fn has(&self, i: i32) -> bool {
        self.0.contains(&i)
    }
}

impl std::fmt::Display for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().unwrap_or(end);
            }
            parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        }
        f.write_str(&parts.join(","))
    }
}

/// A pod's completion index from its annotation (or label); None when missing or malformed.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let from = |m: &Option<std::collections::BTreeMap<String, String>>| m.as_ref()?.get(COMPLETION_INDEX)?.parse::<i32>().ok();
    from(&pod.metadata.annotations).or_else(|| from(&pod.metadata.labels)).filter(|i| *i >= 0)
}

pub fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What a pod failure policy rule says about a failed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMatch {
    /// The rule's action (FailJob, FailIndex, Ignore, Count), None when no rule matched.
    pub action: Option<String>,
    /// Whether the failure counts toward backoffLimit (and backoffLimitPerIndex).
    pub count_failed: bool,
    /// For FailJob: the Failed condition's message.
    pub fail_job_message: Option<String>,
}

/// Upstream's matchPodFailurePolicy: the first rule matching the pod's
/// non-zero container exit codes, or one of its conditions, decides.
pub fn match_pod_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> PolicyMatch {
    let status = pod.status.clone().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let containers: Vec<_> = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten()).collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            for c in &containers {
                if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                    continue;
                }
                let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code).filter(|c| *c != 0) else { continue };
                let listed = req.values.contains(&code);
                if (req.operator == "In" && listed) || (req.operator == "NotIn" && !listed) {
                    matched = Some(format!("Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}", c.name, rule.action));
                    break;
                }
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            if matched.is_some() {
                break;
            }
            if status.conditions.iter().flatten().any(|c| c.type_ == pattern.type_ && c.status == pattern.status) {
                matched = Some(format!("Pod {ns}/{name} has condition {} matching {} rule at index {i}", pattern.type_, rule.action));
            }
        }
        if let Some(message) = matched {
            let action = Some(rule.action.clone());
            return match rule.action.as_str() {
                "FailJob" => PolicyMatch { action, count_failed: true, fail_job_message: Some(message) },
                "Ignore" => PolicyMatch { action, count_failed: false, fail_job_message: None },
                // Count, FailIndex and actions this version does not know count as a failure.
                _ => PolicyMatch { action, count_failed: true, fail_job_message: None },
            };
        }
    }
    PolicyMatch { action: None, count_failed: true, fail_job_message: None }
}

/// Upstream's matchSuccessPolicy: the message of the first rule the
/// succeeded indexes satisfy.
pub fn match_success_policy(policy: Option<&SuccessPolicy>, completions: i32, succeeded: &Indexes) -> Option<String> {
    for (i, rule) in policy?.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(ix), count) => {
                let wanted = Indexes::parse(ix, completions);
                let have = wanted.0.iter().filter(|i| succeeded.has(**i)).count();
                match count {
                    Some(c) => have >= c.max(0) as usize,
                    None => have == wanted.total(),
                }
            }
            (None, Some(c)) => succeeded.total() >= c.max(0) as usize,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// Failures since the last success, and when the latest of them happened
/// (upstream's backoffRecord).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackoffRecord {
    pub failures_after_last_success: u32,
    pub last_failure: Option<DateTime<Utc>>,
}

impl BackoffRecord {
    /// The record once newly finished pods (their finish times) are counted:
    /// a success after the last failure clears it.
    pub fn next(&self, succeeded: &[DateTime<Utc>], failed: &[DateTime<Utc>]) -> BackoffRecord {
        match succeeded.iter().max() {
            None if failed.is_empty() => *self,
            None => BackoffRecord {
                failures_after_last_success: self.failures_after_last_success + failed.len() as u32,
                last_failure: failed.iter().copied().chain(self.last_failure).max(),
            },
            Some(last_ok) => {
                let after: Vec<_> = failed.iter().filter(|t| *t > last_ok).copied().collect();
                BackoffRecord { failures_after_last_success: after.len() as u32, last_failure: after.into_iter().max() }
            }
        }
    }

    /// How long to wait before creating a replacement pod: 10 s after the
    /// first failure, doubling per failure, capped.
    pub fn remaining(&self, now: DateTime<Utc>) -> Duration {
        let (n, Some(last)) = (self.failures_after_last_success, self.last_failure) else { return Duration::ZERO };
        if n == 0 {
            return Duration::ZERO;
        }
        let backoff = DEFAULT_POD_FAILURE_BACKOFF.saturating_mul(1u32 << (n - 1).min(20)).min(MAX_POD_FAILURE_BACKOFF);
        let elapsed = (now - last).to_std().unwrap_or_default();
        backoff.saturating_sub(elapsed)
    }
}

/// When a finished pod finished: its last container's end, else its deletion, else `now`.
pub fn finish_time(pod: &Pod, now: DateTime<Utc>) -> DateTime<Utc> {
    let status = pod.status.as_ref();
    let ends = status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0));
    ends.max().or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0)).unwrap_or(now)
}

/// Upstream's pastActiveDeadline.
pub fn past_active_deadline(start: Option<DateTime<Utc>>, deadline_seconds: Option<i64>, now: DateTime<Utc>) -> bool {
    match (start, deadline_seconds) {
        (Some(start), Some(secs)) => now - start >= chrono::Duration::seconds(secs),
        _ => false,
    }
}

/// Time left before the active deadline, to look at the Job again then.
pub fn until_deadline(start: Option<DateTime<Utc>>, deadline_seconds: Option<i64>, now: DateTime<Utc>) -> Option<Duration> {
    let end = start? + chrono::Duration::seconds(deadline_seconds?);
    (end - now).to_std().ok()
}

/// How many pods should be running (upstream manageJob's wantActive).
pub fn want_active(suspended: bool, parallelism: i32, completions: Option<i32>, succeeded: i32, failed_indexes: i32, active: i32) -> i32 {
    if suspended {
        return 0;
    }
    match completions {
        // A work queue: once one pod succeeded, start no more.
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded - failed_indexes).clamp(0, parallelism.max(0)),
    }
}

/// The first `n` indexes below `completions` that are neither done, failed nor taken.
pub fn indexes_to_start(completions: i32, n: usize, succeeded: &Indexes, failed: &Indexes, taken: &BTreeSet<i32>) -> Vec<i32> {
    (0..completions).filter(|i| !succeeded.has(*i) && !failed.has(*i) && !taken.contains(i)).take(n).collect()
}

pub fn condition(type_: &str, status: &str, reason: &str, message: &str, now: DateTime<Utc>) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn find<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[JobCondition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Finished: Complete or Failed is True (upstream IsJobFinished).
pub fn finished(conditions: &[JobCondition]) -> bool {
    is_true(conditions, "Complete") || is_true(conditions, "Failed")
}

/// Upstream's ensureJobConditionStatus: adds or flips a condition; true when it changed.
pub fn ensure(conditions: &mut Vec<JobCondition>, c: JobCondition) -> bool {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) if x.status == c.status => false,
        Some(x) => {
            *x = c;
            true
        }
        None => {
            conditions.push(c);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicyRule};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn indexes_round_trip_in_interval_form() {
        let ix = Indexes::parse("0,2-4,7, 9-8,x,12", 10);
        assert_eq!(ix.0.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(ix.to_string(), "0,2-4,7");
        assert_eq!(Indexes::default().to_string(), "");
        assert_eq!(Indexes((0..5).collect()).to_string(), "0-4");
    }

    fn failed_pod(exit: i32, conditions: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some("p".into()), namespace: Some("ns".into()), ..Default::default() },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState { terminated: Some(ContainerStateTerminated { exit_code: exit, ..Default::default() }), ..Default::default() }),
                    ..Default::default()
                }]),
                conditions: Some(conditions.iter().map(|(t, s)| PodCondition { type_: t.to_string(), status: s.to_string(), ..Default::default() }).collect()),
                ..Default::default()
            }),
        }
    }

    fn rule(action: &str, op: &str, values: &[i32]) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement { container_name: None, operator: op.into(), values: values.to_vec() }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn pod_failure_policy_first_matching_rule_decides() {
        let policy = PodFailurePolicy {
            rules: vec![
                rule("Ignore", "In", &[3]),
                rule("FailJob", "In", &[42]),
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern { type_: "DisruptionTarget".into(), status: "True".into() }]),
                },
                rule("Count", "NotIn", &[1]),
            ],
        };
        let ignored = match_pod_failure_policy(&policy, &failed_pod(3, &[]));
        assert_eq!((ignored.action.as_deref(), ignored.count_failed), (Some("Ignore"), false));
        let fail = match_pod_failure_policy(&policy, &failed_pod(42, &[]));
        assert_eq!(fail.fail_job_message.as_deref(), Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"));
        let disrupted = match_pod_failure_policy(&policy, &failed_pod(1, &[("DisruptionTarget", "True")]));
        assert_eq!((disrupted.action.as_deref(), disrupted.count_failed), (Some("Ignore"), false));
        let counted = match_pod_failure_policy(&policy, &failed_pod(5, &[]));
        assert_eq!((counted.action.as_deref(), counted.count_failed), (Some("Count"), true));
        // Exit code 1 matches nothing (NotIn [1]); exit code 0 never matches.
        assert_eq!(match_pod_failure_policy(&policy, &failed_pod(1, &[])).action, None);
        assert_eq!(match_pod_failure_policy(&policy, &failed_pod(0, &[])).action, None);
    }

    #[test]
    fn success_policy_rules_by_indexes_and_count() {
        let r = |ix: Option<&str>, c: Option<i32>| SuccessPolicyRule { succeeded_indexes: ix.map(String::from), succeeded_count: c };
        let policy = SuccessPolicy { rules: vec![r(Some("0-2"), None), r(Some("5-9"), Some(2)), r(None, Some(4))] };
        let s = |v: &[i32]| Indexes(v.iter().copied().collect());
        assert_eq!(match_success_policy(Some(&policy), 10, &s(&[0, 1])), None);
        assert_eq!(match_success_policy(Some(&policy), 10, &s(&[0, 1, 2])).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(match_success_policy(Some(&policy), 10, &s(&[6, 9])).as_deref(), Some("Matched rules at index 1"));
        assert_eq!(match_success_policy(Some(&policy), 10, &s(&[0, 3, 4, 6])).as_deref(), Some("Matched rules at index 2"));
        assert_eq!(match_success_policy(None, 10, &s(&[0, 1, 2])), None);
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_and_is_capped() {
        let mut r = BackoffRecord::default();
        assert_eq!(r.remaining(t(0)), Duration::ZERO);
        r = r.next(&[], &[t(0)]);
        assert_eq!(r.remaining(t(0)), Duration::from_secs(10));
        assert_eq!(r.remaining(t(4)), Duration::from_secs(6));
        r = r.next(&[], &[t(100)]);
        assert_eq!(r.remaining(t(100)), Duration::from_secs(20));
        for i in 0..10 {
            r = r.next(&[], &[t(200 + i)]);
        }
        assert_eq!(r.remaining(t(209)), MAX_POD_FAILURE_BACKOFF);
        // A success after the failures clears the record; failures after it count again.
        r = r.next(&[t(300)], &[t(250), t(310)]);
        assert_eq!(r, BackoffRecord { failures_after_last_success: 1, last_failure: Some(t(310)) });
        assert_eq!(r.next(&[t(400)], &[]).remaining(t(400)), Duration::ZERO);
    }

    #[test]
    fn wanted_pods_follow_completions_parallelism_and_suspend() {
        assert_eq!(want_active(false, 2, Some(5), 0, 0, 0), 2);
        assert_eq!(want_active(false, 2, Some(5), 4, 0, 2), 1);
        assert_eq!(want_active(false, 2, Some(5), 5, 0, 0), 0);
        assert_eq!(want_active(false, 3, Some(5), 2, 2, 0), 1);
        assert_eq!(want_active(true, 2, Some(5), 0, 0, 2), 0);
        assert_eq!(want_active(false, 3, None, 0, 0, 1), 3);
        assert_eq!(want_active(false, 3, None, 1, 0, 2), 2);
        let taken = [1].into_iter().collect();
        assert_eq!(indexes_to_start(6, 3, &Indexes([0].into()), &Indexes([2].into()), &taken), [3, 4, 5]);
    }

    #[test]
    fn deadlines_and_conditions() {
        assert!(!past_active_deadline(Some(t(0)), Some(10), t(9)));
        assert!(past_active_deadline(Some(t(0)), Some(10), t(10)));
        assert!(!past_active_deadline(None, Some(10), t(100)));
        assert_eq!(until_deadline(Some(t(0)), Some(10), t(4)), Some(Duration::from_secs(6)));
        let mut cs = Vec::new();
        assert!(ensure(&mut cs, condition("Suspended", "True", "JobSuspended", "Job suspended", t(0))));
        assert!(!ensure(&mut cs, condition("Suspended", "True", "JobSuspended", "Job suspended", t(1))));
        assert!(ensure(&mut cs, condition("Suspended", "False", "JobResumed", "Job resumed", t(2))));
        assert_eq!(cs.len(), 1);
        assert!(!finished(&cs));
        cs.push(condition("Failed", "True", REASON_BACKOFF_LIMIT, "Job has reached the specified backoff limit", t(3)));
        assert!(finished(&cs));
    }
}
