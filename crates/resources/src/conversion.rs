//! Conversion between the versions of a kind served from one storage:
//! autoscaling/v1 <-> v2 HorizontalPodAutoscalers and events.k8s.io/v1 <->
//! core/v1 Events. Objects are stored in the form of the kind's first catalog
//! entry and converted on the way in and out.

use serde_json::{json, Value};

use crate::catalog::{ResourceInfo, CATALOG};

/// The catalog entry whose form is stored for `info`'s storage.
pub fn storage_info(info: &ResourceInfo) -> &'static ResourceInfo {
    CATALOG.iter().find(|r| r.storage == info.storage).expect("catalog entry")
}

pub fn needs_conversion(info: &ResourceInfo) -> bool {
    let s = storage_info(info);
    s.group != info.group || s.version != info.version
}

/// From the request's version to the stored form.
pub fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    match (info.group, info.version) {
        ("autoscaling", "v1") => hpa_v1_to_v2(obj),
        ("events.k8s.io", "v1") => rename(obj, EVENT_FIELDS, false, "v1"),
        _ => obj,
    }
}

/// From the stored form to the request's version.
pub fn from_storage(info: &ResourceInfo, obj: Value) -> Value {
    match (info.group, info.version) {
        ("autoscaling", "v1") => hpa_v2_to_v1(obj),
        ("events.k8s.io", "v1") => rename(obj, EVENT_FIELDS, true, "events.k8s.io/v1"),
        _ => obj,
    }
}

/// (events.k8s.io/v1 name, core/v1 name).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(mut obj: Value, pairs: &[(&str, &str)], to_first: bool, api_version: &str) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (a, b) in pairs {
            let (from, to) = if to_first { (b, a) } else { (a, b) };
            if let Some(v) = m.remove(*from) {
                m.insert(to.to_string(), v);
            }
        }
        m.insert("apiVersion".into(), json!(api_version));
    }
    obj
}

fn cpu_utilization(metric: &Value, field: &str) -> Option<Value> {
    let r = &metric["resource"];
    (metric["type"] == "Resource" && r["name"] == "cpu").then(|| r[field]["averageUtilization"].clone()).filter(|v| !v.is_null())
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj["spec"].as_object_mut() {
        if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
            );
        }
    }
    if let Some(status) = obj["status"].as_object_mut() {
        if let Some(current) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
            );
        }
    }
    obj
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj["spec"].as_object_mut() {
        let metrics = spec.remove("metrics").unwrap_or(Value::Null);
        spec.remove("behavior");
        if let Some(t) = metrics.as_array().into_iter().flatten().find_map(|m| cpu_utilization(m, "target")) {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    if let Some(status) = obj["status"].as_object_mut() {
        let current = status.remove("currentMetrics").unwrap_or(Value::Null);
        status.remove("conditions");
        if let Some(c) = current.as_array().into_iter().flatten().find_map(|m| cpu_utilization(m, "current")) {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
        status.entry("currentReplicas").or_insert(json!(0));
        status.entry("desiredReplicas").or_insert(json!(0));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::lookup;

    #[test]
    fn hpa_round_trips_cpu_target() {
        let v1 = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert!(needs_conversion(v1));
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 70}});
        let stored = to_storage(v1, obj.clone());
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(from_storage(v1, stored)["spec"], obj["spec"]);
    }

    #[test]
    fn events_rename_fields() {
        let ev = lookup("events.k8s.io", "v1", "events").unwrap();
        let stored = json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "p"}, "message": "hi", "count": 2});
        let out = from_storage(ev, stored.clone());
        assert_eq!((out["regarding"]["name"].as_str(), out["note"].as_str(), out["deprecatedCount"].as_i64()), (Some("p"), Some("hi"), Some(2)));
        assert_eq!(to_storage(ev, out)["message"], "hi");
    }
}
