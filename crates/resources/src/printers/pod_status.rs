//! The Pod row: READY, STATUS and RESTARTS follow upstream's `printPod`
//! step by step (init containers, restartable "sidecar" init containers,
//! waiting/terminated reasons, Terminating/Unknown on deletion).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "string", "The aggregate status of the containers in this pod."),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        age_col(),
        wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
        wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
        wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
        wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
    ]
}

/// The STATUS, READY and RESTARTS summary of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodSummary {
    pub ready: i64,
    pub total: i64,
    pub reason: String,
    pub restarts: i64,
    pub last_restart: Option<DateTime<Utc>>,
}

/// `Before`-style max over a container's `lastState.terminated.finishedAt`.
fn bump_last(last: &mut Option<DateTime<Utc>>, status: &Value) {
    if !present(status, "lastState.terminated") {
        return;
    }
    if let Some(t) = parse_time(str_at(status, "lastState.terminated.finishedAt")) {
        if last.is_none_or(|l| l < t) {
            *last = Some(t);
        }
    }
}

fn condition_true(status: &Value, type_: &str) -> bool {
    // Upstream looks at the first condition of the type.
    arr_at(status, "conditions")
        .iter()
        .find(|c| str_at(c, "type") == type_)
        .is_some_and(|c| str_at(c, "status") == "True")
}

fn has_pod_ready_condition(status: &Value) -> bool {
    // hasPodReadyCondition: any Ready condition that is True.
    arr_at(status, "conditions")
        .iter()
        .any(|c| str_at(c, "type") == "Ready" && str_at(c, "status") == "True")
}

fn terminated_reason(term: &Value, prefix: &str) -> String {
    let reason = str_at(term, "reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(term, "signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(term, "exitCode"))
    }
}

pub(crate) fn summarize(pod: &Value) -> PodSummary {
    let spec = at(pod, "spec");
    let status = at(pod, "status");

    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut total = arr_at(spec, "containers").len() as i64;
    let mut ready = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    let phase = str_at(status, "phase");
    let mut reason = phase.to_string();
    if !str_at(status, "reason").is_empty() {
        reason = str_at(status, "reason").to_string();
    }
    for c in arr_at(status, "conditions") {
        if str_at(c, "type") == "PodScheduled" && str_at(c, "reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }

    let init_specs = arr_at(spec, "initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .rev() // later duplicates win, like the Go map
            .find(|c| str_at(c, "name") == name)
            .is_some_and(|c| str_at(c, "restartPolicy") == "Always")
    };
    total += init_specs
        .iter()
        .filter(|c| str_at(c, "restartPolicy") == "Always")
        .count() as i64;

    let mut initializing = false;
    for (i, c) in arr_at(status, "initContainerStatuses").iter().enumerate() {
        let rc = int_at(c, "restartCount");
        restarts += rc;
        bump_last(&mut last_restart, c);
        let is_sidecar = restartable(str_at(c, "name"));
        if is_sidecar {
            sidecar_restarts += rc;
            bump_last(&mut last_sidecar_restart, c);
        }
        let term = at(c, "state.terminated");
        let waiting = at(c, "state.waiting");
        if term.is_object() && int_at(term, "exitCode") == 0 {
            continue;
        }
        if is_sidecar && bool_at(c, "started") {
            if bool_at(c, "ready") {
                ready += 1;
            }
            continue;
        }
        if term.is_object() {
            reason = terminated_reason(term, "Init:");
        } else if waiting.is_object()
            && !str_at(waiting, "reason").is_empty()
            && str_at(waiting, "reason") != "PodInitializing"
        {
            reason = format!("Init:{}", str_at(waiting, "reason"));
        } else {
            reason = format!("Init:{}/{}", i, init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr_at(status, "containerStatuses").iter().rev() {
            restarts += int_at(c, "restartCount");
            bump_last(&mut last_restart, c);
            let term = at(c, "state.terminated");
            let waiting = at(c, "state.waiting");
            if waiting.is_object() && !str_at(waiting, "reason").is_empty() {
                reason = str_at(waiting, "reason").to_string();
            } else if term.is_object() {
                reason = terminated_reason(term, "");
            } else if bool_at(c, "ready") && present(c, "state.running") {
                has_running = true;
                ready += 1;
            }
        }
        // Back to Running if at least one container is still running.
        if reason == "Completed" && has_running {
            reason = if has_pod_ready_condition(status) {
                "Running"
            } else {
                "NotReady"
            }
            .into();
        }
    }

    let deleting = present(pod, "metadata.deletionTimestamp");
    if deleting && str_at(status, "reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".into();
    }

    PodSummary {
        ready,
        total,
        reason,
        restarts,
        last_restart,
    }
}

pub(super) fn cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let sum = summarize(pod);
    let restarts = match sum.last_restart {
        Some(t) if sum.restarts != 0 => {
            format!("{} ({} ago)", sum.restarts, human_duration(now - t))
        }
        _ => sum.restarts.to_string(),
    };

    let status = at(pod, "status");
    let spec = at(pod, "spec");
    // v1 -> internal conversion: status.podIP wins over podIPs[0].
    let mut ip = str_at(status, "podIP").to_string();
    if ip.is_empty() {
        ip = arr_at(status, "podIPs")
            .first()
            .map(|p| str_at(p, "ip").to_string())
            .unwrap_or_default();
    }
    let or_none = |x: &str| {
        if x.is_empty() {
            "<none>".to_string()
        } else {
            x.to_string()
        }
    };

    let gates = arr_at(spec, "readinessGates");
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(status, "conditions");
        let ok = gates
            .iter()
            .filter(|g| {
                let t = str_at(g, "conditionType");
                conditions
                    .iter()
                    .find(|c| str_at(c, "type") == t)
                    .is_some_and(|c| str_at(c, "status") == "True")
            })
            .count();
        format!("{}/{}", ok, gates.len())
    };

    vec![
        name_cell(pod),
        s(format!("{}/{}", sum.ready, sum.total)),
        s(sum.reason),
        s(restarts),
        s(obj_age(pod, now)),
        s(or_none(&ip)),
        s(or_none(str_at(spec, "nodeName"))),
        s(or_none(str_at(status, "nominatedNodeName"))),
        s(readiness),
    ]
}
