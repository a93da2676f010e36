//! One task per pod UID: it owns everything the agent knows about the pod
//! (sandbox, per-container memory of waiting reasons and probe results,
//! back-offs, volumes) and wakes on pod updates, probe events, or every
//! second to follow container exits and write status.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use runtime::cri::{ContainerStatus as CriStatus, PodSandboxStatus};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::events::pod_ref;
use super::probes::{Kind, ProbeEvent};
use super::volumes::VolumeDir;
use super::Agent;

const RESYNC: Duration = Duration::from_secs(1);

pub(crate) enum PodMsg {
    Update(Box<Pod>),
    /// The Pod object is gone from the API.
    Gone,
    /// The mirror pod of this static pod, as the API has it.
    Mirror(Box<Pod>),
    Probe(ProbeEvent),
}

pub(crate) struct Sandbox {
    pub id: String,
    pub ip: Option<Ipv4Addr>,
}

/// What the agent remembers about one container name of the pod.
#[derive(Default)]
pub(crate) struct Memo {
    /// Why the container is not running when the agent could not (re)start it.
    pub waiting: Option<(String, String)>,
    /// The container id the probe flags below belong to.
    pub probed_id: Option<String>,
    pub ready: bool,
    pub started: bool,
    pub probe_task: Option<tokio::task::JoinHandle<()>>,
    /// The resources the running container was given (at start or by an
    /// in-place resize), reported as its status `resources`.
    pub applied: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl Memo {
    pub fn stop_probes(&mut self) {
        if let Some(t) = self.probe_task.take() {
            t.abort();
        }
    }
}

pub(crate) struct Worker {
    pub agent: Arc<Agent>,
    pub pod: Pod,
    pub uid: String,
    pub tx: UnboundedSender<PodMsg>,
    pub sandbox: Option<Sandbox>,
    /// Sandboxes of this pod found at agent start, adopted on the first sync.
    pub adopt: Vec<PodSandboxStatus>,
    pub memo: HashMap<String, Memo>,
    pub crash_backoff: Backoff,
    pub pull_backoff: Backoff,
    /// image -> (when the last pull failed, error)
    pub pull_failed: HashMap<String, (Instant, String)>,
    pub volumes: Option<HashMap<String, VolumeDir>>,
    pub volumes_refreshed: Option<Instant>,
    pub start_time: Option<Time>,
    /// The runtime's containers of the current sandbox, as of the last refresh.
    pub containers: Vec<CriStatus>,
    /// The sandbox this pod had before the current one (stopped, kept for its dead containers).
    pub previous_sandbox: Option<String>,
    /// The containers of `previous_sandbox`, as of the last refresh.
    pub previous_containers: Vec<CriStatus>,
    /// Termination messages read so far, by container id.
    pub term_messages: HashMap<String, String>,
    pub last_written: Option<PodStatus>,
    /// Succeeded or Failed: nothing is (re)started any more.
    pub terminal: bool,
    pub terminal_cleanup_done: bool,
    /// Whether this worker saw the pod become terminal (and so should write that status).
    pub write_terminal: bool,
    pub deadline_exceeded: bool,
    /// The Pod object is gone from the API, or for a static pod its manifest is.
    pub gone: bool,
    /// A static pod from a manifest: its status goes to its mirror pod.
    pub is_static: bool,
    /// The UID of the mirror pod last seen; a new mirror gets the status written afresh.
    pub mirror_uid: Option<String>,
    /// This worker created or stopped a container since the last container listing.
    pub dirty: bool,
    pub sandbox_checked: Option<Instant>,
    /// The sandbox died and, the pod never restarting, is not replaced.
    pub sandbox_lost: bool,
}

impl Worker {
    pub fn new(agent: Arc<Agent>, pod: Pod, tx: UnboundedSender<PodMsg>, adopt: Vec<PodSandboxStatus>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let st = pod.status.clone().unwrap_or_default();
        let terminal = matches!(st.phase.as_deref(), Some("Succeeded") | Some("Failed"));
        Worker {
            agent,
            uid,
            tx,
            sandbox: None,
            adopt,
            memo: HashMap::new(),
            crash_backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            pull_failed: HashMap::new(),
            volumes: None,
            volumes_refreshed: None,
            start_time: st.start_time.clone(),
            containers: Vec::new(),
            previous_sandbox: None,
            previous_containers: Vec::new(),
            term_messages: HashMap::new(),
            last_written: None,
            terminal,
            terminal_cleanup_done: false,
            write_terminal: false,
            deadline_exceeded: st.reason.as_deref() == Some("DeadlineExceeded"),
            gone: false,
            is_static: super::static_pods::is_static(&pod),
            mirror_uid: None,
            dirty: false,
            sandbox_checked: None,
            sandbox_lost: false,
            pod,
        }
    }

