//! The agent's streaming server end to end over real TLS: a runtime whose
//! "containers" are plain host processes (real `sh` children with pipes)
//! stands in for the container runtime; kubectl's protocols are spoken by
//! tungstenite and by this module's own SPDY client.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use async_trait::async_trait;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use runtime::cri::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{self, Frame};
use super::*;

/// Host processes posing as one pod `default/web` with containers `app`
/// (running, attempt 1; attempt 0 exited) and `idle` (exited).
pub(super) struct ProcessRuntime {
    pub(super) log_dir: PathBuf,
    pub(super) execs: Mutex<Vec<u32>>,
}

impl ProcessRuntime {
    pub(super) fn new(log_dir: PathBuf) -> Self {
        ProcessRuntime { log_dir, execs: Mutex::new(Vec::new()) }
    }

    /// Kills every process an exec started (by PID).
    pub(super) fn kill_all(&self) {
        for pid in self.execs.lock().unwrap().drain(..) {
            // SAFETY: signalling a child this test spawned, by PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn container(id: &str, name: &str, attempt: u32, state: ContainerState, log: PathBuf) -> ContainerStatus {
    ContainerStatus {
        id: id.into(),
        sandbox_id: "sb1".into(),
        name: name.into(),
        attempt,
        state,
        created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(attempt)),
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
        message: None,
        image: "busybox".into(),
        image_id: String::new(),
        image_ref: String::new(),
        log_path: log,
        pid: None,
    }
}

fn file(fd: impl Into<OwnedFd>) -> tokio::fs::File {
    tokio::fs::File::from_std(std::fs::File::from(fd.into()))
}

#[async_trait]
impl RuntimeService for ProcessRuntime {
    async fn run_pod_sandbox(&self, _: &PodSandboxConfig) -> Result<String> {
        bail!("not in this test")
    }
    async fn stop_pod_sandbox(&self, _: &str) -> Result<()> {
        bail!("not in this test")
    }
    async fn remove_pod_sandbox(&self, _: &str) -> Result<()> {
        bail!("not in this test")
    }
    async fn pod_sandbox_status(&self, _: &str) -> Result<PodSandboxStatus> {
        bail!("not in this test")
    }
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        Ok(vec![PodSandboxStatus {
            id: "sb1".into(),
            uid: "uid1".into(),
            name: "web".into(),
            namespace: "default".into(),
            state: SandboxState::Ready,
            netns_path: None,
            created_at: SystemTime::now(),
        }])
    }
    async fn set_pod_ip(&self, _: &str, _: &str) -> Result<()> {
        bail!("not in this test")
    }
    async fn create_container(&self, _: &str, _: &ContainerConfig) -> Result<String> {
        bail!("not in this test")
    }
    async fn start_container(&self, _: &str) -> Result<()> {
        bail!("not in this test")
    }
    async fn stop_container(&self, _: &str, _: Duration) -> Result<()> {
        bail!("not in this test")
    }
    async fn remove_container(&self, _: &str) -> Result<()> {
        bail!("not in this test")
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let all = self.list_containers(None).await?;
        all.into_iter().find(|c| c.id == id).ok_or_else(|| anyhow::anyhow!("no container {id}"))
    }
    async fn list_container_stats(&self) -> Result<Vec<ContainerStats>> {
        let started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timestamp = started_at + Duration::from_secs(60);
        Ok(vec![ContainerStats { id: "app-1".into(), sandbox_id: "sb1".into(), name: "app".into(), started_at, timestamp, cpu_usage_ns: 2_500_000_000, memory_working_set_bytes: 1 << 20 }])
    }
    async fn list_containers(&self, _: Option<&str>) -> Result<Vec<ContainerStatus>> {
        Ok(vec![
            container("app-0", "app", 0, ContainerState::Exited, self.log_dir.join("app-0.log")),
            container("app-1", "app", 1, ContainerState::Running, self.log_dir.join("app-1.log")),
            container("idle-0", "idle", 0, ContainerState::Exited, self.log_dir.join("idle-0.log")),
        ])
    }
    async fn exec_sync(&self, _: &str, _: &[String], _: Duration) -> Result<ExecResult> {
        bail!("not in this test")
    }
    async fn exec(&self, _: &str, cmd: &[String], _tty: bool, _stdin: bool) -> Result<ExecProcess> {
        use std::process::Stdio;
        let mut child = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        self.execs.lock().unwrap().push(child.id());
        let (stdin, stdout, stderr) = (child.stdin.take().map(file), child.stdout.take().map(file), child.stderr.take().map(file));
        let (tx, exit) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = tx.send(code);
        });
        Ok(ExecProcess { stdin, stdout, stderr, pty: None, exit })
    }
    async fn attach(&self, _: &str, _: bool) -> Result<ExecProcess> {
        bail!("not in this test")
    }
}

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        (p.signed_by(&key, &ca, &ca_key).unwrap().pem(), key.serialize_pem())
    };
    Pki {
        server: leaf("node", vec!["127.0.0.1".into()]),
        client: leaf(API_SERVER_CLIENT, vec![]),
        stranger: leaf("system:anonymous-ish", vec![]),
        ca: ca.pem(),
    }
}

