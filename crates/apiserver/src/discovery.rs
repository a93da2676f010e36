//! API discovery, built from the catalog: `/api`, `/apis`, the per-group and
//! per-version documents, and the aggregated apidiscovery.k8s.io/v2 form
//! that kubectl asks for first.

use http::HeaderMap;
use resources::catalog::{ResourceInfo, CATALOG};
use serde_json::{json, Value};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// True when the client accepts the aggregated form (and asks for it before plain JSON).
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("g=apidiscovery.k8s.io") && first.contains("v=v2") && first.contains("as=APIGroupDiscoveryList"))
}

pub fn aggregated_content_type() -> &'static str {
    AGGREGATED
}

fn resources_of<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    CATALOG.iter().filter(move |r| r.group == group && r.version == version)
}

/// A read-only resource served by a handler of its own rather than the
/// generic registry: upstream serves these through the aggregation layer
/// (metrics-server's metrics.k8s.io).
pub struct Apart {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub const APART: &[Apart] = &[
    Apart { group: "metrics.k8s.io", version: "v1beta1", plural: "nodes", kind: "NodeMetrics", namespaced: false },
    Apart { group: "metrics.k8s.io", version: "v1beta1", plural: "pods", kind: "PodMetrics", namespaced: true },
];
const APART_VERBS: &[&str] = &["get", "list"];

/// Every served group with its versions (preferred first): the catalog's and
/// those served apart, in upstream's order: the aggregator's own group, then
/// by priority (highest first), then by name.
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out = resources::catalog::group_versions();
    for a in APART {
        match out.iter_mut().find(|(g, _)| *g == a.group) {
            Some((_, vs)) if !vs.contains(&a.version) => vs.push(a.version),
            Some(_) => {}
            None => out.push((a.group, vec![a.version])),
        }
    }
    out.sort_by_key(|(g, _)| (*g != "apiregistration.k8s.io", std::cmp::Reverse(priority(g).0), *g));
    out
}

/// Upstream's group priorities (groupPriorityMinimum, versionPriority).
pub fn priority(group: &str) -> (i64, i64) {
    match group {
        "" => (18000, 1),
        "apps" => (17800, 15),
        "events.k8s.io" => (17750, 15),
        "authentication.k8s.io" => (17700, 15),
        "authorization.k8s.io" => (17600, 15),
        "autoscaling" => (17500, 15),
        "batch" => (17400, 15),
        "certificates.k8s.io" => (17300, 15),
        "networking.k8s.io" => (17200, 15),
        "policy" => (17100, 15),
        "rbac.authorization.k8s.io" => (17000, 15),
        "storage.k8s.io" => (16800, 15),
        "admissionregistration.k8s.io" | "apiextensions.k8s.io" => (16700, 15),
        "scheduling.k8s.io" => (16600, 15),
        "coordination.k8s.io" => (16500, 15),
        "node.k8s.io" => (16300, 15),
        "discovery.k8s.io" => (16200, 15),
        "flowcontrol.apiserver.k8s.io" => (16100, 21),
        // What metrics-server's APIService asks for.
        "metrics.k8s.io" => (100, 100),
        _ => (15000, 15),
    }
}


fn apart_of<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Apart> + 'a {
    APART.iter().filter(move |a| a.group == group && a.version == version)
}

/// Subresources served beyond status, scale and finalize: (group, plural,
/// subresource, (group, version, kind) answered, verbs), as upstream lists them.
const SUBRESOURCES: &[(&str, &str, &str, (&str, &str, &str), &[&str])] = &[
    ("", "pods", "attach", ("", "v1", "PodAttachOptions"), &["create", "get"]),
    // kubectl drain looks for pods/eviction (policy/v1 Eviction) before it evicts rather than deletes.
    ("", "pods", "binding", ("", "v1", "Binding"), &["create"]),
    ("", "pods", "ephemeralcontainers", ("", "v1", "Pod"), &["get", "patch", "update"]),
    ("", "pods", "eviction", ("policy", "v1", "Eviction"), &["create"]),
    ("", "pods", "exec", ("", "v1", "PodExecOptions"), &["create", "get"]),
    ("", "pods", "log", ("", "v1", "Pod"), &["get"]),
    ("", "pods", "portforward", ("", "v1", "PodPortForwardOptions"), &["create", "get"]),
    ("", "pods", "proxy", ("", "v1", "PodProxyOptions"), PROXY_VERBS),
    ("", "pods", "resize", ("", "v1", "Pod"), &["get", "patch", "update"]),
    ("", "serviceaccounts", "token", ("authentication.k8s.io", "v1", "TokenRequest"), &["create"]),
    ("", "services", "proxy", ("", "v1", "ServiceProxyOptions"), PROXY_VERBS),
    ("", "nodes", "proxy", ("", "v1", "NodeProxyOptions"), PROXY_VERBS),
];
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

