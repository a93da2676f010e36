//! From a metric's recommendation to the replica count the autoscaler
//! sets, as upstream's HPA controller normalizes it: recommendations are
//! stabilized over a window (the highest of the last five minutes before a
//! scale-down by default), then limited by min/max and by the scaling
//! rate — `behavior` policies when the HPA has them, else at most
//! max(2 × current, 4) per step. Each limit names the condition reason
//! upstream reports. Pure: the per-HPA history is passed in with the time.

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// Upstream's `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DOWNSCALE_STABILIZATION: Duration = Duration::minutes(5);
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
const SCALE_UP_LIMIT_MINIMUM: i32 = 4;

/// What one HPA remembers between syncs.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: Vec<(DateTime<Utc>, i32)>,
    /// (when, replicas added or removed).
    scale_ups: Vec<(DateTime<Utc>, i32)>,
    scale_downs: Vec<(DateTime<Utc>, i32)>,
}

/// A condition to set: (status, reason, message).
pub type Condition = (bool, &'static str, &'static str);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    pub able_to_scale: Condition,
    pub scaling_limited: Condition,
}

const READY: Condition = (true, "ReadyForNewScale", "recommended size matches current size");
const UP_STABILIZED: Condition = (true, "ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation");
const DOWN_STABILIZED: Condition =
    (true, "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation");
/// Why the count is (or is not) limited: the ScalingLimited reason and message.
type Why = (&'static str, &'static str);
const WITHIN_RANGE: Why = ("DesiredWithinRange", "the desired count is within the acceptable range");
const SCALE_UP_LIMIT: Why = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const SCALE_DOWN_LIMIT: Why = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate");
const TOO_MANY: Why = ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW: Why = ("TooFewReplicas", "the desired replica count is less than the minimum replica count");

fn scaling_limited(limited: bool, (reason, message): Why) -> Condition {
    (limited, reason, message)
}

impl History {
    /// The first sync records the current count as a recommendation.
    pub fn starting(current: i32, now: DateTime<Utc>) -> History {
        History { recommendations: vec![(now, current)], ..Default::default() }
    }

    /// Remembers a rescale for the rate limits.
    pub fn record_scale(&mut self, from: i32, to: i32, now: DateTime<Utc>, behavior: Option<&HorizontalPodAutoscalerBehavior>) {
        let longest = |rules: Option<&HPAScalingRules>| {
            rules.and_then(|r| r.policies.as_ref()).into_iter().flatten().map(|p| p.period_seconds).max().unwrap_or(0)
        };
        let (up, down) = (longest(behavior.and_then(|b| b.scale_up.as_ref())), longest(behavior.and_then(|b| b.scale_down.as_ref())));
        self.scale_ups.retain(|(t, _)| *t > now - Duration::seconds(up.into()));
        self.scale_downs.retain(|(t, _)| *t > now - Duration::seconds(down.into()));
        if to > from {
            self.scale_ups.push((now, to - from));
        } else if to < from {
            self.scale_downs.push((now, from - to));
        }
    }

    /// Without `behavior`: the five-minute downscale window and the classic rate limit.
    pub fn normalize(&mut self, current: i32, desired: i32, min: i32, max: i32, now: DateTime<Utc>) -> Normalized {
        let cutoff = now - DOWNSCALE_STABILIZATION;
        self.recommendations.retain(|(t, _)| *t > cutoff);
        self.recommendations.push((now, desired));
        let stabilized = self.recommendations.iter().map(|(_, r)| *r).max().unwrap_or(desired);
        let able_to_scale = if stabilized != desired { DOWN_STABILIZED } else { READY };
        let scale_up_limit = ((SCALE_UP_LIMIT_FACTOR * current as f64).ceil() as i32).max(SCALE_UP_LIMIT_MINIMUM);
        let (maximum, why) = if max > scale_up_limit { (scale_up_limit, SCALE_UP_LIMIT) } else { (max, TOO_MANY) };
        let (replicas, scaling_limited) = if stabilized < min {
            (min, scaling_limited(true, TOO_FEW))
        } else if stabilized > maximum {
            (maximum, scaling_limited(true, why))
        } else {
            (stabilized, scaling_limited(false, WITHIN_RANGE))
        };
        Normalized { replicas, able_to_scale, scaling_limited }
    }

