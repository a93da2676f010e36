//! Static pods from manifest files in `pod_manifest_path`, run through
//! mirror pods: each manifest becomes a Pod `<name>-<node>` bound to this
//! node with the `kubernetes.io/config.mirror` annotation, which the pod
//! workers then run like any other pod. A changed manifest replaces its
//! mirror pod; a removed one deletes it.
//!
//! Unlike upstream, a static pod runs only while the API server is
//! reachable, and deleting its mirror pod restarts it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use super::Agent;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
const RESCAN: Duration = Duration::from_secs(5);

/// The mirror pods the manifests in `dir` ask for, by name, with their hash.
pub fn manifests(dir: &Path, node: &str) -> HashMap<String, (String, Value)> {
    let mut out = HashMap::new();
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
        let mirror = mirror_pod(pod, node, &hash);
        let name = mirror["metadata"]["name"].as_str().unwrap_or_default().to_string();
        out.insert(name, (hash, mirror));
    }
    out
}

/// The mirror pod object for a manifest.
pub fn mirror_pod(mut pod: Value, node: &str, hash: &str) -> Value {
    let name = format!("{}-{node}", pod["metadata"]["name"].as_str().unwrap_or_default());
    pod["metadata"]["name"] = json!(name);
    if !pod["metadata"]["namespace"].is_string() {
        pod["metadata"]["namespace"] = json!("default");
    }
    for k in ["uid", "resourceVersion", "creationTimestamp", "generateName"] {
        if let Some(m) = pod["metadata"].as_object_mut() {
            m.remove(k);
        }
    }
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][MIRROR_ANNOTATION] = json!(hash);
    pod["metadata"]["annotations"][HASH_ANNOTATION] = json!(hash);
    pod["metadata"]["annotations"][SOURCE_ANNOTATION] = json!("file");
    pod["spec"]["nodeName"] = json!(node);
    // Static pods stay on their node whatever its taints say.
    let tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    let mut tolerations = tolerations;
    tolerations.push(json!({"operator": "Exists", "effect": "NoExecute"}));
    pod["spec"]["tolerations"] = json!(tolerations);
    if let Some(s) = pod.as_object_mut() {
        s.remove("status");
    }
    pod
}

pub(crate) async fn run(agent: Arc<Agent>) {
    let Some(dir) = agent.config.pod_manifest_path.clone() else { return };
    let node = agent.config.node_name.clone();
    tracing::info!(dir = %dir.display(), "watching static pod manifests");
    let api: Api<Pod> = Api::all(agent.client.clone());
    loop {
        let wanted = manifests(&dir, &node);
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        match api.list(&lp).await {
            Ok(list) => {
                let mirrors: HashMap<String, Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)))
                    .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
                    .collect();
                for (name, pod) in &mirrors {
                    let hash = pod.metadata.annotations.as_ref().and_then(|a| a.get(MIRROR_ANNOTATION)).cloned().unwrap_or_default();
                    let keep = wanted.get(name).is_some_and(|(h, _)| *h == hash);
                    if !keep && pod.metadata.deletion_timestamp.is_none() {
                        tracing::info!(pod = name, "static pod manifest changed or removed; deleting its mirror pod");
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let _ = Api::<Pod>::namespaced(agent.client.clone(), &ns).delete(name, &DeleteParams::default()).await;
                    }
                }
                for (name, (_, mirror)) in &wanted {
                    if mirrors.contains_key(name) {
                        continue;
                    }
                    let ns = mirror["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
                    match serde_json::from_value::<Pod>(mirror.clone()) {
                        Ok(p) => match Api::<Pod>::namespaced(agent.client.clone(), &ns).create(&PostParams::default(), &p).await {
                            Ok(_) => tracing::info!(pod = name, ns, "created mirror pod for static pod"),
                            Err(kube::Error::Api(e)) if e.code == 409 => {}
                            Err(e) => tracing::warn!(pod = name, ns, "creating mirror pod: {e}"),
                        },
                        Err(e) => tracing::warn!(pod = name, "static pod manifest: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("listing this node's pods for static pods: {e}"),
        }
        tokio::time::sleep(RESCAN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_pods_from_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox\n").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(tmp.path().join("bad.yaml"), "kind: Service\n").unwrap();
        let m = manifests(tmp.path(), "node1");
        assert_eq!(m.len(), 1);
        let (hash, pod) = &m["web-node1"];
        assert_eq!(pod["metadata"]["namespace"], "kube-system");
        assert_eq!(pod["metadata"]["annotations"][MIRROR_ANNOTATION], json!(hash));
        assert_eq!(pod["spec"]["nodeName"], "node1");
        let _: Pod = serde_json::from_value(pod.clone()).unwrap();
        // The hash follows the content.
        std::fs::write(tmp.path().join("web.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n").unwrap();
        let m2 = manifests(tmp.path(), "node1");
        assert_ne!(&m2["web-node1"].0, hash);
        assert_eq!(m2["web-node1"].1["metadata"]["namespace"], "default");
    }
}
