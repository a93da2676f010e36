//! `POST .../serviceaccounts/NAME/token`: a TokenRequest
//! (authentication.k8s.io/v1) answered with a signed, bound, expiring token,
//! as `kubectl create token` and the node agent's projected volumes ask.

use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use super::service_account::{claims, Binding, Ref};
use crate::errors::{ApiError, ApiResult};
use crate::registry::Registry;

const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;
/// What the ServiceAccount admission plugin asks for: the token is issued
/// for a year but the kubelet still refreshes it hourly (upstream's
/// `--service-account-extend-token-expiration`, on by default).
const EXTENDED_WHEN_ASKED: i64 = 3607;
const EXTENDED_SECONDS: i64 = 365 * 24 * 3600;

pub async fn create(reg: &Registry, ns: &str, name: &str, body: &Value, dry_run: bool) -> ApiResult<Value> {
    let auth = &reg.authn;
    let sa_info = resources::catalog::lookup("", "v1", "serviceaccounts").unwrap();
    let sa = reg.get(sa_info, Some(ns), name).await?;
    let spec = &body["spec"];
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(invalid(name, seconds, "may not specify a duration less than 10 minutes"));
    }
    if seconds > 1 << 32 {
        return Err(invalid(name, seconds, "may not specify a duration larger than 2^32 seconds"));
    }
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => auth.audiences.clone(),
    };
    let uid_of = |v: &Value| v["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let mut binding = Binding { namespace: ns.into(), service_account: (name.into(), uid_of(&sa)), pod: None, secret: None, node: None };
    let mut bound_ref = spec["boundObjectRef"].clone();
    if bound_ref.is_object() {
        let text = |k: &str, or: &str| bound_ref[k].as_str().unwrap_or(or).to_string();
        let (kind, obj_name, api_version) = (text("kind", ""), text("name", ""), text("apiVersion", "v1"));
        let (kind, obj_name, api_version) = (kind.as_str(), obj_name.as_str(), api_version.as_str());
        let (plural, obj_ns) = match (api_version, kind) {
            ("v1", "Pod") => ("pods", Some(ns)),
            ("v1", "Secret") => ("secrets", Some(ns)),
            ("v1", "Node") => ("nodes", None),
            _ => {
                let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to object of type {}, Kind={kind}",
                    if group.is_empty() { format!("/{}", api_version) } else { api_version.to_string() }
                )));
            }
        };
        let info = resources::catalog::lookup("", "v1", plural).unwrap();
        let obj = reg.get(info, obj_ns, obj_name).await?;
        let uid = uid_of(&obj);
        if bound_ref["uid"].as_str().is_some_and(|want| !want.is_empty() && want != uid) {
            let why = format!("the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated", bound_ref["uid"].as_str().unwrap_or_default());
            let mut e = ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {kind} {obj_name:?}: {why}"));
            e.details = Some(json!({"name": obj_name, "kind": kind}));
            return Err(e);
        }
        bound_ref["uid"] = json!(uid);
        bound_ref["apiVersion"] = json!(api_version);
        let r: Ref = (obj_name.to_string(), uid);
        match kind {
            "Pod" => {
                if obj["spec"]["serviceAccountName"].as_str().unwrap_or("default") != name {
                    return Err(ApiError::bad_request(format!("cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name.")));
                }
                // The pod's node goes into the token too (upstream's ServiceAccountTokenPodNodeInfo).
                if let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                    let node_info = resources::catalog::lookup("", "v1", "nodes").unwrap();
                    let n = reg.get(node_info, None, node).await.map_err(|e| ApiError::internal(format!("failed to get node {node:?} for pod {obj_name:?}: {}", e.message)))?;
                    binding.node = Some((node.to_string(), uid_of(&n)));
                }
                binding.pod = Some(r);
            }
            "Secret" => binding.secret = Some(r),
            _ => binding.node = Some(r),
        }
    }
    let now = Utc::now().timestamp();
    let extend = binding.pod.is_some() && seconds == EXTENDED_WHEN_ASKED && audiences == auth.audiences;
    let (lifetime, warn_after) = if extend { (EXTENDED_SECONDS, Some(now + seconds)) } else { (seconds, None) };
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": seconds});
    if bound_ref.is_object() {
        out_spec["boundObjectRef"] = bound_ref;
    }
    let mut out = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": "", "expirationTimestamp": null},
    });
    if dry_run {
        return Ok(out);
    }
    let token = auth.key.sign(&claims(&auth.issuer, &audiences, &binding, now, lifetime, warn_after));
    let expires = Utc.timestamp_opt(now + seconds, 0).unwrap().to_rfc3339_opts(SecondsFormat::Secs, true);
    out["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(out)
}

fn invalid(name: &str, seconds: i64, why: &str) -> ApiError {
    let message = format!("Invalid value: {seconds}: {why}");
    let mut e = ApiError::new(422, "Invalid", format!("TokenRequest.authentication.k8s.io {name:?} is invalid: spec.expirationSeconds: {message}"));
    e.details = Some(json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "spec.expirationSeconds"}]}));
    e
}
