//! Column definitions, age formatting and per-kind cell formats.

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

/// Column headers as kubectl shows them, `|` separating the wide ones.
fn headers(group: &str, kind: &str) -> String {
    let cols = columns(group, kind);
    let normal: Vec<String> = cols
        .iter()
        .filter(|c| c.priority == 0)
        .map(|c| c.name.to_uppercase())
        .collect();
    let wide: Vec<String> = cols
        .iter()
        .filter(|c| c.priority == 1)
        .map(|c| c.name.to_uppercase())
        .collect();
    if wide.is_empty() {
        normal.join(" ")
    } else {
        format!("{} | {}", normal.join(" "), wide.join(" "))
    }
}

const KINDS: &[(&str, &str, &str)] = &[
    ("", "Pod", "NAME READY STATUS RESTARTS AGE | IP NODE NOMINATED NODE READINESS GATES"),
    ("", "Node", "NAME STATUS ROLES AGE VERSION | INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME"),
    ("", "Namespace", "NAME STATUS AGE"),
    ("", "Service", "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE | SELECTOR"),
    ("", "Endpoints", "NAME ENDPOINTS AGE"),
    ("", "ConfigMap", "NAME DATA AGE"),
    ("", "Secret", "NAME TYPE DATA AGE"),
    ("", "ServiceAccount", "NAME SECRETS AGE"),
    ("", "Event", "LAST SEEN TYPE REASON OBJECT MESSAGE | SUBOBJECT SOURCE FIRST SEEN COUNT NAME"),
    ("events.k8s.io", "Event", "LAST SEEN TYPE REASON OBJECT MESSAGE | SUBOBJECT SOURCE FIRST SEEN COUNT NAME"),
    (
        "",
        "PersistentVolume",
        "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE | VOLUMEMODE",
    ),
    (
        "",
        "PersistentVolumeClaim",
        "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE | VOLUMEMODE",
    ),
    ("", "ReplicationController", "NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR"),
    ("", "LimitRange", "NAME CREATED AT"),
    ("", "ResourceQuota", "NAME AGE REQUEST LIMIT"),
    ("", "PodTemplate", "NAME CONTAINERS IMAGES POD LABELS"),
    ("apps", "Deployment", "NAME READY UP-TO-DATE AVAILABLE AGE | CONTAINERS IMAGES SELECTOR"),
    ("apps", "ReplicaSet", "NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR"),
    ("apps", "StatefulSet", "NAME READY AGE | CONTAINERS IMAGES"),
    (
        "apps",
        "DaemonSet",
        "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE | CONTAINERS IMAGES SELECTOR",
    ),
    ("apps", "ControllerRevision", "NAME CONTROLLER REVISION AGE"),
    ("batch", "Job", "NAME STATUS COMPLETIONS DURATION AGE | CONTAINERS IMAGES SELECTOR"),
    ("batch", "CronJob", "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE | CONTAINERS IMAGES SELECTOR"),
    ("autoscaling", "HorizontalPodAutoscaler", "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE"),
    ("policy", "PodDisruptionBudget", "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE"),
    ("networking.k8s.io", "Ingress", "NAME CLASS HOSTS ADDRESS PORTS AGE"),
    ("networking.k8s.io", "IngressClass", "NAME CONTROLLER PARAMETERS AGE"),
    ("networking.k8s.io", "NetworkPolicy", "NAME POD-SELECTOR AGE"),
    ("discovery.k8s.io", "EndpointSlice", "NAME ADDRESSTYPE PORTS ENDPOINTS AGE"),
    ("coordination.k8s.io", "Lease", "NAME HOLDER AGE"),
    ("rbac.authorization.k8s.io", "Role", "NAME CREATED AT"),
    ("rbac.authorization.k8s.io", "ClusterRole", "NAME CREATED AT"),
    ("rbac.authorization.k8s.io", "RoleBinding", "NAME ROLE AGE | USERS GROUPS SERVICEACCOUNTS"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding", "NAME ROLE AGE | USERS GROUPS SERVICEACCOUNTS"),
    (
        "storage.k8s.io",
        "StorageClass",
        "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
    ),
    ("scheduling.k8s.io", "PriorityClass", "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY"),
    ("node.k8s.io", "RuntimeClass", "NAME HANDLER AGE"),
    ("example.com", "Widget", "NAME AGE"),
];

#[test]
fn column_names_per_kind() {
    for (group, kind, want) in KINDS {
        assert_eq!(headers(group, kind), *want, "{group}/{kind}");
    }
}

#[test]
fn cells_match_columns_for_every_kind() {
    let samples = [
        json!({}),
        json!({"metadata": {"name": "x", "creationTimestamp": ago(Duration::hours(1))}}),
    ];
    for (group, kind, _) in KINDS {
        for obj in &samples {
            let c = cells(group, kind, obj, now());
            assert_eq!(c.len(), columns(group, kind).len(), "{group}/{kind}");
        }
    }
}

#[test]
fn column_json_and_name_format() {
    let cols = columns("", "Pod");
    assert_eq!(cols[0].format, "name");
    assert!(cols[1..].iter().all(|c| c.format.is_empty()));
    let j = cols[5].to_json();
    assert_eq!(j["name"], "IP");
    assert_eq!(j["type"], "string");
    assert_eq!(j["format"], "");
    assert_eq!(j["priority"], 1);
    assert_eq!(columns("", "LimitRange")[1].type_, "date");
    // The event Name column is a wide name-formatted column.
    let ev = columns("", "Event");
    assert_eq!(
        (ev[9].name, ev[9].format, ev[9].priority),
        ("Name", "name", 1)
    );
}

#[test]
fn age_formatting() {
    let cases: &[(i64, &str)] = &[
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (123, "2m3s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60 + 7, "3h5m"),
        (8 * 3600 + 59 * 60, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (7 * 86400 + 23 * 3600, "7d23h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (760 * 86400, "2y30d"),
        (8 * 365 * 86400, "8y"),
        (10 * 365 * 86400 + 40 * 86400, "10y"),
        (-1, "0s"),
        (-5, "<invalid>"),
    ];
    for (secs, want) in cases {
        let ts = ago(Duration::seconds(*secs));
        assert_eq!(age(Some(&ts), now()), *want, "{secs}s");
    }
    assert_eq!(age(None, now()), "<unknown>");
    assert_eq!(age(Some(""), now()), "<unknown>");
    assert_eq!(age(Some("2024-06-01T11:59:58.123456Z"), now()), "1s");
}

#[test]
fn service_cells() {
    let svc = |spec: Value, status: Value| json!({"metadata": {"name": "s", "creationTimestamp": ago(Duration::seconds(30))}, "spec": spec, "status": status});
    let c = cells(
        "",
        "Service",
        &svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                   "selector": {"k8s-app": "kube-dns", "a": "b"}}),
            json!({}),
        ),
        now(),
    );
    assert_eq!(
        c,
        vec![
            json!("s"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("53/UDP,53/TCP"),
            json!("30s"),
            json!("a=b,k8s-app=kube-dns")
        ]
    );

    let np = cells(
        "",
        "Service",
        &svc(
            json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        ),
        now(),
    );
    assert_eq!(
        (&np[3], &np[4], &np[6]),
        (&json!("<none>"), &json!("80:30080/TCP"), &json!("<none>"))
    );

    let lb = |status: Value, external: Value| {
        cells(
            "",
            "Service",
            &svc(
                json!({"type": "LoadBalancer", "clusterIP": "10.0.0.2", "externalIPs": external}),
                status,
            ),
            now(),
        )
    };
    assert_eq!(lb(json!({}), json!(null))[3], json!("<pending>"));
    assert_eq!(lb(json!({}), json!(null))[4], json!("<none>"));
    let ingress = json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}, {"ip": "1.2.3.4"}]}});
    assert_eq!(
        lb(ingress.clone(), json!(null))[3],
        json!("1.2.3.4,5.6.7.8,lb.example.com")
    );
    assert_eq!(
        lb(ingress, json!(["9.9.9.9"]))[3],
        json!("1.2.3.4,5.6.7.8,lb.example.com,9.9.9.9")
    );

    let ext = cells(
        "",
        "Service",
        &svc(
            json!({"type": "ExternalName", "externalName": "example.com"}),
            json!({}),
        ),
        now(),
    );
    assert_eq!(
        (&ext[2], &ext[3]),
        (&json!("<none>"), &json!("example.com"))
    );

    let headless = cells(
        "",
        "Service",
        &svc(
            json!({"clusterIP": "None", "externalIPs": ["1.1.1.1", "2.2.2.2"]}),
            json!({}),
        ),
        now(),
    );
    assert_eq!(
        (&headless[1], &headless[2], &headless[3]),
        (
            &json!("ClusterIP"),
            &json!("None"),
            &json!("1.1.1.1,2.2.2.2")
        )
    );
}

