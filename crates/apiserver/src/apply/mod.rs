//! Server-side apply and field management (`metadata.managedFields`), after
//! upstream's structured-merge-diff and apiserver field manager.
//!
//! Every write records who owns which fields. An apply (`PATCH` with
//! `application/apply-patch+yaml`) makes its manager's `Apply` entry exactly
//! the fields of the applied configuration, merges the configuration into
//! the object, removes what the manager applied before and applies no more
//! (when nobody else owns it), and fails with conflicts when it would change
//! a field another manager owns, unless forced (then the field changes
//! hands). Other writes (create, update, non-apply patch) give the fields
//! they changed to the writer's `Update` entry and take them from the
//! other managers.
//!
//! Field sets leave out what the server owns (`apiVersion`, `kind`,
//! `metadata.name`, `uid`, ...), the status of a kind with a status
//! subresource (for writes to the main resource; writes to `/status` own
//! only the status), and empty entries. Entries are sorted like upstream's:
//! `Apply` before `Update`, then by time, manager, apiVersion, subresource.
//!
//! Deviations: objects are not converted between versions (an entry keeps
//! the paths of the version it was written in), the at most ten `Update`
//! entries upstream keeps are not capped, and the zero object a create is
//! compared against is approximated per kind (see [`typed::zero_object`]).

mod fieldpath;
mod managed;
mod schema;
mod typed;

#[cfg(test)]
mod tests;

use resources::catalog::ResourceInfo;
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use fieldpath::{fields, Path, Set};
use managed::{Entry, Operation};
use schema::Ty;

/// The manager upstream credits with the fields of an object that had no
/// managed fields when it was first applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The client-side apply annotation, which `kubectl` server-side apply
/// keeps in step and may take ownership from.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One field an apply would take from another manager.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    /// The version the other manager wrote in (printed for `Update` managers).
    pub api_version: String,
    pub subresource: String,
    /// The field, as upstream prints it: `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    /// Upstream's `printManager`: `"name"`, with ` with subresource "s"`
    /// and, for an updater, ` using apps/v1`.
    fn describe(&self) -> String {
        let mut s = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {}", go_quote(&self.subresource));
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

fn go_quote(s: &str) -> String {
    fieldpath::go_json(&Value::String(s.to_string()))
}

#[derive(Debug)]
pub enum ApplyError {
    /// 409 Conflict: fields other managers own (see [`conflict_message`]).
    Conflicts(Vec<Conflict>),
    /// 400 Bad Request with this message.
    BadRequest(String),
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        match e {
            ApplyError::BadRequest(m) => ApiError::bad_request(m),
            ApplyError::Conflicts(c) => conflict_error(&c),
        }
    }
}

/// The 409 of an apply with conflicts, upstream's Status: the message of
/// [`conflict_message`] and one `FieldManagerConflict` cause per field.
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.describe()), "field": c.field}))
        .collect();
    let mut e = ApiError::new(409, "Conflict", conflict_message(conflicts));
    e.details = Some(json!({ "causes": causes }));
    e
}

/// `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply"
/// using apps/v1: .spec.replicas`, or for several, the fields listed under
/// each manager (managers sorted).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.describe(), c.field);
    }
    let mut managers: Vec<&Conflict> = Vec::new();
    for c in conflicts {
        if !managers.iter().any(|m| m.describe() == c.describe()) {
            managers.push(c);
        }
    }
    managers.sort_by(|a, b| (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(&b.manager, &b.operation, &b.api_version, &b.subresource)));
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {}:", m.describe()));
        for c in conflicts.iter().filter(|c| c.describe() == m.describe()) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// Checks the options of a PATCH as upstream's ValidatePatchOptions does:
/// an apply needs a fieldManager, `force` is for applies only, a manager
/// name is at most 128 bytes. The errors are upstream's 422s.
pub fn check_patch_options(apply: bool, field_manager: Option<&str>, force_given: bool) -> Result<(), ApiError> {
    let manager = field_manager.unwrap_or("");
    let mut errs: Vec<(&str, &str, String)> = Vec::new();
    if !apply && force_given {
        errs.push(("FieldValueForbidden", "force", "Forbidden: may not be specified for non-apply patch".into()));
    }
    if apply && manager.is_empty() {
        errs.push(("FieldValueRequired", "fieldManager", "Required value: is required for apply patch".into()));
    }
    if manager.len() > 128 {
        errs.push(("FieldValueTooLong", "fieldManager", "Too long: may not be more than 128 bytes".into()));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = errs.iter().map(|(_, f, m)| format!("{f}: {m}")).collect();
    let summary = if let [one] = listed.as_slice() { one.clone() } else { format!("[{}]", listed.join(", ")) };
    let causes: Vec<Value> = errs.iter().map(|(r, f, m)| json!({"reason": r, "message": m, "field": f})).collect();
    let mut e = ApiError::new(422, "Invalid", format!("PatchOptions.meta.k8s.io \"\" is invalid: {summary}"));
    e.details = Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": causes}));
    Err(e)
}

/// The manager of a write that is not an apply: the `fieldManager` query
/// parameter, else the user agent up to its first `/` (printable
/// characters, at most 128 bytes), as upstream's `managerOrUserAgent`.
pub fn manager_or_user_agent(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let prefix = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 128 {
            break;
        }
        out.push(c);
    }
    out
}

