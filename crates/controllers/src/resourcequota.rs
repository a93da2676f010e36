//! The resource quota controller, as upstream's: every quota's
//! `status.hard` follows `spec.hard`, and `status.used` is recounted from
//! the objects in its namespace (`resources::quota` says what each uses),
//! when a quota's limits change, when objects it may count change or go
//! away (finished and deleted pods, deleted claims, services, ...), and on a
//! full resync. Admission charges usage as objects are created; this
//! returns what was charged for writes that failed and what was released.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PartialObjectMeta, PostParams};
use kube::discovery::Discovery;
use kube::runtime::watcher::{self, metadata_watcher};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::Value;

use client::informer::{self, benign, ready, Watched};
use resources::quota::{self, ResourceList, LEGACY_COUNTS};

/// Upstream's `--resource-quota-sync-period` default.
const RESYNC: Duration = Duration::from_secs(300);

/// One kind a quota can count, by group and plural.
type Kind = (String, String);

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>) {
    let (quotas, quota_events) = informer::watch(Api::<ResourceQuota>::all(client.clone()), watcher::Config::default());
    // Only a quota whose limits changed, or that has never been counted,
    // needs a recount of its own: admission's charges change its status
    // all the time, and recounting then would race with the object writes
    // those charges are for.
    let quota_events = quota_events.filter(|q| std::future::ready(needs_count(&json(q.as_ref())))).map(|q| q.namespace());
    // Likewise objects only trigger a recount when they release usage, as
    // upstream's replenishment: a create is charged by admission, and a
    // recount woken by it could read a cache that lacks the creates still
    // in flight, lower `used` below what was charged and let them overshoot.
    let pod_store = pods.clone();
    let pod_events = pod_events.filter(move |p| std::future::ready(pod_store.get(&ObjectRef::from_obj(p.as_ref())).is_none() || pod_finished(p))).map(|p| p.namespace());
    // Other counted kinds: the legacy core ones from the start, kinds named
    // by `count/<plural>.<group>` once a quota first counts them.
    let others = LEGACY_COUNTS.iter().filter(|p| !matches!(**p, "pods" | "resourcequotas")).map(|plural| released_in(&client, &core_resource(plural)));
    let mut sources: SelectAll<BoxStream<'static, Option<String>>> =
        stream::select_all(others.chain([quota_events.boxed(), pod_events.boxed()]));
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kinds = Kinds::default();
    // A full recount not yet done because the caches were still filling
    // (the first one, at start, nearly always).
    let mut full_pending = false;
    loop {
        let mut namespaces: BTreeSet<String> = tokio::select! {
            e = sources.next() => match e {
                // With whatever else is ready: one recount per namespace for a burst.
                Some(first) => {
                    let mut batch: BTreeSet<String> = first.into_iter().collect();
                    for _ in 0..4096 {
                        match sources.next().now_or_never() {
                            Some(Some(more)) => batch.extend(more),
                            _ => break,
                        }
                    }
                    batch
                }
                None => return,
            },
            _ = tick.tick() => {
                full_pending = true;
                BTreeSet::new()
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if full_pending => BTreeSet::new(),
        };
        if !(ready(&quotas) && ready(&pods)) {
            continue;
        }
        let all = quotas.state();
        if std::mem::take(&mut full_pending) {
            namespaces.extend(all.iter().filter_map(|q| q.namespace()));
        }
        for ns in namespaces {
            let in_ns: Vec<&Arc<ResourceQuota>> = all.iter().filter(|q| q.namespace().as_deref() == Some(ns.as_str())).collect();
            if !in_ns.is_empty() {
                sync_namespace(&client, &ns, &in_ns, &pods.state(), &mut kinds).await;
            }
        }
        for ar in kinds.newly_found.drain(..) {
            sources.push(released_in(&client, &ar));
        }
    }
}

/// Namespaces where objects of a kind went away (or changed, see `released`).
fn released_in(client: &Client, ar: &ApiResource) -> BoxStream<'static, Option<String>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let tracks_updates = ar.group.is_empty() && matches!(ar.plural.as_str(), "services" | "persistentvolumeclaims");
    released(tracks_updates, metadata_watcher(api, watcher::Config::default()).default_backoff()).boxed()
}

