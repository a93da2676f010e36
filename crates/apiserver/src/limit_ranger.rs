//! LimitRange admission, as upstream's LimitRanger plugin: a new pod's
//! containers get the namespace's default requests and limits where they
//! set none (noted in the `kubernetes.io/limit-ranger` annotation), then
//! pods and containers are held to min, max and maxLimitRequestRatio, and
//! claims (on create and on resize) to min and max storage.

use resources::catalog::ResourceInfo;
use resources::quantity::Quantity;
use resources::quota::{list, pod_resources, ResourceList};
use resources::validation;
use serde_json::{json, Value};

use crate::cache::decode_value;
use crate::errors::{ApiError, ApiResult};
use crate::registry::{name_of, Registry};

pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Upstream compares in thousandths unless that could overflow.
const MAX_MILLI_VALUE: i64 = i64::MAX / 1000;

/// The LimitRanges of an object's namespace, read from the store so one
/// created just before the object applies to it.
async fn ranges(reg: &Registry, obj: &Value) -> ApiResult<Vec<Value>> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let listed = reg.store.list(&format!("/registry/limitranges/{ns}/"), None, 0, None).await?;
    listed.items.iter().map(decode_value).collect()
}

fn refuse(info: &ResourceInfo, obj: &Value, errs: &[String]) -> ApiResult<()> {
    match aggregate(errs) {
        Some(why) => Err(ApiError::forbidden(info, name_of(obj), &why)),
        None => Ok(()),
    }
}

/// A new pod: defaults, then limits. Defaults can make a container's
/// request exceed its limit, which pod validation then refuses, as
/// upstream's validation after mutating admission does.
pub async fn admit_pod(reg: &Registry, info: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    let ranges = ranges(reg, pod).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let before = pod.clone();
    default_pod(&ranges, pod);
    if *pod != before {
        let errs = validation::validate(info.group, info.kind, pod, None);
        if !errs.is_empty() {
            return Err(ApiError::invalid(info, name_of(pod), &errs));
        }
    }
    refuse(info, pod, &check_pod(&ranges, pod))
}

/// A new or resized claim: min and max storage.
pub async fn admit_claim(reg: &Registry, info: &ResourceInfo, claim: &Value) -> ApiResult<()> {
    let ranges = ranges(reg, claim).await?;
    refuse(info, claim, &check_claim(&ranges, claim))
}

fn items<'a>(ranges: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> {
    ranges.iter().flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten()).filter(move |l| l["type"] == ty)
}