struct Harness {
    addr: SocketAddr,
    pki: Pki,
    dir: tempfile::TempDir,
    rt: Arc<ProcessRuntime>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
        self.rt.kill_all();
    }
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let rt = Arc::new(ProcessRuntime::new(dir.path().to_path_buf()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig::new(pki.server.0.clone(), pki.server.1.clone(), pki.ca.clone(), rt.clone());
    let task = tokio::spawn(serve_on(listener, config));
    Harness { addr, pki, dir, rt, task }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl Harness {
    async fn connect_as(&self, who: Option<&(String, String)>) -> Tls {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.pki.ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match who {
            Some((cert, key)) => {
                let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
                b.with_client_auth_cert(chain, rustls_pemfile::private_key(&mut key.as_bytes()).unwrap().unwrap()).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap()
    }

    async fn connect(&self) -> Tls {
        self.connect_as(Some(&self.pki.client)).await
    }

    /// GET `path`, returning status and body.
    async fn get_as(&self, who: Option<&(String, String)>, path: &str) -> (u16, String) {
        let io = hyper_util::rt::TokioIo::new(self.connect_as(who).await);
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path).header("host", "127.0.0.1").body(Empty::new()).unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.get_as(Some(&self.pki.client), path).await
    }

    async fn websocket(&self, path: &str, protocol: &str) -> tokio_tungstenite::WebSocketStream<Tls> {
        let mut req = format!("wss://127.0.0.1:{}{path}", self.addr.port()).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::client_async(req, self.connect().await).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], protocol.split(',').next().unwrap().trim());
        ws
    }
}

pub(super) fn cri_line(text: &str) -> String {
    format!("2024-05-01T10:00:00.000000001Z stdout F {text}\n")
}

#[tokio::test]
async fn only_the_api_server_is_let_in() {
    let h = start().await;
    assert_eq!(h.get_as(None, "/healthz").await, (401, "Unauthorized".into()));
    let (code, body) = h.get_as(Some(&h.pki.stranger), "/healthz").await;
    assert_eq!(code, 403);
    assert!(body.contains("user=system:anonymous-ish"), "{body}");
    assert_eq!(h.get("/healthz").await, (200, "ok".into()));
    assert_eq!(h.get("/nope").await.0, 404);
}

#[tokio::test]
async fn resource_metrics_and_stats_summary_name_each_pods_containers() {
    let h = start().await;
    let (status, text) = h.get("/metrics/resource").await;
    assert_eq!(status, 200);
    assert!(text.contains(r#"container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 2.5 1700000060000"#), "{text}");
    assert!(text.contains(r#"pod_memory_working_set_bytes{namespace="default",pod="web"} 1048576 1700000060000"#), "{text}");
    assert!(text.lines().any(|l| l.starts_with("node_cpu_usage_seconds_total ")), "{text}");
    let (status, summary) = h.get("/stats/summary").await;
    assert_eq!(status, 200);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["pods"][0]["podRef"], serde_json::json!({"name": "web", "namespace": "default", "uid": "uid1"}));
    assert_eq!(summary["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"], 2_500_000_000u64);
    assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn container_logs_current_previous_and_errors() {
    let h = start().await;
    std::fs::write(h.dir.path().join("app-1.log"), [cri_line("a"), cri_line("b"), cri_line("c")].concat()).unwrap();
    std::fs::write(h.dir.path().join("app-0.log"), cri_line("crashed")).unwrap();
    assert_eq!(h.get("/containerLogs/default/web/app").await, (200, "a\nb\nc\n".into()));
    assert_eq!(h.get("/containerLogs/default/web/app?tailLines=1&timestamps=true").await, (200, "2024-05-01T10:00:00.000000001Z c\n".into()));
    assert_eq!(h.get("/containerLogs/default/web/app?previous=true").await, (200, "crashed\n".into()));
    assert_eq!(
        h.get("/containerLogs/default/web/idle?previous=true").await,
        (400, "previous terminated container \"idle\" in pod \"web\" not found".into())
    );
    assert_eq!(h.get("/containerLogs/default/web/db").await, (400, "container \"db\" in pod \"web\" is waiting to start: ContainerCreating".into()));
    assert_eq!(h.get("/containerLogs/other/web/app").await.0, 404);
    assert_eq!(h.get("/containerLogs/default/web/app?tailLines=x").await.0, 400);
}

#[tokio::test]
async fn follow_streams_lines_as_they_are_written() {
    let h = start().await;
    let log = h.dir.path().join("app-1.log");
    std::fs::write(&log, cri_line("first")).unwrap();
    let io = hyper_util::rt::TokioIo::new(h.connect().await);
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/containerLogs/default/web/app?follow=true").header("host", "x").body(Empty::new()).unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    assert_eq!(next_chunk(&mut body).await, "first\n");
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(cri_line("second").as_bytes()).unwrap();
    assert_eq!(next_chunk(&mut body).await, "second\n");
}

async fn next_chunk(body: &mut hyper::body::Incoming) -> bytes::Bytes {
    tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("prompt").unwrap().unwrap().into_data().unwrap()
}

/// Reads channel messages until the server closes, returning (stdout, stderr, error-channel text).
async fn drain(ws: &mut tokio_tungstenite::WebSocketStream<Tls>) -> (String, String, String) {
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("session ends") {
        match msg.unwrap() {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                2 => err.extend_from_slice(&b[1..]),
                3 => status.extend_from_slice(&b[1..]),
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    let s = |v: Vec<u8>| String::from_utf8(v).unwrap();
    (s(out), s(err), s(status))
}

#[tokio::test]
async fn exec_over_websocket_v5_with_stdin_close_and_exit_code() {
    let h = start().await;
    let cmd = "command=sh&command=-c&command=cat%3B%20echo%20oops%20%3E%262%3B%20exit%203";
    let mut ws = h.websocket(&format!("/exec/default/web/app?{cmd}&stdin=true&stdout=true&stderr=true"), "v5.channel.k8s.io, v4.channel.k8s.io").await;
    ws.send(Message::Binary(b"\x00hello ".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(b"\x00world\n".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let (out, err, status) = drain(&mut ws).await;
    assert_eq!(out, "hello world\n");
    assert_eq!(err, "oops\n");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_over_websocket_v4_success_and_refusals() {
    let h = start().await;
    let mut ws = h.websocket("/exec/default/web/app?command=echo&command=hi&stdout=1", "v4.channel.k8s.io").await;
    let (out, _, status) = drain(&mut ws).await;
    assert_eq!(out, "hi\n");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&status).unwrap()["status"], "Success");
    // Not running, no streams, no command, no upgrade.
    let (code, body) = h.get("/exec/default/web/app?command=true").await;
    assert_eq!((code, body.as_str()), (400, "you must specify at least 1 of stdin, stdout, stderr"));
    assert_eq!(h.get("/exec/default/web/app?stdout=1").await.0, 400);
    assert!(h.get("/exec/default/web/app?command=true&stdout=1").await.1.contains("WebSocket"));
}

/// A SPDY port-forward client, enough for tests: one error and one data stream per request.
struct SpdyClient<IO> {
    io: IO,
    enc: spdy::Encoder,
    dec: spdy::Decoder,
    buf: BytesMut,
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> SpdyClient<IO> {
    fn new(io: IO) -> Self {
        SpdyClient { io, enc: Default::default(), dec: Default::default(), buf: BytesMut::new() }
    }
    async fn send(&mut self, f: Frame) {
        let b = self.enc.encode(&f).unwrap();
        self.io.write_all(&b).await.unwrap();
        self.io.flush().await.unwrap();
    }
    async fn recv(&mut self) -> Frame {
        let f = spdy::read_frame(&mut self.io, &mut self.dec, &mut self.buf);
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("frame in time").unwrap().expect("not closed")
    }
    async fn open(&mut self, id: u32, kind: &str, port: u16, request: &str) {
        let headers = vec![("streamtype".into(), kind.into()), ("port".into(), port.to_string()), ("requestid".into(), request.into())];
        self.send(Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, fin: false, unidirectional: false, headers }).await;
    }
    /// Data received on `stream` until its FIN, ignoring other frames (replies, other streams).
    async fn read_stream(&mut self, stream: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if let Frame::Data { stream_id, fin, data } = self.recv().await {
                if stream_id == stream {
                    out.extend_from_slice(&data);
                    if fin {
                        return out;
                    }
                }
            }
        }
    }
}

/// An echo server on 127.0.0.1 that upper-cases what it reads; closes after the client half-closes.
pub(super) async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let _ = s.write_all(&buf.to_ascii_uppercase()).await;
            });
        }
    });
    (port, task)
}

async fn port_forward_flow<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(c: &mut SpdyClient<IO>, port: u16) {
    c.send(Frame::Ping(1)).await;
    assert_eq!(c.recv().await, Frame::Ping(1));
    c.open(1, "error", port, "0").await;
    c.open(3, "data", port, "0").await;
    c.send(Frame::Data { stream_id: 3, fin: false, data: b"hello ".to_vec() }).await;
    c.send(Frame::Data { stream_id: 3, fin: true, data: b"pod".to_vec() }).await;
    assert_eq!(c.read_stream(3).await, b"HELLO POD");
    assert_eq!(c.read_stream(1).await, b"", "no error");
    // A closed port: the error stream says so.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    c.open(5, "error", closed_port, "1").await;
    c.open(7, "data", closed_port, "1").await;
    let err = String::from_utf8(c.read_stream(5).await).unwrap();
    assert!(err.starts_with(&format!("error forwarding port {closed_port} to pod default/web")), "{err}");
}

#[tokio::test]
async fn port_forward_over_plain_spdy_upgrade() {
    let h = start().await;
    let (port, echo) = echo_server().await;
    let mut tls = h.connect().await;
    let req = "POST /portForward/default/web HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tls.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-stream-protocol-version: portforward.k8s.io"), "{head}");
    port_forward_flow(&mut SpdyClient::new(tls), port).await;
    echo.abort();
}

