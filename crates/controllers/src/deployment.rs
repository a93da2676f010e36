//! Deployment controller: owns ReplicaSets named `<deployment>-<pod-template-hash>`,
//! keeps their revision annotations, rolls between them (RollingUpdate or
//! Recreate, in deployment_rollout.rs), and reports the status and the
//! Progressing/Available conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::workload::{self, controller_of, controller_ref, is_status, selector_is_empty, selector_matches, Error, Result};

pub const COMPONENT: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const MAX_REV_HISTORY_CHARS: usize = 2000;

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let controller = Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default());
    let deployments = controller.store();
    controller
        .watches(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default(), move |rs: ReplicaSet| {
            let ns = rs.namespace().unwrap_or_default();
            if let Some(r) = controller_of(&rs) {
                return if r.kind == "Deployment" { vec![ObjectRef::new(&r.name).within(&ns)] } else { vec![] };
            }
            deployments
                .state()
                .iter()
                .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
                .filter(|d| d.spec.as_ref().is_some_and(|s| !selector_is_empty(&s.selector) && selector_matches(&s.selector, rs.labels())))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect()
        })
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(Ctx { client }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("deployment controller: {e}");
            }
        })
        .await
}

async fn reconcile(obj: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    // Read it fresh: our own writes from the previous pass may not be in the cache yet.
    let Some(d) = d_api.get_opt(&obj.name_any()).await? else { return Ok(Action::await_change()) };
    let spec = d.spec.clone().unwrap_or_default();
    if selector_is_empty(&spec.selector) {
        workload::record(&ctx.client, COMPONENT, &d, "Warning", "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.".into()).await;
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let rss = claim_replicasets(&rs_api, &d).await?;
    let mut s = Sync { client: ctx.client.clone(), d, d_api, rs_api, rss, new: None };
    if s.d.metadata.deletion_timestamp.is_some() {
        s.find_new_and_sync_revision(false).await?;
        s.sync_status().await?;
        return Ok(Action::await_change());
    }
    s.check_paused_condition().await?;
    if s.paused() || s.is_scaling_event().await? {
        return s.sync().await;
    }
    let recreate = spec.strategy.as_ref().and_then(|st| st.type_.as_deref()) == Some("Recreate");
    if recreate {
        s.rollout_recreate().await
    } else {
        s.rollout_rolling().await
    }
}

/// Ours that still match, released when they don't; matching orphans adopted.
async fn claim_replicasets(rs_api: &Api<ReplicaSet>, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let uid = d.uid().unwrap_or_default();
    let selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    let mut owned = Vec::new();
    for rs in rs_api.list(&ListParams::default()).await?.items {
        let matches = selector_matches(&selector, rs.labels());
        let refs = match controller_of(&rs) {
            Some(r) if r.uid == uid && matches => {
                owned.push(rs);
                continue;
            }
            Some(r) if r.uid == uid => rs.owner_references().iter().filter(|r| r.uid != uid).cloned().collect::<Vec<_>>(),
            None if matches && d.metadata.deletion_timestamp.is_none() && rs.metadata.deletion_timestamp.is_none() => {
                let mut refs = rs.owner_references().to_vec();
                refs.push(controller_ref(d));
                refs
            }
            _ => continue,
        };
        let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": rs.resource_version() } });
        match rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(updated) if controller_of(&updated).is_some_and(|r| r.uid == uid) => owned.push(updated),
            Ok(_) => {}
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    owned.sort_by_key(|rs| (workload::creation(&rs.metadata), rs.name_any()));
    Ok(owned)
}

/// One pass over one Deployment and the ReplicaSets it owns.
pub(crate) struct Sync {
    pub client: Client,
    pub d: Deployment,
    pub d_api: Api<Deployment>,
    pub rs_api: Api<ReplicaSet>,
    /// Every owned ReplicaSet, oldest first.
    pub rss: Vec<ReplicaSet>,
    /// The name of the one whose template equals the Deployment's.
    pub new: Option<String>,
}

pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

/// Upstream ResolveFenceposts: surge rounds up, unavailable rounds down,
/// and both zero means one may be unavailable.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let ru = spec.strategy.and_then(|s| s.rolling_update).unwrap_or_default();
    let resolve = |v: Option<IntOrString>, up: bool| match v.unwrap_or(IntOrString::String("25%".into())) {
        IntOrString::Int(i) => i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = pct * replicas as i64;
            (if up { (scaled + 99) / 100 } else { scaled / 100 }) as i32
        }
    };
    let surge = resolve(ru.max_surge, true);
    let unavailable = resolve(ru.max_unavailable, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) != Some("Recreate")
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// FNV-32a over the template (and the collision count), in upstream's safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u32;
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        feed(&bytes);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
}

