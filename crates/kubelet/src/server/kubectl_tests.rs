//! The real kubectl against an in-process API server that proxies to this
//! agent server (whose "containers" are host processes, see `tests.rs`):
//! logs, exec with stdin and exit codes, cp, and port-forward.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write as _;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::tests::{cri_line, echo_server, ProcessRuntime};
use super::*;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    rt: Arc<ProcessRuntime>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
        self.rt.kill_all();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let config = apiserver::Config {
            data_dir: dir.path().to_path_buf(),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: free_port(),
            kubeconfig: kubeconfig.clone(),
            service_cidr: apiserver::Cidr::parse("10.43.0.0/16").unwrap(),
            node_ports: (30000, 32767),
        event_ttl: std::time::Duration::from_secs(3600),
        cluster_dns: None,
        authn: Default::default(),
        };
        let server = apiserver::start(config, Arc::new(store::MemoryStore::new())).await.unwrap();
        let (cert, key) = server.pki.issue_node_serving_cert("node-1", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        let rt = Arc::new(ProcessRuntime::new(dir.path().to_path_buf()));
        let agent = ServerConfig::new(cert, key, server.ca_pem.clone(), rt.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_port = listener.local_addr().unwrap().port();
        let tasks = vec![
            tokio::spawn(async move {
                let _ = server.serve(std::future::pending()).await;
            }),
            tokio::spawn(async move {
                let _ = serve_on(listener, agent).await;
            }),
        ];
        let c = Cluster { dir, kubeconfig, rt, tasks };
        c.apply(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}}"#).await;
        let status = format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{agent_port}}}}}}}}}"#
        );
        c.kubectl(&["patch", "node", "node-1", "--subresource=status", "--type=merge", "-p", &status], None).await;
        c.apply(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default"},
               "spec":{"nodeName":"node-1","containers":[{"name":"app","image":"busybox"},{"name":"idle","image":"busybox"}]}}"#,
        )
        .await;
        // kubectl port-forward wants a Running pod, as the agent would report it.
        c.kubectl(&["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#], None).await;
        c
    }

    async fn apply(&self, json: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(json.as_bytes())).await;
    }

    /// Runs kubectl, asserting success; returns stdout.
    async fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run(args, stdin).await;
        assert!(out.status.success(), "kubectl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args).env_remove("KUBECONFIG").kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let mut child = self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input).await.unwrap();
        }
        drop(pipe);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("kubectl finished").unwrap()
    }
}

#[tokio::test]
async fn kubectl_logs_exec_cp_and_port_forward_through_the_api_server() {
    if !std::path::Path::new(KUBECTL).exists() {
        eprintln!("skipping: no {KUBECTL}");
        return;
    }
    let c = Cluster::start().await;
    std::fs::write(c.dir.path().join("app-1.log"), [cri_line("a"), cri_line("b"), cri_line("c")].concat()).unwrap();
    std::fs::write(c.dir.path().join("app-0.log"), cri_line("before the restart")).unwrap();

    // logs
    assert_eq!(c.kubectl(&["logs", "web", "-c", "app"], None).await, "a\nb\nc\n");
    assert_eq!(c.kubectl(&["logs", "web", "-c", "app", "--tail=1", "--timestamps"], None).await, "2024-05-01T10:00:00.000000001Z c\n");
    assert_eq!(c.kubectl(&["logs", "web", "-c", "app", "--previous"], None).await, "before the restart\n");
    let out = c.run(&["logs", "web", "-c", "idle", "--previous"], None).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("previous terminated container \"idle\" in pod \"web\" not found"), "{out:?}");
    let out = c.run(&["logs", "nope"], None).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("pods \"nope\" not found"), "{out:?}");

    // exec: output, stderr, stdin and the exit code
    let out = c.run(&["exec", "web", "-c", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"), "{out:?}");
    assert_eq!(c.kubectl(&["exec", "-i", "web", "-c", "app", "--", "cat"], Some(b"piped in\n")).await, "piped in\n");

    // cp both ways (tar through exec)
    let src = c.dir.path().join("src.txt");
    std::fs::write(&src, "copied\n").unwrap();
    let remote_dir = c.dir.path().join("remote");
    std::fs::create_dir(&remote_dir).unwrap();
    let remote = format!("web:{}", remote_dir.join("dst.txt").display());
    c.kubectl(&["cp", "-c", "app", src.to_str().unwrap(), &remote], None).await;
    assert_eq!(std::fs::read_to_string(remote_dir.join("dst.txt")).unwrap(), "copied\n");
    let back = c.dir.path().join("back.txt");
    c.kubectl(&["cp", "-c", "app", &remote, back.to_str().unwrap()], None).await;
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied\n");

    // logs -f streams new lines promptly
    let mut follow = c.command(&["logs", "-f", "web", "-c", "app"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    for want in ["a", "b", "c"] {
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(want));
    }
    std::fs::OpenOptions::new().append(true).open(c.dir.path().join("app-1.log")).unwrap().write_all(cri_line("live").as_bytes()).unwrap();
    let live = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.expect("followed line arrives promptly");
    assert_eq!(live.unwrap().as_deref(), Some("live"));
    follow.kill().await.unwrap();

    // port-forward: SPDY tunneled in WebSocket (kubectl's default), then plain SPDY
    let (port, echo) = echo_server().await;
    port_forward(&c, port, true).await;
    port_forward(&c, port, false).await;
    echo.abort();
}

async fn port_forward(c: &Cluster, port: u16, websocket: bool) {
    let mut cmd = c.command(&["port-forward", "pod/web", &format!(":{port}")]);
    cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websocket.to_string());
    let mut pf = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(pf.stdout.take().unwrap()).lines();
    let Some(first) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("port-forward starts").unwrap() else {
        let mut err = String::new();
        pf.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
        panic!("kubectl port-forward ended: {err}");
    };
    let local: u16 = first.split("127.0.0.1:").nth(1).and_then(|s| s.split(' ').next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{first}"));
    for msg in ["hello", "again"] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        s.write_all(msg.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut got)).await.expect("echo in time").unwrap();
        assert_eq!(got, msg.to_uppercase());
    }
    pf.kill().await.unwrap();
}