#[test]
fn node_status_and_roles() {
    let node = |conditions: Value, unschedulable: bool, labels: Value| {
        json!({"metadata": {"name": "n1", "labels": labels, "creationTimestamp": ago(Duration::days(3))},
               "spec": {"unschedulable": unschedulable},
               "status": {"conditions": conditions,
                          "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "172.18.0.2"}],
                          "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)"}}})
    };
    let ready =
        json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
    let c = cells("", "Node", &node(ready.clone(), false, json!({})), now());
    assert_eq!(
        c,
        vec![
            json!("n1"),
            json!("Ready"),
            json!("<none>"),
            json!("3d"),
            json!("v1.32.0"),
            json!("172.18.0.2"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("<unknown>"),
            json!("<unknown>")
        ]
    );
    let roles = json!({"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "", "kubernetes.io/role": "edge", "node-role.kubernetes.io/": ""});
    let c = cells("", "Node", &node(ready, true, roles), now());
    assert_eq!(
        (&c[1], &c[2]),
        (
            &json!("Ready,SchedulingDisabled"),
            &json!("control-plane,edge,master")
        )
    );
    let c = cells(
        "",
        "Node",
        &node(
            json!([{"type": "Ready", "status": "Unknown"}]),
            false,
            json!({}),
        ),
        now(),
    );
    assert_eq!(c[1], json!("NotReady"));
    let c = cells("", "Node", &node(json!([]), true, json!({})), now());
    assert_eq!(c[1], json!("Unknown,SchedulingDisabled"));
}

#[test]
fn endpoints_formatting() {
    let ep = |subsets: Value| {
        cells(
            "",
            "Endpoints",
            &json!({"metadata": {"name": "e"}, "subsets": subsets}),
            now(),
        )[1]
        .clone()
    };
    assert_eq!(ep(json!([])), json!("<none>"));
    assert_eq!(
        ep(json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}])),
        json!("10.0.0.1:80")
    );
    let many = json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
                       "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}]);
    assert_eq!(
        ep(many),
        json!("10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more...")
    );
    assert_eq!(
        ep(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}])),
        json!("10.0.0.1,10.0.0.2")
    );
}

