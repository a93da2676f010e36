//! Object validation with upstream's rules, field paths and messages
//! (kubernetes `pkg/apis/*/validation`, apimachinery `ObjectMeta` and
//! `util/validation`).
//!
//! Objects arrive as `serde_json::Value` in wire form, already type-checked
//! and defaulted. [`validate`] runs create (old = None) or update rules for
//! a kind; [`validate_status`] runs the rules of a `/status` update. Errors
//! are [`FieldError`]s that render exactly like upstream's `field.Error`,
//! and [`invalid_message`] builds the `Status.message` of a 422.
//!
//! Enum-like fields that defaulting fills in (restart policies, protocols,
//! pull policies, ...) are checked when present; an absent one is left to
//! defaulting rather than reported as `Required`.

mod batch;
mod cluster;
mod config;
mod container;
pub mod cron;
mod errors;
mod meta;
mod names;
mod networking;
mod node;
mod pod;
mod podspec;
mod probes;
mod qty;
mod resource;
mod scheduling;
mod service;
mod storage;
mod util;
mod volume;
mod workloads;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_workloads;

use serde_json::Value;

pub(crate) use errors::go_quote;
pub use errors::{
    go_repr, invalid_message, invalid_message_for, qualified_kind, ErrorType, FieldError,
};

/// Cluster-scoped kinds (namespace forbidden in their metadata).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "StorageClass",
    "IngressClass",
    "CustomResourceDefinition",
    "APIService",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "RuntimeClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CertificateSigningRequest",
    "ComponentStatus",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "IPAddress",
    "ServiceCIDR",
    "VolumeAttributesClass",
];

/// Upstream's semantic equality (an omitted field equals its zero value).
pub fn semantically_equal(a: &Value, b: &Value) -> bool {
    util::sem_eq(Some(a), Some(b))
}

/// Validates a create (`old` = None) or an update (`old` = the stored object).
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let e = &mut errs;
    match (group, kind) {
        ("", "Pod") => match old {
            None => pod::validate_pod_create(e, obj),
            Some(o) => pod::validate_pod_update(e, obj, o),
        },
        ("", "PodTemplate") => pod::validate_pod_template_object(e, obj, old),
        ("", "ReplicationController") => workloads::validate_replication_controller(e, obj, old),
        ("apps", "Deployment") => workloads::validate_deployment(e, obj, old),
        ("apps", "ReplicaSet") => workloads::validate_replica_set(e, obj, old),
        ("apps", "StatefulSet") => workloads::validate_stateful_set(e, obj, old),
        ("apps", "DaemonSet") => workloads::validate_daemon_set(e, obj, old),
        ("apps", "ControllerRevision") => workloads::validate_controller_revision(e, obj, old),
        ("batch", "Job") => batch::validate_job(e, obj, old),
        ("batch", "CronJob") => batch::validate_cron_job(e, obj, old),
        ("", "Service") => service::validate_service(e, obj, old),
        ("", "Endpoints") => service::validate_endpoints(e, obj, old),
        ("discovery.k8s.io", "EndpointSlice") => service::validate_endpoint_slice(e, obj, old),
        ("", "ConfigMap") => config::validate_config_map(e, obj, old),
        ("", "Secret") => config::validate_secret(e, obj, old),
        ("", "ServiceAccount") => config::validate_service_account(e, obj, old),
        ("", "Namespace") => config::validate_namespace(e, obj, old),
        ("", "Node") => config::validate_node(e, obj, old),
        ("", "LimitRange") => config::validate_limit_range(e, obj, old),
        ("", "ResourceQuota") => config::validate_resource_quota(e, obj, old),
        ("", "Event") => config::validate_event(e, obj, old, false),
        ("events.k8s.io", "Event") => config::validate_event(e, obj, old, true),
        ("", "PersistentVolume") => storage::validate_pv(e, obj, old),
        ("", "PersistentVolumeClaim") => storage::validate_pvc(e, obj, old),
        ("storage.k8s.io", "StorageClass") => storage::validate_storage_class(e, obj, old),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress(e, obj, old),
        ("networking.k8s.io", "IngressClass") => networking::validate_ingress_class(e, obj, old),
        ("networking.k8s.io", "NetworkPolicy") => networking::validate_network_policy(e, obj, old),
        ("rbac.authorization.k8s.io", "Role") => cluster::validate_role(e, obj, old, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => cluster::validate_role(e, obj, old, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            cluster::validate_role_binding(e, obj, old, true)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            cluster::validate_role_binding(e, obj, old, false)
        }
        ("policy", "PodDisruptionBudget") => cluster::validate_pdb(e, obj, old),
        ("autoscaling", "HorizontalPodAutoscaler") => cluster::validate_hpa(e, obj, old),
        ("coordination.k8s.io", "Lease") => cluster::validate_lease(e, obj, old),
        ("scheduling.k8s.io", "PriorityClass") => cluster::validate_priority_class(e, obj, old),
        ("apiregistration.k8s.io", "APIService") => cluster::validate_api_service(e, obj, old),
        ("node.k8s.io", "RuntimeClass") => node::validate_runtime_class(e, obj, old),
        _ => generic(e, kind, obj, old),
    }
    errs
}

