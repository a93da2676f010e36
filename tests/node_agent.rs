//! The node agent running real containers (runc, overlayfs, a bridge and
//! veths, nftables), driven through the real kubectl as a user would. Images
//! are built here from Debian's busybox-static and served by Debian's
//! docker-registry on 127.0.0.1, or imported with `skiff image import`.
//! Needs root (as CI runs).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{eventually, registry_with_busybox, skiff_bin, Server};
use runtime::images::testimage::{self, TestRegistry};
use serde_json::Value;

fn node_ready(s: &Server) {
    let name = s.wait_node_ready();
    // The server's own node shows its role, as a kubeadm control plane does.
    let row = s.ok(&["get", "node", &name, "--no-headers"]);
    assert!(row.contains(" control-plane "), "{row}");
}

/// The STATUS column of `kubectl get pod`.
fn status_column(s: &Server, pod: &str) -> String {
    let out = s.kubectl(&["get", "pod", pod, "--no-headers"]);
    out.stdout.split_whitespace().nth(2).unwrap_or_default().to_string()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut c = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut body = String::new();
    c.read_to_string(&mut body)?;
    Ok(body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const WEB: &str = "mkdir -p /www && echo hello-skiff > /www/index.html && echo started && exec httpd -f -p 8080 -h /www";

/// What the agent made on the host for the pods running now: netns names and pod UIDs.
struct HostTrace {
    netns: Vec<String>,
    uids: Vec<String>,
}

fn host_trace(s: &Server) -> HostTrace {
    let sandboxes = s.dir.path().join("agent/sandboxes");
    let netns = std::fs::read_dir(&sandboxes)
        .map(|d| d.flatten().map(|e| format!("skiff-{}", &e.file_name().to_string_lossy()[..12])).collect())
        .unwrap_or_default();
    let uids = s.json(&["get", "pods", "-A"])["items"].as_array().unwrap().iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_string()).collect();
    HostTrace { netns, uids }
}

/// Nothing of `trace` is left: no netns, no mounts under the data dir, no veth on the bridge, no pod cgroups.
fn assert_host_clean(s: &Server, trace: &HostTrace) {
    let node = s.node.as_ref().unwrap();
    eventually(60, "the agent to remove every sandbox", || {
        let left = std::fs::read_dir(s.dir.path().join("agent/sandboxes")).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    });
    for ns in &trace.netns {
        assert!(!Path::new("/run/netns").join(ns).exists(), "netns {ns} left behind");
    }
    // The agent removes a pod's sandbox before its volumes (every pod has at
    // least its projected token volume, a tmpfs): give the unmounts a moment.
    let dir = s.dir.path().to_string_lossy().to_string();
    let ours = || -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts.lines().filter(|l| l.contains(&dir)).map(String::from).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ours().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ours().is_empty(), "mounts left behind:\n{}", ours().join("\n"));
    let veths = Command::new("ip").args(["-o", "link", "show", "master", &node.bridge]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&veths.stdout).trim(), "", "veths left on {}", node.bridge);
    // cgroup v2 has one tree; v1 one per controller (memory and pids are the ones the agent always uses).
    let roots: &[&str] = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { &["/sys/fs/cgroup/"] } else { &["/sys/fs/cgroup/memory/", "/sys/fs/cgroup/pids/"] };
    let cgroups = Command::new("find").args(roots).args(["-type", "d", "-name", "*pod*"]).output().unwrap();
    let cgroups = String::from_utf8_lossy(&cgroups.stdout);
    for uid in &trace.uids {
        assert!(!cgroups.contains(uid.as_str()), "cgroup of pod {uid} left behind:\n{cgroups}");
    }
}

