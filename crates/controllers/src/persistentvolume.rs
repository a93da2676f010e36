//! PersistentVolume binder, as upstream's persistentvolume controller does
//! it for volumes made by hand (hostPath, local): a pending claim is bound
//! to the volume it names, to a volume pre-bound to it, or else to the
//! smallest Available volume that satisfies it (storage class, volume mode,
//! access modes, size, selector). A volume's phase follows its claim:
//! Available, Bound, and Released once the claim is gone, when reclaimPolicy
//! Delete deletes it. A bound claim whose volume is gone is Lost.
//!
//! Claims of a class with a provisioner wait for it: a `WaitForFirstConsumer`
//! class until the scheduler names the node of the claim's first pod. The
//! built-in local-path provisioner (local_path.rs) is called from here, and
//! so is the resize of its volumes (volume_expansion.rs).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use resources::quantity::Quantity;
use resources::selectors::LabelSelector;
use serde_json::{json, Value};

use client::eventlog::{record, reference};
use client::informer::{self, benign, ready};
use crate::local_path;

const COMPONENT: &str = "persistentvolume-controller";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const RESYNC: Duration = Duration::from_secs(15);
/// Upstream's annotations naming the provisioner a claim waits for.
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// A class whose volumes are made by hand only.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// `local_storage`: the directory local-path volumes are made under, or
/// None when the built-in provisioner is off.
pub async fn run(client: Client, local_storage: Option<PathBuf>) {
    if local_storage.is_some() {
        local_path::ensure_class(&client).await;
    }
    let (volumes, volume_events) = informer::watch(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default());
    let (claims, claim_events) = informer::watch(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default());
    let (classes, class_events) = informer::watch(Api::<StorageClass>::all(client.clone()), watcher::Config::default());
    let resync = futures::stream::unfold((), |()| async {
        tokio::time::sleep(RESYNC).await;
        Some(((), ()))
    });
    let objects = futures::stream::select(futures::stream::select(volume_events.map(drop), claim_events.map(drop)), class_events.map(drop));
    let mut events = futures::stream::select(objects, resync.boxed()).ready_chunks(1024);
    let mut told = Told::new();
    while events.next().await.is_some() {
        if ready(&volumes) && ready(&claims) && ready(&classes) {
            let c = Controller { client: client.clone(), volumes: volumes.state(), claims: claims.state(), classes: classes.state(), local_storage: local_storage.clone() };
            c.sync_volumes().await;
            c.sync_claims(&mut told).await;
        }
    }
}

/// (claim uid, what): events recorded and provisioning tried, once per claim.
type Told = HashSet<(String, String)>;

struct Controller {
    client: Client,
    volumes: Vec<Arc<PersistentVolume>>,
    claims: Vec<Arc<PersistentVolumeClaim>>,
    classes: Vec<Arc<StorageClass>>,
    local_storage: Option<PathBuf>,
}

fn claim_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn phase_of_claim(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn storage(q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Option<Quantity> {
    q.and_then(|m| m.get("storage")).and_then(|q| Quantity::parse(&q.0).ok())
}

/// Whether `pv` can serve `pvc` (upstream's findMatchingVolume checks).
pub fn satisfies(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else { return false };
    let class = |c: &Option<String>| c.clone().unwrap_or_default();
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    let modes_ok = cs.access_modes.iter().flatten().all(|m| vs.access_modes.iter().flatten().any(|have| have == m));
    let size_ok = match (storage(vs.capacity.as_ref()), storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref()))) {
        (Some(have), Some(want)) => have >= want,
        (_, None) => true,
        (None, Some(_)) => false,
    };
    let selector_ok = match &cs.selector {
        None => true,
        Some(sel) => {
            let labels: serde_json::Map<String, Value> = pv.labels().iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            LabelSelector::from_label_selector(&json!(sel)).is_ok_and(|s| s.matches(&labels))
        }
    };
    pv.metadata.deletion_timestamp.is_none() && class(&vs.storage_class_name) == class(&cs.storage_class_name) && mode(&vs.volume_mode) == mode(&cs.volume_mode) && modes_ok && size_ok && selector_ok
}

