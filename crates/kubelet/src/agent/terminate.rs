//! Stopping pods: graceful termination on deletion (preStop hooks, then
//! SIGTERM/SIGKILL within what is left of the grace period, regular
//! containers before sidecars), the final status, tearing down sandbox,
//! network and volumes, and the final delete with grace 0 that lets the
//! API server drop the Pod; and the quieter cleanup of pods that finished.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;
use runtime::cri::ContainerState;

use super::containers_spec::is_sidecar;
use super::events::pod_ref;
use super::worker::Worker;

/// Upstream's minimum grace for a kill.
const MIN_GRACE: Duration = Duration::from_secs(2);

impl Worker {
    /// Names of running containers in the order they are stopped: regular
    /// containers first, then sidecars in reverse start order.
    fn stop_order(&self) -> Vec<(String, String)> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        names.extend(spec.ephemeral_containers.iter().flatten().map(|c| c.name.clone()));
        names.extend(spec.init_containers.iter().flatten().rev().map(|c| c.name.clone()));
        names.into_iter().filter_map(|n| self.latest(&n).0.filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created)).map(|c| (n.clone(), c.id.clone()))).collect()
    }

    /// Stops every running container: regular ones together, then sidecars one by one.
    pub async fn stop_all(&mut self, grace: Duration) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let sidecar = |n: &str| spec.init_containers.iter().flatten().any(|c| c.name == n && is_sidecar(c));
        let order = self.stop_order();
        for m in self.memo.values_mut() {
            m.stop_probes();
        }
        let started = tokio::time::Instant::now();
        let (sidecars, regular): (Vec<_>, Vec<_>) = order.into_iter().partition(|(n, _)| sidecar(n));
        for (name, _) in regular.iter().chain(sidecars.iter()) {
            self.agent.events.normal(pod_ref(&self.pod, Some(name)), "Killing", format!("Stopping container {name}"));
        }
        // preStop hooks and stops of regular containers run concurrently.
        let this = &*self;
        futures::future::join_all(regular.iter().map(|(name, id)| this.stop_one(name, id, grace))).await;
        for (name, id) in &sidecars {
            let left = grace.saturating_sub(started.elapsed()).max(MIN_GRACE);
            self.stop_one(name, id, left).await;
        }
    }

    /// preStop (bounded by the grace period), then SIGTERM and SIGKILL after what is left of it.
    pub async fn stop_one(&self, name: &str, id: &str, grace: Duration) {
        let started = tokio::time::Instant::now();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let c = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name);
        if let Some((c, hook)) = c.and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.clone()?))) {
            if let Err(msg) = self.run_hook(&hook, c, id, grace).await {
                self.agent.events.warning(pod_ref(&self.pod, Some(name)), "FailedPreStopHook", format!("PreStopHook failed: {msg}"));
            }
        }
        let left = grace.saturating_sub(started.elapsed()).max(MIN_GRACE);
        if let Err(e) = self.agent.runtime.stop_container(id, left).await {
            tracing::warn!(pod = self.pod_desc(), container = name, "stopping container: {e:#}");
        }
    }

    /// The grace period the deletion granted, counted from now as upstream's
    /// kubelet does (deletionTimestamp has whole seconds and would cut it short).
    fn remaining_grace(&self) -> Duration {
        if self.gone && !self.is_static {
            return MIN_GRACE;
        }
        match self.pod.metadata.deletion_grace_period_seconds {
            Some(s) => Duration::from_secs(s.max(0) as u64).max(MIN_GRACE),
            None => self.grace_period().max(MIN_GRACE),
        }
    }

    /// Terminates the pod; true once it is gone from node and API.
    pub async fn terminate(&mut self) -> bool {
        self.adopt_found(true).await;
        self.refresh_containers(true).await;
        let grace = self.remaining_grace();
        self.stop_all(grace).await;
        self.refresh_containers(true).await;
        if !self.gone && !self.is_static && (self.last_written.is_some() || self.sandbox.is_some()) {
            self.write_terminal = true;
            self.write_status_as(true).await;
        }
        let sandboxes = self.sandbox.take().map(|sb| sb.id).into_iter().chain(self.previous_sandbox.take());
        for id in sandboxes.collect::<Vec<_>>() {
            self.remove_sandbox(&id).await;
        }
        self.containers.clear();
        self.previous_containers.clear();
        if let Err(e) = super::volumes::teardown(&self.pod_dir()) {
            tracing::warn!(pod = self.pod_desc(), "removing volumes: {e:#}");
            return false;
        }
        super::volume_sources::forget_tokens(&self.uid);
        let _ = std::fs::remove_dir_all(self.log_dir());
        // A static pod has no Pod of its own in the API; its mirror is the static pod loop's.
        if self.gone || self.is_static {
            return true;
        }
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace());
        let dp = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }), ..Default::default() };
        match api.delete(&self.name(), &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = self.pod_desc(), "deleting the terminated pod: {e}");
                false
            }
        }
    }

    /// A pod that finished (Succeeded/Failed) keeps its dead containers for
    /// logs, but its sidecars are stopped and its address is released.
    pub async fn finish_terminal(&mut self) {
        if self.terminal_cleanup_done {
            return;
        }
        self.adopt_found(true).await;
        self.refresh_containers(true).await;
        let grace = self.grace_period();
        self.stop_all(grace).await;
        if let Some(id) = self.sandbox.as_ref().map(|sb| sb.id.clone()) {
            self.stop_sandbox(&id).await;
        }
        self.refresh_containers(true).await;
        self.terminal_cleanup_done = true;
    }
}
