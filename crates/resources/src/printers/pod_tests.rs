//! The pod STATUS / READY / RESTARTS rules, case by case.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::pod_status::summarize;
use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ago(d: Duration) -> String {
    (now() - d).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A pod with `n` app containers named c0.., the given phase and statuses.
fn pod(containers: usize, phase: &str, statuses: Value) -> Value {
    let specs: Vec<Value> = (0..containers)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx"}))
        .collect();
    json!({
        "metadata": {"name": "p", "creationTimestamp": ago(Duration::minutes(10))},
        "spec": {"containers": specs},
        "status": {"phase": phase, "containerStatuses": statuses},
    })
}

fn status(p: &Value) -> String {
    summarize(p).reason
}

fn row(p: &Value) -> Vec<Value> {
    cells("", "Pod", p, now())
}

fn waiting(reason: &str) -> Value {
    json!({"name": "c0", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}})
}

fn terminated(reason: &str, exit: i64, signal: i64) -> Value {
    json!({"name": "c0", "ready": false, "restartCount": 0,
           "state": {"terminated": {"reason": reason, "exitCode": exit, "signal": signal}}})
}

fn running(name: &str, ready: bool) -> Value {
    json!({"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": ago(Duration::minutes(5))}}})
}

#[test]
fn pending_without_statuses() {
    let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
    let r = row(&p);
    assert_eq!(r[1], json!("0/1"));
    assert_eq!(r[2], json!("Pending"));
    assert_eq!(r[3], json!("0"));
    assert_eq!(r[4], json!("<unknown>"));
}

#[test]
fn waiting_reasons() {
    for reason in [
        "ContainerCreating",
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    ] {
        assert_eq!(status(&pod(1, "Pending", json!([waiting(reason)]))), reason);
    }
    // An empty waiting reason leaves the phase.
    assert_eq!(status(&pod(1, "Pending", json!([waiting("")]))), "Pending");
}

#[test]
fn running_and_ready_counts() {
    let p = pod(
        2,
        "Running",
        json!([running("c0", true), running("c1", false)]),
    );
    let r = row(&p);
    assert_eq!(r[1], json!("1/2"));
    assert_eq!(r[2], json!("Running"));
}

#[test]
fn terminated_reasons() {
    assert_eq!(
        status(&pod(1, "Succeeded", json!([terminated("Completed", 0, 0)]))),
        "Completed"
    );
    assert_eq!(
        status(&pod(1, "Failed", json!([terminated("Error", 1, 0)]))),
        "Error"
    );
    assert_eq!(
        status(&pod(1, "Running", json!([terminated("OOMKilled", 137, 0)]))),
        "OOMKilled"
    );
    assert_eq!(
        status(&pod(1, "Failed", json!([terminated("", 0, 9)]))),
        "Signal:9"
    );
    assert_eq!(
        status(&pod(1, "Failed", json!([terminated("", 2, 0)]))),
        "ExitCode:2"
    );
}

#[test]
fn completed_with_running_container_is_running_or_notready() {
    let mut st = terminated("Completed", 0, 0);
    st["name"] = json!("c1");
    let mut p = pod(2, "Running", json!([running("c0", true), st]));
    assert_eq!(status(&p), "NotReady");
    p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    assert_eq!(status(&p), "Running");
}

#[test]
fn status_reason_wins_over_phase() {
    let mut p = pod(1, "Failed", json!([]));
    p["status"]["reason"] = json!("Evicted");
    assert_eq!(status(&p), "Evicted");
    p["status"]["reason"] = json!("NodeAffinity");
    assert_eq!(status(&p), "NodeAffinity");
}

#[test]
fn scheduling_gated() {
    let mut p = pod(1, "Pending", json!([]));
    p["status"]["conditions"] =
        json!([{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]);
    assert_eq!(status(&p), "SchedulingGated");
}

#[test]
fn deletion_gives_terminating_or_unknown() {
    let mut p = pod(1, "Running", json!([running("c0", true)]));
    p["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(3)));
    assert_eq!(status(&p), "Terminating");

    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(status(&p), "Unknown");

    // Terminal pods keep their reason while being deleted.
    let mut done = pod(1, "Succeeded", json!([terminated("Completed", 0, 0)]));
    done["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(3)));
    assert_eq!(status(&done), "Completed");
    let mut failed = pod(1, "Failed", json!([terminated("Error", 1, 0)]));
    failed["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(3)));
    assert_eq!(status(&failed), "Error");
}

fn with_init(mut p: Value, names: &[&str], statuses: Value) -> Value {
    let specs: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "image": "busybox"}))
        .collect();
    p["spec"]["initContainers"] = json!(specs);
    p["status"]["initContainerStatuses"] = statuses;
    p
}

fn init_status(name: &str, state: Value, restarts: i64) -> Value {
    json!({"name": name, "ready": false, "restartCount": restarts, "state": state})
}

#[test]
fn init_progress() {
    let base = pod(1, "Pending", json!([waiting("PodInitializing")]));
    let p = with_init(
        base.clone(),
        &["i0", "i1"],
        json!([
            init_status("i0", json!({"running": {}}), 0),
            init_status("i1", json!({"waiting": {"reason": "PodInitializing"}}), 0)
        ]),
    );
    assert_eq!(status(&p), "Init:0/2");

    let p = with_init(
        base.clone(),
        &["i0", "i1"],
        json!([
            init_status(
                "i0",
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                0
            ),
            init_status("i1", json!({"running": {}}), 0)
        ]),
    );
    assert_eq!(status(&p), "Init:1/2");

    // All init containers done: the app container's PodInitializing shows.
    let p = with_init(
        base,
        &["i0"],
        json!([init_status(
            "i0",
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            0
        )]),
    );
    assert_eq!(status(&p), "PodInitializing");
}

#[test]
fn init_failures() {
    let base = pod(1, "Pending", json!([waiting("PodInitializing")]));
    let p = with_init(
        base.clone(),
        &["i0"],
        json!([init_status(
            "i0",
            json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
            0
        )]),
    );
    assert_eq!(status(&p), "Init:Error");
    let p = with_init(
        base.clone(),
        &["i0"],
        json!([init_status("i0", json!({"terminated": {"exitCode": 3}}), 0)]),
    );
    assert_eq!(status(&p), "Init:ExitCode:3");
    let p = with_init(
        base.clone(),
        &["i0"],
        json!([init_status(
            "i0",
            json!({"terminated": {"exitCode": 137, "signal": 9}}),
            0
        )]),
    );
    assert_eq!(status(&p), "Init:Signal:9");
    let finished = ago(Duration::seconds(30));
    let mut st = init_status("i0", json!({"waiting": {"reason": "CrashLoopBackOff"}}), 4);
    st["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": finished}});
    let p = with_init(base, &["i0"], json!([st]));
    assert_eq!(status(&p), "Init:CrashLoopBackOff");
    // Restarts of a failing init container count while initializing.
    assert_eq!(row(&p)[3], json!("4 (30s ago)"));
}

