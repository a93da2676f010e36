//! Workload controllers (Deployment, ReplicaSet, ReplicationController) driven
//! through the real kubectl. No node agent runs here, so the test plays the
//! kubelet's part itself: `mark_ready` sets every pod Running and Ready.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use e2e::{eventually, Server};
use serde_json::Value;

fn items(s: &Server, args: &[&str]) -> Vec<Value> {
    s.json(args)["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The kubelet's part: every live pod in `ns` becomes Running and Ready.
/// Returns how many live pods were already ready before this call.
fn mark_ready(s: &Server, ns: &str) -> usize {
    let pods = items(s, &["get", "pods", "-n", ns]);
    let live: Vec<&Value> = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
    for p in live.iter().filter(|p| !is_ready(p)) {
        let name = p["metadata"]["name"].as_str().unwrap();
        let patch = r#"{"status":{"phase":"Running","podIP":"10.42.0.9","conditions":[{"type":"PodScheduled","status":"True"},{"type":"Initialized","status":"True"},{"type":"ContainersReady","status":"True"},{"type":"Ready","status":"True"}]}}"#;
        // The pod may be gone by now; the next round sees the truth.
        let _ = s.kubectl(&["patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch]);
    }
    live.iter().filter(|p| is_ready(p)).count()
}

/// Runs `f` while a background loop keeps marking pods ready; returns `f`'s
/// result and the fewest ready pods seen at any point.
fn with_kubelet<T>(s: &Server, ns: &str, f: impl FnOnce() -> T) -> (T, i64) {
    let stop = AtomicBool::new(false);
    let min_ready = AtomicI64::new(i64::MAX);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let ready = mark_ready(s, ns) as i64;
                min_ready.fetch_min(ready, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        let out = f();
        stop.store(true, Ordering::SeqCst);
        out
    });
    (out, min_ready.load(Ordering::SeqCst))
}

fn replicasets(s: &Server, ns: &str) -> Vec<Value> {
    items(s, &["get", "rs", "-n", ns, "-l", "app=web"])
}

fn rs_by_revision(s: &Server, ns: &str, rev: &str) -> Value {
    replicasets(s, ns)
        .into_iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == rev)
        .unwrap_or_else(|| panic!("no replica set with revision {rev}"))
}

fn rollout_ok(s: &Server, ns: &str) {
    let out = s.ok(&["rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn deployment_rolls_out_updates_undoes_scales_and_pauses() {
    let s = Server::start();
    let ns = "wl-deploy";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns]);

    // One ReplicaSet `web-<hash>` with the hash in its selector, and three pods it controls.
    let rs = eventually(20, "the first replica set", || replicasets(&s, ns).into_iter().next());
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(rs["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let pods = eventually(20, "three pods", || Some(items(&s, &["get", "pods", "-n", ns])).filter(|p| p.len() == 3));
    for p in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["name"], format!("web-{hash}"));
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")) && name.len() == format!("web-{hash}-").len() + 5, "{name}");
    }
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    let d = s.json(&["get", "deployment", "web", "-n", ns]);
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Available" && c["status"] == "True" && c["reason"] == "MinimumReplicasAvailable"), "{conds:?}");
    assert!(conds.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"), "{conds:?}");

    // A new image rolls to a second ReplicaSet; with maxUnavailable 25% of 3 (= 0)
    // there are never fewer than three ready pods.
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.27", "-n", ns]);
    let ((), min_ready) = with_kubelet(&s, ns, || rollout_ok(&s, ns));
    assert!(min_ready >= 3, "only {min_ready} ready pods during the rollout");
    let rs2 = rs_by_revision(&s, ns, "2");
    assert_ne!(rs2["metadata"]["name"], rs["metadata"]["name"]);
    assert_eq!(rs2["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
    let old = s.json(&["get", "rs", rs["metadata"]["name"].as_str().unwrap(), "-n", ns]);
    assert_eq!(old["spec"]["replicas"], 0);
    let history = s.ok(&["rollout", "history", "deployment/web", "-n", ns]);
    assert!(history.contains("REVISION") && history.contains('1') && history.contains('2'), "{history}");

    // Undo goes back to the first ReplicaSet, which becomes revision 3.
    s.ok(&["rollout", "undo", "deployment/web", "-n", ns]);
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    let rs3 = rs_by_revision(&s, ns, "3");
    assert_eq!(rs3["metadata"]["name"], rs["metadata"]["name"]);
    assert_eq!(rs3["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(rs3["spec"]["replicas"], 3);
    let d = s.json(&["get", "deployment", "web", "-n", ns]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");

    // Scaling.
    s.ok(&["scale", "deployment/web", "--replicas=5", "-n", ns]);
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    assert_eq!(items(&s, &["get", "pods", "-n", ns]).len(), 5);
    assert_eq!(s.json(&["get", "deployment", "web", "-n", ns])["status"]["availableReplicas"], 5);

    // Paused: template changes wait, scaling still applies.
    s.ok(&["rollout", "pause", "deployment/web", "-n", ns]);
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28", "-n", ns]);
    s.ok(&["scale", "deployment/web", "--replicas=4", "-n", ns]);
    eventually(20, "the paused deployment scaled to 4", || {
        let rs = rs_by_revision(&s, ns, "3");
        (rs["spec"]["replicas"] == 4).then_some(())
    });
    let d = eventually(20, "the paused condition", || {
        let d = s.json(&["get", "deployment", "web", "-n", ns]);
        let paused = d["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused");
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(d)
    });
    assert_eq!(d["status"]["replicas"], 4);
    assert_eq!(replicasets(&s, ns).len(), 2, "no rollout while paused");
    s.ok(&["rollout", "resume", "deployment/web", "-n", ns]);
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    let rs4 = rs_by_revision(&s, ns, "4");
    assert_eq!(rs4["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(rs4["spec"]["replicas"], 4);

    // Restart: a template annotation change makes a new ReplicaSet.
    s.ok(&["rollout", "restart", "deployment/web", "-n", ns]);
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    let rs5 = rs_by_revision(&s, ns, "5");
    assert!(rs5["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    let live: Vec<Value> = items(&s, &["get", "pods", "-n", ns]);
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|p| p["metadata"]["ownerReferences"][0]["name"] == rs5["metadata"]["name"]));

    // Events with upstream reasons and messages.
    let events = s.ok(&["get", "events", "-n", ns]);
    assert!(events.contains("ScalingReplicaSet") && events.contains("Scaled up replica set web-"), "{events}");
    assert!(events.contains("SuccessfulCreate") && events.contains("Created pod: web-"), "{events}");
    assert!(events.contains("SuccessfulDelete") || events.contains("Scaled down replica set"), "{events}");
}

#[test]
fn recreate_and_revision_history_limit() {
    let s = Server::start();
    let ns = "wl-recreate";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", ns]);
    s.ok(&["patch", "deployment", "web", "-n", ns, "--type=merge", "-p", r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null},"revisionHistoryLimit":1}}"#]);
    with_kubelet(&s, ns, || rollout_ok(&s, ns));
    for image in ["nginx:1.26", "nginx:1.27", "nginx:1.28"] {
        s.ok(&["set", "image", "deployment/web", &format!("nginx={image}"), "-n", ns]);
        with_kubelet(&s, ns, || rollout_ok(&s, ns));
    }
    // The current ReplicaSet plus one old one are kept.
    let names = eventually(20, "old replica sets cleaned up", || Some(replicasets(&s, ns)).filter(|r| r.len() == 2));
    let revs: Vec<&str> = names.iter().map(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str().unwrap()).collect();
    assert!(revs.contains(&"4") && revs.contains(&"3"), "{revs:?}");
}

#[test]
fn replicaset_adopts_and_releases_pods_and_rc_scales() {
    let s = Server::start();
    let ns = "wl-rs";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["run", "orphan", "--image=nginx", "--labels=app=orph", "-n", ns]);
    let rs = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"orph"},
      "spec":{"replicas":2,"selector":{"matchLabels":{"app":"orph"}},
      "template":{"metadata":{"labels":{"app":"orph"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#;
    let out = s.apply_stdin(&["apply", "-n", ns, "-f", "-"], rs);
    assert!(out.ok(), "{}", out.stderr);
    // The orphan is adopted, and only one more pod is made.
    eventually(20, "the orphan adopted", || {
        let p = s.json(&["get", "pod", "orphan", "-n", ns]);
        (p["metadata"]["ownerReferences"][0]["name"] == "orph" && p["metadata"]["ownerReferences"][0]["controller"] == true).then_some(())
    });
    let pods = eventually(20, "two pods", || Some(items(&s, &["get", "pods", "-n", ns, "-l", "app=orph"])).filter(|p| p.len() == 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(items(&s, &["get", "pods", "-n", ns, "-l", "app=orph"]).len(), 2, "no extra pods: {pods:?}");
    mark_ready(&s, ns);
    eventually(20, "readyReplicas 2", || (s.json(&["get", "rs", "orph", "-n", ns])["status"]["readyReplicas"] == 2).then_some(()));

    // Relabelled, the orphan is released and replaced.
    s.ok(&["label", "pod", "orphan", "app=gone", "--overwrite", "-n", ns]);
    eventually(20, "the pod released", || {
        let p = s.json(&["get", "pod", "orphan", "-n", ns]);
        p["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()).then_some(())
    });
    eventually(20, "a replacement", || (items(&s, &["get", "pods", "-n", ns, "-l", "app=orph"]).len() == 2).then_some(()));

    // A ReplicationController scales through the same code.
    let rc = r#"{"apiVersion":"v1","kind":"ReplicationController","metadata":{"name":"legacy"},
      "spec":{"replicas":2,"selector":{"app":"legacy"},
      "template":{"metadata":{"labels":{"app":"legacy"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#;
    let out = s.apply_stdin(&["apply", "-n", ns, "-f", "-"], rc);
    assert!(out.ok(), "{}", out.stderr);
    let s = &s;
    let count = |n: usize| move || (items(s, &["get", "pods", "-n", ns, "-l", "app=legacy"]).len() == n).then_some(());
    eventually(20, "two rc pods", count(2));
    s.ok(&["scale", "rc", "legacy", "--replicas=4", "-n", ns]);
    eventually(20, "four rc pods", count(4));
    mark_ready(s, ns);
    eventually(20, "rc status", || {
        let st = &s.json(&["get", "rc", "legacy", "-n", ns])["status"];
        (st["replicas"] == 4 && st["readyReplicas"] == 4 && st["availableReplicas"] == 4).then_some(())
    });
    s.ok(&["scale", "rc", "legacy", "--replicas=1", "-n", ns]);
    eventually(20, "one rc pod", count(1));
    let owner = &items(s, &["get", "pods", "-n", ns, "-l", "app=legacy"])[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicationController");
}

#[test]
fn many_similar_events_are_combined_and_rate_limited() {
    let s = Server::start();
    let ns = "wl-events";
    s.ok(&["create", "namespace", ns]);
    let rs = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"many"},
      "spec":{"replicas":40,"selector":{"matchLabels":{"app":"many"}},
      "template":{"metadata":{"labels":{"app":"many"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#;
    let out = s.apply_stdin(&["apply", "-n", ns, "-f", "-"], rs);
    assert!(out.ok(), "{}", out.stderr);
    eventually(30, "40 pods", || (items(&s, &["get", "pods", "-n", ns, "-l", "app=many"]).len() == 40).then_some(()));
    let about_rs = ["get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ReplicaSet,involvedObject.name=many"];
    // Nine events name their pod; from the tenth on they fold into one
    // combined event whose count keeps rising, until the object's burst of
    // 25 writes is spent.
    let combined = |e: &Value| e["message"].as_str().is_some_and(|m| m.starts_with("(combined from similar events): Created pod: many-"));
    eventually(20, "the combined event", || items(&s, &about_rs).iter().any(combined).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let events = items(&s, &about_rs);
    assert_eq!(events.len(), 10, "nine single events and one combined: {events:?}");
    let combined = events.iter().find(|e| combined(e)).unwrap();
    // 25 writes in all: 10 creations, then 15 count bumps of the combined event.
    assert_eq!(combined["count"], 16, "{combined}");
    assert!(events.iter().all(|e| e["reason"] == "SuccessfulCreate" && e["source"]["component"] == "replicaset-controller"), "{events:?}");
}
