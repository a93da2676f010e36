//! The generic registry: create, read, update and delete of any catalog kind
//! against the store, with the per-kind hooks (defaults, strategy,
//! validation, admission) applied in upstream's order.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use resources::catalog::ResourceInfo;
use resources::{defaults, strategy, validation};
use serde_json::{json, Value};
use store::{DynStore, KeyValue};

use crate::admission::Admission;
use crate::cache::{decode_value, set_resource_version, Cached, WatchCache};
use crate::errors::{ApiError, ApiResult};

/// Options shared by the write verbs.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// The manager credited with the fields a create or update changes
    /// (managedFields); None for writes not tracked (internal ones, and
    /// applies, which record their own).
    pub field_manager: Option<String>,
}

pub struct Registry {
    pub store: DynStore,
    pub cache: Arc<WatchCache>,
    pub admission: Admission,
    /// Who requests come from, and the ServiceAccount token signer.
    pub authn: crate::authn::Authenticator,
}

pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("/registry/{}/{}/{}", info.storage, ns, name),
        _ => format!("/registry/{}/{}", info.storage, name),
    }
}

/// The key prefix of a collection: every namespace, or one.
pub fn collection_prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("/registry/{}/{}/", info.storage, ns),
        _ => format!("/registry/{}/", info.storage),
    }
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().unwrap()
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// Stored objects always carry their apiVersion and kind.
fn set_type(info: &ResourceInfo, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
}

fn encode(obj: &Value) -> Bytes {
    let mut obj = obj.clone();
    meta(&mut obj).shift_remove("resourceVersion");
    Bytes::from(serde_json::to_vec(&obj).unwrap_or_default())
}

fn with_rev(mut obj: Value, kv: &KeyValue) -> Value {
    set_resource_version(&mut obj, kv.mod_revision);
    obj
}

pub(crate) fn random_suffix() -> String {
    // Upstream's alphabet: no vowels (no words) and no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

fn check_invalid(info: &ResourceInfo, obj: &Value, errs: Vec<validation::FieldError>) -> ApiResult<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name_of(obj), &errs))
    }
}

