//! Cell formats of workload, batch, networking, storage and other kinds.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ago(d: Duration) -> String {
    (now() - d).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(name: &str) -> Value {
    json!({"name": name, "creationTimestamp": ago(Duration::minutes(3))})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}})
}

#[test]
fn workloads() {
    let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "canary", "operator": "DoesNotExist"}]});
    let d = json!({"metadata": meta("web"), "spec": {"replicas": 3, "selector": sel, "template": template()},
                   "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        cells("apps", "Deployment", &d, now()),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3m"),
            json!("web,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,!canary,tier in (a,b)")
        ]
    );
    // An empty deployment selector prints as "", the others as <none>.
    let d = json!({"metadata": meta("x"), "spec": {"selector": {}}});
    assert_eq!(cells("apps", "Deployment", &d, now())[7], json!(""));
    assert_eq!(cells("apps", "Deployment", &d, now())[1], json!("0/1"));
    assert_eq!(cells("apps", "ReplicaSet", &d, now())[7], json!("<none>"));
    let bad = json!({"metadata": meta("x"), "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
    assert_eq!(
        cells("apps", "Deployment", &bad, now())[7],
        json!("<invalid>")
    );
    assert_eq!(
        cells("apps", "ReplicaSet", &bad, now())[7],
        json!("<error>")
    );

    let rs = json!({"metadata": meta("web-abc"), "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
                    "status": {"replicas": 2, "readyReplicas": 1}});
    let c = cells("apps", "ReplicaSet", &rs, now());
    assert_eq!(&c[1..5], &[json!(2), json!(2), json!(1), json!("3m")]);

    let ss = json!({"metadata": meta("db"), "spec": {"replicas": 3, "template": template()}, "status": {"readyReplicas": 3}});
    assert_eq!(cells("apps", "StatefulSet", &ss, now())[1], json!("3/3"));

    let mut ds_tpl = template();
    ds_tpl["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    let ds = json!({"metadata": meta("proxy"), "spec": {"selector": {"matchLabels": {"k": "v"}}, "template": ds_tpl},
                    "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}});
    let c = cells("apps", "DaemonSet", &ds, now());
    assert_eq!(
        &c[1..8],
        &[
            json!(3),
            json!(3),
            json!(2),
            json!(3),
            json!(2),
            json!("kubernetes.io/os=linux"),
            json!("3m")
        ]
    );
    assert_eq!(c[10], json!("k=v"));

    let cr = json!({"metadata": {"name": "proxy-7f", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "proxy", "controller": true}]}, "revision": 4});
    assert_eq!(
        &cells("apps", "ControllerRevision", &cr, now())[1..3],
        &[json!("daemonset.apps/proxy"), json!(4)]
    );
    let orphan = json!({"metadata": {"name": "r"}, "revision": 1});
    assert_eq!(
        cells("apps", "ControllerRevision", &orphan, now())[1],
        json!("<none>")
    );

    let rc = json!({"metadata": meta("rc"), "spec": {"replicas": 2, "selector": {"app": "web"}, "template": template()}, "status": {"replicas": 2, "readyReplicas": 2}});
    assert_eq!(
        cells("", "ReplicationController", &rc, now())[7],
        json!("app=web")
    );

    let pt = json!({"metadata": meta("pt"), "template": template()});
    assert_eq!(
        cells("", "PodTemplate", &pt, now()),
        vec![
            json!("pt"),
            json!("web,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web")
        ]
    );
}

