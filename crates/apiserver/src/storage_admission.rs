//! Two of upstream's storage admission plugins. DefaultStorageClass: a new
//! claim that names no class gets the default one (annotated
//! `storageclass.kubernetes.io/is-default-class`; with several, the newest).
//! StorageObjectInUseProtection: new claims and volumes carry the
//! `kubernetes.io/pvc-protection` / `kubernetes.io/pv-protection`
//! finalizer, which the protection controller removes once nothing uses
//! them, so a claim a pod still mounts is not lost under it.
//! PersistentVolumeClaimResize: a claim may grow only once bound, and only
//! when its class sets `allowVolumeExpansion`.

use resources::catalog::{self, ResourceInfo};
use resources::quantity::Quantity;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{name_of, Registry};

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

fn classes() -> &'static ResourceInfo {
    catalog::lookup("storage.k8s.io", "v1", "storageclasses").expect("storage classes are in the catalog")
}

/// The default class's name: the newest of those annotated default (ties by name).
fn default_class(reg: &Registry) -> Option<String> {
    reg.cache
        .all(classes().storage)
        .iter()
        .map(|c| c.obj())
        .filter(|c| c["metadata"]["annotations"][DEFAULT_CLASS].as_str() == Some("true"))
        .max_by(|a, b| {
            let key = |c: &Value| (c["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string(), c["metadata"]["name"].as_str().unwrap_or("").to_string());
            key(a).cmp(&key(b))
        })
        .and_then(|c| c["metadata"]["name"].as_str().map(str::to_string))
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        return;
    }
    if !meta["finalizers"].is_array() {
        meta["finalizers"] = json!([]);
    }
    let list = meta["finalizers"].as_array_mut().expect("just made an array");
    if !list.iter().any(|f| f == finalizer) {
        list.push(json!(finalizer));
    }
}

pub fn admit_new_claim(reg: &Registry, claim: &mut Value) {
    // Only an absent class is defaulted: "" asks for no class on purpose.
    if claim["spec"].is_object() && claim["spec"]["storageClassName"].is_null() {
        if let Some(class) = default_class(reg) {
            claim["spec"]["storageClassName"] = json!(class);
        }
    }
    add_finalizer(claim, PVC_PROTECTION);
}

/// Refuses growing a claim that is not bound or whose class does not allow
/// expansion (a class that is gone allows nothing).
pub fn admit_claim_resize(reg: &Registry, info: &ResourceInfo, claim: &Value, old: &Value) -> ApiResult<()> {
    let size = |c: &Value| Quantity::from_json(&c["spec"]["resources"]["requests"]["storage"]).unwrap_or_default();
    if size(claim) <= size(old) {
        return Ok(());
    }
    if old["status"]["phase"] != "Bound" {
        return Err(ApiError::forbidden(info, name_of(claim), "Only bound persistent volume claims can be expanded"));
    }
    let class = claim["spec"]["storageClassName"].as_str().unwrap_or("");
    let allowed = !class.is_empty()
        && old["spec"]["storageClassName"].as_str() == Some(class)
        && reg.cache.all(classes().storage).iter().map(|c| c.obj()).any(|c| c["metadata"]["name"] == class && c["allowVolumeExpansion"] == true);
    if !allowed {
        return Err(ApiError::forbidden(info, name_of(claim), "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"));
    }
    Ok(())
}

pub fn admit_new_volume(volume: &mut Value) {
    add_finalizer(volume, PV_PROTECTION);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizers_are_added_once_beside_others() {
        let mut v = json!({"metadata": {"name": "a", "finalizers": ["example.com/keep"]}});
        add_finalizer(&mut v, PV_PROTECTION);
        add_finalizer(&mut v, PV_PROTECTION);
        assert_eq!(v["metadata"]["finalizers"], json!(["example.com/keep", PV_PROTECTION]));
        let mut bare = json!({"metadata": {"name": "b"}});
        add_finalizer(&mut bare, PVC_PROTECTION);
        assert_eq!(bare["metadata"]["finalizers"], json!([PVC_PROTECTION]));
    }
}
