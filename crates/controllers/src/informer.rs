//! Small shared plumbing for the housekeeping controllers: a reflector-backed
//! cache plus a stream of touched objects, and a readiness check.

use std::fmt::Debug;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;

/// Watches `api`, keeping `Store` current while the returned stream is polled;
/// the stream yields every object created, changed or deleted.
pub fn watch<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, BoxStream<'static, Arc<K>>)
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
