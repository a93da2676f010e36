//! The one handler for every resource request: maps the verb and
//! subresource onto the generic registry and renders the answer.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use resources::catalog::ResourceInfo;
use resources::conversion;
use resources::selectors::LabelSelector;
use serde_json::{json, Value};

use crate::collection::{self, Filter};
use crate::decode::{decode_object, parse_body};
use crate::errors::{ApiError, ApiResult};
use crate::registry::{Registry, WriteOptions};
use crate::request::{content_type, negotiate, Query, ResourceRequest, Verb};
use crate::{pods, respond};

const PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
const APPLY_PATCH: &str = "application/apply-patch+yaml";

pub async fn handle(reg: Arc<Registry>, r: ResourceRequest, q: Query, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let fmt = negotiate(&headers)?;
    let info = r.info;
    // Several versions of a kind share one storage; the registry works on the stored form.
    let stored = conversion::storage_info(info);
    let out = |v: Value| conversion::from_storage(info, v);
    let into = |v: Value| conversion::to_storage(info, v);
    let ns = r.namespace.as_deref();
    let sub = r.subresource.as_deref();
    if info.kind == "Binding" {
        // The legacy `bindings` collection: a create naming the pod in its metadata.
        if r.verb != Verb::Create || r.name.is_some() || sub.is_some() {
            return Err(ApiError::method_not_allowed());
        }
        let (body, _) = parse_body(&body, &content_type(&headers))?;
        let opts = WriteOptions { dry_run: q.dry_run()?, ..Default::default() };
        let pod = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        pods::bind(&reg, ns, &pod, &body, &opts).await?;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        return respond::object(fmt, info, &q, &status, 201, &[]);
    }
    match sub {
        None => {}
        Some("status") if info.status => {}
        Some("scale") if info.scale.is_some() => {}
        Some("finalize") if info.kind == "Namespace" && r.verb == Verb::Update => {}
        Some("ephemeralcontainers") | Some("resize") if info.kind == "Pod" => {}
        Some("binding") | Some("eviction") if info.kind == "Pod" && r.verb == Verb::Create => {
            let (body, _) = parse_body(&body, &content_type(&headers))?;
            let opts = WriteOptions { dry_run: q.dry_run()?, ..Default::default() };
            let name = r.name.as_deref().unwrap_or_default();
            if r.subresource.as_deref() == Some("binding") {
                pods::bind(&reg, ns, name, &body, &opts).await?;
            } else {
                pods::evict(&reg, ns, name, &body, &opts).await?;
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return respond::object(fmt, info, &q, &status, 201, &[]);
        }
        Some("token") if info.kind == "ServiceAccount" && r.verb == Verb::Create => {
            let (body, _) = parse_body(&body, &content_type(&headers))?;
            let out = crate::authn::token_request::create(&reg, ns.unwrap_or("default"), r.name.as_deref().unwrap_or_default(), &body, q.dry_run()?).await?;
            return respond::object(fmt, info, &q, &out, 201, &[]);
        }
        Some(_) => return Err(ApiError::path_not_found()),
    }
    if sub.is_some() && matches!(r.verb, Verb::Create | Verb::Delete | Verb::List | Verb::Watch | Verb::DeleteCollection) {
        return Err(ApiError::method_not_allowed());
    }
    if info.namespaced && ns.is_none() && matches!(r.verb, Verb::Create | Verb::Get | Verb::Update | Verb::Patch | Verb::Delete) {
        return Err(ApiError::path_not_found());
    }
    let user_agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    let manager = crate::apply::manager_or_user_agent(q.get("fieldManager").map(String::as_str), user_agent);
    let opts = WriteOptions { dry_run: q.dry_run()?, field_manager: Some(manager.clone()) };
    let untracked = WriteOptions { field_manager: None, ..opts.clone() };
    let name = r.name.clone().unwrap_or_default();
    match r.verb {
        Verb::Get => {
            let obj = reg.get(stored, ns, &name).await?;
            if sub == Some("scale") {
                return respond::object(fmt, info, &q, &to_scale(info, &obj), 200, &[]);
            }
            respond::object(fmt, info, &q, &out(obj), 200, &[])
        }
        Verb::List => collection::list(&reg, Filter::new(info, ns, &q)?, &q, fmt).await,
        Verb::Watch => {
            let mut q = q;
            if let Some(n) = &r.name {
                // A watch on one object is a watch on its collection narrowed by name.
                let fs = q.get("fieldSelector").cloned().unwrap_or_default();
                let narrowed = if fs.is_empty() { format!("metadata.name={n}") } else { format!("{fs},metadata.name={n}") };
                q.0.insert("fieldSelector".into(), narrowed);
            }
            let filter = Filter::new(info, ns, &q)?;
            collection::watch(reg, filter, &q, fmt).await
        }
        Verb::Create => {
            let (obj, warnings) = read_object(info, &q, &headers, &body)?;
            let created = reg.create(stored, ns, into(obj), &opts).await?;
            respond::object(fmt, info, &q, &out(created), 201, &warnings)
        }
        Verb::Update => {
            if sub == Some("scale") {
                let (scale, _) = parse_body(&body, &content_type(&headers))?;
                let updated = update_scale(&reg, info, ns, &name, &untracked, &manager, move |_| Ok(scale.clone())).await?;
                return respond::object(fmt, info, &q, &updated, 200, &[]);
            }
            let (obj, warnings) = read_object(info, &q, &headers, &body)?;
            let updated = if sub == Some("finalize") {
                let finalizers = obj["spec"]["finalizers"].clone();
                reg.update(info, ns, &name, None, &opts, |cur| {
                    let mut next = cur.clone();
                    next["spec"]["finalizers"] = finalizers.clone();
                    Ok(next)
                })
                .await?
            } else {
                reg.update(stored, ns, &name, sub, &opts, |_| Ok(into(obj.clone()))).await?
            };
            respond::object(fmt, info, &q, &out(updated), 200, &warnings)
        }
        Verb::Patch => {
            let ct = content_type(&headers);
            let is_apply = ct == APPLY_PATCH;
            crate::apply::check_patch_options(is_apply, q.get("fieldManager").map(String::as_str), q.get("force").is_some())?;
            if is_apply {
                return server_side_apply(&reg, info, ns, &name, sub, &q, fmt, &body, &untracked).await;
            }
            let patch = parse_patch(&ct, &body)?;
            let validation = q.field_validation()?;
            if sub == Some("scale") {
                let updated = update_scale(&reg, info, ns, &name, &untracked, &manager, |cur| apply_patch("autoscaling", "v1", "Scale", &patch, cur)).await?;
                return respond::object(fmt, info, &q, &updated, 200, &[]);
            }
            let warnings = std::sync::Mutex::new(Vec::new());
            let updated = reg
                .update(stored, ns, &name, sub, &opts, |cur| {
                    let patched = apply_patch(info.group, info.version, info.kind, &patch, &out(cur.clone()))?;
                    let (typed, w) = decode_object(info, patched, Vec::new(), validation)?;
                    *warnings.lock().unwrap() = w;
                    Ok(into(typed))
                })
                .await?;
            let warnings = warnings.into_inner().unwrap();
            respond::object(fmt, info, &q, &out(updated), 200, &warnings)
        }
        Verb::Delete => {
            let options = delete_options(&body, &headers, &q)?;
            let warnings = orphaning_warning(info, &options);
            let (obj, gone) = reg.delete(stored, ns, &name, &options, None, &opts).await?;
            if gone && !info.returns_deleted_object() {
                respond::object(fmt, info, &q, &respond::deleted_status(info, &obj), 200, &warnings)
            } else {
                respond::object(fmt, info, &q, &out(obj), 200, &warnings)
            }
        }
        Verb::DeleteCollection => {
            let options = delete_options(&body, &headers, &q)?;
            let filter = Filter::new(info, ns, &q)?;
            reg.cache.sync().await?;
            let victims = reg.cache.prefix(info.storage).snapshot(&filter.prefix);
            // Upstream answers the objects as listed, before their deletion.
            let mut listed = Vec::new();
            for c in victims.iter().filter(|c| filter.matches(c)) {
                let obj = c.obj();
                let n = obj["metadata"]["name"].as_str().unwrap_or("");
                let item_ns = obj["metadata"]["namespace"].as_str();
                match reg.delete(stored, item_ns, n, &options, None, &opts).await {
                    Ok(_) => listed.push(respond::untyped(out(obj.clone()))),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": reg.cache.revision().to_string()}, "items": listed});
            respond::object(fmt, info, &q, &list, 200, &orphaning_warning(info, &options))
        }
    }
}

/// A create/update body: parsed, checked against the kind's schema.
fn read_object(info: &ResourceInfo, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
    let (obj, dups) = parse_body(body, &content_type(headers))?;
    decode_object(info, obj, dups, q.field_validation()?)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Upstream warns that a Job deleted without a propagation policy leaves its
/// pods behind (batch/v1's default); other kinds keep quiet.
fn orphaning_warning(info: &ResourceInfo, options: &Value) -> Vec<String> {
    let unset = options["propagationPolicy"].is_null() && options["orphanDependents"].is_null();
    if unset && info.group == "batch" && info.plural == "jobs" {
        vec!["child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning".to_string()]
    } else {
        Vec::new()
    }
}

fn delete_options(body: &[u8], headers: &HeaderMap, q: &Query) -> ApiResult<Value> {
    let mut options = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body, &content_type(headers))?.0
    };
    if !options.is_object() {
        return Err(ApiError::bad_request(format!("the request body must be a DeleteOptions object, not {}", kind_of(&options))));
    }
    if let Some(g) = q.int("gracePeriodSeconds")? {
        options["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        options["propagationPolicy"] = json!(p);
    }
    match options["propagationPolicy"].as_str() {
        None | Some("Orphan") | Some("Background") | Some("Foreground") => Ok(options),
        Some(p) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

enum Patch {
    Json(json_patch::Patch),
    Merge(Value),
    Strategic(Value),
}

fn parse_patch(ct: &str, body: &[u8]) -> ApiResult<Patch> {
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("error decoding patch: {e}"));
    match ct {
        "application/json-patch+json" => Ok(Patch::Json(serde_json::from_slice(body).map_err(bad)?)),
        "application/merge-patch+json" => Ok(Patch::Merge(serde_json::from_slice(body).map_err(bad)?)),
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(serde_json::from_slice(body).map_err(bad)?)),
        _ => Err(ApiError::unsupported_media_type(PATCH_TYPES)),
    }
}

/// Applies a patch to the object as the request's version (`group`/`version`/`kind`) sees it.
fn apply_patch(group: &str, version: &str, kind: &str, patch: &Patch, current: &Value) -> ApiResult<Value> {
    let mut doc = current.clone();
    match patch {
        Patch::Strategic(p) => {
            return crate::strategic::apply(group, version, kind, current, p).map_err(|m| match crate::strategic::error_code(&m) {
                400 => ApiError::bad_request(m),
                422 => ApiError::new(422, "Invalid", m),
                _ => ApiError::internal(m),
            })
        }
        Patch::Json(p) => json_patch::patch(&mut doc, p)
            .map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?,
        Patch::Merge(p) => json_patch::merge(&mut doc, p),
    }
    Ok(doc)
}

/// The autoscaling/v1 Scale view of a scalable object.
fn to_scale(info: &ResourceInfo, obj: &Value) -> Value {
    let sel = &obj["spec"]["selector"];
    let selector = if info.scale.is_some_and(|s| s.selector_is_map) {
        sel.as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    } else {
        LabelSelector::from_label_selector(sel).map(|s| s.to_string()).unwrap_or_default()
    };
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Writes a Scale back to its object's spec.replicas.
async fn update_scale<F>(reg: &Registry, info: &ResourceInfo, ns: Option<&str>, name: &str, opts: &WriteOptions, manager: &str, change: F) -> ApiResult<Value>
where
    F: Fn(&Value) -> ApiResult<Value>,
{
    let updated = reg
        .update(info, ns, name, None, opts, |cur| {
            let scale = change(&to_scale(info, cur))?;
            let replicas = &scale["spec"]["replicas"];
            if replicas.as_i64().is_some_and(|r| r < 0) {
                let detail = "must be greater than or equal to 0";
                let mut e = ApiError::new(
                    422,
                    "Invalid",
                    format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: {detail}"),
                );
                e.details = Some(json!({"name": name, "group": "autoscaling", "kind": "Scale",
                    "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: must be greater than or equal to 0", "field": "spec.replicas"}]}));
                return Err(e);
            }
            let mut next = cur.clone();
            next["spec"]["replicas"] = json!(replicas.as_i64().unwrap_or(0));
            crate::apply::record_update(info, Some("scale"), Some(cur), &mut next, manager, &crate::registry::now_rfc3339());
            // A resourceVersion in the Scale is the client's precondition on the object.
            if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
                next["metadata"]["resourceVersion"] = json!(rv);
            }
            Ok(next)
        })
        .await?;
    Ok(to_scale(info, &updated))
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply, which
/// creates the object when it does not exist (201).
#[allow(clippy::too_many_arguments)]
async fn server_side_apply(
    reg: &Registry,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    q: &Query,
    fmt: crate::request::Format,
    body: &[u8],
    opts: &WriteOptions,
) -> ApiResult<Response> {
    let stored = conversion::storage_info(info);
    let out = |v: Value| conversion::from_storage(info, v);
    let into = |v: Value| conversion::to_storage(info, v);
    let manager = q.get("fieldManager").cloned().unwrap_or_default();
    let force = q.flag("force");
    let validation = q.field_validation()?;
    let applied: Value = serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            applied["metadata"]["name"].as_str().unwrap_or("")
        )));
    }
    let now = crate::registry::now_rfc3339();
    let warnings = std::sync::Mutex::new(Vec::new());
    for _ in 0..3 {
        let result = reg
            .update(stored, ns, name, sub, opts, |cur| {
                let next = crate::apply::apply(info, sub, Some(&out(cur.clone())), &applied, &manager, force, &now)?;
                let (typed, w) = decode_object(info, next, Vec::new(), validation)?;
                *warnings.lock().unwrap() = w;
                Ok(into(typed))
            })
            .await;
        match result {
            Ok(updated) => {
                let w = warnings.lock().unwrap().clone();
                return respond::object(fmt, info, q, &out(updated), 200, &w);
            }
            Err(e) if e.code == 404 && sub.is_none() => {
                let next = crate::apply::apply(info, None, None, &applied, &manager, force, &now)?;
                let (typed, w) = decode_object(info, next, Vec::new(), validation)?;
                match reg.create(stored, ns, into(typed), opts).await {
                    Ok(created) => return respond::object(fmt, info, q, &out(created), 201, &w),
                    Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::internal("apply kept racing with concurrent writes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_that_are_not_an_object_are_a_bad_request() {
        let q = Query::parse(Some("gracePeriodSeconds=3"));
        let err = delete_options(b"[1,2]", &HeaderMap::new(), &q).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "the request body must be a DeleteOptions object, not an array"));
        let ok = delete_options(b"{}", &HeaderMap::new(), &q).unwrap();
        assert_eq!(ok["gracePeriodSeconds"], 3);
    }
}
