//! The real kubectl against a real skiff server: discovery, every read and
//! write verb, output formats, watch, paging, selectors, namespaces, errors
//! and crash safety.

use e2e::{eventually, Server};
use serde_json::Value;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  containers:
  - name: web
    image: localhost:5000/busybox:1.36
    ports: [{containerPort: 80}]
"#;

const DEPLOYMENT: &str = r#"
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
      containers: [{name: api, image: localhost:5000/api:v1}]
"#;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: localhost:5000/busybox, command: ["true"]}]
"#;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn discovery_version_and_health() {
    let s = Server::start_api_only();
    let v = json(&s.ok(&["version", "-o", "json"]));
    let server_version = v["serverVersion"]["gitVersion"].as_str().unwrap();
    assert!(server_version.starts_with("v1.33.") && server_version.ends_with("-skiff"), "{server_version}");

    let versions = s.ok(&["api-versions"]);
    for gv in ["v1", "apps/v1", "batch/v1", "autoscaling/v2", "autoscaling/v1", "policy/v1", "networking.k8s.io/v1",
        "discovery.k8s.io/v1", "coordination.k8s.io/v1", "events.k8s.io/v1", "rbac.authorization.k8s.io/v1",
        "storage.k8s.io/v1", "scheduling.k8s.io/v1"] {
        assert!(versions.lines().any(|l| l == gv), "api-versions lacks {gv}:\n{versions}");
    }
    let resources = s.ok(&["api-resources", "--no-headers"]);
    for (name, short) in [("pods", "po"), ("deployments", "deploy"), ("services", "svc"), ("namespaces", "ns"),
        ("persistentvolumeclaims", "pvc"), ("networkpolicies", "netpol"), ("cronjobs", "cj"), ("horizontalpodautoscalers", "hpa")] {
        assert!(resources.lines().any(|l| l.starts_with(name) && l.contains(&format!(" {short} "))), "{name} {short}:\n{resources}");
    }
    let namespaced = s.ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(namespaced.lines().any(|l| l == "nodes") && !namespaced.lines().any(|l| l == "pods"));

    let ns = s.ok(&["get", "ns", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,STATUS:.status.phase"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.lines().any(|l| l.starts_with(n) && l.ends_with("Active")), "{ns}");
    }
    assert_eq!(s.ok(&["get", "--raw", "/livez"]), "ok");
    assert!(s.ok(&["get", "--raw", "/healthz?verbose"]).contains("healthz check passed"));
    assert!(s.ok(&["get", "--raw", "/readyz?verbose"]).trim_end().ends_with("readyz check passed"));
    // The requests above show up in the metrics.
    let metrics = s.ok(&["get", "--raw", "/metrics"]);
    assert!(metrics.contains("apiserver_request_total{code=\"200\",resource=\"namespaces\",verb=\"LIST\"}"), "{metrics}");
    assert!(metrics.contains("apiserver_request_duration_seconds_bucket{resource=\"namespaces\",verb=\"LIST\",le=\"+Inf\"}"));
    // The kubernetes service points at us.
    let svc = json(&s.ok(&["get", "svc", "kubernetes", "-o", "json"]));
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
}

