//! The scheduler: assigns pending pods (schedulerName `default-scheduler`)
//! to nodes. One task owns the cache and the queue; node and pod watches
//! feed it, bindings and status writes run concurrently beside it.
//!
//! queue.rs (priority queue, backoff, unschedulable pods), cache.rs
//! (per-node state from the watches), filters.rs / interpod.rs / spread.rs
//! (filters), volumes.rs (volume binding), scores.rs, schedule.rs (one
//! attempt), preempt.rs, bind.rs (API writes).

pub mod bind;
pub mod cache;
pub mod filters;
pub mod interpod;
pub mod labels;
pub mod preempt;
pub mod queue;
pub mod schedule;
pub mod scores;
pub mod spread;
pub mod volumes;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use cache::{Cache, PodInfo};
use queue::Queue;

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Runs the scheduler while this process holds the `kube-scheduler` lease,
/// until `stop` (which releases the lease).
pub async fn run(client: Client, identity: String, stop: impl std::future::Future<Output = ()>) {
    client::leader::run_as_leader(client.clone(), "kube-scheduler", &identity, stop, || {
        Scheduler::new(client.clone(), identity.clone()).run()
    })
    .await
}

enum Msg {
    Node(Box<Event<Node>>),
    Pod(Box<Event<Pod>>),
    Pdb(Box<Event<PodDisruptionBudget>>),
    Claim(Box<Event<PersistentVolumeClaim>>),
    Volume(Box<Event<PersistentVolume>>),
    Class(Box<Event<StorageClass>>),
    /// A binding failed: forget the assumption; retry the pod when `retry`.
    BindFailed { key: String, pod: Arc<Pod>, retry: bool },
}

/// Bindings (and their events) in flight at once. Scheduling runs ahead of
/// binding; an unbounded number of writes would queue in the API server and
/// delay everyone's requests, lease renewals included (upstream bounds its
/// clients by QPS).
const WRITES_IN_FLIGHT: usize = 64;

struct Scheduler {
    client: Client,
    identity: String,
    writes: Arc<tokio::sync::Semaphore>,
    cache: Cache,
    queue: Queue,
    /// Pods assumed onto a node whose binding has not shown up in the watch yet.
    assumed: HashSet<String>,
    start: usize,
    rng: rand::rngs::StdRng,
    /// Keys seen since the watch (re)listed, to drop what vanished meanwhile.
    relist_nodes: Option<HashSet<String>>,
    relist_pods: Option<HashSet<String>>,
    relist_pdbs: Option<std::collections::BTreeMap<String, cache::Pdb>>,
    synced: (bool, bool),
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

fn responsible(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let name = spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or("");
    (name.is_empty() || name == SCHEDULER_NAME) && spec.and_then(|s| s.node_name.as_deref()).unwrap_or("").is_empty()
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

impl Scheduler {
    fn new(client: Client, identity: String) -> Scheduler {
        use rand::SeedableRng;
        Scheduler {
            client,
            identity,
            writes: Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT)),
            cache: Cache::default(),
            queue: Queue::default(),
            assumed: HashSet::new(),
            start: 0,
            rng: rand::rngs::StdRng::from_entropy(),
            relist_nodes: None,
            relist_pods: None,
            relist_pdbs: None,
            synced: (false, false),
        }
    }

