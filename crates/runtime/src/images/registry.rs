//! A client for the OCI distribution / Docker registry v2 API: manifests and
//! blobs, bearer-token and basic auth, plain HTTP only for loopback and
//! explicitly insecure registries.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::oci::{self, HashingWriter};
use crate::cri::RegistryAuth;

/// Every manifest type we understand, so the registry never down-converts to schema 1.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are small; anything bigger is not a manifest.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Whether a registry is spoken to over plain HTTP: loopback always
/// (as docker does), others only when listed as insecure.
pub fn use_plain_http(host: &str, insecure: &[String]) -> bool {
    let hostname = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    matches!(hostname, "localhost" | "127.0.0.1" | "::1")
        || hostname.starts_with("127.")
        || insecure.iter().any(|i| i == host || i == hostname)
}

/// Builds the HTTP client shared by every pull.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    http_client_builder().build().context("building the registry HTTP client")
}

/// The settings every registry client has; TLS settings per host go on top.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
}

/// A conversation with one repository of one registry; remembers the token it got.
pub struct RepoSession<'a> {
    http: &'a reqwest::Client,
    /// Up to and including the API path: `https://host/v2`.
    base: String,
    repository: String,
    auths: &'a [RegistryAuth],
    authorization: Option<String>,
}

/// A fetched manifest: its bytes, content type and verified digest.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub digest: String,
}

impl<'a> RepoSession<'a> {
    pub fn new(http: &'a reqwest::Client, host: &str, repository: &str, insecure: &[String], auths: &'a [RegistryAuth]) -> Self {
        let scheme = if use_plain_http(host, insecure) { "http" } else { "https" };
        RepoSession::at(http, &format!("{scheme}://{host}/v2"), repository, auths)
    }

    /// A session with the API at `base` (`https://host/v2`, or a mirror's own path).
    pub fn at(http: &'a reqwest::Client, base: &str, repository: &str, auths: &'a [RegistryAuth]) -> Self {
        let base = base.trim_end_matches('/').to_string();
        RepoSession { http, base, repository: repository.to_string(), auths, authorization: None }
    }

