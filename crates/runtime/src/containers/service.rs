//! [`RuntimeService`] for [`Runtime`]: each call runs its blocking work
//! (runc, mounts, polling) on tokio's blocking pool.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use super::Runtime;
use crate::cri::{
    ContainerConfig, ContainerStats, ContainerStatus, ExecProcess, ExecResult, LinuxResources, PodSandboxConfig,
    PodSandboxStatus,
    RuntimeService,
};

#[async_trait]
impl RuntimeService for Runtime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let config = config.clone();
        self.blocking(move |rt| rt.run_sandbox(&config)).await
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let id = sandbox_id.to_string();
        self.blocking(move |rt| rt.stop_sandbox(&id)).await
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let id = sandbox_id.to_string();
        self.blocking(move |rt| rt.remove_sandbox(&id)).await
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus> {
        let id = sandbox_id.to_string();
        self.blocking(move |rt| rt.sandbox_status(&id)).await
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        self.blocking(|rt| rt.list_sandboxes()).await
    }

    async fn set_pod_ip(&self, sandbox_id: &str, ip: &str) -> Result<()> {
        let (id, ip) = (sandbox_id.to_string(), ip.to_string());
        self.blocking(move |rt| rt.set_ip(&id, &ip)).await
    }

    async fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let (id, config) = (sandbox_id.to_string(), config.clone());
        self.blocking(move |rt| rt.create(&id, &config)).await
    }

    async fn update_container_resources(&self, container_id: &str, resources: &LinuxResources) -> Result<()> {
        let (id, resources) = (container_id.to_string(), resources.clone());
        self.blocking(move |rt| {
            let meta = rt.load_container(&id)?;
            super::cgroups::set_limits(&meta.cgroups_path, &resources)
        })
        .await
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let id = container_id.to_string();
        self.blocking(move |rt| rt.start(&id)).await
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let id = container_id.to_string();
        self.blocking(move |rt| rt.stop(&id, timeout)).await
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let id = container_id.to_string();
        self.blocking(move |rt| rt.remove(&id)).await
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let id = container_id.to_string();
        self.blocking(move |rt| rt.status(&id)).await
    }

    async fn list_containers(&self, sandbox_id: Option<&str>) -> Result<Vec<ContainerStatus>> {
        let id = sandbox_id.map(str::to_string);
        self.blocking(move |rt| rt.list(id.as_deref())).await
    }

    async fn list_container_stats(&self) -> Result<Vec<ContainerStats>> {
        self.blocking(|rt| rt.stats()).await
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        let (id, cmd) = (container_id.to_string(), cmd.to_vec());
        self.blocking(move |rt| rt.exec_to_end(&id, &cmd, timeout))
            .await
    }

    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecProcess> {
        let (id, cmd) = (container_id.to_string(), cmd.to_vec());
        self.blocking(move |rt| rt.exec_interactive(&id, &cmd, tty, stdin))
            .await
    }

    async fn attach(&self, container_id: &str, stdin: bool) -> Result<ExecProcess> {
        let id = container_id.to_string();
        self.blocking(move |rt| rt.attach_to(&id, stdin)).await
    }
}
