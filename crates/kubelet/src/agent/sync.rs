//! The worker's sync pass, as kubelet's SyncPod: active deadline, volumes,
//! sandbox and network, then init containers in order (sidecars kept
//! running), then the regular containers, restarting exited ones per
//! restartPolicy with CrashLoopBackOff; status is written at the end.

use std::time::{Duration, SystemTime};

use chrono::Utc;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use network::PortMapping;
use runtime::cri::{ContainerState, PodSandboxConfig, SandboxState};
use tokio::time::Instant;

use super::backoff::go_duration;
use super::containers_spec::{cgroup_parent, dns_config, ephemeral_containers, is_sidecar};
use super::events::pod_ref;
use super::volumes;
use super::worker::{Sandbox, Worker};

/// How often configMap, secret, downwardAPI and projected contents are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(10);
/// How often a running sandbox is checked for having died.
const SANDBOX_CHECK: Duration = Duration::from_secs(5);

/// An Instant for a past SystemTime (for back-off bookkeeping).
pub fn instant_of(t: Option<SystemTime>) -> Instant {
    let ago = t.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Crash back-off is kept per container and image, so a new image starts afresh (as upstream).
pub fn crash_key(c: &Container) -> String {
    format!("{}/{}", c.name, c.image.as_deref().unwrap_or_default())
}

impl Worker {
    pub async fn sync(&mut self) {
        if self.terminal {
            self.finish_terminal().await;
            self.write_status().await;
            return;
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(Utc::now()));
        }
        if self.check_deadline().await {
            return;
        }
        if let Err(e) = self.ensure_volumes().await {
            self.agent.events.warning(pod_ref(&self.pod, None), "FailedMount", e);
            self.write_status().await;
            return;
        }
        if let Err(e) = self.ensure_sandbox().await {
            tracing::warn!(pod = self.pod_desc(), "creating sandbox: {e:#}");
            self.agent.events.warning(pod_ref(&self.pod, None), "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {e:#}"));
            self.write_status().await;
            return;
        }
        self.refresh_containers(false).await;
        if self.sandbox_lost {
            self.write_status().await;
            return;
        }
        if self.last_written.is_none() {
            // Show ContainerCreating (sandbox, IP) before a possibly long image pull.
            self.write_status().await;
        }
        self.adopt_probes();
        self.dirty = false;
        self.sync_containers().await;
        if self.dirty {
            self.refresh_containers(true).await;
        }
        self.write_status().await;
    }

    /// Running containers this agent did not start (adopted after a
    /// restart) get their probes; readiness and startup start over.
    fn adopt_probes(&mut self) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        for c in spec.init_containers.iter().flatten().filter(|c| is_sidecar(c)).chain(spec.containers.iter()) {
            let Some(l) = self.latest(&c.name).0.filter(|l| l.state == ContainerState::Running).cloned() else { continue };
            if self.memo.get(&c.name).is_some_and(|m| m.probed_id.as_deref() == Some(l.id.as_str())) {
                continue;
            }
            self.watch_probes(c, &l.id);
        }
    }

    /// activeDeadlineSeconds: past it the pod is killed and Failed.
    async fn check_deadline(&mut self) -> bool {
        let Some(ads) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else { return false };
        let Some(start) = &self.start_time else { return false };
        if Utc::now() < start.0 + chrono::Duration::seconds(ads) {
            return false;
        }
        self.agent.events.warning(pod_ref(&self.pod, None), "DeadlineExceeded", "Pod was active on the node longer than the specified deadline".into());
        self.deadline_exceeded = true;
        self.terminal = true;
        self.write_terminal = true;
        self.refresh_containers(true).await;
        self.stop_all(self.grace_period()).await;
        self.refresh_containers(true).await;
        self.write_status().await;
        true
    }

    async fn ensure_volumes(&mut self) -> Result<(), String> {
        if self.volumes.is_some() && self.volumes_refreshed.is_some_and(|t| t.elapsed() < VOLUME_REFRESH) {
            return Ok(());
        }
        let ctx = self.agent.field_context(self.pod_ip().map(|ip| vec![ip.to_string()]).unwrap_or_default());
        match volumes::setup(&self.agent.client, &self.pod, &ctx, &self.pod_dir()).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.volumes_refreshed = Some(Instant::now());
                Ok(())
            }
            // Already running containers keep what they have; only a first setup blocks the pod.
            Err(e) if self.volumes.is_some() => {
                tracing::warn!(pod = self.pod_desc(), "refreshing volumes: {}", e.event_message());
                self.volumes_refreshed = Some(Instant::now());
                Ok(())
            }
            Err(e) => Err(e.event_message()),
        }
    }

    fn sandbox_config(&self) -> PodSandboxConfig {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let host_resolv = std::fs::read_to_string(&self.agent.config.resolv_conf).unwrap_or_default();
        let hostname = match (&spec.hostname, spec.host_network) {
            (_, Some(true)) => super::hostinfo::hostname(),
            (Some(h), _) if !h.is_empty() => h.clone(),
            _ => self.name(),
        };
        PodSandboxConfig {
            uid: self.uid.clone(),
            name: self.name(),
            namespace: self.namespace(),
            hostname,
            log_directory: self.log_dir(),
            dns: dns_config(&self.pod, &self.agent.config.cluster_dns, &self.agent.config.cluster_domain, &host_resolv),
            host_aliases: spec.host_aliases.iter().flatten().map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default())).collect(),
            host_network: spec.host_network == Some(true),
            host_pid: spec.host_pid == Some(true),
            host_ipc: spec.host_ipc == Some(true),
            share_process_namespace: spec.share_process_namespace == Some(true),
            cgroup_parent: cgroup_parent(&self.pod),
            pids_limit: self.agent.config.pod_max_pids,
            labels: self.pod.metadata.labels.clone().unwrap_or_default(),
            annotations: self.pod.metadata.annotations.clone().unwrap_or_default(),
            runtime_handler: String::new(),
        }
    }

    fn port_mappings(&self) -> Vec<PortMapping> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
        all.flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| PortMapping {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                container_port: p.container_port as u16,
                host_port: p.host_port.unwrap_or(0) as u16,
                host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
            })
            .collect()
    }

    /// Adopts a sandbox found at agent start, or checks the current one, or
    /// makes a new one (killing containers of a sandbox that died).
    async fn ensure_sandbox(&mut self) -> anyhow::Result<()> {
        let rt = self.agent.runtime.clone();
        self.adopt_found(false).await;
        if self.sandbox_lost {
            return Ok(());
        }
        if let Some(sb) = &self.sandbox {
            if sb.ip.is_some() && self.sandbox_checked.is_some_and(|t| t.elapsed() < SANDBOX_CHECK) {
                return Ok(());
            }
            self.sandbox_checked = Some(Instant::now());
            let ready = matches!(rt.pod_sandbox_status(&sb.id).await, Ok(s) if s.state == SandboxState::Ready);
            if ready && (sb.ip.is_some() || self.host_network()) {
                return Ok(());
            }
            if ready {
                // Adopted without a network attachment (the network lost it): attach again.
                let id = sb.id.clone();
                return self.attach(&id).await.inspect_err(|_| self.sandbox = None);
            }
            let id = sb.id.clone();
            if self.restart_policy() == "Never" && rt.list_containers(Some(&id)).await.is_ok_and(|l| !l.is_empty()) {
                // As upstream: a pod that never restarts gets no second
                // sandbox (its containers would run twice); they end, killed, and the pod fails.
                tracing::info!(pod = self.pod_desc(), sandbox = id, "sandbox is not ready and the pod never restarts; not recreating it");
                if let Err(e) = rt.stop_pod_sandbox(&id).await {
                    tracing::warn!(sandbox = id, "stopping sandbox: {e:#}");
                }
                self.sandbox_lost = true;
                return Ok(());
            }
            tracing::info!(pod = self.pod_desc(), sandbox = id, "sandbox is not ready; recreating it");
            self.agent.events.normal(pod_ref(&self.pod, None), "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.".into());
            self.retire_sandbox(&id).await;
            self.sandbox = None;
            for m in self.memo.values_mut() {
                m.stop_probes();
            }
        }
        let mut cfg = self.sandbox_config();
        cfg.runtime_handler = self.runtime_handler().await?;
        let id = rt.run_pod_sandbox(&cfg).await?;
        self.attach(&id).await
    }

    /// The handler of the pod's RuntimeClass, as the kubelet looks it up
    /// before creating a sandbox (the runtime refuses handlers it lacks).
    async fn runtime_handler(&self) -> anyhow::Result<String> {
        let Some(name) = self.pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()).filter(|n| !n.is_empty()) else {
            return Ok(String::new());
        };
        let api: kube::Api<k8s_openapi::api::node::v1::RuntimeClass> = kube::Api::all(self.agent.client.clone());
        match api.get_opt(&name).await {
            Ok(Some(rc)) => Ok(rc.handler),
            Ok(None) => anyhow::bail!("runtimeclass.node.k8s.io {name:?} not found"),
            Err(e) => anyhow::bail!("failed to lookup RuntimeClass {name}: {e}"),
        }
    }

    /// Takes over the newest sandbox found at agent start (if Ready, or in
    /// any state with `any_state`), keeps the newest other one as the
    /// previous sandbox (unless `any_state`: the pod is going) and removes the rest.
    pub async fn adopt_found(&mut self, any_state: bool) {
        if self.adopt.is_empty() {
            return;
        }
        let mut found = std::mem::take(&mut self.adopt);
        found.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        // A pod that never restarts keeps even a dead sandbox: its containers must not run again.
        let never = self.restart_policy() == "Never";
        for (i, sb) in found.into_iter().enumerate() {
            if i == 0 && self.sandbox.is_none() && (any_state || never || sb.state == SandboxState::Ready) {
                tracing::info!(pod = self.pod_desc(), sandbox = sb.id, "adopting sandbox");
                let ip = self.agent.network.ip_of(&sb.id);
                self.sandbox = Some(Sandbox { id: sb.id, ip });
            } else if !any_state && self.previous_sandbox.is_none() {
                self.retire_sandbox(&sb.id).await;
            } else {
                self.remove_sandbox(&sb.id).await;
            }
        }
    }

    /// Stops a sandbox that is being replaced and keeps it, with its dead
    /// containers and their logs, as the pod's previous sandbox: lastState
    /// and `logs --previous` still show them, as upstream keeps dead
    /// containers until garbage collection. The one kept before is removed.
    pub async fn retire_sandbox(&mut self, id: &str) {
        self.stop_sandbox(id).await;
        if let Some(old) = self.previous_sandbox.replace(id.to_string()) {
            self.remove_sandbox(&old).await;
        }
    }

    async fn attach(&mut self, id: &str) -> anyhow::Result<()> {
        let rt = self.agent.runtime.clone();
        let ip = if self.host_network() {
            self.agent.node_ip
        } else {
            let netns = rt.pod_sandbox_status(id).await?.netns_path.ok_or_else(|| anyhow::anyhow!("sandbox {id} has no network namespace"))?;
            match self.agent.network.attach(id, &netns, &self.port_mappings()).await {
                Ok(ip) => ip,
                Err(e) => {
                    self.remove_sandbox(id).await;
                    return Err(e.context("attaching the pod network"));
                }
            }
        };
        rt.set_pod_ip(id, &ip.to_string()).await?;
        self.sandbox = Some(Sandbox { id: id.to_string(), ip: (!self.host_network()).then_some(ip) });
        Ok(())
    }

    /// Stops a sandbox's containers and frees its address; the sandbox stays.
    pub async fn stop_sandbox(&self, id: &str) {
        if let Err(e) = self.agent.runtime.stop_pod_sandbox(id).await {
            tracing::warn!(pod = self.pod_desc(), sandbox = id, "stopping sandbox: {e:#}");
        }
        if let Err(e) = self.agent.network.detach(id).await {
            tracing::warn!(pod = self.pod_desc(), sandbox = id, "releasing the pod address: {e:#}");
        }
    }

    /// Stops and removes a sandbox and frees its address.
    pub async fn remove_sandbox(&self, id: &str) {
        self.stop_sandbox(id).await;
        if let Err(e) = self.agent.runtime.remove_pod_sandbox(id).await {
            tracing::warn!(sandbox = id, "removing sandbox: {e:#}");
        }
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    /// Init containers in order, then the regular ones.
    async fn sync_containers(&mut self) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = self.restart_policy();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let main_started = spec.containers.iter().any(|c| self.latest(&c.name).0.is_some());
        let mut init_done = true;
        for c in &inits {
            let (latest, _) = self.latest(&c.name);
            let state = latest.map(|l| (l.state, l.exit_code.unwrap_or(0)));
            if is_sidecar(c) {
                match state {
                    Some((ContainerState::Running, _)) => {
                        let started = self.memo.get(&c.name).is_some_and(|m| m.started);
                        if !started && !main_started {
                            init_done = false;
                            break;
                        }
                    }
                    _ => {
                        self.start_or_backoff(c).await;
                        if !main_started {
                            init_done = false;
                            break;
                        }
                    }
                }
                continue;
            }
            if main_started {
                continue; // regular init containers never run again once the pod is initialized
            }
            match state {
                Some((ContainerState::Exited, 0)) => continue,
                Some((ContainerState::Exited, _)) if policy == "Never" => {}
                Some((ContainerState::Running, _)) => {}
                _ => self.start_or_backoff(c).await,
            }
            init_done = false;
            break;
        }
        if !init_done {
            return;
        }
        for c in &spec.containers {
            self.restart_if_changed(c).await;
            self.resize_if_changed(c).await;
            let (latest, _) = self.latest(&c.name);
            let restart = match latest.map(|l| (l.state, l.exit_code.unwrap_or(0))) {
                None | Some((ContainerState::Created, _)) | Some((ContainerState::Unknown, _)) => true,
                Some((ContainerState::Running, _)) => false,
                Some((ContainerState::Exited, code)) => policy == "Always" || (policy == "OnFailure" && code != 0),
            };
            if restart {
                self.start_or_backoff(c).await;
            }
        }
        // Ephemeral containers run once and are never restarted.
        for c in ephemeral_containers(&spec) {
            if self.latest(&c.name).0.is_none() {
                self.start_or_backoff(&c).await;
            }
        }
    }

    /// A running container whose image was updated in the pod is replaced at once.
    async fn restart_if_changed(&mut self, c: &Container) {
        let Some(l) = self.latest(&c.name).0.filter(|l| l.state == ContainerState::Running).cloned() else { return };
        if l.image == c.image.clone().unwrap_or_default() {
            return;
        }
        self.agent.events.normal(pod_ref(&self.pod, Some(&c.name)), "Killing", format!("Container {} definition changed, will be restarted", c.name));
        let grace = self.grace_period();
        self.kill_container(&c.name, &l.id, grace).await;
        self.refresh_containers(true).await;
        self.start_container(c, l.attempt + 1).await;
        self.refresh_containers(true).await;
    }

    /// Starts the container's next attempt, unless its last exit is still in back-off.
    async fn start_or_backoff(&mut self, c: &Container) {
        let attempt = self.next_attempt(&c.name);
        let (latest, _) = self.latest(&c.name);
        if let Some(l) = latest.filter(|l| l.state != ContainerState::Running) {
            // A container that never started (create/start failed) is retried on the same back-off.
            let exited = l.state == ContainerState::Exited;
            let since = instant_of(if exited { l.finished_at } else { Some(l.created_at) });
            let key = crash_key(c);
            if self.crash_backoff.remaining(&key, since.into(), Instant::now().into()).is_some() {
                if exited {
                    let delay = self.crash_backoff.current(&key).unwrap_or_default();
                    let msg = format!("back-off {} restarting failed container={} pod={}", go_duration(delay), c.name, self.pod_desc());
                    self.memo.entry(c.name.clone()).or_default().waiting = Some(("CrashLoopBackOff".into(), msg));
                    self.agent.events.warning(pod_ref(&self.pod, Some(&c.name)), "BackOff", format!("Back-off restarting failed container {} in pod {}", c.name, self.pod_desc()));
                }
                return;
            }
            if exited {
                self.crash_backoff.next(&key, since.into());
            }
        }
        self.start_container(c, attempt).await;
    }
}
