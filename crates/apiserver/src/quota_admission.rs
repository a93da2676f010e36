//! ResourceQuota admission, as upstream's plugin: a write that adds usage
//! in a namespace with quotas is checked against every quota that governs
//! it and, when allowed, charged to their `status.used` before the object
//! is stored. The charge is a compare-and-swap on each quota, so concurrent
//! writes cannot both take the last unit: the loser re-reads and is checked
//! again. The quota controller later recounts from the objects themselves.

use chrono::Utc;
use resources::catalog::ResourceInfo;
use resources::quota::{self, ResourceList};
use serde_json::Value;

use crate::cache::decode_value;
use crate::errors::{ApiError, ApiResult};
use crate::registry::{name_of, Registry};

const STORAGE: &str = "resourcequotas";
/// Rounds of re-reading quotas another write changed first.
const MAX_RETRIES: usize = 100;

/// Whether a write of this kind can change usage: creates of anything;
/// updates only of Services (type and ports) and claims (resizes).
fn handles(info: &ResourceInfo, update: bool) -> bool {
    !update || (info.group.is_empty() && matches!(info.plural, "services" | "persistentvolumeclaims"))
}

/// One governing quota's new usage, or why the write is refused.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing to charge to this quota.
    Untouched,
    Charge(ResourceList),
    Refuse(String),
}

/// What admitting `obj` (replacing `old`) does to one quota; pure.
pub fn decide(quota: &Value, group: &str, plural: &str, obj: &Value, old: Option<&Value>, now: chrono::DateTime<Utc>) -> Decision {
    if !quota::matches(quota, group, plural, obj) {
        return Decision::Untouched;
    }
    let name = name_of(quota);
    let hard = quota::list(&quota["status"]["hard"]);
    let used = quota::list(&quota["status"]["used"]);
    let restricted = quota::matching_resources(group, plural, hard.keys());
    if group.is_empty() && plural == "pods" {
        if let Err(why) = quota::pod_constraints(&restricted, obj) {
            return Decision::Refuse(format!("failed quota: {name}: {why}"));
        }
    }
    if restricted.iter().any(|r| !used.contains_key(r)) {
        return Decision::Refuse(format!("status unknown for quota: {name}, resources: {}", restricted.join(",")));
    }
    let mut delta = quota::usage(group, plural, obj, now);
    if let Some(old) = old {
        delta = quota::sub_non_negative(&delta, &quota::usage(group, plural, old, now));
    }
    let requested: ResourceList = quota::mask(&delta, hard.keys()).into_iter().filter(|(_, q)| !q.is_zero()).collect();
    if requested.is_empty() {
        return Decision::Untouched;
    }
    let new_used = quota::add(&used, &requested);
    let over = quota::exceeded(&quota::mask(&new_used, requested.keys()), &hard);
    if !over.is_empty() {
        return Decision::Refuse(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            quota::pretty(&quota::mask(&requested, &over)),
            quota::pretty(&quota::mask(&used, &over)),
            quota::pretty(&quota::mask(&hard, &over)),
        ));
    }
    Decision::Charge(new_used)
}

