use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn c(name: &str, requests: Value, limits: Value) -> Value {
    json!({"name": name, "resources": {"requests": requests, "limits": limits}})
}

fn names(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
    let mut p = pod(json!([c("a", json!({"cpu": "100m", "memory": "64Mi"}), json!({"cpu": "200m"})), c("b", json!({"cpu": "150m"}), json!({}))]));
    p["spec"]["initContainers"] = json!([c("init", json!({"cpu": "1"}), json!({}))]);
    let u = usage("", "pods", &p, now());
    assert_eq!(pretty(&u), "count/pods=1,cpu=1,limits.cpu=200m,memory=64Mi,pods=1,requests.cpu=1,requests.memory=64Mi");
    // A sidecar runs beside the containers and adds to them.
    p["spec"]["initContainers"] = json!([{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}]);
    assert_eq!(usage("", "pods", &p, now())["requests.cpu"].canonical(), "300m");
}

#[test]
fn finished_and_expired_pods_hold_no_compute_quota() {
    let mut p = pod(json!([c("a", json!({"cpu": "1"}), json!({}))]));
    p["status"]["phase"] = json!("Succeeded");
    assert_eq!(pretty(&usage("", "pods", &p, now())), "count/pods=1");
    p["status"]["phase"] = json!("Running");
    p["metadata"]["deletionTimestamp"] = json!("2023-12-31T23:59:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    assert!(!pod_counts(&p, now()));
    p["metadata"]["deletionGracePeriodSeconds"] = json!(120);
    assert!(pod_counts(&p, now()));
}

#[test]
fn services_count_node_ports_and_load_balancers() {
    let svc = |ty: &str| json!({"spec": {"type": ty, "ports": [{"port": 80}, {"port": 443}]}});
    assert_eq!(pretty(&usage("", "services", &svc("ClusterIP"), now())), "count/services=1,services=1,services.loadbalancers=0,services.nodeports=0");
    assert_eq!(pretty(&usage("", "services", &svc("NodePort"), now())), "count/services=1,services=1,services.loadbalancers=0,services.nodeports=2");
    assert_eq!(pretty(&usage("", "services", &svc("LoadBalancer"), now())), "count/services=1,services=1,services.loadbalancers=1,services.nodeports=2");
}

#[test]
fn claims_count_storage_overall_and_per_class() {
    let claim = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(
        pretty(&usage("", "persistentvolumeclaims", &claim, now())),
        "count/persistentvolumeclaims=1,fast.storageclass.storage.k8s.io/persistentvolumeclaims=1,fast.storageclass.storage.k8s.io/requests.storage=1Gi,persistentvolumeclaims=1,requests.storage=1Gi"
    );
}

#[test]
fn other_kinds_count_by_name() {
    assert_eq!(pretty(&usage("", "configmaps", &json!({}), now())), "configmaps=1,count/configmaps=1");
    assert_eq!(pretty(&usage("apps", "deployments", &json!({}), now())), "count/deployments.apps=1");
    let hard = names(&["pods", "count/deployments.apps", "configmaps"]);
    assert_eq!(matching_resources("apps", "deployments", &hard), names(&["count/deployments.apps"]));
    assert_eq!(matching_resources("", "configmaps", &hard), names(&["configmaps"]));
    assert!(matching_resources("", "secrets", &hard).is_empty());
}

#[test]
fn scopes_select_pods_only() {
    let quota = |scopes: Value, selector: Value| json!({"spec": {"scopes": scopes, "scopeSelector": selector}, "status": {"hard": {"pods": "1"}}});
    let best_effort = pod(json!([{"name": "a"}]));
    let mut burstable = pod(json!([c("a", json!({"cpu": "1"}), json!({}))]));
    let q = quota(json!(["BestEffort"]), Value::Null);
    assert!(matches(&q, "", "pods", &best_effort));
    assert!(!matches(&q, "", "pods", &burstable));
    let q = quota(json!(["NotTerminating"]), Value::Null);
    assert!(matches(&q, "", "pods", &burstable));
    burstable["spec"]["activeDeadlineSeconds"] = json!(30);
    assert!(!matches(&q, "", "pods", &burstable));
    let q = quota(Value::Null, json!({"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}));
    assert!(!matches(&q, "", "pods", &burstable));
    burstable["spec"]["priorityClassName"] = json!("high");
    assert!(matches(&q, "", "pods", &burstable));
    let services = json!({"spec": {"scopes": ["BestEffort"]}, "status": {"hard": {"services": "1"}}});
    assert!(!matches(&services, "", "services", &json!({})), "a scoped quota governs only pods");
}

#[test]
fn tracked_cpu_and_memory_must_be_specified_by_every_container() {
    let p = pod(json!([c("a", json!({"cpu": "1"}), json!({})), c("b", json!({}), json!({}))]));
    assert_eq!(
        pod_constraints(&names(&["pods", "limits.cpu", "requests.cpu"]), &p),
        Err("must specify limits.cpu for: a,b; requests.cpu for: b".to_string())
    );
    assert_eq!(pod_constraints(&names(&["pods", "count/pods"]), &p), Ok(()));
}

#[test]
fn arithmetic_and_messages() {
    let l = |v: Value| list(&v);
    let used = l(json!({"pods": "2", "requests.cpu": "500m"}));
    let hard = l(json!({"pods": "2", "requests.cpu": "1"}));
    let asked = l(json!({"pods": "1", "requests.cpu": "250m"}));
    let new = add(&used, &asked);
    assert_eq!(exceeded(&new, &hard), names(&["pods"]));
    assert_eq!(pretty(&sub_non_negative(&asked, &used)), "pods=0,requests.cpu=0");
    assert_eq!(to_json(&new), json!({"pods": "3", "requests.cpu": "750m"}));
    let quota = json!({"spec": {"hard": {"pods": "5", "requests.cpu": "2"}}});
    let pods = [pod(json!([c("a", json!({"cpu": "1"}), json!({}))])), pod(json!([c("a", json!({"cpu": "300m"}), json!({}))]))];
    assert_eq!(pretty(&used_by(&quota, "", "pods", &pods, now())), "pods=2,requests.cpu=1300m");
}
