//! The HorizontalPodAutoscaler's replica calculation for resource metrics,
//! as upstream's ReplicaCalculator: pods are sorted into ready, unready
//! (CPU only: not Ready yet, or too early after start to trust),
//! missing (no metrics) and ignored (deleted or failed); the usage ratio
//! to the target decides, within a 10% tolerance; on a scale-up unready
//! pods count as using nothing, missing pods as using nothing on a scale-up
//! and their full request on a scale-down, and a result that would turn
//! the direction around keeps the current count. Pure: time is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

/// Upstream's `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::minutes(5);
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::seconds(30);

/// What the replica calculation needs of a pod.
#[derive(Clone, Debug)]
pub struct PodFacts {
    pub name: String,
    pub deleting: bool,
    pub phase: String,
    /// The Ready condition: (status is True, last transition).
    pub ready: Option<(bool, DateTime<Utc>)>,
    pub start_time: Option<DateTime<Utc>>,
    /// Sum of the containers' requests of the resource (milli-units), or
    /// the name of a container without one.
    pub request_milli: Result<i64, String>,
}

/// A pod's usage from the metrics API.
#[derive(Clone, Copy, Debug)]
pub struct PodMetric {
    pub milli: i64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Milli-units per pod.
    AverageValue(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    /// Percent of request (Utilization targets only).
    pub utilization: Option<i32>,
    /// Average usage per pod, milli-units.
    pub average_milli: i64,
}

struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
    ignored: Vec<String>,
}