#[test]
fn sidecar_init_containers() {
    let mut p = pod(1, "Running", json!([running("c0", true)]));
    p["spec"]["initContainers"] =
        json!([{"name": "side", "image": "envoy", "restartPolicy": "Always"}]);
    p["status"]["initContainerStatuses"] = json!([{"name": "side", "ready": true, "started": true, "restartCount": 0, "state": {"running": {}}}]);
    p["status"]["conditions"] =
        json!([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]);
    let r = row(&p);
    assert_eq!(r[1], json!("2/2"));
    assert_eq!(r[2], json!("Running"));

    // Not started yet: still initializing.
    let mut q = pod(1, "Pending", json!([waiting("PodInitializing")]));
    q["spec"]["initContainers"] =
        json!([{"name": "side", "image": "envoy", "restartPolicy": "Always"}]);
    q["status"]["initContainerStatuses"] = json!([{"name": "side", "ready": false, "started": false, "restartCount": 0, "state": {"running": {}}}]);
    let r = row(&q);
    assert_eq!(r[1], json!("0/2"));
    assert_eq!(r[2], json!("Init:0/1"));
}

#[test]
fn restarts_with_last_termination() {
    let mut st = running("c0", true);
    st["restartCount"] = json!(3);
    st["lastState"] =
        json!({"terminated": {"exitCode": 1, "finishedAt": ago(Duration::minutes(5))}});
    let p = pod(1, "Running", json!([st.clone()]));
    assert_eq!(row(&p)[3], json!("3 (5m ago)"));

    // No last termination time: just the number.
    st["lastState"] = json!({});
    assert_eq!(row(&pod(1, "Running", json!([st])))[3], json!("3"));
}

#[test]
fn restarts_after_init_drop_finished_init_containers() {
    // Upstream test11: a regular init container that restarted twice is not
    // counted once the pod is initialized; the app container's 4 restarts are.
    let mut app = running("c0", true);
    app["restartCount"] = json!(4);
    app["lastState"] =
        json!({"terminated": {"exitCode": 1, "finishedAt": ago(Duration::seconds(20))}});
    let mut p = pod(1, "Running", json!([app]));
    p = with_init(
        p,
        &["i0"],
        json!([{"name": "i0", "ready": false, "restartCount": 2,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::seconds(10))}}}]),
    );
    p["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"}]);
    assert_eq!(row(&p)[3], json!("4 (20s ago)"));
}

#[test]
fn restarts_count_sidecars() {
    let mut app = running("c0", true);
    app["restartCount"] = json!(1);
    let mut p = pod(1, "Running", json!([app]));
    p["spec"]["initContainers"] = json!([{"name": "side", "restartPolicy": "Always"}]);
    p["status"]["initContainerStatuses"] = json!([{"name": "side", "ready": true, "started": true, "restartCount": 2,
        "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::hours(3))}}}]);
    p["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"}]);
    assert_eq!(row(&p)[3], json!("3 (3h ago)"));
}

#[test]
fn wide_columns() {
    let mut p = pod(1, "Running", json!([running("c0", true)]));
    let r = row(&p);
    assert_eq!(r.len(), pod_status::columns().len());
    assert_eq!(
        &r[5..],
        &[
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );

    p["spec"]["nodeName"] = json!("node-1");
    p["status"]["podIPs"] = json!([{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]);
    p["status"]["nominatedNodeName"] = json!("node-2");
    p["spec"]["readinessGates"] = json!([{"conditionType": "a/x"}, {"conditionType": "a/y"}]);
    p["status"]["conditions"] =
        json!([{"type": "a/x", "status": "True"}, {"type": "a/y", "status": "False"}]);
    let r = row(&p);
    assert_eq!(
        &r[5..],
        &[
            json!("10.0.0.5"),
            json!("node-1"),
            json!("node-2"),
            json!("1/2")
        ]
    );
    assert_eq!(r[4], json!("10m"));

    p["status"]["podIP"] = json!("10.0.0.9");
    assert_eq!(row(&p)[5], json!("10.0.0.9"));
}
