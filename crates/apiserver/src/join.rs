//! Joining further nodes (`skiff agent`): the join token and the two
//! endpoints an agent calls before it has any certificate. They are skiff's
//! own, outside the Kubernetes API paths:
//!
//! | path                    | auth                     | answer                          |
//! |-------------------------|--------------------------|---------------------------------|
//! | `GET /skiff/v1/cacerts` | none                     | the cluster CA (PEM)            |
//! | `POST /skiff/v1/join`   | `Bearer <token secret>`  | [`JoinResponse`] for a [`JoinRequest`] |
//!
//! The token (`DATA_DIR/server/token`, 0600) reads
//! `K10<sha256 of the CA PEM, hex>::server:<secret>`, as k3s's: the agent
//! fetches the CA without verifying TLS, trusts it only when its hash matches
//! the token, then joins over TLS verified with it. The agent sends
//! certificate signing requests, so its private keys never leave its host;
//! the server signs a client certificate `CN=system:node:<name>,
//! O=system:nodes` and a serving certificate for the agent's streaming port.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;
use crate::pki::Pki;

pub const CACERTS_PATH: &str = "/skiff/v1/cacerts";
pub const JOIN_PATH: &str = "/skiff/v1/join";

/// Join requests are small: a name, a few addresses and two CSRs.
const MAX_JOIN_BODY: usize = 64 << 10;
const TOKEN_PREFIX: &str = "K10";
const TOKEN_USER: &str = "server";

/// Hex SHA-256 of the CA PEM exactly as `/skiff/v1/cacerts` serves it.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_pem);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A join token: the pinned CA hash and the shared secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: String,
    pub secret: String,
}

impl JoinToken {
    pub fn new(ca_pem: &str, secret: &str) -> Result<JoinToken> {
        check_secret(secret)?;
        Ok(JoinToken { ca_hash: ca_hash(ca_pem.as_bytes()), secret: secret.to_string() })
    }

    /// Parses `K10<64 hex>::server:<secret>`.
    pub fn parse(text: &str) -> Result<JoinToken> {
        let text = text.trim();
        let want = "want K10<sha256 of the CA>::server:<secret>, as in the server's DATA_DIR/server/token";
        let Some(rest) = text.strip_prefix(TOKEN_PREFIX) else {
            bail!("the join token does not pin the cluster CA ({want})");
        };
        let (hash, credentials) = rest.split_once("::").with_context(|| format!("malformed join token ({want})"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("malformed join token: the CA hash is not 64 hex digits ({want})");
        }
        let secret = credentials
            .strip_prefix(TOKEN_USER)
            .and_then(|s| s.strip_prefix(':'))
            .with_context(|| format!("malformed join token: no `server:` before the secret ({want})"))?;
        check_secret(secret)?;
        Ok(JoinToken { ca_hash: hash.to_ascii_lowercase(), secret: secret.to_string() })
    }

    /// Whether `ca_pem` is the CA this token pins.
    pub fn pins(&self, ca_pem: &[u8]) -> bool {
        constant_time_eq(ca_hash(ca_pem).as_bytes(), self.ca_hash.as_bytes())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}::{TOKEN_USER}:{}", self.ca_hash, self.secret)
    }
}

