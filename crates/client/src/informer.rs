//! Small shared plumbing for the housekeeping controllers: reflector-backed
//! caches plus a stream of touched objects (one per controller, or one
//! watch shared by all of them), and a readiness check.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// A cache and the objects touched in it (created, changed or deleted).
pub type Watched<K> = (Store<K>, BoxStream<'static, Arc<K>>);

/// Watches `api`, keeping `Store` current while the returned stream is polled;
/// the stream yields every object created, changed or deleted.
pub fn watch<K>(api: Api<K>, config: watcher::Config) -> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = touched_after_relist(watcher(api, config).default_backoff().reflect(writer))
        .filter_map(|r| async move {
            match r {
                Ok(o) => Some(Arc::new(o)),
                Err(e) => {
                    tracing::debug!("watch: {e}");
                    None
                }
            }
        })
        .boxed();
    (reader, stream)
}

/// The objects each event touches, as kube's `touched_objects`, except that
/// a relist's objects come out after its InitDone. The store (and the
/// controller index) swap the new list in only then: a controller woken by
/// one of them earlier would read the old list, write a status from it, and
/// with nothing changing afterwards keep that stale status.
fn touched_after_relist<K, S>(events: S) -> impl futures::Stream<Item = Result<K, watcher::Error>>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    events
        .scan(Vec::new(), |relisted, r| {
            let out: Vec<Result<K, watcher::Error>> = match r {
                Err(e) => vec![Err(e)],
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => vec![Ok(o)],
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    vec![]
                }
                Ok(watcher::Event::InitApply(o)) => {
                    relisted.push(o);
                    vec![]
                }
                Ok(watcher::Event::InitDone) => std::mem::take(relisted).into_iter().map(Ok).collect(),
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

/// One watch and one store for every controller in the process that needs
/// the kind: each subscriber gets every touched object (the initial list
/// included) over its own unbounded channel, so a slow controller never
/// holds up the others, and N controllers cost one copy of the objects.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    reader: Store<K>,
    writer: Writer<K>,
    subscribers: Vec<mpsc::UnboundedSender<Arc<K>>>,
    trim: fn(&mut K),
    index: ByController<K>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// `trim` drops what no controller reads before an object is cached.
    pub fn new(api: Api<K>, trim: fn(&mut K)) -> Self {
        let (reader, writer) = reflector::store();
        Shared { api, reader, writer, subscribers: Vec::new(), trim, index: ByController::default() }
    }

    /// The store's objects by controller, kept in step with the store.
    pub fn by_controller(&self) -> ByController<K> {
        self.index.clone()
    }

    /// The shared store and a stream of its touched objects. Take every
    /// subscription before `run` starts, so each sees the initial list.
    pub fn subscribe(&mut self) -> Watched<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        let events = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) }).boxed();
        (self.reader.clone(), events)
    }

    /// Keeps the store current and fans touched objects out; runs until dropped.
    pub async fn run(self) {
        let Shared { api, reader, writer, subscribers, trim, index } = self;
        // The initial list (and any relist) comes from the API server's cache,
        // as client-go's reflector asks for it (resourceVersion=0), not page by
        // page from the store.
        let events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(trim)
            .map_ok(move |event| {
                // Before the store applies the event, so the index sees the old copy.
                index.apply(&reader, &event);
                event
            })
            .reflect(writer);
        let mut touched = touched_after_relist(events).boxed();
        while let Some(r) = touched.next().await {
            match r {
                Ok(o) => {
                    let o = Arc::new(o);
                    for s in &subscribers {
                        let _ = s.send(o.clone());
                    }
                }
                Err(e) => tracing::debug!("shared watch of {}: {e}", K::kind(&())),
            }
        }
    }
}

/// Who controls an object: the uid of its controller ownerReference, or for
/// an object without one, its namespace (where an owner could adopt it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Controller {
    Uid(String),
    None(String),
}

fn controller_key<K: Resource>(o: &K) -> Controller {
    match o.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true)) {
        Some(r) => Controller::Uid(r.uid.clone()),
        None => Controller::None(o.meta().namespace.clone().unwrap_or_default()),
    }
}

type Index<K> = HashMap<Controller, HashSet<ObjectRef<K>>>;

/// A shared store's objects grouped by controller (upstream's controller-uid
/// indexer), so an owner finds its objects without scanning the store. It is
/// updated just before the store, so a reader may meet a reference the
/// store does not hold yet: look each one up and skip the missing.
pub struct ByController<K: Resource<DynamicType = ()>> {
    state: Arc<RwLock<(Index<K>, Option<Index<K>>)>>,
}

impl<K: Resource<DynamicType = ()>> Clone for ByController<K> {
    fn clone(&self) -> Self {
        ByController { state: self.state.clone() }
    }
}

impl<K: Resource<DynamicType = ()>> Default for ByController<K> {
    fn default() -> Self {
        ByController { state: Arc::default() }
    }
}

