//! A minimal Kubernetes API client for the benchmark: kubeconfig parsing,
//! mutual TLS with rustls, and one HTTP/2 connection per `Client` (requests
//! are multiplexed as streams on it, like client-go does).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

/// What the benchmark needs from a kubeconfig: the server URL and the PEM
/// material of its first cluster and first user.
pub struct Kubeconfig {
    pub server: String,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Kubeconfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let field = |v: &serde_yaml::Value, keys: &[&str]| -> Result<String> {
            let mut cur = v;
            for k in keys {
                cur = &cur[*k];
            }
            cur.as_str().map(str::to_string).with_context(|| format!("{}: missing {}", path.display(), keys.join(".")))
        };
        let pem = |keys: &[&str], v: &serde_yaml::Value| -> Result<Vec<u8>> {
            let b64 = field(v, keys)?;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .with_context(|| format!("{}: {} is not base64", path.display(), keys.join(".")))
        };
        let cluster = &doc["clusters"][0];
        let user = &doc["users"][0];
        Ok(Kubeconfig {
            server: field(cluster, &["cluster", "server"])?,
            ca_pem: pem(&["cluster", "certificate-authority-data"], cluster)?,
            cert_pem: pem(&["user", "client-certificate-data"], user)?,
            key_pem: pem(&["user", "client-key-data"], user)?,
        })
    }

    /// A rustls config trusting only the cluster CA and presenting the
    /// kubeconfig's client certificate; ALPN offers only h2.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.context("CA certificate")?)?;
        }
        let chain = rustls_pemfile::certs(&mut self.cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .context("client certificate")?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_slice())
            .context("client key")?
            .context("no private key in client-key-data")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// One HTTP/2 connection to the API server. Cloning shares the connection;
/// `reconnect` opens a new one.
#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    /// `https://host:port`, prefixed to request paths (h2 wants absolute URIs).
    base: String,
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(kc: &Kubeconfig) -> Result<Client> {
        let uri: hyper::Uri = kc.server.parse().with_context(|| format!("server URL {:?}", kc.server))?;
        if uri.scheme_str() != Some("https") {
            bail!("server URL {:?}: only https is supported", kc.server);
        }
        let host = uri.host().context("server URL has no host")?;
        // IPv6 literals come bracketed from the URI; DNS and rustls want them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let base = kc.server.trim_end_matches('/').to_string();
        Self::open(kc.tls_config()?, host, port, base).await
    }

    /// A second, independent connection with the same settings.
    pub async fn reconnect(&self) -> Result<Client> {
        Self::open(self.tls.clone(), self.host.clone(), self.port, self.base.clone()).await
    }

    async fn open(tls: Arc<rustls::ClientConfig>, host: String, port: u16, base: String) -> Result<Client> {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.clone())?;
        let tls_stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}:{port}"))?;
        if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("{host}:{port} did not negotiate HTTP/2 (ALPN h2)");
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls_stream))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("bench connection closed: {e}");
            }
        });
        Ok(Client { tls, host, port, base, send })
    }

    /// Sends a request and returns the response with its body unread (for watches).
    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Response<Incoming>> {
        let mut req = Request::builder().method(method).uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body))?;
        let mut send = self.send.clone();
        Ok(send.send_request(req).await?)
    }

    /// Sends a request and reads the whole body; non-2xx statuses are errors
    /// carrying the start of the body (the API server's Status message).
    pub async fn fetch(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Bytes> {
        let resp = self.request(method.clone(), path, headers, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(body)
    }

    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str, headers: &[(&str, &str)]) -> Result<T> {
        let body = self.fetch(Method::GET, path, headers, Bytes::new()).await?;
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: unexpected response"))
    }

    /// The status of a GET, for readiness probes.
    pub async fn status(&self, path: &str) -> Result<StatusCode> {
        let resp = self.request(Method::GET, path, &[], Bytes::new()).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}
