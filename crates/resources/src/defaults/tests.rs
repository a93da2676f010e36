use serde_json::{json, Value};

use super::{apply, image_pull_policy, image_tag};

pub(super) fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    apply(group, kind, &mut obj);
    obj
}

#[test]
fn pod_gets_spec_container_and_admission_defaults() {
    let pod = defaulted(
        "",
        "Pod",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}
        }),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["resources"], json!({}));
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert!(pod.get("status").is_none());
}

#[test]
fn pod_defaults_keep_what_the_client_set() {
    let pod = defaulted(
        "",
        "Pod",
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 0,
                "schedulerName": "mine", "securityContext": {"runAsUser": 1}, "enableServiceLinks": false,
                "serviceAccount": "legacy", "priority": 7, "preemptionPolicy": "Never",
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "c", "image": "nginx:1.25", "imagePullPolicy": "Never",
                    "terminationMessagePath": "/tmp/x", "terminationMessagePolicy": "FallbackToLogsOnError",
                    "ports": [{"containerPort": 53, "protocol": "UDP"}]}]
            }
        }),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["dnsPolicy"], "Default");
    assert_eq!(spec["terminationGracePeriodSeconds"], 0);
    assert_eq!(spec["schedulerName"], "mine");
    assert_eq!(spec["securityContext"], json!({"runAsUser": 1}));
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["serviceAccountName"], "legacy");
    assert_eq!(spec["serviceAccount"], "legacy");
    assert_eq!(spec["priority"], 7);
    assert_eq!(spec["preemptionPolicy"], "Never");
    // A wildcard toleration already covers both taints.
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Never");
    assert_eq!(c["terminationMessagePath"], "/tmp/x");
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    assert_eq!(c["ports"][0]["protocol"], "UDP");
}

#[test]
fn pod_tolerations_are_added_per_missing_taint() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}
        ]}}),
    );
    let t = pod["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["tolerationSeconds"], 10);
    assert_eq!(t[2]["key"], "node.kubernetes.io/unreachable");
    assert_eq!(t[2]["effect"], "NoExecute");
    assert_eq!(t[2]["tolerationSeconds"], 300);
}

#[test]
fn mirror_pods_get_no_service_account() {
    let mirror = defaulted(
        "",
        "Pod",
        json!({
        "metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": {"containers": []}}),
    );
    assert!(mirror["spec"].get("serviceAccountName").is_none());
}