/// The paths no manager owns: the server sets them.
fn stripped() -> Set {
    let mut s = Set::new();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        s.insert(&fields(p));
    }
    s
}

/// What a write through `subresource` may own: the status alone through
/// `/status`; everything but the status through the main resource of a
/// kind with a status subresource (upstream's reset fields).
fn owned_part(info: &ResourceInfo, subresource: Option<&str>, set: &Set) -> Set {
    let status: Vec<Path> = vec![fields(&["status"])];
    match subresource {
        Some("status") => set.only_prefixes(&status),
        _ if info.status => set.without_prefixes(&status),
        _ => set.clone(),
    }
}

fn subresource_name(subresource: Option<&str>) -> String {
    subresource.unwrap_or("").to_string()
}

fn gvk_string(info: &ResourceInfo) -> String {
    format!("{}/{}, Kind={}", info.group, info.version, info.kind)
}

/// Applies `applied` (the user's configuration, JSON) for `manager` to `live`
/// (None: the object is created), through `subresource` (None for the main
/// resource). Returns the object to store, `metadata.managedFields` updated,
/// or the conflicts with other managers (never when `force`).
pub fn apply(
    info: &ResourceInfo,
    subresource: Option<&str>,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let Value::Object(config) = applied else {
        return Err(ApplyError::BadRequest("error decoding YAML: the applied configuration is not an object".into()));
    };
    let api_version = info.api_version();
    let gvk = |v: &Map<String, Value>| {
        let av = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let (g, ver) = av.rsplit_once('/').unwrap_or(("", av));
        format!("{g}/{ver}, Kind={}", v.get("kind").and_then(Value::as_str).unwrap_or(""))
    };
    if gvk(config) != gvk_string(info) {
        return Err(ApplyError::BadRequest(format!("invalid object type: {}", gvk(config))));
    }
    if config.get("metadata").and_then(|m| m.get("managedFields")).is_some_and(|f| !f.is_null()) {
        return Err(ApplyError::BadRequest("metadata.managedFields must be nil".into()));
    }
    let ty = Ty::root(info.group, info.version, info.kind);
    let mut config = Value::Object(config.clone());
    match subresource {
        Some("status") => {
            if let Value::Object(m) = &mut config {
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            }
        }
        _ if info.status => {
            config.as_object_mut().map(|m| m.remove("status"));
        }
        _ => {}
    }
    let config_set = typed::field_set(&config, ty).map_err(|e| {
        let meta = &applied["metadata"];
        let nn = format!("{}/{}", meta["namespace"].as_str().unwrap_or(""), meta["name"].as_str().unwrap_or(""));
        ApplyError::BadRequest(format!("failed to create typed patch object ({nn}; {}): {e}", gvk_string(info)))
    })?;

    let live_obj = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = managed::decode(&live_obj).unwrap_or_default();
    if entries.is_empty() && live.is_some() {
        // Upstream credits what the object already has to a manager of its own.
        let mut from_zero = live_obj.clone();
        record_update(info, subresource, None, &mut from_zero, BEFORE_FIRST_APPLY, now);
        entries = managed::decode(&from_zero).unwrap_or_default();
        for e in &mut entries {
            e.time = Some(now.to_string());
        }
    }
    let me = Entry::new(manager, Operation::Apply, &api_version, &subresource_name(subresource));
    let last = entries.iter().find(|e| e.same_manager(&me)).map(|e| e.set.clone()).unwrap_or_default();

    let merged = typed::merge(&live_obj, &config, ty);
    let mine = owned_part(info, subresource, &config_set);
    let others: Vec<Entry> = entries.iter().filter(|e| !e.same_manager(&me)).cloned().collect();

    // What the manager applied before and no longer does goes, unless
    // someone else (or the new configuration) owns it.
    let mut pruned = merged;
    if !last.is_empty() {
        let mut owned = config_set.union(&stripped());
        for e in &others {
            owned = owned.union(&e.set);
        }
        let gone = last.with_field_members().difference(&owned.with_field_members());
        typed::remove_items(&mut pruned, &gone, ty);
    }

    let cmp = typed::compare(&live_obj, &pruned, ty);
    let changed = owned_part(info, subresource, &cmp.added.union(&cmp.modified));
    let removed = owned_part(info, subresource, &cmp.removed);
    let conflicts: Vec<(usize, Set)> = others
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e.set.intersection(&changed)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        let mut list = Vec::new();
        let allowed = if manager == "kubectl" { allowed_from_last_applied(info, &live_obj, ty) } else { None };
        for (i, set) in &conflicts {
            let e = &others[*i];
            for p in set.paths() {
                if allowed.as_ref().is_some_and(|a| a.has(&p)) {
                    continue;
                }
                list.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.as_str().to_string(),
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    field: fieldpath::path_string(&p),
                });
            }
        }
        if !list.is_empty() {
            return Err(ApplyError::Conflicts(list));
        }
    }

    let content_changed = strip_managed(&pruned) != strip_managed(&live_obj);
    let mut next: Vec<Entry> = Vec::new();
    for mut e in others {
        e.set = e.set.difference(&changed).difference(&removed);
        next.push(e);
    }
    let previous_time = entries.iter().find(|e| e.same_manager(&me)).and_then(|e| e.time.clone());
    let mut mine_entry = me;
    mine_entry.set = mine;
    mine_entry.time = if content_changed { Some(now.to_string()) } else { previous_time };
    next.push(mine_entry);

    let mut out = pruned;
    if manager == "kubectl" && has_last_applied(&out) {
        out["metadata"]["annotations"][LAST_APPLIED] = Value::String(last_applied(applied));
    }
    managed::store(&mut out, next, &stripped());
    Ok(out)
}

