//! Exact-message tests: errors, metadata, pods, services, config objects.

use serde_json::{json, Value};

use super::*;

pub(crate) fn msgs(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    validate(group, kind, obj, old)
        .iter()
        .map(FieldError::message)
        .collect()
}

pub(crate) fn has(list: &[String], want: &str) -> bool {
    let found = list.iter().any(|m| m == want);
    if !found {
        eprintln!("missing: {want}\n got: {list:#?}");
    }
    found
}

pub(crate) fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": containers, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "terminationGracePeriodSeconds": 30}
    })
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[test]
fn error_bodies() {
    assert_eq!(
        FieldError::required("a.b", "").message(),
        "a.b: Required value"
    );
    assert_eq!(
        FieldError::required("a", "why").body(),
        "Required value: why"
    );
    assert_eq!(
        FieldError::invalid("a", "Foo", "bad").body(),
        "Invalid value: \"Foo\": bad"
    );
    assert_eq!(
        FieldError::invalid("a", 70000, "x").body(),
        "Invalid value: 70000: x"
    );
    assert_eq!(
        FieldError::not_supported("a", "Sometimes", &["Always", "Never", "OnFailure"]).body(),
        "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\""
    );
    assert_eq!(
        FieldError::duplicate("a", "web").body(),
        "Duplicate value: \"web\""
    );
    assert_eq!(
        FieldError::not_found("a", "data").body(),
        "Not found: \"data\""
    );
    assert_eq!(FieldError::forbidden("a", "nope").body(), "Forbidden: nope");
    assert_eq!(
        FieldError::too_long("a", 262144).body(),
        "Too long: must have at most 262144 bytes"
    );
    assert_eq!(
        FieldError::too_many("a", 5, 4).body(),
        "Too many: 5: must have at most 4 items"
    );
    assert_eq!(
        FieldError::invalid("a", "q\"\n", "x").body(),
        "Invalid value: \"q\\\"\\n\": x"
    );
    assert_eq!(
        FieldError::invalid("a", json!(["x", "y"]), "d").body(),
        "Invalid value: []string{\"x\", \"y\"}: d"
    );
    assert_eq!(
        FieldError::invalid("a", json!({"b": "2", "a": "1"}), "d").body(),
        "Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: d"
    );
    assert_eq!(
        FieldError::invalid_repr("a", "v1.X{}", "d").body(),
        "Invalid value: v1.X{}: d"
    );
    assert_eq!(FieldError::required("a", "").reason(), "FieldValueRequired");
    assert_eq!(
        FieldError::not_supported("a", "x", &["y"]).reason(),
        "FieldValueNotSupported"
    );
}

#[test]
fn invalid_messages() {
    let one = [FieldError::required("spec.containers[0].image", "")];
    assert_eq!(
        invalid_message("Pod", "web", &one),
        "Pod \"web\" is invalid: spec.containers[0].image: Required value"
    );
    let two = [
        FieldError::required("spec.containers[0].image", ""),
        FieldError::required("spec.containers[0].image", ""),
        FieldError::not_supported(
            "spec.restartPolicy",
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        ),
    ];
    assert_eq!(
        invalid_message("Pod", "web", &two),
        "Pod \"web\" is invalid: [spec.containers[0].image: Required value, spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"]"
    );
    assert_eq!(
        invalid_message_for("apps", "Deployment", "nginx", &one),
        "Deployment.apps \"nginx\" is invalid: spec.containers[0].image: Required value"
    );
}