/// Checks a create (`old` None) or update of a namespaced object against
/// the namespace's quotas and charges them (not for a dry run).
pub async fn admit(reg: &Registry, info: &ResourceInfo, ns: &str, obj: &Value, old: Option<&Value>, dry_run: bool) -> ApiResult<()> {
    if !handles(info, old.is_some()) {
        return Ok(());
    }
    let prefix = format!("/registry/{STORAGE}/{ns}/");
    // The cache answers the common case, a namespace without quotas, cheaply.
    if reg.cache.prefix(STORAGE).snapshot(&prefix).is_empty() {
        return Ok(());
    }
    for _ in 0..MAX_RETRIES {
        let listed = reg.store.list(&prefix, None, 0, None).await?;
        let now = Utc::now();
        let mut charges = Vec::new();
        for kv in &listed.items {
            let q = decode_value(kv)?;
            match decide(&q, info.group, info.plural, obj, old, now) {
                Decision::Untouched => {}
                Decision::Refuse(why) => return Err(ApiError::forbidden(info, name_of(obj), &why)),
                Decision::Charge(used) => charges.push((kv, q, used)),
            }
        }
        if dry_run {
            return Ok(());
        }
        let mut conflicted = false;
        for (kv, mut q, used) in charges {
            q["status"]["used"] = quota::to_json(&used);
            q["metadata"].as_object_mut().map(|m| m.shift_remove("resourceVersion"));
            let bytes = bytes::Bytes::from(serde_json::to_vec(&q).map_err(ApiError::internal)?);
            match reg.store.update(&kv.key, bytes, kv.mod_revision).await {
                Ok(_) => {}
                // Quotas charged before the conflict keep their charge: the
                // controller's recount returns any excess, as upstream's does.
                Err(store::Error::Conflict { .. } | store::Error::NotFound(_)) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(ApiError::internal("resource quota evaluation timed out"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> chrono::DateTime<Utc> {
        Utc::now()
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let resources = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c}, "limits": {"cpu": c}}));
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn a_pod_over_the_count_is_refused_in_upstream_words() {
        let q = quota(json!({"pods": "2"}), json!({"pods": "2"}));
        assert_eq!(decide(&q, "", "pods", &pod(None), None, now()), Decision::Refuse("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into()));
        let q = quota(json!({"pods": "2"}), json!({"pods": "1"}));
        assert_eq!(decide(&q, "", "pods", &pod(None), None, now()), Decision::Charge(quota::list(&json!({"pods": "2"}))));
    }

    #[test]
    fn tracked_compute_must_be_specified_and_fit() {
        let q = quota(json!({"requests.cpu": "1", "limits.cpu": "1"}), json!({"requests.cpu": "800m", "limits.cpu": "800m"}));
        assert_eq!(decide(&q, "", "pods", &pod(None), None, now()), Decision::Refuse("failed quota: q: must specify limits.cpu for: c; requests.cpu for: c".into()));
        assert_eq!(
            decide(&q, "", "pods", &pod(Some("500m")), None, now()),
            Decision::Refuse("exceeded quota: q, requested: limits.cpu=500m,requests.cpu=500m, used: limits.cpu=800m,requests.cpu=800m, limited: limits.cpu=1,requests.cpu=1".into())
        );
    }

    #[test]
    fn unrelated_kinds_and_unknown_status() {
        let q = quota(json!({"pods": "1"}), json!({"pods": "0"}));
        assert_eq!(decide(&q, "", "configmaps", &json!({}), None, now()), Decision::Untouched);
        let fresh = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
        assert_eq!(decide(&fresh, "", "pods", &pod(None), None, now()), Decision::Untouched, "not governing before the controller sets status.hard");
        let partial = quota(json!({"pods": "1", "count/pods": "1"}), json!({"pods": "0"}));
        assert_eq!(decide(&partial, "", "pods", &pod(None), None, now()), Decision::Refuse("status unknown for quota: q, resources: count/pods,pods".into()));
    }

    #[test]
    fn updates_are_charged_their_growth_only() {
        let q = quota(json!({"requests.storage": "3Gi"}), json!({"requests.storage": "2Gi"}));
        let claim = |s: &str| json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": s}}}});
        assert_eq!(decide(&q, "", "persistentvolumeclaims", &claim("1Gi"), Some(&claim("2Gi")), now()), Decision::Untouched);
        assert_eq!(decide(&q, "", "persistentvolumeclaims", &claim("3Gi"), Some(&claim("2Gi")), now()), Decision::Charge(quota::list(&json!({"requests.storage": "3Gi"}))));
        assert!(matches!(decide(&q, "", "persistentvolumeclaims", &claim("4Gi"), Some(&claim("2Gi")), now()), Decision::Refuse(_)));
        let svc = |ty: &str| json!({"metadata": {"name": "s"}, "spec": {"type": ty, "ports": [{"port": 80}]}});
        let q = quota(json!({"services.nodeports": "0"}), json!({"services.nodeports": "0"}));
        assert_eq!(
            decide(&q, "", "services", &svc("NodePort"), Some(&svc("ClusterIP")), now()),
            Decision::Refuse("exceeded quota: q, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0".into())
        );
    }
}
