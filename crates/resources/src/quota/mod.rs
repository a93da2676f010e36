//! Quota accounting, as upstream's evaluators (`pkg/quota/v1/evaluator/core`
//! and the generic object counter): what an object uses of each quota
//! resource name, which quotas it falls under (their resource names and
//! scopes), and the resource-list arithmetic admission and the quota
//! controller share. Objects are JSON as stored; everything here is pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::quantity::{Format, Quantity};

#[cfg(test)]
mod tests;

/// Resource name to quantity, sorted by name (so messages list them in order).
pub type ResourceList = BTreeMap<String, Quantity>;

/// The kinds with a legacy object-count name (`pods`, `services`, ...)
/// beside their `count/<plural>` one; all are in the core group.
pub const LEGACY_COUNTS: &[&str] =
    &["pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps", "persistentvolumeclaims"];

/// Pod resources that every container must request (or limit) once a quota
/// tracks them: upstream keeps this for backward compatibility.
const MUST_SPECIFY: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// The quota names a pod's compute usage can have, besides the prefixed ones.
const POD_RESOURCES: &[&str] = &[
    "pods", "count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage",
];

const SERVICE_RESOURCES: &[&str] = &["services", "count/services", "services.loadbalancers", "services.nodeports"];

/// `<class>.storageclass.storage.k8s.io/requests.storage` and `/persistentvolumeclaims`.
const CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// A resource list from its JSON form; unparsable entries are left out
/// (validation has refused them already).
pub fn list(v: &Value) -> ResourceList {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Quantity::from_json(q).ok().map(|q| (k.clone(), q)))
        .collect()
}

/// The JSON form of a list: canonical quantities.
pub fn to_json(l: &ResourceList) -> Value {
    Value::Object(l.iter().map(|(k, q)| (k.clone(), json!(q.canonical()))).collect())
}

pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, q) in b {
        out.entry(k.clone()).or_default().add(q);
    }
    out
}

/// `a - b`, never below zero (an update that lowers usage is charged nothing).
pub fn sub_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, q) in out.iter_mut() {
        if let Some(other) = b.get(k) {
            q.sub(other);
            if q.sign() < 0 {
                *q = Quantity::default();
            }
        }
    }
    out
}

/// Only the entries named in `names`.
pub fn mask<'a>(l: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names.into_iter().filter_map(|n| l.get(n).map(|q| (n.clone(), q.clone()))).collect()
}

/// The names in `used` that go over `hard` (names `hard` lacks are unlimited).
pub fn exceeded(used: &ResourceList, hard: &ResourceList) -> Vec<String> {
    used.iter().filter(|(k, q)| hard.get(*k).is_some_and(|h| *q > h)).map(|(k, _)| k.clone()).collect()
}

/// `a=1,b=2`, as upstream's messages print lists.
pub fn pretty(l: &ResourceList) -> String {
    l.iter().map(|(k, q)| format!("{k}={}", q.canonical())).collect::<Vec<_>>().join(",")
}

fn one() -> Quantity {
    Quantity::new(1, Format::DecimalSI)
}

/// `count/<plural>` for the core group, `count/<plural>.<group>` otherwise.
pub fn object_count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Of `names` (a quota's hard resources), those objects of this kind can use.
pub fn matching_resources<'a>(group: &str, plural: &str, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let count = object_count_name(group, plural);
    let legacy = group.is_empty() && LEGACY_COUNTS.contains(&plural);
    names
        .into_iter()
        .filter(|n| {
            **n == count
                || match (group, plural) {
                    ("", "pods") => POD_RESOURCES.contains(&n.as_str()) || pod_prefixed(n),
                    ("", "services") => SERVICE_RESOURCES.contains(&n.as_str()),
                    ("", "persistentvolumeclaims") => {
                        *n == "persistentvolumeclaims" || *n == "requests.storage" || claim_class_resource(n).is_some()
                    }
                    _ => legacy && *n == plural,
                }
        })
        .cloned()
        .collect()
}

/// Hugepages and extended resources, which quotas name with a prefix.
fn pod_prefixed(n: &str) -> bool {
    n.starts_with("hugepages-") || n.starts_with("requests.hugepages-") || n.strip_prefix("requests.").is_some_and(is_extended)
}

/// An extended resource: domain-qualified, outside kubernetes.io.
fn is_extended(n: &str) -> bool {
    n.contains('/') && !n.contains("kubernetes.io/") && !n.starts_with("requests.")
}

/// `(class, what)` of a per-class claim resource name.
fn claim_class_resource(n: &str) -> Option<(&str, &str)> {
    let (class, what) = n.split_once(CLASS_SUFFIX)?;
    matches!(what, "requests.storage" | "persistentvolumeclaims").then_some((class, what))
}

