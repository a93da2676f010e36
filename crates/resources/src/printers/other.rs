//! autoscaling, policy, coordination, rbac, storage, scheduling and
//! apiextensions kinds.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::*;

pub(super) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => p(hpa_columns, hpa_cells),
        ("policy", "PodDisruptionBudget") => p(pdb_columns, pdb_cells),
        ("coordination.k8s.io", "Lease") => p(lease_columns, lease_cells),
        ("rbac.authorization.k8s.io", "RoleBinding") => p(rolebinding_columns, binding_cells),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            p(clusterrolebinding_columns, binding_cells)
        }
        ("storage.k8s.io", "StorageClass") => p(storageclass_columns, storageclass_cells),
        ("scheduling.k8s.io", "PriorityClass") => p(priorityclass_columns, priorityclass_cells),
        ("node.k8s.io", "RuntimeClass") => p(runtimeclass_columns, runtimeclass_cells),
        ("", "ComponentStatus") => p(componentstatus_columns, componentstatus_cells),
        ("apiregistration.k8s.io", "APIService") => p(apiservice_columns, apiservice_cells),
        // No upstream printer: the default table convertor.
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            p(created_at_columns, created_at_cells)
        }
        _ => None,
    }
}

// --- HorizontalPodAutoscaler -------------------------------------------------

fn hpa_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
        col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used)."),
        col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
        col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
        col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
        age_col(),
    ]
}

/// `Quantity.String()` of an optional quantity (`<nil>` when unset).
fn qty_or_nil(v: &Value) -> String {
    if v.is_null() {
        "<nil>".into()
    } else {
        quantity(v)
    }
}

/// (spec metrics, current metrics) in autoscaling/v2 shape; autoscaling/v1
/// objects get their CPU target converted like upstream's conversion does.
fn hpa_metrics(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    if present(hpa, "spec.metrics") || !present(hpa, "spec.targetCPUUtilizationPercentage") {
        return (
            arr_at(hpa, "spec.metrics").to_vec(),
            arr_at(hpa, "status.currentMetrics").to_vec(),
        );
    }
    let target = at(hpa, "spec.targetCPUUtilizationPercentage");
    let spec = vec![
        json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}),
    ];
    let current = at(hpa, "status.currentCPUUtilizationPercentage");
    let status = if current.is_null() {
        Vec::new()
    } else {
        vec![
            json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}),
        ]
    };
    (spec, status)
}

/// `formatHPAMetrics`: at most two metrics, then `+ N more...`.
pub(crate) fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let st = statuses.get(i).unwrap_or(&Value::Null);
        let entry = match str_at(spec, "type") {
            t @ ("External" | "Object") => {
                let field = if t == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(spec, &format!("{field}.target"));
                let cur = at(st, field);
                if present(target, "averageValue") {
                    let current = if cur.is_object() && present(cur, "current.averageValue") {
                        quantity(at(cur, "current.averageValue"))
                    } else {
                        unknown()
                    };
                    format!("{current}/{} (avg)", quantity(at(target, "averageValue")))
                } else {
                    let current = if cur.is_object() {
                        qty_or_nil(at(cur, "current.value"))
                    } else {
                        unknown()
                    };
                    format!("{current}/{}", qty_or_nil(at(target, "value")))
                }
            }
            "Pods" => {
                let cur = at(st, "pods");
                let current = if cur.is_object() {
                    qty_or_nil(at(cur, "current.averageValue"))
                } else {
                    unknown()
                };
                format!(
                    "{current}/{}",
                    qty_or_nil(at(spec, "pods.target.averageValue"))
                )
            }
            t @ ("Resource" | "ContainerResource") => {
                let field = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = at(spec, field);
                let target = at(src, "target");
                let cur = at(st, field);
                let name = str_at(src, "name");
                if present(target, "averageValue") {
                    let current = if cur.is_object() {
                        qty_or_nil(at(cur, "current.averageValue"))
                    } else {
                        unknown()
                    };
                    format!("{name}: {current}/{}", quantity(at(target, "averageValue")))
                } else {
                    let current = match opt_int(at(cur, "current.averageUtilization")) {
                        Some(u) if cur.is_object() => format!("{u}%"),
                        _ => unknown(),
                    };
                    let target = match opt_int(at(target, "averageUtilization")) {
                        Some(u) => format!("{u}%"),
                        None => "<auto>".to_string(),
                    };
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn hpa_cells(hpa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(hpa, "spec.scaleTargetRef.kind"),
        str_at(hpa, "spec.scaleTargetRef.name")
    );
    let (specs, statuses) = hpa_metrics(hpa);
    let min_pods = match opt_int(at(hpa, "spec.minReplicas")) {
        Some(m) => m.to_string(),
        None => "<unset>".to_string(),
    };
    vec![
        name_cell(hpa),
        s(reference),
        s(format_hpa_metrics(&specs, &statuses)),
        s(min_pods),
        n(int_at(hpa, "spec.maxReplicas")),
        n(int_at(hpa, "status.currentReplicas")),
        s(obj_age(hpa, now)),
    ]
}

// --- PodDisruptionBudget -------------------------------------------------------

fn pdb_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        age_col(),
    ]
}

fn pdb_cells(pdb: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let or_na = |v: &Value| {
        if v.is_null() {
            "N/A".to_string()
        } else {
            int_or_string(v)
        }
    };
    vec![
        name_cell(pdb),
        s(or_na(at(pdb, "spec.minAvailable"))),
        s(or_na(at(pdb, "spec.maxUnavailable"))),
        n(int_at(pdb, "status.disruptionsAllowed")),
        s(obj_age(pdb, now)),
    ]
}

