//! Server-side defaulting: what upstream fills in on create and update, as
//! `kubectl get -o yaml` shows it. That is the versioned defaulters, plus
//! the visible parts of registry strategies and admission plugins that
//! need no other objects (service account name, default tolerations, Job
//! selectors, Service IP families). Pod priority needs the PriorityClasses:
//! the API server's admission sets it.
//!
//! A value the client set is never replaced; what counts as "unset" follows
//! the Go field types: absent or null for pointers, and also "" or 0 for
//! plain strings and numbers.

mod cluster;
mod pod;
mod workloads;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::quantity::Quantity;

pub use pod::{image_pull_policy, image_tag};

type Obj = Map<String, Value>;

/// Applies upstream's defaults for `kind` of API group `group` ("" for
/// core) to `obj`, in place. Kinds without defaults are left alone.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (group, kind) {
        ("", "Pod") => pod::pod(o),
        ("", "PodTemplate") => workloads::pod_template_object(o),
        ("", "ReplicationController") => workloads::replication_controller(o),
        ("apps", "ReplicaSet") => workloads::replica_set(o),
        ("apps", "Deployment") => workloads::deployment(o),
        ("apps", "StatefulSet") => workloads::stateful_set(o),
        ("apps", "DaemonSet") => workloads::daemon_set(o),
        ("batch", "Job") => workloads::job(o),
        ("batch", "CronJob") => workloads::cron_job(o),
        ("", "Service") => cluster::service(o),
        ("", "Namespace") => cluster::namespace(o),
        ("", "PersistentVolume") => cluster::persistent_volume(o),
        ("", "PersistentVolumeClaim") => cluster::persistent_volume_claim(o),
        ("", "Secret") => cluster::secret(o),
        ("", "Node") => cluster::node(o),
        ("", "Endpoints") => cluster::endpoints(o),
        ("", "LimitRange") => cluster::limit_range(o),
        ("", "ResourceQuota") => cluster::resource_quota(o),
        ("discovery.k8s.io", "EndpointSlice") => cluster::endpoint_slice(o),
        ("autoscaling", "HorizontalPodAutoscaler") => cluster::horizontal_pod_autoscaler(o),
        ("networking.k8s.io", "NetworkPolicy") => cluster::network_policy(o),
        ("networking.k8s.io", "IngressClass") => cluster::ingress_class(o),
        ("storage.k8s.io", "StorageClass") => cluster::storage_class(o),
        ("storage.k8s.io", "CSIDriver") => cluster::csi_driver(o),
        ("scheduling.k8s.io", "PriorityClass") => default_value(o, "preemptionPolicy", "PreemptLowerPriority".into()),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => cluster::role_binding(o),
        _ => {}
    }
}

// --- helpers over JSON objects ---

fn is_unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Unset for a Go string: absent, null or "".
fn is_unset_str(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || v.and_then(Value::as_str) == Some("")
}

/// Sets a pointer-like field left absent or null.
fn default_value(m: &mut Obj, key: &str, v: Value) {
    if is_unset(m.get(key)) {
        m.insert(key.to_string(), v);
    }
}

/// Sets a string field left absent, null or "".
fn default_str(m: &mut Obj, key: &str, s: &str) {
    if is_unset_str(m.get(key)) {
        m.insert(key.to_string(), Value::String(s.to_string()));
    }
}

/// Sets a plain number field left absent, null or 0.
fn default_int(m: &mut Obj, key: &str, n: i64) {
    let v = m.get(key);
    if is_unset(v) || v.and_then(Value::as_f64) == Some(0.0) {
        m.insert(key.to_string(), n.into());
    }
}

/// The string at `key`, or "".
fn str_of<'a>(m: &'a Obj, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object at `key`, created empty when absent or null; None when the
/// client put something else there (validation reports that).
fn ensure_obj<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    let v = m.entry(key.to_string()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

/// The object at `key` when there is one.
fn existing_obj<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// Runs `f` on each object in the array at `key`.
fn each_obj(m: &mut Obj, key: &str, mut f: impl FnMut(&mut Obj)) {
    if let Some(items) = m.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().filter_map(Value::as_object_mut).for_each(&mut f);
    }
}

/// True when the array or object at `key` has entries.
fn non_empty(m: &Obj, key: &str) -> bool {
    match m.get(key) {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    }
}

/// Upstream re-encodes every quantity in its canonical form.
fn canonical_quantity(m: &mut Obj, key: &str) {
    if let Some(v) = m.get_mut(key) {
        if let Ok(q) = Quantity::from_json(v) {
            *v = Value::String(q.to_string());
        }
    }
}

/// Every resource list is rounded up to milli precision and re-encoded
/// (upstream SetDefaults_ResourceList). Bad quantities are left for
/// validation to report.
fn round_resource_list(m: &mut Obj, key: &str) {
    if let Some(list) = existing_obj(m, key) {
        for v in list.values_mut() {
            if let Ok(mut q) = Quantity::from_json(v) {
                q.round_up(-3);
                *v = Value::String(q.to_string());
            }
        }
    }
}

/// Nested object metadata that Go always prints, with a null creation time.
fn template_metadata(m: &mut Obj) {
    if let Some(meta) = ensure_obj(m, "metadata") {
        if !meta.contains_key("creationTimestamp") {
            meta.insert("creationTimestamp".into(), Value::Null);
        }
    }
}
