//! Per-kind hooks of the generic write path, as upstream's registry
//! strategies have them: what a new object's status starts as, what an
//! update carries over from the stored object, and which parts of an object
//! an update through each endpoint may change.

use serde_json::{json, Map, Value};

use crate::catalog::ResourceInfo;
use crate::quantity::Quantity;

/// A DaemonSet's template generation, which upstream keeps in its internal
/// spec and writes to v1 objects as this annotation; the DaemonSet
/// controller labels pods with it (`pod-template-generation`).
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// The status a new object starts with: clients cannot create an object with
/// a status of their choosing on kinds that have a /status subresource.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    if (info.group, info.kind) == ("apps", "DaemonSet") {
        obj["metadata"]["annotations"][TEMPLATE_GENERATION] = json!("1");
    }
    if !info.status {
        return;
    }
    let status = match (info.group, info.kind) {
        ("", "Pod") => json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])}),
        ("", "Namespace") => json!({"phase": "Active"}),
        ("", "Service") | ("networking.k8s.io", "Ingress") => json!({"loadBalancer": {}}),
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => json!({"phase": "Pending"}),
        ("", "Node") | ("", "ResourceQuota") => return, // creators (agents, quota) set these
        // An APIService served by this server itself is available at once.
        ("apiregistration.k8s.io", "APIService") if obj["spec"]["service"].is_null() => json!({"conditions": [{
            "type": "Available", "status": "True", "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "reason": "Local", "message": "Local APIServices are always available",
        }]}),
        _ => json!({}),
    };
    obj["status"] = status;
}

/// What an update that leaves them out keeps of the stored object: a pod's
/// priority, set by admission on create (validation then refuses changes).
pub fn prepare_for_update(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if (info.group, info.kind) == ("apps", "DaemonSet") {
        let was = old["metadata"]["annotations"][TEMPLATE_GENERATION].as_str().and_then(|g| g.parse::<i64>().ok()).unwrap_or(1);
        let changed = !crate::validation::semantically_equal(&new["spec"]["template"], &old["spec"]["template"]);
        new["metadata"]["annotations"][TEMPLATE_GENERATION] = json!((was + i64::from(changed)).to_string());
        return;
    }
    if (info.group, info.kind) != ("", "Pod") || !new["spec"].is_object() {
        return;
    }
    for field in ["priority", "preemptionPolicy"] {
        if new["spec"][field].is_null() && !old["spec"][field].is_null() {
            new["spec"][field] = old["spec"][field].clone();
        }
    }
}

/// What a pod subresource that changes part of the spec takes from the
/// client's pod into the stored one (`into`): the ephemeral containers, or
/// the resources and resize policies of containers matched by name.
pub fn take_pod_subresource(sub: &str, into: &mut Value, from: &Value) {
    match sub {
        "ephemeralcontainers" => into["spec"]["ephemeralContainers"] = from["spec"]["ephemeralContainers"].clone(),
        "resize" => {
            for list in ["containers", "initContainers"] {
                let Some(targets) = into["spec"][list].as_array_mut() else { continue };
                for given in from["spec"][list].as_array().into_iter().flatten() {
                    if let Some(t) = targets.iter_mut().find(|t| t["name"] == given["name"]) {
                        for f in ["resources", "resizePolicy"] {
                            match given.get(f) {
                                Some(v) => t[f] = v.clone(),
                                None => {
                                    t.as_object_mut().map(|m| m.remove(f));
                                }
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().into_iter().flatten().chain(spec["initContainers"].as_array().into_iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        let empty = Map::new();
        let (requests, limits) = (requests.unwrap_or(&empty), limits.unwrap_or(&empty));
        for res in ["cpu", "memory"] {
            let req = requests.get(res).and_then(Value::as_str).and_then(|s| Quantity::parse(s).ok());
            let lim = limits.get(res).and_then(Value::as_str).and_then(|s| Quantity::parse(s).ok());
            let zero = |q: &Option<Quantity>| q.as_ref().map_or(true, |q| q.milli_value() == 0);
            if !zero(&req) || !zero(&lim) {
                any = true;
            }
            // Requests default to limits, so a missing request with a limit is fine.
            match (&req, &lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// True when an update changed more than metadata and status: what bumps
/// `metadata.generation`.
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    };
    strip(new) != strip(old)
}

/// Metadata fields that only the server sets; an update keeps the old values.
pub const SERVER_OWNED_METADATA: &[&str] =
    &["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let g2 = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g2), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn generation_follows_spec_only() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        assert!(!spec_changed(&a, &b));
        let c = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(spec_changed(&a, &c));
    }
}