/// The secret travels in an HTTP header: visible ASCII, no spaces.
fn check_secret(secret: &str) -> Result<()> {
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the join token secret must be non-empty printable ASCII without spaces");
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's token at `path`: `explicit` (a secret or a whole token for
/// this CA) when given, else the stored one, else a new random one; written
/// (0600) whenever it changes.
pub fn ensure_token(path: &Path, explicit: Option<&str>, ca_pem: &str) -> Result<JoinToken> {
    let stored = match std::fs::read_to_string(path) {
        Ok(text) => Some(JoinToken::parse(&text).with_context(|| format!("reading {}; fix or remove it", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let secret = match explicit.map(str::trim) {
        Some(t) if t.starts_with(TOKEN_PREFIX) && t.contains("::") => {
            let token = JoinToken::parse(t).context("--token")?;
            if !token.pins(ca_pem.as_bytes()) {
                bail!("--token pins another cluster CA than this server's; pass only the secret, or the token from {}", path.display());
            }
            token.secret
        }
        Some(secret) => secret.to_string(),
        None => match &stored {
            Some(t) => t.secret.clone(),
            None => hex(&rand::random::<[u8; 16]>()),
        },
    };
    let token = JoinToken::new(ca_pem, &secret).context("--token")?;
    if stored.as_ref() != Some(&token) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::pki::write_private(path, &format!("{token}\n"))?;
    }
    Ok(token)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key pair and a certificate signing request for it (both PEM), for a
/// [`JoinRequest`]; the server decides subject and names itself.
pub fn new_key_and_csr(node: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// What a joining agent sends to [`JOIN_PATH`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node_name: String,
    /// The addresses the agent's streaming server is reached at (its serving certificate's IP SANs).
    pub addresses: Vec<IpAddr>,
    /// CSR (PEM) for the agent's API client certificate.
    pub client_csr: String,
    /// CSR (PEM) for the agent's serving certificate.
    pub serving_csr: String,
}

/// The server's answer: certificates (PEM) and the cluster settings an agent needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub ca_cert: String,
    pub client_cert: String,
    pub serving_cert: String,
    /// The range node pod CIDRs come from (pod traffic inside it is not masqueraded).
    pub cluster_cidr: String,
}

/// The server side, set once joining is enabled.
pub(crate) struct Joiner {
    pub secret: String,
    pub cluster_cidr: String,
    pub pki: Pki,
}

pub(crate) fn is_join_path(path: &str) -> bool {
    path == CACERTS_PATH || path == JOIN_PATH
}

/// Answers [`CACERTS_PATH`] and [`JOIN_PATH`]; callers need no client certificate.
pub(crate) async fn handle(joiner: Option<&Joiner>, req: Request) -> Response {
    let Some(joiner) = joiner else {
        return ApiError::new(503, "ServiceUnavailable", "this server does not accept joining nodes").into_response();
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, CACERTS_PATH) => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/x-pem-file")
            .body(Body::from(joiner.pki.ca_cert_pem.clone()))
            .unwrap(),
        (&Method::POST, JOIN_PATH) => join(joiner, req).await.unwrap_or_else(IntoResponse::into_response),
        _ => ApiError::method_not_allowed().into_response(),
    }
}

async fn join(joiner: &Joiner, req: Request) -> Result<Response, ApiError> {
    let bearer = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|b| constant_time_eq(b.trim().as_bytes(), joiner.secret.as_bytes())) {
        tracing::warn!(peer = ?req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0), "join refused: wrong or missing token");
        return Err(ApiError::new(401, "Unauthorized", "a valid join token is required: Authorization: Bearer <the secret of the server's DATA_DIR/server/token>"));
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_JOIN_BODY)
        .await
        .map_err(|_| ApiError::new(413, "RequestEntityTooLarge", "the join request is too large"))?;
    let request: JoinRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed join request: {e}")))?;
    let node = request.node_name.as_str();
    if !is_node_name(node) {
        return Err(ApiError::bad_request(format!("nodeName {node:?} is not a lower-case DNS subdomain name")));
    }
    let sign = |csr: &str, ips: Option<&[IpAddr]>| {
        joiner.pki.sign_node_csr(csr, node, ips).map_err(|e| ApiError::bad_request(format!("{e:#}")))
    };
    let response = JoinResponse {
        ca_cert: joiner.pki.ca_cert_pem.clone(),
        client_cert: sign(&request.client_csr, None)?,
        serving_cert: sign(&request.serving_csr, Some(&request.addresses))?,
        cluster_cidr: joiner.cluster_cidr.clone(),
    };
    tracing::info!(node, addresses = ?request.addresses, "issued certificates to a joining node");
    Ok(crate::json_ok(&serde_json::to_value(response).unwrap()))
}

/// A Node name: a lower-case RFC 1123 subdomain.
fn is_node_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253 && s.split('.').all(label_ok)
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
