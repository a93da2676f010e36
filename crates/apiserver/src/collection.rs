//! List and watch: reading a collection with selectors, pagination and
//! resourceVersion semantics, and streaming its changes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use resources::catalog::ResourceInfo;
use resources::validation::FieldError;
use resources::selectors::{FieldSelector, LabelSelector};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheEvent, Cached, EventType};
use crate::errors::{ApiError, ApiResult};
use crate::registry::{collection_prefix, Registry};
use crate::request::{Format, Query};
use crate::respond::{self, IncludeObject};

/// Which objects of a collection a request wants.
pub struct Filter {
    pub info: &'static ResourceInfo,
    pub prefix: String,
    labels: Option<LabelSelector>,
    fields: Vec<(&'static str, &'static str, resources::selectors::FieldRequirement)>,
}

impl Filter {
    pub fn new(info: &'static ResourceInfo, ns: Option<&str>, q: &Query) -> ApiResult<Filter> {
        let ls = q.get("labelSelector").cloned().unwrap_or_default();
        let fs = q.get("fieldSelector").cloned().unwrap_or_default();
        let labels = match ls.as_str() {
            "" => None,
            s => Some(LabelSelector::parse(s).map_err(ApiError::bad_request)?),
        };
        let mut fields = Vec::new();
        if !fs.is_empty() {
            let sel = FieldSelector::parse(&fs).map_err(ApiError::bad_request)?;
            for r in sel.requirements() {
                let (path, unset) = info
                    .field_path(&r.field)
                    .ok_or_else(|| ApiError::bad_request(format!("field label not supported: {}", r.field)))?;
                fields.push((path, unset, r.clone()));
            }
        }
        Ok(Filter { info, prefix: collection_prefix(info, ns), labels, fields })
    }

