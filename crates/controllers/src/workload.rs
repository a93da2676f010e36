//! Helpers shared by the workload controllers (ReplicaSet, ReplicationController,
//! Deployment): label selectors, pod readiness, controller ownerReferences and
//! core/v1 Events.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::ObjectMeta;
use kube::{Client, Resource};

/// A reconcile failure; the controller requeues the object.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// True for 404 (already gone) and 409 (someone else got there first).
pub fn is_status(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(r) if codes.contains(&r.code))
}

/// An error as upstream's events word it: the API's own message.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) => r.message.clone(),
        e => e.to_string(),
    }
}

/// A create refused because its namespace is being deleted, for which
/// upstream records no event.
pub fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 403 && r.message.contains("because it is being terminated"))
}

/// Upstream's LabelSelectorAsSelector: an empty selector matches everything,
/// a missing one nothing (callers treat `None` as nothing).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        let got = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The `labelSelector` query string for a selector, so the API server filters.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key),
        });
    }
    parts.join(",")
}

pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

pub fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// The controller ownerReference an owner puts on what it creates or adopts.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn pod_condition_true(pod: &Pod, type_: &str) -> Option<Option<Time>> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    (c.status == "True").then(|| c.last_transition_time.clone())
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod_condition_true(pod, "Ready").is_some()
}

/// Ready for at least `min_ready_seconds` (upstream IsPodAvailable).
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: chrono::DateTime<Utc>) -> bool {
    match pod_condition_true(pod, "Ready") {
        None => false,
        Some(_) if min_ready_seconds == 0 => true,
        Some(Some(t)) => t.0 + chrono::Duration::seconds(min_ready_seconds as i64) < now,
        Some(None) => false,
    }
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Not finished and not being deleted (upstream FilterActivePods).
pub fn pod_active(pod: &Pod) -> bool {
    !matches!(pod_phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

pub fn creation(meta: &ObjectMeta) -> chrono::DateTime<Utc> {
    meta.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(Utc::now)
}

/// Records a core/v1 Event about `obj` (see `client::eventlog`). Failures are logged, never fatal.
pub async fn record<K: Resource<DynamicType = ()>>(client: &Client, component: &str, obj: &K, type_: &str, reason: &str, message: String) {
    client::eventlog::record(client, component, client::eventlog::reference(obj), type_, reason, message).await
}
