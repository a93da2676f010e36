//! What the API server keeps true by itself: the built-in namespaces and the
//! `kubernetes` service exist, deleted namespaces are emptied and then
//! removed, and old store revisions are compacted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use resources::catalog::{lookup, CATALOG};
use serde_json::{json, Value};

use crate::registry::{Registry, WriteOptions};

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How long old revisions stay watchable before compaction removes them.
const COMPACT_EVERY: Duration = Duration::from_secs(300);
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

async fn ensure(reg: &Registry, group: &str, plural: &str, ns: Option<&str>, obj: Value) -> anyhow::Result<()> {
    let info = lookup(group, "v1", plural).expect("catalog kind");
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if reg.get(info, ns, &name).await.is_ok() {
        return Ok(());
    }
    match reg.create(info, ns, obj, &WriteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating {plural}/{name}: {}", e.message)),
    }
}

/// Creates the objects every cluster starts with.
pub async fn bootstrap(reg: &Registry, service_ip: &str, advertise_ip: &str, port: u16) -> anyhow::Result<()> {
    for ns in SYSTEM_NAMESPACES {
        ensure(reg, "", "namespaces", None, json!({"metadata": {"name": ns}})).await?;
    }
    if let Err(e) = ensure_api_services(reg).await {
        // Only discovery helpers read these; the API serves without them.
        tracing::warn!("registering the built-in APIServices: {e:#}");
    }
    for (name, value, what) in [
        ("system-node-critical", 2000001000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2000000000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        let pc = json!({"metadata": {"name": name}, "value": value, "description": what});
        ensure(reg, "scheduling.k8s.io", "priorityclasses", None, pc).await?;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(reg, "", "services", Some("default"), json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    }))
    .await?;
    if advertise_ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        // Endpoints may not point at loopback; a host without a route has no endpoint to publish.
        return Ok(());
    }
    ensure(reg, "", "endpoints", Some("default"), json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }))
    .await?;
    ensure(reg, "discovery.k8s.io", "endpointslices", Some("default"), json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [advertise_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }))
    .await
}

/// An APIService per served group version (`v1.`, `v1.apps`, ...), as
/// upstream's autoregistration keeps them, so clients that read
/// apiregistration.k8s.io see which APIs are local and available.
async fn ensure_api_services(reg: &Registry) -> anyhow::Result<()> {
    for (group, versions) in crate::discovery::group_versions() {
        if group == "apiregistration.k8s.io" {
            continue; // upstream registers no APIService for the registry itself
        }
        let (group_min, version_priority) = crate::discovery::priority(group);
        for (i, version) in versions.iter().enumerate() {
            // The preferred (first) version ranks highest: autoscaling v2 30, v1 15.
            let version_priority = version_priority * (versions.len() - i) as i64;
            ensure(reg, "apiregistration.k8s.io", "apiservices", None, json!({
                "metadata": {"name": format!("{version}.{group}"), "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": group_min, "versionPriority": version_priority},
            }))
            .await?;
        }
    }
    Ok(())
}

/// The Service pods reach cluster DNS through: selector-less, since each
/// node agent answers DNS itself and publishes its own EndpointSlice
/// (`kube-dns-<node>`); `internalTrafficPolicy: Local` keeps every query on
/// the node it was asked on.
pub async fn ensure_cluster_dns_service(reg: &Registry, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "KubeDNS"});
    ensure(reg, "", "services", Some("kube-system"), json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ]},
    }))
    .await
}

/// Empties namespaces that are being deleted, then removes them.
pub async fn run_namespace_cleanup(reg: Arc<Registry>) {
    let ns_info = lookup("", "v1", "namespaces").unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let terminating: Vec<String> = reg
            .cache
            .prefix(ns_info.storage)
            .snapshot("/registry/namespaces/")
            .iter()
            .filter(|c| c.obj()["metadata"]["deletionTimestamp"].is_string())
            .map(|c| c.name().to_string())
            .collect();
        for ns in terminating {
            if let Err(e) = empty_namespace(&reg, &ns).await {
                tracing::warn!(namespace = %ns, "namespace cleanup: {e}");
            }
        }
    }
}

async fn empty_namespace(reg: &Registry, ns: &str) -> anyhow::Result<()> {
    let ns_info = lookup("", "v1", "namespaces").unwrap();
    let mut remaining = 0;
    let mut seen = HashSet::new();
    for info in CATALOG.iter().filter(|r| r.namespaced && seen.insert(r.storage)) {
        let prefix = format!("/registry/{}/{}/", info.storage, ns);
        for c in reg.cache.prefix(info.storage).snapshot(&prefix) {
            remaining += 1;
            if c.obj()["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let name = c.name();
            if let Err(e) = reg.delete(info, Some(ns), name, &json!({}), None, &WriteOptions::default()).await {
                if e.code != 404 {
                    anyhow::bail!("deleting {}/{name}: {}", info.plural, e.message);
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    // Empty: drop the `kubernetes` finalizer, which lets the delete complete.
    let opts = WriteOptions::default();
    let finalize = reg
        .update(ns_info, None, ns, None, &opts, |cur| {
            let mut next = cur.clone();
            next["spec"]["finalizers"] = json!([]);
            Ok(next)
        })
        .await;
    match finalize {
        Ok(_) => {}
        Err(e) if e.code == 404 => return Ok(()),
        Err(e) => anyhow::bail!("finalizing: {}", e.message),
    }
    match reg.delete(ns_info, None, ns, &json!({}), None, &opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => anyhow::bail!("removing: {}", e.message),
    }
}

/// Deletes Events not seen for `ttl` (upstream keeps them with an etcd lease
/// renewed by each write, one hour by default), so a busy cluster's events
/// do not grow without bound.
pub async fn run_event_expiry(reg: Arc<Registry>, ttl: Duration) {
    let info = lookup("", "v1", "events").unwrap();
    loop {
        tokio::time::sleep(EXPIRE_EVERY.min(ttl)).await;
        let Ok(ttl) = chrono::Duration::from_std(ttl) else { return };
        let cutoff = chrono::Utc::now() - ttl;
        for c in reg.cache.all(info.storage) {
            if last_seen(c.json()).is_some_and(|t| t < cutoff) {
                // Guarded by the revision read: an event bumped meanwhile stays.
                if let Err(e) = reg.store.delete(&c.key, Some(c.rev)).await {
                    tracing::debug!(key = c.key, "expiring event: {e}");
                }
            }
        }
    }
}

/// When an event was last seen: the newest of its timestamps.
fn last_seen(json: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Times {
        last_timestamp: Option<String>,
        event_time: Option<String>,
        series: Option<Series>,
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Series {
        last_observed_time: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        creation_timestamp: Option<String>,
    }
    let t: Times = serde_json::from_slice(json).ok()?;
    [t.last_timestamp, t.event_time, t.series.and_then(|s| s.last_observed_time), t.metadata.creation_timestamp]
        .into_iter()
        .flatten()
        .filter_map(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .max()
}

/// Compacts the store every few minutes, keeping the last interval's history.
pub async fn run_compaction(reg: Arc<Registry>) {
    let mut previous = None;
    loop {
        tokio::time::sleep(COMPACT_EVERY).await;
        let current = match reg.store.current_revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("compaction: {e}");
                continue;
            }
        };
        if let Some(rev) = previous {
            if let Err(e) = reg.store.compact(rev).await {
                tracing::warn!("compaction at {rev}: {e}");
            }
        }
        previous = Some(current);
    }
}
