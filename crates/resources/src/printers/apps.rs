//! apps/v1 kinds.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("apps", "Deployment") => p(deployment_columns, deployment_cells),
        ("apps", "ReplicaSet") => p(replicaset_columns, replicaset_cells),
        ("apps", "StatefulSet") => p(statefulset_columns, statefulset_cells),
        ("apps", "DaemonSet") => p(daemonset_columns, daemonset_cells),
        ("apps", "ControllerRevision") => p(revision_columns, revision_cells),
        _ => None,
    }
}

fn template_containers(o: &Value) -> &[Value] {
    arr_at(o, "spec.template.spec.containers")
}

/// spec.replicas, defaulted to 1 like the v1 defaulting does.
fn desired(o: &Value) -> i64 {
    opt_int(at(o, "spec.replicas")).unwrap_or(1)
}

fn deployment_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state"),
        col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
    ]
}

fn deployment_cells(d: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(d));
    // Deployment prints the raw selector string: "" when empty, no <none>.
    let selector = selector_string(at(d, "spec.selector")).unwrap_or_else(|()| "<invalid>".into());
    vec![
        name_cell(d),
        s(format!(
            "{}/{}",
            int_at(d, "status.readyReplicas"),
            desired(d)
        )),
        n(int_at(d, "status.updatedReplicas")),
        n(int_at(d, "status.availableReplicas")),
        s(obj_age(d, now)),
        names,
        images,
        s(selector),
    ]
}

fn replicaset_columns() -> Vec<Column> {
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
            "The number of ready replicas for this replica set.",
        ),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the replica count.",
        ),
    ]
}

fn replicaset_cells(rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(rs));
    vec![
        name_cell(rs),
        n(desired(rs)),
        n(int_at(rs, "status.replicas")),
        n(int_at(rs, "status.readyReplicas")),
        s(obj_age(rs, now)),
        names,
        images,
        s(format_label_selector(at(rs, "spec.selector"))),
    ]
}

fn statefulset_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state"),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
    ]
}

fn statefulset_cells(ss: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(ss));
    vec![
        name_cell(ss),
        s(format!(
            "{}/{}",
            int_at(ss, "status.readyReplicas"),
            desired(ss)
        )),
        s(obj_age(ss, now)),
        names,
        images,
    ]
}

fn daemonset_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
        col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
        col("Ready", "integer", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
        col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
        col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
        col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
    ]
}

fn daemonset_cells(ds: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(ds));
    vec![
        name_cell(ds),
        n(int_at(ds, "status.desiredNumberScheduled")),
        n(int_at(ds, "status.currentNumberScheduled")),
        n(int_at(ds, "status.numberReady")),
        n(int_at(ds, "status.updatedNumberScheduled")),
        n(int_at(ds, "status.numberAvailable")),
        s(format_labels(at(ds, "spec.template.spec.nodeSelector"))),
        s(obj_age(ds, now)),
        names,
        images,
        s(format_label_selector(at(ds, "spec.selector"))),
    ]
}

fn revision_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Controller", "string", "Controller of the object"),
        col(
            "Revision",
            "string",
            "Revision indicates the revision of the state represented by Data.",
        ),
        age_col(),
    ]
}

/// The controlling owner as `kind.group/name` (lowercased kind and group).
pub(crate) fn controller_name(o: &Value) -> String {
    let owner = arr_at(o, "metadata.ownerReferences")
        .iter()
        .find(|r| bool_at(r, "controller"));
    let Some(owner) = owner else {
        return "<none>".into();
    };
    let api_version = str_at(owner, "apiVersion");
    let group = match api_version.rsplit_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = str_at(owner, "kind");
    let name = str_at(owner, "name");
    if kind.is_empty() && group.is_empty() {
        return name.to_string();
    }
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{}", group_kind.to_lowercase(), name)
}

fn revision_cells(cr: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(cr),
        s(controller_name(cr)),
        n(int_at(cr, "revision")),
        s(obj_age(cr, now)),
    ]
}
