//! VolumeBinding, as upstream's plugin: a pod's PersistentVolumeClaims
//! decide where it may run. A bound claim pins the pod to its volume's
//! node affinity; an unbound claim of a `WaitForFirstConsumer` class is
//! provisioned for the node the pod is scheduled to (the scheduler names it
//! on the claim with `volume.kubernetes.io/selected-node`, then waits for
//! the claim to be bound before binding the pod); any other unbound claim
//! keeps the pod pending until the volume controller binds it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::cache::{NodeInfo, PodInfo};
use crate::filters::{Code, Failure};
use crate::labels::node_term_matches;

pub use resources::local_path::SELECTED_NODE;
pub const ERR_AFFINITY_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_MISSING_PV: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A class whose volumes are made by hand only (local static volumes).
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// How long binding waits for delayed claims to be bound (upstream's bindTimeoutSeconds).
const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Objects of one kind by `namespace/name`, replaced whole when the watch relists.
#[derive(Debug)]
pub struct Objects<K> {
    pub items: HashMap<String, Arc<K>>,
    relist: Option<HashMap<String, Arc<K>>>,
    pub synced: bool,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Objects { items: HashMap::new(), relist: None, synced: false }
    }
}

fn key<K: Resource>(o: &K) -> String {
    format!("{}/{}", o.meta().namespace.as_deref().unwrap_or(""), o.meta().name.as_deref().unwrap_or(""))
}

impl<K: Resource> Objects<K> {
    pub fn apply(&mut self, e: Event<K>) {
        match e {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                self.relist.get_or_insert_with(HashMap::new).insert(key(&o), Arc::new(o));
            }
            Event::Apply(o) => {
                self.items.insert(key(&o), Arc::new(o));
            }
            Event::Delete(o) => {
                self.items.remove(&key(&o));
            }
            Event::InitDone => {
                self.items = self.relist.take().unwrap_or_default();
                self.synced = true;
            }
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<&Arc<K>> {
        self.items.get(&format!("{ns}/{name}"))
    }
}

/// The claims, volumes and classes the plugin reads.
#[derive(Debug, Default)]
pub struct Volumes {
    pub claims: Objects<PersistentVolumeClaim>,
    pub volumes: Objects<PersistentVolume>,
    pub classes: Objects<StorageClass>,
}

/// What one pod's claims require of a node.
#[derive(Default)]
pub struct State {
    /// The node affinity of each bound claim's volume.
    bound: Vec<Arc<PersistentVolume>>,
    /// Bound claims whose volume does not exist.
    missing_volume: bool,
    /// Unbound `WaitForFirstConsumer` claims, with their class.
    pub delayed: Vec<(Arc<PersistentVolumeClaim>, Arc<StorageClass>)>,
}

impl Volumes {
    pub fn synced(&self) -> bool {
        self.claims.synced && self.volumes.synced && self.classes.synced
    }

    /// PreFilter: the pod's claims, or why no node can take the pod.
    pub fn prepare(&self, pod: &PodInfo) -> Result<State, String> {
        let mut state = State::default();
        let spec = pod.spec();
        let pod_name = pod.pod.metadata.name.as_deref().unwrap_or("");
        for v in spec.volumes.iter().flatten() {
            let claim_name = match (&v.persistent_volume_claim, &v.ephemeral) {
                (Some(c), _) => c.claim_name.clone(),
                // A generic ephemeral volume's claim is named after the pod and the volume.
                (None, Some(_)) => format!("{pod_name}-{}", v.name),
                _ => continue,
            };
            let Some(claim) = self.claims.get(&pod.namespace, &claim_name) else {
                return Err(format!("persistentvolumeclaim \"{claim_name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{claim_name}\" is being deleted"));
            }
            let cs = claim.spec.clone().unwrap_or_default();
            if let Some(volume) = cs.volume_name.filter(|v| !v.is_empty()) {
                match self.volumes.get("", &volume) {
                    Some(pv) => state.bound.push(pv.clone()),
                    None => state.missing_volume = true,
                }
                continue;
            }
            let class = cs.storage_class_name.as_deref().and_then(|c| self.classes.get("", c));
            match class {
                Some(c) if c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => state.delayed.push((claim.clone(), c.clone())),
                _ => return Err(ERR_UNBOUND_IMMEDIATE.into()),
            }
        }
        Ok(state)
    }
}

impl State {
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Failure> {
        if self.missing_volume {
            return Err(Failure::new(Code::Unresolvable, ERR_MISSING_PV));
        }
        let affinity_ok = |pv: &PersistentVolume| {
            let terms = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms);
            terms.is_none_or(|ts| ts.iter().any(|t| node_term_matches(t, &node.name, &node.labels)))
        };
        if !self.bound.iter().all(|pv| affinity_ok(pv)) {
            return Err(Failure::new(Code::Unresolvable, ERR_AFFINITY_CONFLICT));
        }
        for (_, class) in &self.delayed {
            // Volumes of a class without a provisioner are made by hand:
            // binding to them before the pod is placed is not done here.
            let topology_ok = class.allowed_topologies.as_ref().is_none_or(|terms| {
                terms.is_empty()
                    || terms.iter().any(|t| {
                        t.match_label_expressions.iter().flatten().all(|e| node.labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
                    })
            });
            if class.provisioner == NO_PROVISIONER || !topology_ok {
                return Err(Failure::new(Code::Unresolvable, ERR_BIND_CONFLICT));
            }
        }
        Ok(())
    }
}

/// PreBind: names the node on each delayed claim, then waits until the
/// volume controller has bound them all (a provisioner made the volumes).
pub async fn bind_delayed(client: &Client, claims: &[Arc<PersistentVolumeClaim>], node: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
    for claim in claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map_err(|e| format!("selecting node for claim {}: {e}", claim.name_any()))?;
    }
    for claim in claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
        loop {
            let now = api.get_opt(&claim.name_any()).await.map_err(|e| e.to_string())?;
            match now {
                None => return Err(format!("persistentvolumeclaim \"{}\" not found", claim.name_any())),
                Some(c) if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") => break,
                Some(_) if tokio::time::Instant::now() > deadline => return Err("binding volumes: timed out waiting for the condition".into()),
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}
