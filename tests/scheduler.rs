//! The scheduler inside `skiff server`, driven through the real kubectl:
//! nodes with different capacity, labels and taints; pods placed by
//! nodeSelector, anti-affinity and tolerations; an unschedulable pod
//! explained in `describe`, and retried when the cluster changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{eventually, Server};

/// Registers a node with the given capacity, labels and taints, Ready.
fn node(s: &Server, name: &str, cpu: &str, memory: &str, labels: &str, taints: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}, {labels}}}\nspec:\n  taints: [{taints}]\n"
    );
    let out = s.apply_stdin(&["create", "-f", "-"], &manifest);
    assert!(out.ok(), "creating node {name}: {}", out.stderr);
    let status = format!(
        r#"{{"status":{{"capacity":{{"cpu":"{cpu}","memory":"{memory}","pods":"110"}},"allocatable":{{"cpu":"{cpu}","memory":"{memory}","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready"}}]}}}}"#
    );
    s.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status]);
}

/// Plays the kubelet's heartbeat for the test's nodes (node lifecycle would
/// otherwise taint them unreachable after its grace period).
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(s: &Server, nodes: &[&str]) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, home) = (s.kubeconfig(), s.dir.path().to_path_buf());
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let now = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
                let now = String::from_utf8_lossy(&now.stdout).trim().to_string();
                let patch = format!(
                    r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready","lastHeartbeatTime":"{now}"}}]}}}}"#
                );
                for n in &nodes {
                    let _ = std::process::Command::new(e2e::KUBECTL)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["patch", "node", n, "--subresource=status", "--type=merge", "-p", &patch])
                        .env("HOME", &home)
                        .output();
                }
                for _ in 0..20 {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
        Heartbeat { stop, thread: Some(thread) }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pod(s: &Server, name: &str, spec: &str) {
    let containers = if spec.contains("containers:") { "" } else { "  containers:\n  - name: c\n    image: nginx\n" };
    let manifest = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{spec}\n{containers}");
    let out = s.apply_stdin(&["create", "-f", "-"], &manifest);
    assert!(out.ok(), "creating pod {name}: {}", out.stderr);
}

fn node_of(s: &Server, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_bound(s: &Server, pod: &str) -> String {
    eventually(30, &format!("{pod} scheduled"), || Some(node_of(s, pod)).filter(|n| !n.is_empty()))
}

fn scheduled_condition(s: &Server, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}"#])
}

const ANTI: &str = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {group: spread}}\n        topologyKey: kubernetes.io/hostname\n";