#[test]
fn create_and_read_in_every_format() {
    let s = Server::start_api_only();
    s.ok(&["create", "namespace", "shop"]);
    assert_eq!(s.ok(&["create", "configmap", "cfg", "-n", "shop", "--from-literal=color=blue", "--from-literal=size=2"]), "configmap/cfg created");
    assert_eq!(s.ok(&["create", "secret", "generic", "pw", "-n", "shop", "--from-literal=password=hunter2"]), "secret/pw created");
    for (m, what) in [(POD, "pod/web"), (DEPLOYMENT, "deployment.apps/api"), (SERVICE, "service/web"), (JOB, "job.batch/once")] {
        let out = s.apply_stdin(&["create", "-n", "shop", "-f", "-"], m);
        assert!(out.ok(), "{}", out.stderr);
        assert_eq!(out.stdout, format!("{what} created"));
    }
    // Defaults applied by the server.
    let pod = json(&s.ok(&["get", "pod", "web", "-n", "shop", "-o", "json"]));
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert!(pod["metadata"]["uid"].as_str().unwrap().len() == 36);
    let secret = json(&s.ok(&["get", "secret", "pw", "-n", "shop", "-o", "json"]));
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["type"], "Opaque");

    // Table output.
    let table = s.ok(&["get", "pods", "-n", "shop"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/1", "Pending", "0"]);
    let wide = s.ok(&["get", "pods", "-n", "shop", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("IP") && wide.contains("NOMINATED NODE") && wide.contains("READINESS GATES"), "{wide}");
    let deploy = s.ok(&["get", "deploy", "-n", "shop"]);
    assert!(deploy.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE"), "{deploy}");
    assert!(deploy.contains("api    0/2     0            0"), "{deploy}");
    let svc = s.ok(&["get", "svc", "web", "-n", "shop", "--no-headers"]);
    let cells: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!((cells[0], cells[1], cells[3], cells[4]), ("web", "ClusterIP", "<none>", "80/TCP"), "{svc}");
    assert!(cells[2].starts_with("10.43."), "{svc}");

    // Machine formats.
    let yaml = s.ok(&["get", "cm", "cfg", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("color: blue") && yaml.contains("kind: ConfigMap"), "{yaml}");
    assert_eq!(s.ok(&["get", "cm", "cfg", "-n", "shop", "-o", "name"]), "configmap/cfg");
    assert_eq!(s.ok(&["get", "cm", "cfg", "-n", "shop", "-o", "jsonpath={.data.size}"]), "2");
    let cc = s.ok(&["get", "pods", "-n", "shop", "-o", "custom-columns=N:.metadata.name,IMG:.spec.containers[0].image", "--no-headers"]);
    assert_eq!(cc.split_whitespace().collect::<Vec<_>>(), ["web", "localhost:5000/busybox:1.36"]);
    let labels = s.ok(&["get", "pods", "-n", "shop", "--show-labels"]);
    assert!(labels.contains("LABELS") && labels.contains("app=web,tier=front"), "{labels}");
    let all_ns = s.ok(&["get", "cm", "-A", "--no-headers"]);
    assert!(all_ns.lines().any(|l| l.starts_with("shop ") && l.contains("cfg")), "{all_ns}");
    let all = s.ok(&["get", "all", "-n", "shop"]);
    for what in ["pod/web", "service/web", "deployment.apps/api", "job.batch/once"] {
        assert!(all.contains(what), "get all lacks {what}:\n{all}");
    }

    // describe shows the object and its events.
    let event = format!(r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"web.1","namespace":"shop"}},
        "involvedObject":{{"kind":"Pod","namespace":"shop","name":"web","uid":"{}","apiVersion":"v1"}},
        "reason":"Scheduled","message":"Successfully assigned shop/web to node-a","type":"Normal",
        "source":{{"component":"default-scheduler"}},"count":1,
        "firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z"}}"#, pod["metadata"]["uid"].as_str().unwrap());
    assert!(s.apply_stdin(&["create", "-f", "-"], &event).ok());
    let described = s.ok(&["describe", "pod", "web", "-n", "shop"]);
    assert!(described.contains("Name:") && described.contains("web") && described.contains("localhost:5000/busybox:1.36"), "{described}");
    assert!(described.contains("Successfully assigned shop/web to node-a"), "describe lacks the event:\n{described}");
    let events = s.ok(&["get", "events", "-n", "shop", "--field-selector", "involvedObject.name=web", "--no-headers"]);
    assert!(events.contains("Scheduled"), "{events}");
}

#[test]
fn label_annotate_scale_replace_patch() {
    let s = Server::start_api_only();
    assert!(s.apply_stdin(&["create", "-f", "-"], DEPLOYMENT).ok());
    assert!(s.apply_stdin(&["create", "-f", "-"], POD).ok());
    assert_eq!(s.ok(&["label", "pod", "web", "env=prod"]), "pod/web labeled");
    assert_eq!(s.ok(&["label", "pod", "web", "tier-"]), "pod/web unlabeled");
    assert_eq!(s.ok(&["annotate", "pod", "web", "owner=team-a"]), "pod/web annotated");
    let pod = json(&s.ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(pod["metadata"]["labels"], serde_json::json!({"app": "web", "env": "prod"}));
    assert_eq!(pod["metadata"]["annotations"]["owner"], "team-a");
    let err = s.fails(&["label", "pod", "web", "env=dev"]);
    assert!(err.contains("'env' already has a value (prod), and --overwrite is false"), "{err}");

    // scale goes through the scale subresource and bumps the generation.
    assert_eq!(s.ok(&["scale", "deployment", "api", "--replicas=5"]), "deployment.apps/api scaled");
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!((d["spec"]["replicas"].as_i64(), d["metadata"]["generation"].as_i64()), (Some(5), Some(2)));
    let scale = json(&s.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/api/scale"]));
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(5)));
    assert_eq!(scale["status"]["selector"], "app=api");
    let err = s.fails(&["patch", "deploy", "api", "--subresource=scale", "--type=merge", "-p", r#"{"spec":{"replicas":-1}}"#]);
    assert!(err.contains(r#"The Scale "api" is invalid: spec.replicas"#), "{err}");
    // A label change does not bump the generation.
    s.ok(&["label", "deploy", "api", "x=y"]);
    assert_eq!(json(&s.ok(&["get", "deploy", "api", "-o", "json"]))["metadata"]["generation"], 2);

    // replace with the current resourceVersion works; with a stale one it conflicts.
    let mut d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    let stale = d.clone();
    d["spec"]["replicas"] = 3.into();
    assert_eq!(s.apply_stdin(&["replace", "-f", "-"], &d.to_string()).stdout, "deployment.apps/api replaced");
    let out = s.apply_stdin(&["replace", "-f", "-"], &stale.to_string());
    assert!(!out.ok());
    assert!(out.stderr.contains(r#"Operation cannot be fulfilled on deployments.apps "api": the object has been modified; please apply your changes to the latest version and try again"#), "{}", out.stderr);

    // Patches.
    s.ok(&["patch", "deploy", "api", "--type=merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    s.ok(&["patch", "deploy", "api", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"localhost:5000/api:v2"}]"#]);
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "localhost:5000/api:v2");
    // The main resource ignores status; /status ignores spec.
    s.ok(&["patch", "deploy", "api", "--type=merge", "-p", r#"{"status":{"replicas":9}}"#]);
    assert!(json(&s.ok(&["get", "deploy", "api", "-o", "json"]))["status"]["replicas"].is_null());
    s.ok(&["patch", "deploy", "api", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":9},"spec":{"replicas":1}}"#]);
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!((d["status"]["replicas"].as_i64(), d["spec"]["replicas"].as_i64()), (Some(9), Some(4)));
}

#[test]
fn watch_delete_paging_and_selectors() {
    let s = Server::start();
    eventually(20, "root CA configmap", || s.kubectl(&["get", "cm", "kube-root-ca.crt"]).ok().then_some(()));
    let out_file = s.dir.path().join("watch.out");
    let mut watcher = s.kubectl_background(&["get", "configmaps", "-w", "--output-watch-events", "--no-headers"], &out_file);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.ok(&["create", "configmap", "w1", "--from-literal=a=1"]);
    s.ok(&["label", "configmap", "w1", "changed=yes"]);
    s.ok(&["delete", "configmap", "w1"]);
    let seen = eventually(20, "watch events", || {
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        (text.contains("DELETED")).then_some(text)
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let kinds: Vec<&str> = seen.lines().filter(|l| l.contains("w1")).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{seen}");

    // Paging: 23 objects fetched 5 at a time.
    for i in 0..23 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        s.ok(&["create", "configmap", &format!("page-{i:02}")]);
        s.ok(&["label", "configmap", &format!("page-{i:02}"), &format!("tier={tier}"), &format!("n={i}")]);
    }
    let paged = s.ok(&["get", "cm", "--chunk-size=5", "-l", "tier", "-o", "name"]);
    assert_eq!(paged.lines().count(), 23);
    let raw = json(&s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?limit=5"]));
    assert_eq!(raw["items"].as_array().unwrap().len(), 5);
    assert!(raw["metadata"]["continue"].is_string());

    // Label selectors.
    let count = |sel: &str| s.ok(&["get", "cm", "-l", sel, "-o", "name"]).lines().filter(|l| !l.is_empty()).count();
    assert_eq!(count("tier=even"), 12);
    assert_eq!(count("tier==odd"), 11);
    s.ok(&["create", "configmap", "plain"]);
    // Unlabeled: "plain" and the kube-root-ca.crt every namespace gets.
    assert_eq!(count("tier!=even"), 13);
    assert_eq!(count("n in (1,2,3)"), 3);
    assert_eq!(count("tier,n notin (0,1)"), 21);
    assert_eq!(count("!tier"), 2);
    // Field selectors, and upstream's error for an unsupported field.
    assert_eq!(s.ok(&["get", "cm", "--field-selector", "metadata.name=page-07", "-o", "name"]), "configmap/page-07");
    let err = s.fails(&["get", "cm", "--field-selector", "data.x=1"]);
    assert!(err.contains("field label not supported: data.x"), "{err}");

    // delete by label, --all, and --wait.
    assert_eq!(s.ok(&["delete", "cm", "-l", "tier=odd"]).lines().count(), 11);
    s.ok(&["delete", "cm", "page-00", "--wait=true"]);
    assert!(s.fails(&["get", "cm", "page-00"]).contains(r#"configmaps "page-00" not found"#));
    s.ok(&["delete", "cm", "--all"]);
    // Only the root CA, which its controller publishes again, may come back.
    let left = s.ok(&["get", "cm", "-o", "name"]);
    assert!(left.is_empty() || left == "configmap/kube-root-ca.crt", "{left}");
}

#[test]
fn namespaces_lifecycle() {
    let s = Server::start();
    s.ok(&["create", "ns", "temp"]);
    s.ok(&["create", "configmap", "a", "-n", "temp"]);
    assert!(s.apply_stdin(&["create", "-n", "temp", "-f", "-"], DEPLOYMENT).ok());
    let err = s.fails(&["create", "configmap", "x", "-n", "missing"]);
    assert!(err.contains(r#"namespaces "missing" not found"#), "{err}");
    // A finalizer holds one object back, so the namespace stays Terminating.
    s.ok(&["patch", "cm", "a", "-n", "temp", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    s.ok(&["delete", "ns", "temp", "--wait=false"]);
    eventually(20, "namespace Terminating and emptied", || {
        let phase = s.ok(&["get", "ns", "temp", "-o", "jsonpath={.status.phase}"]);
        let left = s.ok(&["get", "deploy", "-n", "temp", "-o", "name"]);
        (phase == "Terminating" && left.is_empty()).then_some(())
    });
    let err = s.fails(&["create", "configmap", "late", "-n", "temp"]);
    assert!(err.contains("unable to create new content in namespace temp because it is being terminated"), "{err}");
    s.ok(&["patch", "cm", "a", "-n", "temp", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    eventually(20, "namespace removed", || s.kubectl(&["get", "ns", "temp"]).stderr.contains("not found").then_some(()));
}

#[test]
fn upstream_errors_for_bad_input() {
    let s = Server::start_api_only();
    s.ok(&["create", "configmap", "dup"]);
    let err = s.fails(&["create", "configmap", "dup"]);
    assert_eq!(err, r#"error: failed to create configmap: configmaps "dup" already exists"#);
    let err = s.fails(&["get", "pod", "nope"]);
    assert_eq!(err, r#"Error from server (NotFound): pods "nope" not found"#);
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: [{name: c}]\n";
    let out = s.apply_stdin(&["create", "-f", "-"], bad);
    assert!(out.stderr.contains(r#"The Pod "bad" is invalid: spec.containers[0].image: Required value"#), "{}", out.stderr);
    let bad_name = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n";
    let out = s.apply_stdin(&["create", "-f", "-"], bad_name);
    assert!(out.stderr.contains(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#), "{}", out.stderr);
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\nbogus: 1\n";
    let out = s.apply_stdin(&["create", "-f", "-"], unknown);
    assert!(out.stderr.contains(r#"unknown field "bogus""#), "{}", out.stderr);
    // Nothing invalid was stored.
    assert!(s.fails(&["get", "pod", "bad"]).contains("not found"));
    // Services: explicit IPs honoured, conflicts refused, node ports unique.
    let svc = |name: &str, extra: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80{extra}}}]\n");
    let with_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: fixed}\nspec:\n  clusterIP: 10.43.7.7\n  ports: [{port: 80}]\n";
    assert!(s.apply_stdin(&["create", "-f", "-"], with_ip).ok());
    let taken = with_ip.replace("name: fixed", "name: fixed2");
    let out = s.apply_stdin(&["create", "-f", "-"], &taken);
    assert!(out.stderr.contains("failed to allocate IP 10.43.7.7: provided IP is already allocated"), "{}", out.stderr);
    let np = svc("np1", ", nodePort: 30080").replace("spec:\n", "spec:\n  type: NodePort\n");
    assert!(s.apply_stdin(&["create", "-f", "-"], &np).ok());
    let out = s.apply_stdin(&["create", "-f", "-"], &np.replace("np1", "np2"));
    assert!(out.stderr.contains("spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"), "{}", out.stderr);
    let headless = svc("headless", "").replace("spec:\n", "spec:\n  clusterIP: None\n");
    assert!(s.apply_stdin(&["create", "-f", "-"], &headless).ok());
    assert_eq!(s.ok(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]), "None");
    // Deleting releases the port for reuse.
    s.ok(&["delete", "svc", "np1"]);
    assert!(s.apply_stdin(&["create", "-f", "-"], &np.replace("np1", "np2")).ok());
}

#[test]
fn kill_9_keeps_every_acknowledged_write() {
    let s = Server::start_api_only();
    for i in 0..30 {
        s.ok(&["create", "configmap", &format!("keep-{i}"), &format!("--from-literal=i={i}")]);
    }
    assert!(s.apply_stdin(&["create", "-f", "-"], DEPLOYMENT).ok());
    let before = json(&s.ok(&["get", "cm,deploy", "-o", "json"]));
    s.restart();
    let after = json(&s.ok(&["get", "cm,deploy", "-o", "json"]));
    let ids = |v: &Value| -> Vec<(String, String, String)> {
        v["items"].as_array().unwrap().iter().map(|o| (
            o["metadata"]["name"].as_str().unwrap().to_string(),
            o["metadata"]["uid"].as_str().unwrap().to_string(),
            o["metadata"]["resourceVersion"].as_str().unwrap().to_string(),
        )).collect()
    };
    assert_eq!(ids(&before), ids(&after));
    let kept = ids(&after).iter().filter(|(n, _, _)| n.starts_with("keep-") || n == "api").count();
    assert_eq!(kept, 31);
}
