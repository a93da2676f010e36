//! `skiff agent`'s side of joining (the server's is `apiserver::join`):
//! fetch the cluster CA and check it against the token's pin, send CSRs
//! with the token, and keep what comes back under `DATA_DIR/agent/pki`:
//!
//! | file          | what                                                        |
//! |---------------|-------------------------------------------------------------|
//! | `ca.crt`      | the cluster CA the token pins                               |
//! | `client.crt`, `client.key` (0600) | `CN=system:node:<name>`: the agent's API identity |
//! | `serving.crt`, `serving.key` (0600) | the streaming server's certificate    |
//! | `join.json`   | server, node name, addresses and cluster CIDR joined with   |
//!
//! plus `DATA_DIR/agent/kubeconfig.yaml` (0600) built from them. A restart
//! reuses them; the agent joins again only when a file is missing or the
//! server, node name, addresses or pinned CA changed.

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use apiserver::join::{JoinRequest, JoinResponse, JoinToken, CACERTS_PATH, JOIN_PATH};
use apiserver::pki::{write_private, write_public};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a joined agent runs with.
pub struct Joined {
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub cluster_cidr: String,
}

/// What the certificates were issued for: a change means joining again.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "camelCase")]
struct JoinState {
    server: String,
    node_name: String,
    addresses: Vec<IpAddr>,
    cluster_cidr: String,
}

/// The server refused the token: retrying cannot help.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Reuses the node's certificates under `agent_dir/pki`, or joins `server` to get them.
pub async fn ensure_joined(agent_dir: &Path, server: &str, token: &JoinToken, node: &str, addresses: &[IpAddr]) -> Result<Joined> {
    let dir = agent_dir.join("pki");
    let kubeconfig = agent_dir.join("kubeconfig.yaml");
    let wanted = |cluster_cidr: String| JoinState { server: server.to_string(), node_name: node.to_string(), addresses: addresses.to_vec(), cluster_cidr };
    if let Some(stored) = load(&dir, &kubeconfig) {
        let (state, joined) = stored;
        if state == wanted(state.cluster_cidr.clone()) && token.pins(joined.ca_pem.as_bytes()) {
            tracing::info!(dir = %dir.display(), "reusing the node's certificates");
            return Ok(joined);
        }
        tracing::info!(dir = %dir.display(), "server, node name, addresses or cluster CA changed; joining again");
    }
    let url: http::Uri = server.parse().with_context(|| format!("--server {server:?} is not a URL"))?;
    if url.scheme_str() != Some("https") || url.host().is_none() {
        bail!("--server {server:?}: want https://HOST:PORT, e.g. https://10.0.0.1:6443");
    }

    let ca_pem = fetch_pinned_ca(&url, token).await?;
    let (client_key, client_csr) = apiserver::join::new_key_and_csr(node)?;
    let (serving_key, serving_csr) = apiserver::join::new_key_and_csr(node)?;
    let request = JoinRequest { node_name: node.to_string(), addresses: addresses.to_vec(), client_csr, serving_csr };
    let tls = verified_tls(&ca_pem)?;
    let (status, body) = https(tls, &url, JOIN_PATH, Some(&token.secret), Some(serde_json::to_vec(&request)?)).await?;
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(Refused(format!("{server} refused the join token (401 Unauthorized): pass the token from the server's DATA_DIR/server/token as --token")).into());
    }
    if !status.is_success() {
        bail!("joining {server} failed ({status}): {}", status_message(&body));
    }
    let response: JoinResponse = serde_json::from_slice(&body).context("reading the join response")?;
    if response.ca_cert != ca_pem {
        bail!("{server} answered the join with another CA than it serves at {CACERTS_PATH}");
    }

    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_public(&dir.join("ca.crt"), &ca_pem)?;
    write_private(&dir.join("client.key"), &client_key)?;
    write_public(&dir.join("client.crt"), &response.client_cert)?;
    write_private(&dir.join("serving.key"), &serving_key)?;
    write_public(&dir.join("serving.crt"), &response.serving_cert)?;
    let state = wanted(response.cluster_cidr.clone());
    write_public(&dir.join("join.json"), &serde_json::to_string_pretty(&state)?)?;
    let config = apiserver::pki::kubeconfig_for(server, &ca_pem, &response.client_cert, &client_key);
    apiserver::pki::write_kubeconfig(&kubeconfig, &config)?;
    tracing::info!(server, node, dir = %dir.display(), "joined the cluster");
    Ok(Joined { kubeconfig, ca_pem, serving_cert_pem: response.serving_cert, serving_key_pem: serving_key, cluster_cidr: response.cluster_cidr })
}

/// The stored join, when every file is there.
fn load(dir: &Path, kubeconfig: &Path) -> Option<(JoinState, Joined)> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let state: JoinState = serde_json::from_str(&read("join.json")?).ok()?;
    read("client.crt")?;
    read("client.key")?;
    kubeconfig.exists().then_some(())?;
    let joined = Joined {
        kubeconfig: kubeconfig.to_path_buf(),
        ca_pem: read("ca.crt")?,
        serving_cert_pem: read("serving.crt")?,
        serving_key_pem: read("serving.key")?,
        cluster_cidr: state.cluster_cidr.clone(),
    };
    Some((state, joined))
}

