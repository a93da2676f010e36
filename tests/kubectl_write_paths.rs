//! kubectl's write paths against a real skiff server: client-side apply
//! (strategic merge patch with the last-applied annotation), diff, edit,
//! patch, set, dry-run and explain.

use e2e::Server;
use serde_json::Value;

const DEPLOYMENT_V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api, team: a}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "localhost:5000/api:v1"}]
"#;

// Image changed, an env var and a port added, the `team` label dropped.
const DEPLOYMENT_V2: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: "localhost:5000/api:v2"
        env: [{name: MODE, value: fast}]
        ports: [{containerPort: 8080}]
"#;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn deployment(s: &Server) -> Value {
    json(&s.ok(&["get", "deploy", "api", "-o", "json"]))
}

#[test]
fn client_side_apply_updates_with_strategic_merge() {
    let s = Server::start_api_only();
    assert_eq!(s.apply_stdin(&["apply", "-f", "-"], DEPLOYMENT_V1).stdout, "deployment.apps/api created");
    assert_eq!(s.apply_stdin(&["apply", "-f", "-"], DEPLOYMENT_V1).stdout, "deployment.apps/api unchanged");
    // A change made by someone else survives an apply that does not mention it.
    s.ok(&["label", "deploy", "api", "owner=ops"]);
    let out = s.apply_stdin(&["apply", "-f", "-"], DEPLOYMENT_V2);
    assert_eq!(out.stdout, "deployment.apps/api configured", "{}", out.stderr);
    let d = deployment(&s);
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "api", "owner": "ops"}));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "localhost:5000/api:v2");
    assert_eq!(c["env"], serde_json::json!([{"name": "MODE", "value": "fast"}]));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(d["metadata"]["generation"], 2);

    // diff shows the pending change and exits 1; nothing is stored by it.
    let v3 = DEPLOYMENT_V2.replace("api:v2", "api:v3");
    let out = s.apply_stdin(&["diff", "-f", "-"], &v3);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stdout.contains("-        image: localhost:5000/api:v2") && out.stdout.contains("+        image: localhost:5000/api:v3"), "{}", out.stdout);
    assert_eq!(deployment(&s)["spec"]["template"]["spec"]["containers"][0]["image"], "localhost:5000/api:v2");
    assert_eq!(s.apply_stdin(&["diff", "-f", "-"], DEPLOYMENT_V2).status.code(), Some(0));
}

