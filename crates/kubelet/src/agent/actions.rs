//! The actions probes and lifecycle hooks run against a container: exec
//! through the runtime, HTTP GET (plain or TLS without verification, as
//! kubelet's prober) and TCP connect. Failures carry upstream's messages.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use runtime::cri::RuntimeService;

/// Upstream caps probe output it keeps at 10 KiB.
const MAX_OUTPUT: usize = 10 * 1024;
const USER_AGENT: &str = "kube-probe/1.33";

/// A port as written (number or a named container port).
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(*n as u16),
        IntOrString::Int(n) => Err(format!("invalid port number: {n}")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(s.as_str())).map(|p| p.container_port as u16).ok_or_else(|| format!("couldn't find port: {s} in {}", c.name))
        }
    }
}

/// Runs `cmd` in the container; success is exit code 0. The message is the command's output.
pub async fn exec(runtime: &Arc<dyn RuntimeService>, container_id: &str, cmd: &[String], timeout: Duration) -> Result<String, String> {
    let run = runtime.exec_sync(container_id, cmd, timeout);
    match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
        Err(_) => Err(format!("command {:?} timed out", cmd.join(" "))),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Ok(Ok(r)) => {
            let mut out = r.stdout;
            out.extend_from_slice(&r.stderr);
            out.truncate(MAX_OUTPUT);
            let text = String::from_utf8_lossy(&out).into_owned();
            if r.exit_code == 0 {
                Ok(text)
            } else if text.is_empty() {
                Err(format!("command {:?} exited with {}", cmd.join(" "), r.exit_code))
            } else {
                Err(text)
            }
        }
    }
}

/// TCP connect to host:port.
pub async fn tcp(action: &TCPSocketAction, c: &Container, pod_ip: Option<IpAddr>, timeout: Duration) -> Result<String, String> {
    let port = resolve_port(&action.port, c)?;
    let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.parse::<IpAddr>().map_err(|_| format!("invalid host {h:?}"))?,
        None => pod_ip.ok_or("the pod has no IP yet")?,
    };
    let addr = SocketAddr::new(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_reason(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// HTTP GET; a status in 200..400 is success.
pub async fn http_get(action: &HTTPGetAction, c: &Container, pod_ip: Option<IpAddr>, timeout: Duration) -> Result<String, String> {
    let port = resolve_port(&action.port, c)?;
    let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.to_string(),
        None => pod_ip.ok_or("the pod has no IP yet")?.to_string(),
    };
    let scheme = action.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!("{scheme}://{host}:{port}{path}");
    let fut = get(&scheme, &host, port, &path, action, &url);
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(format!("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
        Ok(Err(e)) => Err(e),
        Ok(Ok((code, body))) => {
            if (200..400).contains(&code) {
                Ok(body)
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
    }
}

async fn get(scheme: &str, host: &str, port: u16, path: &str, action: &HTTPGetAction, url: &str) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: connect: {}", io_reason(&e)))?;
    let mut req = http::Request::get(path).header("User-Agent", USER_AGENT).header("Accept", "*/*");
    let mut has_host = false;
    for h in action.http_headers.iter().flatten() {
        has_host |= h.name.eq_ignore_ascii_case("host");
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    if !has_host {
        req = req.header("Host", format!("{host}:{port}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let fail = |e: &dyn std::fmt::Display| format!("Get \"{url}\": {e}");
    let (code, body) = if scheme == "https" {
        let tls = tokio_rustls::TlsConnector::from(insecure_tls());
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| fail(&e))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| fail(&e))?;
        send(TokioIo::new(stream), req).await.map_err(|e| fail(&e))?
    } else {
        send(TokioIo::new(tcp), req).await.map_err(|e| fail(&e))?
    };
    Ok((code, body))
}

async fn send<T>(io: T, req: http::Request<Empty<Bytes>>) -> Result<(u16, String), hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let code = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while out.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    conn.abort();
    out.truncate(MAX_OUTPUT);
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

/// Probes do not verify serving certificates (as upstream's prober).
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}]})).unwrap()
    }

    #[test]
    fn ports_by_number_and_name() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(resolve_port(&IntOrString::String("9090".into()), &c), Ok(9090));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /healthz ") && req.contains("x-probe: yes") { "200 OK" } else { "503 Service Unavailable" };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").as_bytes()).await;
            }
        });
        let c = container();
        let ip = Some("127.0.0.1".parse().unwrap());
        let action: HTTPGetAction = serde_json::from_value(json!({"port": port, "path": "healthz", "httpHeaders": [{"name": "x-probe", "value": "yes"}]})).unwrap();
        assert_eq!(http_get(&action, &c, ip, Duration::from_secs(2)).await, Ok("ok".into()));
        let bad: HTTPGetAction = serde_json::from_value(json!({"port": port, "path": "/other"})).unwrap();
        assert_eq!(http_get(&bad, &c, ip, Duration::from_secs(2)).await, Err("HTTP probe failed with statuscode: 503".into()));
        server.await.unwrap();
        // Nothing listens any more.
        let t: TCPSocketAction = serde_json::from_value(json!({"port": port})).unwrap();
        assert_eq!(tcp(&t, &c, ip, Duration::from_secs(2)).await, Err(format!("dial tcp 127.0.0.1:{port}: connect: connection refused")));
        let err = http_get(&action, &c, ip, Duration::from_secs(2)).await.unwrap_err();
        assert!(err.starts_with(&format!("Get \"http://127.0.0.1:{port}/healthz\": dial tcp")), "{err}");
    }
}