#[test]
fn jobs() {
    let job = |spec: Value, status: Value, deleting: bool| {
        let mut m = meta("j");
        if deleting {
            m["deletionTimestamp"] = json!(ago(Duration::seconds(1)));
        }
        cells(
            "batch",
            "Job",
            &json!({"metadata": m, "spec": spec, "status": status}),
            now(),
        )
    };
    let running = job(
        json!({"completions": 3, "parallelism": 1}),
        json!({"succeeded": 1, "startTime": ago(Duration::seconds(90))}),
        false,
    );
    assert_eq!(
        &running[1..5],
        &[json!("Running"), json!("1/3"), json!("90s"), json!("3m")]
    );

    let done = job(
        json!({"completions": 1}),
        json!({"succeeded": 1, "startTime": ago(Duration::minutes(3)), "completionTime": ago(Duration::seconds(60)),
               "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
        false,
    );
    assert_eq!(&done[1..4], &[json!("Complete"), json!("1/1"), json!("2m")]);

    let failed = job(
        json!({}),
        json!({"conditions": [{"type": "Failed", "status": "True"}]}),
        false,
    );
    assert_eq!(&failed[1..4], &[json!("Failed"), json!("0/1"), json!("")]);
    let parallel = job(json!({"parallelism": 4}), json!({"succeeded": 2}), false);
    assert_eq!(parallel[2], json!("2/1 of 4"));
    assert_eq!(job(json!({}), json!({}), true)[1], json!("Terminating"));
    assert_eq!(
        job(
            json!({}),
            json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
            false
        )[1],
        json!("Suspended")
    );
    assert_eq!(
        job(
            json!({}),
            json!({"conditions": [{"type": "Suspended", "status": "False"}]}),
            false
        )[1],
        json!("Running")
    );
    assert_eq!(
        job(
            json!({}),
            json!({"conditions": [{"type": "FailureTarget", "status": "True"}]}),
            false
        )[1],
        json!("FailureTarget")
    );

    let cj = json!({"metadata": meta("cj"), "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template()}}},
                    "status": {"active": [{"name": "cj-1"}], "lastScheduleTime": ago(Duration::seconds(40))}});
    assert_eq!(
        cells("batch", "CronJob", &cj, now()),
        vec![
            json!("cj"),
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("<unset>"),
            json!(1),
            json!("40s"),
            json!("3m"),
            json!("web,log"),
            json!("nginx:1.27,busybox"),
            json!("<none>")
        ]
    );
    let cj2 = json!({"metadata": meta("cj"), "spec": {"schedule": "@daily", "timeZone": "Etc/UTC", "suspend": false}});
    let c = cells("batch", "CronJob", &cj2, now());
    assert_eq!(
        &c[2..6],
        &[json!("Etc/UTC"), json!("False"), json!(0), json!("<none>")]
    );
}

#[test]
fn hpa_targets() {
    let hpa = json!({
        "metadata": meta("h"),
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12, "averageValue": "12m"}}}]}
    });
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &hpa, now()),
        vec![
            json!("h"),
            json!("Deployment/web"),
            json!("cpu: 12%/50%, memory: <unknown>/100Mi + 1 more..."),
            json!("1"),
            json!(10),
            json!(2),
            json!("3m")
        ]
    );
    // autoscaling/v1 shape.
    let v1 = json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                    "targetCPUUtilizationPercentage": 80}, "status": {"currentReplicas": 1}});
    let c = cells("autoscaling", "HorizontalPodAutoscaler", &v1, now());
    assert_eq!(
        (&c[2], &c[3]),
        (&json!("cpu: <unknown>/80%"), &json!("<unset>"))
    );
    let none = json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &none, now())[2],
        json!("<none>")
    );
}