/// Kinds without rules of their own: metadata only. Request-like kinds
/// (reviews, token requests, bindings) carry no meaningful metadata.
fn generic(errs: &mut Vec<FieldError>, kind: &str, obj: &Value, old: Option<&Value>) {
    if kind.ends_with("Review") || matches!(kind, "TokenRequest" | "Scale" | "Eviction") {
        return;
    }
    if kind == "Binding" {
        let target = obj.get("target").cloned().unwrap_or(Value::Null);
        let tk = target.get("kind").and_then(Value::as_str).unwrap_or("");
        if !tk.is_empty() && tk != "Node" {
            errs.push(FieldError::not_supported(
                "target.kind",
                tk,
                &["Node", "<empty>"],
            ));
        }
        if target
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            errs.push(FieldError::required("target.name", ""));
        }
        return;
    }
    match old {
        Some(o) => meta::validate_object_meta_update(errs, obj, o),
        None => {
            let scope = if CLUSTER_SCOPED.contains(&kind) {
                Some(false)
            } else {
                None
            };
            meta::validate_object_meta(errs, obj, scope, names::name_is_dns_subdomain);
        }
    }
}

/// Validates an update through a pod subresource that changes part of the
/// spec (`ephemeralcontainers`, `resize`).
pub fn validate_pod_subresource(sub: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match sub {
        "ephemeralcontainers" => pod::validate_pod_ephemeral_update(&mut errs, new, old),
        "resize" => pod::validate_pod_resize(&mut errs, new, old),
        _ => {}
    }
    errs
}

/// Validates a `/status` update: metadata update rules plus the status
/// checks upstream makes for the kind.
pub fn validate_status(group: &str, kind: &str, obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let e = &mut errs;
    match (group, kind) {
        ("", "Pod") => pod::validate_pod_status_update(e, obj, old),
        _ => meta::validate_object_meta_update(e, obj, old),
    }
    match (group, kind) {
        ("apps", "Deployment") => workloads::validate_replica_status(
            e,
            obj,
            &[
                "observedGeneration",
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
                "collisionCount",
            ],
        ),
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            workloads::validate_replica_status(
                e,
                obj,
                &[
                    "replicas",
                    "fullyLabeledReplicas",
                    "readyReplicas",
                    "availableReplicas",
                    "observedGeneration",
                ],
            )
        }
        ("apps", "StatefulSet") => workloads::validate_replica_status(
            e,
            obj,
            &[
                "replicas",
                "readyReplicas",
                "currentReplicas",
                "updatedReplicas",
                "availableReplicas",
                "observedGeneration",
                "collisionCount",
            ],
        ),
        ("apps", "DaemonSet") => workloads::validate_replica_status(
            e,
            obj,
            &[
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
                "observedGeneration",
                "updatedNumberScheduled",
                "numberAvailable",
                "numberUnavailable",
                "collisionCount",
            ],
        ),
        ("batch", "Job") => batch::validate_job_status(e, obj),
        _ => {}
    }
    errs
}