/// The CA the server serves, trusted only because its hash is the token's pin
/// (the TLS connection fetching it cannot be verified yet).
async fn fetch_pinned_ca(url: &http::Uri, token: &JoinToken) -> Result<String> {
    let (status, body) = https(unverified_tls(), url, CACERTS_PATH, None, None).await?;
    if !status.is_success() {
        bail!("fetching the cluster CA from {url} failed ({status}): {}", status_message(&body));
    }
    if !token.pins(&body) {
        return Err(Refused(format!(
            "the CA {url} serves (sha256 {}) is not the one the join token pins (sha256 {}): wrong --server, or a token of another cluster",
            apiserver::join::ca_hash(&body),
            token.ca_hash
        ))
        .into());
    }
    String::from_utf8(body.to_vec()).context("the cluster CA is not UTF-8 PEM")
}

/// The message of a meta/v1 Status body, else the body itself.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// One HTTP/1.1 request over TLS; returns status and body.
async fn https(tls: Arc<rustls::ClientConfig>, url: &http::Uri, path: &str, bearer: Option<&str>, body: Option<Vec<u8>>) -> Result<(http::StatusCode, Bytes)> {
    let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_u16().unwrap_or(443);
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
        let name = ServerName::try_from(host.clone()).with_context(|| format!("{host:?} as a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.with_context(|| format!("TLS handshake with {host}:{port}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let method = if body.is_some() { http::Method::POST } else { http::Method::GET };
        let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, format!("{host}:{port}"));
        if let Some(t) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let response = send.send_request(req.body(Full::new(Bytes::from(body.unwrap_or_default())))?).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| anyhow!("{host}:{port} did not answer {path} in time"))?
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verified_tls(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("parsing the cluster CA")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth();
    Ok(Arc::new(config))
}

fn unverified_tls() -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts any server certificate (handshake signatures are still checked):
/// only for fetching the CA, which the token's pin then checks.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored join as `ensure_joined` leaves it, for a throwaway CA.
    fn stored(agent_dir: &Path, server: &str, node: &str, addresses: &[IpAddr]) -> JoinToken {
        let pki = apiserver::pki::ensure(&agent_dir.join("server-tls"), &[]).unwrap();
        let dir = agent_dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [("ca.crt", &pki.ca_cert_pem), ("client.crt", &pki.admin_cert_pem), ("client.key", &pki.admin_key_pem), ("serving.crt", &pki.server_cert_pem), ("serving.key", &pki.server_key_pem)] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let state = JoinState { server: server.into(), node_name: node.into(), addresses: addresses.to_vec(), cluster_cidr: "10.42.0.0/16".into() };
        std::fs::write(dir.join("join.json"), serde_json::to_string(&state).unwrap()).unwrap();
        std::fs::write(agent_dir.join("kubeconfig.yaml"), "kubeconfig").unwrap();
        JoinToken::new(&pki.ca_cert_pem, "secret").unwrap()
    }

    #[tokio::test]
    async fn a_stored_join_is_reused_only_while_it_still_fits() {
        let tmp = tempfile::tempdir().unwrap();
        // Nothing listens on port 1: joining again fails to connect.
        let server = "https://127.0.0.1:1";
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let token = stored(tmp.path(), server, "n1", &ips);

        let joined = ensure_joined(tmp.path(), server, &token, "n1", &ips).await.unwrap();
        assert_eq!(joined.cluster_cidr, "10.42.0.0/16");
        assert_eq!(joined.kubeconfig, tmp.path().join("kubeconfig.yaml"));
        assert_eq!(joined.ca_pem, std::fs::read_to_string(tmp.path().join("pki/ca.crt")).unwrap());

        let joins_again = |e: anyhow::Error| format!("{e:#}").contains("connecting to 127.0.0.1:1");
        assert!(joins_again(ensure_joined(tmp.path(), server, &token, "n2", &ips).await.err().unwrap()), "another node name");
        let other_ips: Vec<IpAddr> = vec!["10.0.0.9".parse().unwrap()];
        assert!(joins_again(ensure_joined(tmp.path(), server, &token, "n1", &other_ips).await.err().unwrap()), "other addresses");
        let other_ca = JoinToken { ca_hash: "0".repeat(64), secret: "secret".into() };
        assert!(joins_again(ensure_joined(tmp.path(), server, &other_ca, "n1", &ips).await.err().unwrap()), "another pinned CA");
        std::fs::remove_file(tmp.path().join("pki/serving.key")).unwrap();
        assert!(joins_again(ensure_joined(tmp.path(), server, &token, "n1", &ips).await.err().unwrap()), "a missing key");
        let err = ensure_joined(tmp.path(), "http://127.0.0.1:1", &token, "n1", &ips).await.err().unwrap();
        assert!(format!("{err:#}").contains("want https://HOST:PORT"), "{err:#}");
    }

    #[test]
    fn status_messages_are_read_from_status_bodies() {
        assert_eq!(status_message(br#"{"kind":"Status","message":"no way"}"#), "no way");
        assert_eq!(status_message(b"plain text"), "plain text");
    }
}
