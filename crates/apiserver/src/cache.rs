//! The watch cache: one store watch over all of `/registry/` feeds a cache per
//! storage prefix, holding the current objects and a window of recent events.
//! Lists and watches are served from here, so their cost does not grow with
//! the database or with the number of watchers. Objects are serialized once
//! and the bytes shared by every list and watcher.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use resources::selectors::field_value;
use serde_json::{Map, Value};
use store::{DynStore, EventKind, KeyValue, Revision};
use tokio::sync::{broadcast, watch};

use crate::errors::{ApiError, ApiResult};
use crate::projection::Paths;

/// Events kept per storage prefix for watchers that resume from a recent revision.
const HISTORY: usize = 50_000;
/// Watchers falling further behind than this are closed and must resume.
const FANOUT: usize = 8_192;

pub const ROOT: &str = "/registry/";

/// One object as stored, with its resourceVersion filled in. It is kept as
/// its JSON (what lists and watches send, shared by all of them) plus what
/// selectors read; the full tree is decoded only when a caller asks for it
/// (tables, conversions, YAML). A decoded tree costs about eight times the
/// bytes, and the cache holds every object of the cluster.
pub struct Cached {
    pub key: String,
    pub rev: Revision,
    json: Bytes,
    labels: Map<String, Value>,
    /// Selectable fields of the object's kind that are set, by JSON path.
    fields: Box<[(&'static str, String)]>,
}

impl Cached {
    pub fn decode(kv: &KeyValue) -> ApiResult<Arc<Cached>> {
        // Only what selectors read is decoded; the stored bytes are what
        // clients get, with the resourceVersion spliced in (stored values
        // leave it out: it is the revision). The watch cache follows every
        // write on one task, so this is its hot path.
        let kept = selectable(&kv.key).projection.decode(&kv.value).map_err(ApiError::internal)?;
        let spliced = match kept["metadata"].get("resourceVersion") {
            None => with_resource_version(&kv.value, kv.mod_revision),
            Some(_) => None,
        };
        let json = match spliced {
            Some(json) => json,
            None => Bytes::from(serde_json::to_vec(&decode_value(kv)?).map_err(ApiError::internal)?),
        };
        Ok(Arc::new(Cached::with_json(kv.key.clone(), kv.mod_revision, &kept, json)))
    }

    fn new(key: String, rev: Revision, obj: &Value) -> Cached {
        let json = Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
        Cached::with_json(key, rev, obj, json)
    }

    /// `obj` is the object `json` holds, or at least its labels and
    /// selectable fields.
    fn with_json(key: String, rev: Revision, obj: &Value, json: Bytes) -> Cached {
        let labels = obj["metadata"]["labels"].as_object().cloned().unwrap_or_default();
        let fields = selectable(&key).paths.iter().map(|p| (*p, field_value(obj, p))).filter(|(_, v)| !v.is_empty()).collect();
        Cached { key, rev, json, labels, fields }
    }

    /// This object as another served version of its kind sees it.
    pub fn converted(&self, info: &resources::catalog::ResourceInfo) -> Arc<Cached> {
        let obj = resources::conversion::from_storage(info, self.obj());
        Arc::new(Cached::new(self.key.clone(), self.rev, &obj))
    }

    /// The object, decoded from its JSON.
    pub fn obj(&self) -> Value {
        serde_json::from_slice(&self.json).expect("the cache holds JSON it serialized itself")
    }

    /// The object's JSON.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    pub fn labels(&self) -> &Map<String, Value> {
        &self.labels
    }

    /// The text of a field at a JSON path ("" when unset), as field selectors compare it.
    pub fn field(&self, path: &str) -> String {
        match self.fields.iter().find(|(p, _)| *p == path) {
            Some((_, v)) => v.clone(),
            None if selectable(&self.key).paths.contains(&path) => String::new(),
            None => field_value(&self.obj(), path),
        }
    }

    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }
}

