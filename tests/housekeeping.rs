//! Housekeeping controllers inside `skiff server` — endpoints and
//! endpointslices, node IPAM, node lifecycle and taint eviction, disruption
//! budgets with `kubectl drain` — driven through the real kubectl. There is no
//! node agent: the tests play the kubelet by patching node and pod status and
//! renewing node Leases themselves.

use std::process::Command;
use std::time::Duration;

use e2e::{eventually, Server};

fn now(fmt: &str) -> String {
    let out = Command::new("date").args(["-u", fmt]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A node that reports Ready (what a kubelet would post).
fn ready_node(s: &Server, name: &str) {
    s.apply(&format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n"));
    heartbeat(s, name);
}

fn heartbeat(s: &Server, name: &str) {
    let t = now("+%Y-%m-%dT%H:%M:%SZ");
    let patch = format!(r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}]}}}}"#);
    s.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &patch]);
}

fn renew_lease(s: &Server, node: &str) {
    let t = now("+%Y-%m-%dT%H:%M:%S.%6NZ");
    s.apply(&format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {node}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {node}\n  leaseDurationSeconds: 40\n  renewTime: \"{t}\"\n"));
}

fn pod(s: &Server, name: &str, labels: &str, node: Option<&str>, extra_spec: &str) {
    let node = node.map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{node}  terminationGracePeriodSeconds: 0\n{extra_spec}  containers:\n  - name: app\n    image: nginx\n    ports:\n    - name: http\n      containerPort: 8080\n"
    ));
}

fn run_pod(s: &Server, name: &str, ip: &str, ready: bool) {
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    s.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", &patch]);
}