/// Records a write that is not an apply (create when `old` is None,
/// update, non-apply patch) by `manager` through `subresource`: the fields
/// that changed from `old` to `new` become `manager`'s (its `Update` entry
/// for this apiVersion and subresource, timestamped `now`) and stop being
/// anyone else's; removed fields stop being anyone's. Managed fields the
/// request carries replace the stored ones (`[]` or `[{}]` clears them) as
/// upstream allows, except through a subresource. An existing object with
/// no managed fields stays untracked, as upstream leaves it.
pub fn record_update(info: &ResourceInfo, subresource: Option<&str>, old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let from_old = || old.and_then(|o| managed::decode(o).ok()).unwrap_or_default();
    let given = &new["metadata"]["managedFields"];
    let entries = if subresource.is_some() {
        from_old()
    } else if managed::is_reset(given) {
        Vec::new()
    } else {
        match managed::decode(new) {
            Ok(e) if !e.is_empty() => e,
            _ => from_old(),
        }
    };
    if entries.is_empty() && old.is_some() {
        managed::store(new, Vec::new(), &stripped());
        return;
    }
    let ty = Ty::root(info.group, info.version, info.kind);
    let zero;
    let before = match old {
        Some(o) => o,
        None => {
            zero = typed::zero_object(info.kind, ty);
            &zero
        }
    };
    let cmp = typed::compare(&strip_managed(before), &strip_managed(new), ty);
    let changed = owned_part(info, subresource, &cmp.added.union(&cmp.modified));
    let removed = owned_part(info, subresource, &cmp.removed);
    let mut next: Vec<Entry> = entries
        .into_iter()
        .map(|mut e| {
            e.set = e.set.difference(&changed).difference(&removed);
            e
        })
        .collect();
    let current = changed.difference(&stripped());
    if !current.is_empty() {
        let me = Entry::new(manager, Operation::Update, &info.api_version(), &subresource_name(subresource));
        match next.iter_mut().find(|e| e.same_manager(&me)) {
            Some(e) => {
                e.set = e.set.union(&current);
                e.time = Some(now.to_string());
            }
            None => next.push(Entry { set: current, time: Some(now.to_string()), ..me }),
        }
    }
    managed::store(new, next, &stripped());
}

/// The object without its managed fields.
fn strip_managed(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

fn has_last_applied(obj: &Value) -> bool {
    obj["metadata"]["annotations"][LAST_APPLIED].as_str().is_some_and(|s| !s.is_empty())
}

/// The client-side apply annotation for an applied configuration: the
/// configuration without the annotation, keys sorted, as kubectl writes it.
fn last_applied(applied: &Value) -> String {
    let mut v = applied.clone();
    if let Some(a) = v.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
    }
    format!("{}\n", fieldpath::go_json(&sorted(&v)))
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The fields `kubectl` may take over without conflict: those of the
/// client-side apply annotation whose values the object still has
/// (upstream's upgrade from client-side to server-side apply).
fn allowed_from_last_applied(info: &ResourceInfo, live: &Value, ty: Ty) -> Option<Set> {
    let text = live["metadata"]["annotations"][LAST_APPLIED].as_str().filter(|s| !s.is_empty())?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last["apiVersion"].as_str() != Some(info.api_version().as_str()) {
        return None;
    }
    let set = typed::field_set(&last, ty).ok()?;
    let cmp = typed::compare(&last, live, ty);
    Some(set.difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed))
}
