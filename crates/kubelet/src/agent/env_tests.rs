use super::*;
use serde_json::json;

fn pod(containers: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web", "tier": "front"}, "annotations": {"a": "x\"y"}},
        "spec": {"nodeName": "node1", "serviceAccountName": "sa1", "containers": containers},
    }))
    .unwrap()
}

fn ctx() -> FieldContext {
    FieldContext { host_ip: "192.168.1.5".into(), pod_ips: vec!["10.42.0.7".into()], node_cpu_milli: 2000, node_memory: 8 << 30, node_ephemeral_storage: 100 << 30 }
}

fn sources() -> EnvSources {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"LEVEL": "debug", "MODE": "fast"}})).unwrap();
    let sec: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"}, "data": {"PASSWORD": "aHVudGVyMg=="}})).unwrap();
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "redis-master"}, "spec": {"clusterIP": "10.43.0.11", "ports": [{"name": "db", "port": 6379, "protocol": "TCP"}]}})).unwrap();
    let headless: Service = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})).unwrap();
    EnvSources {
        config_maps: [("cfg".to_string(), Some(cm)), ("gone".to_string(), None)].into(),
        secrets: [("creds".to_string(), Some(sec))].into(),
        services: vec![svc, headless],
    }
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn expansion_rules() {
    let vars: HashMap<&str, &str> = [("A", "1"), ("B", "two")].into();
    let look = |n: &str| vars.get(n).map(|v| v.to_string());
    assert_eq!(expand("$(A)-$(B)", &look), "1-two");
    assert_eq!(expand("$$(A)", &look), "$(A)");
    assert_eq!(expand("$(MISSING) $A $", &look), "$(MISSING) $A $");
    assert_eq!(expand("x$(A", &look), "x$(A");
    assert_eq!(expand("$$$$", &look), "$$");
    assert_eq!(expand("héllo $(B)", &look), "héllo two");
}

#[test]
fn resolves_values_references_and_fields() {
    let p = pod(json!([{"name": "c", "image": "busybox",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "nope", "optional": true}}],
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hi $(POD) in $(CFG_LEVEL) $$(POD)"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "missing", "optional": true}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "REDIS", "value": "$(REDIS_MASTER_SERVICE_HOST)"},
        ]}]));
    let c = &p.spec.as_ref().unwrap().containers[0];
    let env = resolve(&p, c, &ctx(), &sources()).unwrap();
    assert_eq!(get(&env, "CFG_LEVEL"), Some("debug"));
    assert_eq!(get(&env, "CFG_MODE"), Some("fast"));
    assert_eq!(get(&env, "GREETING"), Some("hi web in debug $(POD)"));
    assert_eq!(get(&env, "PW"), Some("hunter2"));
    assert_eq!(get(&env, "OPT"), None);
    assert_eq!(get(&env, "APP"), Some("web"));
    assert_eq!(get(&env, "IP"), Some("10.42.0.7"));
    assert_eq!(get(&env, "HOST"), Some("192.168.1.5"));
    assert_eq!(get(&env, "NODE"), Some("node1"));
    assert_eq!(get(&env, "SA"), Some("sa1"));
    assert_eq!(get(&env, "REDIS"), Some("10.43.0.11"));
    // envFrom first, then env in order, then service variables.
    assert_eq!(env[0].0, "CFG_LEVEL");
    assert_eq!(env[2].0, "POD");
    assert!(env.iter().position(|(k, _)| k == "REDIS_MASTER_SERVICE_HOST").unwrap() > env.iter().position(|(k, _)| k == "REDIS").unwrap());
}

#[test]
fn missing_references_give_upstream_errors() {
    let one = |env: serde_json::Value| {
        let p = pod(json!([{"name": "c", "env": env}]));
        resolve(&p, &p.spec.as_ref().unwrap().containers[0], &ctx(), &sources()).map_err(|e| e.to_string())
    };
    assert_eq!(one(json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}])).unwrap_err(), "configmap \"gone\" not found");
    assert_eq!(one(json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}])).unwrap_err(), "couldn't find key k in ConfigMap ns1/cfg");
    assert_eq!(one(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}])).unwrap_err(), "couldn't find key k in Secret ns1/creds");
    assert_eq!(one(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}])).unwrap_err(), "secret \"s2\" not found");
    assert!(one(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k", "optional": true}}}])).unwrap().iter().all(|(k, _)| k != "X"));
}

#[test]
fn service_link_variables() {
    let env = service_env(&sources().services);
    let want = [
        ("REDIS_MASTER_SERVICE_HOST", "10.43.0.11"),
        ("REDIS_MASTER_SERVICE_PORT", "6379"),
        ("REDIS_MASTER_SERVICE_PORT_DB", "6379"),
        ("REDIS_MASTER_PORT", "tcp://10.43.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.43.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
        ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
        ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.43.0.11"),
    ];
    let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want.to_vec(), "headless services get no variables");
}

#[test]
fn fields_and_resources() {
    let p = pod(json!([{"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]));
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(field_value(&p, &ctx(), "metadata.labels").unwrap(), "app=\"web\"\ntier=\"front\"");
    assert_eq!(field_value(&p, &ctx(), "metadata.annotations").unwrap(), "a=\"x\\\"y\"");
    assert_eq!(field_value(&p, &ctx(), "metadata.uid").unwrap(), "u-1");
    assert!(field_value(&p, &ctx(), "spec.bogus").is_err());
    assert_eq!(resource_value(c, &ctx(), "requests.cpu", None).unwrap(), "1");
    assert_eq!(resource_value(c, &ctx(), "requests.cpu", Some("1m")).unwrap(), "250");
    assert_eq!(resource_value(c, &ctx(), "limits.cpu", None).unwrap(), "2", "no limit: node allocatable");
    assert_eq!(resource_value(c, &ctx(), "limits.memory", Some("1Mi")).unwrap(), "128");
    assert_eq!(resource_value(c, &ctx(), "requests.memory", None).unwrap(), (64 << 20).to_string());
    assert_eq!(resource_value(c, &ctx(), "limits.memory", Some("1Gi")).unwrap(), "1", "rounded up");
}
