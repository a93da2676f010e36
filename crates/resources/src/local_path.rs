//! Names of the built-in local-path storage, shared by its provisioner (in
//! the controllers), the scheduler and the node agent, which makes and
//! removes the directories. The names are those of rancher's
//! local-path-provisioner, so manifests written for k3s work unchanged.

/// The StorageClass made at startup, annotated as the default class.
pub const CLASS: &str = "local-path";
/// The class's `provisioner`.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// Upstream's annotation naming the provisioner that made a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Upstream's annotation on a claim: the node its first pod was scheduled to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The directory of a claim's volume under the storage root:
/// `pvc-<uid>_<namespace>_<name>`, as rancher's provisioner names it.
pub fn volume_dir_name(claim_uid: &str, namespace: &str, name: &str) -> String {
    format!("pvc-{claim_uid}_{namespace}_{name}")
}

/// Whether a path may be removed as a local-path volume: absolute, no `..`,
/// and named as `volume_dir_name` names them. Guards the node agent against
/// deleting anything else a (hand-edited) volume might point at.
pub fn removable(path: &str) -> bool {
    let p = std::path::Path::new(path);
    p.is_absolute()
        && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pvc-") && n.len() > 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_volume_directories_are_removable() {
        assert!(removable(&format!("/var/lib/skiff/storage/{}", volume_dir_name("u1", "ns", "data"))));
        assert!(!removable("/var/lib/skiff/storage"));
        assert!(!removable("/"));
        assert!(!removable("storage/pvc-u1_ns_data"));
        assert!(!removable("/var/lib/skiff/storage/pvc-u1/../../etc"));
        assert!(!removable("/var/lib/skiff/storage/pvc-"));
    }
}
