//! The CRI-shaped boundary between the node agent and a container runtime.
//! It mirrors upstream's `RuntimeService` and `ImageService` gRPC services
//! (same verbs, same state machine) as Rust traits, so the embedded runtime
//! can later be joined by containerd over real CRI without touching the agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

/// What a pod sandbox is made of: the namespaces and files its containers share.
#[derive(Clone, Debug, Default)]
pub struct PodSandboxConfig {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Hostname inside the pod's UTS namespace (the pod name, or spec.hostname).
    pub hostname: String,
    /// Directory holding this pod's container logs (`<root>/pods/<ns>_<name>_<uid>`).
    pub log_directory: PathBuf,
    pub dns: DnsConfig,
    /// Extra `/etc/hosts` lines (hostAliases); the pod's own IP/name line is added by the runtime.
    pub host_aliases: Vec<(String, Vec<String>)>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub share_process_namespace: bool,
    /// cgroup path of the pod (relative to the cgroup root), e.g. `skiff/burstable/pod<uid>`.
    pub cgroup_parent: String,
    /// Most processes the pod's cgroup may hold (the kubelet's podPidsLimit); None: no limit.
    pub pids_limit: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// CRI's runtime handler (a RuntimeClass's `handler`); empty = the default.
    pub runtime_handler: String,
}

/// The runtime handlers the embedded runtime serves: it is runc underneath.
pub const RUNTIME_HANDLERS: &[&str] = &["", "runc"];

#[derive(Clone, Debug, Default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Clone, Debug)]
pub struct PodSandboxStatus {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub state: SandboxState,
    /// Network namespace file the pod network is attached to (None with hostNetwork).
    pub netns_path: Option<PathBuf>,
    pub created_at: SystemTime,
}

/// One container of a pod, resolved by the agent (env values, mounts and
/// security settings already computed from the Pod spec).
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    pub name: String,
    /// Restart count of this container, kept in the container's metadata (as CRI's `attempt`).
    pub attempt: u32,
    /// Image reference as written in the pod (`localhost:5000/busybox:latest`); must be pulled already.
    pub image: String,
    /// Entrypoint override (pod `command`); empty = image ENTRYPOINT.
    pub command: Vec<String>,
    /// Arguments override (pod `args`); empty = image CMD (when command is empty too).
    pub args: Vec<String>,
    /// Working directory override; empty = image WorkingDir.
    pub working_dir: String,
    /// Environment in order; image ENV is applied first and overridden by these.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Log file, absolute path (`<log_directory>/<container>/<attempt>.log`).
    pub log_path: PathBuf,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: LinuxResources,
    pub security: SecurityConfig,
    /// CRI's `NamespaceOption.target_id`: a container of the same sandbox
    /// whose PID namespace this one joins (kubectl debug --target).
    pub target_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    /// `private` (default), `rslave` (HostToContainer) or `rshared` (Bidirectional).
    pub propagation: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinuxResources {
    /// cpu.shares from requests.cpu (2 minimum, as upstream).
    pub cpu_shares: Option<u64>,
    /// CFS quota and period (µs) from limits.cpu.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes from limits.memory.
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<i64>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub no_new_privs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Clone, Debug)]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: Option<i32>,
    /// `OOMKilled`, `Error` or `Completed` once exited (as upstream's CRI reasons).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub image: String,
    /// `sha256:...` digest of the image config.
    pub image_id: String,
    /// `repo@sha256:<manifest digest>` (CRI's imageRef: the pod's `imageID`,
    /// e.g. `docker.io/library/nginx@sha256:...`); empty when unknown.
    pub image_ref: String,
    pub log_path: PathBuf,
    pub pid: Option<u32>,
}