#[tokio::test]
async fn port_forward_tunneled_in_websocket() {
    let h = start().await;
    let (port, echo) = echo_server().await;
    let ws = h.websocket("/portForward/default/web", "SPDY/3.1+portforward.k8s.io").await;
    // The client side of the tunnel: SPDY bytes in binary messages, split arbitrarily.
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let up = async move {
            let mut buf = [0u8; 5];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                sink.send(Message::Binary(buf[..n].to_vec().into())).await.unwrap();
            }
        };
        let down = async move {
            while let Some(Ok(Message::Binary(b))) = source.next().await {
                wr.write_all(&b).await.unwrap();
            }
        };
        tokio::join!(up, down);
    });
    port_forward_flow(&mut SpdyClient::new(ours), port).await;
    echo.abort();
}

#[tokio::test]
async fn port_forward_refuses_other_upgrades() {
    let h = start().await;
    let (code, body) = h.get("/portForward/default/web").await;
    assert_eq!(code, 400);
    assert!(body.contains("SPDY/3.1"), "{body}");
    assert_eq!(h.get("/portForward/default/nope").await.0, 404);
}


#[tokio::test]
async fn exec_reads_stdin_from_text_messages_too() {
    // The Python client sends a str written to stdin as a text message.
    let h = start().await;
    let mut ws = h.websocket("/exec/default/web/app?command=head&command=-n1&stdin=true&stdout=true", "v4.channel.k8s.io").await;
    ws.send(Message::Text("\u{0}typed\n".into())).await.unwrap();
    let (out, _, status) = drain(&mut ws).await;
    assert_eq!(out, "typed\n");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&status).unwrap()["status"], "Success");
}