/// Upstream EqualIgnoreHash: the templates are the same apart from the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

fn skip_copy(key: &str) -> bool {
    matches!(key, "kubectl.kubernetes.io/last-applied-configuration" | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | "deprecated.deployment.rollback.to")
}

/// Upstream SetNewReplicaSetAnnotations: copy the Deployment's annotations,
/// raise the revision (remembering the old one in revision-history), and on
/// creation add the replica annotations. True when something changed.
fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let max = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) + max_surge(d);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.annotations() {
        if !skip_copy(k) && ann.get(k) != Some(v) {
            ann.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let old = ann.get(REVISION).cloned().unwrap_or_default();
    let old_int: i64 = match old.parse() {
        Ok(v) => v,
        Err(_) if old.is_empty() => 0,
        Err(_) => return changed,
    };
    if old_int < new_revision {
        ann.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if !old.is_empty() {
            let history = ann.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                ann.insert(REVISION_HISTORY.into(), old.clone());
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                while total > MAX_REV_HISTORY_CHARS && !revs.is_empty() {
                    total -= revs.remove(0).len() + 1;
                }
                revs.push(&old);
                ann.insert(REVISION_HISTORY.into(), revs.join(","));
            }
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, desired, max);
    }
    changed
}

pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if ann.get(k).map(String::as_str) != Some(v.to_string().as_str()) {
            ann.insert(k.into(), v.to_string());
            changed = true;
        }
    }
    changed
}

pub fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Utc::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

pub fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// Upstream SetDeploymentCondition: same status and reason is no change;
/// same status keeps the transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get_condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

impl Sync {
    pub fn name(&self) -> String {
        self.d.name_any()
    }

    pub fn replicas(&self) -> i32 {
        self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    pub fn paused(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
    }

    pub fn progress_deadline(&self) -> Option<i32> {
        self.d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
    }

    pub fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    pub fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.as_ref().and_then(|n| self.rss.iter().find(|rs| rs.metadata.name.as_ref() == Some(n)))
    }

    /// Owned ReplicaSets other than the new one, oldest first.
    pub fn old_rss(&self) -> Vec<ReplicaSet> {
        self.rss.iter().filter(|rs| rs.metadata.name != self.new).cloned().collect()
    }

    pub async fn write_status(&mut self, status: DeploymentStatus) -> Result<()> {
        if serde_json::to_value(&status).ok() == serde_json::to_value(self.status()).ok() {
            return Ok(());
        }
        let patch = json!({ "status": status });
        self.d = self.d_api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }

    /// Upstream getAllReplicaSetsAndSyncRevision + getNewReplicaSet: finds the
    /// ReplicaSet matching the template, raises its revision above the old
    /// ones, and creates it when asked and missing.
    pub async fn find_new_and_sync_revision(&mut self, create: bool) -> Result<()> {
        let template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        self.new = self
            .rss
            .iter()
            .find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, &template)))
            .map(|rs| rs.name_any());
        let max_old = self.old_rss().iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);

        if let Some(existing) = self.new_rs().cloned() {
            let mut rs = existing.clone();
            let annotations_changed = set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready_changed = rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready;
            if annotations_changed || min_ready_changed {
                if let Some(spec) = rs.spec.as_mut() {
                    spec.min_ready_seconds = min_ready;
                }
                // A patch, not an update: the ReplicaSet controller's status writes must not make this conflict.
                let patch = json!({ "metadata": { "annotations": rs.metadata.annotations }, "spec": { "minReadySeconds": min_ready } });
                rs = self.rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
                self.put_rs(rs.clone());
            }
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(&rev).await?;
            if self.progress_deadline().is_some() && get_condition(&self.status(), "Progressing").is_none() {
                let mut status = self.status();
                set_condition(&mut status, condition("Progressing", "True", "FoundNewReplicaSet", format!("Found new replica set \"{}\"", rs.name_any())));
                self.write_status(status).await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }

        let collision = self.status().collision_count;
        let hash = template_hash(&template, collision);
        let mut rs_template = template.clone();
        let meta = rs_template.metadata.get_or_insert_with(Default::default);
        meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = self.d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.name())),
                namespace: self.d.namespace(),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels,
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec { replicas: Some(0), min_ready_seconds: min_ready, selector, template: Some(rs_template) }),
            status: None,
        };
        let replicas = self.new_rs_new_replicas(&rs);
        rs.spec.as_mut().unwrap().replicas = Some(replicas);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let msg = format!("Scaled up replica set {} from 0 to {replicas}", created.name_any());
                    workload::record(&self.client, COMPONENT, &self.d, "Normal", "ScalingReplicaSet", msg).await;
                }
                created
            }
            Err(e) if is_status(&e, &[409]) => {
                let existing = self.rs_api.get(&rs.name_any()).await?;
                let same = existing.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, &template));
                if controller_of(&existing).is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref()) && same {
                    existing
                } else {
                    // A hash collision: bump the count so the next pass picks another name.
                    let mut status = self.status();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(status).await?;
                    return Err(Error(format!("replica set {} already exists with another template", rs.name_any())));
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.new = Some(created.name_any());
        self.put_rs(created.clone());
        self.set_deployment_revision(&new_revision.to_string()).await?;
        if self.progress_deadline().is_some() {
            let mut status = self.status();
            set_condition(&mut status, condition("Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{}\"", created.name_any())));
            self.write_status(status).await?;
        }
        Ok(())
    }

    fn put_rs(&mut self, rs: ReplicaSet) {
        match self.rss.iter_mut().find(|r| r.metadata.name == rs.metadata.name) {
            Some(slot) => *slot = rs,
            None => self.rss.push(rs),
        }
    }

    async fn set_deployment_revision(&mut self, rev: &str) -> Result<()> {
        if rev.is_empty() || self.d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let patch = json!({ "metadata": { "annotations": { REVISION: rev } } });
        self.d = self.d_api.patch(&self.name(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }

    /// Upstream checkPausedConditions.
    async fn check_paused_condition(&mut self) -> Result<()> {
        if self.progress_deadline().is_none() {
            return Ok(());
        }
        let mut status = self.status();
        let reason = get_condition(&status, "Progressing").and_then(|c| c.reason.clone()).unwrap_or_default();
        if self.paused() && reason != "DeploymentPaused" {
            set_condition(&mut status, condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into()));
        } else if !self.paused() && reason == "DeploymentPaused" {
            set_condition(&mut status, condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into()));
        } else {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// A scaling event: some active ReplicaSet was sized for another replica count.
    async fn is_scaling_event(&mut self) -> Result<bool> {
        self.find_new_and_sync_revision(false).await?;
        let replicas = self.replicas();
        Ok(self.rss.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| int_annotation(rs, DESIRED_REPLICAS).is_some_and(|d| d != replicas)))
    }

    /// Scaling (and, while paused, history cleanup) without rolling out.
    async fn sync(&mut self) -> Result<Action> {
        self.find_new_and_sync_revision(false).await?;
        self.scale().await?;
        if self.paused() {
            self.cleanup().await?;
        }
        self.sync_status().await?;
        Ok(Action::await_change())
    }

    /// Upstream calculateStatus.
    pub fn calculate_status(&self) -> DeploymentStatus {
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| self.rss.iter().map(f).sum::<i32>();
        let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let available = sum(&|rs| st(rs).available_replicas.unwrap_or(0));
        let total = sum(&|rs| spec_replicas(rs));
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(sum(&|rs| st(rs).replicas)),
            updated_replicas: Some(self.new_rs().map_or(0, |rs| st(rs).replicas)),
            ready_replicas: Some(sum(&|rs| st(rs).ready_replicas.unwrap_or(0))),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: self.status().collision_count,
            conditions: self.status().conditions,
            terminating_replicas: None,
        };
        if available >= self.replicas() - max_unavailable(&self.d) {
            set_condition(&mut status, condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into()));
        } else {
            set_condition(&mut status, condition("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into()));
        }
        status
    }

    pub async fn sync_status(&mut self) -> Result<()> {
        let status = self.calculate_status();
        self.write_status(status).await
    }
}
