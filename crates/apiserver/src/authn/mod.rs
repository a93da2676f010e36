//! Authentication: who a request comes from, decided in one place.
//!
//! In upstream's order: a verified client certificate (see `serve.rs`)
//! wins; else an `Authorization: Bearer` token is tried as a `--token-auth-file`
//! token, a bootstrap token or a ServiceAccount JWT; a token nobody accepts
//! is a 401 even when anonymous requests are allowed. Without credentials the
//! caller is `system:anonymous`, or refused with 401 under `--anonymous-auth=false`.

pub mod bootstrap;
pub mod jwt;
pub mod legacy;
pub mod oidc;
pub mod service_account;
pub mod token_file;
pub mod token_request;

use std::path::PathBuf;

use http::HeaderMap;

use crate::errors::ApiError;
use crate::registry::Registry;
use crate::serve::Identity;

pub const AUTHENTICATED: &str = "system:authenticated";
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy (Secret-based, non-expiring) ServiceAccount tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The authentication flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--service-account-issuer`: the `iss` of tokens we issue and accept.
    pub issuer: String,
    /// `--api-audiences`; empty means the issuer alone.
    pub audiences: Vec<String>,
    /// `--token-auth-file`.
    pub token_auth_file: Option<PathBuf>,
    /// `--anonymous-auth`.
    pub anonymous: bool,
    /// The ServiceAccount signing key (PKCS#8 PEM); None makes a key for
    /// this process only (in-process test servers without a PKI).
    pub signing_key_pem: Option<String>,
    /// The cluster CA (PEM) that legacy token Secrets carry as `ca.crt`.
    pub ca_pem: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { issuer: DEFAULT_ISSUER.into(), audiences: vec![], token_auth_file: None, anonymous: true, signing_key_pem: None, ca_pem: String::new() }
    }
}

pub struct Authenticator {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub key: jwt::SigningKey,
    pub ca_pem: String,
    anonymous: bool,
    tokens: token_file::TokenFile,
}

impl Authenticator {
    pub fn new(opts: &Options) -> anyhow::Result<Authenticator> {
        let pem = match &opts.signing_key_pem {
            Some(p) => p.clone(),
            None => jwt::SigningKey::generate_pem()?,
        };
        let tokens = match &opts.token_auth_file {
            Some(path) => token_file::TokenFile::load(path)?,
            None => Default::default(),
        };
        let audiences = if opts.audiences.is_empty() { vec![opts.issuer.clone()] } else { opts.audiences.clone() };
        Ok(Authenticator { issuer: opts.issuer.clone(), audiences, key: jwt::SigningKey::from_pem(&pem)?, ca_pem: opts.ca_pem.clone(), anonymous: opts.anonymous, tokens })
    }

    /// The caller of a request that came over TLS as `conn` (the client
    /// certificate's identity, or anonymous), or a 401.
    pub async fn authenticate(&self, reg: &Registry, headers: &HeaderMap, conn: &Identity) -> Result<Identity, ApiError> {
        if !conn.is_anonymous() {
            return Ok(conn.clone());
        }
        if let Some(token) = bearer(headers) {
            return match self.token(reg, token).await {
                Ok(id) => Ok(id),
                Err(why) => {
                    tracing::debug!("bearer token refused: {why}");
                    Err(unauthorized())
                }
            };
        }
        if self.anonymous {
            Ok(conn.clone())
        } else {
            Err(unauthorized())
        }
    }

    async fn token(&self, reg: &Registry, token: &str) -> Result<Identity, String> {
        if let Some(id) = self.tokens.get(token) {
            return Ok(id.clone());
        }
        if let Some(result) = bootstrap::authenticate(reg, token).await {
            return result;
        }
        if jwt::looks_like_jwt(token) {
            return service_account::authenticate(self, reg, token).await;
        }
        Err("unknown token".into())
    }
}

/// The token of `Authorization: Bearer TOKEN` (the scheme in any case, as upstream).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Upstream's 401: a Failure Status without details.
pub fn unauthorized() -> ApiError {
    let mut e = ApiError::new(401, "Unauthorized", "Unauthorized");
    e.details = None;
    e
}

/// An object's uid and deletion state as the watch cache holds it, so
/// checking a token costs no store read. A miss is checked again after the
/// cache caught up with the store (an object created a moment ago).
pub(crate) async fn cached(reg: &Registry, plural: &str, ns: Option<&str>, name: &str) -> Option<std::sync::Arc<crate::cache::Cached>> {
    let info = resources::catalog::lookup("", "v1", plural)?;
    let key = crate::registry::key(info, ns, name);
    let prefix = reg.cache.prefix(info.storage);
    if let Some(c) = prefix.get(&key) {
        return Some(c);
    }
    reg.cache.sync().await.ok()?;
    prefix.get(&key)
}

/// Compares secrets in time that depends on their length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct MetaOnly {
    metadata: Meta,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Meta {
    uid: String,
    deletion_timestamp: Option<String>,
}

fn meta_of(c: &crate::cache::Cached) -> Meta {
    serde_json::from_slice::<MetaOnly>(c.json()).map(|m| m.metadata).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def"));
        h.insert("authorization", "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