    async fn run(mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The watch tasks end with this future (JoinSet aborts on drop).
        let mut tasks = tokio::task::JoinSet::new();
        let nodes = watcher(Api::<Node>::all(self.client.clone()));
        let pods = watcher(Api::<Pod>::all(self.client.clone()));
        let t = tx.clone();
        tasks.spawn(forward(nodes, move |e| t.send(Msg::Node(Box::new(e))).is_ok()));
        let t = tx.clone();
        tasks.spawn(forward(pods, move |e| t.send(Msg::Pod(Box::new(e))).is_ok()));
        let pdbs = watcher(Api::<PodDisruptionBudget>::all(self.client.clone()));
        let t = tx.clone();
        tasks.spawn(forward(pdbs, move |e| t.send(Msg::Pdb(Box::new(e))).is_ok()));
        let t = tx.clone();
        tasks.spawn(forward(watcher(Api::<PersistentVolumeClaim>::all(self.client.clone())), move |e| t.send(Msg::Claim(Box::new(e))).is_ok()));
        let t = tx.clone();
        tasks.spawn(forward(watcher(Api::<PersistentVolume>::all(self.client.clone())), move |e| t.send(Msg::Volume(Box::new(e))).is_ok()));
        let t = tx.clone();
        tasks.spawn(forward(watcher(Api::<StorageClass>::all(self.client.clone())), move |e| t.send(Msg::Class(Box::new(e))).is_ok()));
        tracing::info!("scheduler started");
        let mut scheduled_since_yield = 0;
        loop {
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            let next = self.queue.flush(Instant::now());
            if self.synced == (true, true) && self.cache.volumes.synced() {
                if let Some((key, pod)) = self.queue.pop() {
                    self.schedule_one(key, pod, &tx);
                    scheduled_since_yield += 1;
                    if scheduled_since_yield >= 64 {
                        scheduled_since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            }
            let wait = next.map_or(Duration::from_secs(30), |t| t.saturating_duration_since(Instant::now()));
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Node(e) => self.node_event(*e),
            Msg::Pod(e) => self.pod_event(*e),
            Msg::Pdb(e) => self.pdb_event(*e),
            // A claim bound or a volume made may let a waiting pod in.
            Msg::Claim(e) => {
                self.cache.volumes.claims.apply(*e);
                self.queue.move_all();
            }
            Msg::Volume(e) => {
                self.cache.volumes.volumes.apply(*e);
                self.queue.move_all();
            }
            Msg::Class(e) => {
                self.cache.volumes.classes.apply(*e);
                self.queue.move_all();
            }
            Msg::BindFailed { key, pod, retry } => {
                if self.assumed.remove(&key) {
                    self.cache.remove_pod(&key);
                    self.queue.move_all();
                }
                if retry && !self.queue.contains(&key) {
                    self.queue.requeue_backoff(&key, pod);
                }
            }
        }
    }

    fn node_event(&mut self, e: Event<Node>) {
        match e {
            Event::Init => self.relist_nodes = Some(HashSet::new()),
            Event::InitApply(n) | Event::Apply(n) => {
                if let Some(seen) = &mut self.relist_nodes {
                    seen.insert(n.name_any());
                }
                if self.cache.set_node(&n) {
                    self.queue.move_all();
                }
            }
            Event::Delete(n) => self.cache.remove_node(&n.name_any()),
            Event::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    let gone: Vec<String> = self.cache.nodes.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    gone.iter().for_each(|n| self.cache.remove_node(n));
                }
                self.synced.0 = true;
                self.queue.move_all();
            }
        }
    }

    fn pdb_event(&mut self, e: Event<PodDisruptionBudget>) {
        let key = |p: &PodDisruptionBudget| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        match e {
            Event::Init => self.relist_pdbs = Some(Default::default()),
            Event::InitApply(p) => {
                self.relist_pdbs.get_or_insert_with(Default::default).insert(key(&p), cache::Pdb::new(&p));
            }
            Event::Apply(p) => {
                self.cache.pdbs.insert(key(&p), cache::Pdb::new(&p));
            }
            Event::Delete(p) => {
                self.cache.pdbs.remove(&key(&p));
            }
            Event::InitDone => self.cache.pdbs = self.relist_pdbs.take().unwrap_or_default(),
        }
    }

    fn pod_event(&mut self, e: Event<Pod>) {
        match e {
            Event::Init => self.relist_pods = Some(HashSet::new()),
            Event::InitApply(p) | Event::Apply(p) => {
                if let Some(seen) = &mut self.relist_pods {
                    seen.insert(key_of(&p));
                }
                self.pod_applied(Arc::new(p));
            }
            Event::Delete(p) => {
                let key = key_of(&p);
                self.queue.remove(&key);
                self.cache.set_nominated(&key, None, None);
                self.assumed.remove(&key);
                if self.cache.remove_pod(&key).is_some() {
                    self.queue.move_all();
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    let stale: Vec<String> = self.cache.pod_node.keys().filter(|k| !seen.contains(*k) && !self.assumed.contains(*k)).cloned().collect();
                    for k in stale {
                        self.cache.remove_pod(&k);
                    }
                }
                self.synced.1 = true;
                self.queue.move_all();
            }
        }
    }

