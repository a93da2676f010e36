//! Exact-message tests: workloads (nested template paths), batch, and the
//! cluster-level kinds.

use serde_json::{json, Value};

use super::tests::{has, msgs};

fn deployment(labels: Value, selector: Value) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}], "restartPolicy": "Always"}
            }
        }
    })
}

#[test]
fn deployment_rules() {
    let d = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    assert!(
        msgs("apps", "Deployment", &d, None).is_empty(),
        "{:?}",
        msgs("apps", "Deployment", &d, None)
    );

    let mut bad = d.clone();
    bad["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    bad["spec"]["replicas"] = json!(-1);
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let m = msgs("apps", "Deployment", &bad, None);
    assert!(has(
        &m,
        "spec.template.spec.containers[0].image: Required value"
    ));
    assert!(has(
        &m,
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    ));
    assert!(has(&m, "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""));

    let mismatch = deployment(
        json!({"app": "other"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    assert!(has(
        &msgs("apps", "Deployment", &mismatch, None),
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
    ));

    let mut nosel = d.clone();
    nosel["spec"].as_object_mut().unwrap().remove("selector");
    assert!(has(
        &msgs("apps", "Deployment", &nosel, None),
        "spec.selector: Required value"
    ));

    let changed = deployment(
        json!({"app": "web", "v": "2"}),
        json!({"matchLabels": {"app": "web", "v": "2"}}),
    );
    assert!(has(
        &msgs("apps", "Deployment", &changed, Some(&d)),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    ));

    let mut zero = d.clone();
    zero["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 0, "maxUnavailable": "0%"});
    assert!(has(&msgs("apps", "Deployment", &zero, None), "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0"));
    let mut pct = d.clone();
    pct["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": "abc", "maxUnavailable": 1});
    assert!(has(&msgs("apps", "Deployment", &pct, None), "spec.strategy.rollingUpdate.maxSurge: Invalid value: abc: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
}

#[test]
fn other_workloads() {
    let rs = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    let mut rs = rs;
    rs["spec"].as_object_mut().unwrap().remove("strategy");
    rs["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0}]);
    assert!(has(
        &msgs("apps", "ReplicaSet", &rs, None),
        "spec.template.spec.containers[0].ports[0].containerPort: Required value"
    ));

    let ds = json!({"metadata": {"name": "ds", "namespace": "d"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}], "restartPolicy": "OnFailure"}}}});
    let m = msgs("apps", "DaemonSet", &ds, None);
    assert!(has(
        &m,
        "spec.template.spec.containers[0].image: Required value"
    ));
    assert!(has(&m, "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\""));

    let rc = json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": {"replicas": 1, "selector": {"a": "b"},
        "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert!(has(&msgs("", "ReplicationController", &rc, None), "spec.template.metadata.labels: Invalid value: map[string]string{\"a\":\"c\"}: `selector` does not match template `labels`"));

    let pt = json!({"metadata": {"name": "pt", "namespace": "d"}, "template": {"spec": {"containers": [{"name": "c"}]}}});
    assert!(has(
        &msgs("", "PodTemplate", &pt, None),
        "template.spec.containers[0].image: Required value"
    ));

    let ss = json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"replicas": 1, "serviceName": "db",
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert!(msgs("apps", "StatefulSet", &ss, None).is_empty());
    let mut ss2 = ss.clone();
    ss2["spec"]["serviceName"] = json!("other");
    assert!(has(&msgs("apps", "StatefulSet", &ss2, Some(&ss)), "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));

    let cr = json!({"metadata": {"name": "r", "namespace": "d"}, "data": {}, "revision": -1});
    assert!(has(
        &msgs("apps", "ControllerRevision", &cr, None),
        "revision: Invalid value: -1: must be greater than or equal to 0"
    ));
}

fn job() -> Value {
    json!({"metadata": {"name": "pi", "namespace": "d", "uid": "u"}, "spec": {
        "parallelism": 1, "completions": 1, "backoffLimit": 6,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
        "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u"}},
                     "spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}}}})
}

#[test]
fn jobs() {
    let j = job();
    assert!(
        msgs("batch", "Job", &j, None).is_empty(),
        "{:?}",
        msgs("batch", "Job", &j, None)
    );
    let mut bad = j.clone();
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    bad["spec"]["backoffLimit"] = json!(-1);
    let m = msgs("batch", "Job", &bad, None);
    assert!(has(&m, "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""));
    assert!(has(
        &m,
        "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"
    ));

    let mut changed = j.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
    let m = msgs("batch", "Job", &changed, Some(&j));
    assert!(
        m.iter().any(
            |x| x.starts_with("spec.template: Invalid value: core.PodTemplateSpec")
                && x.ends_with(": field is immutable")
        ),
        "{m:?}"
    );
    // A suspended, never-started job may change its node selector.
    let mut old = j.clone();
    old["spec"]["suspend"] = json!(true);
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    assert!(
        msgs("batch", "Job", &new, Some(&old)).is_empty(),
        "{:?}",
        msgs("batch", "Job", &new, Some(&old))
    );
}

#[test]
fn cron_jobs() {
    let cj = |schedule: &str| {
        json!({"metadata": {"name": "hello", "namespace": "d"}, "spec": {"schedule": schedule, "concurrencyPolicy": "Allow",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "OnFailure"}}}}}})
    };
    assert!(msgs("batch", "CronJob", &cj("*/5 * * * *"), None).is_empty());
    assert!(msgs("batch", "CronJob", &cj("@hourly"), None).is_empty());
    assert!(msgs("batch", "CronJob", &cj("0 9 * jan-mar mon-fri"), None).is_empty());
    assert_eq!(
        msgs("batch", "CronJob", &cj("x"), None),
        vec![
            "spec.schedule: Invalid value: \"x\": expected exactly 5 fields, found 1: [x]"
                .to_string()
        ]
    );
    assert!(has(
        &msgs("batch", "CronJob", &cj("61 * * * *"), None),
        "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
    ));
    assert!(has(&msgs("batch", "CronJob", &cj("a * * * *"), None), "spec.schedule: Invalid value: \"a * * * *\": failed to parse int from a: strconv.Atoi: parsing \"a\": invalid syntax"));
    assert!(has(
        &msgs("batch", "CronJob", &cj("@sometimes"), None),
        "spec.schedule: Invalid value: \"@sometimes\": unrecognized descriptor: @sometimes"
    ));
    assert!(has(
        &msgs("batch", "CronJob", &cj(""), None),
        "spec.schedule: Required value"
    ));
    let mut c = cj("* * * * *");
    c["spec"]["concurrencyPolicy"] = json!("Sometimes");
    c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let m = msgs("batch", "CronJob", &c, None);
    assert!(has(&m, "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""));
    assert!(has(
        &m,
        "spec.jobTemplate.spec.template.spec.containers[0].image: Required value"
    ));
}

#[test]
fn rbac() {
    let rb = json!({"metadata": {"name": "rb", "namespace": "d"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "d"}]});
    assert!(msgs("rbac.authorization.k8s.io", "RoleBinding", &rb, None).is_empty());
    let mut rb2 = rb.clone();
    rb2["roleRef"]["name"] = json!("other");
    assert_eq!(
        msgs("rbac.authorization.k8s.io", "RoleBinding", &rb2, Some(&rb)),
        vec!["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef".to_string()]
    );
    let role = json!({"metadata": {"name": "r", "namespace": "d"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]});
    assert_eq!(
        msgs("rbac.authorization.k8s.io", "Role", &role, None),
        vec!["rules[0].verbs: Required value: verbs must contain at least one value".to_string()]
    );
    let crb = json!({"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}});
    assert!(has(
        &msgs(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            &crb,
            None
        ),
        "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""
    ));
}

#[test]
fn cluster_kinds() {
    let pdb = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}});
    assert!(msgs("policy", "PodDisruptionBudget", &pdb, None)
        .iter()
        .any(
            |m| m.starts_with("spec: Invalid value: policy.PodDisruptionBudgetSpec{")
                && m.ends_with("}: minAvailable and maxUnavailable cannot be both set")
        ));
    let hpa = json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {"minReplicas": 0, "maxReplicas": 0, "scaleTargetRef": {"kind": "Deployment"}}});
    let m = msgs("autoscaling", "HorizontalPodAutoscaler", &hpa, None);
    assert!(has(
        &m,
        "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1"
    ));
    assert!(has(
        &m,
        "spec.maxReplicas: Invalid value: 0: must be greater than 0"
    ));
    assert!(has(&m, "spec.scaleTargetRef.name: Required value"));
    let pc = json!({"metadata": {"name": "high"}, "value": 2000000000});
    assert_eq!(
        msgs("scheduling.k8s.io", "PriorityClass", &pc, None),
        vec![
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
                .to_string()
        ]
    );
    let sc = json!({"metadata": {"name": "fast"}});
    assert_eq!(
        msgs("storage.k8s.io", "StorageClass", &sc, None),
        vec!["provisioner: Required value".to_string()]
    );
    let ic = json!({"metadata": {"name": "nginx"}, "spec": {}});
    assert_eq!(
        msgs("networking.k8s.io", "IngressClass", &ic, None),
        vec!["spec.controller: Required value".to_string()]
    );
    let lease =
        json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}});
    assert_eq!(
        msgs("coordination.k8s.io", "Lease", &lease, None),
        vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0".to_string()]
    );
    let pvc = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"resources": {}}});
    let m = msgs("", "PersistentVolumeClaim", &pvc, None);
    assert!(has(
        &m,
        "spec.accessModes: Required value: at least 1 access mode is required"
    ));
    assert!(has(&m, "spec.resources[storage]: Required value"));
    let pv = json!({"metadata": {"name": "v"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
    assert_eq!(
        msgs("", "PersistentVolume", &pv, None),
        vec!["spec: Required value: must specify a volume type".to_string()]
    );
}

#[test]
fn ingress_and_netpol() {
    let ing = json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [{"host": "example.com", "http": {"paths": [
        {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
        {"path": "/a", "pathType": "Fuzzy", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
        {"path": "b", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}}]}}]}});
    let m = msgs("networking.k8s.io", "Ingress", &ing, None);
    assert!(has(
        &m,
        "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
    ));
    assert!(has(&m, "spec.rules[0].http.paths[1].pathType: Unsupported value: \"Fuzzy\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""));
    assert!(has(
        &m,
        "spec.rules[0].http.paths[2].path: Invalid value: \"b\": must be an absolute path"
    ));
    assert!(has(
        &m,
        "spec.rules[0].http.paths[2].backend: Required value: port name or number is required"
    ));
    let np = json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"podSelector": {}, "ingress": [{"from": [{}]}], "policyTypes": ["Sideways"]}});
    let m = msgs("networking.k8s.io", "NetworkPolicy", &np, None);
    assert!(has(
        &m,
        "spec.ingress[0].from[0]: Required value: must specify a peer"
    ));
    assert!(has(&m, "spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\""));
}