fn group(pods: &[PodFacts], metrics: &BTreeMap<String, PodMetric>, cpu: bool, now: DateTime<Utc>) -> Groups {
    let mut g = Groups { ready: 0, unready: Vec::new(), missing: Vec::new(), ignored: Vec::new() };
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            g.ignored.push(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            g.unready.push(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            g.missing.push(pod.name.clone());
            continue;
        };
        if cpu {
            let unready = match (pod.ready, pod.start_time) {
                (Some((ready, transition)), Some(start)) => {
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Early on, a sample counts only once a whole window followed the last transition.
                        !ready || metric.timestamp < transition + metric.window
                    } else {
                        // Later, only a pod that has never been ready is skipped.
                        !ready && start + INITIAL_READINESS_DELAY > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.push(pod.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// (usage ratio, utilization percent, average milli) over the pods that have both a metric and a request.
fn utilization_ratio(metrics: &BTreeMap<String, PodMetric>, requests: &BTreeMap<String, i64>, target: i32) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, m) in metrics {
        let Some(r) = requests.get(pod) else { continue };
        used += m.milli;
        requested += r;
        n += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((utilization as f64 / target as f64, utilization, used / n))
}

fn average_ratio(metrics: &BTreeMap<String, PodMetric>, target_milli: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.milli).sum();
    let average = total / metrics.len().max(1) as i64;
    (average as f64 / target_milli as f64, average)
}

/// Desired replicas for one resource metric.
pub fn resource_replicas(
    current: i32,
    target: Target,
    cpu: bool,
    pods: &[PodFacts],
    mut metrics: BTreeMap<String, PodMetric>,
    now: DateTime<Utc>,
) -> Result<Recommendation, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group(pods, &metrics, cpu, now);
    for name in g.ignored.iter().chain(&g.unready) {
        metrics.remove(name);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let mut requests = BTreeMap::new();
    if let Target::Utilization(_) = target {
        for pod in pods {
            match &pod.request_milli {
                Ok(r) => requests.insert(pod.name.clone(), *r),
                Err(container) => return Err(format!("missing request for {} in container {container} of Pod {}", if cpu { "cpu" } else { "memory" }, pod.name)),
            };
        }
    }
    let ratio = |metrics: &BTreeMap<String, PodMetric>| -> Result<(f64, Option<i32>, i64), String> {
        match target {
            Target::Utilization(t) => utilization_ratio(metrics, &requests, t).map(|(r, u, a)| (r, Some(u), a)),
            Target::AverageValue(t) => {
                let (r, a) = average_ratio(metrics, t);
                Ok((r, None, a))
            }
        }
    };
    let (usage_ratio, utilization, average_milli) = ratio(&metrics)?;
    let keep = Recommendation { replicas: current, utilization, average_milli };
    let scale_up_with_unready = !g.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(keep);
        }
        return Ok(Recommendation { replicas: (usage_ratio * g.ready as f64).ceil() as i32, ..keep });
    }
    let stand_in = |pod: &str, percent: i64| -> i64 {
        match target {
            Target::Utilization(_) => requests.get(pod).copied().unwrap_or(0) * percent / 100,
            Target::AverageValue(t) => t * percent / 100,
        }
    };
    if usage_ratio < 1.0 {
        // Scaling down: a pod without metrics counts as using all it asked for (or the target, above 100%).
        let percent = match target {
            Target::Utilization(t) => i64::from(t.max(100)),
            Target::AverageValue(_) => 100,
        };
        for pod in &g.missing {
            metrics.insert(pod.clone(), PodMetric { milli: stand_in(pod, percent), timestamp: now, window: Duration::zero() });
        }
    } else if usage_ratio > 1.0 {
        for pod in &g.missing {
            metrics.insert(pod.clone(), PodMetric { milli: 0, timestamp: now, window: Duration::zero() });
        }
    }
    if scale_up_with_unready {
        for pod in &g.unready {
            metrics.insert(pod.clone(), PodMetric { milli: 0, timestamp: now, window: Duration::zero() });
        }
    }
    let (new_ratio, _, _) = ratio(&metrics)?;
    let turned = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= TOLERANCE || turned {
        return Ok(keep);
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Recommendation { replicas, ..keep })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    /// A Running pod, Ready since long ago, asking for 100m.
    fn pod(name: &str) -> PodFacts {
        PodFacts { name: name.into(), deleting: false, phase: "Running".into(), ready: Some((true, at(-3600))), start_time: Some(at(-3600)), request_milli: Ok(100) }
    }

    fn usage(pairs: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        pairs.iter().map(|(n, m)| (n.to_string(), PodMetric { milli: *m, timestamp: at(0), window: Duration::seconds(15) })).collect()
    }

    #[test]
    fn scales_by_the_usage_ratio_outside_the_tolerance() {
        let pods = [pod("a"), pod("b")];
        let r = resource_replicas(2, Target::Utilization(50), true, &pods, usage(&[("a", 100), ("b", 100)]), at(0)).unwrap();
        assert_eq!(r, Recommendation { replicas: 4, utilization: Some(100), average_milli: 100 });
        // 54% of a 50% target is within 10%: keep.
        let r = resource_replicas(2, Target::Utilization(50), true, &pods, usage(&[("a", 54), ("b", 54)]), at(0)).unwrap();
        assert_eq!(r.replicas, 2);
        let r = resource_replicas(2, Target::Utilization(50), true, &pods, usage(&[("a", 10), ("b", 10)]), at(0)).unwrap();
        assert_eq!(r.replicas, 1);
    }

    #[test]
    fn average_value_targets_need_no_requests() {
        let mut pods = [pod("a"), pod("b")];
        pods[1].request_milli = Err("c".into());
        let r = resource_replicas(2, Target::AverageValue(50), true, &pods, usage(&[("a", 150), ("b", 150)]), at(0)).unwrap();
        assert_eq!(r, Recommendation { replicas: 6, utilization: None, average_milli: 150 });
        let err = resource_replicas(2, Target::Utilization(50), true, &pods, usage(&[("a", 150), ("b", 150)]), at(0)).unwrap_err();
        assert_eq!(err, "missing request for cpu in container c of Pod b");
    }

    #[test]
    fn missing_pods_damp_a_scale_down_and_unready_pods_a_scale_up() {
        // b has no metrics: on the way down it counts as using its whole request.
        let pods = [pod("a"), pod("b")];
        let r = resource_replicas(2, Target::Utilization(50), true, &pods, usage(&[("a", 10)]), at(0)).unwrap();
        // (10 + 100) / 200 = 55% of 50%: within tolerance after the stand-in, keep 2.
        assert_eq!(r.replicas, 2);
        // c just started and is not Ready: on the way up it counts as using nothing.
        let mut c = pod("c");
        c.ready = Some((false, at(-5)));
        c.start_time = Some(at(-10));
        let pods = [pod("a"), pod("b"), c];
        let r = resource_replicas(3, Target::Utilization(50), true, &pods, usage(&[("a", 100), ("b", 100), ("c", 500)]), at(0)).unwrap();
        // (100 + 100 + 0) / 300 = 66% of 50% -> ceil(1.33 * 3) = 4.
        assert_eq!(r.replicas, 4);
        assert_eq!(r.utilization, Some(100), "the reported utilization is of the ready pods");
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored_and_no_metrics_is_an_error() {
        let mut gone = pod("gone");
        gone.deleting = true;
        let mut failed = pod("failed");
        failed.phase = "Failed".into();
        let pods = [pod("a"), gone, failed];
        let r = resource_replicas(3, Target::Utilization(50), true, &pods, usage(&[("a", 10), ("gone", 900), ("failed", 900)]), at(0)).unwrap();
        assert_eq!(r.replicas, 1);
        assert_eq!(
            resource_replicas(1, Target::Utilization(50), true, &[pod("a")], BTreeMap::new(), at(0)).unwrap_err(),
            "did not receive metrics for targeted pods (pods might be unready)"
        );
    }

    #[test]
    fn a_young_pod_counts_once_a_window_followed_its_readiness() {
        let mut young = pod("y");
        young.start_time = Some(at(-60));
        young.ready = Some((true, at(-10)));
        let pods = [young];
        // The sample (at 0, 15 s window) began before the pod became Ready (-10): unready.
        let err = resource_replicas(1, Target::Utilization(50), true, &pods, usage(&[("y", 100)]), at(0)).unwrap_err();
        assert!(err.starts_with("did not receive metrics"), "{err}");
        // Memory has no such grace.
        let r = resource_replicas(1, Target::Utilization(50), false, &pods, usage(&[("y", 100)]), at(0)).unwrap();
        assert_eq!(r.replicas, 2);
    }
}
