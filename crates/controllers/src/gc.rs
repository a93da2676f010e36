//! The garbage collector: deletes objects whose owners (by uid) are all
//! gone, and carries out foreground (`foregroundDeletion` finalizer) and
//! orphan (`orphan` finalizer) deletion of owners, for every served kind.
//!
//! One metadata-only watch per kind feeds a uid -> object graph with a
//! reverse owner -> dependents index. Work items (a dependent to check, an
//! owner being deleted to finish) go through a deduplicating queue served by
//! a few workers. Nothing is acted on until every watch has listed once, and
//! an owner missing from the graph is confirmed with a GET before its
//! dependents are deleted (its watch may simply lag another kind's).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::watcher::{self, metadata_watcher, Event};
use kube::Client;
use resources::catalog::{ResourceInfo, CATALOG};
use serde_json::json;
use tokio::sync::Notify;

const WORKERS: usize = 8;
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// What the graph remembers of one object.
struct Obj {
    res: usize,
    ns: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

impl Obj {
    fn has(&self, f: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Item {
    /// Check whether this object's owners are gone or being deleted.
    Dependent(String),
    /// Finish the foreground or orphan deletion of this owner.
    Owner(String),
}

#[derive(Default)]
struct Graph {
    objs: HashMap<String, Obj>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn upsert(&mut self, uid: String, obj: Obj, queue: &mut Vec<Item>) {
        let old_owners: Vec<String> = self.objs.get(&uid).map(|o| o.owners.iter().map(|r| r.uid.clone()).collect()).unwrap_or_default();
        for o in &old_owners {
            if !obj.owners.iter().any(|r| &r.uid == o) {
                self.unlink(o, &uid);
                queue.push(Item::Owner(o.clone()));
            }
        }
        for r in &obj.owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(uid.clone());
            if self.objs.get(&r.uid).is_some_and(|o| o.deleting) {
                queue.push(Item::Owner(r.uid.clone()));
            }
        }
        if !obj.owners.is_empty() {
            queue.push(Item::Dependent(uid.clone()));
        }
        if obj.has(ORPHAN) || obj.has(FOREGROUND) {
            queue.push(Item::Owner(uid.clone()));
        }
        self.objs.insert(uid, obj);
    }

    fn remove(&mut self, uid: &str, queue: &mut Vec<Item>) {
        if let Some(obj) = self.objs.remove(uid) {
            for r in &obj.owners {
                self.unlink(&r.uid, uid);
                queue.push(Item::Owner(r.uid.clone()));
            }
        }
        if let Some(deps) = self.dependents.get(uid) {
            queue.extend(deps.iter().map(|d| Item::Dependent(d.clone())));
        }
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }
}

/// A deduplicating work queue.
#[derive(Default)]
struct Queue {
    items: Mutex<(VecDeque<Item>, HashSet<Item>)>,
    notify: Notify,
}

impl Queue {
    fn push_all(&self, items: Vec<Item>) {
        let mut q = self.items.lock().unwrap();
        for i in items {
            if q.1.insert(i.clone()) {
                q.0.push_back(i);
            }
        }
        drop(q);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    async fn pop(&self) -> Item {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.items.lock().unwrap();
                if let Some(i) = q.0.pop_front() {
                    q.1.remove(&i);
                    return i;
                }
            }
            notified.await;
        }
    }
}

/// The kinds to watch: one version of each stored kind. Kinds answered live
/// (ComponentStatus) cannot be watched and own nothing.
fn kinds() -> Vec<&'static ResourceInfo> {
    let mut seen = HashSet::new();
    CATALOG.iter().filter(|i| i.verbs().contains(&"watch") && seen.insert(i.storage)).collect()
}

fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.into(),
        version: info.version.into(),
        api_version: info.api_version(),
        kind: info.kind.into(),
        plural: info.plural.into(),
    }
}

struct Gc {
    client: Client,
    kinds: Vec<&'static ResourceInfo>,
    graph: Mutex<Graph>,
    queue: Queue,
}

