//! core/v1 kinds (Events live in events.rs).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("", "Pod") => p(pod_status::columns, pod_status::cells),
        ("", "Node") => p(node_columns, node_cells),
        ("", "Namespace") => p(namespace_columns, namespace_cells),
        ("", "Service") => p(service_columns, service_cells),
        ("", "Endpoints") => p(endpoints_columns, endpoints_cells),
        ("", "ConfigMap") => p(configmap_columns, configmap_cells),
        ("", "Secret") => p(secret_columns, secret_cells),
        ("", "ServiceAccount") => p(sa_columns, sa_cells),
        ("", "Event") => p(events::columns, events::core_cells),
        ("events.k8s.io", "Event") => p(events::columns, events::events_cells),
        ("", "PersistentVolume") => p(volumes::pv_columns, volumes::pv_cells),
        ("", "PersistentVolumeClaim") => p(volumes::pvc_columns, volumes::pvc_cells),
        ("", "ReplicationController") => p(rc_columns, rc_cells),
        ("", "ResourceQuota") => p(quota_columns, quota_cells),
        ("", "PodTemplate") => p(podtemplate_columns, podtemplate_cells),
        // No upstream printer: the default table convertor.
        ("", "LimitRange") => p(created_at_columns, created_at_cells),
        _ => None,
    }
}

// --- Node -------------------------------------------------------------------

fn node_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        age_col(),
        col("Version", "string", "Kubelet Version reported by the node."),
        wide("Internal-IP", "string", "List of addresses reachable to the node."),
        wide("External-IP", "string", "List of addresses reachable to the node."),
        wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ]
}

/// The node STATUS column: Ready/NotReady/Unknown, plus SchedulingDisabled.
pub(crate) fn node_status(node: &Value) -> String {
    // The condition map keeps the last condition of each type.
    let ready = arr_at(node, "status.conditions")
        .iter()
        .rev()
        .find(|c| str_at(c, "type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, "status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, "spec.unschedulable") {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role` values.
pub(crate) fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = at(node, "metadata.labels").as_object() {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                roles.push(v.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, "status.addresses")
        .iter()
        .find(|a| str_at(a, "type") == type_)
        .map(|a| str_at(a, "address").to_string())
        .unwrap_or_else(|| "<none>".into())
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = at(node, "status.nodeInfo");
    let unknown = |x: &str| {
        if x.is_empty() {
            "<unknown>".to_string()
        } else {
            x.to_string()
        }
    };
    vec![
        name_cell(node),
        s(node_status(node)),
        s(node_roles(node)),
        s(obj_age(node, now)),
        s(str_at(info, "kubeletVersion")),
        s(node_address(node, "InternalIP")),
        s(node_address(node, "ExternalIP")),
        s(unknown(str_at(info, "osImage"))),
        s(unknown(str_at(info, "kernelVersion"))),
        s(unknown(str_at(info, "containerRuntimeVersion"))),
    ]
}

// --- Namespace, ConfigMap, Secret, ServiceAccount -----------------------------

fn namespace_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "The status of the namespace"),
        age_col(),
    ]
}

fn namespace_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(o),
        s(str_at(o, "status.phase")),
        s(obj_age(o, now)),
    ]
}

fn configmap_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'."),
        age_col(),
    ]
}

fn map_len(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn configmap_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let count = map_len(at(o, "data")) + map_len(at(o, "binaryData"));
    vec![name_cell(o), n(count as i64), s(obj_age(o, now))]
}

fn secret_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Type", "string", "Used to facilitate programmatic handling of secret data."),
        col("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'."),
        age_col(),
    ]
}

fn secret_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // stringData is merged into data on the way in; count the union to be safe.
    let mut keys: Vec<&String> = Vec::new();
    for field in ["data", "stringData"] {
        if let Some(m) = at(o, field).as_object() {
            keys.extend(m.keys());
        }
    }
    keys.sort();
    keys.dedup();
    vec![
        name_cell(o),
        s(str_at(o, "type")),
        n(keys.len() as i64),
        s(obj_age(o, now)),
    ]
}

fn sa_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        age_col(),
    ]
}

fn sa_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(o),
        n(arr_at(o, "secrets").len() as i64),
        s(obj_age(o, now)),
    ]
}

// --- Service & Endpoints ----------------------------------------------------

fn service_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Type", "string", "type determines how the Service is exposed."),
        col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
        col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        col("Port(s)", "string", "The list of ports that are exposed by this service."),
        age_col(),
        wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
    ]
}

/// `loadBalancerStatusStringer` with wide=true: sorted unique IPs/hostnames.
pub(crate) fn lb_ingress_string(ingress: &[Value]) -> String {
    let mut out: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "ip");
            let host = str_at(i, "hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out.join(",")
}

pub(crate) fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr_at(svc, "spec.externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let type_ = match str_at(svc, "spec.type") {
        "" => "ClusterIP",
        t => t,
    };
    match type_ {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = lb_ingress_string(arr_at(svc, "status.loadBalancer.ingress"));
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => str_at(svc, "spec.externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// `makePortString`: `80/TCP`, `80:30080/TCP`, comma-joined.
pub(crate) fn service_ports(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let proto = match str_at(p, "protocol") {
                "" => "TCP",
                x => x,
            };
            let port = int_at(p, "port");
            let node_port = int_at(p, "nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let type_ = match str_at(svc, "spec.type") {
        "" => "ClusterIP",
        t => t,
    };
    // v1 -> internal conversion: spec.clusterIP wins over clusterIPs[0].
    let mut cluster_ip = str_at(svc, "spec.clusterIP").to_string();
    if cluster_ip.is_empty() {
        cluster_ip = arr_at(svc, "spec.clusterIPs")
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    if cluster_ip.is_empty() {
        cluster_ip = "<none>".into();
    }
    let mut ports = service_ports(arr_at(svc, "spec.ports"));
    if ports.is_empty() {
        ports = "<none>".into();
    }
    vec![
        name_cell(svc),
        s(type_),
        s(cluster_ip),
        s(service_external_ip(svc)),
        s(ports),
        s(obj_age(svc, now)),
        s(format_labels(at(svc, "spec.selector"))),
    ]
}

fn endpoints_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets.",
        ),
        age_col(),
    ]
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints` with all ports: at most three `ip:port` then `+ N more...`.
pub(crate) fn format_endpoints(ep: &Value) -> String {
    let subsets = arr_at(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, "addresses");
        let ports = arr_at(ss, "ports");
        if ports.is_empty() {
            // Headless services with no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, "ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, "ip"), int_at(port, "port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

fn endpoints_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name_cell(o), s(format_endpoints(o)), s(obj_age(o, now))]
}

// --- ReplicationController, ResourceQuota, PodTemplate ------------------------

fn rc_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replication controller.",
        ),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the Replicas count.",
        ),
    ]
}

