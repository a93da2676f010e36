//! The resource metrics API (`metrics.k8s.io/v1beta1`), what `kubectl top`
//! and the HorizontalPodAutoscaler read. Upstream runs metrics-server
//! behind the aggregation layer; here the API server does its job itself:
//! it scrapes every node agent's `/metrics/resource` each
//! [`scrape::RESOLUTION`] (`scrape`), turns two scrapes into usage
//! (`usage`) and answers NodeMetrics and PodMetrics from memory. Nothing
//! is stored, and only get and list are served, as upstream.

pub mod prom;
pub mod scrape;
pub mod usage;

use std::sync::RwLock;

use axum::response::Response;
use chrono::{DateTime, Utc};
use http::Method;
use resources::selectors::LabelSelector;
use serde_json::{json, Map, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::Registry;
use crate::request::Query;
use crate::respond;

pub const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The latest usage of every node and pod, shared by the scraper and the API.
#[derive(Default)]
pub struct ResourceMetrics {
    pub(crate) store: RwLock<usage::Store>,
}

/// GET under [`PREFIX`]: `nodes[/NAME]`, `pods`, `namespaces/NS/pods[/NAME]`.
pub fn handle(metrics: &ResourceMetrics, reg: &Registry, method: &Method, rest: &str, q: &Query) -> ApiResult<Response> {
    if method != Method::GET || q.0.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::method_not_allowed());
    }
    let selector = match q.0.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
        None => LabelSelector::everything(),
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let store = metrics.store.read().unwrap();
    let now = Utc::now();
    let body = match segs.as_slice() {
        ["nodes"] => list("NodeMetricsList", nodes(reg, &store, None, &selector, now)),
        ["nodes", name] => nodes(reg, &store, Some(name), &selector, now).pop().ok_or_else(|| not_found("nodemetrics", name))?,
        ["pods"] => list("PodMetricsList", pods(reg, &store, None, None, &selector, now)),
        ["namespaces", ns, "pods"] => list("PodMetricsList", pods(reg, &store, Some(ns), None, &selector, now)),
        ["namespaces", ns, "pods", name] => {
            pods(reg, &store, Some(ns), Some(name), &selector, now).pop().ok_or_else(|| not_found("podmetrics", &format!("{ns}/{name}")))?
        }
        _ => return Err(ApiError::path_not_found()),
    };
    Ok(respond::json_response(200, respond::json_line(&body), &[]))
}

/// Where Node objects are kept (the scraper and the API both read them from the cache).
fn node_storage() -> &'static str {
    resources::catalog::lookup("", "v1", "nodes").expect("nodes are in the catalog").storage
}

fn not_found(resource: &str, name: &str) -> ApiError {
    let mut e = ApiError::new(404, "NotFound", format!("{resource}.metrics.k8s.io \"{name}\" not found"));
    e.details = Some(json!({"name": name, "group": "metrics.k8s.io", "kind": resource}));
    e
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

fn nodes(reg: &Registry, store: &usage::Store, name: Option<&str>, selector: &LabelSelector, now: DateTime<Utc>) -> Vec<Value> {
    reg.cache
        .all(node_storage())
        .iter()
        .filter(|n| name.is_none_or(|want| n.name() == want) && selector.matches(n.labels()))
        .filter_map(|n| {
            let u = store.node(n.name())?;
            Some(json!({
                "kind": "NodeMetrics", "apiVersion": API_VERSION,
                "metadata": metadata(n.name(), None, n.labels(), now),
                "timestamp": timestamp(u.timestamp_ms), "window": window(u.window_ms),
                "usage": quantities(u.cpu_nanocores, u.memory_bytes),
            }))
        })
        .collect()
}

fn pods(reg: &Registry, store: &usage::Store, ns: Option<&str>, name: Option<&str>, selector: &LabelSelector, now: DateTime<Utc>) -> Vec<Value> {
    let by_pod: std::collections::HashMap<(&str, &str), &Vec<(String, usage::Usage)>> =
        store.pods().map(|((pod_ns, pod), containers)| ((pod_ns.as_str(), pod.as_str()), containers)).collect();
    let prefix = match ns {
        Some(ns) => format!("/registry/pods/{ns}/"),
        None => "/registry/pods/".to_string(),
    };
    let mut out = Vec::new();
    for pod in reg.cache.prefix("pods").snapshot(&prefix) {
        let pod_ns = pod.key.trim_start_matches("/registry/pods/").split('/').next().unwrap_or_default();
        if name.is_some_and(|want| pod.name() != want) || !selector.matches(pod.labels()) {
            continue;
        }
        let Some(containers) = by_pod.get(&(pod_ns, pod.name())) else { continue };
        let newest = containers.iter().max_by_key(|(_, u)| u.timestamp_ms).map(|(_, u)| *u).expect("a pod with usage has a container");
        let containers: Vec<Value> =
            containers.iter().map(|(c, u)| json!({"name": c, "usage": quantities(u.cpu_nanocores, u.memory_bytes)})).collect();
        out.push(json!({
            "kind": "PodMetrics", "apiVersion": API_VERSION,
            "metadata": metadata(pod.name(), Some(pod_ns), pod.labels(), now),
            "timestamp": timestamp(newest.timestamp_ms), "window": window(newest.window_ms),
            "containers": containers,
        }));
    }
    out
}

fn metadata(name: &str, ns: Option<&str>, labels: &Map<String, Value>, now: DateTime<Utc>) -> Value {
    let mut m = json!({"name": name});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m["creationTimestamp"] = json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if !labels.is_empty() {
        m["labels"] = Value::Object(labels.clone());
    }
    m
}

fn timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A Go duration string, as metav1.Duration writes one ("15s", "15.004s").
fn window(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", (format!("{:.3}", ms as f64 / 1000.0)).trim_end_matches('0'))
    }
}

/// CPU in nanocores (`250000000n`) and memory in bytes, in the form
/// metrics-server writes them (binary suffixes when they divide evenly).
fn quantities(cpu_nanocores: u64, memory_bytes: u64) -> Value {
    let memory = match memory_bytes {
        0 => "0".to_string(),
        b if b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
        b if b % 1024 == 0 => format!("{}Ki", b >> 10),
        b => b.to_string(),
    };
    json!({"cpu": format!("{cpu_nanocores}n"), "memory": memory})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_quantities_read_as_metrics_server_writes_them() {
        assert_eq!(window(15_000), "15s");
        assert_eq!(window(15_004), "15.004s");
        assert_eq!(window(14_500), "14.5s");
        assert_eq!(quantities(250_000_000, 3 << 20), json!({"cpu": "250000000n", "memory": "3Mi"}));
        assert_eq!(quantities(1, 2048), json!({"cpu": "1n", "memory": "2Ki"}));
        assert_eq!(quantities(0, 1536), json!({"cpu": "0n", "memory": "1536"}));
    }
}
