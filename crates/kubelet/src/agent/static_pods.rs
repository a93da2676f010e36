//! Static pods from manifest files in `pod_manifest_path`, run by the agent
//! itself, as upstream's kubelet does: each manifest becomes a Pod
//! `<name>-<node>` whose UID is the hash of the file, handed straight to
//! the pod workers. They run without the API server (at agent start too,
//! when the node's podCIDR was saved by an earlier start).
//!
//! For the API each one has a mirror pod: a copy with the
//! `kubernetes.io/config.mirror` annotation that the worker writes the
//! status to. A mirror pod that is deleted, or whose hash no longer matches
//! a manifest, is removed and created again; the static pod keeps running.
//! A changed manifest is a new pod (new hash): the old one stops, the new
//! one starts. A removed manifest stops its pod.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::Agent;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// How often the manifest directory is read again, as the kubelet's fileCheckFrequency (20 s) but shorter.
const RESCAN: Duration = Duration::from_secs(5);
/// How soon after deleting a mirror pod it is made again.
const MIRROR_RECREATE: Duration = Duration::from_secs(1);

/// Whether a pod is a static pod of this agent (not a mirror pod from the API).
pub fn is_static(pod: &Pod) -> bool {
    let a = pod.metadata.annotations.as_ref();
    a.is_some_and(|a| a.get(SOURCE_ANNOTATION).is_some_and(|s| s == "file") && !a.contains_key(MIRROR_ANNOTATION))
}

/// Whether a pod from the API is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    mirror_hash(pod).is_some()
}

/// The static pods the manifests in `dir` ask for, sorted by name.
pub fn manifests(dir: &Path, node: &str) -> Vec<Pod> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(ext, "yaml" | "yml" | "json") || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let pod: Value = match serde_yaml::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(file = %path.display(), "static pod manifest: {e}");
                continue;
            }
        };
        if pod["kind"] != "Pod" || !pod["metadata"]["name"].is_string() {
            tracing::warn!(file = %path.display(), "static pod manifest is not a named Pod");
            continue;
        }
        let hash = format!("{:032x}", crate::sim_node::fnv(&format!("{node}\n{text}")));
        match serde_json::from_value::<Pod>(static_pod(pod, node, &hash)) {
            Ok(p) => out.push(p),
            Err(e) => tracing::warn!(file = %path.display(), "static pod manifest: {e}"),
        }
    }
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.dedup_by(|a, b| a.metadata.name == b.metadata.name && a.metadata.namespace == b.metadata.namespace);
    out
}

/// The static pod for a manifest: named after the node, bound to it, its
/// UID the hash, with the API server's pod defaults applied.
pub fn static_pod(mut pod: Value, node: &str, hash: &str) -> Value {
    let name = format!("{}-{node}", pod["metadata"]["name"].as_str().unwrap_or_default());
    pod["metadata"]["name"] = json!(name);
    if !pod["metadata"]["namespace"].is_string() {
        pod["metadata"]["namespace"] = json!("default");
    }
    if let Some(m) = pod["metadata"].as_object_mut() {
        for k in ["resourceVersion", "creationTimestamp", "generateName", "deletionTimestamp"] {
            m.remove(k);
        }
    }
    pod["metadata"]["uid"] = json!(hash);
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][HASH_ANNOTATION] = json!(hash);
    pod["metadata"]["annotations"][SOURCE_ANNOTATION] = json!("file");
    pod["spec"]["nodeName"] = json!(node);
    // Static pods stay on their node whatever its taints say.
    let mut tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.push(json!({"operator": "Exists", "effect": "NoExecute"}));
    pod["spec"]["tolerations"] = json!(tolerations);
    if let Some(s) = pod.as_object_mut() {
        s.remove("status");
    }
    resources::defaults::apply("", "Pod", &mut pod);
    pod
}

/// The mirror pod of a static pod: the same object, annotated, for the API to give a UID.
pub fn mirror_pod(pod: &Pod) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    m.status = None;
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    m.metadata.annotations.get_or_insert_with(Default::default).insert(MIRROR_ANNOTATION.into(), hash);
    m
}