/// What one object uses: its object counts, and what its kind adds.
pub fn usage(group: &str, plural: &str, obj: &Value, now: DateTime<Utc>) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert(object_count_name(group, plural), one());
    if !group.is_empty() {
        return out;
    }
    match plural {
        "pods" => {
            if pod_counts(obj, now) {
                out.extend(pod_compute_usage(&pod_resources(obj, "requests", true), &pod_resources(obj, "limits", true)));
            }
        }
        "services" => {
            out.insert("services".into(), one());
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i64;
            let (lbs, node_ports) = match obj["spec"]["type"].as_str() {
                Some("NodePort") => (0, ports),
                Some("LoadBalancer") if obj["spec"]["allocateLoadBalancerNodePorts"] == false => {
                    let with_port = obj["spec"]["ports"].as_array().into_iter().flatten().filter(|p| p["nodePort"].as_i64().unwrap_or(0) != 0);
                    (1, with_port.count() as i64)
                }
                Some("LoadBalancer") => (1, ports),
                _ => (0, 0),
            };
            out.insert("services.loadbalancers".into(), Quantity::new(lbs, Format::DecimalSI));
            out.insert("services.nodeports".into(), Quantity::new(node_ports, Format::DecimalSI));
        }
        "persistentvolumeclaims" => {
            out.insert("persistentvolumeclaims".into(), one());
            let class = claim_class(obj);
            if !class.is_empty() {
                out.insert(format!("{class}{CLASS_SUFFIX}persistentvolumeclaims"), one());
            }
            if let Some(storage) = claim_storage(obj) {
                if !class.is_empty() {
                    out.insert(format!("{class}{CLASS_SUFFIX}requests.storage"), storage.clone());
                }
                out.insert("requests.storage".into(), storage);
            }
        }
        p if LEGACY_COUNTS.contains(&p) => {
            out.insert(p.to_string(), one());
        }
        _ => {}
    }
    out
}

fn claim_class(claim: &Value) -> String {
    let beta = claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str();
    beta.or(claim["spec"]["storageClassName"].as_str()).unwrap_or("").to_string()
}

/// A claim's storage: the request, or what a resize already allocated if
/// larger (so shrinking the request back cannot free quota before the volume).
fn claim_storage(claim: &Value) -> Option<Quantity> {
    let requested = Quantity::from_json(&claim["spec"]["resources"]["requests"]["storage"]).ok();
    let allocated = Quantity::from_json(&claim["status"]["allocatedResources"]["storage"]).ok();
    match (requested, allocated) {
        (Some(r), Some(a)) if a > r => Some(a),
        (r, _) => r,
    }
}

/// Whether a pod still counts: finished pods, and pods past their deletion
/// grace, no longer hold quota.
pub fn pod_counts(pod: &Value, now: DateTime<Utc>) -> bool {
    if matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = pod["metadata"]["deletionTimestamp"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    match (deleted, pod["metadata"]["deletionGracePeriodSeconds"].as_i64()) {
        (Some(at), Some(grace)) => now <= at.with_timezone(&Utc) + chrono::Duration::seconds(grace),
        _ => true,
    }
}

/// The quota names a pod's (or a container's) requests and limits fill.
fn pod_compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), q.clone());
            out.insert(format!("requests.{r}"), q.clone());
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), q.clone());
        }
    }
    for (r, q) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), q.clone());
            out.insert(format!("requests.{r}"), q.clone());
        } else if is_extended(r) {
            out.insert(format!("requests.{r}"), q.clone());
        }
    }
    out
}

fn max_into(into: &mut ResourceList, other: &ResourceList) {
    for (k, q) in other {
        match into.get(k) {
            Some(have) if have >= q => {}
            _ => {
                into.insert(k.clone(), q.clone());
            }
        }
    }
}

/// A pod's effective requests or limits (`which`), as upstream computes
/// them: its containers summed, then the largest of that and each init
/// container (sidecars, restartable init containers, run alongside and add
/// up), plus the pod overhead when asked.
pub fn pod_resources(pod: &Value, which: &str, with_overhead: bool) -> ResourceList {
    let of = |c: &Value| list(&c["resources"][which]);
    let mut total = ResourceList::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        total = add(&total, &of(c));
    }
    let (mut sidecars, mut init) = (ResourceList::new(), ResourceList::new());
    for c in pod["spec"]["initContainers"].as_array().into_iter().flatten() {
        let this = if c["restartPolicy"] == "Always" {
            total = add(&total, &of(c));
            sidecars = add(&sidecars, &of(c));
            sidecars.clone()
        } else {
            add(&of(c), &sidecars)
        };
        max_into(&mut init, &this);
    }
    max_into(&mut total, &init);
    if with_overhead {
        for (k, q) in list(&pod["spec"]["overhead"]) {
            // Limits get the overhead only where a limit is set at all.
            if which == "requests" || total.contains_key(&k) {
                total.entry(k).or_default().add(&q);
            }
        }
    }
    total
}