/// The volume for a pending claim: one pre-bound to it, else the smallest
/// unclaimed Available one that satisfies it.
pub fn choose<'a>(volumes: &'a [Arc<PersistentVolume>], pvc: &PersistentVolumeClaim) -> Option<&'a Arc<PersistentVolume>> {
    let claim_ref = |pv: &PersistentVolume| pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
    if let Some(pv) = volumes.iter().find(|pv| claim_ref(pv).is_some_and(|r| refers_to(&r, pvc)) && satisfies(pv, pvc)) {
        return Some(pv);
    }
    volumes
        .iter()
        .filter(|pv| claim_ref(pv).is_none() && matches!(phase_of_volume(pv), "" | "Available") && satisfies(pv, pvc))
        .min_by_key(|pv| storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())).map(|q| q.value()).unwrap_or(i64::MAX))
}

impl Controller {
    /// The claim a volume's claimRef names, by namespace and name.
    fn claim(&self, r: &ObjectReference) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.iter().find(|c| c.namespace() == r.namespace && r.name.as_deref() == Some(c.name_any().as_str()))
    }

    async fn sync_volumes(&self) {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        for pv in &self.volumes {
            let name = pv.name_any();
            let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
            let want = match &claim_ref {
                None => "Available",
                Some(r) => match self.claim(r) {
                    // The claim is there (and is the one it names): bound, or being bound.
                    Some(c) if refers_to(r, c) => {
                        if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(&name) { "Bound" } else { continue }
                    }
                    // Pre-bound to a claim that does not exist yet.
                    _ if r.uid.as_deref().is_none_or(str::is_empty) => "Available",
                    _ => "Released",
                },
            };
            if phase_of_volume(pv) != want && !(want == "Released" && phase_of_volume(pv) == "Failed") {
                let patch = json!({"status": {"phase": want}});
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    if !benign(&e) {
                        tracing::warn!(volume = name, "setting phase {want}: {e}");
                    }
                }
            }
            // Released first, so pv-protection lets the deleted volume go.
            // A provisioner deletes its own volumes (local-path ones: the
            // node agent, which removes the directory first).
            let provisioned = pv.annotations().contains_key(local_path::PROVISIONED_BY);
            let delete = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
            if want == "Released" && delete && !provisioned && pv.metadata.deletion_timestamp.is_none() {
                tracing::info!(volume = name, "claim gone; deleting the volume (reclaimPolicy Delete)");
                if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                    if !benign(&e) {
                        tracing::warn!(volume = name, "deleting released volume: {e}");
                    }
                }
            }
        }
    }

    async fn sync_claims(&self, told: &mut Told) {
        // What was said about claims that are gone is forgotten.
        let live: HashSet<String> = self.claims.iter().filter_map(|c| c.uid()).collect();
        told.retain(|(uid, _)| live.contains(uid));
        let mut taken: HashSet<String> = HashSet::new();
        for pvc in &self.claims {
            let (ns, name, uid) = (pvc.namespace().unwrap_or_default(), pvc.name_any(), pvc.uid().unwrap_or_default());
            let key = claim_key(&ns, &name);
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            if pvc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let named = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
            if phase_of_claim(pvc) == "Bound" {
                let gone = named.as_ref().is_none_or(|v| !self.volumes.iter().any(|pv| &pv.name_any() == v));
                if gone {
                    let patch = json!({"status": {"phase": "Lost"}});
                    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await;
                    record(&self.client, COMPONENT, reference(pvc.as_ref()), "Warning", "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into()).await;
                } else if let Some(pv) = self.volumes.iter().find(|pv| named.as_ref() == Some(&pv.name_any())) {
                    crate::volume_expansion::expand(&self.client, pvc, pv).await;
                }
                continue;
            }
            let class_name = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
            let class = self.classes.iter().find(|c| !class_name.is_empty() && c.name_any() == class_name);
            let waits_for_consumer = class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
            if named.is_none() && waits_for_consumer && !pvc.annotations().contains_key(local_path::SELECTED_NODE) {
                if told.insert((uid, "consumer".into())) {
                    record(&self.client, COMPONENT, reference(pvc.as_ref()), "Normal", "WaitForFirstConsumer", "waiting for first consumer to be created before binding".into()).await;
                }
                continue;
            }
            let volume = match &named {
                Some(v) => self.volumes.iter().find(|pv| &pv.name_any() == v && volume_free_for(pv, pvc)),
                None => choose(&self.volumes, pvc).filter(|pv| !taken.contains(&pv.name_any())),
            };
            let provisioner = class.map(|c| c.provisioner.as_str()).filter(|p| *p != NO_PROVISIONER);
            if let (None, None, Some(class), Some(provisioner)) = (volume, &named, class, provisioner) {
                self.await_provisioner(pvc, class, provisioner, told).await;
                continue;
            }
            let Some(pv) = volume else {
                if told.insert((uid, "unbindable".into())) {
                    let why = if pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("").is_empty() {
                        "no persistent volumes available for this claim and no storage class is set".to_string()
                    } else {
                        format!("storageclass.storage.k8s.io \"{}\" not found", pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default())
                    };
                    record(&self.client, COMPONENT, reference(pvc.as_ref()), "Normal", "FailedBinding", why).await;
                }
                continue;
            };
            taken.insert(pv.name_any());
            told.remove(&(uid, "unbindable".to_string()));
            if let Err(e) = self.bind(pv, pvc, named.is_none()).await {
                if !benign(&e) {
                    tracing::warn!(claim = key, volume = pv.name_any(), "binding: {e}");
                }
            }
        }
    }

    /// A claim whose volume a provisioner makes: named for it (upstream's
    /// annotations), then provisioned here when the provisioner is ours.
    async fn await_provisioner(&self, pvc: &PersistentVolumeClaim, class: &StorageClass, provisioner: &str, told: &mut Told) {
        let (ns, name, uid) = (pvc.namespace().unwrap_or_default(), pvc.name_any(), pvc.uid().unwrap_or_default());
        if pvc.annotations().get(STORAGE_PROVISIONER).map(String::as_str) != Some(provisioner) {
            let patch = json!({"metadata": {"annotations": {STORAGE_PROVISIONER: provisioner, STORAGE_PROVISIONER_BETA: provisioner}}});
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                if !benign(&e) {
                    tracing::warn!(claim = claim_key(&ns, &name), "naming the provisioner: {e}");
                }
            }
        }
        match &self.local_storage {
            // One attempt per claim and node; the volume, once made, is bound above.
            Some(root) if provisioner == local_path::PROVISIONER => {
                let node = pvc.annotations().get(local_path::SELECTED_NODE).cloned().unwrap_or_default();
                let attempt = (uid, format!("provision on {node}"));
                if told.insert(attempt.clone()) && !local_path::provision(&self.client, pvc, class, root).await {
                    told.remove(&attempt);
                }
            }
            _ => {
                if told.insert((uid, "external".into())) {
                    let msg = format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
                    record(&self.client, COMPONENT, reference(pvc), "Normal", "ExternalProvisioning", msg).await;
                }
            }
        }
    }

    /// Points the volume at the claim, then the claim at the volume, then
    /// marks both Bound (upstream's order, so a crash in between is retried).
    async fn bind(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim, by_controller: bool) -> kube::Result<()> {
        let (pv_name, ns, name) = (pv.name_any(), pvc.namespace().unwrap_or_default(), pvc.name_any());
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let mut pv_patch = json!({"spec": {"claimRef": reference(pvc)}, "metadata": {"resourceVersion": pv.resource_version()}});
        if pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() {
            pv_patch["metadata"]["annotations"] = json!({BOUND_BY_CONTROLLER: "yes"});
        }
        volumes.patch(&pv_name, &PatchParams::default(), &Patch::Merge(pv_patch)).await?;
        volumes.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await?;
        let mut annotations = json!({BIND_COMPLETED: "yes"});
        if by_controller {
            annotations[BOUND_BY_CONTROLLER] = json!("yes");
        }
        let claim_patch = json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}});
        claims.patch(&name, &PatchParams::default(), &Patch::Merge(claim_patch)).await?;
        let vs = pv.spec.clone().unwrap_or_default();
        let status = json!({"status": {"phase": "Bound", "accessModes": vs.access_modes, "capacity": vs.capacity}});
        claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await?;
        tracing::info!(claim = claim_key(&ns, &name), volume = pv_name, "claim bound");
        Ok(())
    }
}