/// A finished pod no longer counts.
fn pod_finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The namespaces where objects went away, or, with `tracks_updates` (for
/// Services and claims), changed: a type or size change can release usage.
/// New objects are charged by admission, so they wake nothing.
fn released<S>(tracks_updates: bool, events: S) -> impl futures::Stream<Item = Option<String>>
where
    S: futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<DynamicObject>>, watcher::Error>>,
{
    events.scan(HashSet::new(), move |seen, e| {
        let ns = match e {
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&o.uid().unwrap_or_default());
                Some(o.namespace())
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) if tracks_updates => (!seen.insert(o.uid().unwrap_or_default())).then(|| o.namespace()),
            _ => None,
        };
        std::future::ready(Some(ns.flatten()))
    })
}

fn json(q: &ResourceQuota) -> Value {
    serde_json::to_value(q).unwrap_or_default()
}

/// `status.hard` differs from `spec.hard`, or `status.used` lacks one of them.
fn needs_count(q: &Value) -> bool {
    let (spec, status) = (quota::list(&q["spec"]["hard"]), quota::list(&q["status"]["hard"]));
    let used = quota::list(&q["status"]["used"]);
    spec != status || spec.keys().any(|k| !used.contains_key(k))
}

fn core_resource(plural: &str) -> ApiResource {
    let kind = match plural {
        "services" => "Service",
        "replicationcontrollers" => "ReplicationController",
        "resourcequotas" => "ResourceQuota",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        _ => "Pod",
    };
    ApiResource { group: String::new(), version: "v1".into(), api_version: "v1".into(), kind: kind.into(), plural: plural.into() }
}

/// Kinds found through discovery, for `count/<plural>.<group>`, and those
/// found since the controller last started watching them.
#[derive(Default)]
struct Kinds {
    found: HashMap<Kind, Option<ApiResource>>,
    newly_found: Vec<ApiResource>,
}

impl Kinds {
    async fn resolve(&mut self, client: &Client, (group, plural): &Kind) -> Option<ApiResource> {
        if group.is_empty() && LEGACY_COUNTS.contains(&plural.as_str()) {
            return Some(core_resource(plural));
        }
        let key = (group.clone(), plural.clone());
        if let Some(Some(found)) = self.found.get(&key) {
            return Some(found.clone());
        }
        let discovery = Discovery::new(client.clone()).filter(&[group.as_str()]).run().await.ok()?;
        let found = discovery.groups().flat_map(|g| g.recommended_resources()).map(|(ar, _)| ar).find(|ar| ar.plural == *plural);
        self.newly_found.extend(found.clone());
        self.found.insert(key, found.clone());
        found
    }
}

/// The kinds whose objects the quota's hard resources count.
fn counted_kinds(hard: &ResourceList) -> BTreeSet<Kind> {
    let mut out = BTreeSet::new();
    for plural in LEGACY_COUNTS {
        if !quota::matching_resources("", plural, hard.keys()).is_empty() {
            out.insert((String::new(), plural.to_string()));
        }
    }
    for name in hard.keys() {
        if let Some(rest) = name.strip_prefix("count/") {
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            out.insert((group.to_string(), plural.to_string()));
        }
    }
    out
}

