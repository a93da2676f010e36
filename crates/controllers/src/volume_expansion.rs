//! Volume expansion for local-path volumes, in the steps upstream's
//! external resizer and kubelet take: a bound claim asking for more than
//! its capacity has its volume's capacity raised, then its own
//! `status.capacity` and `status.allocatedResources`, with the events
//! upstream records. A local-path volume is a directory with no size of its
//! own, so nothing needs growing on the node and the resize completes at
//! once. The API server allows the request only when the class allows it.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use resources::quantity::Quantity;
use serde_json::json;

use client::eventlog::{record, reference};
use client::informer::benign;
use crate::local_path::{PROVISIONED_BY, PROVISIONER};

const COMPONENT: &str = "external-resizer rancher.io-local-path";

fn storage(q: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Option<Quantity> {
    q.and_then(|m| m.get("storage")).and_then(|q| Quantity::parse(&q.0).ok())
}

/// The size a bound local-path claim must grow to, if it asks for more
/// than its capacity.
pub fn wanted(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Option<Quantity> {
    if pv.annotations().get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER) {
        return None;
    }
    let requested = storage(pvc.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()))?;
    let capacity = storage(pvc.status.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or_default();
    (requested > capacity).then_some(requested)
}

pub async fn expand(client: &Client, pvc: &PersistentVolumeClaim, pv: &PersistentVolume) {
    let Some(size) = wanted(pvc, pv) else { return };
    let (ns, name, volume) = (pvc.namespace().unwrap_or_default(), pvc.name_any(), pv.name_any());
    let size = size.canonical();
    let about = reference(pvc);
    record(client, COMPONENT, about.clone(), "Normal", "Resizing", format!("External resizer is resizing volume {volume}")).await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let grown = json!({"spec": {"capacity": {"storage": size}}});
    if let Err(e) = volumes.patch(&volume, &PatchParams::default(), &Patch::Merge(grown)).await {
        if !benign(&e) {
            tracing::warn!(volume, "resizing the volume: {e}");
        }
        return;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let status = json!({"status": {"capacity": {"storage": size}, "allocatedResources": {"storage": size}, "conditions": null}});
    if let Err(e) = claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
        if !benign(&e) {
            tracing::warn!(claim = name, "recording the resize: {e}");
        }
        return;
    }
    record(client, COMPONENT, about.clone(), "Normal", "VolumeResizeSuccessful", format!("resize volume \"{volume}\" by resizer \"{PROVISIONER}\" finished successfully")).await;
    record(client, "kubelet", about, "Normal", "FileSystemResizeSuccessful", format!("MountVolume.NodeExpandVolume succeeded for volume \"{volume}\"")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_path_claims_asking_for_more_grow() {
        let pvc = |req: &str, cap: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": req}}}, "status": {"phase": "Bound", "capacity": {"storage": cap}}})).unwrap()
        };
        let pv = |by: &str| -> PersistentVolume { serde_json::from_value(json!({"metadata": {"name": "v", "annotations": {PROVISIONED_BY: by}}})).unwrap() };
        assert_eq!(wanted(&pvc("2Gi", "1Gi"), &pv(PROVISIONER)).map(|q| q.canonical()), Some("2Gi".into()));
        assert_eq!(wanted(&pvc("1Gi", "1Gi"), &pv(PROVISIONER)), None);
        assert_eq!(wanted(&pvc("2Gi", "1Gi"), &pv("example.com/other")), None);
    }
}
