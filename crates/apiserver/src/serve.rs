//! The HTTPS front end: a TLS accept loop that serves an axum router over
//! HTTP/1.1 and HTTP/2 (chosen by ALPN), with the caller's [`Identity`],
//! taken from the verified client certificate, in every request's
//! extensions.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After `shutdown` completes, how long open connections get to finish
/// their in-flight requests before they are dropped (watches never finish
/// by themselves).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who is calling, as upstream's user.Info: name, uid, groups and extra.
///
/// With a client certificate that chains to the cluster CA: `user` is the
/// subject's CN, `groups` its O values followed by `system:authenticated`.
/// Without one: `system:anonymous` in `system:unauthenticated`, until a
/// bearer token says otherwise (`authn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: String,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl Identity {
    pub const ANONYMOUS_USER: &'static str = "system:anonymous";

    pub fn anonymous() -> Identity {
        Identity {
            user: Self::ANONYMOUS_USER.to_string(),
            groups: vec!["system:unauthenticated".to_string()],
            uid: String::new(),
            extra: Default::default(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user == Self::ANONYMOUS_USER
    }

    /// The identity of an (already verified) client certificate in DER. A
    /// certificate without a CN authenticates no one, as upstream: anonymous.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow!("parsing the client certificate: {e}"))?;
        let subject = cert.subject();
        let user = match subject.iter_common_name().next() {
            Some(cn) => cn
                .as_str()
                .map_err(|e| anyhow!("client certificate CN: {e}"))?
                .to_string(),
            None => return Ok(Identity::anonymous()),
        };
        if user.is_empty() {
            return Ok(Identity::anonymous());
        }
        let mut groups = Vec::new();
        for o in subject.iter_organization() {
            let o = o
                .as_str()
                .map_err(|e| anyhow!("client certificate O: {e}"))?;
            if !groups.iter().any(|g| g == o) {
                groups.push(o.to_string());
            }
        }
        groups.push("system:authenticated".to_string());
        Ok(Identity { user, groups, uid: String::new(), extra: Default::default() })
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
///
/// Each connection runs in its own task: TLS handshake (bounded by a
/// timeout; failures are logged at debug and don't stop the loop), then
/// HTTP/2 when ALPN chose `h2`, else HTTP/1.1 (with upgrades, for
/// exec/attach/port-forward). There are no per-request timeouts, so watches
/// can stream for as long as they like. Every request carries the caller's
/// [`Identity`] and `ConnectInfo<SocketAddr>` in its extensions.
///
/// When `shutdown` completes the listener stops accepting, open connections
/// are asked to close gracefully and, after a short grace period, dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let builder = http_builder();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                conns.spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    builder.clone(),
                    app.clone(),
                    stop_rx.clone(),
                ));
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::debug!(
            open = conns.len(),
            "dropping connections still open after the grace period"
        );
        conns.shutdown().await;
    }
    Ok(())
}

