//! The pod subresources that create something: `binding` (the scheduler
//! assigning a node) and `eviction` (a disruption-budget-checked delete,
//! what `kubectl drain` uses).

use resources::catalog::{lookup, ResourceInfo};
use resources::selectors::LabelSelector;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{now_rfc3339, Registry, WriteOptions};

fn pods() -> &'static ResourceInfo {
    lookup("", "v1", "pods").unwrap()
}

fn pdb_info() -> &'static ResourceInfo {
    lookup("policy", "v1", "poddisruptionbudgets").unwrap()
}

/// Sets the pod's node, once, and marks it scheduled.
pub async fn bind(reg: &Registry, ns: Option<&str>, name: &str, binding: &Value, opts: &WriteOptions) -> ApiResult<()> {
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("target.name: Required value"));
    }
    reg.update(pods(), ns, name, Some("binding"), opts, |cur| {
        let conflict = |why: String| ApiError::conflict(pods(), name, &why);
        if cur["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
        }
        if let Some(bound) = cur["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(conflict(format!("pod {name} is already assigned to node \"{bound}\"")));
        }
        let mut pod = cur.clone();
        pod["spec"]["nodeName"] = json!(node);
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
        let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(scheduled);
        pod["status"]["conditions"] = json!(conditions);
        Ok(pod)
    })
    .await?;
    Ok(())
}

/// Deletes the pod unless that would take a PodDisruptionBudget below what it
/// allows; answers 429 like upstream when it would.
pub async fn evict(reg: &Registry, ns: Option<&str>, name: &str, eviction: &Value, opts: &WriteOptions) -> ApiResult<()> {
    let pod = reg.get(pods(), ns, name).await?;
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded") | Some("Failed"));
    if !finished && pod["metadata"]["deletionTimestamp"].is_null() {
        let pdb_info = pdb_info();
        let ns_name = ns.unwrap_or("default");
        reg.cache.sync().await?;
        let prefix = format!("/registry/{}/{}/", pdb_info.storage, ns_name);
        let labels = pod["metadata"]["labels"].as_object().cloned().unwrap_or_default();
        let budgets: Vec<Value> = reg
            .cache
            .prefix(pdb_info.storage)
            .snapshot(&prefix)
            .into_iter()
            .map(|c| c.obj())
            .filter(|pdb| LabelSelector::from_label_selector(&pdb["spec"]["selector"]).is_ok_and(|s| !s.is_empty() && s.matches(&labels)))
            .collect();
        if budgets.len() > 1 {
            return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."));
        }
        if let Some(pdb) = budgets.first().filter(|pdb| !unhealthy_may_go(&pod, pdb)) {
            let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
            budget_allows(pdb)?;
            // Spend one disruption before deleting, as upstream does, so concurrent evictions can't overspend.
            reg.update(pdb_info, Some(ns_name), &pdb_name, Some("status"), opts, |cur| {
                let mut next = cur.clone();
                budget_allows(cur)?;
                let allowed = cur["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
                // No resourceVersion precondition: a racing status write makes the update re-read and re-check.
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                next["status"]["disruptionsAllowed"] = json!(allowed - 1);
                next["status"]["disruptedPods"][name] = json!(now_rfc3339());
                Ok(next)
            })
            .await?;
        }
    }
    let options = eviction.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
    reg.delete(pods(), ns, name, &options, None, opts).await?;
    Ok(())
}

/// A pod that is not Ready does not count as healthy, so evicting it spends
/// nothing: always under `unhealthyPodEvictionPolicy: AlwaysAllow`, and under
/// the default IfHealthyBudget while the application has its healthy pods.
fn unhealthy_may_go(pod: &Value, pdb: &Value) -> bool {
    let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if ready {
        return false;
    }
    let status = &pdb["status"];
    let (current, desired) = (status["currentHealthy"].as_i64().unwrap_or(0), status["desiredHealthy"].as_i64().unwrap_or(0));
    pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" || (desired > 0 && current >= desired)
}

/// Upstream's checks before a budget is spent: its status must be current
/// and allow at least one disruption.
fn budget_allows(pdb: &Value) -> ApiResult<()> {
    let name = pdb["metadata"]["name"].as_str().unwrap_or("");
    let status = &pdb["status"];
    let refuse = |why: String| {
        let mut e = ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
        e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": why}]}));
        Err(e)
    };
    if status["observedGeneration"].as_i64().unwrap_or(0) < pdb["metadata"]["generation"].as_i64().unwrap_or(0) {
        return refuse(format!("The disruption budget {name} is still being processed by the server."));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(ApiError::forbidden(pdb_info(), name, "pdb disruptions allowed is negative"));
    }
    if status["disruptedPods"].as_object().is_some_and(|m| m.len() > MAX_DISRUPTED_PODS) {
        return Err(ApiError::forbidden(pdb_info(), name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller"));
    }
    if allowed == 0 {
        let (desired, current) = (status["desiredHealthy"].as_i64().unwrap_or(0), status["currentHealthy"].as_i64().unwrap_or(0));
        return refuse(format!("The disruption budget {name} needs {desired} healthy pods and has {current} currently"));
    }
    Ok(())
}

/// Evictions the disruption controller has not yet confirmed, at most (upstream's bound).
const MAX_DISRUPTED_PODS: usize = 2000;