#[test]
fn pdb_quota_and_storage() {
    let pdb = json!({"metadata": meta("p"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        &cells("policy", "PodDisruptionBudget", &pdb, now())[1..4],
        &[json!("50%"), json!("N/A"), json!(1)]
    );
    let pdb = json!({"metadata": meta("p"), "spec": {"maxUnavailable": 1}});
    assert_eq!(
        &cells("policy", "PodDisruptionBudget", &pdb, now())[1..4],
        &[json!("N/A"), json!("1"), json!(0)]
    );

    let rq = json!({"metadata": meta("q"), "status": {
        "hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "2Gi", "limits.cpu": "2", "requests.memory": "1Gi"},
        "used": {"pods": "2", "requests.cpu": "500m", "limits.cpu": "1"}}});
    assert_eq!(
        cells("", "ResourceQuota", &rq, now()),
        vec![
            json!("q"),
            json!("3m"),
            json!("pods: 2/10, requests.cpu: 500m/1, requests.memory: 0/1Gi"),
            json!("limits.cpu: 1/2, limits.memory: 0/2Gi")
        ]
    );

    let pv = json!({"metadata": meta("pv1"), "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "standard", "volumeMode": "Filesystem",
        "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}});
    assert_eq!(
        cells("", "PersistentVolume", &pv, now()),
        vec![
            json!("pv1"),
            json!("5Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("standard"),
            json!("<unset>"),
            json!(""),
            json!("3m"),
            json!("Filesystem")
        ]
    );
    let pvc = json!({"metadata": meta("data"), "spec": {"storageClassName": "standard", "resources": {"requests": {"storage": "1Gi"}}},
                     "status": {"phase": "Pending"}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", &pvc, now()),
        vec![
            json!("data"),
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("standard"),
            json!("<unset>"),
            json!("3m"),
            json!("<unset>")
        ]
    );
    let bound = json!({"metadata": {"name": "d", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}, "deletionTimestamp": ago(Duration::seconds(1))},
                       "spec": {"volumeName": "pv1", "storageClassName": "standard"}, "status": {"phase": "Bound", "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOncePod"]}});
    assert_eq!(
        &cells("", "PersistentVolumeClaim", &bound, now())[1..6],
        &[
            json!("Terminating"),
            json!("pv1"),
            json!("5Gi"),
            json!("RWOP"),
            json!("old")
        ]
    );

    let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                    "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        &cells("storage.k8s.io", "StorageClass", &sc, now())[..5],
        &[
            json!("standard (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false)
        ]
    );
    let pc = json!({"metadata": meta("high"), "value": 1000000, "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority"});
    assert_eq!(
        cells("scheduling.k8s.io", "PriorityClass", &pc, now()),
        vec![
            json!("high"),
            json!(1000000),
            json!(false),
            json!("3m"),
            json!("PreemptLowerPriority")
        ]
    );
}

#[test]
fn networking_kinds() {
    let ing = json!({"metadata": meta("ing"), "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.com"]}],
        "rules": [{"host": "a.com"}, {"host": "b.com"}, {}, {"host": "c.com"}, {"host": "d.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}});
    assert_eq!(
        cells("networking.k8s.io", "Ingress", &ing, now()),
        vec![
            json!("ing"),
            json!("nginx"),
            json!("a.com,b.com,c.com + 2 more..."),
            json!("10.0.0.9"),
            json!("80, 443"),
            json!("3m")
        ]
    );
    let bare = json!({"metadata": meta("i"), "spec": {"rules": [{"http": {}}]}});
    assert_eq!(
        &cells("networking.k8s.io", "Ingress", &bare, now())[1..5],
        &[json!("<none>"), json!("*"), json!(""), json!("80")]
    );

    let ic = json!({"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
    assert_eq!(
        &cells("networking.k8s.io", "IngressClass", &ic, now())[1..3],
        &[
            json!("k8s.io/ingress-nginx"),
            json!("IngressParameters.k8s.example.com/external-lb")
        ]
    );
    let ic = json!({"metadata": meta("x"), "spec": {"controller": "c"}});
    assert_eq!(
        cells("networking.k8s.io", "IngressClass", &ic, now())[2],
        json!("<none>")
    );

    let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
    assert_eq!(
        cells("networking.k8s.io", "NetworkPolicy", &np, now())[1],
        json!("<none>")
    );
    let np =
        json!({"metadata": meta("web"), "spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
    assert_eq!(
        cells("networking.k8s.io", "NetworkPolicy", &np, now())[1],
        json!("role=db")
    );

    let es = json!({"metadata": meta("web-x"), "addressType": "IPv4",
        "ports": [{"port": 80, "name": "http"}, {"name": "metrics"}, {}, {"port": 9000}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &es, now()),
        vec![
            json!("web-x"),
            json!("IPv4"),
            json!("80,metrics,* + 1 more..."),
            json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
            json!("3m")
        ]
    );
    let empty = json!({"metadata": meta("e"), "addressType": "IPv4", "endpoints": null});
    assert_eq!(
        &cells("discovery.k8s.io", "EndpointSlice", &empty, now())[2..4],
        &[json!("<unset>"), json!("<unset>")]
    );
}

#[test]
fn misc_kinds() {
    let rb = json!({"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}, {"kind": "User", "name": "bob"},
                     {"kind": "ServiceAccount", "name": "default", "namespace": "ns1"}]});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "RoleBinding", &rb, now()),
        vec![
            json!("rb"),
            json!("ClusterRole/view"),
            json!("3m"),
            json!("alice, bob"),
            json!("devs"),
            json!("ns1/default")
        ]
    );
    let role = json!({"metadata": {"name": "admin", "creationTimestamp": "2024-05-01T08:09:10Z"}});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "ClusterRole", &role, now()),
        vec![json!("admin"), json!("2024-05-01T08:09:10Z")]
    );
    assert_eq!(
        cells(
            "",
            "LimitRange",
            &json!({"metadata": {"name": "lr"}}),
            now()
        )[1],
        json!("0001-01-01T00:00:00Z")
    );

    let lease =
        json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "skiff_1234"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &lease, now()),
        vec![json!("kube-scheduler"), json!("skiff_1234"), json!("3m")]
    );

    let cm =
        json!({"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(
        cells("", "ConfigMap", &cm, now()),
        vec![json!("cm"), json!(3), json!("3m")]
    );
    let sec = json!({"metadata": meta("s"), "type": "Opaque", "data": {"a": "MQ=="}});
    assert_eq!(
        cells("", "Secret", &sec, now()),
        vec![json!("s"), json!("Opaque"), json!(1), json!("3m")]
    );
    let sa = json!({"metadata": meta("default"), "secrets": [{"name": "t"}]});
    assert_eq!(
        cells("", "ServiceAccount", &sa, now()),
        vec![json!("default"), json!(1), json!("3m")]
    );
    let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "Namespace", &ns, now()),
        vec![json!("kube-system"), json!("Active"), json!("3m")]
    );

    let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w")});
    assert_eq!(
        cells("example.com", "Widget", &cr, now()),
        vec![json!("w"), json!("3m")]
    );
    assert_eq!(
        cells(
            "example.com",
            "Widget",
            &json!({"metadata": {"name": "w"}}),
            now()
        )[1],
        json!("<unknown>")
    );
}