    pub fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())
    }

    pub fn pod_dir(&self) -> std::path::PathBuf {
        super::volumes::pod_dir(&self.agent.config.data_dir, &self.uid)
    }

    pub fn log_dir(&self) -> std::path::PathBuf {
        self.agent.config.data_dir.join("logs").join(format!("{}_{}_{}", self.namespace(), self.name(), self.uid))
    }

    pub fn host_network(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    }

    pub fn pod_ip(&self) -> Option<Ipv4Addr> {
        if self.host_network() {
            return Some(self.agent.node_ip);
        }
        self.sandbox.as_ref().and_then(|s| s.ip)
    }

    /// "<name>_<namespace>(<uid>)", as upstream's messages name a pod.
    pub fn pod_desc(&self) -> String {
        format!("{}_{}({})", self.name(), self.namespace(), self.uid)
    }

    /// The newest container of that name (highest attempt), and the one before.
    pub fn latest(&self, name: &str) -> (Option<&CriStatus>, Option<&CriStatus>) {
        let mut all: Vec<&CriStatus> = self.containers.iter().filter(|c| c.name == name).collect();
        all.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        (all.first().copied(), all.get(1).copied())
    }

    /// The newest container of that name in the previous sandbox.
    pub fn previous_sandbox_latest(&self, name: &str) -> Option<&CriStatus> {
        self.previous_containers.iter().filter(|c| c.name == name).max_by_key(|c| (c.attempt, c.created_at))
    }

    /// The next attempt of a container: one after the newest in this
    /// sandbox, or in a new sandbox one after the newest log the pod's
    /// earlier sandboxes left (`<attempt>.log`), so restartCount keeps
    /// counting and no log is appended to, as upstream's kubelet does.
    pub fn next_attempt(&self, name: &str) -> u32 {
        if let (Some(l), _) = self.latest(name) {
            return l.attempt + 1;
        }
        let logs = std::fs::read_dir(self.log_dir().join(name)).into_iter().flatten().flatten();
        logs.filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse::<u32>().ok()).max().map_or(0, |n| n + 1)
    }

    /// The runtime's containers of this pod's sandbox, from the agent-wide
    /// snapshot (`fresh` forces a new one, after this worker changed something).
    pub async fn refresh_containers(&mut self, fresh: bool) {
        let Some(sb) = &self.sandbox else {
            self.containers.clear();
            return;
        };
        match self.agent.containers(fresh || self.dirty).await {
            Ok(all) => {
                self.containers = all.iter().filter(|c| c.sandbox_id == sb.id).cloned().collect();
                let previous = self.previous_sandbox.as_deref();
                self.previous_containers = all.iter().filter(|c| Some(c.sandbox_id.as_str()) == previous).cloned().collect();
            }
            Err(e) => tracing::warn!(pod = self.pod_desc(), "listing containers: {e:#}"),
        }
        self.dirty = false;
    }

    pub async fn run(mut self, mut rx: UnboundedReceiver<PodMsg>) {
        // The first sync runs at once (a new pod must not wait a resync
        // period); later ones on a message or every RESYNC.
        let mut wait = Duration::ZERO;
        loop {
            let waited = tokio::time::timeout(wait, rx.recv()).await;
            wait = RESYNC;
            match waited {
                Ok(Some(msg)) => self.handle(msg).await,
                // The agent is shutting down: leave the pod running for the next agent to adopt.
                Ok(None) => {
                    for m in self.memo.values_mut() {
                        m.stop_probes();
                    }
                    return;
                }
                Err(_) => {}
            }
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg).await;
            }
            if self.gone || self.pod.metadata.deletion_timestamp.is_some() {
                if self.terminate().await {
                    tracing::info!(pod = self.pod_desc(), "pod removed from the node");
                    return;
                }
                continue;
            }
            self.sync().await;
        }
    }

    async fn handle(&mut self, msg: PodMsg) {
        match msg {
            PodMsg::Update(p) => {
                if p.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    let labels_changed = p.metadata.labels != self.pod.metadata.labels || p.metadata.annotations != self.pod.metadata.annotations;
                    self.pod = *p;
                    if labels_changed {
                        self.volumes_refreshed = None; // downward API files follow labels and annotations
                    }
                }
            }
            PodMsg::Gone => self.gone = true,
            PodMsg::Mirror(m) => {
                if m.metadata.uid != self.mirror_uid {
                    self.mirror_uid = m.metadata.uid;
                    self.last_written = None;
                }
                self.pod.status = m.status;
            }
            PodMsg::Probe(ev) => self.on_probe(ev).await,
        }
    }

    fn memo_for_id(&mut self, id: &str) -> Option<(String, &mut Memo)> {
        self.memo.iter_mut().find(|(_, m)| m.probed_id.as_deref() == Some(id)).map(|(n, m)| (n.clone(), m))
    }

    async fn on_probe(&mut self, ev: ProbeEvent) {
        match ev {
            ProbeEvent::Started { container_id } => {
                if let Some((_, m)) = self.memo_for_id(&container_id) {
                    m.started = true;
                }
            }
            ProbeEvent::Ready { container_id, ready } => {
                if let Some((_, m)) = self.memo_for_id(&container_id) {
                    m.ready = ready;
                }
            }
            ProbeEvent::Unhealthy { container_id, kind, message } => {
                if let Some((name, _)) = self.memo_for_id(&container_id) {
                    self.agent.events.warning(pod_ref(&self.pod, Some(&name)), "Unhealthy", format!("{} probe failed: {}", kind.name(), message.trim_end()));
                }
            }
            ProbeEvent::Failed { container_id, kind, .. } => {
                let Some((name, m)) = self.memo_for_id(&container_id) else { return };
                m.ready = false;
                m.started = false;
                m.stop_probes();
                let what = if kind == Kind::Startup { "startup" } else { "liveness" };
                self.agent.events.normal(pod_ref(&self.pod, Some(&name)), "Killing", format!("Container {name} failed {what} probe, will be restarted"));
                // A probe-level terminationGracePeriodSeconds overrides the pod's.
                let spec = self.pod.spec.clone().unwrap_or_default();
                let c = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name);
                let probe = c.and_then(|c| if kind == Kind::Startup { c.startup_probe.clone() } else { c.liveness_probe.clone() });
                let grace = probe.and_then(|p| p.termination_grace_period_seconds).map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or_else(|| self.grace_period());
                self.kill_container(&name, &container_id, grace).await;
            }
        }
    }

    /// Starts the probes of a running container; readiness and startup start over.
    pub fn watch_probes(&mut self, c: &k8s_openapi::api::core::v1::Container, id: &str) {
        let tx = self.tx.clone();
        let ip = self.pod_ip().map(std::net::IpAddr::V4);
        let task = super::probes::spawn(c.clone(), id.to_string(), ip, self.agent.runtime.clone(), move |ev| {
            let _ = tx.send(PodMsg::Probe(ev));
        });
        let m = self.memo.entry(c.name.clone()).or_default();
        m.stop_probes();
        m.probed_id = Some(id.to_string());
        m.ready = false;
        m.started = c.startup_probe.is_none();
        m.probe_task = task;
    }

    /// spec.terminationGracePeriodSeconds (30 by default).
    pub fn grace_period(&self) -> Duration {
        let s = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        Duration::from_secs(s.max(0) as u64)
    }
}
