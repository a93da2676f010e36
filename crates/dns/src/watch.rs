//! Keeping the index in step with the API: one watch of all Services and
//! one of all EndpointSlices, each event applied to the index as it comes.
//! A re-list (after the watch fell behind) drops what it no longer lists.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;

use crate::index::{self, Index};

/// Runs both watches until the task is aborted.
pub async fn run(client: kube::Client, index: Arc<Index>) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
    tokio::join!(follow::<Service, _>(services, "Service", &index), follow::<EndpointSlice, _>(slices, "EndpointSlice", &index));
}

/// How objects of one kind go into the index.
trait Indexed: ResourceExt {
    /// Adds or replaces the object's entry (or removes it when it has none).
    fn set(ix: &Index, obj: &Self);
    fn remove(ix: &Index, ns: &str, name: &str);
    /// (namespace, name) of every object of this kind in the index.
    fn keys(ix: &Index) -> Vec<(String, String)>;
}

impl Indexed for Service {
    fn set(ix: &Index, s: &Service) {
        ix.set_service(&s.namespace().unwrap_or_default(), &s.name_any(), index::service_entry(s));
    }
    fn remove(ix: &Index, ns: &str, name: &str) {
        ix.set_service(ns, name, None);
    }
    fn keys(ix: &Index) -> Vec<(String, String)> {
        ix.service_keys()
    }
}

impl Indexed for EndpointSlice {
    fn set(ix: &Index, s: &EndpointSlice) {
        // Not one of ours (no Service label, IPv6) is forgotten wherever it was.
        let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
        match index::slice_entry(s) {
            Some((service, slice)) => ix.set_slice(&ns, &name, Some((&service, slice))),
            None => ix.set_slice(&ns, &name, None),
        }
    }
    fn remove(ix: &Index, ns: &str, name: &str) {
        ix.set_slice(ns, name, None);
    }
    fn keys(ix: &Index) -> Vec<(String, String)> {
        ix.slice_keys().into_iter().map(|(ns, name, _)| (ns, name)).collect()
    }
}

async fn follow<K: Indexed, S>(stream: S, kind: &str, ix: &Index)
where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    // Keys listed so far during a (re-)list; None between lists.
    let mut seen: Option<HashSet<String>> = None;
    let mut failing = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                failing = false;
                apply(ix, ev, &mut seen);
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cluster DNS: watching {kind}s: {e}; retrying (answers come from what is known)");
            }
            Err(e) => tracing::debug!("cluster DNS: watching {kind}s: {e}"),
        }
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn apply<K: Indexed>(ix: &Index, ev: Event<K>, seen: &mut Option<HashSet<String>>) {
    match ev {
        Event::Init => *seen = Some(HashSet::new()),
        Event::InitApply(o) | Event::Apply(o) => {
            if let Some(seen) = seen.as_mut() {
                seen.insert(key(&o.namespace().unwrap_or_default(), &o.name_any()));
            }
            K::set(ix, &o);
        }
        Event::Delete(o) => K::remove(ix, &o.namespace().unwrap_or_default(), &o.name_any()),
        Event::InitDone => {
            let seen = seen.take().unwrap_or_default();
            for (ns, name) in K::keys(ix) {
                if !seen.contains(&key(&ns, &name)) {
                    K::remove(ix, &ns, &name);
                }
            }
        }
    }
}