impl<K> ByController<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Objects whose controller ownerReference has this uid.
    pub fn controlled_by(&self, uid: &str) -> Vec<ObjectRef<K>> {
        self.members(&Controller::Uid(uid.to_string()))
    }

    /// Objects in the namespace that no controller owns.
    pub fn orphans_in(&self, namespace: &str) -> Vec<ObjectRef<K>> {
        self.members(&Controller::None(namespace.to_string()))
    }

    fn members(&self, key: &Controller) -> Vec<ObjectRef<K>> {
        self.state.read().unwrap().0.get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Follows one watch event; a relist builds a fresh index and swaps it
    /// in when the list is complete, as the store does.
    fn apply(&self, store: &Store<K>, event: &watcher::Event<K>) {
        let mut state = self.state.write().unwrap();
        let (live, relist) = &mut *state;
        match event {
            watcher::Event::Apply(o) => {
                let r = object_ref(o);
                let new = controller_key(o);
                if let Some(old) = store.get(&r).map(|old| controller_key(old.as_ref())).filter(|old| *old != new) {
                    remove(live, &old, &r);
                }
                live.entry(new).or_default().insert(r);
            }
            watcher::Event::Delete(o) => {
                let r = object_ref(o);
                let key = store.get(&r).map_or_else(|| controller_key(o), |old| controller_key(old.as_ref()));
                remove(live, &key, &r);
            }
            watcher::Event::Init => *relist = Some(Index::default()),
            watcher::Event::InitApply(o) => {
                relist.get_or_insert_with(Index::default).entry(controller_key(o)).or_default().insert(object_ref(o));
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    *live = fresh;
                }
            }
        }
    }
}

/// A reference by namespace and name only, the part the store is keyed by.
fn object_ref<K: Resource<DynamicType = ()>>(o: &K) -> ObjectRef<K> {
    let m = o.meta();
    let r = ObjectRef::new(m.name.as_deref().unwrap_or_default());
    match m.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

fn remove<K: Resource<DynamicType = ()>>(index: &mut Index<K>, key: &Controller, r: &ObjectRef<K>) {
    if let Some(set) = index.get_mut(key) {
        set.remove(r);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// Drops managedFields, which no controller reads and which are often the
/// largest part of a cached object (upstream's informers drop them too).
/// Writes of a cached copy then carry none, which keeps the stored ones.
pub fn strip_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// True once the store holds a complete initial list.
pub fn ready<K>(store: &Store<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// True for a 404/409 answer: the object went away or changed under us, and
/// the next pass will see the new state.
pub fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404 || r.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn pod(name: &str, owner: Option<&str>) -> Pod {
        let owner_references = owner.map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]);
        Pod { metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), owner_references, ..Default::default() }, ..Default::default() }
    }

    fn names(refs: Vec<ObjectRef<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    /// Feeds one event to the index and then the store, as `Shared::run` does.
    fn feed(index: &ByController<Pod>, writer: &mut Writer<Pod>, store: &Store<Pod>, event: watcher::Event<Pod>) {
        index.apply(store, &event);
        writer.apply_watcher_event(&event);
    }

    #[test]
    fn the_index_follows_owners_deletions_and_relists() {
        let (store, mut writer) = reflector::store();
        let index = ByController::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", Some("rs-1"))),
            watcher::Event::InitApply(pod("b", Some("rs-1"))),
            watcher::Event::InitApply(pod("orphan", None)),
            watcher::Event::InitDone,
        ] {
            feed(&index, &mut writer, &store, e);
        }
        assert_eq!(names(index.controlled_by("rs-1")), ["a", "b"]);
        assert_eq!(names(index.orphans_in("ns")), ["orphan"]);
        assert!(index.orphans_in("other").is_empty());

        // Released by one owner, adopted by another, deleted.
        feed(&index, &mut writer, &store, watcher::Event::Apply(pod("b", None)));
        feed(&index, &mut writer, &store, watcher::Event::Apply(pod("orphan", Some("rs-2"))));
        feed(&index, &mut writer, &store, watcher::Event::Delete(pod("a", Some("rs-1"))));
        assert!(index.controlled_by("rs-1").is_empty());
        assert_eq!(names(index.controlled_by("rs-2")), ["orphan"]);
        assert_eq!(names(index.orphans_in("ns")), ["b"]);

        // A relist replaces the index once complete: "b" vanished meanwhile.
        feed(&index, &mut writer, &store, watcher::Event::Init);
        feed(&index, &mut writer, &store, watcher::Event::InitApply(pod("orphan", Some("rs-2"))));
        assert_eq!(names(index.orphans_in("ns")), ["b"], "the old index serves until the list is done");
        feed(&index, &mut writer, &store, watcher::Event::InitDone);
        assert!(index.orphans_in("ns").is_empty());
        assert_eq!(names(index.controlled_by("rs-2")), ["orphan"]);
    }

    #[test]
    fn a_relists_objects_come_out_only_after_its_init_done() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<watcher::Event<Pod>, watcher::Error>>();
        let mut touched = touched_after_relist(rx).boxed();
        let mut next_name = || touched.next().now_or_never().flatten().map(|r| r.unwrap().metadata.name.unwrap());
        tx.unbounded_send(Ok(watcher::Event::Apply(pod("a", None)))).unwrap();
        assert_eq!(next_name().as_deref(), Some("a"));
        for e in [watcher::Event::Init, watcher::Event::InitApply(pod("b", None)), watcher::Event::InitApply(pod("c", None))] {
            tx.unbounded_send(Ok(e)).unwrap();
        }
        assert_eq!(next_name(), None, "nothing before InitDone");
        tx.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        assert_eq!((next_name().as_deref(), next_name().as_deref()), (Some("b"), Some("c")));
        tx.unbounded_send(Ok(watcher::Event::Delete(pod("b", None)))).unwrap();
        assert_eq!(next_name().as_deref(), Some("b"));
    }
}
