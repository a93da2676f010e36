//! Priority admission, as upstream's plugin: a new pod's `priorityClassName`
//! is resolved to `spec.priority` and `spec.preemptionPolicy` (a pod naming
//! no class gets the global default class, or priority 0), and at most one
//! PriorityClass may be the global default. Updates keep the priority
//! (`resources::strategy::prepare_for_update`).

use resources::catalog::{self, ResourceInfo};
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{key, name_of, Registry};

fn classes() -> &'static ResourceInfo {
    catalog::lookup("scheduling.k8s.io", "v1", "priorityclasses").expect("priority classes are in the catalog")
}

/// Sets a new pod's priority from its class.
pub async fn admit_new_pod(reg: &Registry, info: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    let named = pod["spec"]["priorityClassName"].as_str().unwrap_or_default().to_string();
    let class = if named.is_empty() {
        default_class(reg)
    } else {
        // Read from the store, not the cache: a class created just before
        // the pod must be found.
        let kv = reg.store.get(&key(classes(), None, &named)).await?;
        let kv = kv.ok_or_else(|| ApiError::forbidden(info, name_of(pod), &format!("no PriorityClass with name {named} was found")))?;
        Some(serde_json::from_slice(&kv.value).map_err(ApiError::internal)?)
    };
    let (class_name, value, policy) = match &class {
        Some(c) => (c["metadata"]["name"].clone(), c["value"].as_i64().unwrap_or(0), c["preemptionPolicy"].as_str().unwrap_or("PreemptLowerPriority")),
        None => (Value::Null, 0, "PreemptLowerPriority"),
    };
    if let Some(given) = pod["spec"]["priority"].as_i64().filter(|p| *p != value) {
        return Err(ApiError::forbidden(info, name_of(pod), &format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(given) = pod["spec"]["preemptionPolicy"].as_str().filter(|p| *p != policy) {
        return Err(ApiError::forbidden(info, name_of(pod), &format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    let spec = &mut pod["spec"];
    if spec.is_object() {
        if class_name.is_string() {
            spec["priorityClassName"] = class_name;
        }
        spec["priority"] = json!(value);
        spec["preemptionPolicy"] = json!(policy);
    }
    Ok(())
}

/// The global default class; with several (a race between writers), the
/// one with the lowest value, as upstream.
fn default_class(reg: &Registry) -> Option<Value> {
    reg.cache
        .all(classes().storage)
        .iter()
        .map(|c| c.obj())
        .filter(|c| c["globalDefault"].as_bool() == Some(true))
        .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
}

/// Refuses a second global default class.
pub fn admit_class(reg: &Registry, info: &ResourceInfo, class: &Value) -> ApiResult<()> {
    if class["globalDefault"].as_bool() != Some(true) {
        return Ok(());
    }
    match default_class(reg) {
        Some(other) if other["metadata"]["name"] != class["metadata"]["name"] => Err(ApiError::forbidden(info, name_of(class), &format!(
            "PriorityClass {} is marked as default. Only one default can exist",
            other["metadata"]["name"].as_str().unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}