pub async fn run(client: Client) {
    let gc = Arc::new(Gc { client: client.clone(), kinds: kinds(), graph: Mutex::default(), queue: Queue::default() });
    let synced = Arc::new(tokio::sync::Semaphore::new(0));
    let watches = gc.kinds.iter().enumerate().map(|(idx, info)| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(info));
        let (gc, synced) = (gc.clone(), synced.clone());
        async move {
            // Listed from the API server's cache (resourceVersion=0), not page by page from the store.
            let mut stream = metadata_watcher(api, watcher::Config::default().any_semantic()).boxed();
            let mut first = true;
            let mut init: HashSet<String> = HashSet::new();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(kind = info.kind, "gc watch: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut queue = Vec::new();
                {
                    let mut g = gc.graph.lock().unwrap();
                    match ev {
                        Event::Init => init.clear(),
                        Event::InitApply(o) | Event::Apply(o) => {
                            let (uid, obj) = to_obj(idx, o.metadata);
                            if let Some(uid) = uid {
                                init.insert(uid.clone());
                                g.upsert(uid, obj, &mut queue);
                            }
                        }
                        Event::Delete(o) => {
                            if let Some(uid) = o.metadata.uid {
                                g.remove(&uid, &mut queue);
                            }
                        }
                        Event::InitDone => {
                            // After a relist, objects of this kind not listed again are gone.
                            let stale: Vec<String> =
                                g.objs.iter().filter(|(u, o)| o.res == idx && !init.contains(*u)).map(|(u, _)| u.clone()).collect();
                            for u in stale {
                                g.remove(&u, &mut queue);
                            }
                            init.clear();
                            if first {
                                first = false;
                                synced.add_permits(1);
                            }
                        }
                    }
                }
                gc.queue.push_all(queue);
            }
        }
    });
    let watches = futures::future::join_all(watches);
    let workers = async {
        let n = gc.kinds.len() as u32;
        let _all = synced.acquire_many(n).await;
        tracing::info!("garbage collector synced {n} kinds");
        futures::future::join_all((0..WORKERS).map(|_| {
            let gc = gc.clone();
            async move {
                loop {
                    let item = gc.queue.pop().await;
                    let done = match &item {
                        Item::Dependent(uid) => gc.attempt_dependent(uid).await,
                        Item::Owner(uid) => gc.finish_owner(uid).await,
                    };
                    if let Err(e) = done {
                        tracing::debug!("gc: {e}; retrying");
                        let gc = gc.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            gc.queue.push_all(vec![item]);
                        });
                    }
                }
            }
        }))
        .await;
    };
    tokio::join!(watches, workers);
}

fn to_obj(res: usize, m: kube::api::ObjectMeta) -> (Option<String>, Obj) {
    let obj = Obj {
        res,
        ns: m.namespace,
        name: m.name.unwrap_or_default(),
        owners: m.owner_references.unwrap_or_default(),
        finalizers: m.finalizers.unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
    };
    (m.uid, obj)
}

/// A dependent as `finish_owner` sees it: uid, kind, namespace, name, owners.
type Dep = (String, usize, Option<String>, String, Vec<OwnerReference>);

/// How a dependent stands towards one of its owners.
enum Standing {
    Solid,
    Dangling,
    Waiting,
}