#[test]
fn pods_serve_log_exec_port_forward_and_copy() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);

    s.ok(&["run", "web", &format!("--image={image}"), "--port=8080", "--", "sh", "-c", WEB]);
    s.wait_pod_ready("web");
    let pod = s.json(&["get", "pod", "web"]);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let cs = &pod["status"]["containerStatuses"][0];
    assert!(cs["containerID"].as_str().unwrap().starts_with("skiff://"), "{cs}");
    assert!(cs["imageID"].as_str().unwrap().contains("sha256:"), "{cs}");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert_eq!(status_column(&s, "web"), "Running");

    // From the host, by pod IP.
    let body = eventually(30, "web answering from the host", || http_get(&format!("{ip}:8080")).ok());
    assert!(body.contains("hello-skiff"), "{body}");
    // From another pod, by pod IP.
    s.ok(&["run", "client", &format!("--image={image}"), "--", "sleep", "3600"]);
    s.wait_pod_ready("client");
    let fetched = s.ok(&["exec", "client", "--", "wget", "-qO-", &format!("http://{ip}:8080/")]);
    assert_eq!(fetched, "hello-skiff");
    assert_eq!(s.ok(&["exec", "client", "--", "hostname"]), "client");
    let resolv = s.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    // The cluster DNS address is the kube-dns Service's (the 10th of --service-cidr).
    let dns_ip = s.ok(&["get", "svc", "kube-dns", "-n", "kube-system", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(resolv.contains(&format!("nameserver {dns_ip}\n")) && resolv.contains("default.svc.cluster.local"), "{resolv}");

    // Logs, and following them.
    assert!(s.ok(&["logs", "web"]).contains("started"));
    s.ok(&["run", "ticker", &format!("--image={image}"), "--", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]);
    s.wait_pod_ready("ticker");
    let follow_file = s.dir.path().join("follow.txt");
    let mut follow = s.kubectl_background(&["logs", "-f", "ticker"], &follow_file);
    eventually(30, "logs -f to stream new lines", || {
        let text = std::fs::read_to_string(&follow_file).unwrap_or_default();
        text.contains("tick 3").then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let tail = s.ok(&["logs", "ticker", "--tail=1", "--timestamps"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("Z tick "), "{tail}");

    // exec: exit codes, stderr, stdin, a terminal.
    let out = s.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert_eq!(out.stdout, "out");
    assert!(out.stderr.contains("err"), "{}", out.stderr);
    let out = s.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], Some("piped through stdin"));
    assert_eq!(out.stdout, "piped through stdin");
    let kubeconfig = s.kubeconfig().to_string_lossy().to_string();
    let tty = Command::new("script")
        // The terminal's size at the start, then after it is resized (SIGWINCH to kubectl) midway.
        // kubectl sends the first size just after the process starts (as upstream), hence the first sleep.
        .args(["-qec", &format!("stty rows 33 cols 111; (sleep 5; stty rows 40 cols 120 < /dev/tty) & kubectl --kubeconfig {kubeconfig} exec -it web -- sh -c 'tty; sleep 1; stty size; sleep 8; stty size; exit 7'"), "/dev/null"])
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("/dev/pts/"), "exec -it output: {text}");
    // The terminal may put a NUL before a line, raw or echoed as "^@"; only the digits matter.
    let noise = |c: char| c.is_whitespace() || c.is_control();
    let sizes: Vec<&str> = text.lines().map(|l| l.trim_matches(noise).trim_start_matches("^@").trim_matches(noise)).filter(|l| l.ends_with(" 111") || l.ends_with(" 120")).collect();
    assert_eq!(sizes, ["33 111", "40 120"], "terminal size before and after the resize; output {text}");
    assert_eq!(tty.status.code(), Some(7), "exec -it exit code; output {text}");

    // attach: `run -i` sends stdin to the container's main process and prints its output.
    let out = s.kubectl_stdin(
        &["run", "reader", &format!("--image={image}"), "-i", "--restart=Never", "--", "sh", "-c", "read line; echo got $line"],
        Some("hello attach\n"),
    );
    assert!(out.ok(), "run -i: {}", out.stderr);
    assert!(out.stdout.contains("got hello attach"), "{}", out.stdout);
    s.ok(&["delete", "pod", "reader", "--timeout=60s"]);

    // port-forward, then a request through it.
    let port = free_port();
    let mut pf = s.kubectl_background(&["port-forward", "pod/web", &format!("{port}:8080")], &s.dir.path().join("pf.txt"));
    let body = eventually(30, "port-forward to answer", || http_get(&format!("127.0.0.1:{port}")).ok().filter(|b| b.contains("hello-skiff")));
    assert!(body.contains("200 OK"), "{body}");
    let _ = pf.kill();
    let _ = pf.wait();

    // cp both ways.
    let local = s.dir.path().join("upload.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    s.ok(&["cp", &local.to_string_lossy(), "web:/tmp/upload.txt"]);
    assert_eq!(s.ok(&["exec", "web", "--", "cat", "/tmp/upload.txt"]), "copied in");
    let back = s.dir.path().join("index.html");
    s.ok(&["cp", "web:/www/index.html", &back.to_string_lossy()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello-skiff\n");

    // Deleting everything leaves nothing behind on the host.
    let trace = host_trace(&s);
    assert_eq!(trace.netns.len(), 3, "three pods, three sandboxes");
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

#[test]
fn restarts_back_off_probes_act_and_oom_kills_show() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    let pod = |name: &str, spec: &str| format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}}, "spec": {spec}}}"#
    );

    // A crashing container: CrashLoopBackOff, growing delays, the previous run's logs.
    s.apply(&pod("crash", &format!(r#"{{"containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "echo run at $(date +%s); exit 1"]}}]}}"#)));
    // Init containers in order, sharing an emptyDir with the main container.
    s.apply(&pod("inits", &format!(r#"{{"volumes": [{{"name": "work", "emptyDir": {{}}}}],
        "initContainers": [
          {{"name": "one", "image": "{image}", "command": ["sh", "-c", "echo one >> /work/order"], "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}},
          {{"name": "two", "image": "{image}", "command": ["sh", "-c", "echo two >> /work/order"], "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}}],
        "containers": [{{"name": "main", "image": "{image}", "command": ["sh", "-c", "cat /work/order; sleep 3600"], "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}}]}}"#)));
    // Readiness never passes; liveness fails after a few seconds.
    s.apply(&pod("unready", &format!(r#"{{"containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"],
        "readinessProbe": {{"exec": {{"command": ["false"]}}, "periodSeconds": 1}}}}]}}"#)));
    s.apply(&pod("unhealthy", &format!(r#"{{"containers": [{{"name": "c", "image": "{image}",
        "command": ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"],
        "livenessProbe": {{"exec": {{"command": ["test", "-f", "/tmp/healthy"]}}, "periodSeconds": 1, "failureThreshold": 2}}}}]}}"#)));
    // Over its memory limit.
    s.apply(&pod("hog", &format!(r#"{{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "{image}",
        "command": ["sh", "-c", "x=0123456789; while true; do x=$x$x; done"],
        "resources": {{"limits": {{"memory": "32Mi"}}}}}}]}}"#)));

    // Restart times of `crash`, as seen by polling restartCount.
    let mut restarts: Vec<Instant> = Vec::new();
    let start = Instant::now();
    while restarts.len() < 3 && start.elapsed() < Duration::from_secs(120) {
        let count = s.kubectl(&["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]).stdout.parse::<usize>().unwrap_or(0);
        while restarts.len() < count {
            restarts.push(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(restarts.len(), 3, "crash restarted {} times in 120s", restarts.len());
    let (d1, d2) = (restarts[1] - restarts[0], restarts[2] - restarts[1]);
    // Seen by polling a loaded machine, so each restart may show up late by a few seconds.
    assert!(d1 >= Duration::from_secs(6) && d2 >= d1 + Duration::from_secs(5), "back-off delays should grow (10s, 20s): {d1:?}, {d2:?}");
    eventually(30, "CrashLoopBackOff", || (status_column(&s, "crash") == "CrashLoopBackOff").then_some(()));
    let previous = s.ok(&["logs", "crash", "--previous"]);
    assert!(previous.starts_with("run at "), "{previous}");
    let last = s.json(&["get", "pod", "crash"])["status"]["containerStatuses"][0]["lastState"]["terminated"].clone();
    assert_eq!((last["exitCode"].as_i64(), last["reason"].as_str()), (Some(1), Some("Error")), "{last}");
    // Only the newest dead attempt's log is kept beside the current one.
    let uid = s.ok(&["get", "pod", "crash", "-o", "jsonpath={.metadata.uid}"]);
    let logs = s.dir.path().join(format!("agent/logs/default_crash_{uid}/c"));
    let mut kept: Vec<u32> = std::fs::read_dir(&logs).unwrap().flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()).collect();
    kept.sort();
    assert!(kept.len() <= 2 && !kept.contains(&0), "log files of attempts {kept:?} in {}", logs.display());

    s.wait_pod_ready("inits");
    assert_eq!(s.ok(&["logs", "inits"]), "one\ntwo");
    let init = s.json(&["get", "pod", "inits"])["status"]["initContainerStatuses"].clone();
    assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed", "{init}");

    let unready = s.json(&["get", "pod", "unready"]);
    assert_eq!(unready["status"]["phase"], "Running");
    let ready = unready["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False", "{ready}");
    assert!(s.ok(&["get", "pod", "unready", "--no-headers"]).contains("0/1"));

    eventually(60, "the liveness probe to restart the container", || {
        let n = s.kubectl(&["get", "pod", "unhealthy", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]).stdout;
        (n.parse::<u32>().unwrap_or(0) >= 1).then_some(())
    });
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=unhealthy", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("Unhealthy") && events.contains("Killing"), "{events}");

    let terminated = eventually(60, "hog OOM-killed", || {
        let t = s.json(&["get", "pod", "hog"])["status"]["containerStatuses"][0]["state"]["terminated"].clone();
        (!t.is_null()).then_some(t)
    });
    assert_eq!((terminated["reason"].as_str(), terminated["exitCode"].as_i64()), (Some("OOMKilled"), Some(137)), "{terminated}");
    assert_eq!(status_column(&s, "hog"), "OOMKilled");
    assert_eq!(s.json(&["get", "pod", "hog"])["status"]["phase"], "Failed");
}

#[test]
fn volumes_env_graceful_termination_images_and_agent_restart() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    s.ok(&["create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=color=blue"]);
    s.ok(&["create", "secret", "generic", "creds", "--from-literal=password=s3cret"]);
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "app", "labels": {{"tier": "web"}}}}, "spec": {{
        "volumes": [{{"name": "cfg", "configMap": {{"name": "settings"}}}}, {{"name": "sec", "secret": {{"secretName": "creds"}}}},
                    {{"name": "shared", "emptyDir": {{}}}}],
        "containers": [
          {{"name": "main", "image": "{image}", "command": ["sleep", "3600"],
            "env": [{{"name": "MODE", "valueFrom": {{"configMapKeyRef": {{"name": "settings", "key": "mode"}}}}}},
                    {{"name": "PASSWORD", "valueFrom": {{"secretKeyRef": {{"name": "creds", "key": "password"}}}}}},
                    {{"name": "POD_NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}},
                    {{"name": "GREETING", "value": "mode is $(MODE)"}}],
            "envFrom": [{{"prefix": "CFG_", "configMapRef": {{"name": "settings"}}}}],
            "volumeMounts": [{{"name": "cfg", "mountPath": "/etc/cfg"}}, {{"name": "sec", "mountPath": "/etc/sec"}}, {{"name": "shared", "mountPath": "/shared"}}]}},
          {{"name": "writer", "image": "{image}", "command": ["sh", "-c", "echo from-writer > /out/note; sleep 3600"],
            "volumeMounts": [{{"name": "shared", "mountPath": "/out"}}]}}]}}}}"#));
    s.wait_pod_ready("app");
    let env = s.ok(&["exec", "app", "-c", "main", "--", "env"]);
    for want in ["MODE=fast", "PASSWORD=s3cret", "POD_NAME=app", "GREETING=mode is fast", "CFG_color=blue", "KUBERNETES_SERVICE_HOST="] {
        assert!(env.lines().any(|l| l.starts_with(want)), "{want} missing from env:\n{env}");
    }
    assert_eq!(s.ok(&["exec", "app", "-c", "main", "--", "cat", "/etc/cfg/color", "/etc/sec/password"]), "blues3cret");
    eventually(20, "the writer's file in the shared emptyDir", || {
        (s.kubectl(&["exec", "app", "-c", "main", "--", "cat", "/shared/note"]).stdout == "from-writer").then_some(())
    });
    // A changed ConfigMap reaches the mounted file in place.
    s.ok(&["patch", "configmap", "settings", "-p", r#"{"data":{"color":"green"}}"#]);
    eventually(90, "the configMap volume to update", || {
        (s.kubectl(&["exec", "app", "-c", "main", "--", "cat", "/etc/cfg/color"]).stdout == "green").then_some(())
    });

    // An imported image runs with imagePullPolicy Never; a missing one does not.
    let tar = s.dir.path().join("imported.tar");
    std::fs::write(&tar, testimage::docker_save_tar("e2e.local/imported:v1", &testimage::busybox_layer_tar())).unwrap();
    let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&tar).arg("--data-dir").arg(s.dir.path()).output().unwrap();
    assert!(out.status.success(), "skiff image import: {}", String::from_utf8_lossy(&out.stderr));
    let ls = Command::new(skiff_bin()).args(["image", "ls", "--data-dir"]).arg(s.dir.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("e2e.local/imported"), "{}", String::from_utf8_lossy(&ls.stdout));
    s.ok(&["run", "imported", "--image=e2e.local/imported:v1", "--image-pull-policy=Never", "--", "sleep", "3600"]);
    s.wait_pod_ready("imported");
    s.ok(&["run", "absent", "--image=e2e.local/absent:v1", "--image-pull-policy=Never", "--", "true"]);
    eventually(30, "ErrImageNeverPull", || (status_column(&s, "absent") == "ErrImageNeverPull").then_some(()));
    s.ok(&["run", "unpullable", &format!("--image={}", image.replace("busybox:e2e", "nothing:here")), "--", "true"]);
    eventually(60, "ErrImagePull or ImagePullBackOff", || {
        let st = status_column(&s, "unpullable");
        (st == "ErrImagePull" || st == "ImagePullBackOff").then_some(())
    });

    // The agent (here: the whole server) killed with SIGKILL: containers keep running and are adopted.
    let ids = |s: &Server| s.ok(&["get", "pods", "app", "imported", "-o", "jsonpath={.items[*].status.containerStatuses[*].containerID}"]);
    let before = ids(&s);
    s.restart();
    node_ready(&s);
    std::thread::sleep(Duration::from_secs(3));
    s.wait_pod_ready("app");
    assert_eq!(ids(&s), before, "containers should be adopted, not recreated");
    let restarts = s.ok(&["get", "pods", "app", "imported", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"]);
    assert!(restarts.split_whitespace().all(|n| n == "0"), "{restarts}");
    let runc = Command::new("runc").arg("--root").arg(s.dir.path().join("agent/runc")).args(["list", "-q"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&runc.stdout).lines().count(), 3, "one container each for app/main, app/writer, imported");

    // Graceful deletion: a container trapping SIGTERM gets its time; one ignoring it is killed at the deadline.
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "polite"}}, "spec": {{"terminationGracePeriodSeconds": 30,
        "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while true; do sleep 1; done"]}}]}}}}"#));
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "stubborn"}}, "spec": {{"terminationGracePeriodSeconds": 4,
        "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}}]}}}}"#));
    s.wait_pod_ready("polite");
    s.wait_pod_ready("stubborn");
    let t = Instant::now();
    s.ok(&["delete", "pod", "polite", "--timeout=60s"]);
    let polite = t.elapsed();
    assert!(polite >= Duration::from_secs(3) && polite < Duration::from_secs(20), "polite pod took {polite:?}");
    let t = Instant::now();
    s.ok(&["delete", "pod", "stubborn", "--timeout=60s"]);
    let stubborn = t.elapsed();
    assert!(stubborn >= Duration::from_secs(4) && stubborn < Duration::from_secs(20), "stubborn pod took {stubborn:?}");

    let trace = host_trace(&s);
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

/// Lifecycle hooks, activeDeadlineSeconds, and the volume kinds the other
/// tests do not mount: a PersistentVolumeClaim bound to a hostPath volume,
/// hostPath itself, projected sources and a size-limited memory emptyDir.
#[test]
fn hooks_deadlines_claims_and_projected_volumes() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    let host = s.dir.path().join("host-volume");
    let claim_dir = s.dir.path().join("pv-data");
    std::fs::create_dir_all(&claim_dir).unwrap();
    s.ok(&["create", "configmap", "proj", "--from-literal=greeting=hi"]);
    s.ok(&["create", "secret", "generic", "proj-secret", "--from-literal=token=t0k3n"]);
    s.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: e2e-pv}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  hostPath: {{path: {}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  resources: {{requests: {{storage: 500Mi}}}}\n",
        claim_dir.display()
    ));
    eventually(30, "the claim Bound", || (s.ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]) == "Bound").then_some(()));
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hooked", "labels": {{"app": "hooked"}}}}, "spec": {{
        "terminationGracePeriodSeconds": 10,
        "volumes": [{{"name": "host", "hostPath": {{"path": "{host}", "type": "DirectoryOrCreate"}}}},
                    {{"name": "data", "persistentVolumeClaim": {{"claimName": "data"}}}},
                    {{"name": "mem", "emptyDir": {{"medium": "Memory", "sizeLimit": "8Mi"}}}},
                    {{"name": "all", "projected": {{"sources": [
                        {{"configMap": {{"name": "proj", "items": [{{"key": "greeting", "path": "cm/greeting"}}]}}}},
                        {{"secret": {{"name": "proj-secret"}}}},
                        {{"downwardAPI": {{"items": [{{"path": "labels", "fieldRef": {{"fieldPath": "metadata.labels"}}}}]}}}}]}}}}],
        "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            "lifecycle": {{"postStart": {{"exec": {{"command": ["sh", "-c", "echo post-start > /host/post-start"]}}}},
                           "preStop": {{"exec": {{"command": ["sh", "-c", "echo pre-stop > /host/pre-stop"]}}}}}},
            "volumeMounts": [{{"name": "host", "mountPath": "/host"}}, {{"name": "data", "mountPath": "/data"}},
                             {{"name": "mem", "mountPath": "/mem"}}, {{"name": "all", "mountPath": "/all"}}]}}]}}}}"#,
        host = host.display()
    ));
    s.wait_pod_ready("hooked");
    assert_eq!(std::fs::read_to_string(host.join("post-start")).unwrap().trim(), "post-start");
    // The claim's volume is the PV's host directory.
    s.ok(&["exec", "hooked", "--", "sh", "-c", "echo kept > /data/file"]);
    assert_eq!(std::fs::read_to_string(claim_dir.join("file")).unwrap().trim(), "kept");
    // A memory-backed emptyDir is a tmpfs of its sizeLimit.
    let mounts = s.ok(&["exec", "hooked", "--", "grep", " /mem ", "/proc/mounts"]);
    assert!(mounts.starts_with("tmpfs /mem tmpfs") && mounts.contains("size=8192k"), "{mounts}");
    let projected = s.ok(&["exec", "hooked", "--", "cat", "/all/cm/greeting", "/all/token", "/all/labels"]);
    assert_eq!(projected, "hit0k3napp=\"hooked\"");
    // preStop runs before the container is stopped.
    s.ok(&["delete", "pod", "hooked", "--timeout=60s"]);
    assert_eq!(std::fs::read_to_string(host.join("pre-stop")).unwrap().trim(), "pre-stop");

    // activeDeadlineSeconds: the pod fails when it runs out.
    s.ok(&["run", "deadline", &format!("--image={image}"), "--restart=Never", "--overrides",
        r#"{"spec": {"activeDeadlineSeconds": 3}}"#, "--", "sleep", "3600"]);
    eventually(60, "DeadlineExceeded", || {
        let st = s.json(&["get", "pod", "deadline"])["status"].clone();
        (st["phase"] == "Failed" && st["reason"] == "DeadlineExceeded").then_some(())
    });
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=deadline", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("DeadlineExceeded"), "{events}");

    // runAsNonRoot with an image that runs as root: a configuration error, as upstream reports it.
    s.ok(&["run", "rooted", &format!("--image={image}"), "--overrides", r#"{"spec": {"securityContext": {"runAsNonRoot": true}}}"#, "--", "sleep", "3600"]);
    eventually(60, "CreateContainerConfigError", || (status_column(&s, "rooted") == "CreateContainerConfigError").then_some(()));
    let waiting = s.ok(&["get", "pod", "rooted", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}"]);
    assert!(waiting.contains("container has runAsNonRoot and image will run as root"), "{waiting}");

    let trace = host_trace(&s);
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

/// A sidecar (an init container with restartPolicy Always) starts before the
/// main container and runs beside it; a startup probe holds the main
/// container's readiness until it passes; the pod reads 2/2 Ready.
#[test]
fn sidecars_and_startup_probes() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "with-sidecar"}}, "spec": {{
        "volumes": [{{"name": "shared", "emptyDir": {{}}}}],
        "initContainers": [{{"name": "ticker", "image": "{image}", "restartPolicy": "Always",
            "command": ["sh", "-c", "while true; do date +%s > /shared/tick; sleep 1; done"],
            "volumeMounts": [{{"name": "shared", "mountPath": "/shared"}}]}}],
        "containers": [{{"name": "main", "image": "{image}",
            "command": ["sh", "-c", "test -f /shared/tick && echo sidecar-was-first; sleep 3; touch /tmp/up; exec sleep 3600"],
            "startupProbe": {{"exec": {{"command": ["test", "-f", "/tmp/up"]}}, "periodSeconds": 1, "failureThreshold": 30}},
            "volumeMounts": [{{"name": "shared", "mountPath": "/shared"}}]}}]}}}}"#));
    // Running but not yet started: not Ready while the startup probe fails.
    eventually(60, "main running, not started", || {
        let st = s.json(&["get", "pod", "with-sidecar"])["status"]["containerStatuses"][0].clone();
        (st["state"]["running"].is_object() && st["started"] == false && st["ready"] == false).then_some(())
    });
    s.wait_pod_ready("with-sidecar");
    let pod = s.json(&["get", "pod", "with-sidecar"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["started"], true);
    let sidecar = &pod["status"]["initContainerStatuses"][0];
    assert!(sidecar["state"]["running"].is_object() && sidecar["ready"] == true, "{sidecar}");
    assert_eq!(s.ok(&["logs", "with-sidecar", "-c", "main"]), "sidecar-was-first");
    let row = s.ok(&["get", "pod", "with-sidecar", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(1), Some("2/2"), "{row}");
    let trace = host_trace(&s);
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

/// `--container-log-max-size` / `--container-log-max-files`: a chatty
/// container's log is rotated at the size, only that many files are kept,
/// and `kubectl logs` still shows the newest lines.
#[test]
fn container_logs_rotate_by_the_agent_flags() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node_with(&["--container-log-max-size", "4Ki", "--container-log-max-files", "2"]);
    node_ready(&s);
    s.ok(&["run", "chatty", &format!("--image={image}"), "--", "sh", "-c", "for i in $(seq 1 3000); do echo line-$i; done; echo done-writing; exec sleep 3600"]);
    s.wait_pod_ready("chatty");
    eventually(30, "the last line in kubectl logs", || s.kubectl(&["logs", "chatty", "--tail=1"]).stdout.contains("done-writing").then_some(()));
    let uid = s.ok(&["get", "pod", "chatty", "-o", "jsonpath={.metadata.uid}"]);
    let dir = s.dir.path().join(format!("agent/logs/default_chatty_{uid}/chatty"));
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())).collect();
    assert_eq!(files.len(), 2, "the live log and one rotated file: {files:?}");
    assert!(files.iter().all(|(_, len)| *len <= 4096), "{files:?}");
    assert!(!s.ok(&["logs", "chatty"]).contains("line-1\n"), "the oldest lines were rotated away");
    let trace = host_trace(&s);
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

/// Static pods from `--pod-manifest-path`: the agent runs them itself and
/// shows each as a mirror pod. Deleting the mirror does not restart the
/// pod, a changed manifest replaces it, a removed one stops it.
#[test]
fn static_pods_run_from_manifests_with_mirror_pods() {
    let (_reg, image) = registry_with_busybox();
    let manifests = tempfile::tempdir().unwrap();
    let manifest = |greeting: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  labels:\n    app: static\nspec:\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: web\n    image: {image}\n    command: [sh, -c, 'echo {greeting}; {WEB}']\n"
        )
    };
    std::fs::write(manifests.path().join("web.yaml"), manifest("started-v1")).unwrap();
    let s = Server::start_node_with(&["--pod-manifest-path", manifests.path().to_str().unwrap()]);
    node_ready(&s);
    let mirror = format!("static-web-{}", s.node.as_ref().unwrap().name);
    eventually(60, "the mirror pod", || s.kubectl(&["get", "pod", &mirror]).ok().then_some(()));
    s.wait_pod_ready(&mirror);
    let pod = s.json(&["get", "pod", &mirror]);
    let annotations = &pod["metadata"]["annotations"];
    let hash = annotations["kubernetes.io/config.mirror"].as_str().unwrap().to_string();
    assert_eq!(annotations["kubernetes.io/config.hash"], hash.as_str(), "{annotations}");
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(pod["spec"]["nodeName"], s.node.as_ref().unwrap().name.as_str());
    // logs, exec and the pod IP work through the mirror pod.
    eventually(30, "the static pod's log", || s.kubectl(&["logs", &mirror]).stdout.contains("started-v1").then_some(()));
    assert_eq!(s.ok(&["exec", &mirror, "--", "hostname"]), mirror);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(http_get(&format!("{ip}:8080")).unwrap().contains("hello-skiff"));

    // Deleting the mirror pod brings a new mirror; the pod itself runs on.
    let container_id = |s: &Server| s.ok(&["get", "pod", &mirror, "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    let first_id = container_id(&s);
    let first_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let out = s.kubectl(&["delete", "pod", &mirror, "--timeout=60s"]);
    assert!(out.ok(), "deleting the mirror pod: {}\n{}", out.stderr, s.log().lines().filter(|l| l.contains("static-web")).collect::<Vec<_>>().join("\n"));
    // While a mirror pod is replaced there is none for a moment.
    let get_mirror = || serde_json::from_str::<Value>(&s.kubectl(&["get", "pod", &mirror, "-o", "json"]).stdout).ok();
    eventually(60, "a new mirror pod with the same container", || {
        let p = get_mirror()?;
        let again = p["metadata"]["uid"] != first_uid.as_str() && p["status"]["containerStatuses"][0]["containerID"] == first_id.as_str();
        again.then_some(())
    });
    assert_eq!(s.ok(&["get", "pod", &mirror, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]), "0");

    // A changed manifest is a new pod: new hash, new container.
    std::fs::write(manifests.path().join("web.yaml"), manifest("started-v2")).unwrap();
    eventually(90, "the mirror pod of the changed manifest", || {
        let p = get_mirror()?;
        let new_hash = p["metadata"]["annotations"]["kubernetes.io/config.mirror"] != hash.as_str();
        (new_hash && s.kubectl(&["logs", &mirror]).stdout.contains("started-v2")).then_some(())
    });
    s.wait_pod_ready(&mirror);
    assert_ne!(container_id(&s), first_id);

    // A removed manifest stops the pod and removes its mirror.
    let mut trace = host_trace(&s);
    trace.uids.push(hash);
    trace.uids.push(s.json(&["get", "pod", &mirror])["metadata"]["annotations"]["kubernetes.io/config.mirror"].as_str().unwrap().to_string());
    std::fs::remove_file(manifests.path().join("web.yaml")).unwrap();
    eventually(90, "the mirror pod to go", || (!s.kubectl(&["get", "pod", &mirror]).ok()).then_some(()));
    assert_host_clean(&s, &trace);
}

/// Host password for `puller` in the private registry (bcrypt of "s3cret").
const HTPASSWD: &str = "puller:$2b$05$iawHsoxuUwVYGT9FeRp6Wu53uDciH/NBSaqfyhEmiLImDAtrrsZ3u\n";

/// An image from a registry that wants a password, pulled with
/// imagePullSecrets; fsGroup on emptyDir and secret volumes; a secret
/// volume following its Secret; hostPID/hostIPC; a hostPort on 127.0.0.1.
#[test]
fn private_images_fs_group_host_namespaces_and_host_ports() {
    let reg = TestRegistry::start_with_htpasswd(Some(HTPASSWD)).expect("starting docker-registry with htpasswd");
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    let config = testimage::busybox_config(&[&layer]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let auth = testimage::basic_authorization("puller", "s3cret");
    rt.block_on(testimage::push_layers_as(&reg.addr, "private/busybox", "v1", &[&layer], config, Some(&auth))).expect("pushing busybox");
    let image = format!("{}/private/busybox:v1", reg.addr);
    let s = Server::start_node();
    node_ready(&s);

    // Without credentials the pull is refused; with a docker-registry secret it works.
    s.ok(&["run", "no-creds", &format!("--image={image}"), "--", "sleep", "3600"]);
    eventually(60, "ErrImagePull or ImagePullBackOff", || {
        let st = status_column(&s, "no-creds");
        (st == "ErrImagePull" || st == "ImagePullBackOff").then_some(())
    });
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=no-creds", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("the registry wants basic auth and no credentials were given"), "the pull failure says why: {events}");
    s.ok(&["create", "secret", "docker-registry", "regcred", &format!("--docker-server={}", reg.addr), "--docker-username=puller", "--docker-password=s3cret"]);
    s.ok(&["create", "secret", "generic", "token", "--from-literal=value=first"]);
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "grouped"}}, "spec": {{
        "imagePullSecrets": [{{"name": "regcred"}}],
        "securityContext": {{"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}},
        "volumes": [{{"name": "data", "emptyDir": {{}}}}, {{"name": "sec", "secret": {{"secretName": "token", "defaultMode": 256}}}}],
        "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"],
            "volumeMounts": [{{"name": "data", "mountPath": "/data"}}, {{"name": "sec", "mountPath": "/etc/sec"}}]}}]}}}}"#));
    s.wait_pod_ready("grouped");
    let exec = |cmd: &str| s.ok(&["exec", "grouped", "--", "sh", "-c", cmd]);
    assert_eq!(exec("id -u; id -G"), "1000\n3000 2000");
    // emptyDir: group 2000 with the setgid bit, so new files get the group.
    assert_eq!(exec("stat -c %a:%g /data; touch /data/f; stat -c %g /data/f"), "2777:2000\n2000");
    // A 0400 secret file becomes group-readable (0440) and readable by the pod's user through the group.
    assert_eq!(exec("stat -L -c %a:%g /etc/sec/value; cat /etc/sec/value"), "440:2000\nfirst");
    // The secret volume follows its Secret in place.
    s.ok(&["patch", "secret", "token", "-p", r#"{"stringData":{"value":"second"}}"#]);
    eventually(90, "the secret volume to update", || (s.kubectl(&["exec", "grouped", "--", "cat", "/etc/sec/value"]).stdout == "second").then_some(()));

    // hostPID and hostIPC share the host's namespaces; a plain pod does not.
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hostns"}}, "spec": {{
        "hostPID": true, "hostIPC": true, "imagePullSecrets": [{{"name": "regcred"}}],
        "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"]}}]}}}}"#));
    s.wait_pod_ready("hostns");
    let host_ns = |kind: &str| std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().to_string_lossy().into_owned();
    let pod_ns = |pod: &str, kind: &str| s.ok(&["exec", pod, "--", "readlink", &format!("/proc/self/ns/{kind}")]);
    for kind in ["pid", "ipc"] {
        assert_eq!(pod_ns("hostns", kind), host_ns(kind), "hostns shares the host's {kind} namespace");
        assert_ne!(pod_ns("grouped", kind), host_ns(kind), "a plain pod has its own {kind} namespace");
    }

    // A hostPort answers on the host's 127.0.0.1.
    let port = free_port();
    s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "published"}}, "spec": {{
        "imagePullSecrets": [{{"name": "regcred"}}],
        "containers": [{{"name": "web", "image": "{image}", "command": ["sh", "-c", "{WEB}"],
            "ports": [{{"containerPort": 8080, "hostPort": {port}}}]}}]}}}}"#));
    s.wait_pod_ready("published");
    let body = eventually(30, "the hostPort to answer", || http_get(&format!("127.0.0.1:{port}")).ok());
    assert!(body.contains("hello-skiff"), "{body}");

    let trace = host_trace(&s);
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
    assert!(http_get(&format!("127.0.0.1:{port}")).is_err(), "the hostPort is closed with its pod");
}

