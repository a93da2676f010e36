//! ControllerRevisions, shared by the DaemonSet and StatefulSet controllers
//! (upstream's pkg/controller/history). A revision's `data` is the strategic
//! merge patch that puts its pod template back:
//! `{"spec":{"template":{..., "$patch":"replace"}}}`. kubectl reads it
//! client-side: `rollout history --revision=N` applies it to the live object
//! to print the template, `rollout undo` sends it as the owner's patch.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use crate::workload::{controller_of, controller_ref, is_status, selector_matches, Result};

/// The label on pods (and DaemonSet revisions) naming the revision they were made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label upstream's history package puts the data hash under.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Upstream ControllerRevisionName keeps this much of the owner's name.
const MAX_PREFIX: usize = 223;

/// The patch a revision stores for a pod template.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), "replace".into());
    }
    json!({ "spec": { "template": t } })
}

/// The pod template a revision restores (upstream ApplyRevision, for the
/// only patch we write).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

pub fn data(rev: &ControllerRevision) -> Value {
    rev.data.as_ref().map(|d| d.0.clone()).unwrap_or(Value::Null)
}

/// Upstream ControllerRevisionName: `<owner>-<hash>`, the owner's part cut to fit.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let cut = owner.char_indices().nth(MAX_PREFIX).map_or(owner, |(i, _)| &owner[..i]);
    format!("{cut}-{hash}")
}

/// Upstream HashControllerRevision: FNV-32a over the data (and the
/// collision count, which moves the name when two datas collide), written
/// in the safe alphabet.
pub fn hash_data(data: &Value, collision_count: i32) -> String {
    let mut h: u32 = 0x811c9dc5;
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    for b in bytes.iter().chain(collision_count.to_string().as_bytes()) {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
}

/// A new revision of `owner` (not yet stored).
pub fn new_revision<K: Resource<DynamicType = ()>>(owner: &K, name: String, labels: std::collections::BTreeMap<String, String>, data: Value, revision: i64) -> ControllerRevision {
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// The revisions `owner_uid` controls that its selector still matches,
/// lowest revision first (upstream SortControllerRevisions).
pub fn owned(store: &Store<ControllerRevision>, ns: &str, owner_uid: &str, selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Vec<ControllerRevision> {
    let mut revs: Vec<ControllerRevision> = store
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns) && r.metadata.deletion_timestamp.is_none())
        .filter(|r| controller_of(r.as_ref()).is_some_and(|c| c.uid == owner_uid) && selector_matches(selector, r.labels()))
        .map(|r| r.as_ref().clone())
        .collect();
    revs.sort_by(|a, b| a.revision.cmp(&b.revision).then_with(|| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp)).then_with(|| a.name_any().cmp(&b.name_any())));
    revs
}

pub fn next_revision(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// What a create came to.
pub enum Created {
    /// Stored now, or an equal one already was.
    Stored(ControllerRevision),
    /// The name is taken by a revision with other data.
    Collision,
}

/// Creates `rev`; an existing one of that name with equal data counts as created.
pub async fn create(api: &Api<ControllerRevision>, rev: &ControllerRevision) -> Result<Created> {
    match api.create(&PostParams::default(), rev).await {
        Ok(r) => Ok(Created::Stored(r)),
        Err(e) if is_status(&e, &[409]) => {
            let existing = api.get(&rev.name_any()).await?;
            Ok(if data(&existing) == data(rev) { Created::Stored(existing) } else { Created::Collision })
        }
        Err(e) => Err(e.into()),
    }
}

/// Gives a revision a new number (a rollback to it makes it the newest).
pub async fn renumber(api: &Api<ControllerRevision>, rev: &ControllerRevision, revision: i64) -> Result<ControllerRevision> {
    if rev.revision == revision {
        return Ok(rev.clone());
    }
    let patch = json!({ "revision": revision });
    Ok(api.patch(&rev.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?)
}

pub async fn delete(api: &Api<ControllerRevision>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, &[404]) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Which revisions to delete to keep at most `limit` of those not in use
/// (`live`), oldest first. `revs` is sorted lowest revision first.
pub fn to_trim<'a>(revs: &'a [ControllerRevision], live: &HashSet<String>, limit: i32) -> Vec<&'a ControllerRevision> {
    let unused: Vec<&ControllerRevision> = revs.iter().filter(|r| !live.contains(&r.name_any())).collect();
    let extra = unused.len().saturating_sub(limit.max(0) as usize);
    unused.into_iter().take(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, n: i64) -> ControllerRevision {
        ControllerRevision { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, data: None, revision: n }
    }

    #[test]
    fn the_patch_round_trips_the_template_and_replaces_it_whole() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        let patch = template_patch(&t);
        assert_eq!(patch["spec"]["template"]["$patch"], "replace");
        let r = ControllerRevision { data: Some(RawExtension(patch)), ..rev("x", 1) };
        assert_eq!(template_of(&r), Some(t));
    }

    #[test]
    fn names_are_cut_and_hashes_move_with_the_collision_count() {
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), MAX_PREFIX + 2);
        assert_eq!(revision_name("web", "h"), "web-h");
        let d = json!({"spec": {}});
        assert_eq!(hash_data(&d, 0), hash_data(&d.clone(), 0));
        assert_ne!(hash_data(&d, 0), hash_data(&d, 1));
        assert!(hash_data(&d, 0).chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn trimming_keeps_live_revisions_and_the_newest_unused() {
        let revs = vec![rev("a", 1), rev("b", 2), rev("c", 3), rev("d", 4), rev("e", 5)];
        let live: HashSet<String> = ["a".to_string(), "e".to_string()].into();
        let names: Vec<String> = to_trim(&revs, &live, 1).iter().map(|r| r.name_any()).collect();
        assert_eq!(names, ["b", "c"]);
        assert!(to_trim(&revs, &live, 10).is_empty());
        assert_eq!(to_trim(&revs, &HashSet::new(), 0).len(), 5);
    }
}
