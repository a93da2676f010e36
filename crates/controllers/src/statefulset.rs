//! StatefulSet decisions, free of I/O (upstream pkg/controller/statefulset):
//! stable identities `NAME-ORDINAL`, per-ordinal claims from
//! volumeClaimTemplates, OrderedReady (one at a time, each Running and
//! Ready before the next; removal from the highest ordinal) or Parallel,
//! and updates from the highest ordinal down to the partition.
//! statefulset_sync.rs does the writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::ResourceExt;

use crate::history::REVISION_LABEL;
use crate::workload::{controller_of, controller_ref, pod_available, pod_phase, pod_ready};

pub const COMPONENT: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `web-3` → ("web", 3); None for a name without an ordinal.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// Upstream isMemberOf: named after the set.
pub fn is_member(set_name: &str, pod: &Pod) -> bool {
    parent_and_ordinal(&pod.name_any()).is_some_and(|(p, _)| p == set_name)
}

pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

pub fn revision_of(pod: &Pod) -> &str {
    pod.labels().get(REVISION_LABEL).map(String::as_str).unwrap_or("")
}

pub fn running_and_ready(pod: &Pod) -> bool {
    pod_phase(pod) == "Running" && pod_ready(pod)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

/// What a StatefulSet asks for, resolved once per sync.
pub struct Set {
    pub replicas: i32,
    pub start: i32,
    pub parallel: bool,
    pub on_delete: bool,
    pub min_ready_seconds: i32,
    /// rollingUpdate.partition, when a rollingUpdate block is given.
    pub partition: Option<i32>,
    /// rollingUpdate.maxUnavailable resolved (None: upstream's one-at-a-time path).
    pub max_unavailable: Option<i32>,
    pub status_current_replicas: i32,
}

impl Set {
    pub fn new(sts: &StatefulSet) -> Set {
        let spec = sts.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.update_strategy.unwrap_or_default();
        let ru = strategy.rolling_update;
        // Upstream getStatefulSetMaxUnavailable: percent of replicas rounded down, at least 1.
        let max_unavailable = ru.as_ref().and_then(|r| r.max_unavailable.as_ref()).map(|v| {
            let n = match v {
                IntOrString::Int(i) => *i,
                IntOrString::String(s) => (s.trim_end_matches('%').parse::<i64>().unwrap_or(0) * replicas as i64 / 100) as i32,
            };
            n.max(1)
        });
        Set {
            replicas,
            start: spec.ordinals.and_then(|o| o.start).unwrap_or(0).max(0),
            parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
            on_delete: strategy.type_.as_deref() == Some("OnDelete"),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            partition: ru.as_ref().map(|r| r.partition.unwrap_or(0)),
            max_unavailable,
            status_current_replicas: sts.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0),
        }
    }

    pub fn in_range(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal < self.start + self.replicas
    }

    /// Upstream newVersionedStatefulSetPod: below the partition (or, without
    /// a rollingUpdate block, below the current count) pods are made from
    /// the current revision, the rest from the update revision.
    pub fn uses_current_revision(&self, ordinal: i32) -> bool {
        match self.partition {
            None => !self.on_delete && ordinal < self.start + self.status_current_replicas,
            Some(p) => ordinal < self.start + p,
        }
    }
}

/// Upstream newStatefulSetPod: the template's metadata and spec, the
/// stable name, hostname and subdomain, the identity labels, the claims
/// mounted in place of the template volumes of the same name.
pub fn new_pod(sts: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = sts.name_any();
    let name = format!("{set_name}-{ordinal}");
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = sts.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    let claims = claims_for(sts, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim.name_any(), read_only: None }),
            ..Default::default()
        })
        .collect();
    volumes.extend(spec.volumes.take().into_iter().flatten().filter(|v| !claims.contains_key(&v.name)));
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(sts)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream getPersistentVolumeClaims: each template's claim for `ordinal`,
/// by template name, labelled with the set's matchLabels.
pub fn claims_for(sts: &StatefulSet, ordinal: i32) -> BTreeMap<String, PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let match_labels = spec.selector.match_labels.unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|mut claim| {
            let template = claim.name_any();
            claim.metadata.name = Some(claim_name(&template, &sts.name_any(), ordinal));
            claim.metadata.namespace = sts.namespace();
            claim.metadata.labels.get_or_insert_with(BTreeMap::new).extend(match_labels.clone());
            claim.status = None;
            (template, claim)
        })
        .collect()
}