    /// With `behavior` (its rules already defaulted by the API server).
    pub fn normalize_with_behavior(
        &mut self,
        behavior: &HorizontalPodAutoscalerBehavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: DateTime<Utc>,
    ) -> Normalized {
        let window = |rules: Option<&HPAScalingRules>, default: i32| {
            Duration::seconds(rules.and_then(|r| r.stabilization_window_seconds).unwrap_or(default).into())
        };
        let up_cutoff = now - window(behavior.scale_up.as_ref(), 0);
        let down_cutoff = now - window(behavior.scale_down.as_ref(), DOWNSCALE_STABILIZATION.num_seconds() as i32);
        let (mut up, mut down) = (desired, desired);
        for (t, r) in &self.recommendations {
            if *t > up_cutoff {
                up = up.min(*r);
            }
            if *t > down_cutoff {
                down = down.max(*r);
            }
        }
        let stabilized = current.max(up).min(down);
        // One old sample is replaced instead of growing the list.
        match self.recommendations.iter().position(|(t, _)| *t < up_cutoff && *t < down_cutoff) {
            Some(i) => self.recommendations[i] = (now, desired),
            None => self.recommendations.push((now, desired)),
        }
        let able_to_scale = match (stabilized != desired, desired >= current) {
            (false, _) => READY,
            (true, true) => UP_STABILIZED,
            (true, false) => DOWN_STABILIZED,
        };
        let (replicas, why) = self.rate_limited(behavior, current, stabilized, min, max, now);
        let scaling_limited = scaling_limited(replicas != stabilized, why);
        Normalized { replicas, able_to_scale, scaling_limited }
    }

    fn rate_limited(
        &self,
        behavior: &HorizontalPodAutoscalerBehavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: DateTime<Utc>,
    ) -> (i32, Why) {
        if desired > current {
            let limit = self.limit(behavior.scale_up.as_ref(), current, now, true).max(current);
            let (maximum, why) = if max > limit { (limit, SCALE_UP_LIMIT) } else { (max, TOO_MANY) };
            if desired > maximum {
                return (maximum, why);
            }
        } else if desired < current {
            let limit = self.limit(behavior.scale_down.as_ref(), current, now, false).min(current);
            let (minimum, why) = if min < limit { (limit, SCALE_DOWN_LIMIT) } else { (min, TOO_FEW) };
            if desired < minimum {
                return (minimum, why);
            }
        }
        (desired, WITHIN_RANGE)
    }