/// A kind's subresources in name order: (name, response kind, verbs).
fn subresources(r: &ResourceInfo) -> Vec<(&'static str, Value, Value)> {
    let mut out = Vec::new();
    let kind = |g: &str, v: &str, k: &str| json!({"group": g, "version": v, "kind": k});
    if r.status {
        out.push(("status", kind(r.group, r.version, r.kind), json!(["get", "patch", "update"])));
    }
    if r.scale.is_some() {
        out.push(("scale", kind("autoscaling", "v1", "Scale"), json!(["get", "patch", "update"])));
    }
    if r.kind == "Namespace" {
        out.push(("finalize", kind("", "v1", "Namespace"), json!(["update"])));
    }
    for (group, plural, sub, (g, v, k), verbs) in SUBRESOURCES {
        if *group == r.group && *plural == r.plural {
            out.push((sub, kind(g, v, k), json!(verbs)));
        }
    }
    out.sort_by_key(|(name, _, _)| *name);
    out
}

/// `/api/v1` or `/apis/GROUP/VERSION`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut items = Vec::new();
    for r in resources_of(group, version) {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        items.push(e);
        for (sub, kind, verbs) in subresources(r) {
            let mut s = json!({"name": format!("{}/{}", r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                "kind": kind["kind"], "verbs": verbs});
            if kind["group"] != r.group {
                s["group"] = kind["group"].clone();
                s["version"] = kind["version"].clone();
            }
            items.push(s);
        }
    }
    for a in apart_of(group, version) {
        items.push(json!({"name": a.plural, "singularName": "", "namespaced": a.namespaced, "kind": a.kind, "verbs": APART_VERBS}));
    }
    if items.is_empty() {
        return None;
    }
    // Upstream installs (and so lists) a group version's paths sorted by name.
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}))
}

pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_entry(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group(name: &str) -> Option<Value> {
    let gvs = group_versions();
    let (_, versions) = gvs.iter().find(|(g, _)| !g.is_empty() && *g == name)?;
    let mut v = group_entry(name, versions);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

pub fn group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut resources: Vec<Value> = resources_of(group, v)
                .map(|r| {
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    let subs: Vec<Value> = subresources(r)
                        .into_iter()
                        .map(|(s, kind, verbs)| json!({"subresource": s, "responseKind": kind, "verbs": verbs}))
                        .collect();
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .chain(apart_of(group, v).map(|a| {
                    json!({"resource": a.plural, "responseKind": {"group": a.group, "version": a.version, "kind": a.kind},
                        "scope": if a.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": "", "verbs": APART_VERBS})
                }))
                .collect();
            resources.sort_by(|a, b| a["resource"].as_str().cmp(&b["resource"].as_str()));
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let meta = if group.is_empty() { json!({"creationTimestamp": null}) } else { json!({"name": group, "creationTimestamp": null}) };
    json!({"metadata": meta, "versions": versions})
}

/// Aggregated discovery for `/api` (legacy = true) or `/apis`.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = group_versions()
        .iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .map(|(g, vs)| aggregated_group(g, vs))
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_pods_with_status_and_short_names() {
        let l = resource_list("", "v1").unwrap();
        let pods = l["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(l["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/status"));
        assert!(resource_list("apps", "v9").is_none());
    }

    #[test]
    fn metrics_group_is_listed_with_read_only_resources() {
        assert_eq!(group("metrics.k8s.io").unwrap()["preferredVersion"]["groupVersion"], "metrics.k8s.io/v1beta1");
        let l = resource_list("metrics.k8s.io", "v1beta1").unwrap();
        let pods = l["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["kind"], "PodMetrics");
        assert_eq!(pods["verbs"], json!(["get", "list"]));
        assert!(group_list()["groups"].as_array().unwrap().iter().any(|g| g["name"] == "metrics.k8s.io"));
    }

    #[test]
    fn aggregated_lists_every_group() {
        let a = aggregated(false);
        let names: Vec<&str> = a["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"apps") && names.contains(&"rbac.authorization.k8s.io") && names.contains(&"metrics.k8s.io"));
        let apps = a["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "apps").unwrap();
        let deployments = apps["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "deployments").unwrap();
        let scale = deployments["subresources"].as_array().unwrap();
        assert!(scale.iter().any(|s| s["subresource"] == "scale"));
    }

    #[test]
    fn groups_come_in_upstreams_priority_order() {
        let list = group_list();
        let names: Vec<&str> = list["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(&names[..3], ["apiregistration.k8s.io", "apps", "events.k8s.io"]);
        assert_eq!(names.last(), Some(&"metrics.k8s.io"));
        let core = resource_list("", "v1").unwrap();
        let core: Vec<&str> = core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(&core[..4], ["bindings", "componentstatuses", "configmaps", "endpoints"]);
        let at = |r: &str| core.iter().position(|n| *n == r).unwrap();
        assert!(at("pods") < at("pods/attach") && at("pods/status") < at("podtemplates"));
        let at = |g: &str| names.iter().position(|n| *n == g).unwrap();
        assert!(at("autoscaling") < at("batch") && at("storage.k8s.io") < at("scheduling.k8s.io") && at("node.k8s.io") < at("discovery.k8s.io"));
    }
}