impl Gc {
    fn api(&self, res: usize, ns: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(self.kinds[res]);
        match ns {
            Some(ns) if self.kinds[res].namespaced => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// The kind an ownerReference names, by apiVersion and kind.
    fn kind_of(&self, r: &OwnerReference) -> Option<usize> {
        let (group, version) = r.api_version.split_once('/').unwrap_or(("", &r.api_version));
        self.kinds
            .iter()
            .position(|i| i.kind == r.kind && i.group == group && i.version == version)
            .or_else(|| self.kinds.iter().position(|i| i.kind == r.kind && i.group == group))
    }

    /// Owners missing from the graph are looked up: only a 404 or another
    /// uid under that name makes them dangling.
    async fn standing(&self, r: &OwnerReference, dep_ns: Option<&str>) -> anyhow::Result<Standing> {
        {
            let g = self.graph.lock().unwrap();
            if let Some(o) = g.objs.get(&r.uid) {
                return Ok(if o.has(FOREGROUND) { Standing::Waiting } else { Standing::Solid });
            }
        }
        let Some(res) = self.kind_of(r) else { return Ok(Standing::Solid) };
        match self.api(res, dep_ns).get_metadata_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(&r.uid) => Ok(Standing::Solid),
            _ => Ok(Standing::Dangling),
        }
    }

    async fn attempt_dependent(&self, uid: &str) -> anyhow::Result<()> {
        let (res, ns, name, owners) = {
            let g = self.graph.lock().unwrap();
            match g.objs.get(uid) {
                Some(o) if !o.deleting && !o.owners.is_empty() => (o.res, o.ns.clone(), o.name.clone(), o.owners.clone()),
                _ => return Ok(()),
            }
        };
        let (mut solid, mut dangling, mut waiting) = (0, Vec::new(), Vec::new());
        for r in &owners {
            match self.standing(r, ns.as_deref()).await? {
                Standing::Solid => solid += 1,
                Standing::Dangling => dangling.push(r.uid.clone()),
                Standing::Waiting => waiting.push(r.uid.clone()),
            }
        }
        let api = self.api(res, ns.as_deref());
        if solid > 0 {
            // Still owned: only drop the references to owners that are gone or going.
            let gone: Vec<String> = dangling.into_iter().chain(waiting).collect();
            if !gone.is_empty() {
                remove_owner_refs(&api, &name, &owners, &gone).await?;
            }
            return Ok(());
        }
        let policy = if !waiting.is_empty() { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
        tracing::info!(kind = self.kinds[res].kind, ns = ns.as_deref().unwrap_or(""), name, "garbage collecting: owners are gone");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish_owner(&self, uid: &str) -> anyhow::Result<()> {
        let (res, ns, name, finalizers, orphan, foreground, deps) = {
            let g = self.graph.lock().unwrap();
            let Some(o) = g.objs.get(uid) else { return Ok(()) };
            let deps: Vec<Dep> = g
                .dependents
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|d| g.objs.get(d).map(|x| (d.clone(), x.res, x.ns.clone(), x.name.clone(), x.owners.clone())))
                .collect();
            (o.res, o.ns.clone(), o.name.clone(), o.finalizers.clone(), o.has(ORPHAN), o.has(FOREGROUND), deps)
        };
        let api = self.api(res, ns.as_deref());
        if orphan {
            for (_, dres, dns, dname, owners) in &deps {
                let dapi = self.api(*dres, dns.as_deref());
                remove_owner_refs(&dapi, dname, owners, &[uid.to_string()]).await?;
            }
            tracing::info!(kind = self.kinds[res].kind, name, "orphaned {} dependents", deps.len());
            return remove_finalizer(&api, &name, &finalizers, ORPHAN).await;
        }
        if foreground {
            let blocking = deps
                .iter()
                .filter(|(_, _, _, _, owners)| owners.iter().any(|r| r.uid == uid && r.block_owner_deletion == Some(true)))
                .count();
            self.queue.push_all(deps.iter().map(|d| Item::Dependent(d.0.clone())).collect());
            if blocking == 0 {
                return remove_finalizer(&api, &name, &finalizers, FOREGROUND).await;
            }
        }
        Ok(())
    }
}

/// Removes the ownerReferences with these uids; the JSON patch tests each
/// entry first, so a concurrent change makes it fail instead of removing the wrong one.
async fn remove_owner_refs(api: &Api<DynamicObject>, name: &str, owners: &[OwnerReference], uids: &[String]) -> anyhow::Result<()> {
    let mut ops = Vec::new();
    for (i, r) in owners.iter().enumerate().rev() {
        if uids.contains(&r.uid) {
            ops.push(json!({"op": "test", "path": format!("/metadata/ownerReferences/{i}/uid"), "value": r.uid}));
            ops.push(json!({"op": "remove", "path": format!("/metadata/ownerReferences/{i}")}));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    if ops.len() == owners.len() * 2 {
        // None left: drop the field, as upstream's clients would see it.
        ops.retain(|op| op["op"] == "test");
        ops.push(json!({"op": "remove", "path": "/metadata/ownerReferences"}));
    }
    json_patch(api, name, ops).await
}

async fn remove_finalizer(api: &Api<DynamicObject>, name: &str, finalizers: &[String], which: &str) -> anyhow::Result<()> {
    let Some(i) = finalizers.iter().position(|f| f == which) else { return Ok(()) };
    let ops = vec![
        json!({"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": which}),
        json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}),
    ];
    json_patch(api, name, ops).await
}

async fn json_patch(api: &Api<DynamicObject>, name: &str, ops: Vec<serde_json::Value>) -> anyhow::Result<()> {
    let patch: json_patch::Patch = serde_json::from_value(json!(ops))?;
    match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(owners: &[&str], finalizers: &[&str], deleting: bool) -> Obj {
        let owners = owners.iter().map(|u| OwnerReference { uid: u.to_string(), ..Default::default() }).collect();
        Obj { res: 0, ns: None, name: "x".into(), owners, finalizers: finalizers.iter().map(|f| f.to_string()).collect(), deleting }
    }

    #[test]
    fn graph_queues_the_right_work() {
        let mut g = Graph::default();
        let mut q = Vec::new();
        g.upsert("owner".into(), obj(&[], &[], false), &mut q);
        assert!(q.is_empty());
        g.upsert("dep".into(), obj(&["owner"], &[], false), &mut q);
        assert!(q == vec![Item::Dependent("dep".into())]);
        q.clear();
        // The owner going away in the foreground: finish it.
        g.upsert("owner".into(), obj(&[], &[FOREGROUND], true), &mut q);
        assert!(q.contains(&Item::Owner("owner".into())));
        q.clear();
        // Its dependent gone: look at the owner again.
        g.remove("dep", &mut q);
        assert!(q == vec![Item::Owner("owner".into())]);
        assert!(!g.dependents.contains_key("owner"));
        q.clear();
        // An owner deleted: its dependents are checked.
        g.upsert("dep2".into(), obj(&["owner"], &[], false), &mut q);
        q.clear();
        g.remove("owner", &mut q);
        assert!(q == vec![Item::Dependent("dep2".into())]);
    }

    #[test]
    fn one_version_per_stored_kind() {
        let k = kinds();
        let mut storages: Vec<_> = k.iter().map(|i| i.storage).collect();
        storages.dedup();
        assert_eq!(storages.len(), k.len());
        assert!(k.iter().any(|i| i.kind == "Pod") && k.iter().any(|i| i.kind == "ReplicaSet"));
    }
}
