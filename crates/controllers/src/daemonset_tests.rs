use super::*;
use chrono::TimeZone;
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
}

fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})).unwrap())
}

fn nodes(n: usize) -> Vec<Arc<Node>> {
    (0..n).map(|i| node(&format!("n{i}"), json!({}), json!([]))).collect()
}

/// A daemon pod on `node` made from revision `hash`, Ready since `ready_secs` ago (None: not ready).
fn pod(name: &str, node: &str, hash: &str, ready_secs: Option<i64>, age: i64) -> Arc<Pod> {
    let ready = ready_secs.map(|s| json!([{"type": "Ready", "status": "True", "lastTransitionTime": (now() - chrono::Duration::seconds(s)).to_rfc3339()}]));
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {REVISION_LABEL: hash}, "creationTimestamp": (now() - chrono::Duration::seconds(age)).to_rfc3339()},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": ready.unwrap_or(json!([]))},
        }))
        .unwrap(),
    )
}

fn daemon(surge: i32, unavailable: i32) -> Daemon {
    let ds: DaemonSet = serde_json::from_value(json!({
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": []}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}
    }))
    .unwrap();
    Daemon::new(&ds, "new".into())
}

fn by_node(pods: Vec<Arc<Pod>>) -> ByNode {
    let mut m = ByNode::new();
    for p in pods {
        m.entry(target_node(&p).unwrap()).or_default().push(p);
    }
    m
}

#[test]
fn daemon_pods_tolerate_node_problems_and_cordons() {
    let mut spec = PodSpec { host_network: Some(true), ..Default::default() };
    add_daemon_tolerations(&mut spec);
    add_daemon_tolerations(&mut spec);
    let keys: Vec<_> = spec.tolerations.iter().flatten().map(|t| format!("{}:{}", t.key.as_deref().unwrap(), t.effect.as_deref().unwrap())).collect();
    assert_eq!(keys.len(), 7, "added once: {keys:?}");
    assert!(keys.contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string()));
    assert!(keys.contains(&"node.kubernetes.io/network-unavailable:NoSchedule".to_string()));
    let cordoned = node("c", json!({}), json!([{"key": UNSCHEDULABLE, "effect": "NoSchedule"}, {"key": NOT_READY, "effect": "NoExecute"}]));
    assert_eq!(should_run(&cordoned, &spec), (true, true));
}

#[test]
fn placement_follows_selector_affinity_and_taints() {
    let mut spec: PodSpec = serde_json::from_value(json!({"containers": [], "nodeSelector": {"role": "edge"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}})).unwrap();
    add_daemon_tolerations(&mut spec);
    assert_eq!(should_run(&node("x", json!({"role": "edge", "zone": "a"}), json!([])), &spec), (true, true));
    assert_eq!(should_run(&node("x", json!({"role": "edge", "zone": "b"}), json!([])), &spec), (false, false));
    assert_eq!(should_run(&node("x", json!({"zone": "a"}), json!([])), &spec), (false, false));
    let labels = json!({"role": "edge", "zone": "a"});
    // A NoSchedule taint keeps new pods off but lets a running one stay; NoExecute evicts.
    assert_eq!(should_run(&node("x", labels.clone(), json!([{"key": "k", "effect": "NoSchedule"}])), &spec), (false, true));
    assert_eq!(should_run(&node("x", labels.clone(), json!([{"key": "k", "effect": "NoExecute"}])), &spec), (false, false));
    spec.tolerations.as_mut().unwrap().push(Toleration { key: Some("k".into()), operator: Some("Exists".into()), ..Default::default() });
    assert_eq!(should_run(&node("x", labels, json!([{"key": "k", "effect": "NoExecute"}])), &spec), (true, true));
}

#[test]
fn pinned_pods_name_their_node() {
    let affinity = pin_to_node(None, "n7");
    let p: Pod = Pod { spec: Some(PodSpec { affinity: Some(affinity), ..Default::default() }), ..Default::default() };
    assert_eq!(target_node(&p).as_deref(), Some("n7"));
}