/// A running container's resource usage, as CRI's ContainerStats.
#[derive(Clone, Debug)]
pub struct ContainerStats {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub started_at: SystemTime,
    /// When the counters were read.
    pub timestamp: SystemTime,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use minus reclaimable page cache, bytes.
    pub memory_working_set_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A process started inside a container for `kubectl exec` / attach.
/// With `tty`, `stdout` carries the terminal and `stderr` is None.
pub struct ExecProcess {
    pub stdin: Option<tokio::fs::File>,
    pub stdout: Option<tokio::fs::File>,
    pub stderr: Option<tokio::fs::File>,
    /// The pty master (tty only), for terminal resize.
    pub pty: Option<std::os::fd::OwnedFd>,
    /// Resolves to the exit code when the process ends.
    pub exit: tokio::sync::oneshot::Receiver<i32>,
}

impl ExecProcess {
    /// Sets the terminal size (tty only; a no-op otherwise).
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        let Some(pty) = &self.pty else { return Ok(()) };
        use std::os::fd::AsRawFd;
        let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer on an open fd.
        let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// Creates the pod's shared namespaces (network, IPC, UTS) and its hosts/resolv.conf/hostname files.
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> anyhow::Result<String>;
    /// Kills every container of the sandbox; the namespaces stay until removal.
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> anyhow::Result<()>;
    /// Removes containers, namespaces, mounts, cgroups and files of the sandbox. Idempotent.
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> anyhow::Result<()>;
    async fn pod_sandbox_status(&self, sandbox_id: &str) -> anyhow::Result<PodSandboxStatus>;
    async fn list_pod_sandboxes(&self) -> anyhow::Result<Vec<PodSandboxStatus>>;
    /// Writes the pod IP into the sandbox's /etc/hosts once the network is attached.
    async fn set_pod_ip(&self, sandbox_id: &str, ip: &str) -> anyhow::Result<()>;

    async fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> anyhow::Result<String>;
    async fn start_container(&self, container_id: &str) -> anyhow::Result<()>;
    /// SIGTERM, then SIGKILL after `timeout`; returns once the process is gone.
    async fn stop_container(&self, container_id: &str, timeout: Duration) -> anyhow::Result<()>;
    async fn remove_container(&self, container_id: &str) -> anyhow::Result<()>;
    async fn container_status(&self, container_id: &str) -> anyhow::Result<ContainerStatus>;
    /// All containers, or those of one sandbox.
    async fn list_containers(&self, sandbox_id: Option<&str>) -> anyhow::Result<Vec<ContainerStatus>>;
    /// Usage of every running container (CRI's ListContainerStats).
    async fn list_container_stats(&self) -> anyhow::Result<Vec<ContainerStats>>;
    /// Runs a command to completion (exec probes), killing it after `timeout`.
    async fn exec_sync(&self, container_id: &str, cmd: &[String], timeout: Duration) -> anyhow::Result<ExecResult>;
    /// Starts an interactive process (kubectl exec).
    async fn exec(&self, container_id: &str, cmd: &[String], tty: bool, stdin: bool) -> anyhow::Result<ExecProcess>;
    /// Attaches to the container's main process (kubectl attach); needs `stdin`/`tty` in its config.
    async fn attach(&self, container_id: &str, stdin: bool) -> anyhow::Result<ExecProcess>;
    /// Changes a running container's cpu and memory limits in place (pods/resize).
    async fn update_container_resources(&self, container_id: &str, _resources: &LinuxResources) -> anyhow::Result<()> {
        anyhow::bail!("container {container_id}: this runtime cannot change resources in place")
    }
}

#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// `sha256:` digest of the image config: the image ID.
    pub id: String,
    /// Names it is known by (`localhost:5000/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// `name@sha256:` manifest digests.
    pub repo_digests: Vec<String>,
    pub size: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// Pre-encoded `user:password` in base64 (dockerconfigjson `auth`).
    pub auth: Option<String>,
    pub identity_token: Option<String>,
}

#[async_trait]
pub trait ImageService: Send + Sync {
    /// Pulls `image` (normalised like docker: `busybox` = `docker.io/library/busybox:latest`)
    /// and returns its image ID. `auths` are tried in order for the registry.
    async fn pull_image(&self, image: &str, auths: &[RegistryAuth]) -> anyhow::Result<String>;
    /// The image if present locally.
    async fn image_status(&self, image: &str) -> anyhow::Result<Option<ImageInfo>>;
    async fn list_images(&self) -> anyhow::Result<Vec<ImageInfo>>;
    async fn remove_image(&self, image: &str) -> anyhow::Result<()>;
    /// Bytes used by the image store.
    async fn fs_usage(&self) -> anyhow::Result<u64>;
    /// Removes images not in `in_use` (names or IDs) and not pulled,
    /// imported or used within `min_age`, least recently used first, until
    /// `bytes_to_free` are freed; returns the bytes freed. The kubelet's
    /// image GC does this through List/RemoveImage; one call keeps the
    /// store's own last-used order and locking.
    async fn garbage_collect(&self, in_use: &std::collections::HashSet<String>, bytes_to_free: u64, min_age: std::time::Duration) -> anyhow::Result<u64>;
}