    /// The furthest the policies allow from the count at each period's start.
    fn limit(&self, rules: Option<&HPAScalingRules>, current: i32, now: DateTime<Utc>, up: bool) -> i32 {
        let Some(rules) = rules else { return current };
        let select = rules.select_policy.as_deref().unwrap_or("Max");
        if select == "Disabled" {
            return current;
        }
        // "Max" picks the biggest change, "Min" the smallest: a higher count going up, a lower going down.
        let pick_high = (select == "Max") == up;
        let changed = |events: &[(DateTime<Utc>, i32)], period: i32| -> i32 {
            events.iter().filter(|(t, _)| *t > now - Duration::seconds(period.into())).map(|(_, n)| n).sum()
        };
        let mut result: Option<i32> = None;
        for p in rules.policies.iter().flatten() {
            let start = current - changed(&self.scale_ups, p.period_seconds) + changed(&self.scale_downs, p.period_seconds);
            let proposed = match (p.type_.as_str(), up) {
                ("Pods", true) => start + p.value,
                ("Pods", false) => start - p.value,
                // Rounded up going up, so a small count can still grow.
                (_, true) => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32,
                (_, false) => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32,
            };
            result = Some(match result {
                None => proposed,
                Some(r) if pick_high => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        result.unwrap_or(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn rules(window: i32, select: &str, policies: &[(&str, i32, i32)]) -> HPAScalingRules {
        HPAScalingRules {
            stabilization_window_seconds: Some(window),
            select_policy: Some(select.into()),
            policies: Some(policies.iter().map(|(t, v, p)| HPAScalingPolicy { type_: t.to_string(), value: *v, period_seconds: *p }).collect()),
            ..Default::default()
        }
    }

    /// Upstream's defaults: up at once by 100% or 4 pods per 15 s, down after 300 s by up to 100% per 15 s.
    fn default_behavior() -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_up: Some(rules(0, "Max", &[("Pods", 4, 15), ("Percent", 100, 15)])),
            scale_down: Some(rules(300, "Max", &[("Percent", 100, 15)])),
        }
    }

    #[test]
    fn without_behavior_scale_downs_wait_for_the_highest_recent_recommendation() {
        let mut h = History::starting(3, at(0));
        let n = h.normalize(3, 1, 1, 10, at(15));
        assert_eq!(n.replicas, 3);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        let n = h.normalize(3, 1, 1, 10, at(301));
        assert_eq!(n, Normalized { replicas: 1, able_to_scale: READY, scaling_limited: (false, "DesiredWithinRange", "the desired count is within the acceptable range") });
    }

    #[test]
    fn without_behavior_growth_is_capped_per_step_and_by_max() {
        let mut h = History::starting(1, at(0));
        let n = h.normalize(1, 10, 1, 20, at(15));
        assert_eq!((n.replicas, n.scaling_limited.1), (4, "ScaleUpLimit"));
        let n = h.normalize(4, 50, 1, 6, at(30));
        assert_eq!((n.replicas, n.scaling_limited.0, n.scaling_limited.1), (6, true, "TooManyReplicas"));
        let mut h = History::starting(2, at(0));
        let n = h.normalize(2, 0, 2, 6, at(301));
        assert_eq!((n.replicas, n.scaling_limited.1), (2, "TooFewReplicas"));
    }

    #[test]
    fn behavior_policies_limit_each_period() {
        let b = default_behavior();
        let mut h = History::starting(1, at(0));
        // Max of +4 pods and +100%: 1 -> 5.
        let n = h.normalize_with_behavior(&b, 1, 20, 1, 30, at(15));
        assert_eq!((n.replicas, n.scaling_limited), (5, (true, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")));
        h.record_scale(1, 5, at(15), Some(&b));
        // Within the same 15 s period the start was 1: still capped at 5.
        let n = h.normalize_with_behavior(&b, 5, 20, 1, 30, at(20));
        assert_eq!(n.replicas, 5);
        // Next period: start 5, max(+4, +100%) = 10.
        let n = h.normalize_with_behavior(&b, 5, 20, 1, 30, at(31));
        assert_eq!(n.replicas, 10);
    }

    #[test]
    fn behavior_windows_stabilize_both_ways_and_disabled_holds() {
        let mut b = default_behavior();
        b.scale_down = Some(rules(0, "Max", &[("Pods", 1, 60)]));
        let mut h = History::starting(4, at(0));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 10, at(15));
        assert_eq!((n.replicas, n.scaling_limited.1), (3, "ScaleDownLimit"), "one pod per minute");
        b.scale_down = Some(rules(0, "Disabled", &[("Pods", 1, 60)]));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 10, at(30));
        assert_eq!(n.replicas, 4);
        b.scale_up = Some(rules(60, "Max", &[("Pods", 10, 15)]));
        let mut h = History::starting(2, at(0));
        let n = h.normalize_with_behavior(&b, 2, 6, 1, 10, at(15));
        assert_eq!((n.replicas, n.able_to_scale.1), (2, "ScaleUpStabilized"), "the lowest recommendation of the last minute was 2");
    }
}