/// Upstream identityMatches and storageMatches.
pub fn identity_matches(sts: &StatefulSet, pod: &Pod) -> bool {
    let name = pod.name_any();
    let Some((parent, ordinal)) = parent_and_ordinal(&name) else { return false };
    let labels_ok = pod.labels().get(POD_NAME_LABEL) == Some(&name) && pod.labels().get(POD_INDEX_LABEL) == Some(&ordinal.to_string());
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[]);
    let storage_ok = claims_for(sts, ordinal).iter().all(|(template, claim)| {
        volumes.iter().any(|v| &v.name == template && v.persistent_volume_claim.as_ref().is_some_and(|c| Some(&c.claim_name) == claim.metadata.name.as_ref()))
    });
    parent == sts.name_any() && labels_ok && storage_ok
}

/// Upstream updateClaimOwnerRefForSetAndPod: the ownerReferences a claim
/// should have under persistentVolumeClaimRetentionPolicy. whenDeleted
/// Delete makes the set its owner (the claim goes with the set);
/// whenScaled Delete makes a scaled-down pod its owner (the claim goes
/// with the pod). A claim another controller owns is left alone (None).
pub fn claim_owner_refs(sts: &StatefulSet, set: &Set, pod: &Pod, claim: &PersistentVolumeClaim) -> Option<Vec<OwnerReference>> {
    let (set_uid, pod_uid) = (sts.uid().unwrap_or_default(), pod.uid().unwrap_or_default());
    if controller_of(claim).is_some_and(|r| r.uid != set_uid && r.uid != pod_uid) {
        return None;
    }
    let policy = sts.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.clone()).unwrap_or_default();
    let delete = |p: &Option<String>| p.as_deref() == Some("Delete");
    let scaled_down = parent_and_ordinal(&pod.name_any()).is_some_and(|(_, o)| !set.in_range(o));
    let mut refs: Vec<OwnerReference> = claim.owner_references().iter().filter(|r| r.uid != set_uid && r.uid != pod_uid).cloned().collect();
    if delete(&policy.when_scaled) && scaled_down {
        refs.push(controller_ref(pod));
    } else if delete(&policy.when_deleted) && !(delete(&policy.when_scaled) && scaled_down) {
        refs.push(controller_ref(sts));
    }
    Some(refs)
}

/// One write of a sync, in the order to make them.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Create the pod (and its missing claims) for an ordinal, from the current or the update revision.
    Create { ordinal: i32, current: bool },
    /// Delete a failed or succeeded pod; a later sync creates it again.
    Recreate { name: String, failed: bool },
    /// A pending pod's claims: create those missing.
    EnsureClaims { ordinal: i32 },
    /// Put the identity labels back.
    FixIdentity { name: String },
    /// Bring the pod's claims' ownerReferences in line with the retention policy.
    ClaimOwners { name: String },
    /// Delete a pod beyond the replica count.
    ScaleDown { name: String },
    /// Delete a pod of an old revision so it comes back at the update revision.
    Update { name: String },
}

/// Counts of the pods the sync started from (upstream's status before updateStatus).
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
}

