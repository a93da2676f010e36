//! The pods bound to this node: one watch with `spec.nodeName=<node>`
//! and the static pods from manifest files feeding one worker per pod UID
//! (mirror pods are not run: their static pod is). At start the runtime's sandboxes are
//! handed to the workers of their pods (no duplicate containers after an
//! agent restart); once the first list is complete, sandboxes of pods that
//! no longer exist are removed and their addresses freed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use runtime::cri::PodSandboxStatus;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::static_pods;
use super::worker::{PodMsg, Worker};
use super::Agent;

struct Manager {
    agent: Arc<Agent>,
    /// Running workers by pod uid, with a serial so a finished worker's
    /// exit notice cannot remove its successor.
    workers: HashMap<String, (u64, UnboundedSender<PodMsg>)>,
    serial: u64,
    /// Sandboxes found at start, by pod uid, not yet handed to a worker.
    found: HashMap<String, Vec<PodSandboxStatus>>,
    done_tx: UnboundedSender<(String, u64)>,
    cleaned_orphans: bool,
    /// UIDs of the static pods now wanted.
    statics: HashSet<String>,
}

impl Manager {
    fn dispatch(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(self.agent.config.node_name.as_str()) {
            return;
        }
        if static_pods::is_mirror(&pod) {
            if pod.metadata.deletion_timestamp.is_some() {
                self.agent.static_kick.notify_one();
            } else if let Some((_, tx)) = static_pods::mirror_hash(&pod).and_then(|h| self.workers.get(h)) {
                let _ = tx.send(PodMsg::Mirror(Box::new(pod)));
            }
            return;
        }
        if let Some((_, tx)) = self.workers.get(&uid) {
            if tx.send(PodMsg::Update(Box::new(pod.clone()))).is_ok() {
                return;
            }
        }
        let (tx, rx) = unbounded_channel();
        let adopt = self.found.remove(&uid).unwrap_or_default();
        let worker = Worker::new(self.agent.clone(), pod, tx.clone(), adopt);
        let done = self.done_tx.clone();
        self.serial += 1;
        let serial = self.serial;
        self.workers.insert(uid.clone(), (serial, tx));
        tokio::spawn(async move {
            worker.run(rx).await;
            let _ = done.send((uid, serial));
        });
    }

    /// The static pods from the manifests: new ones start, vanished ones stop.
    fn set_statics(&mut self, pods: Vec<Pod>) {
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for uid in self.statics.difference(&uids).cloned().collect::<Vec<_>>() {
            self.gone(&uid);
        }
        self.statics = uids;
        for pod in pods {
            self.dispatch(pod);
        }
    }

    fn gone(&mut self, uid: &str) {
        if let Some((_, tx)) = self.workers.get(uid) {
            let _ = tx.send(PodMsg::Gone);
        }
    }

    /// Removes sandboxes (and addresses) no pod of this node owns.
    fn clean_orphans(&mut self) {
        if self.cleaned_orphans {
            return;
        }
        self.cleaned_orphans = true;
        let orphans: Vec<PodSandboxStatus> = self.found.drain().flat_map(|(_, v)| v).collect();
        let agent = self.agent.clone();
        tokio::spawn(async move {
            for sb in &orphans {
                tracing::info!(sandbox = sb.id, pod = format!("{}/{}", sb.namespace, sb.name), "removing the sandbox of a pod that no longer exists");
                let _ = agent.runtime.stop_pod_sandbox(&sb.id).await;
                if let Err(e) = agent.network.detach(&sb.id).await {
                    tracing::warn!(sandbox = sb.id, "freeing the address: {e:#}");
                }
                if let Err(e) = agent.runtime.remove_pod_sandbox(&sb.id).await {
                    tracing::warn!(sandbox = sb.id, "removing sandbox: {e:#}");
                }
                let _ = super::volumes::teardown(&super::volumes::pod_dir(&agent.config.data_dir, &sb.uid));
                let _ = std::fs::remove_dir_all(agent.config.data_dir.join("logs").join(format!("{}_{}_{}", sb.namespace, sb.name, sb.uid)));
            }
            // Addresses held for sandboxes the runtime no longer has.
            let live: HashSet<String> = agent.runtime.list_pod_sandboxes().await.map(|l| l.into_iter().map(|s| s.id).collect()).unwrap_or_default();
            if live.is_empty() && agent.runtime.list_pod_sandboxes().await.is_err() {
                return;
            }
            for (id, ip) in agent.network.allocations() {
                if !live.contains(&id) {
                    tracing::info!(sandbox = id, %ip, "freeing the address of a vanished sandbox");
                    let _ = agent.network.detach(&id).await;
                }
            }
        });
    }
}

pub(crate) async fn run(agent: Arc<Agent>) -> anyhow::Result<std::convert::Infallible> {
    let mut found: HashMap<String, Vec<PodSandboxStatus>> = HashMap::new();
    let mut attempt = 0;
    loop {
        match agent.runtime.list_pod_sandboxes().await {
            Ok(list) => {
                for sb in list {
                    found.entry(sb.uid.clone()).or_default().push(sb);
                }
                break;
            }
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!("listing sandboxes: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("listing the runtime's pod sandboxes")),
        }
    }
    tracing::info!(sandboxes = found.values().map(Vec::len).sum::<usize>(), "found existing sandboxes");
    let (done_tx, mut done_rx) = unbounded_channel::<(String, u64)>();
    let mut m = Manager { agent: agent.clone(), workers: HashMap::new(), serial: 0, found, done_tx, cleaned_orphans: false, statics: HashSet::new() };
    // Static pods start before the API is heard from (and adopt their sandboxes before orphans are cleaned).
    let (statics_tx, mut statics_rx) = unbounded_channel::<Vec<Pod>>();
    let first = agent.config.pod_manifest_path.as_deref().map(|d| static_pods::manifests(d, &agent.config.node_name)).unwrap_or_default();
    m.set_statics(first.clone());
    let _abort_statics = super::AbortOnDrop(tokio::spawn(static_pods::run(agent.clone(), first, statics_tx)));
    let api: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.config.node_name));
    let mut stream = watcher::watcher(api, cfg).boxed();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(Event::Init)) => listed.clear(),
                Some(Ok(Event::InitApply(pod))) => {
                    if let Some(uid) = &pod.metadata.uid {
                        listed.insert(uid.clone());
                    }
                    m.dispatch(pod);
                }
                Some(Ok(Event::InitDone)) => {
                    // Pods deleted while the watch was down get no Delete event.
                    let vanished: Vec<String> = m.workers.keys().filter(|u| !listed.contains(*u) && !m.statics.contains(*u)).cloned().collect();
                    for uid in vanished {
                        m.gone(&uid);
                    }
                    m.clean_orphans();
                }
                Some(Ok(Event::Apply(pod))) => m.dispatch(pod),
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(uid) = &pod.metadata.uid {
                        m.gone(uid);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("pod watch: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => anyhow::bail!("the pod watch ended"),
            },
            Some(pods) = statics_rx.recv() => m.set_statics(pods),
            Some((uid, serial)) = done_rx.recv() => {
                if m.workers.get(&uid).is_some_and(|(s, _)| *s == serial) {
                    m.workers.remove(&uid);
                }
            }
        }
    }
}
