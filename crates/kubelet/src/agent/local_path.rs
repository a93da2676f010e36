//! The node's half of local-path storage (the provisioner is in the
//! controllers): a released local-path volume of this node whose
//! reclaimPolicy is Delete has its directory removed here, then the
//! PersistentVolume itself, as rancher's provisioner does with a helper pod.

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use resources::local_path::{removable, PROVISIONED_BY, PROVISIONER};

/// The directory of a local-path volume pinned to `node`, if `pv` is one.
pub fn own_volume_dir(pv: &PersistentVolume, node: &str) -> Option<String> {
    if pv.annotations().get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER) {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let terms = &spec.node_affinity.as_ref()?.required.as_ref()?.node_selector_terms;
    let pinned_here = terms.iter().flat_map(|t| t.match_expressions.iter().flatten()).any(|e| e.values.iter().flatten().any(|v| v == node));
    pinned_here.then(|| spec.host_path.as_ref().map(|h| h.path.clone())).flatten()
}

fn released_for_deletion(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    phase == Some("Released") && policy == Some("Delete") && pv.metadata.deletion_timestamp.is_none()
}

pub(crate) async fn run(client: Client, node: String) {
    let api: Api<PersistentVolume> = Api::all(client);
    let mut stream = watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(pv) = stream.next().await {
        let Ok(pv) = pv else { continue };
        let Some(dir) = own_volume_dir(&pv, &node).filter(|_| released_for_deletion(&pv)) else { continue };
        if !removable(&dir) {
            tracing::warn!(volume = pv.name_any(), dir, "not removing a local-path volume directory with an unexpected path");
            continue;
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => tracing::info!(volume = pv.name_any(), dir, "removed the released local-path volume's directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(volume = pv.name_any(), dir, "removing a released local-path volume: {e}");
                continue;
            }
        }
        if let Err(e) = api.delete(&pv.name_any(), &DeleteParams::default()).await {
            tracing::warn!(volume = pv.name_any(), "deleting the released local-path volume: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(annotated: bool, node: &str, phase: &str, policy: &str) -> PersistentVolume {
        let annotations = if annotated { json!({PROVISIONED_BY: PROVISIONER}) } else { json!({}) };
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "annotations": annotations},
            "spec": {"hostPath": {"path": "/srv/storage/pvc-1_ns_data"}, "persistentVolumeReclaimPolicy": policy,
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn only_this_nodes_released_local_path_volumes_are_removed() {
        let ours = pv(true, "n1", "Released", "Delete");
        assert_eq!(own_volume_dir(&ours, "n1").as_deref(), Some("/srv/storage/pvc-1_ns_data"));
        assert!(released_for_deletion(&ours));
        assert_eq!(own_volume_dir(&ours, "n2"), None);
        assert_eq!(own_volume_dir(&pv(false, "n1", "Released", "Delete"), "n1"), None);
        assert!(!released_for_deletion(&pv(true, "n1", "Bound", "Delete")));
        assert!(!released_for_deletion(&pv(true, "n1", "Released", "Retain")));
    }
}
