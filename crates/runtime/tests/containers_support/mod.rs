//! Shared fixture for the container runtime tests: a real two-layer busybox
//! image on disk, a `Runtime` over a temp root with the test shim binary,
//! and helpers to wait for states and check that nothing is left behind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::containers::{Runtime, ShimCommand};
use runtime::cri::{
    ContainerConfig, ContainerState, ContainerStatus, DnsConfig, ExecProcess, PodSandboxConfig,
    RuntimeService,
};
use runtime::images::{ImageResolver, ResolvedImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const IMAGE: &str = "localhost:5000/busybox:test";

/// Serves one image built on disk by [`build_image`].
pub struct DirImage(pub ResolvedImage);

impl ImageResolver for DirImage {
    fn resolve(&self, image: &str) -> anyhow::Result<ResolvedImage> {
        if image == IMAGE || image == self.0.id {
            Ok(self.0.clone())
        } else {
            anyhow::bail!("image {image} is not present")
        }
    }
}

/// Bottom layer: busybox with its applet links, passwd/group, /tmp.
/// Top layer: a file that shadows one of the bottom layer, to check layer order.
pub fn build_image(dir: &Path) -> ResolvedImage {
    let base = dir.join("layer0");
    for sub in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(base.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(base.join("etc/motd"), "bottom\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let top = dir.join("layer1");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/motd"), "top\n").unwrap();
    ResolvedImage {
        id: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        env: vec![
            "PATH=/bin:/usr/bin".into(),
            "FROM_IMAGE=yes".into(),
            "OVERRIDE=image".into(),
        ],
        working_dir: "/tmp".into(),
        user: String::new(),
        layers: vec![base, top],
        ..Default::default()
    }
}

pub fn shim() -> ShimCommand {
    ShimCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_skiff-test-shim")),
        args_prefix: vec![],
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test run: pid plus a counter.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub runtime: Runtime,
    pub image: Arc<DirImage>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("skiff-ctr-")
            .tempdir()
            .unwrap();
        let image = Arc::new(DirImage(build_image(&dir.path().join("image"))));
        let root = dir.path().join("agent");
        let runtime = Runtime::open(root.clone(), image.clone(), shim()).unwrap();
        Fixture {
            dir,
            root,
            runtime,
            image,
        }
    }

    /// Opens a second Runtime on the same root, as an agent restarted after kill -9.
    pub fn reopen(&self) -> Runtime {
        Runtime::open(self.root.clone(), self.image.clone(), shim()).unwrap()
    }

    pub fn sandbox_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            uid: unique("uid"),
            name: name.into(),
            namespace: "default".into(),
            hostname: name.into(),
            log_directory: self.dir.path().join("logs").join(name),
            dns: DnsConfig {
                servers: vec!["10.43.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
            cgroup_parent: unique("skifftest"),
            ..Default::default()
        }
    }

    pub fn container_config(
        &self,
        sandbox: &PodSandboxConfig,
        name: &str,
        script: &str,
    ) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            image: IMAGE.into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: sandbox.log_directory.join(name).join("0.log"),
            labels: BTreeMap::from([("test".into(), "yes".into())]),
            ..Default::default()
        }
    }

    /// Creates and starts one container.
    pub async fn run(&self, sandbox_id: &str, config: &ContainerConfig) -> String {
        let id = self
            .runtime
            .create_container(sandbox_id, config)
            .await
            .unwrap();
        self.runtime.start_container(&id).await.unwrap();
        id
    }
}

impl Drop for Fixture {
    /// Removes whatever a failed test left behind (a passing test already did).
    fn drop(&mut self) {
        let rt = self.runtime.clone();
        std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tokio.block_on(async {
                for s in rt.list_pod_sandboxes().await.unwrap_or_default() {
                    let _ = rt.remove_pod_sandbox(&s.id).await;
                }
                for c in rt.list_containers(None).await.unwrap_or_default() {
                    let _ = rt.remove_container(&c.id).await;
                }
            })
        })
        .join()
        .unwrap();
    }
}

pub async fn wait_for_state(
    rt: &Runtime,
    id: &str,
    want: ContainerState,
    timeout: Duration,
) -> ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = rt.container_status(id).await.unwrap();
        if status.state == want {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not reach {want:?} within {timeout:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log lines as `(stream, tag, text)`.
pub fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "bad CRI log line {l:?}");
            assert!(
                chrono::DateTime::parse_from_rfc3339(parts[0]).is_ok(),
                "bad timestamp in {l:?}"
            );
            (
                parts[1].to_string(),
                parts[2].to_string(),
                parts[3].to_string(),
            )
        })
        .collect()
}

/// Waits until the log holds a line with `text`.
pub async fn wait_for_log(
    path: &Path,
    text: &str,
    timeout: Duration,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = log_lines(path);
        if lines.iter().any(|(_, _, t)| t.contains(text)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "log {} never showed {text:?}: {lines:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every cgroup hierarchy's copy of `path` (relative to the hierarchy root).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(|m| PathBuf::from(m).join(path)))
        .filter(|p| p.exists())
        .collect()
}

/// Processes whose command line mentions `needle` (a container ID).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Asserts the runtime left nothing of the sandbox behind.
pub fn assert_nothing_left(
    fx: &Fixture,
    sandbox_id: &str,
    cgroup_parent: &str,
    container_ids: &[String],
) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = fx.root.display().to_string();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
    let netns = PathBuf::from(format!("/run/netns/skiff-{}", &sandbox_id[..12]));
    assert!(!netns.exists(), "{} left behind", netns.display());
    assert!(
        cgroup_dirs(cgroup_parent).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(cgroup_parent)
    );
    for id in container_ids {
        assert!(
            processes_mentioning(id).is_empty(),
            "processes of {id} left: {:?}",
            processes_mentioning(id)
        );
        assert!(!fx.root.join("containers").join(id).exists());
        assert!(!fx.root.join("runc").join(id).exists());
    }
    assert!(!fx.root.join("sandboxes").join(sandbox_id).exists());
}

/// Writes `input` to a piped (non-tty) process, closes its stdin and reads
/// stdout and stderr to the end.
pub async fn converse(p: &mut ExecProcess, input: &[u8]) -> (String, String) {
    let mut stdin = p.stdin.take().expect("a process with stdin");
    stdin.write_all(input).await.unwrap();
    stdin.flush().await.unwrap();
    drop(stdin);
    let (mut out, mut err) = (String::new(), String::new());
    p.stdout.as_mut().unwrap().read_to_string(&mut out).await.unwrap();
    p.stderr.as_mut().unwrap().read_to_string(&mut err).await.unwrap();
    (out, err)
}
