//! Keeping the index in step with the API: one watch of all Services and
//! one of all EndpointSlices, each event applied to the index as it comes.
//! A re-list (after the watch fell behind) drops what it no longer lists.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;

use crate::index::{self, Index};

/// Runs both watches until the task is aborted; `synced` turns true once
/// both initial lists are in the index.
pub async fn run(client: kube::Client, index: Arc<Index>, synced: tokio::sync::watch::Sender<bool>) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
    let listed = AtomicUsize::new(0);
    let on_listed = || {
        if listed.fetch_add(1, Ordering::AcqRel) == 1 {
            synced.send_replace(true);
        }
    };
    let (ix1, ix2) = (index.clone(), index);
    tokio::join!(
        follow(services, "Service", move |e, seen| apply_service(&ix1, e, seen), &on_listed),
        follow(slices, "EndpointSlice", move |e, seen| apply_slice(&ix2, e, seen), &on_listed),
    );
}

async fn follow<K, S>(stream: S, kind: &str, mut apply: impl FnMut(Event<K>, &mut Option<HashSet<String>>), on_listed: &impl Fn())
where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    // Keys listed so far during a (re-)list; None between lists.
    let mut seen: Option<HashSet<String>> = None;
    let mut first_list = true;
    let mut failing = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                failing = false;
                let done = matches!(ev, Event::InitDone);
                apply(ev, &mut seen);
                if done && std::mem::take(&mut first_list) {
                    on_listed();
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cluster DNS: watching {kind}s: {e}; retrying (answers come from what is known)");
            }
            Err(e) => tracing::debug!("cluster DNS: watching {kind}s: {e}"),
        }
    }
}

fn key(o: &impl ResourceExt) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

fn apply_service(ix: &Index, ev: Event<Service>, seen: &mut Option<HashSet<String>>) {
    match ev {
        Event::Init => *seen = Some(HashSet::new()),
        Event::InitApply(s) | Event::Apply(s) => {
            if let Some(seen) = seen.as_mut() {
                seen.insert(key(&s));
            }
            ix.set_service(&s.namespace().unwrap_or_default(), &s.name_any(), index::service_entry(&s));
        }
        Event::Delete(s) => ix.set_service(&s.namespace().unwrap_or_default(), &s.name_any(), None),
        Event::InitDone => {
            let seen = seen.take().unwrap_or_default();
            for (ns, name) in ix.service_keys() {
                if !seen.contains(&format!("{ns}/{name}")) {
                    ix.set_service(&ns, &name, None);
                }
            }
        }
    }
}

fn apply_slice(ix: &Index, ev: Event<EndpointSlice>, seen: &mut Option<HashSet<String>>) {
    match ev {
        Event::Init => *seen = Some(HashSet::new()),
        Event::InitApply(s) | Event::Apply(s) => {
            if let Some(seen) = seen.as_mut() {
                seen.insert(key(&s));
            }
            let ns = s.namespace().unwrap_or_default();
            // Not one of ours (no Service label, IPv6) is forgotten wherever it was.
            match index::slice_entry(&s) {
                Some((service, slice)) => ix.set_slice(&ns, &s.name_any(), Some((&service, slice))),
                None => ix.set_slice(&ns, &s.name_any(), None),
            }
        }
        Event::Delete(s) => ix.set_slice(&s.namespace().unwrap_or_default(), &s.name_any(), None),
        Event::InitDone => {
            let seen = seen.take().unwrap_or_default();
            for (ns, name, _) in ix.slice_keys() {
                if !seen.contains(&format!("{ns}/{name}")) {
                    ix.set_slice(&ns, &name, None);
                }
            }
        }
    }
}
