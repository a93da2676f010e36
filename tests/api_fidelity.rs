//! Where typed clients compare what skiff answers with what upstream's API
//! server answers: field order and required fields of objects, what DELETE
//! returns, field selectors on unset fields, and the
//! endpoints clients' discovery helpers expect (componentstatuses,
//! apiregistration.k8s.io, subresources listed in /api/v1).

use e2e::Server;
use serde_json::Value;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

fn raw(s: &Server, path: &str) -> String {
    s.ok(&["get", "--raw", path])
}

#[test]
fn objects_statuses_and_deletes_look_like_upstreams() {
    let s = Server::start_api_only();

    // Go's field order, top level and nested, and required status counters.
    s.apply_stdin(&["apply", "-f", "-"], r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, labels: {app: agent}}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: busybox}]}
"#);
    let text = raw(&s, "/apis/apps/v1/namespaces/default/daemonsets/agent");
    let ds: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys(&ds), ["kind", "apiVersion", "metadata", "spec", "status"]);
    let meta = keys(&ds["metadata"]);
    assert_eq!(&meta[..4], ["name", "namespace", "uid", "resourceVersion"], "ObjectMeta order: {meta:?}");
    for counter in ["currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"] {
        assert_eq!(ds["status"][counter], 0, "{counter} in {}", ds["status"]);
    }
    assert_eq!(keys(&ds["spec"]["template"]["spec"]["containers"][0])[..2], ["name", "image"]);
    s.ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
    let rc_status = s.apply_stdin(&["create", "-o", "json", "-f", "-"], r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 0
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: a, image: busybox}]}
"#);
    assert!(rc_status.ok(), "{}", rc_status.stderr);
    let rc: Value = serde_json::from_str(&rc_status.stdout).unwrap();
    assert_eq!(rc["status"], serde_json::json!({"replicas": 0}));

    // DELETE: the object for Pods, Services and the like; a Success Status otherwise.
    s.apply_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n");
    let deleted: Value = serde_json::from_str(&s.ok(&["delete", "--raw", "/api/v1/namespaces/default/services/web"])).unwrap();
    assert_eq!((deleted["kind"].as_str(), deleted["metadata"]["name"].as_str()), (Some("Service"), Some("web")), "{deleted}");
    let status: Value = serde_json::from_str(&s.ok(&["delete", "--raw", "/api/v1/namespaces/default/configmaps/settings"])).unwrap();
    assert_eq!(keys(&status), ["kind", "apiVersion", "metadata", "status", "details"]);
    assert_eq!(status["details"], serde_json::json!({"name": "settings", "kind": "configmaps", "uid": status["details"]["uid"]}));

    // A batch/v1 Job deleted without a propagation policy orphans its pods,
    // with upstream's warning; being marked for deletion moves the generation.
    s.apply_stdin(&["apply", "-f", "-"], r#"
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: a, image: busybox}]}
"#);
    let out = s.kubectl(&["delete", "--raw", "/apis/batch/v1/namespaces/default/jobs/once"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(out.stderr.contains("child pods are preserved by default when jobs are deleted"), "{}", out.stderr);
    let job: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(job["metadata"]["finalizers"], serde_json::json!(["orphan"]), "{job}");
    assert!(job["metadata"]["deletionTimestamp"].is_string(), "{job}");
    assert_eq!(job["metadata"]["generation"], 2, "{job}");

    // DeleteCollection answers the objects as they were listed.
    s.ok(&["create", "configmap", "c1"]);
    s.ok(&["label", "configmap", "c1", "sweep=yes"]);
    let swept: Value = serde_json::from_str(&s.ok(&["delete", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=sweep%3Dyes"])).unwrap();
    assert_eq!(swept["kind"], "ConfigMapList", "{swept}");
    assert_eq!(swept["items"][0]["metadata"]["name"], "c1", "{swept}");
    assert!(swept["items"][0]["metadata"]["deletionTimestamp"].is_null(), "{swept}");

    // An unset boolean selects as false (kube-rs cordons nodes this way).
    s.apply_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Node\nmetadata: {name: plain}\n");
    s.apply_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Node\nmetadata: {name: cordoned}\nspec: {unschedulable: true}\n");
    let names = |sel: &str| s.ok(&["get", "nodes", "--field-selector", sel, "-o", "name"]);
    assert_eq!(names("spec.unschedulable==false").trim(), "node/plain");
    assert_eq!(names("spec.unschedulable=true").trim(), "node/cordoned");
}

#[test]
fn discovery_helpers_find_what_clients_expect() {
    let s = Server::start_api_only();

    let core: Value = serde_json::from_str(&raw(&s, "/api/v1")).unwrap();
    let names: Vec<&str> = core["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for sub in ["pods/attach", "pods/binding", "pods/ephemeralcontainers", "pods/eviction", "pods/exec", "pods/log", "pods/portforward",
        "pods/proxy", "pods/resize", "pods/status", "services/proxy", "nodes/proxy", "componentstatuses", "bindings"] {
        assert!(names.contains(&sub), "/api/v1 lists {sub}: {names:?}");
    }
    let bindings = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "bindings").unwrap();
    assert_eq!((&bindings["kind"], &bindings["namespaced"], &bindings["verbs"]), (&serde_json::json!("Binding"), &serde_json::json!(true), &serde_json::json!(["create"])));

    // The legacy bindings collection binds the pod its metadata names.
    s.apply_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: unbound}\nspec: {schedulerName: nobody, containers: [{name: c, image: busybox}]}\n");
    let bound = s.apply_stdin(&["create", "--validate=false", "-f", "-"], "apiVersion: v1\nkind: Binding\nmetadata: {name: unbound}\ntarget: {kind: Node, name: node-a}\n");
    assert_eq!(s.ok(&["get", "pod", "unbound", "-o", "jsonpath={.spec.nodeName}"]), "node-a", "{}", bound.stderr);
    assert!(!s.kubectl(&["get", "--raw", "/api/v1/namespaces/default/bindings"]).ok(), "bindings are create-only");

    // RuntimeClasses: upstream's columns and the handler as a DNS label.
    s.apply_stdin(&["apply", "-f", "-"], "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: gvisor}\nhandler: runsc\n");
    let table = s.ok(&["get", "runtimeclasses"]);
    assert!(table.lines().next().unwrap().split_whitespace().eq(["NAME", "HANDLER", "AGE"]), "{table}");
    assert!(table.lines().nth(1).unwrap().split_whitespace().take(2).eq(["gvisor", "runsc"]), "{table}");
    let bad = s.apply_stdin(&["apply", "-f", "-"], "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: bad}\nhandler: Not_A_Label\n");
    assert!(!bad.ok() && bad.stderr.contains("handler: Invalid value: \"Not_A_Label\""), "{}", bad.stderr);
    let changed = s.apply_stdin(&["apply", "-f", "-"], "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: gvisor}\nhandler: kata\n");
    assert!(!changed.ok() && changed.stderr.contains("field is immutable"), "{}", changed.stderr);

    let cs = s.ok(&["get", "componentstatuses"]);
    for name in ["scheduler", "controller-manager", "etcd-0"] {
        assert!(cs.lines().any(|l| l.starts_with(name) && l.contains("Healthy") && l.contains("ok")), "{cs}");
    }
    let one: Value = serde_json::from_str(&s.ok(&["get", "cs", "etcd-0", "-o", "json"])).unwrap();
    assert_eq!(one["conditions"][0]["status"], "True", "{one}");
    assert!(!s.kubectl(&["delete", "cs", "scheduler"]).ok(), "component statuses are read-only");

    let apis = s.ok(&["get", "apiservices"]);
    for name in ["v1.", "v1.apps", "v1.batch", "v2.autoscaling"] {
        assert!(apis.lines().any(|l| l.starts_with(&format!("{name} ")) && l.contains("Local") && l.contains("True")), "{apis}");
    }
    let apps: Value = serde_json::from_str(&s.ok(&["get", "apiservice", "v1.apps", "-o", "json"])).unwrap();
    assert_eq!((apps["spec"]["group"].as_str(), apps["spec"]["groupPriorityMinimum"].as_i64()), (Some("apps"), Some(17800)), "{apps}");

    let nodes = s.ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(nodes.trim_end().ends_with("readyz check passed"), "{nodes}");
}