/// A sandbox that dies (here: its network namespace unmounted, as after a
/// reboot) is replaced; the pod's containers restart in the new one and
/// the old one's dead container still gives lastState and `logs --previous`.
/// A pod that never restarts gets no new sandbox: it fails instead of
/// running its containers twice.
#[test]
fn a_replaced_sandbox_keeps_restart_count_last_state_and_previous_logs() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    let marker = "echo marker-$RANDOM$RANDOM; exec sleep 3600";
    s.ok(&["run", "phoenix", &format!("--image={image}"), "--", "sh", "-c", marker]);
    s.ok(&["run", "once", &format!("--image={image}"), "--restart=Never", "--", "sh", "-c", marker]);
    s.wait_pod_ready("phoenix");
    s.wait_pod_ready("once");
    let first_log = eventually(30, "the first marker", || Some(s.kubectl(&["logs", "phoenix"]).stdout).filter(|l| l.starts_with("marker-")));
    let first_id = s.ok(&["get", "pod", "phoenix", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    let mut netns = Vec::new();
    for e in std::fs::read_dir(s.dir.path().join("agent/sandboxes")).unwrap().flatten() {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(e.path().join("meta.json")).unwrap()).unwrap();
        netns.push(meta["netns_path"].as_str().unwrap().to_string());
    }
    assert_eq!(netns.len(), 2, "{netns:?}");
    for path in &netns {
        let out = Command::new("umount").arg(path).output().unwrap();
        assert!(out.status.success(), "umount {path}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let st = eventually(60, "the container to run again in a new sandbox", || {
        let st = s.json(&["get", "pod", "phoenix"])["status"]["containerStatuses"][0].clone();
        (st["containerID"] != first_id.as_str() && st["state"]["running"].is_object()).then_some(st)
    });
    assert_eq!(st["restartCount"], 1, "{st}");
    assert_eq!(st["lastState"]["terminated"]["containerID"], first_id.as_str(), "{st}");
    assert_eq!(st["lastState"]["terminated"]["exitCode"], 137, "{st}");
    s.wait_pod_ready("phoenix");
    assert_eq!(s.ok(&["logs", "phoenix", "--previous"]), first_log);
    let now = eventually(30, "the new marker", || Some(s.kubectl(&["logs", "phoenix"]).stdout).filter(|l| l.starts_with("marker-")));
    assert_ne!(now, first_log);
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=phoenix", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("SandboxChanged"), "{events}");

    // restartPolicy Never: Failed, killed once, never run again.
    eventually(60, "the Never pod to fail", || (s.json(&["get", "pod", "once"])["status"]["phase"] == "Failed").then_some(()));
    let st = s.json(&["get", "pod", "once"])["status"]["containerStatuses"][0].clone();
    assert_eq!((st["restartCount"].clone(), st["state"]["terminated"]["exitCode"].clone()), (0.into(), 137.into()), "{st}");
    assert_eq!(s.ok(&["logs", "once"]).lines().count(), 1, "the Never pod's container ran once");

    let mut trace = host_trace(&s);
    trace.netns.extend(netns.iter().map(|p| p.trim_start_matches("/run/netns/").to_string()));
    s.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_host_clean(&s, &trace);
}