// --- Lease -----------------------------------------------------------------------

fn lease_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        age_col(),
    ]
}

fn lease_cells(lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(lease),
        s(str_at(lease, "spec.holderIdentity")),
        s(obj_age(lease, now)),
    ]
}

// --- ComponentStatus ----------------------------------------------------------

fn componentstatus_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "Status of the component conditions"),
        col("Message", "string", "Message of the component conditions"),
        col("Error", "string", "Error of the component conditions"),
    ]
}

/// The Healthy condition's verdict, message and error, as upstream prints them.
fn componentstatus_cells(cs: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let healthy = arr_at(cs, "conditions").iter().find(|c| str_at(c, "type") == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => {
            let verdict = match str_at(c, "status") {
                "True" => "Healthy",
                "False" => "Unhealthy",
                _ => "Unknown",
            };
            (verdict, str_at(c, "message"), str_at(c, "error"))
        }
        None => ("Unknown", "", ""),
    };
    vec![name_cell(cs), s(status), s(message), s(error)]
}

// --- APIService ---------------------------------------------------------------

fn apiservice_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Service", "string", "The reference to the service that hosts this API endpoint."),
        col("Available", "string", "Whether this service is available."),
        age_col(),
    ]
}

fn apiservice_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let service = match at(svc, "spec.service") {
        Value::Null => "Local".to_string(),
        r => format!("{}/{}", str_at(r, "namespace"), str_at(r, "name")),
    };
    let available = match arr_at(svc, "status.conditions").iter().find(|c| str_at(c, "type") == "Available") {
        Some(c) if str_at(c, "status") == "True" => "True".to_string(),
        Some(c) => format!("{} ({})", str_at(c, "status"), str_at(c, "reason")),
        None => "Unknown".to_string(),
    };
    vec![name_cell(svc), s(service), s(available), s(obj_age(svc, now))]
}

// --- RoleBinding & ClusterRoleBinding ----------------------------------------------

fn binding_columns(
    of: &'static str,
    users: &'static str,
    groups: &'static str,
    sas: &'static str,
) -> Vec<Column> {
    vec![
        name_col(),
        col("Role", "string", of),
        age_col(),
        wide("Users", "string", users),
        wide("Groups", "string", groups),
        wide("ServiceAccounts", "string", sas),
    ]
}

fn rolebinding_columns() -> Vec<Column> {
    binding_columns(
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
        "Users in the roleBinding",
        "Groups in the roleBinding",
        "ServiceAccounts in the roleBinding",
    )
}

fn clusterrolebinding_columns() -> Vec<Column> {
    binding_columns(
        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
        "Users in the clusterRoleBinding",
        "Groups in the clusterRoleBinding",
        "ServiceAccounts in the clusterRoleBinding",
    )
}

/// `rbac.SubjectsStrings`: (users, groups, service accounts as `ns/name`).
pub(crate) fn subjects_strings(binding: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr_at(binding, "subjects") {
        let name = str_at(subject, "name").to_string();
        match str_at(subject, "kind") {
            "ServiceAccount" => sas.push(format!("{}/{}", str_at(subject, "namespace"), name)),
            "User" => users.push(name),
            "Group" => groups.push(name),
            _ => {}
        }
    }
    (users, groups, sas)
}

fn binding_cells(b: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(b, "roleRef.kind"),
        str_at(b, "roleRef.name")
    );
    let (users, groups, sas) = subjects_strings(b);
    vec![
        name_cell(b),
        s(role),
        s(obj_age(b, now)),
        s(users.join(", ")),
        s(groups.join(", ")),
        s(sas.join(", ")),
    ]
}

// --- StorageClass & PriorityClass ----------------------------------------------------

fn storageclass_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
        col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
        col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound. When unset, VolumeBindingImmediate is used."),
        col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        age_col(),
    ]
}

fn is_default_class(sc: &Value) -> bool {
    let ann = at(sc, "metadata.annotations");
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| ann.get(*k).and_then(Value::as_str) == Some("true"))
}

fn storageclass_cells(sc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut name = str_at(sc, "metadata.name").to_string();
    if is_default_class(sc) {
        name.push_str(" (default)");
    }
    let reclaim = at(sc, "reclaimPolicy").as_str().unwrap_or("Delete");
    let binding = at(sc, "volumeBindingMode").as_str().unwrap_or("Immediate");
    vec![
        s(name),
        s(str_at(sc, "provisioner")),
        s(reclaim),
        s(binding),
        Value::Bool(bool_at(sc, "allowVolumeExpansion")),
        s(obj_age(sc, now)),
    ]
}

fn priorityclass_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Value", "integer", "value represents the integer value of this priority class."),
        col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
        age_col(),
        col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
    ]
}

fn priorityclass_cells(pc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(pc),
        n(int_at(pc, "value")),
        Value::Bool(bool_at(pc, "globalDefault")),
        s(obj_age(pc, now)),
        s(str_at(pc, "preemptionPolicy")),
    ]
}

// --- RuntimeClass ----------------------------------------------------------------------

fn runtimeclass_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Handler", "string", "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."),
        age_col(),
    ]
}

fn runtimeclass_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name_cell(rc), s(str_at(rc, "handler")), s(obj_age(rc, now))]
}