#[test]
fn places_pods_by_selector_affinity_taints_and_resources() {
    let s = Server::start();
    node(&s, "small", "2", "4Gi", "disk: hdd, zone: a", "");
    node(&s, "fast", "4", "8Gi", "disk: ssd, zone: b", "");
    node(&s, "gpu", "8", "16Gi", "zone: c", "{key: dedicated, value: gpu, effect: NoSchedule}");
    let _heartbeat = Heartbeat::start(&s, &["small", "fast", "gpu"]);

    // nodeSelector.
    pod(&s, "ssd", "  nodeSelector: {disk: ssd}");
    assert_eq!(wait_bound(&s, "ssd"), "fast");
    assert_eq!(scheduled_condition(&s, "ssd"), "True");

    // A toleration opens the tainted node; a selector picks it.
    pod(&s, "trainer", "  nodeSelector: {zone: c}\n  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]");
    assert_eq!(wait_bound(&s, "trainer"), "gpu");

    // Required anti-affinity by hostname: two fit (not on the tainted node), the third does not.
    let anti = |name: &str| {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{group: spread}}\nspec:\n{ANTI}  containers:\n  - name: c\n    image: nginx\n"
        );
        let out = s.apply_stdin(&["create", "-f", "-"], &manifest);
        assert!(out.ok(), "{}", out.stderr);
    };
    anti("anti-1");
    let first = wait_bound(&s, "anti-1");
    anti("anti-2");
    let second = wait_bound(&s, "anti-2");
    let mut pair = [first.clone(), second];
    pair.sort();
    assert_eq!(pair, ["fast", "small"]);
    anti("anti-3");
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match pod anti-affinity rules. \
                preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    let mut last = String::new();
    let got = std::iter::repeat_with(|| {
        last = s.ok(&["get", "pod", "anti-3", "-o", r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}"#]);
        std::thread::sleep(Duration::from_millis(200));
        last == want
    })
    .take(150)
    .any(|ok| ok);
    assert!(got, "PodScheduled message of anti-3:\n got: {last}\nwant: {want}");
    assert_eq!(scheduled_condition(&s, "anti-3"), "False");

    // Too large for every node.
    pod(&s, "huge", "  tolerations: [{key: dedicated, operator: Exists}]\n  containers:\n  - name: big\n    image: nginx\n    resources: {requests: {cpu: \"64\"}}");
    let want_huge = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    let mut last = String::new();
    let got = std::iter::repeat_with(|| {
        last = s.ok(&["describe", "pod", "huge"]);
        std::thread::sleep(Duration::from_millis(200));
        last.contains("FailedScheduling") && last.contains("default-scheduler") && last.contains(want_huge)
    })
    .take(150)
    .any(|ok| ok);
    assert!(got, "describe pod huge:\n{last}\nwant: {want_huge}");
    assert_eq!(scheduled_condition(&s, "huge"), "False");
    let reason = s.ok(&["get", "pod", "huge", "-o", r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].reason}"#]);
    assert_eq!(reason, "Unschedulable");

    // Scheduled events name the node.
    let d = s.ok(&["describe", "pod", "ssd"]);
    assert!(d.contains("Successfully assigned default/ssd to fast"), "{d}");

    // Freeing a node retries the unschedulable pod.
    s.ok(&["delete", "pod", "anti-1", "--force", "--grace-period=0"]);
    assert_eq!(wait_bound(&s, "anti-3"), first);

    // Placement as `get pods -o wide` shows it.
    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    let row = |name: &str| wide.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default().to_string();
    assert!(row("ssd").contains(" fast "), "{wide}");
    assert!(row("trainer").contains(" gpu "), "{wide}");
    assert!(row("huge").contains("<none>"), "{wide}");

    // Preemption: a critical pod evicts a lower-priority one from the only node it may use.
    pod(&s, "filler", "  nodeSelector: {zone: a}\n  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {cpu: 1500m}}");
    assert_eq!(wait_bound(&s, "filler"), "small");
    pod(&s, "vip", "  priorityClassName: system-cluster-critical\n  nodeSelector: {zone: a}\n  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {cpu: \"1\"}}");
    eventually(30, "vip nominated to small", || (s.ok(&["get", "pod", "vip", "-o", "jsonpath={.status.nominatedNodeName}"]) == "small").then_some(()));
    eventually(30, "filler being deleted", || {
        let out = s.kubectl(&["get", "pod", "filler", "-o", "jsonpath={.metadata.deletionTimestamp}"]);
        (!out.ok() || !out.stdout.is_empty()).then_some(())
    });
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=filler,reason=Preempted", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("Preempted by pod") && events.contains("on node small"), "{events}");
    // No kubelet here: finish the graceful deletion as one would.
    let _ = s.kubectl(&["delete", "pod", "filler", "--force", "--grace-period=0"]);
    assert_eq!(wait_bound(&s, "vip"), "small");

    // The scheduler holds its lease.
    let holder = s.ok(&["get", "lease", "kube-scheduler", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(holder.contains("scheduler"), "{holder}");
}

/// Priority admission: a pod's class becomes its priority and preemption
/// policy, the global default class applies to pods naming none, and what
/// upstream refuses is refused with its message.
#[test]
fn priority_classes_resolve_pod_priority() {
    let s = Server::start_api_only();
    let class = |name: &str, value: i64, default: bool, policy: &str| {
        let manifest = format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\nglobalDefault: {default}\npreemptionPolicy: {policy}\n"
        );
        s.apply_stdin(&["create", "-f", "-"], &manifest)
    };
    let pod = |name: &str, extra: &str| {
        let manifest = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra}  containers:\n  - name: c\n    image: nginx\n");
        s.apply_stdin(&["create", "-f", "-"], &manifest)
    };
    let priority = |name: &str| s.ok(&["get", "pod", name, "-o", "jsonpath={.spec.priorityClassName}/{.spec.priority}/{.spec.preemptionPolicy}"]);

    assert!(pod("plain", "").ok());
    assert_eq!(priority("plain"), "/0/PreemptLowerPriority");
    assert!(class("batch", 1000, false, "Never").ok());
    assert!(pod("batchjob", "  priorityClassName: batch\n").ok());
    assert_eq!(priority("batchjob"), "batch/1000/Never");
    assert!(pod("critical", "  priorityClassName: system-node-critical\n").ok());
    assert_eq!(priority("critical"), "system-node-critical/2000001000/PreemptLowerPriority");

    let unknown = pod("lost", "  priorityClassName: nope\n");
    assert!(unknown.stderr.contains(r#"pods "lost" is forbidden: no PriorityClass with name nope was found"#), "{}", unknown.stderr);
    let mismatch = pod("liar", "  priorityClassName: batch\n  priority: 5\n");
    assert!(mismatch.stderr.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"), "{}", mismatch.stderr);

    // The global default class, and only one of them.
    assert!(class("everyday", 10, true, "PreemptLowerPriority").ok());
    let second = class("another", 20, true, "PreemptLowerPriority");
    assert!(second.stderr.contains("PriorityClass everyday is marked as default. Only one default can exist"), "{}", second.stderr);
    eventually(10, "the default class to apply", || {
        let _ = s.kubectl(&["delete", "pod", "defaulted", "--now"]);
        pod("defaulted", "").ok().then(|| priority("defaulted")).filter(|p| p == "everyday/10/PreemptLowerPriority")
    });
    // A replace that leaves the priority out keeps it.
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: batchjob\n  labels: {touched: \"yes\"}\nspec:\n  priorityClassName: batch\n  containers:\n  - name: c\n    image: nginx\n";
    let replaced = s.apply_stdin(&["replace", "-f", "-"], manifest);
    assert!(replaced.ok(), "{}", replaced.stderr);
    assert_eq!(priority("batchjob"), "batch/1000/Never");
    assert_eq!(s.ok(&["get", "pod", "batchjob", "-o", "jsonpath={.metadata.labels.touched}"]), "yes");
}

/// `skiff scheduler` as separate processes: one leads, the others stand by.
/// A leader killed with SIGKILL is replaced once its lease expires; one
/// stopped with SIGTERM releases its lease and a standby takes over at once.
#[test]
fn standalone_schedulers_fail_over() {
    let s = Server::start_api_only();
    node(&s, "fo-1", "4", "8Gi", "", "");
    let holder = || s.ok(&["get", "lease", "kube-scheduler", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    let mut first = e2e::Component::start(&s, "scheduler");
    eventually(30, "the first scheduler leads", || holder().ends_with(&first.identity_suffix("scheduler")).then_some(()));
    let mut second = e2e::Component::start(&s, "scheduler");
    pod(&s, "before", "");
    assert_eq!(wait_bound(&s, "before"), "fo-1");

    first.signal("KILL");
    pod(&s, "after-kill", "");
    // The dead leader's 15 s lease has to run out first.
    eventually(40, "the second scheduler leads", || holder().ends_with(&second.identity_suffix("scheduler")).then_some(()));
    assert_eq!(wait_bound(&s, "after-kill"), "fo-1");

    let third = e2e::Component::start(&s, "scheduler");
    std::thread::sleep(Duration::from_secs(2));
    second.signal("TERM");
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(log.contains("released the lease"), "{log}");
    // Released: the standby, retrying every 2 s, takes it well within the 15 s a lease lasts.
    eventually(8, "the third scheduler leads", || holder().ends_with(&third.identity_suffix("scheduler")).then_some(()));
    pod(&s, "after-term", "");
    assert_eq!(wait_bound(&s, "after-term"), "fo-1");
}
