//! Controllers that keep one named object in every active namespace (the
//! `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap) share this
//! loop: a namespace appearing, or the object changing or disappearing,
//! means "check that namespace".

use std::fmt::Debug;
use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub async fn run<K, F, Fut>(client: Client, object_name: &str, reconcile: F)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static,
    F: Fn(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let objects: Api<K> = Api::all(client.clone());
    let ns_events = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map(|r| r.map(|ns| ns.name_any()));
    let object_events = watcher(objects, watcher::Config::default().fields(&format!("metadata.name={object_name}")))
        .default_backoff()
        .touched_objects()
        .map(|r| r.map(|o| o.namespace().unwrap_or_default()));
    let mut events = futures::stream::select(ns_events.boxed(), object_events.boxed());
    while let Some(event) = events.next().await {
        match event {
            Ok(ns) if active(&client, &ns).await => reconcile(client.clone(), ns).await,
            Ok(_) => {}
            Err(e) => tracing::debug!(object_name, "watch: {e}"),
        }
    }
}

async fn active(client: &Client, ns: &str) -> bool {
    matches!(Api::<Namespace>::all(client.clone()).get_opt(ns).await, Ok(Some(n)) if n.metadata.deletion_timestamp.is_none())
}
