//! Container lifecycle: overlayfs rootfs + config.json + shim on create,
//! `runc start`, TERM-then-KILL stop, status from runc state and the shim's
//! exit record, and a removal that tolerates any half-created state.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::meta::{self, ContainerMeta, ExitRecord, SandboxMeta};
use super::shim::ShimArgs;
use super::spec::{self, SpecInput};
use super::{attach, cgroups, mounts, resolve_id, sandbox, user, NotFound, Runtime};
use crate::cri::{ContainerConfig, ContainerState, ContainerStatus};
use crate::images::ResolvedImage;

impl Runtime {
    pub(super) fn load_container(&self, id: &str) -> Result<ContainerMeta> {
        let id = resolve_id(&self.inner.root.join("containers"), id)?;
        meta::read_json(&self.container_dir(&id).join("meta.json"))
    }

    pub(super) fn container_ids_of(&self, sandbox_id: &str) -> Vec<String> {
        let mut found: Vec<(u128, String)> = sandbox::list_dir(&self.inner.root.join("containers"))
            .into_iter()
            .filter_map(|id| {
                meta::read_json::<ContainerMeta>(&self.container_dir(&id).join("meta.json")).ok()
            })
            .filter(|m| m.sandbox_id == sandbox_id)
            .map(|m| (m.created_at, m.id))
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    pub(super) fn create(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let sandbox = self.load_sandbox(sandbox_id)?;
        if sandbox.stopped {
            bail!("sandbox {} is stopped; create a new one", sandbox.id);
        }
        let image = self
            .inner
            .images
            .resolve(&config.image)
            .with_context(|| format!("image {}", config.image))?;
        let id = super::new_id()?;
        let dir = self.container_dir(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let meta = ContainerMeta {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            image_id: image.id.clone(),
            image_ref: image.repo_digest.clone(),
            log_path: config.log_path.clone(),
            cgroups_path: format!("/{}/{}", sandbox.cgroup_parent, id),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            created_at: meta::now_nanos(),
            started_at: None,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        };
        meta::write_json(&dir.join("meta.json"), &meta)?;
        if let Err(e) = self.build_container(&meta, &sandbox, config, &image) {
            if let Err(cleanup) = self.remove(&id) {
                warn!(container = %id, "cleaning up a failed container: {cleanup:#}");
            }
            return Err(e.context(format!("creating container {}", config.name)));
        }
        info!(container = %id, name = %config.name, sandbox = %sandbox.id, "container created");
        Ok(id)
    }

    /// The PID namespace of a running container of the same sandbox.
    fn pid_ns_of(&self, target: &str, sandbox_id: &str) -> Result<PathBuf> {
        let meta = self.load_container(target).with_context(|| format!("target container {target}"))?;
        if meta.sandbox_id != sandbox_id {
            bail!("target container {target} is not in sandbox {sandbox_id}");
        }
        let pid = init_pid(&self.container_dir(&meta.id)).ok_or_else(|| anyhow::anyhow!("target container {target} is not running"))?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/pid")))
    }

    fn build_container(
        &self,
        meta: &ContainerMeta,
        sandbox: &SandboxMeta,
        config: &ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<()> {
        let dir = self.container_dir(&meta.id);
        let rootfs = dir.join("rootfs");
        for sub in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // overlayfs wants the top layer first; the image lists the bottom first.
        let lower: Vec<PathBuf> = image.layers.iter().rev().cloned().collect();
        mounts::mount_overlay(&lower, &dir.join("upper"), &dir.join("work"), &rootfs)?;
        let user = user::resolve(&rootfs, &image.user, &config.security).map_err(|e| super::ConfigError(format!("{e:#}")))?;
        let pid_ns = match &config.target_id {
            // A shared pod PID namespace already holds the target's processes.
            Some(target) if !sandbox::shares_pid(sandbox) && !sandbox.host_pid => Some(self.pid_ns_of(target, &sandbox.id)?),
            _ => sandbox::shares_pid(sandbox).then(|| super::pid_holder::ns_file(&self.sandbox_dir(&sandbox.id))),
        };
        let spec = spec::build(&SpecInput {
            config,
            image,
            sandbox,
            sandbox_dir: &self.sandbox_dir(&sandbox.id),
            user: &user,
            cgroups_path: &meta.cgroups_path,
            pid_ns,
        })?;
        meta::write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(&spec)?)?;
        self.spawn_shim(meta, &dir)
    }

    /// Starts the shim and waits for its verdict on `runc create`.
    fn spawn_shim(&self, meta: &ContainerMeta, dir: &Path) -> Result<()> {
        let args = ShimArgs {
            runc_root: self.inner.root.join("runc"),
            id: meta.id.clone(),
            bundle: dir.to_path_buf(),
            log_path: meta.log_path.clone(),
            cgroups_path: meta.cgroups_path.clone(),
            rotation: self.inner.log_rotation,
            tty: meta.tty,
            stdin: meta.stdin,
            stdin_once: meta.stdin_once,
        };
        let shim_log = std::fs::File::create(dir.join("shim.log"))?;
        let shim = &self.inner.shim;
        let mut child = Command::new(&shim.program)
            .args(&shim.args_prefix)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .with_context(|| format!("starting the container shim {}", shim.program.display()))?;
        let mut verdict = String::new();
        child.stdout.take().unwrap().read_to_string(&mut verdict)?;
        child.wait()?;
        match verdict.lines().next() {
            Some("ok") => Ok(()),
            Some(line) => bail!("{}", line.strip_prefix("error: ").unwrap_or(line)),
            None => {
                let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
                bail!("the container shim exited without a word: {}", log.trim())
            }
        }
    }

    pub(super) fn start(&self, id: &str) -> Result<()> {
        let mut meta = self.load_container(id)?;
        // Taken before `runc start`: a short-lived container may finish before it returns.
        let started_at = meta::now_nanos();
        self.inner.runc.start(&meta.id)?;
        meta.started_at = Some(started_at);
        meta::write_json(&self.container_dir(&meta.id).join("meta.json"), &meta)?;
        info!(container = %meta.id, name = %meta.name, "container started");
        Ok(())
    }

    /// Whether the container has exited for good (or never ran).
    fn has_exited(&self, id: &str) -> bool {
        let dir = self.container_dir(id);
        if dir.join("exit.json").exists() {
            return true;
        }
        // The shim ends only after recording the exit (cheap to check, and
        // stop polls this every 20 ms).
        if shim_alive(&dir, id) {
            return false;
        }
        match self.inner.runc.state(id) {
            Ok(Some(s)) => s.status == "stopped" && !shim_alive(&dir, id),
            Ok(None) => !shim_alive(&dir, id),
            Err(_) => false,
        }
    }

    fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_exited(id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let meta = self.load_container(id)?;
        let id = meta.id.as_str();
        if self.has_exited(id) {
            return Ok(());
        }
        if !timeout.is_zero() {
            if let Err(e) = self.inner.runc.kill(id, "TERM", false) {
                warn!(container = %id, "SIGTERM: {e:#}");
            }
            if self.wait_exit(id, timeout) {
                return Ok(());
            }
        }
        // --all: with a shared PID namespace, killing init does not end the others.
        if let Err(e) = self.inner.runc.kill(id, "KILL", true) {
            if !self.has_exited(id) {
                return Err(e.context(format!("killing container {id}")));
            }
        }
        if !self.wait_exit(id, Duration::from_secs(10)) {
            bail!("container {id} did not exit within 10s of SIGKILL");
        }
        info!(container = %id, "container stopped");
        Ok(())
    }

    /// Removes the container: kills it if needed, then runc state, mounts,
    /// cgroup and directory. An unknown container is already removed.
    pub(super) fn remove(&self, id: &str) -> Result<()> {
        let id = match resolve_id(&self.inner.root.join("containers"), id) {
            Ok(id) => id,
            Err(e) if e.downcast_ref::<NotFound>().is_some() => return Ok(()),
            Err(e) => return Err(e),
        };
        let dir = self.container_dir(&id);
        let meta: Option<ContainerMeta> =
            meta::read_json_opt(&dir.join("meta.json")).unwrap_or(None);
        self.inner.runc.delete(&id)?;
        // The shim writes exit.json into the directory: let it finish first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shim_alive(&dir, &id) {
            if Instant::now() > deadline {
                if let Some(pid) = shim_pid(&dir) {
                    warn!(container = %id, pid, "container shim did not exit; killing it");
                    // SAFETY: plain syscall; pid was checked to be this container's shim.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        mounts::unmount_under(&dir)?;
        // Left behind only when the shim was killed.
        if let Ok(socket) = attach::attach_socket(&id) {
            let _ = std::fs::remove_file(socket);
        }
        if let Some(meta) = &meta {
            cgroups::remove(&meta.cgroups_path)?;
        }
        std::fs::remove_dir_all(&dir)
            .or_else(sandbox::ignore_not_found)
            .with_context(|| format!("removing {}", dir.display()))?;
        info!(container = %id, "container removed");
        Ok(())
    }

    pub(super) fn status(&self, id: &str) -> Result<ContainerStatus> {
        let meta = self.load_container(id)?;
        let dir = self.container_dir(&meta.id);
        let exit: Option<ExitRecord> = meta::read_json_opt(&dir.join("exit.json"))?;
        let mut status = ContainerStatus {
            id: meta.id.clone(),
            sandbox_id: meta.sandbox_id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            state: ContainerState::Unknown,
            created_at: meta::to_system_time(meta.created_at),
            started_at: meta.started_at.map(meta::to_system_time),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            image: meta.image.clone(),
            image_id: meta.image_id.clone(),
            image_ref: meta.image_ref.clone(),
            log_path: meta.log_path.clone(),
            pid: None,
        };
        if let Some(exit) = exit {
            status.state = ContainerState::Exited;
            status.finished_at = Some(meta::to_system_time(exit.finished_at));
            status.exit_code = Some(exit.exit_code);
            status.reason = Some(
                if exit.oom_killed {
                    "OOMKilled"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string(),
            );
            return Ok(status);
        }
        // While its shim (which records the exit, then ends) runs, the
        // container is created (`runc create` under way or done) or, once
        // started, running (or exited a moment ago, about to be recorded).
        // Deciding this without `runc state` matters: that is a process
        // spawn per container, and the agent lists every container often.
        if shim_alive(&dir, &meta.id) {
            if meta.started_at.is_some() {
                status.state = ContainerState::Running;
                status.pid = init_pid(&dir);
            } else {
                status.state = ContainerState::Created;
            }
            return Ok(status);
        }
        match self.inner.runc.state(&meta.id)? {
            Some(s) if s.status == "created" => status.state = ContainerState::Created,
            Some(s) if s.status == "running" || s.status == "paused" => {
                status.state = ContainerState::Running;
                status.pid = u32::try_from(s.pid).ok();
            }
            // Exited with no shim left to record how.
            Some(_) => lost_exit(&mut status),
            None if meta.started_at.is_some() => lost_exit(&mut status),
            None => status.state = ContainerState::Unknown,
        }
        Ok(status)
    }

    pub(super) fn list(&self, sandbox_id: Option<&str>) -> Result<Vec<ContainerStatus>> {
        let sandbox_id = sandbox_id.map(|id| {
            resolve_id(&self.inner.root.join("sandboxes"), id).unwrap_or_else(|_| id.to_string())
        });
        let mut out = Vec::new();
        for id in sandbox::list_dir(&self.inner.root.join("containers")) {
            let Ok(meta) =
                meta::read_json::<ContainerMeta>(&self.container_dir(&id).join("meta.json"))
            else {
                continue;
            };
            if sandbox_id.as_ref().is_some_and(|s| *s != meta.sandbox_id) {
                continue;
            }
            match self.status(&id) {
                Ok(s) => out.push(s),
                Err(e) => warn!(container = %id, "skipping container: {e:#}"),
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }
}

impl Runtime {
    /// Usage of the running containers, read from their cgroups.
    pub(super) fn stats(&self) -> Result<Vec<crate::cri::ContainerStats>> {
        let mut out = Vec::new();
        for status in self.list(None)? {
            let (ContainerState::Running, Some(started_at)) = (status.state, status.started_at) else { continue };
            let meta = self.load_container(&status.id)?;
            let Some((cpu_usage_ns, memory_working_set_bytes)) = cgroups::usage(&meta.cgroups_path) else { continue };
            out.push(crate::cri::ContainerStats {
                id: status.id,
                sandbox_id: status.sandbox_id,
                name: status.name,
                started_at,
                timestamp: std::time::SystemTime::now(),
                cpu_usage_ns,
                memory_working_set_bytes,
            });
        }
        Ok(out)
    }
}

/// The shim died without recording the exit (e.g. killed, or the node rebooted).
fn lost_exit(status: &mut ContainerStatus) {
    status.state = ContainerState::Exited;
    status.exit_code = Some(255);
    status.reason = Some("Error".into());
    status.message = Some("the container's exit status was not recorded (its shim is gone)".into());
}

fn shim_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("shim.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The container's init process as `runc create` wrote it, if it still exists.
fn init_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("init.pid")).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Whether the shim recorded in `dir` still runs (checked by command line, so
/// a recycled PID is not mistaken for it).
fn shim_alive(dir: &Path, id: &str) -> bool {
    let Some(pid) = shim_pid(dir) else {
        return false;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie shim has finished its work.
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(id)
}