/// A stored value as a JSON tree, with its resourceVersion filled in.
pub fn decode_value(kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// `json` with `"resourceVersion":"<rev>"` in its top-level `metadata`
/// object: just after the uid, where Go's ObjectMeta has it, or first when
/// there is no uid; None when there is no metadata object.
fn with_resource_version(json: &[u8], rev: Revision) -> Option<Bytes> {
    let start = metadata_object_start(json)?;
    let field = format!("\"resourceVersion\":\"{rev}\"");
    let mut out = Vec::with_capacity(json.len() + 32);
    match uid_value_end(json, start) {
        Some(at) => {
            out.extend_from_slice(&json[..at]);
            out.push(b',');
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(&json[at..]);
        }
        None => {
            out.extend_from_slice(&json[..start]);
            out.extend_from_slice(field.as_bytes());
            if json[start..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&json[start..]);
        }
    }
    Some(Bytes::from(out))
}

/// The offset just past the uid's value in a metadata object starting at
/// `start`. The uid follows name, generateName, namespace and selfLink,
/// strings that cannot hold a quote or a brace, so it is looked for only
/// before the first nested value (labels and the like come after it).
fn uid_value_end(json: &[u8], start: usize) -> Option<usize> {
    const KEY: &[u8] = b"\"uid\":\"";
    let head = &json[start..];
    let stop = head.iter().position(|b| matches!(b, b'{' | b'[' | b'}')).unwrap_or(head.len());
    let at = head[..stop].windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = head[at..stop].iter().position(|&b| b == b'"')?;
    Some(start + at + len + 1)
}

/// The offset just past the `{` of the top-level `"metadata"` object of a
/// valid JSON document, found by one scan that skips strings and nesting.
fn metadata_object_start(json: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    // The last string seen at depth 1, and whether it was the key "metadata".
    let (mut last_key, mut after_metadata_colon) = ((0, 0), false);
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 {
                    last_key = (start, i);
                }
                after_metadata_colon = false;
            }
            b':' if depth == 1 => after_metadata_colon = &json[last_key.0..last_key.1] == b"metadata",
            b'{' if depth == 1 && after_metadata_colon => return Some(i + 1),
            b'{' | b'[' => {
                depth += 1;
                after_metadata_colon = false;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b if b.is_ascii_whitespace() => {}
            _ => after_metadata_colon = false,
        }
        i += 1;
    }
    None
}

/// What field selectors may read for the kinds stored under a storage
/// prefix (kinds served in several versions share one).
struct Selectable {
    paths: Vec<&'static str>,
    /// Those paths plus the labels and the resourceVersion.
    projection: Paths,
}

fn selectable(key: &str) -> &'static Selectable {
    static BY_STORAGE: OnceLock<HashMap<&'static str, Selectable>> = OnceLock::new();
    static NONE: OnceLock<Selectable> = OnceLock::new();
    let by_storage = BY_STORAGE.get_or_init(|| {
        let mut paths: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for info in resources::catalog::CATALOG {
            let list = paths.entry(info.storage).or_default();
            for p in ["metadata.name", "metadata.namespace"].into_iter().chain(info.fields.iter().map(|(_, p, _)| *p)) {
                if !list.contains(&p) {
                    list.push(p);
                }
            }
        }
        paths.into_iter().map(|(storage, paths)| (storage, Selectable::new(paths))).collect()
    });
    storage_of(key).and_then(|s| by_storage.get(s)).unwrap_or_else(|| NONE.get_or_init(|| Selectable::new(Vec::new())))
}

impl Selectable {
    fn new(paths: Vec<&'static str>) -> Selectable {
        let projection = Paths::new(paths.iter().chain(&["metadata.labels", "metadata.resourceVersion"]));
        Selectable { paths, projection }
    }
}

