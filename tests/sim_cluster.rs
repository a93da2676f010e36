//! The control plane on `skiff sim` nodes, driven through the real kubectl:
//! rollouts, cordon/drain with a disruption budget, NoExecute taints,
//! topology spread and cascading deletes, as a user would run them.

use std::collections::{BTreeMap, HashMap};

use e2e::{eventually, Server, Sim};
use serde_json::Value;

const NODES: [&str; 4] = ["simc-0", "simc-1", "simc-2", "simc-3"];

fn cluster() -> (Server, Sim) {
    let s = Server::start();
    let sim = Sim::start(&s, NODES.len(), "simc-");
    eventually(60, "4 Ready simulated nodes", || {
        let out = s.kubectl(&["get", "nodes", "--no-headers"]);
        (out.ok() && out.stdout.lines().filter(|l| l.contains(" Ready ")).count() == NODES.len()).then_some(())
    });
    (s, sim)
}

/// Node of each pod matching `selector` (pods being deleted left out).
fn placement(s: &Server, selector: &str) -> BTreeMap<String, String> {
    s.json(&["get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p["spec"]["nodeName"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn rollout_ok(s: &Server, deployment: &str) {
    let out = s.kubectl(&["rollout", "status", &format!("deployment/{deployment}"), "--timeout=90s"]);
    assert!(out.ok(), "rollout status {deployment}: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("successfully rolled out"), "{}", out.stdout);
}

fn images(s: &Server, selector: &str) -> Vec<String> {
    let out = s.ok(&["get", "pods", "-l", selector, "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
    out.split_whitespace().map(str::to_string).collect()
}

/// Replays `kubectl get -w --output-watch-events -o json` output and returns
/// the fewest Ready pods seen once all `replicas` had first been Ready.
fn fewest_ready_after_full(watch_output: &str, replicas: usize) -> Option<usize> {
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut full = false;
    let mut fewest = None;
    for ev in serde_json::Deserializer::from_str(watch_output).into_iter::<Value>() {
        let Ok(ev) = ev else { break }; // the last event may be cut off
        let pod = &ev["object"];
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let is_ready = ev["type"] != "DELETED"
            && pod["metadata"]["deletionTimestamp"].is_null()
            && pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        ready.insert(name, is_ready);
        let count = ready.values().filter(|r| **r).count();
        full |= count >= replicas;
        if full {
            fewest = Some(fewest.map_or(count, |f: usize| f.min(count)));
        }
    }
    fewest
}

#[test]
fn deployments_roll_undo_and_place_pods_on_simulated_nodes() {
    let (s, _sim) = cluster();
    s.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=8"]);
    rollout_ok(&s, "web");
    let placed = placement(&s, "app=web");
    assert_eq!(placed.len(), 8);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in placed.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    // Least-allocated scoring spreads equal pods over equal nodes.
    assert_eq!(per_node.len(), 4, "pods should use every node: {per_node:?}");
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");

    // A rolling update never goes below replicas - maxUnavailable (8 - 25% = 6) Ready pods.
    let watch_file = s.dir.path().join("web-watch.json");
    let mut watch = s.kubectl_background(&["get", "pods", "-l", "app=web", "-w", "--output-watch-events", "-o", "json"], &watch_file);
    eventually(20, "the watch to list the 8 pods", || {
        let text = std::fs::read_to_string(&watch_file).unwrap_or_default();
        (fewest_ready_after_full(&text, 8).is_some()).then_some(())
    });
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    rollout_ok(&s, "web");
    eventually(20, "only new pods left", || {
        let imgs = images(&s, "app=web");
        (imgs.len() == 8 && imgs.iter().all(|i| i == "nginx:1.28")).then_some(())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let text = std::fs::read_to_string(&watch_file).unwrap();
    let fewest = fewest_ready_after_full(&text, 8).expect("the watch saw the pods");
    assert!(fewest >= 6, "Ready pods dropped to {fewest} during the rollout (maxUnavailable 2)");
    assert!(text.contains("nginx:1.28"), "the watch saw no new pods");

    // Undo returns to the first template.
    s.ok(&["rollout", "undo", "deployment/web"]);
    rollout_ok(&s, "web");
    eventually(20, "old image back", || {
        let imgs = images(&s, "app=web");
        (imgs.len() == 8 && imgs.iter().all(|i| i == "nginx:1.27")).then_some(())
    });
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // Topology spread: zone a = simc-0, simc-1; zone b = simc-2, simc-3.
    for (node, zone) in NODES.iter().zip(["a", "a", "b", "b"]) {
        s.ok(&["label", "node", node, &format!("topology.kubernetes.io/zone={zone}")]);
    }
    // Fill zone a more, so spreading has to push against least-allocated scoring.
    s.ok(&["create", "deployment", "filler", "--image=nginx", "--replicas=4"]);
    s.ok(&["patch", "deployment", "filler", "-p", r#"{"spec":{"template":{"spec":{"nodeSelector":{"topology.kubernetes.io/zone":"a"}}}}}"#]);
    rollout_ok(&s, "filler");
    let spread = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
      "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "spread"}},
        "template": {"metadata": {"labels": {"app": "spread"}}, "spec": {
          "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}],
          "containers": [{"name": "c", "image": "nginx"}]}}}}"#;
    s.apply_stdin(&["apply", "-f", "-"], spread);
    rollout_ok(&s, "spread");
    let zone_of = |node: &str| if node == "simc-0" || node == "simc-1" { "a" } else { "b" };
    let zones: Vec<&str> = placement(&s, "app=spread").values().map(|n| zone_of(n)).collect();
    let a = zones.iter().filter(|z| **z == "a").count();
    assert_eq!((a, zones.len() - a), (3, 3), "spread over zones: {zones:?}");

    // Anti-affinity by hostname: one per node; the fifth cannot be placed.
    let anti = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "solo"},
      "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "solo"}},
        "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {
          "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "solo"}}}]}},
          "containers": [{"name": "c", "image": "nginx"}]}}}}"#;
    s.apply_stdin(&["apply", "-f", "-"], anti);
    let pending = eventually(60, "4 placed, 1 pending", || {
        let placed = placement(&s, "app=solo");
        let nodes: std::collections::BTreeSet<&String> = placed.values().filter(|n| !n.is_empty()).collect();
        let pending: Vec<&String> = placed.iter().filter(|(_, n)| n.is_empty()).map(|(p, _)| p).collect();
        (placed.len() == 5 && nodes.len() == 4 && pending.len() == 1).then(|| pending[0].clone())
    });
    let describe = eventually(30, "FailedScheduling in describe", || {
        let d = s.ok(&["describe", "pod", &pending]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(describe.contains("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."), "{describe}");

    // Cascading deletes: orphan keeps the ReplicaSet and pods, foreground removes all before the owner.
    s.ok(&["delete", "deployment", "solo", "--cascade=orphan"]);
    assert_eq!(placement(&s, "app=solo").len(), 5);
    let rs = s.ok(&["get", "rs", "-l", "app=solo", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(!rs.is_empty(), "orphaned ReplicaSet should stay");
    s.ok(&["delete", "rs", "-l", "app=solo", "--cascade=foreground"]);
    eventually(60, "solo pods gone", || placement(&s, "app=solo").is_empty().then_some(()));
    s.ok(&["delete", "deployment", "spread", "--cascade=background"]);
    eventually(60, "spread pods gone", || placement(&s, "app=spread").is_empty().then_some(()));
}

#[test]
fn cordon_drain_with_a_budget_taints_and_namespace_deletion() {
    let (s, _sim) = cluster();
    s.ok(&["create", "deployment", "api", "--image=nginx", "--replicas=8"]);
    rollout_ok(&s, "api");
    s.ok(&["create", "pdb", "api", "--selector=app=api", "--max-unavailable=1"]);
    eventually(30, "budget allows 1", || (s.json(&["get", "pdb", "api"])["status"]["disruptionsAllowed"] == 1).then_some(()));

    // Cordon: new pods avoid the node.
    let on_0_before = placement(&s, "app=api").values().filter(|n| *n == "simc-0").count();
    s.ok(&["cordon", "simc-0"]);
    assert!(s.ok(&["get", "node", "simc-0"]).contains("SchedulingDisabled"));
    s.ok(&["scale", "deployment", "api", "--replicas=12"]);
    rollout_ok(&s, "api");
    let on_0 = placement(&s, "app=api").values().filter(|n| *n == "simc-0").count();
    assert_eq!(on_0, on_0_before, "only the pods from before the cordon stay on simc-0");

    // Drain evicts through the budget: kubectl asks for every pod at once,
    // the budget refuses all but one (429), kubectl retries, and it succeeds.
    let on_1 = placement(&s, "app=api").values().filter(|n| *n == "simc-1").count();
    assert!(on_1 >= 2, "12 pods over 3 schedulable nodes put {on_1} on simc-1");
    let out = s.kubectl(&["drain", "simc-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"]);
    assert!(out.ok(), "drain: {}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"), "{}", out.stderr);
    assert!(out.stdout.contains("evicted") && out.stdout.contains("drained"), "{}", out.stdout);
    assert!(!placement(&s, "app=api").values().any(|n| n == "simc-1"));
    rollout_ok(&s, "api");
    s.ok(&["uncordon", "simc-0"]);
    s.ok(&["uncordon", "simc-1"]);
    assert!(!s.ok(&["get", "nodes"]).contains("SchedulingDisabled"));

    // A NoExecute taint evicts pods that do not tolerate it; replacements land elsewhere.
    s.ok(&["taint", "node", "simc-2", "maintenance=now:NoExecute"]);
    eventually(60, "no api pods on simc-2", || (!placement(&s, "app=api").values().any(|n| n == "simc-2")).then_some(()));
    rollout_ok(&s, "api");
    s.ok(&["taint", "node", "simc-2", "maintenance=now:NoExecute-"]);

    // Deleting a namespace empties it, then removes it.
    s.ok(&["create", "namespace", "doomed"]);
    s.ok(&["create", "deployment", "tmp", "--image=nginx", "--replicas=3", "-n", "doomed"]);
    let out = s.kubectl(&["rollout", "status", "deployment/tmp", "-n", "doomed", "--timeout=60s"]);
    assert!(out.ok(), "{}", out.stderr);
    s.ok(&["delete", "namespace", "doomed", "--timeout=90s"]);
    s.fails(&["get", "namespace", "doomed"]);
    assert_eq!(s.ok(&["get", "pods", "-n", "doomed", "--no-headers"]), "");
}

/// The number of replicas each of the deployment's ReplicaSets asks for, by image.
fn rs_replicas(s: &Server, app: &str) -> BTreeMap<String, i64> {
    s.json(&["get", "rs", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| (rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string(), rs["spec"]["replicas"].as_i64().unwrap()))
        .collect()
}

#[test]
fn min_ready_seconds_progress_deadline_proportional_scaling_and_history() {
    let (s, _sim) = cluster();
    // minReadySeconds: Ready pods count as available only after 6 s.
    let slow = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "slow"},
      "spec": {"replicas": 3, "minReadySeconds": 6, "selector": {"matchLabels": {"app": "slow"}},
        "template": {"metadata": {"labels": {"app": "slow"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}"#;
    s.apply_stdin(&["apply", "-f", "-"], slow);
    let status = |s: &Server| s.json(&["get", "deployment", "slow"])["status"].clone();
    let at_ready = eventually(30, "3 ready replicas", || {
        let st = status(&s);
        (st["readyReplicas"] == 3).then(|| (std::time::Instant::now(), st["availableReplicas"].as_i64().unwrap_or(0)))
    });
    assert!(at_ready.1 < 3, "all 3 available as soon as Ready despite minReadySeconds");
    eventually(30, "3 available replicas", || (status(&s)["availableReplicas"] == 3).then_some(()));
    assert!(at_ready.0.elapsed().as_secs() >= 4, "available after {:?} of the 6 s minReadySeconds", at_ready.0.elapsed());
    rollout_ok(&s, "slow");

    // A rollout whose new pods never become Ready (a readiness gate nobody sets)
    // is stuck at replicas - maxUnavailable old pods plus maxSurge new ones.
    let prop = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "prop"},
      "spec": {"replicas": 10, "progressDeadlineSeconds": 8, "selector": {"matchLabels": {"app": "prop"}},
        "strategy": {"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}},
        "template": {"metadata": {"labels": {"app": "prop"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}"#;
    s.apply_stdin(&["apply", "-f", "-"], prop);
    rollout_ok(&s, "prop");
    let stuck = r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:2"}],"readinessGates":[{"conditionType":"example.com/never"}]}}}}"#;
    s.ok(&["patch", "deployment", "prop", "-p", stuck]);
    eventually(40, "old 8, new 5", || {
        let r = rs_replicas(&s, "prop");
        (r.get("nginx:1") == Some(&8) && r.get("nginx:2") == Some(&5)).then_some(())
    });
    // Scaling mid-rollout spreads the new replicas over both ReplicaSets in
    // proportion (upstream's e2e expects 20 and 13 for 30 replicas).
    s.ok(&["scale", "deployment", "prop", "--replicas=30"]);
    eventually(40, "old 20, new 13", || {
        let r = rs_replicas(&s, "prop");
        (r.get("nginx:1") == Some(&20) && r.get("nginx:2") == Some(&13)).then_some(())
    });
    // No progress for progressDeadlineSeconds: Progressing=False, and rollout status gives up.
    eventually(40, "ProgressDeadlineExceeded", || {
        let conds = s.json(&["get", "deployment", "prop"])["status"]["conditions"].clone();
        conds.as_array()?.iter().any(|c| c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded").then_some(())
    });
    let out = s.kubectl(&["rollout", "status", "deployment/prop", "--timeout=30s"]);
    assert!(!out.ok() && out.stderr.contains("exceeded its progress deadline"), "{}\n{}", out.stdout, out.stderr);

    // Back to revision 1 by number.
    let history = s.ok(&["rollout", "history", "deployment/prop"]);
    assert!(history.lines().any(|l| l.trim_start().starts_with('1')) && history.lines().any(|l| l.trim_start().starts_with('2')), "{history}");
    s.ok(&["rollout", "undo", "deployment/prop", "--to-revision=1"]);
    rollout_ok(&s, "prop");
    eventually(30, "only nginx:1 pods", || {
        let imgs = images(&s, "app=prop");
        (imgs.len() == 30 && imgs.iter().all(|i| i == "nginx:1")).then_some(())
    });
    let rev = s.ok(&["get", "deployment", "prop", "-o", r#"jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}"#]);
    assert_eq!(rev, "3", "an undo is a new revision");

    // Paused: template changes make no new ReplicaSet until resumed.
    s.ok(&["rollout", "pause", "deployment/prop"]);
    s.ok(&["set", "image", "deployment/prop", "c=nginx:3"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!rs_replicas(&s, "prop").contains_key("nginx:3"), "a paused deployment rolled out");
    let conds = s.json(&["get", "deployment", "prop"])["status"]["conditions"].clone();
    assert!(conds.as_array().unwrap().iter().any(|c| c["reason"] == "DeploymentPaused"), "{conds}");
    s.ok(&["rollout", "resume", "deployment/prop"]);
    rollout_ok(&s, "prop");
    assert_eq!(rs_replicas(&s, "prop").get("nginx:3"), Some(&30));

    // restart: a new ReplicaSet with the restartedAt annotation on its template.
    s.ok(&["rollout", "restart", "deployment/prop"]);
    rollout_ok(&s, "prop");
    eventually(30, "30 restarted pods and no others", || {
        let restarted = s.ok(&["get", "pods", "-l", "app=prop", "-o", r#"jsonpath={range .items[*]}{.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}{"\n"}{end}"#]);
        (restarted.lines().count() == 30 && restarted.lines().all(|l| !l.is_empty())).then_some(())
    });
}