/// A server on 127.0.0.1 that answers the first line it reads upper-cased, then closes.
async fn line_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                let mut line = String::new();
                let _ = tokio::io::AsyncBufReadExt::read_line(&mut s, &mut line).await;
                let _ = s.get_mut().write_all(line.to_ascii_uppercase().as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn port_forward_over_plain_websocket_channels() {
    let h = start().await;
    let (port, server) = line_server().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let path = format!("/portForward/default/web?port={port}&port={closed_port}");
    let mut ws = h.websocket(&path, "v4.channel.k8s.io").await;
    // Each channel first says its port: data 2i, error 2i+1.
    let mut firsts = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Binary(b) => firsts.push(b.to_vec()),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    let [p0, p1] = port.to_le_bytes();
    let [c0, c1] = closed_port.to_le_bytes();
    assert_eq!(firsts, [vec![0, p0, p1], vec![1, p0, p1], vec![2, c0, c1], vec![3, c0, c1]]);
    ws.send(Message::Binary(b"\x00hello pod\n".to_vec().into())).await.unwrap();
    let (mut data, mut error) = (Vec::new(), Vec::new());
    // The session closes once both ports' connections are over.
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("session ends") {
        match msg.unwrap() {
            Message::Binary(b) if b.first() == Some(&0) => data.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.first() == Some(&3) => error.extend_from_slice(&b[1..]),
            Message::Binary(b) => panic!("unexpected message {b:?}"),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(data, b"HELLO POD\n");
    let error = String::from_utf8(error).unwrap();
    assert!(error.starts_with(&format!("error forwarding port {closed_port} to pod default/web")), "{error}");
    server.abort();
}