    fn pod_applied(&mut self, pod: Arc<Pod>) {
        let key = key_of(&pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if !node.is_empty() {
            self.queue.remove(&key);
            self.cache.set_nominated(&key, None, None);
            self.assumed.remove(&key);
            if terminal(&pod) {
                if self.cache.remove_pod(&key).is_some() {
                    self.queue.move_all();
                }
                return;
            }
            let info = Arc::new(PodInfo::new(pod));
            let changed = self.cache.pod(&key).is_none_or(|old| old.labels != info.labels || self.cache.pod_node.get(&key) != Some(&node) || old.terminating() != info.terminating());
            self.cache.set_pod(info, &node);
            if changed {
                self.queue.move_all();
            }
            return;
        }
        if self.assumed.contains(&key) {
            return; // our binding is in flight; the watch has not caught up
        }
        if responsible(&pod) && pod.metadata.deletion_timestamp.is_none() && !terminal(&pod) {
            let nominated = pod.status.as_ref().and_then(|s| s.nominated_node_name.clone());
            self.cache.set_nominated(&key, nominated.as_deref(), nominated.is_some().then(|| Arc::new(PodInfo::new(pod.clone()))));
            self.queue.upsert(&key, pod);
        } else {
            self.cache.set_nominated(&key, None, None);
            self.queue.remove(&key);
        }
    }

    fn schedule_one(&mut self, key: String, pod: Arc<Pod>, tx: &mpsc::UnboundedSender<Msg>) {
        let info = Arc::new(PodInfo::new(pod.clone()));
        match schedule::schedule(&self.cache, &info, &mut self.start, &mut self.rng) {
            Ok(schedule::Placement { node, delayed_claims: delayed }) => {
                self.queue.done(&key);
                self.cache.set_nominated(&key, None, None);
                self.assumed.insert(key.clone());
                self.cache.set_pod(info, &node);
                let (client, tx, instance, writes) = (self.client.clone(), tx.clone(), self.identity.clone(), self.writes.clone());
                tokio::spawn(async move {
                    if !delayed.is_empty() {
                        if let Err(why) = volumes::bind_delayed(&client, &delayed, &node).await {
                            tracing::info!(pod = key, node, "{why}");
                            bind::event(&client, &pod, "Warning", "FailedScheduling", "Scheduling", &why, &instance).await;
                            let _ = tx.send(Msg::BindFailed { key, pod, retry: true });
                            return;
                        }
                    }
                    let _permit = writes.acquire_owned().await;
                    match bind::bind(&client, &pod, &node).await {
                        Ok(()) => {
                            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                            let msg = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
                            bind::event(&client, &pod, "Normal", "Scheduled", "Binding", &msg, &instance).await;
                        }
                        Err(bind::BindError::Gone) => {
                            let _ = tx.send(Msg::BindFailed { key, pod, retry: false });
                        }
                        Err(bind::BindError::Retry(e)) => {
                            tracing::warn!(pod = key, node, "binding failed: {e}");
                            let _ = tx.send(Msg::BindFailed { key, pod, retry: true });
                        }
                    }
                });
            }
            Err(fit) => {
                let (post, candidate) = if fit.num_nodes == 0 { (String::new(), None) } else { preempt::preempt(&self.cache, &info, &fit) };
                let message = fit.message(&post);
                let changed = self.queue.unschedulable(&key, &message);
                tracing::debug!(pod = key, "{message}");
                let (client, instance, writes) = (self.client.clone(), self.identity.clone(), self.writes.clone());
                let victims: Vec<Arc<Pod>> = candidate.iter().flat_map(|c| c.victims.iter().map(|v| v.pod.clone())).collect();
                let nominated = candidate.map(|c| c.node);
                if let Some(n) = &nominated {
                    self.cache.set_nominated(&key, Some(n), Some(info.clone()));
                }
                tokio::spawn(async move {
                    let _permit = writes.acquire_owned().await;
                    bind::event(&client, &pod, "Warning", "FailedScheduling", "Scheduling", &message, &instance).await;
                    if changed || nominated.is_some() {
                        bind::mark_unschedulable(&client, &pod, &message, nominated.as_deref()).await;
                    }
                    if let Some(node) = &nominated {
                        for v in &victims {
                            bind::delete_victim(&client, v, &pod, node).await;
                        }
                    }
                });
            }
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Event<K>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    // Listed from the API server's cache, as client-go's informers do; the
    // managedFields no plugin reads are dropped before anything keeps them.
    watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .filter_map(|r| async move { r.map_err(|e| tracing::debug!("scheduler watch: {e}")).ok() })
}

async fn forward<K>(stream: impl futures::Stream<Item = Event<K>> + Send, send: impl Fn(Event<K>) -> bool + Send) {
    let mut stream = std::pin::pin!(stream);
    while let Some(e) = stream.next().await {
        if !send(e) {
            return;
        }
    }
}