    /// GETs a manifest by tag or digest. A digest reference is verified
    /// against the bytes; a tag's digest is computed from them.
    pub async fn manifest(&mut self, reference: &str) -> anyhow::Result<FetchedManifest> {
        let url = format!("{}/{}/manifests/{reference}", self.base, self.repository);
        let resp = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        let content_type = header_str(resp.headers(), CONTENT_TYPE).split(';').next().unwrap_or("").trim().to_string();
        if let Some(len) = resp.content_length() {
            anyhow::ensure!(len as usize <= MAX_MANIFEST_BYTES, "manifest {url} is {len} bytes, too big to be a manifest");
        }
        let bytes = resp.bytes().await.with_context(|| format!("reading manifest {url}"))?.to_vec();
        anyhow::ensure!(bytes.len() <= MAX_MANIFEST_BYTES, "manifest {url} is too big to be a manifest");
        let digest = oci::sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            bail!("manifest {url} has digest {digest}, not the {reference} asked for: refusing corrupted or tampered content");
        }
        Ok(FetchedManifest { bytes, content_type, digest })
    }

    /// Streams blob `digest` into `dest`, verifying its digest (and size when
    /// known). Returns the number of bytes written.
    pub async fn download_blob(&mut self, digest: &str, expected_size: Option<u64>, dest: &Path) -> anyhow::Result<u64> {
        let url = format!("{}/{}/blobs/{digest}", self.base, self.repository);
        let mut resp = self.get(&url, None).await?;
        let file = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut out = HashingWriter::new(std::io::BufWriter::new(file));
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("downloading {url}"))? {
            out.write_all(&chunk).with_context(|| format!("writing {}", dest.display()))?;
            if let Some(size) = expected_size {
                anyhow::ensure!(out.written <= size, "blob {digest} from {url} is larger than the {size} bytes its manifest says");
            }
        }
        let written = out.written;
        let (got, writer) = out.finish();
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if got != digest {
            bail!("blob from {url} has digest {got}, not {digest}: refusing corrupted or tampered content");
        }
        if let Some(size) = expected_size {
            anyhow::ensure!(written == size, "blob {digest} from {url} is {written} bytes, its manifest says {size}");
        }
        Ok(written)
    }

    /// GET with the session's authorization; on a 401 challenge, gets
    /// credentials the way the registry asks and retries.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut tried_auth = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = req.send().await.with_context(|| format!("GET {url}: is the registry reachable?"))?;
            match resp.status() {
                s if s.is_success() => return Ok(resp),
                StatusCode::UNAUTHORIZED if !tried_auth => {
                    tried_auth = true;
                    let challenge = header_str(resp.headers(), WWW_AUTHENTICATE).to_string();
                    self.authorization = Some(self.authorize(&challenge).await.with_context(|| format!("authenticating for {url}"))?);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    bail!("GET {url}: {} — the registry refused our credentials; check the pod's imagePullSecrets", resp.status())
                }
                StatusCode::NOT_FOUND => bail!("GET {url}: not found — check the image name and tag"),
                s => {
                    let body = resp.text().await.unwrap_or_default();
                    bail!("GET {url}: {s}: {}", body.chars().take(300).collect::<String>())
                }
            }
        }
    }

    /// Turns a `WWW-Authenticate` challenge into an Authorization header value.
    async fn authorize(&self, challenge: &str) -> anyhow::Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, pass) = self.auths.iter().find_map(credentials).context("the registry wants basic auth and no credentials were given")?;
            return Ok(basic_header(&user, &pass));
        }
        anyhow::ensure!(scheme.eq_ignore_ascii_case("bearer"), "unsupported auth challenge {challenge:?}");
        let realm = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).context("bearer challenge without realm")?;
        let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut last_err = None;
        // Each credential in order, then anonymously (public images behind a token server).
        let attempts = self.auths.iter().map(Some).chain(std::iter::once(None));
        for auth in attempts {
            match self.fetch_token(&realm, service.as_deref(), &scope, auth).await {
                Ok(token) => return Ok(format!("Bearer {token}")),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no token")))
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str, auth: Option<&RegistryAuth>) -> anyhow::Result<String> {
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let req = match auth.and_then(|a| a.identity_token.as_deref()) {
            // An identity token is an OAuth2 refresh token.
            Some(refresh) => {
                let mut form = query.clone();
                form.extend([("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", "skiff")]);
                self.http.post(realm).form(&form)
            }
            None => {
                let req = self.http.get(realm).query(&query);
                match auth.and_then(credentials) {
                    Some((u, p)) => req.header(AUTHORIZATION, basic_header(&u, &p)),
                    None => req,
                }
            }
        };
        let resp = req.send().await.with_context(|| format!("requesting a token from {realm}"))?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "token endpoint {realm} answered {status}");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?).context("token endpoint answer is not JSON")?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .with_context(|| format!("token endpoint {realm} answered without a token"))
    }
}

/// Username and password of an auth entry (`auth` is base64 `user:password`).
fn credentials(auth: &RegistryAuth) -> Option<(String, String)> {
    if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
        return Some((u.clone(), p.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.auth.as_deref()?.trim()).ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn basic_header(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn header_str(headers: &HeaderMap, name: reqwest::header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Splits `Bearer realm="x",service="y"` into the scheme and its parameters.
pub fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.push((key, value.to_string()));
        rest = remaining.trim_start_matches([',', ' ']);
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_insecure() {
        assert!(use_plain_http("localhost:5000", &[]));
        assert!(use_plain_http("127.0.0.1:41234", &[]));
        assert!(use_plain_http("[::1]:5000", &[]));
        assert!(!use_plain_http("docker.io", &[]));
        assert!(!use_plain_http("registry.lan:5000", &[]));
        assert!(use_plain_http("registry.lan:5000", &["registry.lan:5000".to_string()]));
        assert!(use_plain_http("registry.lan:5000", &["registry.lan".to_string()]));
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, params) = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#);
        assert_eq!(scheme, "Bearer");
        assert_eq!(params[0], ("realm".to_string(), "https://auth.docker.io/token".to_string()));
        assert_eq!(params[1].1, "registry.docker.io");
        assert_eq!(params[2].1, "repository:library/busybox:pull");
        let (scheme, params) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((scheme.as_str(), params[0].1.as_str()), ("Basic", "basic-realm"));
    }

    #[test]
    fn credentials_from_auth_field() {
        let auth = RegistryAuth { auth: Some(base64::engine::general_purpose::STANDARD.encode("bob:s3:cret")), ..Default::default() };
        assert_eq!(credentials(&auth), Some(("bob".to_string(), "s3:cret".to_string())));
        let auth = RegistryAuth { username: Some("a".into()), password: Some("b".into()), ..Default::default() };
        assert_eq!(credentials(&auth), Some(("a".to_string(), "b".to_string())));
        assert_eq!(credentials(&RegistryAuth::default()), None);
    }
}