/// The mirror annotation's value (the static pod's hash).
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(MIRROR_ANNOTATION).map(String::as_str)
}

/// Sends the manifests' pods to the pod manager whenever they change, and
/// keeps one mirror pod per static pod in the API. `kick` wakes it early
/// (a mirror pod was deleted).
pub(crate) async fn run(agent: Arc<Agent>, mut sent: Vec<Pod>, to_manager: UnboundedSender<Vec<Pod>>) {
    let Some(dir) = agent.config.pod_manifest_path.clone() else { return };
    let node = agent.config.node_name.clone();
    tracing::info!(dir = %dir.display(), "watching static pod manifests");
    loop {
        let wanted = manifests(&dir, &node);
        if wanted != sent {
            if to_manager.send(wanted.clone()).is_err() {
                return;
            }
            sent = wanted;
        }
        let next = match sync_mirrors(&agent, &sent).await {
            Ok(true) => MIRROR_RECREATE,
            Ok(false) => RESCAN,
            Err(e) => {
                tracing::debug!("keeping mirror pods: {e}");
                RESCAN
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = agent.static_kick.notified() => {}
        }
    }
}

/// Deletes mirror pods of no current static pod (or being deleted) and
/// creates the missing ones; true when it deleted one. A deleted mirror is
/// made again only on the next pass, so that a client waiting for the
/// deletion (`kubectl delete`) sees it before the new one appears.
async fn sync_mirrors(agent: &Agent, statics: &[Pod]) -> Result<bool, kube::Error> {
    let node = &agent.config.node_name;
    let api: Api<Pod> = Api::all(agent.client.clone());
    let list = api.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
    let key_of = |p: &Pod| (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default());
    let wanted: HashMap<_, &Pod> = statics.iter().map(|p| (key_of(p), p)).collect();
    // Names with a mirror pod that stays, or that was just deleted.
    let mut leave = HashSet::new();
    let mut deleted = false;
    for m in list.items.iter().filter(|p| is_mirror(p)) {
        let key = key_of(m);
        let current = wanted.get(&key).is_some_and(|p| p.metadata.uid.as_deref() == mirror_hash(m));
        leave.insert(key.clone());
        if current && m.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let why = if current { "it is being deleted" } else { "its static pod is gone or changed" };
        tracing::info!(pod = format!("{}/{}", key.0, key.1), "removing the mirror pod: {why}");
        let dp = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: m.metadata.uid.clone(), resource_version: None }), ..Default::default() };
        match Api::<Pod>::namespaced(agent.client.clone(), &key.0).delete(&key.1, &dp).await {
            Ok(_) => deleted = true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for (key, pod) in wanted.iter().filter(|(k, _)| !leave.contains(*k)) {
        match Api::<Pod>::namespaced(agent.client.clone(), &key.0).create(&PostParams::default(), &mirror_pod(pod)).await {
            Ok(_) => tracing::info!(pod = format!("{}/{}", key.0, key.1), "created mirror pod for static pod"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(kube::Error::Api(e)) => tracing::warn!(pod = format!("{}/{}", key.0, key.1), "creating mirror pod: {}", e.message),
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_pods_from_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox\n").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(tmp.path().join("bad.yaml"), "kind: Service\n").unwrap();
        let m = manifests(tmp.path(), "node1");
        assert_eq!(m.len(), 1);
        let pod = &m[0];
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert!(is_static(pod) && !is_mirror(pod));
        let hash = pod.metadata.uid.clone().unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        // The API server's defaults, as a pod created through it would have.
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));

        let mirror = mirror_pod(pod);
        assert!(is_mirror(&mirror) && !is_static(&mirror));
        assert_eq!(mirror_hash(&mirror), Some(hash.as_str()));
        assert_eq!(mirror.metadata.uid, None);

        // The hash (the pod's UID) follows the content.
        std::fs::write(tmp.path().join("web.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n").unwrap();
        let m2 = manifests(tmp.path(), "node1");
        assert_ne!(m2[0].metadata.uid.as_deref(), Some(hash.as_str()));
        assert_eq!(m2[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m2[0].spec.as_ref().unwrap().containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
    }
}
