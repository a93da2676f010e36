//! A multi-host test cluster on this one machine: every host is a network
//! namespace with its own address on a test bridge in the root namespace,
//! plus a persistent mount namespace of its own (sysfs of its network
//! namespace, the cgroup hierarchies mounted back in, a private
//! /run/netns). `skiff server` runs in host 0, `skiff agent` joined over the
//! network in the others, so packets between nodes cross a real link and
//! the overlay. The test process stays in the root namespace; kubectl runs
//! in host 0's network namespace.
//!
//! Dropping the cluster kills every skiff process (by PID), runs
//! `skiff cleanup` in each host and deletes the namespaces, veths and the
//! bridge.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{run_kubectl_command, skiff_bin, Out, KUBECTL};

/// The busybox image (with curl and socat) every host has in its store (imagePullPolicy: Never).
pub const BUSYBOX: &str = "e2e.local/busybox:v1";

/// One host: a network namespace, a mount namespace and a skiff process.
pub struct Host {
    pub index: usize,
    /// Node name.
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Pod bridge and nft table (the VXLAN device is `network::overlay::device_name(bridge)`).
    pub bridge: String,
    pub nft_table: String,
    pub data_dir: PathBuf,
    /// This host's end of the link to the test bridge (root namespace).
    pub veth: String,
    mnt: PathBuf,
    args: Mutex<Vec<String>>,
    child: Mutex<Option<Child>>,
    removed: AtomicBool,
}

impl Host {
    /// `program args` inside this host (its network and mount namespaces).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount={}", self.mnt.display()))
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs a command in the host, e.g. `host.run(&["ip", "route"])`.
    pub fn run(&self, args: &[&str]) -> Out {
        let mut cmd = self.command(args[0]);
        cmd.args(&args[1..]).stdin(Stdio::null());
        Out::from(cmd.output().unwrap_or_else(|e| panic!("running {args:?} in {}: {e}", self.netns)))
    }

    /// `run` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok(), "{args:?} in host {} failed:\n{}\n{}", self.index, out.stdout, out.stderr);
        out.stdout
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("skiff.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts (again) the host's `skiff server` or `skiff agent`.
    pub fn start(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "host {} is already running", self.index);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let spawned = self
            .command(skiff_bin())
            .args(self.args.lock().unwrap().iter())
            .env("SKIFF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skiff in a test host");
        *child = Some(spawned);
    }

    /// SIGKILL to the skiff process (its pods keep running, as after a crash).
    pub fn kill9(&self) {
        crate::kill9(&self.child);
    }

    pub fn restart(&self) {
        self.kill9();
        self.start();
    }

    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Cuts the host's link to the others (its processes keep running): a partition.
    pub fn disconnect(&self) {
        sh(&format!("ip link set {} down", self.veth));
    }

    pub fn reconnect(&self) {
        sh(&format!("ip link set {} up", self.veth));
    }

    /// `skiff cleanup` with this host's node flags, inside the host.
    pub fn cleanup(&self) -> Out {
        let mut cmd = self.command(skiff_bin());
        cmd.arg("cleanup").arg("--data-dir").arg(&self.data_dir);
        cmd.args(["--bridge", &self.bridge, "--nft-table", &self.nft_table]).stdin(Stdio::null());
        Out::from(cmd.output().expect("running skiff cleanup"))
    }

    /// Kills the skiff process, cleans the host and deletes its namespaces
    /// and link: the machine is gone. Idempotent.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.kill9();
        let out = self.cleanup();
        if !out.ok() {
            eprintln!("skiff cleanup in host {} failed:\n{}\n{}", self.index, out.stdout, out.stderr);
        }
        let _ = Command::new("umount").arg(&self.mnt).status();
        sh(&format!("ip link del {} 2>/dev/null; ip netns del {} 2>/dev/null; true", self.veth, self.netns));
    }
}

/// A server and `agents` joined agents, each in a host of its own.
pub struct Cluster {
    pub tag: String,
    pub dir: tempfile::TempDir,
    /// The test bridge in the root namespace the hosts' links hang off.
    pub bridge: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub token: String,
    hosts: Vec<Host>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// Server + `agents` agents, all Ready, with the default (vxlan) backend.
    pub fn start(agents: usize) -> Cluster {
        Cluster::start_with(agents, &[])
    }