#[test]
fn event_rows() {
    let ev = json!({
        "metadata": {"name": "web.17a"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
        "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image \n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(Duration::minutes(5)), "lastTimestamp": ago(Duration::minutes(1)), "count": 3
    });
    let c = cells("", "Event", &ev, now());
    assert_eq!(
        c,
        vec![
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{web}"),
            json!("kubelet, node-1"),
            json!("Successfully pulled image"),
            json!("5m"),
            json!(3),
            json!("web.17a")
        ]
    );

    // New-style event: eventTime only, reporting controller, no count.
    let new_style = json!({
        "metadata": {"name": "x"}, "involvedObject": {"kind": "Node"}, "type": "Warning", "reason": "R",
        "eventTime": "2024-06-01T11:58:00.000000Z", "reportingComponent": "sched", "reportingInstance": "sched-1"
    });
    let c = cells("", "Event", &new_style, now());
    assert_eq!(
        (&c[0], &c[3], &c[5], &c[7], &c[8]),
        (
            &json!("2m"),
            &json!("node"),
            &json!("sched, sched-1"),
            &json!("2m"),
            &json!(1)
        )
    );

    let v1 = json!({
        "metadata": {"name": "y"}, "regarding": {"kind": "Deployment", "name": "d"}, "note": "Scaled", "type": "Normal",
        "reason": "ScalingReplicaSet", "reportingController": "deployment-controller",
        "eventTime": ago(Duration::minutes(30)),
        "series": {"count": 7, "lastObservedTime": ago(Duration::seconds(10))}
    });
    let c = cells("events.k8s.io", "Event", &v1, now());
    assert_eq!(
        (&c[0], &c[3], &c[5], &c[6], &c[7], &c[8]),
        (
            &json!("10s"),
            &json!("deployment/d"),
            &json!("deployment-controller"),
            &json!("Scaled"),
            &json!("30m"),
            &json!(7)
        )
    );
}