fn rc_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let desired = opt_int(at(rc, "spec.replicas")).unwrap_or(1);
    let (names, images) = container_cells(arr_at(rc, "spec.template.spec.containers"));
    vec![
        name_cell(rc),
        n(desired),
        n(int_at(rc, "status.replicas")),
        n(int_at(rc, "status.readyReplicas")),
        s(obj_age(rc, now)),
        names,
        images,
        s(format_labels(at(rc, "spec.selector"))),
    ]
}

fn quota_columns() -> Vec<Column> {
    // v1.32 order (AGE moved to the end only in v1.33).
    vec![
        name_col(),
        age_col(),
        col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ]
}

/// `(request, limit)` columns: `resource: used/hard` sorted by resource name;
/// `limits.*` resources go to the limit column.
pub(crate) fn quota_usage(rq: &Value) -> (String, String) {
    let hard = at(rq, "status.hard").as_object();
    let mut names: Vec<&String> = hard.map(|m| m.keys().collect()).unwrap_or_default();
    names.sort();
    let mut request: Vec<String> = Vec::new();
    let mut limit: Vec<String> = Vec::new();
    for name in names {
        let used = quantity(
            at(rq, "status.used")
                .get(name.as_str())
                .unwrap_or(&Value::Null),
        );
        let hard_q = quantity(
            hard.and_then(|m| m.get(name.as_str()))
                .unwrap_or(&Value::Null),
        );
        let entry = format!("{name}: {used}/{hard_q}");
        let pieces: Vec<&str> = name.split('.').collect();
        if pieces.len() > 1 && pieces[0] == "limits" {
            limit.push(entry);
        } else {
            request.push(entry);
        }
    }
    (request.join(", "), limit.join(", "))
}

fn quota_cells(rq: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (request, limit) = quota_usage(rq);
    vec![name_cell(rq), s(obj_age(rq, now)), s(request), s(limit)]
}

fn podtemplate_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Containers", "string", CONTAINERS_DESC),
        col("Images", "string", IMAGES_DESC),
        col("Pod Labels", "string", "The labels for the pod template."),
    ]
}

fn podtemplate_cells(pt: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(pt, "template.spec.containers"));
    vec![
        name_cell(pt),
        names,
        images,
        s(format_labels(at(pt, "template.metadata.labels"))),
    ]
}