    /// `start` with further flags for every node's server/agent (e.g. `--flannel-backend host-gw`).
    pub fn start_with(agents: usize, flags: &[&str]) -> Cluster {
        require_tools();
        skiff_bin(); // built before any host exists
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xffff);
        // A /24 for the hosts' link and a /16 for pods, unique by PID and sequence.
        let third = (pid * 7 + n * 13) % 250 + 3;
        let second = 128 + (pid * 11 + n * 17) % 128;
        let dir = tempfile::Builder::new().prefix("skiff-e2e-cluster-").tempdir().unwrap();
        // The mount namespace files need a mount that does not propagate.
        let mnt_dir = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt_dir).unwrap();
        sh(&format!("mount --bind {0} {0} && mount --make-private {0}", mnt_dir.display()));
        let mut cluster = Cluster {
            bridge: format!("skc{tag}"),
            cluster_cidr: format!("10.{second}.0.0/16"),
            service_cidr: format!("10.{}.0.0/16", 64 + second % 64),
            token: String::new(),
            hosts: Vec::new(),
            tag: tag.clone(),
            dir,
        };
        sh(&format!("ip link add {0} type bridge && ip link set {0} up", cluster.bridge));
        let image = cluster.dir.path().join("busybox.tar");
        std::fs::write(&image, runtime::images::testimage::docker_save_tar(BUSYBOX, &runtime::images::testimage::busybox_net_tools_layer_tar())).unwrap();
        for i in 0..=agents {
            let host = Host {
                index: i,
                name: format!("e2e-h{i}-{tag}"),
                netns: format!("skiff-e2e-{tag}-{i}"),
                ip: Ipv4Addr::new(10, 255, third as u8, 10 + i as u8),
                bridge: format!("sk{tag}h{i}"),
                nft_table: format!("skiff_e2e_{tag}_{i}"),
                data_dir: cluster.dir.path().join(format!("host{i}")),
                veth: format!("skv{tag}h{i}"),
                mnt: mnt_dir.join(format!("host{i}")),
                args: Mutex::new(Vec::new()),
                child: Mutex::new(None),
                removed: AtomicBool::new(false),
            };
            cluster.hosts.push(host);
            let host = cluster.hosts.last().unwrap();
            make_host(host, &cluster.bridge);
            std::fs::create_dir_all(&host.data_dir).unwrap();
            let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&image).arg("--data-dir").arg(&host.data_dir).output().unwrap();
            assert!(out.status.success(), "skiff image import: {}", String::from_utf8_lossy(&out.stderr));
        }
        let node_flags = |h: &Host| -> Vec<String> {
            let mut a: Vec<String> = vec!["--data-dir".into(), h.data_dir.display().to_string()];
            for (k, v) in [("--node-name", h.name.clone()), ("--node-ip", h.ip.to_string()), ("--bridge", h.bridge.clone()), ("--nft-table", h.nft_table.clone())] {
                a.push(k.into());
                a.push(v);
            }
            a.extend(flags.iter().map(|f| f.to_string()));
            a
        };
        let server = &cluster.hosts[0];
        let mut args: Vec<String> = ["server", "--bind-address", &server.ip.to_string(), "--cluster-cidr", &cluster.cluster_cidr, "--service-cidr", &cluster.service_cidr].iter().map(|s| s.to_string()).collect();
        args.extend(node_flags(server));
        *server.args.lock().unwrap() = args;
        server.start();
        cluster.wait_api();
        cluster.token = std::fs::read_to_string(server.data_dir.join("server/token")).unwrap().trim().to_string();
        let url = format!("https://{}:6443", server.ip);
        for h in &cluster.hosts[1..] {
            let mut args: Vec<String> = ["agent", "--server", &url, "--token", &cluster.token].iter().map(|s| s.to_string()).collect();
            args.extend(node_flags(h));
            // The server derives it from --service-cidr; an agent is told.
            args.extend(["--cluster-dns".to_string(), cluster.cluster_dns()]);
            *h.args.lock().unwrap() = args;
            h.start();
        }
        for i in 0..cluster.hosts.len() {
            cluster.wait_node_ready(i);
        }
        cluster
    }

    /// The kube-dns Service's address: the 10th of the service range.
    pub fn cluster_dns(&self) -> String {
        self.service_cidr.replace(".0.0/16", ".0.10")
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.hosts[0].data_dir.join("kubeconfig.yaml")
    }

    /// kubectl against the server, run in host 0's network namespace.
    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.hosts[0].netns)).arg("--").arg(KUBECTL);
        run_kubectl_command(cmd, &self.kubeconfig(), self.dir.path(), args, stdin)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok(), "kubectl {args:?} failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
        out.stdout
    }

    /// `kubectl apply -f -` of a manifest, which must succeed.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
        assert!(out.ok(), "kubectl apply failed:\n{}\n{manifest}", out.stderr);
        out.stdout
    }

    /// A busybox pod pinned to host `host` running `command` (sh -c).
    pub fn run_pod(&self, name: &str, host: usize, command: &str) {
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {{"app": "{name}"}}}},
  "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "c", "image": "{BUSYBOX}", "imagePullPolicy": "Never", "command": ["sh", "-c", {cmd}]}}]}}}}"#,
            node = self.hosts[host].name,
            cmd = serde_json::to_string(command).unwrap()
        );
        self.apply(&manifest);
    }

    /// Waits for the pod to be Ready and returns its IP.
    pub fn pod_ready_ip(&self, name: &str) -> String {
        let out = self.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=120s"]);
        if !out.ok() {
            let describe = self.kubectl(&["describe", "pod", name]).stdout;
            panic!("pod {name} not Ready: {}\n{describe}\n{}", out.stderr, self.logs());
        }
        self.ok(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"])
    }

    /// Every host's skiff log, for failure messages.
    pub fn logs(&self) -> String {
        self.hosts.iter().map(|h| format!("--- host {} ({}) log tail:\n{}\n", h.index, h.name, tail(&h.log(), 60))).collect()
    }

    /// The host is gone for good (see `Host::remove`); its Node object stays until deleted.
    pub fn remove_host(&self, i: usize) {
        self.hosts[i].remove();
    }

    fn wait_api(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(self.hosts[0].is_running(), "skiff server exited early; log:\n{}", self.hosts[0].log());
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.ok() && out.stdout == "ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time; log:\n{}", self.hosts[0].log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until host `i`'s Node is Ready with a podCIDR.
    pub fn wait_node_ready(&self, i: usize) {
        let name = &self.hosts[i].name;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.kubectl(&["get", "node", name, "-o", "jsonpath={.spec.podCIDR} {.status.conditions[?(@.type==\"Ready\")].status}"]);
            if out.ok() && out.stdout.ends_with(" True") && !out.stdout.starts_with(' ') {
                return;
            }
            assert!(self.hosts[i].is_running(), "skiff in host {i} exited; log:\n{}", self.hosts[i].log());
            assert!(Instant::now() < deadline, "node {name} not Ready: {}{}\n{}", out.stdout, out.stderr, self.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, the server last: nothing re-creates what is being removed.
        for h in self.hosts.iter().rev() {
            h.kill9();
        }
        for h in self.hosts.iter().rev() {
            h.remove();
        }
        sh(&format!("ip link del {} 2>/dev/null; umount {} 2>/dev/null; true", self.bridge, self.dir.path().join("mnt").display()));
    }
}

/// Network namespace with a link to the test bridge, an address on it and
/// a default route onto that link, as a real host has one (a ClusterIP is
/// DNATed only after routing found a way out; nothing answers on the link
/// but the other hosts), and a persistent mount namespace with sysfs of
/// that network namespace and the cgroup hierarchies.
fn make_host(h: &Host, bridge: &str) {
    sh(&format!(
        "set -e
ip netns add {ns}
ip link add {veth} type veth peer name eth0 netns {ns}
ip link set {veth} master {bridge} up
ip -n {ns} addr add {ip}/24 dev eth0
ip -n {ns} link set eth0 up
ip -n {ns} link set lo up
ip -n {ns} route add default dev eth0
touch {mnt}
unshare --mount={mnt} --propagation slave true",
        ns = h.netns,
        veth = h.veth,
        ip = h.ip,
        mnt = h.mnt.display()
    ));
    // `ip netns exec` would remount /sys and leave /sys/fs/cgroup empty on a
    // cgroup v1 host; mount sysfs and the hierarchies back once, here.
    let mut script = String::from("set -e\nmount -t sysfs sysfs /sys\nmount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n");
    for (point, fstype, opts) in root_cgroup_mounts() {
        script += &format!("mkdir -p {point}\nmount -t {fstype} -o {opts} {fstype} {point}\n");
    }
    script += "mount -t tmpfs -o mode=755 netns /run/netns\n";
    let out = h.command("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "setting up host {}'s mounts:\n{}", h.index, String::from_utf8_lossy(&out.stderr));
}

/// (mount point, fs type, options) of the root namespace's cgroup mounts.
fn root_cgroup_mounts() -> Vec<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let point = left.split(' ').nth(4).unwrap_or("").to_string();
        let supers: Vec<&str> = r.nth(1).unwrap_or("").split(',').filter(|o| *o != "rw" && *o != "ro").collect();
        let mut opts = supers.join(",");
        if fstype == "cgroup" && supers.iter().all(|o| o.starts_with("name=") || *o == "xattr") {
            opts = format!("none,{opts}");
        }
        if opts.is_empty() {
            opts = "defaults".into();
        }
        out.push((point, fstype.to_string(), opts));
    }
    out
}

fn require_tools() {
    for tool in ["ip", "bridge", "nsenter", "unshare", "mount"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(found, "the multi-host test cluster needs `{tool}` (and root)");
    }
    assert!(Path::new("/usr/sbin/nft").exists() || Path::new("/sbin/nft").exists(), "the test cluster needs nft");
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}\nfailed: {}", String::from_utf8_lossy(&out.stderr));
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
