//! RuntimeClass admission, as upstream's plugin: a new pod naming a
//! `runtimeClassName` must name an existing class; the class's
//! `overhead.podFixed` becomes the pod's `spec.overhead`, and its
//! `scheduling` is merged into the pod's nodeSelector and tolerations.

use resources::catalog::{self, ResourceInfo};
use resources::quantity::Quantity;
use serde_json::{Map, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{key, name_of, Registry};

fn classes() -> &'static ResourceInfo {
    catalog::lookup("node.k8s.io", "v1", "runtimeclasses").expect("runtime classes are in the catalog")
}

pub async fn admit_new_pod(reg: &Registry, info: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    let forbid = |pod: &Value, why: String| ApiError::forbidden(info, name_of(pod), &why);
    let class = match pod["spec"]["runtimeClassName"].as_str() {
        None => None,
        Some(named) => {
            // Read from the store: a class created just before the pod must be found.
            let kv = reg.store.get(&key(classes(), None, named)).await?;
            let kv = kv.ok_or_else(|| forbid(pod, format!("pod rejected: RuntimeClass \"{named}\" not found")))?;
            Some(serde_json::from_slice::<Value>(&kv.value).map_err(ApiError::internal)?)
        }
    };
    let empty = Value::Object(Map::new());
    let class = class.as_ref().unwrap_or(&empty);
    let given = pod["spec"]["overhead"].as_object().filter(|o| !o.is_empty()).cloned();
    match (class["overhead"]["podFixed"].as_object(), given) {
        (Some(fixed), Some(given)) if !same_quantities(fixed, &given) => {
            return Err(forbid(pod, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into()))
        }
        (Some(fixed), _) => pod["spec"]["overhead"] = Value::Object(fixed.clone()),
        (None, Some(_)) => {
            return Err(forbid(pod, "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead".into()))
        }
        (None, None) => {}
    }
    let sched = &class["scheduling"];
    for (k, v) in sched["nodeSelector"].as_object().into_iter().flatten() {
        let selector = &mut pod["spec"]["nodeSelector"];
        match selector.get(k).and_then(Value::as_str) {
            Some(p) if Some(p) != v.as_str() => {
                let why = format!("conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {p}", v.as_str().unwrap_or_default());
                return Err(forbid(pod, why));
            }
            _ => selector[k] = v.clone(),
        }
    }
    // Tolerations are merged: the class's are added unless the pod has them already.
    for t in sched["tolerations"].as_array().into_iter().flatten() {
        let tolerations = &mut pod["spec"]["tolerations"];
        if !tolerations.as_array().is_some_and(|ts| ts.contains(t)) {
            if !tolerations.is_array() {
                *tolerations = Value::Array(Vec::new());
            }
            tolerations.as_array_mut().unwrap().push(t.clone());
        }
    }
    Ok(())
}

/// Semantic equality of two resource lists (`1` equals `1000m`).
fn same_quantities(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let q = |v: &Value| v.as_str().and_then(|s| Quantity::parse(s).ok());
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| q(v).is_some() && q(v) == q(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_compare_by_value() {
        let a = json!({"cpu": "1", "memory": "1Gi"});
        let b = json!({"cpu": "1000m", "memory": "1024Mi"});
        assert!(same_quantities(a.as_object().unwrap(), b.as_object().unwrap()));
        let c = json!({"cpu": "2", "memory": "1Gi"});
        assert!(!same_quantities(a.as_object().unwrap(), c.as_object().unwrap()));
    }
}