fn http_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };

    let (_, session) = tls.get_ref();
    let identity = match session.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => match Identity::from_cert_der(cert) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "unreadable client certificate; closing");
                return;
            }
        },
        None => Identity::anonymous(),
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    let h1 = session.alpn_protocol() == Some(b"http/1.1");
    let builder = if h2 {
        builder.http2_only()
    } else if h1 {
        builder.http1_only()
    } else {
        builder // no ALPN: tell the versions apart by the connection preface
    };

    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let app = app.clone();
        req.extensions_mut().insert(identity.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });

    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use axum::routing::get;
    use axum::Extension;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::AsyncWriteExt;

    fn router() -> axum::Router {
        axum::Router::new()
            .route("/whoami", get(|Extension(id): Extension<Identity>| async move { id.user }))
            .route(
                "/groups",
                get(|Extension(id): Extension<Identity>| async move { id.groups.join(",") }),
            )
            .route(
                "/peer",
                get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.ip().to_string() }),
            )
            .route(
                "/version",
                get(|version: http::Version| async move {
                    // gitCommit carries the HTTP version, for the kubectl test.
                    let body = serde_json::json!({
                        "major": "1", "minor": "32", "gitVersion": "v1.32.0-skiff",
                        "gitCommit": format!("{version:?}"), "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
                        "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"
                    });
                    ([(http::header::CONTENT_TYPE, "application/json")], body.to_string())
                }),
            )
    }

    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<()>>,
    }

    async fn start(pki: &pki::Pki) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = pki::server_tls_config(pki).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, router(), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    impl Server {
        async fn stop(mut self) {
            self.stop.take().unwrap().send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    fn client_config(pki: &pki::Pki, with_cert: bool, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut pki.ca_cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = if with_cert {
            let chain = rustls_pemfile::certs(&mut pki.admin_cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut pki.admin_key_pem.as_bytes())
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        } else {
            b.with_no_client_auth()
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(cfg)
    }

    /// GET `path` over TLS (ALPN `alpn`, h2 or http/1.1), returning the
    /// negotiated protocol and the body.
    async fn get_path(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        server_name: &str,
        path: &str,
    ) -> Result<(String, String)> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        let alpn = String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or_default())
            .into_owned();
        let io = TokioIo::new(tls);
        let uri: hyper::Uri = format!("https://{server_name}:{}{path}", addr.port()).parse()?;
        let resp = if alpn == "h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
                    TokioExecutor::new(),
                    io,
                )
                .await?;
            tokio::spawn(conn);
            send.send_request(hyper::Request::get(uri).body(Empty::new())?)
                .await?
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header("host", server_name)
                .body(Empty::new())?;
            send.send_request(req).await?
        };
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((alpn, String::from_utf8(body.to_vec())?))
    }

    #[tokio::test]
    async fn tls_round_trip_with_and_without_client_cert() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = pki::ensure(tmp.path(), &["10.43.0.1".to_string()]).unwrap();
        let server = start(&pki).await;

        for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
            let want = String::from_utf8_lossy(alpn).into_owned();
            let admin = client_config(&pki, true, alpn);
            let anon = client_config(&pki, false, alpn);
            assert_eq!(
                get_path(server.addr, admin.clone(), "localhost", "/whoami")
                    .await
                    .unwrap(),
                (want.clone(), "system:admin".to_string())
            );
            assert_eq!(
                get_path(server.addr, admin.clone(), "127.0.0.1", "/groups")
                    .await
                    .unwrap()
                    .1,
                "system:masters,system:authenticated"
            );
            assert_eq!(
                get_path(
                    server.addr,
                    anon.clone(),
                    "kubernetes.default.svc",
                    "/whoami"
                )
                .await
                .unwrap(),
                (want.clone(), "system:anonymous".to_string())
            );
            assert_eq!(
                get_path(server.addr, anon.clone(), "localhost", "/groups")
                    .await
                    .unwrap()
                    .1,
                "system:unauthenticated"
            );
            assert_eq!(
                get_path(server.addr, anon, "localhost", "/peer")
                    .await
                    .unwrap()
                    .1,
                "127.0.0.1"
            );
        }

        // A client certificate from another CA is refused at the handshake...
        let other = tempfile::tempdir().unwrap();
        let other_pki = pki::ensure(other.path(), &[]).unwrap();
        let mut foreign = pki.clone();
        foreign.admin_cert_pem = other_pki.admin_cert_pem.clone();
        foreign.admin_key_pem = other_pki.admin_key_pem.clone();
        assert!(get_path(
            server.addr,
            client_config(&foreign, true, b"h2"),
            "localhost",
            "/whoami"
        )
        .await
        .is_err());
        // ...and so is a name the serving certificate doesn't carry.
        assert!(get_path(
            server.addr,
            client_config(&pki, false, b"h2"),
            "example.com",
            "/whoami"
        )
        .await
        .is_err());

        // Garbage and idle connections don't stop the loop.
        let mut junk = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let (_, user) = get_path(
            server.addr,
            client_config(&pki, true, b"h2"),
            "localhost",
            "/whoami",
        )
        .await
        .unwrap();
        assert_eq!(user, "system:admin");

        server.stop().await;
    }

    #[test]
    fn identity_from_certificate_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "team-a");
        // rcgen keeps one value per attribute type; the raw OID gives a second O.
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]), "team-b");
        dn.push(rcgen::DnType::CommonName, "jane");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            Identity::from_cert_der(cert.der()).unwrap(),
            Identity {
                user: "jane".into(),
                groups: vec![
                    "team-a".into(),
                    "team-b".into(),
                    "system:authenticated".into()
                ],
                uid: String::new(),
                extra: Default::default(),
            }
        );

        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "team-a");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            Identity::from_cert_der(cert.der()).unwrap(),
            Identity::anonymous()
        );
        assert!(Identity::anonymous().is_anonymous());
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_streams_forever() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = pki::ensure(tmp.path(), &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/watch",
            get(|| async {
                let stream = futures::stream::pending::<Result<bytes::Bytes, Infallible>>();
                axum::body::Body::from_stream(stream)
            }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            pki::server_tls_config(&pki).unwrap(),
            app,
            async {
                let _ = rx.await;
            },
        ));
        // Open a never-ending response.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(&pki, true, b"h2"))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let uri: hyper::Uri = format!("https://localhost:{}/watch", addr.port())
            .parse()
            .unwrap();
        let resp = send
            .send_request(hyper::Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);

        tx.send(()).unwrap();
        let started = std::time::Instant::now();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(5), task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(2));
        // The listener is closed.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn kubectl_version() {
        let kubectl = std::path::Path::new("/usr/bin/kubectl");
        if !kubectl.exists() {
            eprintln!("skipping: no /usr/bin/kubectl");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pki = pki::ensure(&tmp.path().join("server/tls"), &["10.43.0.1".to_string()]).unwrap();
        let server = start(&pki).await;
        let kubeconfig = tmp.path().join("kube/config.yaml");
        pki::write_kubeconfig(
            &kubeconfig,
            &pki::kubeconfig(&pki, &format!("https://127.0.0.1:{}", server.addr.port())),
        )
        .unwrap();

        let out = tokio::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["version", "-o", "json", "--request-timeout=20s"])
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl failed: {stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            v["serverVersion"]["gitVersion"], "v1.32.0-skiff",
            "{stdout}"
        );
        assert_eq!(v["serverVersion"]["minor"], "32");
        assert_eq!(
            v["serverVersion"]["gitCommit"], "HTTP/2.0",
            "kubectl should negotiate h2"
        );

        // Same through the name "localhost" (checks the DNS SAN, too).
        pki::write_kubeconfig(
            &kubeconfig,
            &pki::kubeconfig(&pki, &format!("https://localhost:{}", server.addr.port())),
        )
        .unwrap();
        let out = tokio::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["version", "-o", "json", "--request-timeout=20s"])
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.stop().await;
    }
}
