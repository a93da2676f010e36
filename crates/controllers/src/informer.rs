//! Small shared plumbing for the housekeeping controllers: reflector-backed
//! caches plus a stream of touched objects (one per controller, or one
//! watch shared by all of them), and a readiness check.

use std::fmt::Debug;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer, Store};
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
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects()
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
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// `trim` drops what no controller reads before an object is cached.
    pub fn new(api: Api<K>, trim: fn(&mut K)) -> Self {
        let (reader, writer) = reflector::store();
        Shared { api, reader, writer, subscribers: Vec::new(), trim }
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
        let Shared { api, writer, subscribers, trim, .. } = self;
        // The initial list (and any relist) comes from the API server's cache,
        // as client-go's reflector asks for it (resourceVersion=0), not page by
        // page from the store.
        let mut touched = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(trim)
            .reflect(writer)
            .touched_objects()
            .boxed();
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
