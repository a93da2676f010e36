//! The pod subresources that change a running pod, and RuntimeClasses, on a
//! real node: `kubectl debug` adding ephemeral containers (one sharing the
//! target container's PID namespace), `pods/resize` changing a running
//! container's cgroup limits in place, and the agent refusing a runtime
//! handler it does not have. Needs root (as CI runs).

use e2e::{eventually, registry_with_busybox, Server};
use serde_json::Value;

/// The pod's status of one ephemeral container, once it has one.
fn ephemeral_status(s: &Server, pod: &str, name: &str) -> Option<Value> {
    let p = s.json(&["get", "pod", pod]);
    p["status"]["ephemeralContainerStatuses"].as_array()?.iter().find(|c| c["name"] == name).cloned()
}

/// The container's CFS quota as its own cgroup shows it (v2 `cpu.max`, or v1).
fn cpu_quota(s: &Server, pod: &str) -> String {
    let read = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us";
    s.ok(&["exec", pod, "--", "sh", "-c", read]).trim().to_string()
}

#[test]
fn debug_resize_and_runtime_classes_on_a_real_pod() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    s.wait_node_ready();

    // A RuntimeClass for our runtime's handler runs pods; its overhead lands in the pod.
    s.apply("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: plain}\nhandler: runc\noverhead: {podFixed: {cpu: 10m}}\n");
    let header = s.ok(&["get", "runtimeclass"]);
    assert!(header.lines().next().unwrap().split_whitespace().eq(["NAME", "HANDLER", "AGE"]), "{header}");
    s.apply(&format!(r#"
apiVersion: v1
kind: Pod
metadata: {{name: app}}
spec:
  runtimeClassName: plain
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "exec sleep 3600"]
    resources:
      requests: {{cpu: 100m, memory: 32Mi}}
      limits: {{cpu: 200m, memory: 64Mi}}
"#));
    s.wait_pod_ready("app");
    assert_eq!(s.json(&["get", "pod", "app"])["spec"]["overhead"]["cpu"], "10m");

    // kubectl debug: a one-shot ephemeral container, then its logs.
    let dbg = s.ok(&["debug", "app", &format!("--image={image}"), "--image-pull-policy=IfNotPresent", "--container=once", "--", "sh", "-c", "echo hi"]);
    assert!(dbg.is_empty() || !dbg.contains("error"), "{dbg}");
    let st = eventually(60, "the ephemeral container to finish", || {
        ephemeral_status(&s, "app", "once").filter(|c| !c["state"]["terminated"].is_null())
    });
    assert_eq!(st["state"]["terminated"]["exitCode"], 0, "{st}");
    assert_eq!(s.ok(&["logs", "app", "-c", "once"]), "hi");

    // --target: the debug container sees the target container's processes.
    let out = s.apply_stdin(
        &["debug", "-it", "app", &format!("--image={image}"), "--image-pull-policy=IfNotPresent", "--target=main", "--container=shell", "--", "sh"],
        "ps\nexit\n",
    );
    assert!(out.ok(), "kubectl debug -it: {}\n{}", out.stderr, s.log());
    assert!(out.stdout.contains("sleep 3600"), "the target's processes in the debug shell:\n{}\n{}", out.stdout, out.stderr);
    let spec = s.json(&["get", "pod", "app"]);
    let names: Vec<&str> = spec["spec"]["ephemeralContainers"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["once", "shell"]);
    assert_eq!(spec["spec"]["ephemeralContainers"][1]["targetContainerName"], "main");

    // pods/resize: the running container's limits change in place (same container, new quota).
    let before = s.json(&["get", "pod", "app"])["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(cpu_quota(&s, "app").split_whitespace().next(), Some("20000"));
    s.ok(&["patch", "pod", "app", "--subresource=resize", "-p", r#"{"spec":{"containers":[{"name":"main","resources":{"limits":{"cpu":"300m"}}}]}}"#]);
    eventually(30, "the new cpu limit in the container's cgroup", || (cpu_quota(&s, "app").split_whitespace().next() == Some("30000")).then_some(()));
    let pod = s.json(&["get", "pod", "app"]);
    assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"], "300m");
    assert_eq!(pod["status"]["containerStatuses"][0]["containerID"], before, "resized, not restarted");
    eventually(30, "the status to show the new limit", || {
        let p = s.json(&["get", "pod", "app"]);
        (p["status"]["containerStatuses"][0]["resources"]["limits"]["cpu"] == "300m").then_some(())
    });
    let qos = s.kubectl(&["patch", "pod", "app", "--subresource=resize", "-p", r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"300m","memory":"64Mi"}}}]}}"#]);
    assert!(!qos.ok() && qos.stderr.contains("Pod QOS Class may not change as a result of resizing"), "{}", qos.stderr);
    let storage = s.kubectl(&["patch", "pod", "app", "--subresource=resize", "-p", r#"{"spec":{"containers":[{"name":"main","resources":{"limits":{"ephemeral-storage":"1Gi"}}}]}}"#]);
    assert!(!storage.ok() && storage.stderr.contains("only cpu and memory resources are mutable"), "{}", storage.stderr);

    // A handler this runtime does not have: the pod never gets a sandbox, as with kubelet and containerd.
    s.apply("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: vm}\nhandler: kata\n");
    s.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: sandboxed}}\nspec:\n  runtimeClassName: vm\n  containers: [{{name: c, image: {image}}}]\n"));
    let event = eventually(60, "a FailedCreatePodSandBox event", || {
        let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=sandboxed,reason=FailedCreatePodSandBox", "-o", "jsonpath={.items[*].message}"]);
        (!events.is_empty()).then_some(events)
    });
    assert!(event.contains(r#"no runtime for "kata" is configured"#), "{event}");
    assert_eq!(s.json(&["get", "pod", "sandboxed"])["status"]["phase"], "Pending");
    let missing = s.fails(&["run", "orphan", &format!("--image={image}"), "--overrides", r#"{"spec":{"runtimeClassName":"absent"}}"#]);
    assert!(missing.contains(r#"pod rejected: RuntimeClass "absent" not found"#), "{missing}");
    s.ok(&["delete", "pod", "app", "sandboxed", "--wait=true"]);
}