    pub fn matches(&self, c: &Cached) -> bool {
        if !c.key.starts_with(&self.prefix) {
            return false;
        }
        if let Some(l) = &self.labels {
            if !l.matches(c.labels()) {
                return false;
            }
        }
        self.fields.iter().all(|(path, unset, r)| {
            let v = c.field(path);
            let v = if v.is_empty() { unset } else { v.as_str() };
            match r.op {
                resources::selectors::FieldOp::Eq => v == r.value,
                resources::selectors::FieldOp::NotEq => v != r.value,
            }
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn list_meta(rev: i64, cont: Option<String>) -> Value {
    match cont {
        Some(c) => json!({"resourceVersion": rev.to_string(), "continue": c}),
        None => json!({"resourceVersion": rev.to_string()}),
    }
}

/// Upstream's ListOptions validation (with WatchList on, as served here),
/// refused as an invalid `ListOptions.meta.k8s.io`.
fn check_options(q: &Query, watch: bool) -> ApiResult<()> {
    const NOT_OLDER: &str = "NotOlderThan";
    const MATCH: &str = "resourceVersionMatch";
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (rv, m) = (get("resourceVersion"), get(MATCH));
    let (initial, cont) = (q.get("sendInitialEvents").is_some(), !get("continue").is_empty());
    let forbidden = |why: &str| FieldError::forbidden(MATCH, why);
    const WITH_CONTINUE: &str = "resourceVersionMatch is forbidden when continue is provided";
    let mut errs = Vec::new();
    if watch {
        if initial && m != NOT_OLDER {
            errs.push(forbidden("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        if !m.is_empty() {
            if !initial {
                errs.push(forbidden("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
            }
            if m != NOT_OLDER {
                errs.push(FieldError::not_supported(MATCH, m, &[NOT_OLDER]));
            }
            if cont {
                errs.push(forbidden(WITH_CONTINUE));
            }
        }
    } else {
        if !m.is_empty() {
            if rv.is_empty() {
                errs.push(forbidden("resourceVersionMatch is forbidden unless resourceVersion is provided"));
            }
            if cont {
                errs.push(forbidden(WITH_CONTINUE));
            }
            if m != NOT_OLDER && m != "Exact" {
                errs.push(FieldError::not_supported(MATCH, m, &["Exact", NOT_OLDER, ""]));
            }
            if m == "Exact" && rv == "0" {
                errs.push(forbidden("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
            }
        }
        if initial {
            errs.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_kind("meta.k8s.io", "ListOptions", "", &errs))
    }
}

pub async fn list(reg: &Registry, filter: Filter, q: &Query, fmt: Format) -> ApiResult<Response> {
    let limit = q.int("limit")?.unwrap_or(0).max(0) as usize;
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let rv_match = q.get("resourceVersionMatch").cloned().unwrap_or_default();
    let cont = q.get("continue").cloned();
    check_options(q, false)?;
    let rv_num = if rv.is_empty() {
        None
    } else {
        Some(rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?)
    };
    let mut from_store = cont.is_some() || (limit > 0 && rv != "0") || rv_match == "Exact";
    let mut synced = None;
    if !from_store && rv_num.is_none() {
        match reg.cache.sync().await {
            Ok(r) => synced = Some(r),
            // As upstream: a cache that cannot catch up in time does not fail
            // a consistent list; the store answers it.
            Err(e) if e.code == 504 => from_store = true,
            Err(e) => return Err(e),
        }
    }
    if from_store {
        let (start, revision) = match &cont {
            Some(token) => {
                let t = decode_continue(token, &filter.prefix)?;
                let compacted = reg.store.compacted_revision().await?;
                if t.rv < compacted {
                    return Err(ApiError::expired(CONTINUE_EXPIRED));
                }
                (Some(t.start), Some(t.rv))
            }
            None if rv_match == "Exact" => (None, rv_num),
            None => (None, None),
        };
        let (items, rev, next) = reg
            .list_page(&filter.prefix, start.as_deref(), limit, revision, |c| filter.matches(c))
            .await
            .map_err(|e| if e.code == 410 && cont.is_some() { ApiError::expired(CONTINUE_EXPIRED) } else { e })?;
        let token = next.map(|start| encode_continue(&ContinueToken { rv: rev, start }));
        return respond::list(fmt, filter.info, q, &items, list_meta(rev, token));
    }
    let rev = match rv_num {
        None => synced.unwrap_or_else(|| reg.cache.revision()),
        Some(0) => reg.cache.revision(),
        Some(n) => reg.cache.wait_for(n).await?,
    };
    let items: Vec<Arc<Cached>> = reg
        .cache
        .prefix(filter.info.storage)
        .snapshot(&filter.prefix)
        .into_iter()
        .filter(|c| filter.matches(c))
        .collect();
    respond::list(fmt, filter.info, q, &items, list_meta(rev, None))
}

fn encode_continue(t: &ContinueToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if !t.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(t)
}

/// What a watcher sees of one change, after its selectors: an object entering
/// the selection is ADDED, one leaving it is DELETED.
fn visible(filter: &Filter, ev: &CacheEvent) -> Option<EventType> {
    let now = filter.matches(&ev.obj);
    let before = ev.prev.as_ref().map(|p| filter.matches(p));
    match (ev.kind, before) {
        (EventType::Added, _) => now.then_some(EventType::Added),
        (EventType::Deleted, Some(b)) => (b || now).then_some(EventType::Deleted),
        (EventType::Deleted, None) => now.then_some(EventType::Deleted),
        (EventType::Modified, Some(true)) if now => Some(EventType::Modified),
        (EventType::Modified, Some(true)) => Some(EventType::Deleted),
        (EventType::Modified, _) => now.then_some(EventType::Added),
    }
}

/// Encodes watch events in the negotiated format.
struct Encoder {
    fmt: Format,
    info: &'static ResourceInfo,
    include: IncludeObject,
    headers_sent: bool,
}

impl Encoder {
    fn event(&mut self, ty: &str, c: &Cached) -> Bytes {
        if resources::conversion::needs_conversion(self.info) {
            return self.event_of(ty, &c.converted(self.info));
        }
        self.event_of(ty, c)
    }

    fn event_of(&mut self, ty: &str, c: &Cached) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_slice(format!("{{\"type\":\"{ty}\",\"object\":").as_bytes());
        match self.fmt {
            Format::Table => {
                let t = respond::table(self.info, &[&c.obj()], self.include, !self.headers_sent, json!({"resourceVersion": c.rev.to_string()}));
                self.headers_sent = true;
                buf.put_slice(&serde_json::to_vec(&t).unwrap());
            }
            Format::Metadata => buf.put_slice(&serde_json::to_vec(&respond::partial_metadata(&c.obj())).unwrap()),
            _ => buf.put_slice(c.json()),
        }
        buf.put_slice(b"}\n");
        buf.freeze()
    }

    fn raw(&self, ty: &str, obj: &Value) -> Bytes {
        let mut v = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn bookmark(info: &ResourceInfo, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta})
}

pub async fn watch(reg: Arc<Registry>, filter: Filter, q: &Query, fmt: Format) -> ApiResult<Response> {
    if fmt == Format::Yaml {
        return Err(ApiError::not_acceptable("application/json"));
    }
    check_options(q, true)?;
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q.int("timeoutSeconds")?.filter(|t| *t > 0).map(|t| t as u64).unwrap_or(1800 + rand::random::<u64>() % 1800);
    let rv_num = match rv.as_str() {
        "" | "0" => None,
        s => Some(s.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?),
    };
    let cache = reg.cache.prefix(filter.info.storage).clone();
    let mut enc = Encoder { fmt, info: filter.info, include: IncludeObject::from_query(q)?, headers_sent: false };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    // Work out the starting point before answering, so errors are plain HTTP errors.
    let mut initial: Vec<Arc<Cached>> = Vec::new();
    let mut backlog: Vec<Arc<CacheEvent>> = Vec::new();
    let mut store_feed = None;
    let mut live: Option<broadcast::Receiver<Arc<CacheEvent>>> = None;
    match rv_num {
        Some(n) if !send_initial => match cache.subscribe_after(n) {
            Some(sub) => {
                backlog = sub.backlog;
                live = Some(sub.live);
            }
            None => match reg.store.watch(&filter.prefix, n).await {
                Ok(feed) => store_feed = Some(feed),
                Err(store::Error::Compacted { requested, compacted }) => {
                    let status = ApiError::too_old(requested, compacted).status_body();
                    let _ = tx.send(Ok(enc.raw("ERROR", &status))).await;
                }
                Err(e) => return Err(e.into()),
            },
        },
        _ => {
            if rv.is_empty() || send_initial {
                reg.cache.sync().await?;
            }
            let (objs, rx_live) = cache.subscribe_with_snapshot(&filter.prefix);
            initial = objs.into_iter().filter(|c| filter.matches(c)).collect();
            live = Some(rx_live);
        }
    }
    let reg2 = reg.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        let mut last_rev = 0;
        for c in &initial {
            last_rev = last_rev.max(c.rev);
            if tx.send(Ok(enc.event("ADDED", c))).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks {
            let rev = reg2.cache.revision();
            let b = bookmark(filter.info, rev, true);
            if tx.send(Ok(enc.raw("BOOKMARK", &b))).await.is_err() {
                return;
            }
        }
        for ev in &backlog {
            if let Some(ty) = visible(&filter, ev) {
                if tx.send(Ok(enc.event(ty.as_str(), &ev.obj))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next: Option<Arc<CacheEvent>> = tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let rev = reg2.cache.revision();
                    if tx.send(Ok(enc.raw("BOOKMARK", &bookmark(filter.info, rev, false)))).await.is_err() { return; }
                    continue;
                }
                _ = tx.closed() => return,
                ev = recv(&mut live, &mut store_feed) => match ev {
                    Some(ev) => Some(ev),
                    None => return,
                },
            };
            let Some(ev) = next else { continue };
            if ev.obj.rev <= last_rev {
                continue;
            }
            if let Some(ty) = visible(&filter, &ev) {
                if tx.send(Ok(enc.event(ty.as_str(), &ev.obj))).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap())
}

/// The next change from whichever feed this watcher uses; None ends the watch
/// (a lagging watcher is closed and resumes from its last resourceVersion;
/// a watch with no feed has just been sent its 410 ERROR event).
async fn recv(
    live: &mut Option<broadcast::Receiver<Arc<CacheEvent>>>,
    store_feed: &mut Option<store::WatchReceiver>,
) -> Option<Arc<CacheEvent>> {
    if let Some(rx) = live {
        return rx.recv().await.ok();
    }
    if let Some(feed) = store_feed {
        let ev = feed.recv().await?;
        return CacheEvent::from_store(&ev).ok().map(Arc::new);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(query: &str, watch: bool) -> String {
        check_options(&Query::parse(Some(query)), watch).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn list_options_are_checked_as_upstream_checks_them() {
        assert_eq!(refusal("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", true), "");
        assert_eq!(refusal("resourceVersion=5&resourceVersionMatch=Exact", false), "");
        assert_eq!(
            refusal("sendInitialEvents=true", true),
            r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"#
        );
        assert!(refusal("resourceVersionMatch=NotOlderThan", true).ends_with("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
        assert!(refusal("sendInitialEvents=true", false).ends_with("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"));
        assert!(refusal("resourceVersionMatch=Exact", false).ends_with("resourceVersionMatch is forbidden unless resourceVersion is provided"));
        assert!(refusal("resourceVersion=0&resourceVersionMatch=Exact", false).contains(r#"resourceVersionMatch "exact" is forbidden for resourceVersion "0""#));
    }
}