#[test]
fn container_details() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {
            "hostNetwork": true,
            "initContainers": [{"name": "i", "image": "busybox:latest"}],
            "ephemeralContainers": [{"name": "e", "image": "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],
            "containers": [{
                "name": "c", "image": "registry.local:5000/team/app:v2",
                "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 1}],
                "resources": {"limits": {"cpu": "1.5", "memory": "1024Mi"}, "requests": {"cpu": "100u"}},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}, {"name": "X", "value": "1"}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5, "timeoutSeconds": 0},
                "startupProbe": {"grpc": {"port": 9000}},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}}
            }]
        }}),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "Always");
    assert_eq!(spec["initContainers"][0]["resources"], json!({}));
    assert_eq!(spec["ephemeralContainers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["ephemeralContainers"][0]["terminationMessagePolicy"], "File");
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    // hostNetwork pods expose container ports on the host.
    assert_eq!(c["ports"][0]["hostPort"], 8080);
    assert_eq!(c["ports"][1]["hostPort"], 1);
    // Requests come from limits; every quantity is rounded and canonical.
    assert_eq!(
        c["resources"],
        json!({"limits": {"cpu": "1500m", "memory": "1Gi"}, "requests": {"cpu": "1m", "memory": "1Gi"}})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"], json!({"fieldPath": "spec.nodeName", "apiVersion": "v1"}));
    assert_eq!(c["env"][1], json!({"name": "X", "value": "1"}));
    let live = &c["livenessProbe"];
    assert_eq!(
        (&live["timeoutSeconds"], &live["periodSeconds"], &live["successThreshold"], &live["failureThreshold"]),
        (&json!(1), &json!(10), &json!(1), &json!(3))
    );
    assert_eq!(live["httpGet"], json!({"port": 80, "path": "/", "scheme": "HTTP"}));
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(c["startupProbe"]["grpc"], json!({"port": 9000, "service": ""}));
    assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port": 80, "path": "/stop", "scheme": "HTTP"}));
}

#[test]
fn volume_defaults() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [], "volumes": [
            {"name": "bare"},
            {"name": "cm", "configMap": {"name": "x"}},
            {"name": "s", "secret": {"secretName": "x", "defaultMode": 256}},
            {"name": "h", "hostPath": {"path": "/tmp"}},
            {"name": "e", "emptyDir": {"sizeLimit": "1024Mi"}},
            {"name": "d", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}
        ]}}),
    );
    let v = &pod["spec"]["volumes"];
    assert_eq!(v[0], json!({"name": "bare", "emptyDir": {}}));
    assert_eq!(v[1]["configMap"]["defaultMode"], 420);
    assert_eq!(v[2]["secret"]["defaultMode"], 256);
    assert_eq!(v[3]["hostPath"]["type"], "");
    assert_eq!(v[4]["emptyDir"]["sizeLimit"], "1Gi");
    assert_eq!(v[5]["downwardAPI"]["defaultMode"], 420);
    assert_eq!(v[5]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(v[6]["projected"]["defaultMode"], 420);
    assert_eq!(v[6]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
    let claim = &v[7]["ephemeral"]["volumeClaimTemplate"];
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["metadata"], json!({"creationTimestamp": null}));
}

#[test]
fn pod_status_ips_mirror_each_other() {
    let a = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": []}, "status": {"podIP": "10.0.0.5", "hostIP": "192.168.1.2"}}),
    );
    assert_eq!(a["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
    assert_eq!(a["status"]["hostIPs"], json!([{"ip": "192.168.1.2"}]));
    let b = defaulted("", "Pod", json!({"spec": {"containers": []}, "status": {"podIPs": [{"ip": "10.0.0.6"}]}}));
    assert_eq!(b["status"]["podIP"], "10.0.0.6");
}

#[test]
fn images_and_pull_policies() {
    let cases = [
        ("nginx", Some("latest"), "Always"),
        ("nginx:latest", Some("latest"), "Always"),
        ("nginx:1.25", Some("1.25"), "IfNotPresent"),
        ("docker.io/library/nginx", Some("latest"), "Always"),
        ("localhost:5000/app", Some("latest"), "Always"),
        ("localhost:5000/app:dev", Some("dev"), "IfNotPresent"),
        ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Some(""), "IfNotPresent"),
        (
            "nginx:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            Some("latest"),
            "Always",
        ),
        ("NGINX", None, "IfNotPresent"),
        ("", None, "IfNotPresent"),
        ("a b", None, "IfNotPresent"),
    ];
    for (image, tag, policy) in cases {
        assert_eq!(image_tag(image).as_deref(), tag, "{image}");
        assert_eq!(image_pull_policy(image), policy, "{image}");
    }
}

#[test]
fn templates_get_the_v1_defaulter_only() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "nginx"}]}}}
        }),
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let t = &spec["template"];
    assert_eq!(t["metadata"]["creationTimestamp"], Value::Null);
    assert_eq!(t["spec"]["restartPolicy"], "Always");
    assert_eq!(t["spec"]["serviceAccount"], "robot");
    assert_eq!(t["spec"]["containers"][0]["imagePullPolicy"], "Always");
    for admission_only in ["tolerations", "priority", "preemptionPolicy", "enableServiceLinks"] {
        assert!(t["spec"].get(admission_only).is_none(), "{admission_only}");
    }
    let recreate = defaulted("apps", "Deployment", json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}}));
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(recreate["spec"]["replicas"], 0);
}

