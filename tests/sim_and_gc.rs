//! `skiff sim` nodes and the garbage collector, driven through the real kubectl.

use e2e::{eventually, Server, Sim};

#[test]
fn simulated_nodes_run_pods() {
    let s = Server::start();
    let _sim = Sim::start(&s, 3, "simtest-");
    let nodes = eventually(30, "3 Ready simulated nodes", || {
        let out = s.kubectl(&["get", "nodes", "--no-headers"]);
        let ready = out.stdout.lines().filter(|l| l.contains(" Ready ") && l.contains("v1.33.4-skiff")).count();
        (out.ok() && ready == 3).then_some(out.stdout)
    });
    assert!(nodes.contains("simtest-0") && nodes.contains("simtest-2"), "{nodes}");
    let labels = s.ok(&["get", "node", "simtest-1", "-o", "jsonpath={.metadata.labels}"]);
    assert!(labels.contains("\"node.kubernetes.io/instance-type\":\"skiff-sim\""), "{labels}");
    let alloc = s.ok(&["get", "node", "simtest-1", "-o", "jsonpath={.status.allocatable.cpu}/{.status.allocatable.pods}"]);
    assert_eq!(alloc, "8/110");
    eventually(20, "node leases", || {
        let out = s.kubectl(&["get", "lease", "simtest-1", "-n", "kube-node-lease", "-o", "jsonpath={.spec.holderIdentity}"]);
        (out.ok() && out.stdout == "simtest-1").then_some(())
    });

    // A pod bound to a simulated node runs, with an IP.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim-web"},
        "spec": {"nodeName": "simtest-1", "containers": [{"name": "web", "image": "nginx:1.27"}]}}"#;
    s.apply_stdin(&["apply", "-f", "-"], pod);
    let wide = eventually(30, "pod Running 1/1", || {
        let out = s.kubectl(&["get", "pod", "sim-web", "-o", "wide", "--no-headers"]);
        (out.ok() && out.stdout.contains(" 1/1 ") && out.stdout.contains("Running")).then_some(out.stdout)
    });
    let ip = s.ok(&["get", "pod", "sim-web", "-o", "jsonpath={.status.podIP}"]);
    assert!(ip.starts_with("10."), "podIP {ip:?}");
    assert!(wide.contains(&ip) && wide.contains("simtest-1"), "{wide}");
    let cid = s.ok(&["get", "pod", "sim-web", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    assert!(cid.starts_with("skiff-sim://"), "{cid}");

    // A readiness gate holds Ready until its condition is True.
    let gated = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim-gated"},
        "spec": {"nodeName": "simtest-2", "readinessGates": [{"conditionType": "example.com/ok"}],
                 "containers": [{"name": "c", "image": "busybox"}]}}"#;
    s.apply_stdin(&["apply", "-f", "-"], gated);
    let ready = |s: &Server| s.kubectl(&["get", "pod", "sim-gated", "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#]).stdout;
    eventually(30, "gated pod running, not ready", || (ready(&s) == "False").then_some(()));
    s.ok(&["patch", "pod", "sim-gated", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"conditions":[{"type":"example.com/ok","status":"True"}]}}"#]);
    eventually(30, "gated pod ready", || (ready(&s) == "True").then_some(()));

    // Deleting stops the pod promptly (its containers exit on SIGTERM).
    let started = std::time::Instant::now();
    s.ok(&["delete", "pod", "sim-web", "--timeout=20s"]);
    assert!(started.elapsed().as_secs() < 10, "delete took {:?}", started.elapsed());
    s.fails(&["get", "pod", "sim-web"]);
    s.ok(&["delete", "pod", "sim-gated", "--timeout=20s"]);

    // An annotation makes a deleted pod use its whole grace period.
    let slow = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim-slow", "annotations": {"sim.skiff.dev/use-grace-period": "true"}},
        "spec": {"nodeName": "simtest-0", "terminationGracePeriodSeconds": 6, "containers": [{"name": "c", "image": "busybox"}]}}"#;
    s.apply_stdin(&["apply", "-f", "-"], slow);
    eventually(30, "sim-slow running", || s.ok(&["get", "pod", "sim-slow"]).contains("Running").then_some(()));
    let started = std::time::Instant::now();
    s.ok(&["delete", "pod", "sim-slow", "--wait=false"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(s.ok(&["get", "pod", "sim-slow"]).contains("Terminating"), "sim-slow should stay for its 6 s grace period");
    eventually(20, "sim-slow gone", || (!s.kubectl(&["get", "pod", "sim-slow"]).ok()).then_some(()));
    assert!(started.elapsed().as_secs() >= 5, "sim-slow went after {:?}", started.elapsed());

    // A Job's pod succeeds when its annotation says so. (The owner must
    // exist: the garbage collector deletes pods whose owner is gone. Its
    // managedBy names another controller, so the Job controller leaves it
    // and the pod made here by hand alone.)
    let job = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": {"managedBy": "skiff.dev/e2e",
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    assert!(s.apply_stdin(&["apply", "-f", "-"], job).ok());
    let job_uid = s.ok(&["get", "job", "x", "-o", "jsonpath={.metadata.uid}"]);
    let job_pod = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "sim-job-x", "annotations": {{"sim.skiff.dev/succeed-after": "2"}},
        "ownerReferences": [{{"apiVersion": "batch/v1", "kind": "Job", "name": "x", "uid": "{job_uid}", "controller": true}}]}},
        "spec": {{"nodeName": "simtest-0", "restartPolicy": "Never", "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
    );
    s.apply_stdin(&["apply", "-f", "-"], &job_pod);
    eventually(30, "the job's pod Completed", || {
        let out = s.ok(&["get", "pod", "sim-job-x", "--no-headers"]);
        (out.contains("Completed") && s.ok(&["get", "pod", "sim-job-x", "-o", "jsonpath={.status.phase}"]) == "Succeeded").then_some(())
    });
    let exit = s.ok(&["get", "pod", "sim-job-x", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"]);
    assert_eq!(exit, "0");
}

/// Stopping the sim stops its lease renewals: after the 40 s grace period
/// its nodes are NotReady (Ready=Unknown). With every node of the cluster
/// down at once the node controller assumes a partition of its own rather
/// than of the nodes (upstream's full-disruption mode): the nodes get the
/// NoSchedule taint but not the NoExecute one, so no pod is evicted.
#[test]
fn stopping_the_sim_makes_its_nodes_not_ready_without_evicting_everything() {
    let s = Server::start();
    let sim = Sim::start(&s, 2, "simstop-");
    eventually(30, "2 Ready simulated nodes", || {
        let out = s.kubectl(&["get", "nodes", "--no-headers"]);
        (out.ok() && out.stdout.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(())
    });
    s.ok(&["create", "deployment", "stay", "--image=nginx", "--replicas=4"]);
    let out = s.kubectl(&["rollout", "status", "deployment/stay", "--timeout=60s"]);
    assert!(out.ok(), "{}", out.stderr);
    drop(sim);
    eventually(90, "both nodes NotReady", || {
        let out = s.ok(&["get", "nodes", "--no-headers"]);
        (out.lines().filter(|l| l.contains(" NotReady ")).count() == 2).then_some(())
    });
    let ready = s.ok(&["get", "node", "simstop-0", "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#]);
    assert_eq!(ready, "Unknown");
    let taints = || s.ok(&["get", "nodes", "-o", "jsonpath={range .items[*]}{range .spec.taints[*]}{.key}:{.effect} {end}{end}"]);
    eventually(20, "unreachable NoSchedule taints", || (taints().matches("node.kubernetes.io/unreachable:NoSchedule").count() == 2).then_some(()));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!taints().contains("NoExecute"), "no NoExecute taint in full disruption: {}", taints());
    let events = s.ok(&["get", "events", "-A", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]);
    assert!(events.contains("NodeNotReady"), "{events}");
    assert_eq!(s.ok(&["get", "pods", "-l", "app=stay", "--no-headers"]).lines().count(), 4);
}

/// Creates ConfigMap `dependent` owned by ConfigMap `owner`.
fn owned_configmap(s: &Server, owner: &str, dependent: &str, block: bool, finalizer: bool) {
    s.ok(&["create", "configmap", owner]);
    let uid = s.ok(&["get", "configmap", owner, "-o", "jsonpath={.metadata.uid}"]);
    let finalizers = if finalizer { r#"["example.com/hold"]"# } else { "[]" };
    let cm = format!(
        r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{dependent}", "finalizers": {finalizers},
            "ownerReferences": [{{"apiVersion": "v1", "kind": "ConfigMap", "name": "{owner}", "uid": "{uid}", "blockOwnerDeletion": {block}}}]}}}}"#
    );
    let out = s.apply_stdin(&["create", "-f", "-"], &cm);
    assert!(out.ok(), "{}", out.stderr);
}

#[test]
fn garbage_collector_background_orphan_foreground() {
    let s = Server::start();

    // Background (the default): the dependent goes after its owner.
    owned_configmap(&s, "gc-owner-bg", "gc-dep-bg", false, false);
    s.ok(&["delete", "configmap", "gc-owner-bg"]);
    eventually(30, "background deletion of the dependent", || {
        (!s.kubectl(&["get", "configmap", "gc-dep-bg"]).ok()).then_some(())
    });

    // Orphan: the dependent stays, without the ownerReference.
    owned_configmap(&s, "gc-owner-or", "gc-dep-or", true, false);
    s.ok(&["delete", "configmap", "gc-owner-or", "--cascade=orphan", "--timeout=30s"]);
    s.fails(&["get", "configmap", "gc-owner-or"]);
    let refs = s.ok(&["get", "configmap", "gc-dep-or", "-o", "jsonpath={.metadata.ownerReferences}"]);
    assert!(!refs.contains("gc-owner-or"), "ownerReferences left: {refs}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    s.ok(&["get", "configmap", "gc-dep-or"]);

    // Foreground: the owner waits, with the foregroundDeletion finalizer,
    // until its blocking dependent is gone (held here by a finalizer).
    owned_configmap(&s, "gc-owner-fg", "gc-dep-fg", true, true);
    s.ok(&["delete", "configmap", "gc-owner-fg", "--cascade=foreground", "--wait=false"]);
    let fin = s.ok(&["get", "configmap", "gc-owner-fg", "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(fin.contains("foregroundDeletion"), "{fin}");
    eventually(30, "dependent being deleted", || {
        let out = s.kubectl(&["get", "configmap", "gc-dep-fg", "-o", "jsonpath={.metadata.deletionTimestamp}"]);
        (!out.stdout.is_empty()).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    s.ok(&["get", "configmap", "gc-owner-fg"]); // still there: its dependent is not gone yet
    s.ok(&["patch", "configmap", "gc-dep-fg", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    eventually(30, "owner gone after its dependent", || {
        (!s.kubectl(&["get", "configmap", "gc-owner-fg"]).ok()).then_some(())
    });
    s.fails(&["get", "configmap", "gc-dep-fg"]);

    // kubectl's own foreground delete waits for both.
    owned_configmap(&s, "gc-owner-fg2", "gc-dep-fg2", true, false);
    s.ok(&["delete", "configmap", "gc-owner-fg2", "--cascade=foreground", "--timeout=30s"]);
    s.fails(&["get", "configmap", "gc-dep-fg2"]);
}