#[test]
fn status_updates() {
    let old = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"}, "status": {"replicas": 1}});
    let mut new = old.clone();
    new["status"] = json!({"replicas": -1, "readyReplicas": 2});
    let m: Vec<String> = super::validate_status("apps", "Deployment", &new, &old)
        .iter()
        .map(|e| e.message())
        .collect();
    assert!(has(
        &m,
        "status.replicas: Invalid value: -1: must be greater than or equal to 0"
    ));
    assert!(has(
        &m,
        "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas"
    ));
}

/// Objects as a real cluster stores them (defaulted, with status and
/// server-set metadata) must pass unchanged, on create and on a no-op update.
#[test]
fn realistic_objects_pass() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx-7854ff8877-abcde", "generateName": "nginx-7854ff8877-", "namespace": "default",
            "uid": "0b1c", "resourceVersion": "123", "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"app": "nginx", "pod-template-hash": "7854ff8877"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nginx-7854ff8877", "uid": "1a", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "containers": [{"name": "nginx", "image": "nginx", "imagePullPolicy": "Always", "resources": {},
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "livenessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "nodeName": "node-1", "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0, "restartPolicy": "Always", "schedulerName": "default-scheduler", "securityContext": {},
            "serviceAccount": "default", "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
            "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}}]
        },
        "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}], "hostIP": "172.18.0.2", "qosClass": "BestEffort"}
    });
    assert!(
        msgs("", "Pod", &pod, None).is_empty(),
        "{:?}",
        msgs("", "Pod", &pod, None)
    );
    assert!(
        msgs("", "Pod", &pod, Some(&pod)).is_empty(),
        "{:?}",
        msgs("", "Pod", &pod, Some(&pod))
    );
    let sts = super::validate_status("", "Pod", &pod, &pod);
    assert!(sts.is_empty(), "{sts:?}");

    let svc = json!({"metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                 "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}});
    assert!(
        msgs("", "Service", &svc, None).is_empty(),
        "{:?}",
        msgs("", "Service", &svc, None)
    );
    let lb = json!({"metadata": {"name": "lb", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": true, "externalTrafficPolicy": "Cluster",
                 "clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"], "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP", "targetPort": "http"}]}});
    assert!(
        msgs("", "Service", &lb, None).is_empty(),
        "{:?}",
        msgs("", "Service", &lb, None)
    );

    let mut dep = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    dep["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
    dep["spec"]["progressDeadlineSeconds"] = json!(600);
    dep["spec"]["revisionHistoryLimit"] = json!(10);
    dep["status"] = json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1});
    assert!(
        msgs("apps", "Deployment", &dep, Some(&dep)).is_empty(),
        "{:?}",
        msgs("apps", "Deployment", &dep, Some(&dep))
    );
    assert!(super::validate_status("apps", "Deployment", &dep, &dep).is_empty());

    let secret = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}});
    assert!(msgs("", "Secret", &secret, Some(&secret)).is_empty());
    let ns = json!({"metadata": {"name": "kube-system"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    assert!(
        msgs("", "Namespace", &ns, None).is_empty(),
        "{:?}",
        msgs("", "Namespace", &ns, None)
    );
    let ev = json!({"metadata": {"name": "web.17a", "namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
        "reason": "Scheduled", "message": "ok", "type": "Normal", "source": {"component": "default-scheduler"}});
    assert!(
        msgs("", "Event", &ev, None).is_empty(),
        "{:?}",
        msgs("", "Event", &ev, None)
    );
    let crd_like = json!({"metadata": {"name": "foo", "namespace": "d"}, "spec": {"anything": 1}});
    assert!(msgs("example.com", "Widget", &crd_like, None).is_empty());
}

/// Malformed input (wrong JSON types anywhere) never panics.
#[test]
fn junk_does_not_panic() {
    let kinds = [
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("", "Service"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Namespace"),
        ("", "Node"),
        ("", "LimitRange"),
        ("", "ResourceQuota"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("storage.k8s.io", "StorageClass"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("policy", "PodDisruptionBudget"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("coordination.k8s.io", "Lease"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("", "Binding"),
        ("x.io", "Thing"),
    ];
    let junk = [
        json!(null),
        json!({"metadata": 5, "spec": "x", "data": [1], "rules": "r", "roleRef": 3, "subsets": {}}),
        json!({"metadata": {"name": 1, "labels": [], "annotations": "a", "finalizers": {}},
               "spec": {"containers": [{"name": 5, "ports": "p", "env": [3], "resources": {"limits": {"cpu": true}}}],
                        "volumes": [{"name": "v", "projected": {"sources": [{}]}}, 7], "selector": "s",
                        "template": {"spec": {"containers": {}}}, "ports": [{"port": "80", "targetPort": null}],
                        "rules": [{"http": {"paths": [{"pathType": 1}]}}], "schedule": "TZ=", "jobTemplate": 1,
                        "clusterIPs": [1, 2, 3], "hard": {"cpu": "1.2.3"}, "limits": [{"type": "Container", "max": {"cpu": "x"}}]}}),
    ];
    for (g, k) in kinds {
        for j in &junk {
            let _ = super::validate(g, k, j, None);
            let _ = super::validate(g, k, j, Some(j));
            let _ = super::validate_status(g, k, j, j);
        }
    }
    for sched in [
        "",
        "TZ=",
        "TZ=UTC",
        "CRON_TZ=Nowhere/Land * * * * *",
        "@every",
        "@every 1h30m",
        "@every 5",
        "1-2-3 * * * *",
        "*/0 * * * *",
        "5/2/1 * * * *",
        "-1 * * * *",
        "* * * 13 *",
        "1,,2 * * * *",
    ] {
        let _ = super::cron::parse_standard(sched);
    }
    for q in [
        "",
        "-",
        "+.",
        "1e",
        "1e-99999999999",
        "1e40",
        "99999999999999999999999999999999999999999Ei",
        "0.000000000001",
        "-1.5Gi",
    ] {
        let _ = super::qty::Qty::parse(q).map(|q| q.canonical());
    }
}