impl Registry {
    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.store.get(&key(info, ns, name)).await? {
            Some(kv) => decode_value(&kv),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    pub async fn create(&self, info: &ResourceInfo, ns: Option<&str>, mut obj: Value, opts: &WriteOptions) -> ApiResult<Value> {
        set_type(info, &mut obj);
        let m = meta(&mut obj);
        if m.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        if info.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && Some(n) != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {}
            }
            m.insert("namespace".into(), json!(ns.unwrap_or("default")));
        } else {
            m.remove("namespace");
        }
        let has_name = m.get("name").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        if !has_name {
            if let Some(prefix) = m.get("generateName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                let generated = format!("{prefix}{}", random_suffix());
                m.insert("name".into(), json!(generated));
            }
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(k);
        }
        if info.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        strategy::prepare_for_create(info, &mut obj);
        defaults::apply(info.group, info.kind, &mut obj);
        if let Some(m) = &opts.field_manager {
            crate::apply::record_update(info, None, None, &mut obj, m, &now_rfc3339());
        }
        check_invalid(info, &obj, validation::validate(info.group, info.kind, &obj, None))?;
        let name = name_of(&obj).to_string();
        let _allocating = self.service_lock(info).await;
        self.admission.admit_create(self, info, ns, &mut obj, opts.dry_run).await?;
        crate::go_form::shape(&mut obj);
        if opts.dry_run {
            return Ok(obj);
        }
        let kv = self.store.create(&key(info, ns, &name), encode(&obj)).await.map_err(|e| match e {
            store::Error::AlreadyExists(_) => ApiError::already_exists(info, &name),
            e => e.into(),
        })?;
        Ok(with_rev(obj, &kv))
    }

    /// Replaces an object. `subresource` is None for the main resource or
    /// Some("status"). `mutate` is given the current object and returns the
    /// desired one: a body for PUT, the patched object for PATCH. It is
    /// re-run when a concurrent write wins the race; a resourceVersion the
    /// client set then no longer matches and the update answers Conflict.
    pub async fn update<F>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mutate: F,
    ) -> ApiResult<Value>
    where
        F: Fn(&Value) -> ApiResult<Value>,
    {
        let k = key(info, ns, name);
        loop {
            let current = self.store.get(&k).await?.ok_or_else(|| ApiError::not_found(info, name))?;
            let old = decode_value(&current)?;
            let mut new = mutate(&old)?;
            set_type(info, &mut new);
            if name_of(&new) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&new)
                )));
            }
            if info.namespaced {
                match new["metadata"]["namespace"].as_str() {
                    Some(n) if !n.is_empty() && Some(n) != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ))
                    }
                    _ => {}
                }
            }
            let precondition = new["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty()).map(String::from);
            if let Some(rv) = &precondition {
                if rv.parse::<i64>().ok() != Some(current.mod_revision) {
                    return Err(ApiError::modified(info, name));
                }
            }
            self.prepare_update(info, subresource, &mut new, &old);
            if let Some(m) = &opts.field_manager {
                crate::apply::record_update(info, subresource, Some(&old), &mut new, m, &now_rfc3339());
            }
            let errs = match subresource {
                Some("binding") => Vec::new(),
                Some("status") => validation::validate_status(info.group, info.kind, &new, &old),
                Some(sub @ ("ephemeralcontainers" | "resize")) => validation::validate_pod_subresource(sub, &new, &old),
                _ => validation::validate(info.group, info.kind, &new, Some(&old)),
            };
            check_invalid(info, &new, errs)?;
            let _allocating = self.service_lock(info).await;
            self.admission.admit_update(self, info, subresource, &mut new, &old, opts.dry_run).await?;
            crate::go_form::shape(&mut new);
            // Finalizers gone from an object being deleted: the delete completes.
            let finalizers_done = should_delete_during_update(&new);
            if finalizers_done && !opts.dry_run {
                return match self.store.delete(&k, Some(current.mod_revision)).await {
                    Ok(kv) => Ok(with_rev(new, &kv)),
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => Err(e.into()),
                };
            }
            if new == old || opts.dry_run {
                return Ok(with_rev(new, &current));
            }
            match self.store.update(&k, encode(&new), current.mod_revision).await {
                Ok(kv) => return Ok(with_rev(new, &kv)),
                // Someone wrote in between: re-read and mutate again. A client's
                // own stale resourceVersion fails the precondition check above.
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::NotFound(_)) => return Err(ApiError::not_found(info, name)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Services allocate cluster IPs and node ports: one write at a time.
    async fn service_lock(&self, info: &ResourceInfo) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if info.group.is_empty() && info.kind == "Service" {
            Some(self.admission.service_writes.lock().await)
        } else {
            None
        }
    }

    /// What upstream's PrepareForUpdate does: server-owned metadata stays,
    /// the main resource cannot change status, /status cannot change the rest.
    fn prepare_update(&self, info: &ResourceInfo, subresource: Option<&str>, new: &mut Value, old: &Value) {
        if subresource == Some("binding") {
            // The binding handler derived `new` from `old` itself (node name and condition).
            return;
        }
        if let Some(sub @ ("ephemeralcontainers" | "resize")) = subresource {
            // The stored pod with only what the subresource may change taken from `new`.
            let mut merged = old.clone();
            strategy::take_pod_subresource(sub, &mut merged, new);
            defaults::apply(info.group, info.kind, &mut merged);
            *new = merged;
            return;
        }
        if subresource == Some("status") {
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
            }
            *new = merged;
            return;
        }
        for k in strategy::SERVER_OWNED_METADATA {
            match old["metadata"].get(*k) {
                Some(v) => {
                    meta(new).insert(k.to_string(), v.clone());
                }
                None => {
                    meta(new).remove(*k);
                }
            }
        }
        if info.namespaced {
            meta(new).insert("namespace".into(), old["metadata"]["namespace"].clone());
        }
        if info.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        strategy::prepare_for_update(info, new, old);
        defaults::apply(info.group, info.kind, new);
        if info.generation && strategy::spec_changed(new, old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta(new).insert("generation".into(), json!(g));
        }
        // The resourceVersion is the store's, not part of the content.
        meta(new).insert("resourceVersion".into(), old["metadata"]["resourceVersion"].clone());
    }

    /// Deletes an object, or marks it deleted when finalizers or a grace
    /// period keep it for now. Returns the object and whether it is gone.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        grace_override: Option<i64>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        let k = key(info, ns, name);
        loop {
            let current = self.store.get(&k).await?.ok_or_else(|| ApiError::not_found(info, name))?;
            let obj = decode_value(&current)?;
            let pre = &options["preconditions"];
            if let Some(uid) = pre["uid"].as_str() {
                let actual = obj["metadata"]["uid"].as_str().unwrap_or("");
                if uid != actual {
                    return Err(ApiError::conflict(info, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if let Some(rv) = pre["resourceVersion"].as_str() {
                if rv != current.mod_revision.to_string() {
                    return Err(ApiError::conflict(info, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.mod_revision
                    )));
                }
            }
            let grace = grace_override.or_else(|| options["gracePeriodSeconds"].as_i64());
            let mut marked = obj.clone();
            gc_finalizers(info, &mut marked, options);
            if self.keeps_for_now(info, &mut marked, grace) {
                crate::go_form::shape(&mut marked);
                if marked == obj || opts.dry_run {
                    return Ok((obj, false));
                }
                match self.store.update(&k, encode(&marked), current.mod_revision).await {
                    Ok(kv) => return Ok((with_rev(marked, &kv), false)),
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if opts.dry_run {
                return Ok((obj, true));
            }
            match self.store.delete(&k, Some(current.mod_revision)).await {
                Ok(kv) => return Ok((with_rev(obj, &kv), true)),
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::NotFound(_)) => return Err(ApiError::not_found(info, name)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets deletionTimestamp when the object cannot go yet: it has
    /// finalizers, or it is a pod a node must stop first.
    fn keeps_for_now(&self, info: &ResourceInfo, obj: &mut Value, grace: Option<i64>) -> bool {
        let has_finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
            || (info.kind == "Namespace" && obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()));
        let graceful_pod = info.group.is_empty()
            && info.kind == "Pod"
            && obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
            && !matches!(obj["status"]["phase"].as_str(), Some("Succeeded") | Some("Failed"));
        let grace = if graceful_pod {
            grace.or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30)
        } else {
            0
        };
        if !has_finalizers && (!graceful_pod || grace <= 0) {
            return false;
        }
        let now = Utc::now();
        let m = meta(obj);
        let existing = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
        // Being marked is a change of intent, so the generation moves (once).
        if let Some(g) = m.get("generation").and_then(Value::as_i64).filter(|g| *g > 0 && m.get("deletionTimestamp").is_none()) {
            m.insert("generation".into(), json!(g + 1));
        }
        // A second delete may shorten the grace period, never lengthen it.
        if m.get("deletionTimestamp").is_none() || existing.is_some_and(|g| grace < g) {
            let at = now + chrono::Duration::seconds(grace);
            m.insert("deletionTimestamp".into(), json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if info.kind == "Namespace" {
            obj["status"]["phase"] = json!("Terminating");
        }
        true
    }

    /// Lists a collection at a consistent revision, straight from the store:
    /// used for paginated lists, whose later pages must see the same snapshot.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<i64>,
        keep: impl Fn(&Cached) -> bool,
    ) -> ApiResult<(Vec<Arc<Cached>>, i64, Option<String>)> {
        let mut out = Vec::new();
        let mut cursor = start_after.map(String::from);
        let mut revision = revision;
        loop {
            let want = limit.saturating_sub(out.len()).max(1);
            let page = self.store.list(prefix, cursor.as_deref(), want, revision).await?;
            revision = Some(page.revision);
            for kv in &page.items {
                let c = Cached::decode(kv)?;
                cursor = Some(kv.key.clone());
                if keep(&c) {
                    out.push(c);
                    if out.len() == limit {
                        // More may follow; the continue token resumes after this key.
                        let more = page.more || kv.key != page.items.last().unwrap().key;
                        return Ok((out, page.revision, if more { cursor } else { None }));
                    }
                }
            }
            if !page.more {
                return Ok((out, page.revision, None));
            }
        }
    }
}

/// The garbage collector's finalizers from the delete options (upstream's
/// deletionFinalizersForGarbageCollection): Orphan adds `orphan`, Foreground
/// `foregroundDeletion`, Background neither; without a policy the object
/// keeps what it has, or else gets its kind's default. The garbage
/// collector removes them when done.
fn gc_finalizers(info: &ResourceInfo, obj: &mut Value, options: &Value) {
    let has = |f: &str| obj["metadata"]["finalizers"].as_array().is_some_and(|fs| fs.iter().any(|x| x == f));
    let (orphan, foreground) = match (options["orphanDependents"].as_bool(), options["propagationPolicy"].as_str()) {
        (Some(o), _) => (o, false),
        (None, Some(p)) => (p == "Orphan", p == "Foreground"),
        (None, None) if info.orphans_by_default() && !has("orphan") && !has("foregroundDeletion") => (true, false),
        (None, None) => return,
    };
    let old: Vec<Value> = obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
    let mut new: Vec<Value> = old.iter().filter(|f| *f != "orphan" && *f != "foregroundDeletion").cloned().collect();
    if orphan {
        new.push(json!("orphan"));
    }
    if foreground {
        new.push(json!("foregroundDeletion"));
    }
    let same = new.len() == old.len() && new.iter().all(|f| old.contains(f));
    if !same && new.is_empty() {
        meta(obj).remove("finalizers");
    } else if !same {
        meta(obj).insert("finalizers".into(), json!(new));
    }
}

/// Upstream's rule: an object being deleted, with no finalizers left and no
/// grace period still running, is removed by the update that emptied them.
fn should_delete_during_update(obj: &Value) -> bool {
    let m = &obj["metadata"];
    let empty = |v: &Value| v.as_array().map_or(true, |f| f.is_empty());
    m["deletionTimestamp"].is_string()
        && empty(&m["finalizers"])
        && empty(&obj["spec"]["finalizers"]) // a Namespace's own finalizers
        && m["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0
}