async fn sync_namespace(client: &Client, ns: &str, quotas: &[&Arc<ResourceQuota>], pods: &[Arc<Pod>], kinds: &mut Kinds) {
    let wanted: BTreeSet<Kind> = quotas.iter().flat_map(|q| counted_kinds(&quota::list(&json(q)["spec"]["hard"]))).collect();
    let mut objects: BTreeMap<Kind, Vec<Value>> = BTreeMap::new();
    for kind in wanted {
        let listed = if kind.0.is_empty() && kind.1 == "pods" {
            pods.iter().filter(|p| p.namespace().as_deref() == Some(ns)).filter_map(|p| serde_json::to_value(p.as_ref()).ok()).collect()
        } else {
            match kinds.resolve(client, &kind).await {
                Some(ar) => match Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar).list(&ListParams::default()).await {
                    Ok(list) => list.items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect(),
                    Err(e) => {
                        tracing::debug!(ns, kind = kind.1, "quota: listing: {e}");
                        continue;
                    }
                },
                None => continue,
            }
        };
        objects.insert(kind, listed);
    }
    let now = Utc::now();
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    for q in quotas {
        let mut value = json(q);
        let hard = quota::list(&value["spec"]["hard"]);
        let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Default::default())).collect();
        for ((group, plural), objs) in &objects {
            used = quota::add(&used, &quota::used_by(&value, group, plural, objs, now));
        }
        // What could not be counted (an unknown kind) keeps its last count.
        let old_used = quota::list(&value["status"]["used"]);
        for (k, q) in used.iter_mut() {
            if !counted(k, &objects) {
                *q = old_used.get(k).cloned().unwrap_or_default();
            }
        }
        if quota::list(&value["status"]["hard"]) == hard && old_used == used {
            continue;
        }
        value["status"] = serde_json::json!({"hard": quota::to_json(&hard), "used": quota::to_json(&used)});
        let body = serde_json::to_vec(&value).unwrap_or_default();
        match api.replace_status(&q.name_any(), &PostParams::default(), body).await {
            Ok(_) => tracing::debug!(ns, quota = q.name_any(), "quota: recounted usage"),
            // A conflict means admission charged it meanwhile: its own event brings a recount if needed.
            Err(e) if benign(&e) => {}
            Err(e) => tracing::warn!(ns, quota = q.name_any(), "quota: updating status: {e}"),
        }
    }
}

/// Whether some listed kind counts resource `name`.
fn counted(name: &str, objects: &BTreeMap<Kind, Vec<Value>>) -> bool {
    objects.keys().any(|(g, p)| !quota::matching_resources(g, p, [&name.to_string()]).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_quota_needs_counting_until_its_status_covers_its_limits() {
        assert!(needs_count(&json!({"spec": {"hard": {"pods": "2"}}})));
        assert!(needs_count(&json!({"spec": {"hard": {"pods": "3"}}, "status": {"hard": {"pods": "2"}, "used": {"pods": "1"}}})));
        assert!(!needs_count(&json!({"spec": {"hard": {"pods": "2"}}, "status": {"hard": {"pods": "2"}, "used": {"pods": "1"}}})));
    }

    #[test]
    fn hard_resources_name_the_kinds_to_count() {
        let hard = quota::list(&json!({"pods": "1", "requests.storage": "1Gi", "count/deployments.apps": "2", "count/secrets": "1", "services.nodeports": "0"}));
        let kinds: Vec<String> = counted_kinds(&hard).into_iter().map(|(g, p)| format!("{p}.{g}")).collect();
        assert_eq!(kinds, vec!["persistentvolumeclaims.", "pods.", "secrets.", "services.", "deployments.apps"]);
    }

    fn meta(ns: &str, uid: &str) -> PartialObjectMeta<DynamicObject> {
        serde_json::from_value(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"namespace": ns, "uid": uid}})).unwrap()
    }

    #[tokio::test]
    async fn creates_wake_no_recount_but_releases_do() {
        let events = |tracks_updates| {
            let es = vec![
                Ok(watcher::Event::Apply(meta("a", "1"))),
                Ok(watcher::Event::Apply(meta("b", "1"))),
                Ok(watcher::Event::Delete(meta("c", "1"))),
            ];
            released(tracks_updates, stream::iter(es)).collect::<Vec<_>>()
        };
        assert_eq!(events(false).await, vec![None, None, Some("c".to_string())]);
        // A Service seen before changed: its type may have released a node port.
        assert_eq!(events(true).await, vec![None, Some("b".to_string()), Some("c".to_string())]);
    }
}