/// Upstream updateStatefulSet: what to write this sync, and the counts.
pub fn plan(sts: &StatefulSet, set: &Set, pods: &[Arc<Pod>], current_rev: &str, update_rev: &str, now: DateTime<Utc>) -> (Vec<Step>, Counts) {
    let available = |p: &Pod| running_and_ready(p) && pod_available(p, set.min_ready_seconds, now);
    let mut c = Counts::default();
    let mut replicas: Vec<Option<Arc<Pod>>> = vec![None; set.replicas as usize];
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for pod in pods {
        c.replicas += 1;
        if running_and_ready(pod) {
            c.ready += 1;
            c.available += i32::from(available(pod));
        }
        if !terminating(pod) {
            c.current += i32::from(revision_of(pod) == current_rev);
            c.updated += i32::from(revision_of(pod) == update_rev);
        }
        match parent_and_ordinal(&pod.name_any()) {
            Some((_, o)) if set.in_range(o) => replicas[(o - set.start) as usize] = Some(pod.clone()),
            Some((_, o)) => condemned.push((o, pod.clone())),
            None => {}
        }
    }
    condemned.sort_by(|a, b| b.0.cmp(&a.0));
    // The first unhealthy pod: a missing replica, else the lowest unhealthy condemned one.
    let first_unhealthy = replicas.iter().position(|p| p.as_ref().is_none_or(|p| !healthy(p))).map(|i| Some(set.start + i as i32)).or_else(|| {
        condemned.iter().rev().find(|(_, p)| !healthy(p)).map(|(o, _)| Some(*o))
    });
    let mut steps = Vec::new();
    if sts.metadata.deletion_timestamp.is_some() {
        return (steps, c);
    }
    let monotonic = !set.parallel;
    let has_claims = sts.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref()).is_some_and(|t| !t.is_empty());
    for (i, slot) in replicas.iter().enumerate() {
        let ordinal = set.start + i as i32;
        let Some(pod) = slot else {
            steps.push(Step::Create { ordinal, current: set.uses_current_revision(ordinal) });
            if monotonic {
                return (steps, c);
            }
            continue;
        };
        if matches!(pod_phase(pod), "Failed" | "Succeeded") && !terminating(pod) {
            steps.push(Step::Recreate { name: pod.name_any(), failed: pod_phase(pod) == "Failed" });
            if monotonic {
                return (steps, c);
            }
            continue;
        }
        if pod_phase(pod) == "Pending" && has_claims {
            steps.push(Step::EnsureClaims { ordinal });
        }
        if monotonic && (terminating(pod) || !running_and_ready(pod) || !available(pod)) {
            return (steps, c);
        }
        if !identity_matches(sts, pod) {
            steps.push(Step::FixIdentity { name: pod.name_any() });
        }
        if has_claims {
            steps.push(Step::ClaimOwners { name: pod.name_any() });
        }
    }
    if has_claims {
        steps.extend(condemned.iter().map(|(_, p)| Step::ClaimOwners { name: p.name_any() }));
    }
    // Scale down from the highest ordinal; in order, only once the rest are healthy.
    for (ordinal, pod) in &condemned {
        if terminating(pod) {
            if monotonic {
                return (steps, c);
            }
            continue;
        }
        if monotonic && (!running_and_ready(pod) || !available(pod)) && first_unhealthy != Some(Some(*ordinal)) {
            return (steps, c);
        }
        steps.push(Step::ScaleDown { name: pod.name_any() });
        if monotonic {
            return (steps, c);
        }
    }
    if set.on_delete {
        return (steps, c);
    }
    let update_min = set.partition.unwrap_or(0).max(0) as usize;
    let outdated = |p: &Pod| revision_of(p) != update_rev && !terminating(p);
    match set.max_unavailable {
        None => {
            for slot in replicas.iter().skip(update_min).rev() {
                let Some(pod) = slot else { break };
                if outdated(pod) {
                    steps.push(Step::Update { name: pod.name_any() });
                    c.current -= 1;
                    break;
                }
                if !healthy(pod) {
                    break;
                }
            }
        }
        Some(max) => {
            let unavailable = replicas.iter().filter(|p| p.as_ref().is_none_or(|p| !healthy(p))).count() as i32;
            let mut room = max - unavailable;
            for pod in replicas.iter().skip(update_min).rev().flatten() {
                if room <= 0 {
                    break;
                }
                if outdated(pod) {
                    steps.push(Step::Update { name: pod.name_any() });
                    c.current -= 1;
                    room -= 1;
                }
            }
        }
    }
    (steps, c)
}

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
