//! Jobs, CronJobs, the TTL-after-finished controller and the
//! HorizontalPodAutoscaler (with `kubectl top` reading the resource metrics
//! API) against real containers (busybox-static imported into the node),
//! driven by the real kubectl. The checks run concurrently on one server,
//! the CronJob's minute-long cadence setting the pace. Needs root (as CI runs).

use std::collections::BTreeSet;
use std::process::Command;

use e2e::{eventually, skiff_bin, Server};
use runtime::images::testimage;
use serde_json::Value;

const IMAGE: &str = "e2e.local/busybox:batch";

/// A Job manifest: `extra` is spliced into its spec, `pod_extra` into the pod spec.
fn job(name: &str, extra: &str, command: &str, pod_extra: &str) -> String {
    format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job", "metadata": {{"name": "{name}"}},
  "spec": {{ {extra} "template": {{"spec": {{"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, {pod_extra}
    "containers": [{{"name": "main", "image": "{IMAGE}", "command": ["sh", "-c", {command:?}]}}]}}}}}}}}"#
    )
}

fn wait_condition(s: &Server, job: &str, condition: &str) {
    let out = s.kubectl(&["wait", &format!("--for=condition={condition}"), &format!("job/{job}"), "--timeout=150s"]);
    assert!(out.ok(), "job {job} not {condition}: {}\n{}\n{}", out.stderr, s.ok(&["describe", "job", job]), s.ok(&["get", "pods", "-o", "wide"]));
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn job_pods(s: &Server, job: &str) -> Vec<Value> {
    s.json(&["get", "pods", "-l", &format!("batch.kubernetes.io/job-name={job}")])["items"].as_array().cloned().unwrap_or_default()
}

fn events(s: &Server, name: &str, reason: &str) -> usize {
    let list = s.json(&["get", "events", "--field-selector", &format!("involvedObject.name={name},reason={reason}")]);
    list["items"].as_array().map_or(0, |items| items.iter().map(|e| e["count"].as_u64().unwrap_or(1) as usize).sum())
}

fn completions_and_parallelism(s: &Server) {
    s.apply(&job("five", r#""completions": 5, "parallelism": 2,"#, "sleep 1", ""));
    wait_condition(s, "five", "complete");
    let j = s.json(&["get", "job", "five"]);
    assert_eq!(j["status"]["succeeded"], 5, "{j}");
    assert_eq!(condition(&j, "Complete").unwrap()["reason"], "CompletionsReached", "{j}");
    assert_eq!(condition(&j, "SuccessCriteriaMet").unwrap()["status"], "True", "{j}");
    assert!(j["status"]["completionTime"].is_string() && j["status"]["startTime"].is_string(), "{j}");
    // The pods carry upstream's labels, and no finalizer once counted.
    let pods = job_pods(s, "five");
    assert_eq!(pods.len(), 5);
    for p in &pods {
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["job-name"], "five");
        assert_eq!(labels["controller-uid"], j["metadata"]["uid"]);
        assert!(p["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()), "{p}");
    }
    assert_eq!(events(s, "five", "SuccessfulCreate"), 5);
    assert_eq!(events(s, "five", "Completed"), 1);
}

fn backoff_limit(s: &Server) {
    s.apply(&job("failing", r#""backoffLimit": 1,"#, "exit 1", ""));
    wait_condition(s, "failing", "failed");
    let j = s.json(&["get", "job", "failing"]);
    assert_eq!(j["status"]["failed"], 2, "{j}");
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!((&failed["reason"], &failed["message"]), (&Value::from("BackoffLimitExceeded"), &Value::from("Job has reached the specified backoff limit")));
    assert_eq!(condition(&j, "FailureTarget").unwrap()["reason"], "BackoffLimitExceeded");
    assert!(events(s, "failing", "BackoffLimitExceeded") >= 1);
    // The second pod waited out the back-off (10 s after the first failure).
    let mut starts: Vec<String> = job_pods(s, "failing").iter().map(|p| p["metadata"]["creationTimestamp"].as_str().unwrap().to_string()).collect();
    starts.sort();
    let t = |s: &str| chrono_secs(s);
    assert!(t(&starts[1]) - t(&starts[0]) >= 10, "{starts:?}");
}

/// Seconds of an RFC 3339 UTC timestamp ("2024-01-01T10:00:05Z"), from the day's start; enough for a gap of seconds.
fn chrono_secs(s: &str) -> i64 {
    let time = s.split('T').nth(1).unwrap_or("").trim_end_matches('Z');
    let day: i64 = s.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(0);
    let parts: Vec<i64> = time.split(':').map(|p| p.parse().unwrap_or(0)).collect();
    day * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
}

fn indexed(s: &Server) {
    let extra = r#""completions": 3, "parallelism": 3, "completionMode": "Indexed","#;
    s.apply(&job("indexed", extra, "echo index=$JOB_COMPLETION_INDEX host=$(hostname)", ""));
    wait_condition(s, "indexed", "complete");
    let j = s.json(&["get", "job", "indexed"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    for p in job_pods(s, "indexed") {
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap().to_string();
        assert_eq!(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"], i.as_str());
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("indexed-{i}-")), "{name}");
        let logs = s.ok(&["logs", name]);
        assert_eq!(logs.trim(), format!("index={i} host=indexed-{i}"));
    }
}

fn pod_failure_policy(s: &Server) {
    // The first pod exits 3 (ignored by the policy), its replacement succeeds;
    // a marker on the host tells them apart.
    let marker = s.dir.path().join("policy-marker");
    std::fs::create_dir_all(&marker).unwrap();
    let extra = r#""backoffLimit": 0, "podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}]},"#;
    let volumes = format!(r#""volumes": [{{"name": "m", "hostPath": {{"path": "{}"}}}}],"#, marker.display());
    let manifest = job("ignore", extra, "if [ -e /m/seen ]; then exit 0; fi; touch /m/seen; exit 3", &volumes)
        .replace(r#""command""#, r#""volumeMounts": [{"name": "m", "mountPath": "/m"}], "command""#);
    s.apply(&manifest);
    wait_condition(s, "ignore", "complete");
    let j = s.json(&["get", "job", "ignore"]);
    // The ignored failure is not counted (upstream leaves a zero counter out).
    assert_eq!((j["status"]["succeeded"].as_i64(), j["status"]["failed"].as_i64().unwrap_or(0)), (Some(1), 0), "{j}");
    assert_eq!(job_pods(s, "ignore").len(), 2);
}

fn ttl_after_finished(s: &Server) {
    s.apply(&job("short-lived", r#""ttlSecondsAfterFinished": 2,"#, "true", ""));
    wait_condition(s, "short-lived", "complete");
    eventually(60, "the finished Job to be deleted", || (!s.kubectl(&["get", "job", "short-lived"]).ok()).then_some(()));
    eventually(60, "its pods to be deleted", || job_pods(s, "short-lived").is_empty().then_some(()));
}

fn suspend_and_resume(s: &Server) {
    s.apply(&job("held", r#""suspend": true,"#, "true", ""));
    eventually(30, "the Suspended condition", || {
        let j = s.json(&["get", "job", "held"]);
        (condition(&j, "Suspended").is_some_and(|c| c["status"] == "True" && c["reason"] == "JobSuspended")).then_some(())
    });
    let j = s.json(&["get", "job", "held"]);
    assert!(j["status"]["startTime"].is_null(), "{j}");
    assert!(job_pods(s, "held").is_empty(), "a suspended Job made pods");
    s.ok(&["patch", "job", "held", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    wait_condition(s, "held", "complete");
    let j = s.json(&["get", "job", "held"]);
    assert_eq!(condition(&j, "Suspended").unwrap()["reason"], "JobResumed", "{j}");
    assert!(events(s, "held", "Resumed") >= 1);
}

/// Jobs whose controller is the CronJob.
fn cron_children(s: &Server, cron: &str) -> Vec<Value> {
    let jobs = s.json(&["get", "jobs"]);
    let owned = |j: &&Value| j["metadata"]["ownerReferences"].as_array().is_some_and(|r| r.iter().any(|o| o["kind"] == "CronJob" && o["name"] == cron));
    jobs["items"].as_array().unwrap().iter().filter(owned).cloned().collect()
}

fn cronjob(s: &Server) {
    let manifest = format!(
        r#"{{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {{"name": "minutely"}},
  "spec": {{"schedule": "* * * * *", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
    "jobTemplate": {{"spec": {{"template": {{"spec": {{"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
      "containers": [{{"name": "main", "image": "{IMAGE}", "command": ["true"]}}]}}}}}}}}}}}}"#
    );
    s.apply(&manifest);
    // A Job run by hand from a (suspended) CronJob's template; kubectl builds it client-side.
    s.apply(&manifest.replace(r#""name": "minutely""#, r#""name": "on-demand""#).replace(r#""schedule""#, r#""suspend": true, "schedule""#));
    s.ok(&["create", "job", "--from=cronjob/on-demand", "by-hand"]);
    wait_condition(s, "by-hand", "complete");
    assert_eq!(cron_children(s, "on-demand").len(), 1);

    let mut seen = BTreeSet::new();
    eventually(200, "two scheduled Jobs, only the newest kept", || {
        let scheduled = cron_children(s, "minutely");
        for j in &scheduled {
            let name = j["metadata"]["name"].as_str().unwrap().to_string();
            // NAME-<minutes since the epoch>, and the scheduled time as an annotation.
            let minutes: i64 = name.trim_start_matches("minutely-").parse().unwrap();
            let stamp = j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap_or("");
            // The activation time (in the host's zone) is on a whole minute.
            assert!(stamp.get(17..19) == Some("00") && minutes > 0, "{stamp} {name}");
            seen.insert(name);
        }
        let succeeded = scheduled.iter().filter(|j| condition(j, "Complete").is_some_and(|c| c["status"] == "True")).count();
        (seen.len() >= 2 && succeeded <= 1 && scheduled.len() <= 2).then_some(())
    });
    let first = seen.iter().next().unwrap().clone();
    eventually(60, "the oldest scheduled Job to be deleted by the history limit", || {
        (!cron_children(s, "minutely").iter().any(|j| j["metadata"]["name"] == first.as_str())).then_some(())
    });
    let cj = s.json(&["get", "cronjob", "minutely"]);
    assert!(cj["status"]["lastScheduleTime"].is_string() && cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    assert!(events(s, "minutely", "SuccessfulCreate") >= 2);
    s.ok(&["delete", "cronjob", "minutely"]);
}

/// A Deployment whose pods burn CPU (each limited to 200m of the 100m they
/// request) scales up to its HPA's maximum, and back down once it idles.
fn autoscaling(s: &Server) {
    let deployment = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "burn"}},
  "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "burn"}}}},
    "template": {{"metadata": {{"labels": {{"app": "burn"}}}}, "spec": {{"terminationGracePeriodSeconds": 1,
      "containers": [{{"name": "burn", "image": "{IMAGE}", "command": ["sh", "-c", "while :; do :; done"],
        "resources": {{"requests": {{"cpu": "100m"}}, "limits": {{"cpu": "200m"}}}}}}]}}}}}}}}"#
    );
    s.apply(&deployment);
    s.ok(&["autoscale", "deployment", "burn", "--cpu-percent=50", "--min=1", "--max=3"]);
    // No five-minute wait on the way down.
    s.ok(&["patch", "hpa", "burn", "--type=merge", "-p", r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#]);

    let top = eventually(90, "kubectl top pods to show the burner", || {
        let out = s.kubectl(&["top", "pods", "-l", "app=burn", "--no-headers"]);
        let cpu: u64 = out.stdout.split_whitespace().nth(1)?.strip_suffix('m')?.parse().ok()?;
        (out.ok() && cpu >= 50).then_some(out.stdout)
    });
    assert!(top.starts_with("burn-"), "{top}");
    let nodes = s.ok(&["top", "nodes", "--no-headers"]);
    assert!(nodes.split_whitespace().nth(2).is_some_and(|c| c.ends_with('%')), "kubectl top nodes: {nodes}");
    let containers = s.ok(&["top", "pods", "-l", "app=burn", "--containers", "--no-headers"]);
    assert!(containers.split_whitespace().nth(1) == Some("burn"), "{containers}");

    eventually(150, "the HPA to scale burn up to 3", || {
        (s.json(&["get", "deployment", "burn"])["spec"]["replicas"] == 3).then_some(())
    });
    let hpa = s.json(&["get", "hpa", "burn"]);
    let cpu = &hpa["status"]["currentMetrics"][0]["resource"];
    assert_eq!(cpu["name"], "cpu", "{hpa}");
    assert!(cpu["current"]["averageUtilization"].as_i64().unwrap() > 50, "{hpa}");
    let conditions = hpa["status"]["conditions"].as_array().unwrap();
    let reason = |t: &str| conditions.iter().find(|c| c["type"] == t).map(|c| c["reason"].as_str().unwrap().to_string());
    assert_eq!(reason("ScalingActive").as_deref(), Some("ValidMetricFound"), "{hpa}");
    assert!(reason("AbleToScale").is_some(), "{hpa}");
    let table = s.ok(&["get", "hpa", "burn", "--no-headers"]);
    assert!(table.contains("Deployment/burn") && table.contains("%/50%") && table.contains("cpu: "), "kubectl get hpa: {table}");
    let rescaled = s.json(&["get", "events", "--field-selector", "involvedObject.name=burn,reason=SuccessfulRescale"]);
    let message = rescaled["items"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.starts_with("New size: ") && message.ends_with("cpu resource utilization (percentage of request) above target"), "{message}");

    // Idle pods: back to the minimum.
    s.ok(&["patch", "deployment", "burn", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#]);
    eventually(240, "the HPA to scale burn back down to 1", || {
        (s.json(&["get", "deployment", "burn"])["spec"]["replicas"] == 1).then_some(())
    });
    s.ok(&["delete", "hpa", "burn"]);
    s.ok(&["delete", "deployment", "burn"]);
}

#[test]
fn jobs_cronjobs_ttl_and_autoscaling_run_real_pods() {
    let s = Server::start_node();
    s.wait_node_ready();
    let tar = s.dir.path().join("busybox.tar");
    std::fs::write(&tar, testimage::docker_save_tar(IMAGE, &testimage::busybox_layer_tar())).unwrap();
    let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&tar).arg("--data-dir").arg(s.dir.path()).output().unwrap();
    assert!(out.status.success(), "skiff image import: {}", String::from_utf8_lossy(&out.stderr));

    let checks: [(&str, fn(&Server)); 8] = [
        ("cronjob", cronjob),
        ("autoscaling", autoscaling),
        ("completions", completions_and_parallelism),
        ("backoff", backoff_limit),
        ("indexed", indexed),
        ("policy", pod_failure_policy),
        ("ttl", ttl_after_finished),
        ("suspend", suspend_and_resume),
    ];
    std::thread::scope(|scope| {
        let running: Vec<_> = checks.iter().map(|(what, check)| (*what, scope.spawn(|| check(&s)))).collect();
        let failed: Vec<&str> = running.into_iter().filter_map(|(what, h)| h.join().is_err().then_some(what)).collect();
        assert!(failed.is_empty(), "failed checks: {failed:?}\n--- server log tail ---\n{}", tail(&s.log(), 60));
    });
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