/// The built-in local-path storage: the default class, a claim provisioned
/// on the node of its first pod, its data kept across pods, the claim held
/// while a pod uses it, and the directory removed or kept by reclaim policy.
#[test]
fn local_path_volumes_follow_their_claims() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    node_ready(&s);
    let root = s.dir.path().join("storage");
    let classes = s.ok(&["get", "storageclass"]);
    assert!(classes.lines().any(|l| l.starts_with("local-path (default)") && l.contains("rancher.io/local-path") && l.contains("Delete") && l.contains("WaitForFirstConsumer")), "{classes}");

    let claim = |name: &str, class: &str| {
        let class = if class.is_empty() { String::new() } else { format!("  storageClassName: {class}\n") };
        s.apply(&format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 64Mi}}}}\n"));
    };
    let pod = |name: &str, claim: &str, script: &str| {
        s.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}}, "spec": {{"terminationGracePeriodSeconds": 1,
            "volumes": [{{"name": "data", "persistentVolumeClaim": {{"claimName": "{claim}"}}}}],
            "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "{script}; trap 'exit 0' TERM; while true; do sleep 1; done"],
                "volumeMounts": [{{"name": "data", "mountPath": "/data"}}]}}]}}}}"#));
        s.wait_pod_ready(name);
    };
    let get = |what: &str, path: &str| s.ok(&["get", what, "-o", &format!("jsonpath={path}")]);

    // A claim naming no class gets the default one and waits for its first pod.
    claim("data", "");
    assert_eq!(get("pvc/data", "{.spec.storageClassName}"), "local-path");
    assert!(get("pvc/data", "{.metadata.finalizers}").contains("kubernetes.io/pvc-protection"));
    eventually(30, "WaitForFirstConsumer event", || {
        let reasons = s.ok(&["get", "events", "--field-selector", "involvedObject.name=data", "-o", "jsonpath={.items[*].reason}"]);
        reasons.contains("WaitForFirstConsumer").then_some(())
    });
    assert_eq!(get("pvc/data", "{.status.phase}"), "Pending");

    // The pod's node is chosen, the volume made there and bound, and the pod runs on it.
    pod("writer", "data", "echo kept > /data/file");
    let node = get("pod/writer", "{.spec.nodeName}");
    assert_eq!(get("pvc/data", "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"), node);
    assert_eq!(get("pvc/data", "{.status.phase}/{.status.capacity.storage}/{.status.accessModes[0]}"), "Bound/64Mi/ReadWriteOnce");
    let (uid, pv) = (get("pvc/data", "{.metadata.uid}"), get("pvc/data", "{.spec.volumeName}"));
    assert_eq!(pv, format!("pvc-{uid}"));
    let dir = root.join(format!("pvc-{uid}_default_data"));
    assert_eq!(get(&format!("pv/{pv}"), "{.spec.hostPath.path}"), dir.display().to_string());
    assert_eq!(get(&format!("pv/{pv}"), "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"), node);
    eventually(30, "the pod's file on the node", || (std::fs::read_to_string(dir.join("file")).ok()?.trim() == "kept").then_some(()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o777);

    // The next pod finds the data; the claim is held while a pod uses it.
    s.ok(&["delete", "pod", "writer", "--timeout=60s"]);
    pod("reader", "data", "cat /data/file > /tmp/seen");
    assert_eq!(s.ok(&["exec", "reader", "--", "cat", "/tmp/seen"]), "kept");
    s.ok(&["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!get("pvc/data", "{.metadata.deletionTimestamp}").is_empty(), "the claim went while a pod used it");
    assert_eq!(get("pvc/data", "{.status.phase}"), "Bound");
    // Once the pod is gone the claim goes, then the volume and its directory (reclaimPolicy Delete).
    s.ok(&["delete", "pod", "reader", "--timeout=60s"]);
    eventually(60, "claim, volume and directory gone", || {
        let gone = !s.kubectl(&["get", "pvc", "data"]).ok() && !s.kubectl(&["get", "pv", &pv]).ok() && !dir.exists();
        gone.then_some(())
    });

    // reclaimPolicy Retain keeps the volume (Released) and its data.
    s.apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: keep}\nprovisioner: rancher.io/local-path\nreclaimPolicy: Retain\nvolumeBindingMode: WaitForFirstConsumer\n");
    claim("kept", "keep");
    pod("keeper", "kept", "echo still > /data/file");
    let pv = get("pvc/kept", "{.spec.volumeName}");
    let dir = std::path::PathBuf::from(get(&format!("pv/{pv}"), "{.spec.hostPath.path}"));
    s.ok(&["delete", "pod", "keeper", "--timeout=60s"]);
    s.ok(&["delete", "pvc", "kept", "--timeout=60s"]);
    eventually(30, "volume Released", || (get(&format!("pv/{pv}"), "{.status.phase}") == "Released").then_some(()));
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap().trim(), "still");
    s.ok(&["delete", "pv", &pv, "--timeout=60s"]);
}
