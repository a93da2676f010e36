//! `skiff agent` joining a running server as a separate process with its own
//! data directory: token pinning and refusal, certificates kept across a
//! restart, and a pod on the joined node whose logs and exec go through the
//! agent's streaming server. Needs root (as CI runs).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::node_cleanup::remove_host_state;
use e2e::{eventually, skiff_bin, Node, Server};
use runtime::images::testimage;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A joined agent process (the harness starts servers with --disable-agent); dropping it deletes the cluster's pods, kills the
/// agent (by PID) and removes what it left on the host.
struct Agent<'a> {
    server: &'a Server,
    node: Node,
    dir: tempfile::TempDir,
    token: String,
    /// Further `skiff agent` flags.
    flags: Vec<String>,
    child: Option<Child>,
}

impl<'a> Agent<'a> {
    fn start(server: &'a Server, token: &str) -> Agent<'a> {
        Agent::start_with(server, token, &[])
    }

    fn start_with(server: &'a Server, token: &str, flags: &[&str]) -> Agent<'a> {
        let tag = format!("{:x}", std::process::id() % 0xffff);
        let node = Node {
            name: format!("e2e-join-{}", std::process::id()),
            bridge: format!("sj{tag}"),
            nft_table: format!("skiff_join_{tag}"),
            kubelet_port: free_port(),
            cluster_cidr: server_cluster_cidr(),
        };
        let dir = tempfile::Builder::new().prefix("skiff-e2e-agent-").tempdir().unwrap();
        let flags = flags.iter().map(|f| f.to_string()).collect();
        let mut agent = Agent { server, node, dir, token: token.to_string(), flags, child: None };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = agent_command(self.server, &self.token, &self.node.name, self.dir.path())
            .args(["--bridge", &self.node.bridge, "--nft-table", &self.node.nft_table])
            .args(["--kubelet-port", &self.node.kubelet_port.to_string(), "--node-ip", "127.0.0.1", "--flannel-backend", "host-gw"])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skiff agent");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.server.kubectl(&["delete", "pods", "--all", "-A", "--timeout=60s"]);
        }
        self.stop();
        remove_host_state(self.dir.path(), &self.node);
    }
}

/// A /16 for this test run out of 10.128.0.0/9 (start_node's range), by PID.
fn server_cluster_cidr() -> String {
    format!("10.{}.0.0/16", 128 + (std::process::id() * 11 + 5) % 128)
}

fn agent_command(server: &Server, token: &str, node: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(skiff_bin());
    cmd.args(["agent", "--server", &format!("https://127.0.0.1:{}", server.port), "--token", token, "--node-name", node]);
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// Runs `cmd` to its end, killing it (by PID) after `secs`.
fn output_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {secs}s; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A join that must be refused at once, saying `says`.
fn refused(s: &Server, token: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(agent_command(s, token, "e2e-join-refused", dir.path()), 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a join with {token:?} should fail:\n{stderr}");
    assert!(stderr.contains(says), "joining with {token:?}: want {says:?} in:\n{stderr}");
    assert!(!dir.path().join("agent/pki").exists(), "nothing is stored after a refused join");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn node_ready(s: &Server, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = s.kubectl(&["get", "node", &agent.node.name, "--no-headers"]);
        if out.ok() && out.stdout.contains(" Ready ") {
            return;
        }
        if Instant::now() > deadline {
            let node = s.kubectl(&["describe", "node", &agent.node.name]);
            panic!("the joined node is not Ready after 90s:\n{}{}\nagent log:\n{}", node.stdout, node.stderr, agent.log());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_agent_joins_with_the_token_and_runs_pods() {
    let s = Server::start_with(&["--cluster-cidr", &server_cluster_cidr()]);
    let token_file = s.dir.path().join("server/token");
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    assert!(token.starts_with("K10") && token.contains("::server:"), "{token}");
    assert!(s.log().contains(&format!("--token $(cat {})", token_file.display())), "the server logs how to join:\n{}", s.log());

    // Refusals: a wrong secret (401), a token pinning another CA, a token pinning nothing.
    let (pin, _) = token.split_once("::").unwrap();
    refused(&s, &format!("{pin}::server:wrong-secret"), "refused the join token (401 Unauthorized)");
    refused(&s, &format!("K10{}::server:x", "0".repeat(64)), "is not the one the join token pins");
    refused(&s, "just-a-secret", "does not pin the cluster CA");

    let mut agent = Agent::start(&s, &token);
    node_ready(&s, &agent);
    let node: serde_json::Value = serde_json::from_str(&s.ok(&["get", "node", &agent.node.name, "-o", "json"])).unwrap();
    let pod_cidr = node["spec"]["podCIDR"].as_str().unwrap_or_default().to_string();
    let prefix = agent.node.cluster_cidr.rsplitn(3, '.').nth(2).unwrap().to_string(); // "10.N"
    assert!(pod_cidr.starts_with(&format!("{prefix}.")), "podCIDR {pod_cidr:?} from node IPAM of {}", agent.node.cluster_cidr);

    // The node's own key pairs and kubeconfig, private.
    let pki = agent.dir.path().join("agent/pki");
    for key in ["client.key", "serving.key"] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&agent.dir.path().join("agent/kubeconfig.yaml")), 0o600);
    let client_cert = std::fs::read_to_string(pki.join("client.crt")).unwrap();

    // A pod from an image imported into the agent's store.
    let tar = agent.dir.path().join("join.tar");
    std::fs::write(&tar, testimage::docker_save_tar("e2e.local/join:v1", &testimage::busybox_layer_tar())).unwrap();
    let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&tar).arg("--data-dir").arg(agent.dir.path()).output().unwrap();
    assert!(out.status.success(), "skiff image import: {}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["run", "joined", "--image=e2e.local/join:v1", "--image-pull-policy=Never", "--", "sh", "-c", "echo hello-from-the-joined-node; exec sleep 3600"]);
    let ready = s.kubectl(&["wait", "--for=condition=Ready", "pod/joined", "--timeout=120s"]);
    assert!(ready.ok(), "pod not Ready: {}\n{}\nagent log:\n{}", ready.stderr, s.ok(&["describe", "pod", "joined"]), agent.log());
    assert_eq!(s.ok(&["get", "pod", "joined", "-o", "jsonpath={.spec.nodeName}"]), agent.node.name);
    let ip = s.ok(&["get", "pod", "joined", "-o", "jsonpath={.status.podIP}"]);
    assert!(ip.starts_with(&format!("{prefix}.")), "pod IP {ip:?} outside {}", agent.node.cluster_cidr);

    // logs and exec travel API server -> agent streaming server.
    eventually(30, "the pod's log", || s.kubectl(&["logs", "joined"]).stdout.contains("hello-from-the-joined-node").then_some(()));
    assert_eq!(s.ok(&["exec", "joined", "--", "hostname"]), "joined");
    let out = s.kubectl(&["exec", "joined", "--", "sh", "-c", "echo out; exit 3"]);
    assert_eq!((out.status.code(), out.stdout.as_str()), (Some(3), "out"), "{}", out.stderr);

    // A restart reuses the certificates (no new join) and serves exec again.
    agent.stop();
    agent.spawn();
    eventually(60, "the restarted agent to serve exec", || (s.kubectl(&["exec", "joined", "--", "echo", "again"]).stdout == "again").then_some(()));
    assert!(agent.log().contains("reusing the node's certificates"), "agent log:\n{}", agent.log());
    assert_eq!(std::fs::read_to_string(pki.join("client.crt")).unwrap(), client_cert);

    s.ok(&["delete", "pod", "joined", "--timeout=60s"]);
    eventually(60, "the agent to remove the sandbox", || {
        let left = std::fs::read_dir(agent.dir.path().join("agent/sandboxes")).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    });
}

/// Static pods on a joined node run without the API server: with the
/// server down, a restarted agent still starts a newly added manifest's pod
/// (on the podCIDR it saved) and keeps the running one; once the server is
/// back, both show as mirror pods.
#[test]
fn a_joined_agent_runs_static_pods_while_the_server_is_down() {
    let s = Server::start_with(&["--cluster-cidr", &server_cluster_cidr()]);
    let token = std::fs::read_to_string(s.dir.path().join("server/token")).unwrap().trim().to_string();
    let manifests = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: e2e.local/join:v1\n    imagePullPolicy: Never\n    command: [sh, -c, 'echo hello-from-{name}; exec sleep 3600']\n"
        );
        std::fs::write(manifests.path().join(format!("{name}.yaml")), pod).unwrap();
    };
    write("first");
    let agent = Agent::start_with(&s, &token, &["--pod-manifest-path", manifests.path().to_str().unwrap()]);
    node_ready(&s, &agent);
    let tar = agent.dir.path().join("join.tar");
    std::fs::write(&tar, testimage::docker_save_tar("e2e.local/join:v1", &testimage::busybox_layer_tar())).unwrap();
    let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&tar).arg("--data-dir").arg(agent.dir.path()).output().unwrap();
    assert!(out.status.success(), "skiff image import: {}", String::from_utf8_lossy(&out.stderr));
    let first = format!("first-{}", agent.node.name);
    eventually(60, "the first static pod's mirror pod", || s.kubectl(&["get", "pod", &first]).ok().then_some(()));
    let ready = s.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{first}"), "--timeout=120s"]);
    assert!(ready.ok(), "{}\n{}\nagent log:\n{}", ready.stderr, s.ok(&["describe", "pod", &first]), agent.log());
    let first_id = s.ok(&["get", "pod", &first, "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);

    // The server goes away; the agent restarts and a second manifest appears.
    s.kill9();
    let mut agent = agent;
    agent.stop();
    write("second");
    agent.spawn();
    let second = format!("second-{}", agent.node.name);
    let logs = agent.dir.path().join("agent/logs");
    let second_ran = || {
        let dir = std::fs::read_dir(&logs).ok()?.flatten().find(|e| e.file_name().to_string_lossy().starts_with(&format!("default_{second}_")))?;
        std::fs::read_to_string(dir.path().join("c/0.log")).ok()?.contains("hello-from-second").then_some(())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while second_ran().is_none() {
        assert!(Instant::now() < deadline, "the second static pod did not run with the server down; agent log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(agent.log().contains("starting with the saved podCIDR"), "agent log:\n{}", agent.log());

    // The server is back: both are mirrored; the first kept its container.
    s.restart();
    for pod in [&first, &second] {
        eventually(60, "the mirror pod", || s.kubectl(&["get", "pod", pod]).ok().then_some(()));
        let ready = s.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), "--timeout=120s"]);
        assert!(ready.ok(), "{}\nagent log:\n{}", ready.stderr, agent.log());
    }
    assert_eq!(s.ok(&["get", "pod", &first, "-o", "jsonpath={.status.containerStatuses[0].containerID}"]), first_id);
    assert_eq!(s.ok(&["logs", &second]), "hello-from-second");
}