/// A volume a claim names is free for it when unclaimed or claimed by it.
fn volume_free_for(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none_or(|r| refers_to(r, pvc))
}

/// Whether a volume's claimRef names this claim; one without a uid (a
/// volume pre-bound by hand) names whichever claim has that name.
fn refers_to(r: &ObjectReference, pvc: &PersistentVolumeClaim) -> bool {
    r.namespace == pvc.namespace()
        && r.name.as_deref() == Some(pvc.name_any().as_str())
        && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == pvc.uid().as_deref())
}


#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str], labels: Value) -> Arc<PersistentVolume> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "spec": {"capacity": {"storage": size}, "storageClassName": class, "accessModes": modes, "hostPath": {"path": "/tmp"}},
            "status": {"phase": "Available"}})).unwrap())
    }

    fn pvc(size: &str, class: Option<&str>, modes: &[&str], selector: Option<Value>) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "d", "uid": "u1"}, "spec": spec})).unwrap()
    }

    #[test]
    fn smallest_satisfying_volume_wins() {
        let vols = vec![
            pv("big", "10Gi", "", &["ReadWriteOnce"], json!({})),
            pv("small", "1Gi", "", &["ReadWriteOnce"], json!({})),
            pv("tiny", "100Mi", "", &["ReadWriteOnce"], json!({})),
            pv("fast", "2Gi", "ssd", &["ReadWriteOnce"], json!({})),
            pv("shared", "5Gi", "", &["ReadWriteMany", "ReadWriteOnce"], json!({"tier": "gold"})),
        ];
        let name = |c: &PersistentVolumeClaim| choose(&vols, c).map(|p| p.name_any());
        assert_eq!(name(&pvc("500Mi", None, &["ReadWriteOnce"], None)).as_deref(), Some("small"));
        assert_eq!(name(&pvc("500Mi", Some("ssd"), &["ReadWriteOnce"], None)).as_deref(), Some("fast"));
        assert_eq!(name(&pvc("1Gi", None, &["ReadWriteMany"], None)).as_deref(), Some("shared"));
        assert_eq!(name(&pvc("1Gi", None, &["ReadWriteOnce"], Some(json!({"matchLabels": {"tier": "gold"}})))).as_deref(), Some("shared"));
        assert_eq!(name(&pvc("20Gi", None, &["ReadWriteOnce"], None)), None);
        assert_eq!(name(&pvc("1Gi", Some("missing"), &["ReadWriteOnce"], None)), None);
    }

    #[test]
    fn a_volume_pre_bound_to_the_claim_comes_first_and_others_are_skipped() {
        let mut pre = (*pv("reserved", "10Gi", "", &["ReadWriteOnce"], json!({}))).clone();
        pre.spec.as_mut().unwrap().claim_ref = Some(ObjectReference { namespace: Some("d".into()), name: Some("data".into()), ..Default::default() });
        let mut other = (*pv("elsewhere", "1Gi", "", &["ReadWriteOnce"], json!({}))).clone();
        other.spec.as_mut().unwrap().claim_ref = Some(ObjectReference { namespace: Some("d".into()), name: Some("other".into()), ..Default::default() });
        let vols = vec![Arc::new(other), pv("free", "1Gi", "", &["ReadWriteOnce"], json!({})), Arc::new(pre)];
        assert_eq!(choose(&vols, &pvc("1Gi", None, &["ReadWriteOnce"], None)).map(|p| p.name_any()).as_deref(), Some("reserved"));
    }
}
