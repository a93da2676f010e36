//! What the runtime remembers about sandboxes and containers, as JSON files
//! written atomically (temp file + rename) so a crash never leaves half a record.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub log_directory: PathBuf,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub share_process_namespace: bool,
    /// Host PID of the shared PID namespace's holder (`ns/pid`), with shareProcessNamespace.
    #[serde(default)]
    pub pid_holder: Option<u32>,
    /// Pod cgroup, relative to the cgroup root, without leading slash.
    pub cgroup_parent: String,
    /// Named network namespace file (`/run/netns/skiff-...`), None with hostNetwork.
    pub netns_path: Option<PathBuf>,
    pub host_aliases: Vec<(String, Vec<String>)>,
    pub pod_ip: Option<String>,
    /// Set by stop_pod_sandbox.
    pub stopped: bool,
    /// Unix time in nanoseconds.
    pub created_at: u128,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    /// `repo@sha256:<manifest>` the image was known by at creation (CRI's imageRef).
    #[serde(default)]
    pub image_ref: String,
    pub log_path: PathBuf,
    /// `/<cgroup_parent>/<id>`, as given to runc.
    pub cgroups_path: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub created_at: u128,
    pub started_at: Option<u128>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Written by the shim once the container's init process is reaped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    pub finished_at: u128,
    pub oom_killed: bool,
}

pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

pub fn to_system_time(nanos: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos as u64)
}

/// Writes `value` as JSON to `path` via a temp file in the same directory and a rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Reads a JSON file that may legitimately be absent.
pub fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
