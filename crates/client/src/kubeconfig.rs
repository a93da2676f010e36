//! A `kube::Client` from a kubeconfig: mutual TLS with rustls (or a bearer
//! token) over one HTTP/2 connection, reopened when it drops. kube is built
//! without its own TLS stack, so the connection is made here.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context, Result};
use base64::Engine;
use futures::future::BoxFuture;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::Body;
use rustls::pki_types::ServerName;

struct Target {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    /// `https://host:port`, prefixed to request paths (h2 wants absolute URIs).
    base: String,
    token: Option<String>,
    send: tokio::sync::Mutex<Option<SendRequest<Body>>>,
}

/// Builds a client for the current context's cluster and user (first ones
/// when there is no current context).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client> {
    Ok(from_kubeconfig_with_ca(path).await?.0)
}

/// Like [`from_kubeconfig`], also returning the cluster CA certificate (PEM).
pub async fn from_kubeconfig_with_ca(path: &Path) -> Result<(kube::Client, String)> {
    let (client, ca_pem, target) = build(path)?;
    target.sender().await?; // fail early when the server is unreachable
    Ok((client, ca_pem))
}

/// Like [`from_kubeconfig`], but connecting only with the first request:
/// for a node agent that must start while the API server is down.
pub fn from_kubeconfig_lazy(path: &Path) -> Result<kube::Client> {
    Ok(build(path)?.0)
}

fn build(path: &Path) -> Result<(kube::Client, String, Arc<Target>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let pick = |list: &str, name: Option<&str>| -> serde_yaml::Value {
        let items = doc[list].as_sequence().cloned().unwrap_or_default();
        name.and_then(|n| items.iter().find(|i| i["name"].as_str() == Some(n)).cloned())
            .or_else(|| items.first().cloned())
            .unwrap_or_default()
    };
    let ctx = pick("contexts", doc["current-context"].as_str());
    let cluster = pick("clusters", ctx["context"]["cluster"].as_str());
    let user = pick("users", ctx["context"]["user"].as_str());
    let namespace = ctx["context"]["namespace"].as_str().unwrap_or("default").to_string();
    let server = cluster["cluster"]["server"].as_str().context("kubeconfig: no cluster server")?.to_string();
    let b64 = |v: &serde_yaml::Value, what: &str| -> Result<Option<Vec<u8>>> {
        match v.as_str() {
            None => Ok(None),
            Some(s) => base64::engine::general_purpose::STANDARD.decode(s.trim()).map(Some).with_context(|| format!("kubeconfig: {what} is not base64")),
        }
    };
    let ca = b64(&cluster["cluster"]["certificate-authority-data"], "certificate-authority-data")?;
    let cert = b64(&user["user"]["client-certificate-data"], "client-certificate-data")?;
    let key = b64(&user["user"]["client-key-data"], "client-key-data")?;
    let token = user["user"]["token"].as_str().map(String::from);

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_deref().context("kubeconfig: no certificate-authority-data")?) {
        roots.add(c.context("CA certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots);
    let mut tls = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_slice()).collect::<Result<Vec<_>, _>>().context("client certificate")?;
            let key = rustls_pemfile::private_key(&mut key.as_slice())?.context("no private key in client-key-data")?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];

    let uri: http::Uri = server.parse().with_context(|| format!("server URL {server:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("server URL {server:?}: only https is supported");
    }
    let host = uri.host().context("server URL has no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let target = Arc::new(Target {
        tls: Arc::new(tls),
        host,
        port,
        base: server.trim_end_matches('/').to_string(),
        token,
        send: tokio::sync::Mutex::new(None),
    });
    let ca_pem = String::from_utf8_lossy(ca.as_deref().unwrap_or_default()).into_owned();
    Ok((kube::Client::new(H2 { target: target.clone() }, namespace), ca_pem, target))
}

impl Target {
    async fn sender(&self) -> Result<SendRequest<Body>> {
        let mut guard = self.send.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.context("TLS handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("{}:{} did not negotiate HTTP/2", self.host, self.port);
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("API connection closed: {e}");
            }
        });
        *guard = Some(send.clone());
        Ok(send)
    }
}

#[derive(Clone)]
struct H2 {
    target: Arc<Target>,
}

impl tower::Service<http::Request<Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = anyhow::Error;
    type Future = BoxFuture<'static, Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move {
            let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            *req.uri_mut() = format!("{}{}", target.base, path).parse()?;
            if let Some(t) = &target.token {
                req.headers_mut().insert(http::header::AUTHORIZATION, format!("Bearer {t}").parse()?);
            }
            let mut send = target.sender().await?;
            send.ready().await?;
            Ok(send.send_request(req).await?)
        })
    }
}
