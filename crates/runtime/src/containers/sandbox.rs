//! Pod sandboxes: a named network namespace (`/run/netns/skiff-<id12>`),
//! IPC and UTS namespaces kept alive by bind mounts of their ns files in
//! `<sandbox>/ns` (a private mount, so the nsfs mounts do not propagate),
//! a pod `/dev/shm` tmpfs, the pod cgroup and the hosts/resolv.conf/hostname
//! files, and with shareProcessNamespace a PID namespace holder. Every step
//! is undone by [`Runtime::remove_sandbox`], which also copes with a sandbox
//! whose creation was interrupted.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::meta::{self, SandboxMeta};
use super::namespaces::PodNamespaces;
use super::{cgroups, mounts, pid_holder, podfiles, resolve_id, Runtime};
use crate::cri::{PodSandboxConfig, PodSandboxStatus, SandboxState};

const SHM_SIZE: &str = "size=65536k,mode=1777";

impl Runtime {
    pub(super) fn load_sandbox(&self, id: &str) -> Result<SandboxMeta> {
        let id = resolve_id(&self.inner.root.join("sandboxes"), id)?;
        meta::read_json(&self.sandbox_dir(&id).join("meta.json"))
    }

    pub(super) fn run_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        if !crate::cri::RUNTIME_HANDLERS.contains(&config.runtime_handler.as_str()) {
            // containerd's words for a handler it has no runtime for.
            anyhow::bail!("failed to get sandbox runtime: no runtime for {:?} is configured", config.runtime_handler);
        }
        let id = super::new_id()?;
        let short = &id[..12];
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cgroup_parent = match config.cgroup_parent.trim_matches('/') {
            "" => format!("skiff/pod-{short}"),
            p => p.to_string(),
        };
        let mut meta = SandboxMeta {
            id: id.clone(),
            uid: config.uid.clone(),
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            hostname: if config.hostname.is_empty() {
                config.name.clone()
            } else {
                config.hostname.clone()
            },
            log_directory: config.log_directory.clone(),
            host_network: config.host_network,
            host_pid: config.host_pid,
            host_ipc: config.host_ipc,
            share_process_namespace: config.share_process_namespace,
            pid_holder: None,
            cgroup_parent,
            netns_path: (!config.host_network)
                .then(|| PathBuf::from(format!("/run/netns/skiff-{short}"))),
            host_aliases: config.host_aliases.clone(),
            pod_ip: None,
            stopped: false,
            created_at: meta::now_nanos(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        };
        // Recorded first, so an interrupted creation is still found and removed.
        meta::write_json(&dir.join("meta.json"), &meta)?;
        if let Err(e) = self.build_sandbox(&mut meta, config) {
            if let Err(cleanup) = self.remove_sandbox(&id) {
                warn!(sandbox = %id, "cleaning up a failed sandbox: {cleanup:#}");
            }
            return Err(e.context(format!(
                "creating sandbox for pod {}/{}",
                config.namespace, config.name
            )));
        }
        meta::write_json(&dir.join("meta.json"), &meta)?;
        info!(sandbox = %id, pod = %format!("{}/{}", config.namespace, config.name), "sandbox ready");
        Ok(id)
    }