/// No container asks for or limits cpu or memory.
pub fn best_effort(pod: &Value) -> bool {
    let containers = ["containers", "initContainers"].into_iter().flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default());
    containers.into_iter().all(|c| {
        ["requests", "limits"].iter().all(|w| ["cpu", "memory"].iter().all(|r| Quantity::from_json(&c["resources"][w][r]).map_or(true, |q| q.is_zero())))
    })
}

/// One scope condition of a quota: `spec.scopes` entries are `Exists`.
struct Selector {
    scope: String,
    operator: String,
    values: Vec<String>,
}

fn selectors(quota: &Value) -> Vec<Selector> {
    let spec = &quota["spec"];
    let strs = |v: &Value| v.as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect::<Vec<_>>();
    let mut out: Vec<Selector> = strs(&spec["scopes"]).into_iter().map(|scope| Selector { scope, operator: "Exists".into(), values: vec![] }).collect();
    for e in spec["scopeSelector"]["matchExpressions"].as_array().into_iter().flatten() {
        out.push(Selector {
            scope: e["scopeName"].as_str().unwrap_or("").into(),
            operator: e["operator"].as_str().unwrap_or("").into(),
            values: strs(&e["values"]),
        });
    }
    out
}

fn pod_matches(s: &Selector, pod: &Value) -> bool {
    let spec = &pod["spec"];
    match s.scope.as_str() {
        "Terminating" => spec["activeDeadlineSeconds"].as_i64().is_some_and(|d| d >= 0),
        "NotTerminating" => !spec["activeDeadlineSeconds"].as_i64().is_some_and(|d| d >= 0),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().unwrap_or("");
            match s.operator.as_str() {
                "In" => s.values.iter().any(|v| v == class),
                "NotIn" => !s.values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => false,
    }
}

/// A pod affinity or anti-affinity term reaching into other namespaces.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod["spec"]["affinity"];
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &affinity[kind];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"].as_array().cloned().unwrap_or_default();
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"].as_array().into_iter().flatten().map(|p| p["podAffinityTerm"].clone());
        required.into_iter().chain(preferred).any(|t| !t["namespaceSelector"].is_null() || t["namespaces"].as_array().is_some_and(|n| !n.is_empty()))
    })
}

/// Whether `quota` governs this object: it limits a resource the kind uses
/// and every scope matches (only pods have scopes; a scoped quota
/// governs nothing else).
pub fn matches(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let hard: Vec<String> = quota["status"]["hard"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    if matching_resources(group, plural, &hard).is_empty() {
        return false;
    }
    let is_pod = group.is_empty() && plural == "pods";
    selectors(quota).iter().all(|s| is_pod && pod_matches(s, obj))
}

/// Upstream's compatibility rule: when a quota tracks cpu or memory, every
/// container must state the matching request or limit. `Err` says which
/// are missing for which containers.
pub fn pod_constraints(required: &[String], pod: &Value) -> Result<(), String> {
    let required: Vec<&str> = required.iter().map(String::as_str).filter(|r| MUST_SPECIFY.contains(r)).collect();
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in ["containers", "initContainers"].iter().flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default()) {
        let has = pod_compute_usage(&list(&c["resources"]["requests"]), &list(&c["resources"]["limits"]));
        for r in required.iter().filter(|r| !has.contains_key(**r)) {
            missing.entry(r).or_default().push(c["name"].as_str().unwrap_or("").to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            names.dedup();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// What a quota's `status.used` should be from the objects it governs:
/// every hard resource, zero where nothing uses it.
pub fn used_by<'a>(quota: &Value, group: &str, plural: &str, objects: impl IntoIterator<Item = &'a Value>, now: DateTime<Utc>) -> ResourceList {
    let hard: Vec<String> = quota["spec"]["hard"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let names = matching_resources(group, plural, &hard);
    let mut total: ResourceList = names.iter().map(|n| (n.clone(), Quantity::default())).collect();
    if names.is_empty() {
        return total;
    }
    // Scopes are read from the quota itself: the controller computes usage
    // before `status.hard` is first set.
    let scoped = selectors(quota);
    let is_pod = group.is_empty() && plural == "pods";
    for obj in objects {
        if scoped.iter().all(|s| is_pod && pod_matches(s, obj)) {
            total = add(&total, &mask(&usage(group, plural, obj, now), &names));
        }
    }
    total
}