/// Fills in default requests and limits of every container and init
/// container from the Container-type items.
pub fn default_pod(ranges: &[Value], pod: &mut Value) {
    let (mut requests, mut limits) = (serde_json::Map::new(), serde_json::Map::new());
    for item in items(ranges, "Container") {
        requests.extend(item["defaultRequest"].as_object().cloned().unwrap_or_default());
        limits.extend(item["default"].as_object().cloned().unwrap_or_default());
    }
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (key, what) in [("containers", "container"), ("initContainers", "init container")] {
        for c in pod["spec"][key].as_array_mut().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let resources = &mut c["resources"];
            let set_requests = fill(&mut resources["requests"], &requests);
            let set_limits = fill(&mut resources["limits"], &limits);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {what} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        let meta = &mut pod["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Adds the defaults `target` lacks; returns their names, sorted.
fn fill(target: &mut Value, defaults: &serde_json::Map<String, Value>) -> Vec<String> {
    if !target.is_object() {
        *target = json!({});
    }
    let mut set = Vec::new();
    for (k, v) in defaults {
        if target.get(k).is_none() {
            target[k] = v.clone();
            set.push(k.clone());
        }
    }
    set.sort();
    set
}

/// Every min, max and ratio a pod breaks, in upstream's words.
pub fn check_pod(ranges: &[Value], pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let containers: Vec<&Value> = ["containers", "initContainers"].iter().flat_map(|k| pod["spec"][k].as_array().into_iter().flatten()).collect();
    for range in ranges {
        for item in range["spec"]["limits"].as_array().into_iter().flatten() {
            match item["type"].as_str() {
                Some("Container") => {
                    for c in &containers {
                        check_item(item, "Container", &list(&c["resources"]["requests"]), &list(&c["resources"]["limits"]), &mut errs);
                    }
                }
                Some("Pod") => check_item(item, "Pod", &pod_resources(pod, "requests", false), &pod_resources(pod, "limits", false), &mut errs),
                _ => {}
            }
        }
    }
    errs
}

/// Every min and max storage a claim breaks.
pub fn check_claim(ranges: &[Value], claim: &Value) -> Vec<String> {
    let requests = list(&claim["spec"]["resources"]["requests"]);
    let mut errs = Vec::new();
    for item in items(ranges, "PersistentVolumeClaim") {
        let kind = "PersistentVolumeClaim";
        for (r, min) in list(&item["min"]) {
            errs.extend(min_constraint(kind, &r, &min, &requests, &ResourceList::new()));
        }
        // Only the request is held to the max: a claim's limits are not user input.
        for (r, max) in list(&item["max"]) {
            let max_text = max.canonical();
            match requests.get(&r) {
                None => errs.push(format!("maximum {r} usage per {kind} is {max_text}.  No request is specified")),
                Some(req) if compared(Some(req), None, &max).0 > compared(Some(req), None, &max).2 => {
                    errs.push(format!("maximum {r} usage per {kind} is {max_text}, but request is {}", req.canonical()))
                }
                _ => {}
            }
        }
    }
    errs
}

fn check_item(item: &Value, kind: &str, requests: &ResourceList, limits: &ResourceList, errs: &mut Vec<String>) {
    for (r, min) in list(&item["min"]) {
        errs.extend(min_constraint(kind, &r, &min, requests, limits));
    }
    for (r, max) in list(&item["max"]) {
        errs.extend(max_constraint(kind, &r, &max, requests, limits));
    }
    for (r, ratio) in list(&item["maxLimitRequestRatio"]) {
        errs.extend(ratio_constraint(kind, &r, &ratio, requests, limits));
    }
}

/// Request, limit (zero when absent) and the enforced value as comparable
/// integers: thousandths unless that could overflow.
fn compared(request: Option<&Quantity>, limit: Option<&Quantity>, enforced: &Quantity) -> (i64, i64, i64) {
    let zero = Quantity::default();
    let (request, limit) = (request.unwrap_or(&zero), limit.unwrap_or(&zero));
    let whole = (request.value(), limit.value(), enforced.value());
    if whole.0 <= MAX_MILLI_VALUE && whole.1 <= MAX_MILLI_VALUE && whole.2 <= MAX_MILLI_VALUE {
        (request.milli_value(), limit.milli_value(), enforced.milli_value())
    } else {
        whole
    }
}

fn min_constraint(kind: &str, r: &str, min: &Quantity, requests: &ResourceList, limits: &ResourceList) -> Option<String> {
    let (req, lim, text) = (requests.get(r), limits.get(r), min.canonical());
    let (rq, lm, en) = compared(req, lim, min);
    match (req, lim) {
        (None, _) => Some(format!("minimum {r} usage per {kind} is {text}.  No request is specified")),
        (Some(req), _) if rq < en => Some(format!("minimum {r} usage per {kind} is {text}, but request is {}", req.canonical())),
        (_, Some(lim)) if lm < en => Some(format!("minimum {r} usage per {kind} is {text}, but limit is {}", lim.canonical())),
        _ => None,
    }
}

fn max_constraint(kind: &str, r: &str, max: &Quantity, requests: &ResourceList, limits: &ResourceList) -> Option<String> {
    let (req, lim, text) = (requests.get(r), limits.get(r), max.canonical());
    let (rq, lm, en) = compared(req, lim, max);
    match (req, lim) {
        (_, None) => Some(format!("maximum {r} usage per {kind} is {text}.  No limit is specified")),
        (_, Some(lim)) if lm > en => Some(format!("maximum {r} usage per {kind} is {text}, but limit is {}", lim.canonical())),
        (Some(req), _) if rq > en => Some(format!("maximum {r} usage per {kind} is {text}, but request is {}", req.canonical())),
        _ => None,
    }
}

fn ratio_constraint(kind: &str, r: &str, ratio: &Quantity, requests: &ResourceList, limits: &ResourceList) -> Option<String> {
    let (rq, lm, _) = compared(requests.get(r), limits.get(r), ratio);
    let text = ratio.canonical();
    if rq == 0 {
        return Some(format!("{r} max limit to request ratio per {kind} is {text}, but no request is specified or request is 0"));
    }
    if lm == 0 {
        return Some(format!("{r} max limit to request ratio per {kind} is {text}, but no limit is specified or limit is 0"));
    }
    let observed = lm as f64 / rq as f64;
    let (scaled, allowed) = if ratio.value() <= MAX_MILLI_VALUE {
        (observed * 1000.0, ratio.milli_value() as f64)
    } else {
        (observed, ratio.value() as f64)
    };
    (scaled > allowed).then(|| format!("{r} max limit to request ratio per {kind} is {text}, but provided ratio is {observed:.6}"))
}

/// Upstream's aggregate error text: one message alone, several in brackets.
pub fn aggregate(errs: &[String]) -> Option<String> {
    match errs {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(format!("[{}]", many.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Vec<Value> {
        vec![json!({"spec": {"limits": limits}})]
    }

    #[test]
    fn defaults_fill_only_what_containers_leave_out() {
        let ranges = range(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}, {"name": "b"}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "10m", "memory": "1Mi"}, "limits": {"cpu": "10m", "memory": "1Mi"}}}]}});
        default_pod(&ranges, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["resources"], json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}));
        assert_eq!(pod["spec"]["containers"][1]["resources"]["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert_eq!(pod["spec"]["initContainers"][0]["resources"]["limits"], json!({"cpu": "10m", "memory": "1Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; memory limit for container a; cpu, memory request for container b; cpu, memory limit for container b"
        );
    }

    #[test]
    fn min_max_and_ratio_in_upstream_words() {
        let ranges = range(json!([
            {"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "10Mi"}, "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
        ]));
        let pod = |requests: Value, limits: Value| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": requests, "limits": limits}}]}});
        assert!(check_pod(&ranges, &pod(json!({"cpu": "250m", "memory": "64Mi"}), json!({"cpu": "500m", "memory": "64Mi"}))).is_empty());
        assert_eq!(
            check_pod(&ranges, &pod(json!({"cpu": "100m", "memory": "64Mi"}), json!({"cpu": "1", "memory": "2Gi"}))),
            vec![
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000",
                "maximum memory usage per Pod is 1Gi, but limit is 2Gi",
            ]
        );
        assert_eq!(check_pod(&ranges, &pod(json!({}), json!({"cpu": "100m", "memory": "64Mi"})))[0], "minimum memory usage per Container is 10Mi.  No request is specified");
        assert_eq!(aggregate(&["a".into()]).unwrap(), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]).unwrap(), "[a, b]");
    }

    #[test]
    fn claims_are_held_to_min_and_max_storage() {
        let ranges = range(json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]));
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(check_claim(&ranges, &claim("1Gi")).is_empty());
        assert_eq!(check_claim(&ranges, &claim("500Mi")), vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]);
        assert_eq!(check_claim(&ranges, &claim("5Gi")), vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]);
    }
}
