//! Pod sandboxes and containers run through Debian's `runc`.
//!
//! Why it is shaped this way:
//! - **All state lives on disk** (`<root>/sandboxes/<id>/meta.json`,
//!   `<root>/containers/<id>/meta.json`, runc's own state under
//!   `<root>/runc`), and nothing is cached in memory, so a new [`Runtime`]
//!   opened after the agent was `kill -9`ed sees every sandbox and container
//!   as they are: no duplicates, no orphans.
//! - **Each container runs under a shim** (the skiff binary re-executed, see
//!   [`shim_main`]): a session leader and child subreaper that owns the
//!   container's stdio, writes the CRI log and records the exit code, finish
//!   time and OOM kill in `<root>/containers/<id>/exit.json`. The container
//!   thus outlives the agent, and its exit is never lost.
//!   It also holds the container's stdin/pty for `attach`.
//! - **A sandbox is just namespaces and files** (no pause process): the
//!   network namespace is a named `ip netns` (so the pod network can attach a
//!   veth by path), IPC and UTS namespaces are bind-mounted ns files in the
//!   sandbox directory, and `hosts`/`resolv.conf`/`hostname`/`shm` are
//!   bind-mounted into each container.

mod attach;
mod cgroups;
mod console;
mod container;
mod exec;
pub mod logs;
mod meta;
mod mounts;
mod namespaces;
mod pid_holder;
mod podfiles;
mod runc;
mod sandbox;
mod service;
mod shim;
mod spec;
mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::images::ImageResolver;

pub use logs::{LogLine, LogRotation, LogStream};
pub use shim::shim_main;

/// How to start a container shim: `program args_prefix... <shim args>`.
/// In skiff this is the skiff binary with `["container-shim"]`; main.rs
/// hands the arguments after the prefix to [`shim_main`].
#[derive(Clone, Debug)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args_prefix: Vec<String>,
}

/// The embedded container runtime; implements [`crate::cri::RuntimeService`].
/// Cheap to clone: every clone shares the same root directory.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    images: Arc<dyn ImageResolver>,
    shim: ShimCommand,
    log_rotation: LogRotation,
    runc: runc::Runc,
}

impl Runtime {
    /// Opens (or creates) the runtime state under `root` (`<data-dir>/agent`).
    /// Sandboxes and containers left by an earlier process are adopted as they are.
    pub fn open(
        root: PathBuf,
        images: Arc<dyn ImageResolver>,
        shim: ShimCommand,
    ) -> Result<Runtime> {
        for dir in ["sandboxes", "containers", "runc"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating runtime directory {}", path.display()))?;
        }
        let runc = runc::Runc::new(root.join("runc"));
        runc.check()
            .context("runc is required to run containers (Debian package `runc`)")?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                root,
                images,
                shim,
                log_rotation: LogRotation::default(),
                runc,
            }),
        })
    }

    /// Replaces the container log rotation limits (defaults: 10 MiB, 5 files)
    /// for containers created from now on.
    pub fn with_log_rotation(self, rotation: LogRotation) -> Runtime {
        let inner = &self.inner;
        Runtime {
            inner: Arc::new(Inner {
                root: inner.root.clone(),
                images: inner.images.clone(),
                shim: inner.shim.clone(),
                log_rotation: rotation,
                runc: inner.runc.clone(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.root.join("sandboxes").join(id)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.inner.root.join("containers").join(id)
    }

    /// Runs blocking runtime work (process spawns, mounts, polling) off the async executor.
    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Runtime) -> Result<T> + Send + 'static,
    {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || work(&runtime))
            .await
            .context("runtime worker panicked")?
    }
}

/// A new random 64-hex-digit ID, like containerd's.
fn new_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Finds the full ID of a sandbox or container directory entry by exact ID or
/// unique prefix (as `crictl` accepts).
fn resolve_id(dir: &Path, id: &str) -> Result<String> {
    if id.is_empty() {
        anyhow::bail!("empty ID");
    }
    if dir.join(id).is_dir() {
        return Ok(id.to_string());
    }
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(id) {
                found.push(name);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(anyhow::Error::new(NotFound(id.to_string()))),
        _ => anyhow::bail!("ID prefix {id} is ambiguous"),
    }
}

/// Error for an unknown sandbox or container ID; callers can `downcast_ref` it.
#[derive(Debug)]
pub struct NotFound(pub String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} not found", self.0)
    }
}

impl std::error::Error for NotFound {}

/// A container whose configuration cannot work with its image (user or
/// group not found, runAsNonRoot with a root user): upstream reports it as
/// CreateContainerConfigError rather than CreateContainerError.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}