#[test]
fn endpoints_and_endpointslices_follow_ready_and_not_ready_pods() {
    let s = Server::start();
    pod(&s, "web-a", "app: web", None, "");
    pod(&s, "web-b", "app: web", None, "");
    pod(&s, "other", "app: other", None, "");
    s.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n");
    s.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - port: 80\n");
    run_pod(&s, "web-a", "10.42.0.5", true);
    run_pod(&s, "web-b", "10.42.0.6", false);
    run_pod(&s, "other", "10.42.0.7", true);

    // The ENDPOINTS column lists ready addresses with the named port resolved.
    eventually(20, "ready address in kubectl get endpoints", || {
        let out = s.ok(&["get", "endpoints", "web"]);
        (out.contains("10.42.0.5:8080") && !out.contains("10.42.0.6") && !out.contains("10.42.0.7")).then_some(())
    });
    let ep = s.json(&["get", "endpoints", "web"]);
    let subset = &ep["subsets"][0];
    assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.42.0.6", "{ep}");
    assert_eq!(subset["addresses"][0]["targetRef"]["name"], "web-a");
    assert_eq!(subset["addresses"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(subset["ports"][0]["port"], 8080);
    assert_eq!(subset["ports"][0]["name"], "http");

    let slices = s.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let items = slices["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{slices}");
    let slice = &items[0];
    let name = slice["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == "web-".len() + 5, "{name}");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8080);
    let eps = slice["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{slice}");
    let by_ip = |ip: &str| eps.iter().find(|e| e["addresses"][0] == ip).unwrap().clone();
    assert_eq!(by_ip("10.42.0.5")["conditions"]["ready"], true);
    assert_eq!(by_ip("10.42.0.6")["conditions"]["ready"], false);
    assert_eq!(by_ip("10.42.0.6")["conditions"]["terminating"], false);

    // The second pod turning ready joins the ready addresses.
    run_pod(&s, "web-b", "10.42.0.6", true);
    eventually(20, "both addresses ready", || {
        let out = s.ok(&["get", "endpoints", "web"]);
        (out.contains("10.42.0.5:8080") && out.contains("10.42.0.6:8080")).then_some(())
    });
    // A selector-less service is left to whoever manages it.
    assert!(!s.kubectl(&["get", "endpoints", "manual"]).ok());
    let manual = s.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=manual"]);
    assert_eq!(manual["items"].as_array().unwrap().len(), 0);
    // The API server's own service keeps its API server-managed endpoints.
    let k = s.kubectl(&["get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io", "-o", "name"]);
    assert!(k.stdout.is_empty(), "{}", k.stdout);

    // publishNotReadyAddresses puts every pod in the ready addresses.
    s.ok(&["delete", "pod", "web-b"]);
    pod(&s, "web-c", "app: web", None, "");
    run_pod(&s, "web-c", "10.42.0.8", false);
    s.ok(&["patch", "service", "web", "--type=merge", "-p", r#"{"spec":{"publishNotReadyAddresses":true}}"#]);
    eventually(20, "not-ready pod published", || {
        let out = s.ok(&["get", "endpoints", "web"]);
        (out.contains("10.42.0.8:8080") && !out.contains("10.42.0.6")).then_some(())
    });

    // Deleting the service removes its endpoints and slices.
    s.ok(&["delete", "service", "web"]);
    eventually(20, "endpoints removed", || {
        let slices = s.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
        (!s.kubectl(&["get", "endpoints", "web"]).ok() && slices["items"].as_array().unwrap().is_empty()).then_some(())
    });
}

#[test]
fn nodes_get_pod_cidrs_and_a_stale_lease_makes_a_node_unreachable() {
    let s = Server::start();
    ready_node(&s, "hk-n1");
    ready_node(&s, "hk-n2");
    renew_lease(&s, "hk-n1");
    renew_lease(&s, "hk-n2");
    let cidrs = eventually(20, "pod CIDRs", || {
        let a = s.ok(&["get", "node", "hk-n1", "-o", "jsonpath={.spec.podCIDR} {.spec.podCIDRs[0]}"]);
        let b = s.ok(&["get", "node", "hk-n2", "-o", "jsonpath={.spec.podCIDR}"]);
        (!a.trim().is_empty() && !b.is_empty()).then_some((a, b))
    });
    let (a, b) = cidrs;
    let (a, a0) = a.split_once(' ').unwrap();
    assert_eq!(a, a0);
    assert_ne!(a, b);
    for c in [a, b.as_str()] {
        assert!(c.starts_with("10.42.") && c.ends_with(".0/24"), "{c}");
    }

    // Allocations are read back from the nodes after a restart: a new node gets a fresh range.
    s.restart();
    ready_node(&s, "hk-n3");
    let c = eventually(20, "pod CIDR after restart", || {
        let c = s.ok(&["get", "node", "hk-n3", "-o", "jsonpath={.spec.podCIDR}"]);
        (!c.is_empty()).then_some(c)
    });
    assert!(c != a && c != b && c.starts_with("10.42."), "{c} vs {a} {b}");
    renew_lease(&s, "hk-n1");
    renew_lease(&s, "hk-n2");

    // hk-n2 keeps renewing its lease; hk-n1 stops. After the 40 s grace period hk-n1 is unreachable.
    let start = std::time::Instant::now();
    eventually(75, "hk-n1 Ready=Unknown", || {
        renew_lease(&s, "hk-n2");
        let out = s.ok(&["get", "node", "hk-n1", "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#]);
        if out == "Unknown" {
            return Some(());
        }
        std::thread::sleep(Duration::from_secs(2));
        None
    });
    assert!(start.elapsed() > Duration::from_secs(25), "went unknown too early: {:?}", start.elapsed());
    let node = s.json(&["get", "node", "hk-n1"]);
    let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let taints = eventually(20, "unreachable taints", || {
        let node = s.json(&["get", "node", "hk-n1"]);
        let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let has = |effect: &str| taints.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == effect);
        (has("NoSchedule") && has("NoExecute")).then_some(taints)
    });
    assert!(taints.iter().all(|t| t["timeAdded"].is_string()), "{taints:?}");
    assert!(s.ok(&["get", "nodes"]).lines().any(|l| l.starts_with("hk-n1") && l.contains("NotReady")));
    eventually(20, "NodeNotReady event", || {
        let out = s.ok(&["get", "events", "-A", "-o", "jsonpath={range .items[*]}{.reason} {.involvedObject.name}{\"\\n\"}{end}"]);
        out.contains("NodeNotReady hk-n1").then_some(())
    });
    // The healthy node is untouched.
    let n2 = s.json(&["get", "node", "hk-n2"]);
    assert!(n2["spec"]["taints"].is_null(), "{n2}");

    // The kubelet comes back: the taints go away.
    renew_lease(&s, "hk-n1");
    heartbeat(&s, "hk-n1");
    eventually(20, "taints removed", || {
        let node = s.json(&["get", "node", "hk-n1"]);
        node["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()).then_some(())
    });
}

#[test]
fn a_noexecute_taint_evicts_pods_that_do_not_tolerate_it() {
    let s = Server::start();
    ready_node(&s, "hk-t1");
    renew_lease(&s, "hk-t1");
    pod(&s, "plain", "app: t", Some("hk-t1"), "");
    let tolerate = "  tolerations:\n  - key: dedicated\n    operator: Exists\n    effect: NoExecute\n";
    pod(&s, "tolerant", "app: t", Some("hk-t1"), tolerate);
    let briefly = "  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: x\n    effect: NoExecute\n    tolerationSeconds: 3\n";
    pod(&s, "briefly", "app: t", Some("hk-t1"), briefly);
    for p in ["plain", "tolerant", "briefly"] {
        run_pod(&s, p, "10.42.0.9", true);
    }
    s.ok(&["taint", "nodes", "hk-t1", "dedicated=x:NoExecute"]);
    eventually(15, "plain evicted", || (!s.kubectl(&["get", "pod", "plain"]).ok()).then_some(()));
    assert!(s.kubectl(&["get", "pod", "briefly"]).ok(), "briefly was evicted before its tolerationSeconds");
    eventually(20, "briefly evicted after 3s", || (!s.kubectl(&["get", "pod", "briefly"]).ok()).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.kubectl(&["get", "pod", "tolerant"]).ok(), "a tolerating pod must stay");
    let events = s.ok(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}"]);
    assert!(events.contains("TaintManagerEviction: Marking for deletion Pod default/plain"), "{events}");
    s.ok(&["taint", "nodes", "hk-t1", "dedicated=x:NoExecute-"]);

    // A kubelet reporting Ready=False gets the not-ready taints (while another
    // node is Ready: with every node down none gets a NoExecute taint); the
    // remaining pod tolerates them for the default 300 s, so it stays.
    ready_node(&s, "hk-t2");
    renew_lease(&s, "hk-t2");
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"runtime down"}]}}"#;
    s.ok(&["patch", "node", "hk-t1", "--subresource=status", "--type=merge", "-p", patch]);
    eventually(20, "not-ready taints", || {
        let node = s.json(&["get", "node", "hk-t1"]);
        let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let has = |effect: &str| taints.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == effect);
        (has("NoSchedule") && has("NoExecute")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.kubectl(&["get", "pod", "tolerant"]).ok(), "default tolerations keep the pod for 300 s");
    heartbeat(&s, "hk-t1");
    eventually(20, "taints removed", || {
        let node = s.json(&["get", "node", "hk-t1"]);
        node["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()).then_some(())
    });
}

#[test]
fn pdb_status_and_drain_refusing_then_succeeding() {
    let s = Server::start();
    ready_node(&s, "hk-d1");
    ready_node(&s, "hk-d2");
    for (i, p) in ["db-0", "db-1"].iter().enumerate() {
        pod(&s, p, "app: db", Some("hk-d1"), "");
        run_pod(&s, p, &format!("10.42.0.{}", 20 + i), true);
    }
    s.ok(&["create", "pdb", "db", "--selector=app=db", "--min-available=2"]);
    eventually(20, "pdb status", || {
        let st = s.json(&["get", "pdb", "db"])["status"].clone();
        (st["currentHealthy"] == 2 && st["desiredHealthy"] == 2 && st["expectedPods"] == 2 && st["observedGeneration"].is_number()).then_some(())
    });
    let row = s.ok(&["get", "pdb", "db", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[..4], ["db", "2", "N/A", "0"], "{row}");
    let cond = s.json(&["get", "pdb", "db"])["status"]["conditions"][0].clone();
    assert_eq!((cond["type"].as_str(), cond["reason"].as_str(), cond["status"].as_str()), (Some("DisruptionAllowed"), Some("InsufficientPods"), Some("False")));

    // A pod that is not Ready may go although the budget allows no
    // disruption: it is not healthy, and the healthy ones still meet it.
    pod(&s, "db-sick", "app: db", Some("hk-d1"), "");
    run_pod(&s, "db-sick", "10.42.0.29", false);
    eventually(20, "3 expected pods", || (s.json(&["get", "pdb", "db"])["status"]["expectedPods"] == 3).then_some(()));

    let drain = ["drain", "hk-d1", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=20s"];
    let out = s.kubectl(&drain);
    assert!(!out.ok(), "drain should have been refused: {}", out.stdout);
    assert!(out.stderr.contains("disruption budget"), "{}", out.stderr);
    assert!(out.stdout.contains("pod/db-sick evicted"), "{}", out.stdout);
    assert_eq!(s.ok(&["get", "pods", "--no-headers"]).lines().count(), 2);

    // Two more healthy replicas elsewhere: the budget now allows two disruptions.
    heartbeat(&s, "hk-d1");
    heartbeat(&s, "hk-d2");
    for (i, p) in ["db-2", "db-3"].iter().enumerate() {
        pod(&s, p, "app: db", Some("hk-d2"), "");
        run_pod(&s, p, &format!("10.42.1.{}", 20 + i), true);
    }
    eventually(20, "ALLOWED DISRUPTIONS 2", || {
        let row = s.ok(&["get", "pdb", "db", "--no-headers"]);
        (row.split_whitespace().nth(3) == Some("2")).then_some(())
    });
    let out = s.kubectl(&drain);
    assert!(out.ok(), "drain failed: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("evicted"), "{}", out.stdout);
    let left = s.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(left, "db-2 db-3");
    eventually(20, "budget spent", || {
        let st = s.json(&["get", "pdb", "db"])["status"].clone();
        (st["currentHealthy"] == 2 && st["disruptionsAllowed"] == 0 && st["disruptedPods"].is_null()).then_some(())
    });
    assert!(s.ok(&["get", "node", "hk-d1"]).contains("SchedulingDisabled"));
}

#[test]
fn pods_bound_to_missing_nodes_are_collected() {
    let s = Server::start();
    ready_node(&s, "hk-g1");
    pod(&s, "on-ghost", "app: g", Some("hk-ghost"), "");
    pod(&s, "on-g1", "app: g", Some("hk-g1"), "");
    pod(&s, "unbound", "app: g", None, "");
    run_pod(&s, "on-g1", "10.42.0.30", true);
    s.ok(&["delete", "node", "hk-g1"]);
    eventually(40, "orphaned pods collected", || {
        let left = s.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
        (left == "unbound").then_some(())
    });
}

#[test]
fn events_expire_after_the_event_ttl() {
    let s = Server::start_with(&["--disable-controllers", "--disable-scheduler", "--event-ttl", "3s"]);
    let event = |name: &str, times: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"{name}"}},"involvedObject":{{"kind":"Pod","name":"p","namespace":"default"}},
              "reason":"Tested","message":"m","type":"Normal","count":1{times}}}"#
        )
    };
    // One last seen years ago, one without timestamps (so aged from its creation).
    let out = s.apply_stdin(&["create", "-f", "-"], &event("stale", r#","firstTimestamp":"2020-01-01T00:00:00Z","lastTimestamp":"2020-01-01T00:00:00Z""#));
    assert!(out.ok(), "{}", out.stderr);
    let out = s.apply_stdin(&["create", "-f", "-"], &event("fresh", ""));
    assert!(out.ok(), "{}", out.stderr);
    let created = std::time::Instant::now();
    eventually(10, "the stale event expired", || (!s.kubectl(&["get", "event", "stale"]).ok()).then_some(()));
    eventually(15, "the fresh event expired", || (!s.kubectl(&["get", "event", "fresh"]).ok()).then_some(()));
    // creationTimestamp has whole seconds, so the age read can be up to 1 s more.
    assert!(created.elapsed() >= Duration::from_secs(2), "the fresh event went before its TTL of 3 s");
    let bad = Command::new(e2e::skiff_bin()).args(["server", "--event-ttl", "soon"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("want a duration such as 1h"), "{bad:?}");
}
