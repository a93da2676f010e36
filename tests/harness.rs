//! End-to-end test harness: starts a real `skiff server` in a temp dir on a
//! free port and drives the real `/usr/bin/kubectl` against it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod node_cleanup;

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// The skiff binary, built once per test run in the same profile as the tests.
pub fn skiff_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SKIFF_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "skiff", "--bin", "skiff"]);
        // The variables cargo sets for this test would reach build scripts
        // that watch them (ring's watches CARGO_MANIFEST_DIR) and make every
        // later plain `cargo build` compile the whole tree again.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR") || k == "OUT_DIR" {
                cmd.env_remove(k);
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("running cargo build");
        assert!(status.success(), "building skiff failed");
        profile_dir.join("skiff")
    })
}

/// SIGKILLs and reaps the process in `child`, if any; it is gone afterwards.
pub fn kill9(child: &std::sync::Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().unwrap().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    extra_args: Vec<String>,
    /// The server process; behind a lock so a test can restart it while an agent borrows the Server.
    child: std::sync::Mutex<Option<Child>>,
    /// Set when the server runs its node agent (see `start_node`).
    pub node: Option<Node>,
}

/// The unique host-level names a server's node agent uses, so parallel tests cannot collide.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub bridge: String,
    pub nft_table: String,
    pub kubelet_port: u16,
    /// The node's pod range (a /24 of the server's --cluster-cidr).
    pub cluster_cidr: String,
}

impl Server {
    /// A server with everything it runs by default (controllers, scheduler).
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// The API server alone: for tests of API semantics that controllers
    /// acting on the same objects would make racy.
    pub fn start_api_only() -> Server {
        Server::start_with(&["--disable-controllers", "--disable-scheduler"])
    }

    pub fn start_with(extra_args: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("skiff-e2e-").tempdir().unwrap();
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let s = Server { dir, port: free_port(), extra_args, child: Default::default(), node: None };
        s.spawn();
        s
    }

    /// A one-node cluster: everything including the node agent, which runs
    /// real containers. Bridge, nft table, agent port and pod range are
    /// unique to this server; dropping it deletes every pod and then removes
    /// what the agent set up on the host.
    pub fn start_node() -> Server {
        Server::start_node_with(&[])
    }

    /// Waits until this server's own node is Ready; returns its name.
    pub fn wait_node_ready(&self) -> String {
        let name = self.node.as_ref().expect("a server started with its node agent").name.clone();
        eventually(60, "the node to be Ready", || {
            let out = self.kubectl(&["get", "node", &name, "--no-headers"]);
            (out.ok() && out.stdout.contains(" Ready ")).then_some(())
        });
        name
    }