#[test]
fn manage_creates_on_missing_nodes_and_removes_extras_and_failed_pods() {
    let d = daemon(0, 1);
    let mut failed = (*pod("f", "n2", "new", None, 5)).clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let pods = by_node(vec![pod("a", "n0", "new", Some(10), 50), pod("b", "n0", "new", Some(10), 10), Arc::new(failed), pod("gone", "n9", "new", None, 5)]);
    let plan = manage(&d, &nodes(3), &pods, now(), &|_| false);
    assert_eq!(plan.create, ["n1"]);
    assert_eq!(plan.delete, ["b", "f"], "the younger duplicate and the failed pod (n9's pod is bound; pod GC takes it)");
    assert_eq!(plan.failed, [("n2".to_string(), "f".to_string())]);
    let plan = manage(&d, &nodes(3), &pods, now(), &|n| n == "n2");
    assert!(plan.backing_off && !plan.delete.contains(&"f".to_string()));
}

#[test]
fn rolling_without_surge_keeps_within_max_unavailable() {
    let d = daemon(0, 2);
    let pods = by_node((0..5).map(|i| pod(&format!("p{i}"), &format!("n{i}"), "old", Some(10), 100)).collect());
    assert_eq!(rolling_update(&d, &nodes(5), &pods, now()).delete.len(), 2);
    // One new pod not yet ready counts against the budget; an unavailable old pod is replaced regardless.
    let mut list = vec![pod("new0", "n0", "new", None, 1), pod("p1", "n1", "old", None, 100)];
    list.extend((2..5).map(|i| pod(&format!("p{i}"), &format!("n{i}"), "old", Some(10), 100)));
    let plan = rolling_update(&d, &nodes(5), &by_node(list), now());
    assert_eq!(plan.delete.len(), 2, "{plan:?}");
    assert!(plan.delete.contains(&"p1".to_string()));
    assert!(plan.create.is_empty());
}

#[test]
fn rolling_with_surge_starts_new_pods_first_and_then_retires_old_ones() {
    let d = daemon(1, 0);
    let pods = by_node((0..3).map(|i| pod(&format!("p{i}"), &format!("n{i}"), "old", Some(10), 100)).collect());
    let plan = rolling_update(&d, &nodes(3), &pods, now());
    assert_eq!((plan.create.len(), plan.delete.len()), (1, 0));
    // The surge pod on n0 is available: its old pod goes, and the next node may surge.
    let mut list = vec![pod("p0", "n0", "old", Some(10), 100), pod("new0", "n0", "new", Some(5), 6)];
    list.extend((1..3).map(|i| pod(&format!("p{i}"), &format!("n{i}"), "old", Some(10), 100)));
    let plan = rolling_update(&d, &nodes(3), &by_node(list.clone()), now());
    assert_eq!(plan.delete, ["p0"]);
    assert_eq!(plan.create.len(), 1);
    // manage keeps both while the new one is unavailable, then drops the old.
    let mut waiting = list.clone();
    waiting[1] = pod("new0", "n0", "new", None, 6);
    assert!(manage(&d, &nodes(3), &by_node(waiting), now(), &|_| false).delete.is_empty());
    assert_eq!(manage(&d, &nodes(3), &by_node(list), now(), &|_| false).delete, ["p0"]);
}

#[test]
fn counts_follow_upstream() {
    let mut d = daemon(0, 1);
    d.min_ready_seconds = 30;
    let mut all = nodes(3);
    all.push(node("tainted", json!({}), json!([{"key": "k", "effect": "NoSchedule"}])));
    let pods = by_node(vec![pod("a", "n0", "new", Some(60), 100), pod("b", "n1", "old", Some(10), 100), pod("c", "tainted", "new", Some(60), 100)]);
    let c = counts(&d, &all, &pods, now());
    assert_eq!(c, Counts { desired: 3, current: 2, misscheduled: 1, ready: 2, available: 1, updated: 1 });
    assert_eq!(scaled(&IntOrString::String("10%".into()), 15), 2);
}