pub fn set_resource_version(obj: &mut Value, rev: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let v = Value::String(rev.to_string());
        if let Some(slot) = meta.get_mut("resourceVersion") {
            *slot = v;
        } else {
            // Where Go's ObjectMeta has it: after the uid.
            let at = meta.keys().position(|k| k == "uid").map_or(0, |i| i + 1);
            meta.shift_insert(at, "resourceVersion".into(), v);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

pub struct CacheEvent {
    pub kind: EventType,
    pub obj: Arc<Cached>,
    pub prev: Option<Arc<Cached>>,
}

impl CacheEvent {
    pub fn from_store(ev: &store::Event) -> ApiResult<CacheEvent> {
        let prev = ev.prev.as_ref().map(Cached::decode).transpose()?;
        let kind = match ev.kind {
            EventKind::Delete => EventType::Deleted,
            EventKind::Put if prev.is_some() => EventType::Modified,
            EventKind::Put => EventType::Added,
        };
        Ok(CacheEvent { kind, obj: Cached::decode(&ev.kv)?, prev })
    }
}

struct State {
    objects: BTreeMap<String, Arc<Cached>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// History holds every event of this prefix with revision > `oldest`.
    oldest: Revision,
}

impl State {
    /// The objects whose keys start with `sub_prefix`, in key order.
    fn under(&self, sub_prefix: &str) -> Vec<Arc<Cached>> {
        self.objects
            .range(sub_prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(sub_prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The cache of one storage prefix (e.g. `/registry/pods/`).
pub struct PrefixCache {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<CacheEvent>>,
}

/// What a new watcher gets: the events it missed and the live feed after them.
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

impl PrefixCache {
    fn new(rev: Revision) -> Self {
        PrefixCache {
            state: RwLock::new(State { objects: BTreeMap::new(), history: VecDeque::new(), oldest: rev }),
            events: broadcast::channel(FANOUT).0,
        }
    }

    /// Applies one store event. Only the new value is decoded: the previous
    /// one is the object this cache already holds, which keeps the single
    /// follower fast enough under write bursts.
    fn apply(&self, ev: &store::Event) -> ApiResult<()> {
        let obj = Cached::decode(&ev.kv)?;
        let mut st = self.state.write().unwrap();
        let (kind, prev) = match ev.kind {
            EventKind::Delete => (EventType::Deleted, st.objects.remove(&obj.key)),
            EventKind::Put => match st.objects.insert(obj.key.clone(), obj.clone()) {
                Some(prev) => (EventType::Modified, Some(prev)),
                None => (EventType::Added, None),
            },
        };
        let ev = Arc::new(CacheEvent { kind, obj, prev });
        st.history.push_back(ev.clone());
        if st.history.len() > HISTORY {
            if let Some(old) = st.history.pop_front() {
                st.oldest = old.obj.rev;
            }
        }
        // Sent under the lock so that subscribe() sees each event exactly once.
        let _ = self.events.send(ev);
        Ok(())
    }

    /// Objects under `sub_prefix` (a namespace's keys, or all of them).
    pub fn snapshot(&self, sub_prefix: &str) -> Vec<Arc<Cached>> {
        self.state.read().unwrap().under(sub_prefix)
    }

    /// The object at exactly `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.state.read().unwrap().objects.get(key).cloned()
    }

    /// Subscribes to events after `after`; None when the window no longer reaches back that far.
    pub fn subscribe_after(&self, after: Revision) -> Option<Subscription> {
        let st = self.state.read().unwrap();
        if after < st.oldest {
            return None;
        }
        let backlog = st.history.iter().filter(|e| e.obj.rev > after).cloned().collect();
        Some(Subscription { backlog, live: self.events.subscribe() })
    }

    /// The current objects plus the live feed after them, atomically.
    pub fn subscribe_with_snapshot(&self, sub_prefix: &str) -> (Vec<Arc<Cached>>, broadcast::Receiver<Arc<CacheEvent>>) {
        let st = self.state.read().unwrap();
        let live = self.events.subscribe();
        (st.under(sub_prefix), live)
    }
}

/// All prefix caches and the revision they have all caught up to.
pub struct WatchCache {
    store: DynStore,
    caches: HashMap<String, Arc<PrefixCache>>,
    rev: watch::Receiver<Revision>,
}

fn storage_of(key: &str) -> Option<&str> {
    key.strip_prefix(ROOT)?.split('/').next()
}

impl WatchCache {
    /// Loads every prefix and starts following the store.
    pub async fn start(store: DynStore, storages: &[&str]) -> anyhow::Result<Arc<WatchCache>> {
        let list = store.list(ROOT, None, 0, None).await?;
        let rev = list.revision;
        let mut caches = HashMap::new();
        for s in storages {
            caches.entry(s.to_string()).or_insert_with(|| Arc::new(PrefixCache::new(rev)));
        }
        for kv in &list.items {
            if let Some(c) = storage_of(&kv.key).and_then(|s| caches.get(s)) {
                let obj = Cached::decode(kv).map_err(|e| anyhow::anyhow!(e.message))?;
                c.state.write().unwrap().objects.insert(kv.key.clone(), obj);
            }
        }
        let (rev_tx, rev_rx) = watch::channel(rev);
        let cache = Arc::new(WatchCache { store: store.clone(), caches, rev: rev_rx });
        let feed = store.watch(ROOT, rev).await?;
        // Its own thread: under a burst of requests the runtime's workers
        // are busy, and a follower that is one task among thousands falls
        // behind, which makes consistent lists and lagging watchers go to
        // the store and adds load; a thread gets its share from the kernel.
        let follower = cache.clone();
        std::thread::Builder::new().name("watch-cache".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the watch cache");
            rt.block_on(follow(follower, feed, rev_tx));
        })?;
        Ok(cache)
    }

    pub fn prefix(&self, storage: &str) -> &Arc<PrefixCache> {
        &self.caches[storage]
    }

    /// Every cached object of one storage prefix, in every namespace.
    pub fn all(&self, storage: &str) -> Vec<Arc<Cached>> {
        self.prefix(storage).snapshot(&format!("/registry/{storage}/"))
    }

    /// The revision every prefix cache has caught up to.
    pub fn revision(&self) -> Revision {
        *self.rev.borrow()
    }

    /// Waits until the caches have seen every write up to the store's current
    /// revision, so a list from the cache reads its own writes.
    pub async fn sync(&self) -> ApiResult<Revision> {
        let target = self.store.current_revision().await?;
        self.wait_for(target).await
    }

    pub async fn wait_for(&self, target: Revision) -> ApiResult<Revision> {
        let mut rx = self.rev.clone();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(3), rx.wait_for(|r| *r >= target)).await;
        match waited {
            Ok(Ok(r)) => Ok(*r),
            _ => Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {target}, current resource version: {}", self.revision()),
            )),
        }
    }
}

async fn follow(cache: Arc<WatchCache>, mut feed: store::WatchReceiver, rev_tx: watch::Sender<Revision>) {
    loop {
        while let Some(ev) = feed.recv().await {
            let rev = ev.revision();
            if let Some(c) = storage_of(&ev.kv.key).and_then(|s| cache.caches.get(s)) {
                if let Err(e) = c.apply(&ev) {
                    tracing::error!(key = %ev.kv.key, "undecodable object in store: {}", e.message);
                }
            }
            rev_tx.send_replace(rev);
        }
        // The store closed our feed (we fell behind); resume where we were.
        let at = *rev_tx.borrow();
        match cache.store.watch(ROOT, at).await {
            Ok(f) => feed = f,
            Err(e) => {
                tracing::error!("watch cache cannot resume at {at}: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, obj: Value, rev: Revision) -> KeyValue {
        KeyValue { key: key.into(), value: Bytes::from(serde_json::to_vec(&obj).unwrap()), create_revision: rev, mod_revision: rev }
    }

    #[test]
    fn keeps_json_labels_and_selectable_fields() {
        let pod = serde_json::json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}, "resourceVersion": "1"},
            "spec": {"nodeName": "n1", "containers": []}});
        let c = Cached::decode(&kv("/registry/pods/prod/web", pod.clone(), 42)).unwrap();
        let mut want = pod;
        want["metadata"]["resourceVersion"] = "42".into();
        assert_eq!(c.obj(), want);
        assert_eq!(serde_json::from_slice::<Value>(c.json()).unwrap(), want);
        // Key order survives the round trip, as clients see it.
        assert!(std::str::from_utf8(c.json()).unwrap().starts_with(r#"{"kind":"Pod","apiVersion":"v1","metadata""#));
        assert_eq!(c.labels().get("app"), Some(&Value::from("web")));
        assert_eq!((c.name(), c.field("metadata.namespace").as_str()), ("web", "prod"));
        assert_eq!(c.field("spec.nodeName"), "n1");
        assert_eq!(c.field("status.phase"), "", "unset selectable field");
        assert_eq!(c.field("spec.containers"), "", "not selectable: read from the object");
    }

    #[test]
    fn the_resource_version_is_spliced_into_stored_bytes() {
        for (stored, want) in [
            (r#"{"kind":"Pod","metadata":{"name":"a"},"spec":{}}"#, r#"{"kind":"Pod","metadata":{"resourceVersion":"9","name":"a"},"spec":{}}"#),
            (r#"{"metadata":{}}"#, r#"{"metadata":{"resourceVersion":"9"}}"#),
            (r#"{"metadata":{"name":"a","uid":"u-1","labels":{"uid":"x"}}}"#, r#"{"metadata":{"name":"a","uid":"u-1","resourceVersion":"9","labels":{"uid":"x"}}}"#),
            (r#"{"metadata":{"labels":{"a":"b"},"uid":"u-1"}}"#, r#"{"metadata":{"resourceVersion":"9","labels":{"a":"b"},"uid":"u-1"}}"#),
            // Keys and strings that only look like the top-level metadata.
            (r#"{"x":"\"metadata\":{","spec":{"metadata":{"n":1}},"metadata" : {"a":"}"}}"#, r#"{"x":"\"metadata\":{","spec":{"metadata":{"n":1}},"metadata" : {"resourceVersion":"9","a":"}"}}"#),
        ] {
            let got = with_resource_version(stored.as_bytes(), 9).unwrap();
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
        assert!(with_resource_version(br#"{"metadata":null,"spec":{"metadata":{}}}"#, 9).is_none());
        assert!(with_resource_version(br#"{"spec":{"metadata":{}}}"#, 9).is_none());
        // A stored value that does carry one is re-serialized, never given two.
        let c = Cached::decode(&kv("/registry/pods/d/a", serde_json::json!({"metadata": {"name": "a", "resourceVersion": "1"}}), 5)).unwrap();
        assert_eq!(std::str::from_utf8(c.json()).unwrap(), r#"{"metadata":{"name":"a","resourceVersion":"5"}}"#);
    }

    #[test]
    fn event_fields_by_path_for_both_served_versions() {
        let ev = serde_json::json!({"metadata": {"name": "e1", "namespace": "d"}, "involvedObject": {"kind": "Pod", "name": "web"},
            "reason": "Scheduled", "source": {"component": "default-scheduler"}});
        let c = Cached::decode(&kv("/registry/events/d/e1", ev, 7)).unwrap();
        assert_eq!(c.field("involvedObject.name"), "web");
        assert_eq!(c.field("source.component"), "default-scheduler");
        assert_eq!(c.field("reason"), "Scheduled");
    }
}