    fn build_sandbox(&self, meta: &mut SandboxMeta, config: &PodSandboxConfig) -> Result<()> {
        let dir = self.sandbox_dir(&meta.id);
        let ns = dir.join("ns");
        if !meta.host_network || !meta.host_ipc || shares_pid(meta) {
            // The namespace files are bind mounts: a private mount point keeps them from propagating.
            std::fs::create_dir_all(&ns)?;
            mounts::bind_mount(&ns, &ns)?;
            mounts::make_private(&ns)?;
        }
        pod_namespaces(meta, &dir).create()?;
        if shares_pid(meta) {
            meta.pid_holder = Some(pid_holder::start(&self.inner.shim, &pid_holder::ns_file(&dir))?);
        }
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm)?;
        if !meta.host_ipc {
            mounts::mount_tmpfs(&shm, SHM_SIZE)?;
        }
        podfiles::rewrite_in_place(&dir.join("hostname"), &format!("{}\n", meta.hostname))?;
        podfiles::rewrite_in_place(
            &dir.join("resolv.conf"),
            &podfiles::resolv_conf(&config.dns),
        )?;
        let hosts = if meta.host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            podfiles::hosts(&meta.hostname, None, &meta.host_aliases)
        };
        podfiles::rewrite_in_place(&dir.join("hosts"), &hosts)?;
        cgroups::create(&meta.cgroup_parent)?;
        if let Some(max) = config.pids_limit {
            cgroups::set_pids_max(&meta.cgroup_parent, max)?;
        }
        Ok(())
    }

    /// Kills every container of the sandbox and marks it NotReady.
    pub(super) fn stop_sandbox(&self, id: &str) -> Result<()> {
        let mut meta = self.load_sandbox(id)?;
        for container in self.container_ids_of(&meta.id) {
            self.stop(&container, std::time::Duration::ZERO)?;
        }
        if let Some(pid) = meta.pid_holder {
            pid_holder::stop(pid, &pid_holder::ns_file(&self.sandbox_dir(&meta.id)));
        }
        meta.stopped = true;
        meta::write_json(&self.sandbox_dir(&meta.id).join("meta.json"), &meta)
    }

    /// Removes the sandbox's containers, namespaces, mounts, cgroup and files.
    /// An unknown sandbox is already removed.
    pub(super) fn remove_sandbox(&self, id: &str) -> Result<()> {
        let id = match resolve_id(&self.inner.root.join("sandboxes"), id) {
            Ok(id) => id,
            Err(e) if e.downcast_ref::<super::NotFound>().is_some() => return Ok(()),
            Err(e) => return Err(e),
        };
        for container in self.container_ids_of(&id) {
            self.remove(&container)?;
        }
        let dir = self.sandbox_dir(&id);
        let meta: Option<SandboxMeta> = meta::read_json_opt(&dir.join("meta.json")).unwrap_or(None);
        if let Some(pid) = meta.as_ref().and_then(|m| m.pid_holder) {
            pid_holder::stop(pid, &pid_holder::ns_file(&dir));
        }
        mounts::unmount_under(&dir)?;
        if let Some(meta) = &meta {
            if let Some(netns) = &meta.netns_path {
                remove_netns(netns)?;
            }
            cgroups::remove(&meta.cgroup_parent)?;
        }
        std::fs::remove_dir_all(&dir)
            .or_else(ignore_not_found)
            .with_context(|| format!("removing {}", dir.display()))?;
        info!(sandbox = %id, "sandbox removed");
        Ok(())
    }

    pub(super) fn sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        Ok(status_of(&self.load_sandbox(id)?, &self.sandbox_dir(id)))
    }

    pub(super) fn list_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        let mut out = Vec::new();
        for id in list_dir(&self.inner.root.join("sandboxes")) {
            match self.load_sandbox(&id) {
                Ok(meta) => out.push(status_of(&meta, &self.sandbox_dir(&id))),
                // Being created or removed right now, or damaged: not listed.
                Err(e) => warn!(sandbox = %id, "skipping sandbox: {e:#}"),
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    pub(super) fn set_ip(&self, id: &str, ip: &str) -> Result<()> {
        let mut meta = self.load_sandbox(id)?;
        meta.pod_ip = Some(ip.to_string());
        let dir = self.sandbox_dir(&meta.id);
        if !meta.host_network {
            podfiles::rewrite_in_place(
                &dir.join("hosts"),
                &podfiles::hosts(&meta.hostname, Some(ip), &meta.host_aliases),
            )?;
        }
        meta::write_json(&dir.join("meta.json"), &meta)
    }
}

fn status_of(meta: &SandboxMeta, dir: &Path) -> PodSandboxStatus {
    PodSandboxStatus {
        id: meta.id.clone(),
        uid: meta.uid.clone(),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        state: if meta.stopped || !namespaces_held(meta, dir) {
            SandboxState::NotReady
        } else {
            SandboxState::Ready
        },
        netns_path: meta.netns_path.clone(),
        created_at: meta::to_system_time(meta.created_at),
    }
}

/// Are the sandbox's namespaces still held by their bind mounts? After a
/// reboot the files are there (or not) but hold nothing: the sandbox is
/// then NotReady, so the agent makes a new one instead of starting
/// containers into namespaces that no longer exist.
fn namespaces_held(meta: &SandboxMeta, dir: &Path) -> bool {
    let pid_held = !shares_pid(meta) || meta.pid_holder.is_some_and(|pid| pid_holder::alive(pid, &pid_holder::ns_file(dir)));
    pid_held && pod_namespaces(meta, dir).files().all(is_nsfs)
}

/// The sandbox's own network, IPC and UTS namespaces and where they are bound.
fn pod_namespaces(meta: &SandboxMeta, dir: &Path) -> PodNamespaces {
    let ns = dir.join("ns");
    PodNamespaces {
        net: meta.netns_path.clone(),
        ipc: (!meta.host_ipc).then(|| ns.join("ipc")),
        uts: (!meta.host_network).then(|| (ns.join("uts"), meta.hostname.clone())),
    }
}

/// Do the pod's containers share one PID namespace of their own?
pub(super) fn shares_pid(meta: &SandboxMeta) -> bool {
    meta.share_process_namespace && !meta.host_pid
}

fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statfs buffer we own.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

/// Removes a named network namespace: unmount the nsfs bind mount and remove the file.
fn remove_netns(path: &Path) -> Result<()> {
    mounts::unmount_all(path)?;
    std::fs::remove_file(path)
        .or_else(ignore_not_found)
        .with_context(|| format!("removing {}", path.display()))
}

pub(super) fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

pub(super) fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
