//! Upstream's pvc-protection and pv-protection controllers: a claim being
//! deleted keeps its `kubernetes.io/pvc-protection` finalizer while a pod
//! that has not finished uses it, a volume being deleted keeps
//! `kubernetes.io/pv-protection` while it is Bound. The API server adds the
//! finalizers when the objects are created.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use client::informer::{self, benign, ready, Watched};
use crate::workload::pod_phase;

const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The claims a pod mounts (a generic ephemeral volume's claim is `POD-VOLUME`).
pub fn claims_of(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).filter_map(move |v| match (&v.persistent_volume_claim, &v.ephemeral) {
        (Some(c), _) => Some(c.claim_name.clone()),
        (None, Some(_)) => Some(format!("{name}-{}", v.name)),
        _ => None,
    })
}

/// Whether a deleted claim may go: no pod that has not finished mounts it.
pub fn claim_unused(claim: &PersistentVolumeClaim, pods: &[Arc<Pod>]) -> bool {
    let (ns, name) = (claim.namespace(), claim.name_any());
    !pods.iter().any(|p| p.namespace() == ns && !matches!(pod_phase(p), "Succeeded" | "Failed") && claims_of(p).any(|c| c == name))
}

fn deleting_with<K: Resource>(o: &K, finalizer: &str) -> bool {
    o.meta().deletion_timestamp.is_some() && o.meta().finalizers.iter().flatten().any(|f| f == finalizer)
}

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>) {
    let (claims, claim_events) = informer::watch(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default());
    let (volumes, volume_events) = informer::watch(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default());
    let events = futures::stream::select(futures::stream::select(claim_events.map(drop), volume_events.map(drop)), pod_events.map(drop));
    let mut events = events.ready_chunks(4096);
    while events.next().await.is_some() {
        if !(ready(&claims) && ready(&volumes) && ready(&pods)) {
            continue;
        }
        let deleted: Vec<_> = claims.state().into_iter().filter(|c| deleting_with(c.as_ref(), PVC_PROTECTION)).collect();
        if !deleted.is_empty() {
            let all_pods = pods.state();
            for claim in deleted.iter().filter(|c| claim_unused(c, &all_pods)) {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
                release(&api, claim.as_ref(), PVC_PROTECTION).await;
            }
        }
        let api: Api<PersistentVolume> = Api::all(client.clone());
        for pv in volumes.state().iter().filter(|v| deleting_with(v.as_ref(), PV_PROTECTION)) {
            if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
                release(&api, pv.as_ref(), PV_PROTECTION).await;
            }
        }
    }
}

/// Removes `finalizer`, provided the object has not changed since it was read.
async fn release<K>(api: &Api<K>, obj: &K, finalizer: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let rest: Vec<&String> = obj.meta().finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": obj.meta().resource_version}});
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => tracing::info!(name, finalizer, "nothing uses it any more; removed the protection finalizer"),
        Err(e) if benign(&e) => {}
        Err(e) => tracing::warn!(name, finalizer, "removing the protection finalizer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, volumes: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "a"}, "spec": {"containers": [], "volumes": volumes}, "status": {"phase": phase}})).unwrap())
    }

    fn claim(ns: &str, name: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap()
    }

    #[test]
    fn a_claim_is_in_use_while_an_unfinished_pod_mounts_it() {
        let pods = vec![
            pod("web", "Running", json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}])),
            pod("job", "Succeeded", json!([{"name": "d", "persistentVolumeClaim": {"claimName": "done"}}])),
            pod("tmp", "Pending", json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}])),
        ];
        assert!(!claim_unused(&claim("a", "data"), &pods));
        assert!(claim_unused(&claim("b", "data"), &pods));
        assert!(claim_unused(&claim("a", "done"), &pods));
        assert!(!claim_unused(&claim("a", "tmp-scratch"), &pods));
    }
}
