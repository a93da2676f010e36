//! The `skiff server` child process the benchmark measures: started from the
//! running binary on a free loopback port with a throwaway data directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::client::{Client, Kubeconfig};

const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct LocalServer {
    child: Child,
    pub pid: u32,
    pub kubeconfig: PathBuf,
    /// The server's --data-dir (inside the temp dir).
    pub data_dir: PathBuf,
    pub log: PathBuf,
    // Declared last so the directory is removed after the child is gone;
    // None once `stop_keeping_dir` handed it to the caller.
    dir: Option<tempfile::TempDir>,
}

impl LocalServer {
    /// Starts `skiff server` with `flags` (which components to run) on a free port.
    pub fn start(flags: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let port = free_port()?;
        let exe = std::env::current_exe().context("locating the skiff binary")?;
        let out = File::create(&log)?;
        let child = Command::new(exe)
            .arg("server")
            .args(flags)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting skiff server")?;
        Ok(LocalServer { pid: child.id(), child, kubeconfig: data_dir.join("kubeconfig.yaml"), data_dir, log, dir: Some(dir) })
    }

    /// Waits for the kubeconfig to appear and `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) -> Result<(Kubeconfig, Client)> {
        let start = Instant::now();
        let mut last_err = String::from("kubeconfig not written yet");
        while start.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!("skiff server exited with {status} while starting; its log:\n{}", self.log_tail());
            }
            if self.kubeconfig.exists() {
                match probe(&self.kubeconfig).await {
                    Ok(ready) => return Ok(ready),
                    Err(e) => last_err = format!("{e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("skiff server not ready after {START_TIMEOUT:?} ({last_err}); its log:\n{}", self.log_tail())
    }

    /// Asks the server to shut down (SIGINT, which it handles), then kills it
    /// if it has not exited within 10 s. The temp dir goes when `self` drops.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    /// Like `stop`, but hands back the temp dir, for callers that must clean
    /// up what the server left on the host (mounts, namespaces) before the
    /// directory is removed.
    pub fn stop_keeping_dir(mut self) -> Result<tempfile::TempDir> {
        self.halt()?;
        Ok(self.dir.take().expect("the temp dir is only taken here"))
    }

    fn halt(&mut self) -> Result<()> {
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("skiff server {} did not stop on SIGINT within 10s; killing it", self.pid);
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for LocalServer {
    // On error paths the child must not outlive the benchmark.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn probe(kubeconfig: &Path) -> Result<(Kubeconfig, Client)> {
    let kc = Kubeconfig::load(kubeconfig)?;
    let client = Client::connect(&kc).await?;
    let status = client.status("/readyz").await?;
    if status != 200 {
        bail!("/readyz answered {status}");
    }
    Ok((kc, client))
}

/// A port the kernel just handed out; racy in theory, fine on a quiet host.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[derive(Serialize, Clone, Copy)]
pub struct Memory {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

/// "N MiB (peak M MiB)", or "?" when it could not be read.
pub fn memory_summary(m: Option<Memory>) -> String {
    m.map_or("?".into(), |m| format!("{:.0} MiB (peak {:.0} MiB)", m.rss_kb as f64 / 1024.0, m.hwm_kb as f64 / 1024.0))
}

/// VmRSS (resident now) and VmHWM (peak resident) of a process.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb = line[name.len()..].trim().trim_end_matches("kB").trim();
        Ok(kb.parse()?)
    };
    Ok(Memory { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
}

/// Average CPU cores used since the previous lap, by the server (when its
/// PID is known) and by the benchmark itself: both share this machine's
/// cores, so a saturated CPU explains queueing in the latencies.
#[derive(Serialize, Clone, Copy)]
pub struct CpuUse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cores: Option<f64>,
    pub bench_cores: f64,
}

impl CpuUse {
    pub fn text(&self) -> String {
        let server = self.server_cores.map_or("?".into(), |c| format!("{c:.2}"));
        format!("cpu cores: server {server}, bench {:.2}", self.bench_cores)
    }
}

pub struct CpuClock {
    pid: Option<u32>,
    at: Instant,
    server: Option<f64>,
    bench: f64,
}

impl CpuClock {
    pub fn new(pid: Option<u32>) -> Self {
        CpuClock { pid, at: Instant::now(), server: pid.and_then(process_cpu), bench: own_cpu() }
    }

    pub fn lap(&mut self) -> CpuUse {
        let now = CpuClock::new(self.pid);
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let used = CpuUse {
            server_cores: now.server.zip(self.server).map(|(b, a)| (b - a) / wall),
            bench_cores: (now.bench - self.bench) / wall,
        };
        *self = now;
        used
    }
}

/// utime + stime of a process, in seconds, from /proc/PID/stat.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds (user + system) this process has used.
fn own_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}