    /// `start_node` with further flags for the server (and its agent).
    pub fn start_node_with(flags: &[&str]) -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id() % 0xffff);
        // A /16 per server out of 10.128.0.0/9, chosen by PID and sequence.
        let second = 128 + (std::process::id() * 7 + n * 13) % 128;
        let node = Node {
            name: format!("e2e-node-{tag}"),
            bridge: format!("sk{tag}"),
            nft_table: format!("skiff_e2e_{tag}"),
            kubelet_port: free_port(),
            cluster_cidr: format!("10.{second}.0.0/16"),
        };
        let dir = tempfile::Builder::new().prefix("skiff-e2e-").tempdir().unwrap();
        let extra_args = vec![
            "--node-name".into(), node.name.clone(),
            "--bridge".into(), node.bridge.clone(),
            "--nft-table".into(), node.nft_table.clone(),
            "--kubelet-port".into(), node.kubelet_port.to_string(),
            "--cluster-cidr".into(), node.cluster_cidr.clone(),
            // Tests share the root network namespace, which holds one VXLAN device with VNI 1 at most.
            "--flannel-backend".into(), "host-gw".into(),
            "--service-cidr".into(), format!("10.{}.0.0/16", 64 + second % 64),
        ];
        let extra_args = extra_args.into_iter().chain(flags.iter().map(|f| f.to_string())).collect();
        let s = Server { dir, port: free_port(), extra_args, child: Default::default(), node: Some(node) };
        s.spawn();
        s
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn spawn(&self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log")).unwrap();
        let agent: &[&str] = if self.node.is_some() { &[] } else { &["--disable-agent"] };
        let child = Command::new(skiff_bin())
            .args(["server", "--bind-address", "127.0.0.1"])
            .args(agent)
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skiff server");
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exited = self.child.lock().unwrap().as_mut().unwrap().try_wait().unwrap();
            if let Some(status) = exited {
                panic!("skiff server exited early ({status}); log:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.ok() && out.stdout == "ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&self) {
        kill9(&self.child);
    }

    pub fn restart(&self) {
        self.kill9();
        self.spawn();
    }

    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_kubectl(args, stdin, &[])
    }

    pub fn kubectl_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_kubectl(args, None, env)
    }

    fn run_kubectl(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(KUBECTL);
        cmd.envs(env.iter().copied());
        run_kubectl_command(cmd, &self.kubeconfig(), self.dir.path(), args, stdin)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok(), "kubectl {args:?} failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
        out.stdout
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.ok(), "kubectl {args:?} should have failed:\nstdout: {}", out.stdout);
        out.stderr
    }

    pub fn apply_stdin(&self, args: &[&str], manifest: &str) -> Out {
        self.kubectl_stdin(args, Some(manifest))
    }

    /// `kubectl ARGS -o json` that must succeed, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) {
        let out = self.apply_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.ok(), "apply: {}\n{}", out.stderr, manifest);
    }

    /// Waits (up to two minutes) for a pod's Ready condition.
    pub fn wait_pod_ready(&self, pod: &str) {
        let out = self.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), "--timeout=120s"]);
        assert!(out.ok(), "pod {pod} not Ready: {}\n{}\n{}", out.stderr, self.ok(&["describe", "pod", pod]), self.log());
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose output goes to a file.
    pub fn kubectl_background(&self, args: &[&str], out_file: &Path) -> Child {
        let f = std::fs::File::create(out_file).unwrap();
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", self.dir.path())
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(node) = self.node.clone() {
            crate::node_cleanup::remove_everything(self, &node);
        }
        self.kill9();
        if let Some(node) = self.node.clone() {
            crate::node_cleanup::remove_host_state(self.dir.path(), &node);
        }
    }
}

pub struct Out {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).trim_end().to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim_end().to_string(),
        }
    }
}

/// `skiff sim` as a child process, killed (by PID) when dropped.
pub struct Sim(Child);

impl Sim {
    /// `nodes` simulated nodes named `<prefix>0`, `<prefix>1`, ...
    pub fn start(s: &Server, nodes: usize, prefix: &str) -> Sim {
        let log = std::fs::File::create(s.dir.path().join(format!("sim-{prefix}log"))).unwrap();
        let child = Command::new(skiff_bin())
            .arg("sim")
            .arg("--kubeconfig")
            .arg(s.kubeconfig())
            .args(["--nodes", &nodes.to_string(), "--name-prefix", prefix])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skiff sim");
        Sim(child)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A skiff component (`scheduler`, `controller-manager`, ...) as its own
/// process against the server, its log in the server's directory; killed
/// (by PID) when dropped.
pub struct Component {
    pub child: Child,
    pub log: PathBuf,
}

impl Component {
    pub fn start(s: &Server, command: &str) -> Component {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = s.dir.path().join(format!("{command}-{n}.log"));
        let child = Command::new(skiff_bin())
            .args([command, "--kubeconfig"])
            .arg(s.kubeconfig())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting skiff {command}: {e}"));
        Component { child, log }
    }

    /// The identity it holds leader-election leases under.
    pub fn identity_suffix(&self, command: &str) -> String {
        format!("_{command}_{}", self.child.id())
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the process to end.
    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, or panics after `secs`.
/// Runs `cmd` (kubectl itself, or a command that runs it, such as nsenter …
/// kubectl) against `kubeconfig` with `args`, feeding it `stdin`; `home` is
/// its $HOME, where kubectl keeps its discovery cache.
pub fn run_kubectl_command(mut cmd: Command, kubeconfig: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.env("HOME", home);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    Out::from(child.wait_with_output().unwrap())
}

pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A registry on 127.0.0.1 holding `busybox:e2e` built from /bin/busybox;
/// returns it (dropping it stops the registry) and the image name.
pub fn registry_with_busybox() -> (runtime::images::testimage::TestRegistry, String) {
    use runtime::images::testimage;
    let reg = testimage::TestRegistry::start().expect("starting docker-registry");
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    let config = testimage::busybox_config(&[&layer]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(testimage::push_to_registry(&reg.addr, "busybox", "e2e", &layer, config)).expect("pushing busybox");
    let image = format!("{}/busybox:e2e", reg.addr);
    (reg, image)
}
