//! The built-in local-path provisioner, in the way of rancher's
//! local-path-provisioner that k3s ships: the default StorageClass
//! `local-path` (WaitForFirstConsumer, reclaimPolicy Delete), and for each
//! of its claims, once the scheduler has named the node of the claim's
//! first pod, a hostPath volume `ROOT/pvc-<uid>_<ns>_<name>` pinned to that
//! node and pre-bound to the claim. The node agent makes the directory when
//! a pod mounts it and removes it when the released volume's policy is
//! Delete (kubelet/src/agent/local_path.rs).

use std::path::Path;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use client::eventlog::{record, reference};
use client::informer::benign;
pub use resources::local_path::{CLASS, PROVISIONED_BY, PROVISIONER, SELECTED_NODE};

const COMPONENT: &str = "rancher.io/local-path_skiff";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// Creates the default class unless a class of that name exists (an
/// operator's edits, such as dropping the default annotation, are kept).
pub async fn ensure_class(client: &Client) {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .expect("the local-path class is a StorageClass");
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => tracing::info!(class = CLASS, "created the default StorageClass"),
        Err(e) if benign(&e) => {}
        Err(e) => tracing::warn!(class = CLASS, "creating the default StorageClass: {e}"),
    }
}

/// The volume for `claim` on `node`, or why this provisioner cannot make one.
pub fn volume_for(claim: &PersistentVolumeClaim, class: &StorageClass, node: &Node, root: &Path) -> Result<PersistentVolume, String> {
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err("local-path volumes are directories: volumeMode Block is not supported".into());
    }
    let modes = spec.access_modes.clone().unwrap_or_default();
    if let Some(m) = modes.iter().find(|m| !matches!(m.as_str(), "ReadWriteOnce" | "ReadWriteOncePod")) {
        return Err(format!("local-path volumes live on one node: access mode {m} is not supported (only ReadWriteOnce and ReadWriteOncePod)"));
    }
    let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).ok_or("the claim requests no storage size")?;
    let (ns, name, uid) = (claim.namespace().unwrap_or_default(), claim.name_any(), claim.uid().unwrap_or_default());
    let node_name = node.name_any();
    let hostname = node.labels().get(HOSTNAME).cloned().unwrap_or_else(|| node_name.clone());
    let path = root.join(resources::local_path::volume_dir_name(&uid, &ns, &name));
    serde_json::from_value(json!({
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {PROVISIONED_BY: PROVISIONER, "local.path.provisioner/selected-node": node_name}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "volumeMode": "Filesystem",
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid, "resourceVersion": claim.resource_version()},
        },
    }))
    .map_err(|e| e.to_string())
}

/// Makes the volume of a claim whose node is chosen; events as upstream's
/// external provisioners record them. False when worth trying again (the
/// API failed); a refusal is final and reported on the claim.
pub async fn provision(client: &Client, claim: &PersistentVolumeClaim, class: &StorageClass, root: &Path) -> bool {
    let Some(node_name) = claim.annotations().get(SELECTED_NODE).cloned() else { return true };
    let key = format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any());
    record(client, COMPONENT, reference(claim), "Normal", "Provisioning", format!("External provisioner is provisioning volume for claim \"{key}\"")).await;
    let node = match Api::<Node>::all(client.clone()).get_opt(&node_name).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            let msg = format!("failed to provision volume with StorageClass \"{}\": node \"{node_name}\" not found", class.name_any());
            record(client, COMPONENT, reference(claim), "Warning", "ProvisioningFailed", msg).await;
            return true;
        }
        Err(e) => {
            tracing::warn!(claim = key, "reading node {node_name}: {e}");
            return false;
        }
    };
    let pv = match volume_for(claim, class, &node, root) {
        Ok(pv) => pv,
        Err(why) => {
            let msg = format!("failed to provision volume with StorageClass \"{}\": {why}", class.name_any());
            record(client, COMPONENT, reference(claim), "Warning", "ProvisioningFailed", msg).await;
            return true;
        }
    };
    let pv_name = pv.name_any();
    match Api::<PersistentVolume>::all(client.clone()).create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = key, volume = pv_name, node = node_name, "provisioned a local-path volume");
            record(client, COMPONENT, reference(claim), "Normal", "ProvisioningSucceeded", format!("Successfully provisioned volume {pv_name}")).await;
            true
        }
        Err(e) if benign(&e) => true,
        Err(e) => {
            tracing::warn!(claim = key, "creating volume {pv_name}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(modes: &[&str], mode: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "db", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"accessModes": modes, "volumeMode": mode, "storageClassName": CLASS, "resources": {"requests": {"storage": "1Gi"}}}})).unwrap()
    }

    fn class(reclaim: Option<&str>) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": CLASS}, "provisioner": PROVISIONER, "reclaimPolicy": reclaim})).unwrap()
    }

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {HOSTNAME: "host-1"}}})).unwrap()
    }

    #[test]
    fn a_volume_is_pinned_to_the_node_and_pre_bound_to_the_claim() {
        let pv = volume_for(&claim(&["ReadWriteOnce"], None), &class(Some("Retain")), &node(), Path::new("/srv/storage")).unwrap();
        let v = serde_json::to_value(&pv).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-u-1");
        assert_eq!(v["metadata"]["annotations"][PROVISIONED_BY], PROVISIONER);
        assert_eq!(v["spec"]["hostPath"], json!({"path": "/srv/storage/pvc-u-1_db_data", "type": "DirectoryOrCreate"}));
        assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"], json!(["host-1"]));
        assert_eq!(v["spec"]["claimRef"]["uid"], "u-1");
        assert_eq!(v["spec"]["claimRef"]["namespace"], "db");
        let pv = volume_for(&claim(&["ReadWriteOncePod"], Some("Filesystem")), &class(None), &node(), Path::new("/s")).unwrap();
        assert_eq!(pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    }

    #[test]
    fn shared_and_block_claims_are_refused() {
        let err = volume_for(&claim(&["ReadWriteMany"], None), &class(None), &node(), Path::new("/s")).unwrap_err();
        assert!(err.contains("ReadWriteMany"), "{err}");
        let err = volume_for(&claim(&["ReadWriteOnce"], Some("Block")), &class(None), &node(), Path::new("/s")).unwrap_err();
        assert!(err.contains("Block"), "{err}");
    }
}
