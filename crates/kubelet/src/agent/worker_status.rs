//! The pod status the worker writes: container statuses from the
//! runtime's containers and the worker's memory (waiting reasons, probe
//! results, termination messages), then phase and conditions; patched to
//! `pods/status` only when it changed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::Api;
use runtime::cri::{ContainerState, ContainerStatus as CriStatus};
use serde_json::json;

use super::containers_spec::{ephemeral_containers, is_sidecar, qos_class};
use super::status::{conditions, phase, OWNED_CONDITIONS};
use super::volumes::termination_log_path;
use super::worker::Worker;

const MAX_MESSAGE: u64 = 4096;
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;

/// An image reference in full, as the runtime reports it: `nginx` is
/// `docker.io/library/nginx:latest`. Unparsable ones stay as written.
pub fn normalized_image(image: &str) -> String {
    runtime::images::Reference::parse(image).map(|r| r.to_string()).unwrap_or_else(|_| image.to_string())
}

fn time(t: Option<SystemTime>) -> Option<Time> {
    t.map(|t| Time(DateTime::<Utc>::from(t)))
}

fn waiting(reason: &str, message: Option<String>) -> ApiState {
    ApiState { waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }), ..Default::default() }
}

/// The last lines of a container log (CRI format lines are reduced to their content).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for l in lines.iter().skip(lines.len().saturating_sub(FALLBACK_LOG_LINES)) {
        // `2024-01-01T00:00:00.000000000Z stdout F content`
        let mut parts = l.splitn(4, ' ');
        let (ts, stream, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next());
        let cri = ts.is_some_and(|t| t.ends_with('Z')) && matches!(stream, Some("stdout") | Some("stderr")) && matches!(tag, Some("F") | Some("P"));
        if cri {
            out.push_str(content.unwrap_or_default());
            if tag == Some("F") {
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if out.len() > FALLBACK_LOG_BYTES {
        let mut cut = out.len() - FALLBACK_LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_string();
    }
    out
}

impl Worker {
    fn termination_message(&mut self, c: &Container, x: &CriStatus) -> Option<String> {
        if let Some(m) = self.term_messages.get(&x.id) {
            return (!m.is_empty()).then(|| m.clone());
        }
        let mut msg = String::new();
        if let Ok(f) = std::fs::File::open(termination_log_path(&self.pod_dir(), &c.name, x.attempt)) {
            let _ = f.take(MAX_MESSAGE).read_to_string(&mut msg);
        }
        if msg.is_empty() && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") && x.exit_code.unwrap_or(0) != 0 {
            msg = log_tail(&x.log_path);
        }
        if msg.is_empty() {
            msg = x.message.clone().unwrap_or_default();
        }
        self.term_messages.insert(x.id.clone(), msg.clone());
        (!msg.is_empty()).then_some(msg)
    }

    fn terminated(&mut self, c: &Container, x: &CriStatus) -> ApiState {
        let code = x.exit_code.unwrap_or(0);
        let reason = x.reason.clone().unwrap_or_else(|| if code == 0 { "Completed".into() } else { "Error".into() });
        ApiState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason),
                message: self.termination_message(c, x),
                started_at: time(x.started_at),
                finished_at: time(x.finished_at),
                container_id: Some(format!("skiff://{}", x.id)),
                signal: None,
            }),
            ..Default::default()
        }
    }

    fn container_status(&mut self, c: &Container, is_init: bool, init_done: bool) -> ContainerStatus {
        let (latest, prev) = self.latest(&c.name);
        // Before a new sandbox's first attempt (or after it), the previous sandbox's newest container comes before.
        let from_previous_sandbox = self.previous_sandbox_latest(&c.name).cloned();
        let (latest, prev) = (latest.cloned(), prev.cloned().or(from_previous_sandbox.clone()));
        let restart_count = latest.as_ref().or(from_previous_sandbox.as_ref()).map(|l| l.attempt as i32).unwrap_or(0);
        let memo_waiting = if self.terminal { None } else { self.memo.get(&c.name).and_then(|m| m.waiting.clone()) };
        let default_wait = if !is_init && !init_done { "PodInitializing" } else { "ContainerCreating" };
        let last_of = |w: &mut Worker, p: &Option<CriStatus>| p.as_ref().map(|p| w.terminated(c, p));
        let (state, last_state) = match &latest {
            None => (match &memo_waiting {
                Some((r, m)) => waiting(r, Some(m.clone())),
                None => waiting(default_wait, None),
            }, last_of(self, &prev)),
            Some(l) if l.state == ContainerState::Running => {
                (ApiState { running: Some(ContainerStateRunning { started_at: time(l.started_at) }), ..Default::default() }, last_of(self, &prev))
            }
            Some(l) if l.state == ContainerState::Exited => match &memo_waiting {
                Some((r, m)) => (waiting(r, Some(m.clone())), Some(self.terminated(c, l))),
                None => (self.terminated(c, l), last_of(self, &prev)),
            },
            Some(_) => (match &memo_waiting {
                Some((r, m)) => waiting(r, Some(m.clone())),
                None => waiting("ContainerCreating", None),
            }, last_of(self, &prev)),
        };
        let running = state.running.is_some();
        let memo = self.memo.get(&c.name);
        let probe_ok = |m: Option<&super::worker::Memo>| m.is_some_and(|m| m.probed_id.as_deref() == latest.as_ref().map(|l| l.id.as_str()));
        let started = running && (c.startup_probe.is_none() || (probe_ok(memo) && memo.is_some_and(|m| m.started)));
        let ready = if is_init && !is_sidecar(c) {
            state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
        } else if c.readiness_probe.is_some() {
            started && probe_ok(memo) && memo.is_some_and(|m| m.ready)
        } else {
            started
        };
        // As upstream with containerd: the image as the runtime knows it
        // (`docker.io/library/nginx:latest`) and its repo digest once a
        // container exists; the spec's words and "" before.
        let (image, image_id) = match &latest {
            Some(l) => (normalized_image(&l.image), if l.image_ref.is_empty() { l.image_id.clone() } else { l.image_ref.clone() }),
            None => (c.image.clone().unwrap_or_default(), String::new()),
        };
        ContainerStatus {
            name: c.name.clone(),
            image,
            image_id,
            container_id: latest.as_ref().map(|l| format!("skiff://{}", l.id)),
            restart_count,
            ready,
            started: Some(started),
            state: Some(state),
            last_state: Some(last_state.unwrap_or_default()),
            resources: running.then(|| memo.and_then(|m| m.applied.clone()).map(cpu_and_memory)).flatten(),
            allocated_resources: running.then(|| memo.and_then(|m| m.applied.clone()).and_then(|r| cpu_and_memory(r).requests)).flatten(),
            ..Default::default()
        }
    }

    pub fn build_status(&mut self, terminating: bool) -> PodStatus {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let init_statuses: Vec<ContainerStatus> = {
            let mut v = Vec::new();
            for c in &inits {
                v.push(self.container_status(c, true, true));
            }
            v
        };
        let init_done = inits.iter().all(|c| {
            let s = init_statuses.iter().find(|s| s.name == c.name);
            if is_sidecar(c) {
                s.is_some_and(|s| s.started == Some(true))
            } else {
                s.is_some_and(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code == 0))
            }
        }) || spec.containers.iter().any(|c| self.latest(&c.name).0.is_some());
        let mut main = Vec::new();
        for c in &spec.containers {
            main.push(self.container_status(c, false, init_done));
        }
        let mut ephemeral = Vec::new();
        for c in &ephemeral_containers(&spec) {
            ephemeral.push(self.container_status(c, false, true));
        }
        let api = self.pod.status.clone().unwrap_or_default();
        let mut ph = phase(&spec, &init_statuses, &main, terminating).to_string();
        if self.deadline_exceeded {
            ph = "Failed".into();
        }
        if matches!(api.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            ph = api.phase.clone().unwrap_or_default(); // a terminal phase never changes
        }
        // Owned conditions as last written (stable transition times), others from the API.
        let mut existing = api.conditions.clone().unwrap_or_default();
        if let Some(last) = self.last_written.as_ref().and_then(|s| s.conditions.clone()) {
            existing.retain(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()));
            existing.extend(last.into_iter().filter(|c| OWNED_CONDITIONS.contains(&c.type_.as_str())));
        }
        let sandbox_ready = self.sandbox.is_some() && !self.terminal_cleanup_done;
        let conds = conditions(&spec, &init_statuses, &main, &ph, sandbox_ready, &existing);
        let host_ip = self.agent.node_ip.to_string();
        let pod_ip = self.pod_ip().map(|ip| ip.to_string()).or_else(|| api.pod_ip.clone());
        PodStatus {
            phase: Some(ph),
            conditions: Some(conds),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            pod_ip,
            start_time: self.start_time.clone(),
            qos_class: Some(qos_class(&self.pod).to_string()),
            init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
            container_statuses: Some(main),
            ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
            reason: self.deadline_exceeded.then(|| "DeadlineExceeded".to_string()),
            message: self.deadline_exceeded.then(|| "Pod was active on the node longer than the specified deadline".to_string()),
            nominated_node_name: api.nominated_node_name.clone(),
            ..Default::default()
        }
    }

    /// Computes the status and patches it when it changed. A phase that
    /// turned terminal makes the worker stop (re)starting containers.
    pub async fn write_status(&mut self) {
        self.write_status_as(false).await;
    }

    pub async fn write_status_as(&mut self, terminating: bool) {
        let api_terminal = matches!(self.pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"));
        if api_terminal && !self.write_terminal {
            return; // found terminal: the recorded status stays as it is
        }
        let status = self.build_status(terminating);
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) && !self.terminal {
            self.terminal = true;
            self.write_terminal = true;
        }
        if self.last_written.as_ref() == Some(&status) || self.pod.status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace());
        if self.is_static {
            return self.write_mirror_status(&api, status).await;
        }
        let body = json!({"status": status});
        match api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(body)).await {
            Ok(p) if p.metadata.uid.as_deref() == Some(self.uid.as_str()) => {
                self.last_written = Some(status);
                self.pod.status = p.status;
            }
            Ok(_) => self.gone = true,
            Err(kube::Error::Api(e)) if e.code == 404 => self.gone = true,
            Err(e) => tracing::warn!(pod = self.pod_desc(), "writing pod status: {e}"),
        }
    }

    /// A static pod's status goes to its mirror pod, only while that mirror
    /// is of this pod's manifest (a JSON patch `test` of its hash). No mirror
    /// yet, or no API server, is not an error: the pod runs regardless.
    async fn write_mirror_status(&mut self, api: &Api<k8s_openapi::api::core::v1::Pod>, status: PodStatus) {
        let hash_path = format!("/metadata/annotations/{}", super::static_pods::MIRROR_ANNOTATION.replace('/', "~1"));
        let ops = json!([
            {"op": "test", "path": hash_path, "value": self.uid},
            {"op": "add", "path": "/status", "value": status},
        ]);
        let patch: json_patch::Patch = match serde_json::from_value(ops) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(pod = self.pod_desc(), "mirror status patch: {e}"),
        };
        match api.patch_status(&self.name(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(p) => {
                self.last_written = Some(status);
                self.pod.status = p.status;
            }
            Err(e) => tracing::debug!(pod = self.pod_desc(), "writing the mirror pod's status: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_strip_the_cri_format() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("0.log");
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("2024-01-01T00:00:00.000000000Z stderr F line {i}\n"));
        }
        text.push_str("2024-01-01T00:00:00.000000000Z stdout P part-\n2024-01-01T00:00:00.000000000Z stdout F end\n");
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p);
        assert!(tail.ends_with("line 99\npart-end\n"), "{tail}");
        assert!(!tail.contains("line 19\n"), "only the last 80 lines");
        assert!(tail.len() <= FALLBACK_LOG_BYTES);
        assert_eq!(log_tail(&tmp.path().join("missing")), "");
    }

    #[test]
    fn status_images_in_full_as_containerd_reports_them() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(normalized_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalized_image("busybox:stable"), "docker.io/library/busybox:stable");
        assert_eq!(normalized_image("docker.io/library/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(normalized_image("user/img"), "docker.io/user/img:latest");
        assert_eq!(normalized_image("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalized_image(&format!("nginx@{d}")), format!("docker.io/library/nginx@{d}"));
        assert_eq!(normalized_image("Not A Reference"), "Not A Reference");
    }
}

/// A container's status `resources`: the cpu and memory it runs with.
fn cpu_and_memory(r: k8s_openapi::api::core::v1::ResourceRequirements) -> k8s_openapi::api::core::v1::ResourceRequirements {
    let keep = |m: Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
        m.map(|m| m.into_iter().filter(|(k, _)| k == "cpu" || k == "memory").collect::<std::collections::BTreeMap<_, _>>()).filter(|m| !m.is_empty())
    };
    k8s_openapi::api::core::v1::ResourceRequirements { limits: keep(r.limits), requests: keep(r.requests), claims: None }
}
