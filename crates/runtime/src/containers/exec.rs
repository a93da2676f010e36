//! Processes run inside a running container with `runc exec`: to completion
//! with captured output (probes), or interactively with pipes or a pty
//! (`kubectl exec`). A tty exec is detached by runc, so it runs under the
//! shim's `exec-wait` subreaper, which collects its exit code.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::console::ConsoleSocket;
use super::Runtime;
use crate::cri::{ContainerState, ExecProcess, ExecResult};

impl Runtime {
    fn exec_pid_file(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .container_dir(id)
            .join(format!("exec-{}.pid", &super::new_id()?[..12])))
    }

    /// The full ID of a running container, or an error saying why not.
    fn running_container(&self, id: &str) -> Result<String> {
        let status = self.status(id)?;
        if status.state != ContainerState::Running {
            bail!(
                "container {} is not running (state {:?})",
                status.id,
                status.state
            );
        }
        Ok(status.id)
    }

    pub(super) fn exec_to_end(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        let id = self.running_container(id)?;
        if cmd.is_empty() {
            bail!("exec needs a command");
        }
        let pid_file = self.exec_pid_file(&id)?;
        let mut child = self
            .inner
            .runc
            .command()
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting runc exec")?;
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let result = wait_with_timeout(&mut child, timeout);
        if result.is_none() {
            // runc forwards signals but cannot forward SIGKILL: kill the process itself.
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                // SAFETY: plain syscall on the exec'd process runc reported.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&pid_file);
        let Some(status) = result else {
            bail!("command {cmd:?} timed out after {timeout:?}");
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let exit_code = status.code().unwrap_or(255);
        Ok(ExecResult {
            stdout,
            stderr,
            exit_code,
        })
    }

    pub(super) fn exec_interactive(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecProcess> {
        let id = self.running_container(id)?;
        if cmd.is_empty() {
            bail!("exec needs a command");
        }
        let pid_file = self.exec_pid_file(&id)?;
        if !tty {
            let mut child = self
                .inner
                .runc
                .command()
                .arg("exec")
                .arg(&id)
                .args(cmd)
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting runc exec")?;
            let stdin = child.stdin.take().map(|s| async_file(s.into()));
            let stdout = child.stdout.take().map(|s| async_file(s.into()));
            let stderr = child.stderr.take().map(|s| async_file(s.into()));
            return Ok(ExecProcess {
                stdin,
                stdout,
                stderr,
                pty: None,
                exit: exit_receiver(child, None),
            });
        }
        let console = ConsoleSocket::new()?;
        let shim = &self.inner.shim;
        let mut helper = Command::new(&shim.program)
            .args(&shim.args_prefix)
            .arg("exec-wait")
            .arg(&pid_file)
            .arg("--root")
            .arg(self.inner.root.join("runc"))
            .args([
                "exec",
                "--detach",
                "--tty",
                "--env",
                "TERM=xterm",
                "--console-socket",
            ])
            .arg(&console.path)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the exec helper")?;
        let master = match console.receive(&mut helper, Duration::from_secs(30)) {
            Ok(m) => m,
            Err(e) => {
                let _ = helper.kill();
                let _ = helper.wait();
                let _ = std::fs::remove_file(&pid_file);
                return Err(e);
            }
        };
        let stdin = if stdin {
            Some(async_file(master.try_clone()?))
        } else {
            None
        };
        let stdout = Some(async_file(master.try_clone()?));
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr: None,
            pty: Some(master),
            exit: exit_receiver(helper, Some(pid_file)),
        })
    }
}

fn async_file(fd: OwnedFd) -> tokio::fs::File {
    tokio::fs::File::from_std(std::fs::File::from(fd))
}

/// Resolves with the child's exit code once it ends, then removes `cleanup`.
fn exit_receiver(
    mut child: Child,
    cleanup: Option<PathBuf>,
) -> tokio::sync::oneshot::Receiver<i32> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let code = match child.wait() {
            Ok(status) => status.code().unwrap_or(255),
            Err(_) => 255,
        };
        if let Some(path) = cleanup {
            let _ = std::fs::remove_file(path);
        }
        let _ = tx.send(code);
    });
    rx
}

fn drain(mut input: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = input.read_to_end(&mut buf);
        buf
    })
}

/// Waits for the child; a zero timeout waits forever (as CRI's ExecSync).
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    if timeout.is_zero() {
        return child.wait().ok();
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}
