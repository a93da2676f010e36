//! Defaults of the non-workload kinds: services, namespaces, storage,
//! nodes, endpoints, policies, autoscalers, RBAC bindings.

use serde_json::{json, Value};

use super::pod::{claim_spec, volume_source};
use super::{
    default_str, default_value, each_obj, ensure_obj, existing_obj, is_unset, is_unset_str, non_empty,
    round_resource_list, str_of, Obj,
};
use crate::selectors::scalar_text;

pub(super) fn service(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let timeout =
                spec.get("sessionAffinityConfig").and_then(|c| c.get("clientIP")).and_then(|c| c.get("timeoutSeconds"));
            if is_unset(timeout) {
                spec.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": 10800}}));
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    each_obj(spec, "ports", |p| {
        default_str(p, "protocol", "TCP");
        let target = p.get("targetPort");
        if is_unset_str(target) || target.and_then(Value::as_i64) == Some(0) {
            let port = p.get("port").cloned().unwrap_or_else(|| 0.into());
            p.insert("targetPort".into(), port);
        }
    });
    let kind = str_of(spec, "type").to_string();
    let externally_accessible =
        kind == "LoadBalancer" || kind == "NodePort" || (kind == "ClusterIP" && non_empty(spec, "externalIPs"));
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_value(spec, "internalTrafficPolicy", "Cluster".into());
    }
    if kind == "LoadBalancer" {
        default_value(spec, "allocateLoadBalancerNodePorts", true.into());
    }
    if kind != "ExternalName" {
        ip_families(spec);
    }
    if kind == "LoadBalancer" {
        let ingress = existing_obj(o, "status").and_then(|s| existing_obj(s, "loadBalancer"));
        if let Some(lb) = ingress {
            each_obj(lb, "ingress", |i| {
                if !is_unset_str(i.get("ip")) {
                    default_value(i, "ipMode", "VIP".into());
                }
            });
        }
    }
}

/// The service registry's IP family fields on a single-stack IPv4 cluster:
/// the plural clusterIPs from the singular, families inferred from the IPs,
/// and the headless-without-selector case that asks for both families.
fn ip_families(spec: &mut Obj) {
    if !is_unset_str(spec.get("clusterIP")) && !non_empty(spec, "clusterIPs") {
        spec.insert("clusterIPs".into(), json!([spec["clusterIP"].clone()]));
    }
    let headless_without_selector = str_of(spec, "clusterIP") == "None" && !non_empty(spec, "selector");
    let policy = if headless_without_selector { "RequireDualStack" } else { "SingleStack" };
    default_value(spec, "ipFamilyPolicy", policy.into());
    let mut families: Vec<Value> = spec.get("ipFamilies").and_then(Value::as_array).cloned().unwrap_or_default();
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    for (i, ip) in ips.iter().enumerate().take_while(|(_, ip)| *ip != "None") {
        if i >= families.len() {
            families.push(if ip.contains(':') { "IPv6" } else { "IPv4" }.into());
        }
    }
    if families.is_empty() {
        families.push("IPv4".into());
    }
    if headless_without_selector && families.len() < 2 && str_of(spec, "ipFamilyPolicy") != "SingleStack" {
        let other = if families[0] == "IPv6" { "IPv4" } else { "IPv6" };
        families.push(other.into());
    }
    spec.insert("ipFamilies".into(), Value::Array(families));
}

pub(super) fn namespace(o: &mut Obj) {
    let deleting = o.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some_and(|t| !t.is_null());
    if let Some(meta) = ensure_obj(o, "metadata") {
        let name = str_of(meta, "name").to_string();
        // Upstream always sets this label to the name, over any other value.
        if !name.is_empty() {
            if let Some(labels) = ensure_obj(meta, "labels") {
                labels.insert("kubernetes.io/metadata.name".into(), name.into());
            }
        }
    }
    // The strategy requires the kubernetes finalizer at creation; once the
    // namespace is being deleted the namespace controller removes it.
    if !deleting {
        if let Some(spec) = ensure_obj(o, "spec") {
            let has =
                spec.get("finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == "kubernetes"));
            if !has {
                match spec.get_mut("finalizers").and_then(Value::as_array_mut) {
                    Some(list) => list.push("kubernetes".into()),
                    None => {
                        spec.insert("finalizers".into(), json!(["kubernetes"]));
                    }
                }
            }
        }
    }
    if let Some(status) = ensure_obj(o, "status") {
        default_str(status, "phase", "Active");
    }
}

pub(super) fn secret(o: &mut Obj) {
    default_str(o, "type", "Opaque");
    // The v1 conversion folds stringData into data, where it wins; it is
    // never stored or returned.
    if let Some(Value::Object(strings)) = o.remove("stringData") {
        if !o.get("data").is_some_and(Value::is_object) {
            o.insert("data".into(), json!({}));
        }
        if let Some(data) = existing_obj(o, "data") {
            for (k, v) in strings {
                data.insert(k, base64(scalar_text(&v).as_bytes()).into());
            }
        }
    }
}

/// Standard padded base64, as Go encodes a Secret's bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn persistent_volume(o: &mut Obj) {
    if let Some(spec) = ensure_obj(o, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_value(spec, "volumeMode", "Filesystem".into());
        round_resource_list(spec, "capacity");
        volume_source(spec);
    }
    if let Some(status) = ensure_obj(o, "status") {
        default_str(status, "phase", "Pending");
    }
}