#[test]
fn object_meta_names() {
    let mut p = pod(json!([{"name": "c", "image": "nginx"}]));
    assert!(
        validate("", "Pod", &p, None).is_empty(),
        "{:?}",
        msgs("", "Pod", &p, None)
    );
    p["metadata"]["name"] = json!("Foo");
    assert!(has(
        &msgs("", "Pod", &p, None),
        &format!("metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}")
    ));
    p["metadata"]["name"] = json!("");
    assert!(has(
        &msgs("", "Pod", &p, None),
        "metadata.name: Required value: name or generateName is required"
    ));
    p["metadata"]["generateName"] = json!("web-");
    assert!(msgs("", "Pod", &p, None).is_empty());

    let ns = json!({"metadata": {"name": "my.ns"}});
    assert!(has(
        &msgs("", "Namespace", &ns, None),
        "metadata.name: Invalid value: \"my.ns\": must not contain dots"
    ));
    let svc =
        json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
    assert!(has(
        &msgs("", "Service", &svc, None),
        "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    ));
    let role = json!({"metadata": {"name": "a/b", "namespace": "d"}, "rules": []});
    assert!(has(
        &msgs("rbac.authorization.k8s.io", "Role", &role, None),
        "metadata.name: Invalid value: \"a/b\": may not contain '/'"
    ));
    let cr = json!({"metadata": {"name": "system:controller:x"}, "rules": []});
    assert!(msgs("rbac.authorization.k8s.io", "ClusterRole", &cr, None).is_empty());
    let node = json!({"metadata": {"name": "node-1.example.com", "namespace": "x"}});
    assert!(has(
        &msgs("", "Node", &node, None),
        "metadata.namespace: Forbidden: not allowed on this type"
    ));
    let cm = json!({"metadata": {"name": "c"}});
    assert!(has(
        &msgs("", "ConfigMap", &cm, None),
        "metadata.namespace: Required value"
    ));
}

#[test]
fn labels_annotations_finalizers() {
    let mut p = pod(json!([{"name": "c", "image": "nginx"}]));
    p["metadata"]["labels"] = json!({"-bad": "ok", "app": "a b"});
    let m = msgs("", "Pod", &p, None);
    assert!(has(&m, "metadata.labels: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
    assert!(has(&m, "metadata.labels: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
    p["metadata"]["labels"] = json!({"app": "x".repeat(64)});
    assert!(has(
        &msgs("", "Pod", &p, None),
        &format!(
            "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
            "x".repeat(64)
        )
    ));
    p["metadata"]["labels"] = json!({"a/b/c": "x"});
    assert!(has(&msgs("", "Pod", &p, None), "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
    p["metadata"]["labels"] = json!({"Example.com/x": "x"});
    assert!(has(
        &msgs("", "Pod", &p, None),
        &format!("metadata.labels: Invalid value: \"Example.com/x\": prefix part {SUBDOMAIN_MSG}")
    ));
    p["metadata"].as_object_mut().unwrap().remove("labels");
    p["metadata"]["annotations"] = json!({"big": "x".repeat(262145)});
    assert!(has(
        &msgs("", "Pod", &p, None),
        "metadata.annotations: Too long: must have at most 262144 bytes"
    ));
    p["metadata"]["annotations"] = json!({"Example.COM/Key": "ok"});
    assert!(msgs("", "Pod", &p, None).is_empty());
    p["metadata"]["annotations"] = json!({});
    p["metadata"]["finalizers"] = json!(["custom"]);
    assert!(has(&msgs("", "Pod", &p, None), "metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"));
}

#[test]
fn meta_update_immutable() {
    let old = json!({"metadata": {"name": "c", "namespace": "d", "uid": "u1", "resourceVersion": "1"}, "data": {}});
    let mut new = old.clone();
    new["metadata"]["uid"] = json!("u2");
    new["metadata"]["name"] = json!("other");
    let m = msgs("", "ConfigMap", &new, Some(&old));
    assert!(has(
        &m,
        "metadata.uid: Invalid value: \"u2\": field is immutable"
    ));
    assert!(has(
        &m,
        "metadata.name: Invalid value: \"other\": field is immutable"
    ));
}

#[test]
fn pod_containers() {
    let m = msgs("", "Pod", &pod(json!([])), None);
    assert_eq!(m, vec!["spec.containers: Required value".to_string()]);
    let m = msgs("", "Pod", &pod(json!([{"name": "web"}])), None);
    assert_eq!(
        m,
        vec!["spec.containers[0].image: Required value".to_string()]
    );
    let m = msgs(
        "",
        "Pod",
        &pod(json!([{"name": "web", "image": "a"}, {"name": "web", "image": "b"}])),
        None,
    );
    assert!(has(&m, "spec.containers[1].name: Duplicate value: \"web\""));
    let mut p = pod(json!([{"name": "web", "image": "a"}]));
    p["spec"]["initContainers"] = json!([{"name": "web", "image": "b"}]);
    assert!(has(
        &msgs("", "Pod", &p, None),
        "spec.initContainers[0].name: Duplicate value: \"web\""
    ));
    let m = msgs(
        "",
        "Pod",
        &pod(json!([{"name": "Web", "image": "a"}])),
        None,
    );
    assert!(has(&m, "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
    let m = msgs(
        "",
        "Pod",
        &pod(json!([{"name": "c", "image": " nginx"}])),
        None,
    );
    assert!(has(&m, "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace"));
}

#[test]
fn pod_ports_env_policies() {
    let c = json!([{"name": "c", "image": "i", "ports": [
        {"containerPort": 70000, "protocol": "TCP"},
        {"containerPort": 80, "hostPort": -1, "protocol": "ICMP", "name": "http"},
        {"containerPort": 81, "protocol": "TCP", "name": "http"},
        {"containerPort": 82, "protocol": "TCP", "name": "Bad_Name"}]}]);
    let m = msgs("", "Pod", &pod(c), None);
    assert!(has(&m, "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"));
    assert!(has(&m, "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive"));
    assert!(has(&m, "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""));
    assert!(has(
        &m,
        "spec.containers[0].ports[2].name: Duplicate value: \"http\""
    ));
    assert!(has(&m, "spec.containers[0].ports[3].name: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"));

    let c = json!([{"name": "c", "image": "i", "env": [{"name": "A=B"}, {"name": ""}, {"name": "X", "valueFrom": {}}]}]);
    let m = msgs("", "Pod", &pod(c), None);
    assert!(has(&m, "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"));
    assert!(has(&m, "spec.containers[0].env[1].name: Required value"));
    assert!(has(&m, "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));

    let mut p = pod(json!([{"name": "c", "image": "i"}]));
    p["spec"]["restartPolicy"] = json!("Sometimes");
    p["spec"]["dnsPolicy"] = json!("Whatever");
    p["spec"]["activeDeadlineSeconds"] = json!(0);
    p["spec"]["terminationGracePeriodSeconds"] = json!(-5);
    p["spec"]["nodeSelector"] = json!({"disk": "ssd!"});
    let m = msgs("", "Pod", &p, None);
    assert!(has(&m, "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""));
    assert!(has(&m, "spec.dnsPolicy: Unsupported value: \"Whatever\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""));
    assert!(has(
        &m,
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
    ));
    assert!(has(
        &m,
        "spec.terminationGracePeriodSeconds: Invalid value: -5: must be greater than or equal to 0"
    ));
    assert!(m.iter().any(
        |x| x.starts_with("spec.nodeSelector: Invalid value: \"ssd!\": a valid label must be")
    ));
}

#[test]
fn pod_resources_and_probes() {
    let c = json!([{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2", "memory": "abc"}}}]);
    let m = msgs("", "Pod", &pod(c), None);
    assert!(has(&m, "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"));
    assert!(has(&m, "spec.containers[0].resources.requests[memory]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
    let c = json!([{"name": "c", "image": "i", "resources": {"limits": {"memory": "512Mi"}, "requests": {"memory": "1Gi"}}}]);
    assert!(has(&msgs("", "Pod", &pod(c), None), "spec.containers[0].resources.requests: Invalid value: \"1Gi\": must be less than or equal to memory limit of 512Mi"));
    let c = json!([{"name": "c", "image": "i", "resources": {"requests": {"cpu": "-1"}}}]);
    assert!(has(&msgs("", "Pod", &pod(c), None), "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"));
    let c = json!([{"name": "c", "image": "i", "livenessProbe": {"exec": {"command": ["a"]}, "httpGet": {"port": 80}}, "readinessProbe": {}}]);
    let m = msgs("", "Pod", &pod(c), None);
    assert!(has(&m, "spec.containers[0].livenessProbe.httpGet: Forbidden: may not specify more than 1 handler type"));
    assert!(has(
        &m,
        "spec.containers[0].readinessProbe: Required value: must specify a handler type"
    ));
}

#[test]
fn pod_volumes() {
    let mut p = pod(json!([{"name": "c", "image": "i", "volumeMounts": [
        {"name": "data", "mountPath": "/d"}, {"name": "cfg", "mountPath": "/d"}, {"name": "cfg", "mountPath": ""}]}]));
    p["spec"]["volumes"] = json!([
        {"name": "cfg", "configMap": {"name": "x"}},
        {"name": "cfg", "emptyDir": {}},
        {"name": "none"},
        {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}}]);
    let m = msgs("", "Pod", &p, None);
    assert!(has(
        &m,
        "spec.containers[0].volumeMounts[0].name: Not found: \"data\""
    ));
    assert!(has(
        &m,
        "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique"
    ));
    assert!(has(
        &m,
        "spec.containers[0].volumeMounts[2].mountPath: Required value"
    ));
    assert!(has(&m, "spec.volumes[1].name: Duplicate value: \"cfg\""));
    assert!(has(
        &m,
        "spec.volumes[2]: Required value: must specify a volume type"
    ));
    assert!(has(
        &m,
        "spec.volumes[3].hostPath: Forbidden: may not specify more than 1 volume type"
    ));
}

#[test]
fn pod_update_rules() {
    let old = pod(json!([{"name": "c", "image": "nginx:1"}]));
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:2");
    new["spec"]["activeDeadlineSeconds"] = json!(100);
    new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
    assert!(
        msgs("", "Pod", &new, Some(&old)).is_empty(),
        "{:?}",
        msgs("", "Pod", &new, Some(&old))
    );
    new["spec"]["restartPolicy"] = json!("Never");
    assert!(has(&msgs("", "Pod", &new, Some(&old)), "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
    let mut new = old.clone();
    new["spec"]["containers"] = json!([{"name": "c", "image": "x"}, {"name": "d", "image": "y"}]);
    assert!(has(
        &msgs("", "Pod", &new, Some(&old)),
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ));
}

#[test]
fn services() {
    let base = json!({"metadata": {"name": "web", "namespace": "d"},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}});
    assert!(
        msgs("", "Service", &base, None).is_empty(),
        "{:?}",
        msgs("", "Service", &base, None)
    );
    let mut s = base.clone();
    s["spec"]["ports"] = json!([]);
    assert!(has(
        &msgs("", "Service", &s, None),
        "spec.ports: Required value"
    ));
    s["spec"]["clusterIP"] = json!("None");
    s["spec"]["clusterIPs"] = json!(["None"]);
    assert!(msgs("", "Service", &s, None).is_empty());
    let mut s = base.clone();
    s["spec"]["ports"] = json!([{"port": 80, "protocol": "TCP"}, {"port": 0, "protocol": "TCP", "name": "b", "targetPort": "Bad"}]);
    s["spec"]["type"] = json!("Weird");
    s["spec"]["sessionAffinity"] = json!("Sticky");
    let m = msgs("", "Service", &s, None);
    assert!(has(&m, "spec.ports[0].name: Required value"));
    assert!(has(
        &m,
        "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    ));
    assert!(has(&m, "spec.ports[1].targetPort: Invalid value: \"Bad\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"));
    assert!(has(&m, "spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""));
    assert!(has(&m, "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""));
    let mut s = base.clone();
    s["spec"]["clusterIP"] = json!("abc");
    s["spec"]["clusterIPs"] = json!(["abc"]);
    assert!(has(&msgs("", "Service", &s, None), "spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
    let mut s = base.clone();
    s["spec"]["clusterIP"] = json!("10.0.0.9");
    s["spec"]["clusterIPs"] = json!(["10.0.0.9"]);
    assert!(has(
        &msgs("", "Service", &s, Some(&base)),
        "spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.9\"}: may not change once set"
    ));
    let en = json!({"metadata": {"name": "ext", "namespace": "d"}, "spec": {"type": "ExternalName", "sessionAffinity": "None"}});
    assert!(has(
        &msgs("", "Service", &en, None),
        "spec.externalName: Required value"
    ));
}

#[test]
fn config_maps_and_secrets() {
    let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v", "ok.key": "v"}});
    assert!(has(&msgs("", "ConfigMap", &cm, None), "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
    let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "x".repeat(1024 * 1024 + 1)}});
    assert!(has(
        &msgs("", "ConfigMap", &big, None),
        "[]: Too long: must have at most 1048576 bytes"
    ));
    let old =
        json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
    let mut new = old.clone();
    new["data"]["a"] = json!("2");
    assert_eq!(
        msgs("", "ConfigMap", &new, Some(&old)),
        vec!["data: Forbidden: field is immutable when `immutable` is set".to_string()]
    );

    let tls = json!({"metadata": {"name": "t", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}});
    assert_eq!(
        msgs("", "Secret", &tls, None),
        vec!["data[tls.key]: Required value".to_string()]
    );
    let dc = json!({"metadata": {"name": "t", "namespace": "d"}, "type": "kubernetes.io/dockerconfigjson", "stringData": {}});
    assert_eq!(
        msgs("", "Secret", &dc, None),
        vec!["data[.dockerconfigjson]: Required value".to_string()]
    );
    let s1 = json!({"metadata": {"name": "t", "namespace": "d"}, "type": "Opaque", "data": {"a": "YQ=="}});
    let mut s2 = s1.clone();
    s2["type"] = json!("kubernetes.io/basic-auth");
    s2["data"] = json!({"username": "YQ=="});
    assert!(has(
        &msgs("", "Secret", &s2, Some(&s1)),
        "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
    ));
}

#[test]
fn quantities() {
    use super::qty::Qty;
    let c = |s: &str| Qty::parse(s).unwrap().canonical();
    assert_eq!(c("1000m"), "1");
    assert_eq!(c("0.5"), "500m");
    assert_eq!(c("1.5Gi"), "1536Mi");
    assert_eq!(c("1024Mi"), "1Gi");
    assert_eq!(c("2000"), "2k");
    assert_eq!(c("1500"), "1500");
    assert_eq!(c("1e3"), "1e3");
    assert_eq!(c("0.1m"), "100u");
    assert_eq!(c("512"), "512");
    assert!(Qty::parse("1.2.3").is_err());
    assert!(Qty::parse("1Qi").is_err());
    assert!(Qty::parse("1Gi")
        .unwrap()
        .cmp(&Qty::parse("1G").unwrap())
        .is_gt());
}