#[test]
fn replica_sets_and_replication_controllers() {
    let rs = defaulted("apps", "ReplicaSet", json!({"spec": {"template": {"spec": {"containers": []}}}}));
    assert_eq!(rs["spec"]["replicas"], 1);
    assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    let rc = defaulted(
        "",
        "ReplicationController",
        json!({
            "metadata": {"name": "rc"},
            "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}}}
        }),
    );
    assert_eq!(rc["spec"]["replicas"], 1);
    assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
    let own = defaulted(
        "",
        "ReplicationController",
        json!({
            "metadata": {"labels": {"mine": "1"}},
            "spec": {"selector": {"app": "b"}, "template": {"metadata": {"labels": {"app": "a"}}}}
        }),
    );
    assert_eq!(own["spec"]["selector"], json!({"app": "b"}));
    assert_eq!(own["metadata"]["labels"], json!({"mine": "1"}));
    let pt =
        defaulted("", "PodTemplate", json!({"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}));
    assert_eq!(pt["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
}

#[test]
fn stateful_sets() {
    let s = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {
            "serviceName": "db", "template": {"spec": {"containers": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]
        }}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["persistentVolumeClaimRetentionPolicy"], json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"], json!({"name": "data", "creationTimestamp": null}));
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["status"], json!({"phase": "Pending"}));
    // An explicit type brings no rollingUpdate block.
    let explicit = defaulted("apps", "StatefulSet", json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}}));
    assert_eq!(explicit["spec"]["updateStrategy"], json!({"type": "RollingUpdate"}));
    let on_delete = defaulted("apps", "StatefulSet", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
    assert_eq!(on_delete["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
}

#[test]
fn daemon_sets() {
    let d = defaulted("apps", "DaemonSet", json!({"spec": {"template": {"spec": {"containers": []}}}}));
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    let on_delete = defaulted("apps", "DaemonSet", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
    assert_eq!(on_delete["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
}

#[test]
fn jobs_get_defaults_and_a_generated_selector() {
    let j = defaulted(
        "batch",
        "Job",
        json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}
        }),
    );
    let spec = &j["spec"];
    assert_eq!((&spec["parallelism"], &spec["completions"], &spec["backoffLimit"]), (&json!(1), &json!(1), &json!(6)));
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(spec["manualSelector"], false, "upstream's defaulting sets it (the v1.33 replay lists it among the creator's managed fields)");
    assert_eq!(spec["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}));
    let labels = json!({"batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi", "controller-uid": "u-1", "job-name": "pi"});
    assert_eq!(spec["template"]["metadata"]["labels"], labels);
    assert_eq!(j["metadata"]["labels"], labels);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");

    let parallel = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"labels": {"own": "1"}}, "spec": {
        "parallelism": 3, "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
    );
    let spec = &parallel["spec"];
    assert!(spec.get("completions").is_none());
    assert_eq!(spec["parallelism"], 3);
    assert_eq!(spec["backoffLimit"], 2147483647);
    assert_eq!(spec["podReplacementPolicy"], "Failed");
    assert_eq!(spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"], "True");
    assert_eq!(parallel["metadata"]["labels"], json!({"own": "1"}));

    let manual = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"uid": "u"}, "spec": {
        "manualSelector": true, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}}),
    );
    assert_eq!(manual["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
    assert_eq!(manual["spec"]["template"]["metadata"]["labels"], json!({"a": "b"}));
    assert_eq!(manual["metadata"]["labels"], json!({"a": "b"}));
}

#[test]
fn cron_jobs() {
    let c = defaulted(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {
        "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    );
    let spec = &c["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    let job = &spec["jobTemplate"];
    assert_eq!(job["metadata"], json!({"creationTimestamp": null}));
    assert!(job["spec"].get("backoffLimit").is_none());
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(job["spec"]["template"]["spec"]["schedulerName"], "default-scheduler");
}