pub(super) fn persistent_volume_claim(o: &mut Obj) {
    if let Some(spec) = ensure_obj(o, "spec") {
        claim_spec(spec);
    }
    if let Some(status) = ensure_obj(o, "status") {
        default_str(status, "phase", "Pending");
        round_resource_list(status, "capacity");
        round_resource_list(status, "allocatedResources");
    }
}

pub(super) fn node(o: &mut Obj) {
    if let Some(spec) = existing_obj(o, "spec") {
        // podCIDR mirrors the first of podCIDRs (v1 conversion).
        let first = spec.get("podCIDRs").and_then(Value::as_array).and_then(|a| a.first()).cloned();
        match first {
            Some(cidr) => {
                spec.insert("podCIDR".into(), cidr);
            }
            None if !is_unset_str(spec.get("podCIDR")) => {
                spec.insert("podCIDRs".into(), json!([spec["podCIDR"].clone()]));
            }
            None => {}
        }
    }
    if let Some(status) = existing_obj(o, "status") {
        if is_unset(status.get("allocatable")) && status.get("capacity").is_some_and(Value::is_object) {
            let capacity = status["capacity"].clone();
            status.insert("allocatable".into(), capacity);
        }
        round_resource_list(status, "capacity");
        round_resource_list(status, "allocatable");
    }
}

pub(super) fn endpoints(o: &mut Obj) {
    each_obj(o, "subsets", |s| each_obj(s, "ports", |p| default_str(p, "protocol", "TCP")));
}

pub(super) fn endpoint_slice(o: &mut Obj) {
    each_obj(o, "ports", |p| {
        default_value(p, "name", "".into());
        default_value(p, "protocol", "TCP".into());
    });
}

pub(super) fn limit_range(o: &mut Obj) {
    let Some(spec) = existing_obj(o, "spec") else { return };
    each_obj(spec, "limits", |item| {
        for key in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
            round_resource_list(item, key);
        }
        if str_of(item, "type") != "Container" {
            return;
        }
        // Default limit from max, default request from the default limit,
        // then from min; each only where nothing was given.
        for (from, to) in [("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")] {
            let source = item.get(from).and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, v) in source {
                if !item.get(to).is_some_and(Value::is_object) {
                    item.insert(to.into(), json!({}));
                }
                if let Some(target) = existing_obj(item, to) {
                    target.entry(k).or_insert(v);
                }
            }
        }
    });
}

pub(super) fn resource_quota(o: &mut Obj) {
    if let Some(spec) = existing_obj(o, "spec") {
        round_resource_list(spec, "hard");
    }
    if let Some(status) = existing_obj(o, "status") {
        round_resource_list(status, "hard");
        round_resource_list(status, "used");
    }
}

pub(super) fn horizontal_pod_autoscaler(o: &mut Obj) {
    let v1 = str_of(o, "apiVersion") == "autoscaling/v1";
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_value(spec, "minReplicas", 1.into());
    if v1 {
        return;
    }
    if !non_empty(spec, "metrics") {
        let cpu = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}});
        spec.insert("metrics".into(), json!([cpu]));
    }
    // A behavior block is completed rule by rule with the built-in rules.
    if let Some(behavior) = existing_obj(spec, "behavior") {
        let scale_up = json!({
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}],
        });
        let scale_down = json!({
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        });
        for (key, mut rules) in [("scaleUp", scale_up), ("scaleDown", scale_down)] {
            if let (Some(given), Some(rules_obj)) =
                (behavior.get(key).and_then(Value::as_object), rules.as_object_mut())
            {
                for (k, v) in given.iter().filter(|(_, v)| !v.is_null()) {
                    rules_obj.insert(k.clone(), v.clone());
                }
            }
            behavior.insert(key.into(), rules);
        }
    }
}

pub(super) fn network_policy(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    for direction in ["ingress", "egress"] {
        each_obj(spec, direction, |rule| each_obj(rule, "ports", |p| default_value(p, "protocol", "TCP".into())));
    }
    if !non_empty(spec, "policyTypes") {
        let mut types = vec![Value::from("Ingress")];
        if non_empty(spec, "egress") {
            types.push("Egress".into());
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

pub(super) fn ingress_class(o: &mut Obj) {
    if let Some(params) = existing_obj(o, "spec").and_then(|s| existing_obj(s, "parameters")) {
        default_value(params, "scope", "Cluster".into());
    }
}

pub(super) fn storage_class(o: &mut Obj) {
    default_value(o, "reclaimPolicy", "Delete".into());
    default_value(o, "volumeBindingMode", "Immediate".into());
}

pub(super) fn csi_driver(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_value(spec, "attachRequired", true.into());
    default_value(spec, "podInfoOnMount", false.into());
    default_value(spec, "storageCapacity", false.into());
    default_value(spec, "fsGroupPolicy", "ReadWriteOnceWithFSType".into());
    if !non_empty(spec, "volumeLifecycleModes") {
        spec.insert("volumeLifecycleModes".into(), json!(["Persistent"]));
    }
    default_value(spec, "requiresRepublish", false.into());
}

pub(super) fn role_binding(o: &mut Obj) {
    if let Some(role_ref) = existing_obj(o, "roleRef") {
        default_str(role_ref, "apiGroup", "rbac.authorization.k8s.io");
    }
    each_obj(o, "subjects", |s| {
        if matches!(str_of(s, "kind"), "User" | "Group") {
            default_str(s, "apiGroup", "rbac.authorization.k8s.io");
        }
    });
}