#[test]
fn set_patch_edit_and_dry_run() {
    let s = Server::start_api_only();
    assert!(s.apply_stdin(&["create", "-f", "-"], DEPLOYMENT_V2).ok());
    assert_eq!(s.ok(&["set", "image", "deploy/api", "api=localhost:5000/api:v9"]), "deployment.apps/api image updated");
    assert_eq!(s.ok(&["set", "env", "deploy/api", "EXTRA=1"]), "deployment.apps/api env updated");
    s.ok(&["set", "resources", "deploy/api", "--limits=cpu=500m,memory=256Mi"]);
    let c = deployment(&s)["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!(c["image"], "localhost:5000/api:v9");
    assert_eq!(c["env"], serde_json::json!([{"name": "MODE", "value": "fast"}, {"name": "EXTRA", "value": "1"}]));
    assert_eq!(c["resources"]["limits"], serde_json::json!({"cpu": "500m", "memory": "256Mi"}));

    // Strategic merge by container name keeps the other fields of the container.
    s.ok(&["patch", "deploy", "api", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"localhost:5000/api:v10"}]}}}}"#]);
    let c = deployment(&s)["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!((c["image"].as_str(), c["env"].as_array().map(Vec::len)), (Some("localhost:5000/api:v10"), Some(2)));

    // edit with a scripted editor.
    let out = s.kubectl_with_env(&["edit", "deploy", "api"], &[("EDITOR", "sed -i s/replicas:\\ 2/replicas:\\ 4/")]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(deployment(&s)["spec"]["replicas"], 4);

    // Server-side dry run answers as if stored and stores nothing.
    let y = s.ok(&["create", "deployment", "dry", "--image=nginx", "--dry-run=server", "-o", "yaml"]);
    assert!(y.contains("name: dry") && y.contains("progressDeadlineSeconds: 600") && y.contains("uid:"), "{y}");
    let y = s.ok(&["create", "service", "clusterip", "drysvc", "--tcp=80:8080", "--dry-run=server", "-o", "yaml"]);
    assert!(y.contains("clusterIP: 10.43."), "{y}");
    assert!(s.fails(&["get", "deploy", "dry"]).contains("not found"));
    assert!(s.fails(&["get", "svc", "drysvc"]).contains("not found"));

    // A patch producing an invalid object is refused and stores nothing.
    let err = s.fails(&["patch", "deploy", "api", "--type=merge", "-p", r#"{"spec":{"replicas":-1}}"#]);
    assert!(err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"), "{err}");
    assert_eq!(deployment(&s)["spec"]["replicas"], 4);
}

#[test]
fn explain_reads_the_served_openapi() {
    let s = Server::start_api_only();
    let out = s.ok(&["explain", "pods.spec.containers.livenessProbe"]);
    assert!(out.contains("FIELD: livenessProbe <Probe>") && out.contains("Periodic probe of container liveness"), "{out}");
    let out = s.ok(&["explain", "deployment.spec.strategy"]);
    assert!(out.contains("rollingUpdate") && out.contains("GROUP:      apps"), "{out}");
}

#[test]
fn apply_lists_multi_document_files_and_prune() {
    let s = Server::start_api_only();
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"l1","labels":{"set":"p"}},"data":{"a":"1"}},
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"l2","labels":{"set":"p"}}}]}"#;
    let out = s.apply_stdin(&["apply", "-f", "-"], list);
    assert_eq!(out.stdout, "configmap/l1 created\nconfigmap/l2 created", "{}", out.stderr);
    // kubectl validates List items against the served OpenAPI v2 (protobuf) itself.
    let bad = list.replace(r#""data":{"a":"1"}"#, r#""dataa":{"a":"1"}"#);
    let out = s.apply_stdin(&["apply", "-f", "-"], &bad);
    assert!(out.stderr.contains(r#"unknown field "dataa" in io.k8s.api.core.v1.ConfigMap"#), "{}", out.stderr);

    let dir = s.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let two = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: l1, labels: {set: p}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: l3, labels: {set: p}}\n";
    std::fs::write(dir.join("cms.yaml"), two).unwrap();
    let out = s.kubectl(&["apply", "-f", dir.to_str().unwrap(), "-l", "set=p", "--prune"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(out.stdout.contains("configmap/l3 created") && out.stdout.contains("configmap/l2 pruned"), "{}", out.stdout);
    let names = s.ok(&["get", "cm", "-l", "set=p", "-o", "name"]);
    assert_eq!(names, "configmap/l1\nconfigmap/l3");
    // The change of l1 (data removed) went through the last-applied path.
    assert!(s.ok(&["get", "cm", "l1", "-o", "jsonpath={.data}"]).is_empty());
}

#[test]
fn server_side_apply_with_two_managers() {
    let s = Server::start_api_only();
    let out = s.apply_stdin(&["apply", "--server-side", "--field-manager=team-a", "-f", "-"], DEPLOYMENT_V1);
    assert_eq!(out.stdout, "deployment.apps/api serverside-applied", "{}", out.stderr);
    let managed = deployment_with_managed_fields(&s);
    let a = managed.iter().find(|m| m["manager"] == "team-a").expect("team-a entry");
    assert_eq!((a["operation"].as_str(), a["apiVersion"].as_str(), a["fieldsType"].as_str()), (Some("Apply"), Some("apps/v1"), Some("FieldsV1")));
    assert!(a["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{a}");
    assert!(a["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"api\"}"].is_object(), "{a}");

    // A second manager setting replicas differently conflicts, naming the owner and field.
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {replicas: 5}\n";
    let out = s.apply_stdin(&["apply", "--server-side", "--field-manager=team-b", "-f", "-"], other);
    assert!(!out.ok());
    assert!(out.stderr.contains(r#"Apply failed with 1 conflict: conflict with "team-a": .spec.replicas"#), "{}", out.stderr);
    assert_eq!(deployment(&s)["spec"]["replicas"], 2);
    // --force-conflicts takes the field over.
    let out = s.apply_stdin(&["apply", "--server-side", "--field-manager=team-b", "--force-conflicts", "-f", "-"], other);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(deployment(&s)["spec"]["replicas"], 5);
    let managed = deployment_with_managed_fields(&s);
    let b = managed.iter().find(|m| m["manager"] == "team-b").expect("team-b entry");
    assert!(b["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    let a = managed.iter().find(|m| m["manager"] == "team-a").expect("team-a entry");
    assert!(a["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "team-a still owns replicas: {a}");

    // A field team-a stops applying, and nobody else owns, is removed; the
    // replicas it gave up stay as team-b set them.
    let without_label = DEPLOYMENT_V1.replace(", team: a", "").replace("  replicas: 2\n", "");
    let out = s.apply_stdin(&["apply", "--server-side", "--field-manager=team-a", "-f", "-"], &without_label);
    assert!(out.ok(), "{}", out.stderr);
    let d = deployment(&s);
    assert!(d["metadata"]["labels"].get("team").is_none(), "{}", d["metadata"]);
    assert_eq!(d["spec"]["replicas"], 5);
    // Imperative writes are recorded as Update operations.
    s.ok(&["label", "deploy", "api", "x=y"]);
    let managed = deployment_with_managed_fields(&s);
    assert!(managed.iter().any(|m| m["operation"] == "Update" && m["fieldsV1"]["f:metadata"]["f:labels"]["f:x"].is_object()), "{managed:?}");
}

fn deployment_with_managed_fields(s: &Server) -> Vec<Value> {
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json", "--show-managed-fields"]));
    d["metadata"]["managedFields"].as_array().cloned().unwrap_or_default()
}

#[test]
fn generators_run_expose_and_invalid_apply() {
    let s = Server::start_api_only();
    for (args, kind) in [
        (vec!["create", "job", "once", "--image=busybox"], "kind: Job"),
        (vec!["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *"], "kind: CronJob"),
    ] {
        let mut full = args.clone();
        full.extend(["--dry-run=server", "-o", "yaml"]);
        let y = s.ok(&full);
        assert!(y.contains(kind) && y.contains("uid:"), "{y}");
    }
    assert!(s.fails(&["get", "job", "once"]).contains("not found"));
    assert_eq!(s.ok(&["run", "web", "--image=localhost:5000/busybox", "--port=80", "--labels=app=web"]), "pod/web created");
    assert_eq!(s.ok(&["expose", "pod", "web", "--port=8080", "--target-port=80"]), "service/web exposed");
    let svc = json(&s.ok(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(svc["spec"]["selector"], serde_json::json!({"app": "web"}));
    assert_eq!((svc["spec"]["ports"][0]["port"].as_i64(), svc["spec"]["ports"][0]["targetPort"].as_i64()), (Some(8080), Some(80)));
    // An invalid manifest is refused with upstream's message, and nothing is stored.
    let bad = DEPLOYMENT_V1.replace("template:\n    metadata: {labels: {app: api}}", "template:\n    metadata: {labels: {app: other}}");
    let out = s.apply_stdin(&["apply", "-f", "-"], &bad);
    assert!(out.stderr.contains(r#"The Deployment "api" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#), "{}", out.stderr);
    assert!(s.fails(&["get", "deploy", "api"]).contains("not found"));
}
