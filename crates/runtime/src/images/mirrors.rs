//! Registry mirrors, rewrites, credentials and TLS settings from a k3s
//! `registries.yaml`, and the endpoints a pull tries, in the order the
//! containerd `hosts.toml` files k3s writes from that file give:
//!
//! ```yaml
//! mirrors:
//!   docker.io:                         # or any registry host[:port], or "*" for every
//!     endpoint:                        # registry without an entry of its own
//!       - "http://10.0.0.5:5000"       # tried in order; the registry itself is tried last
//!       - "https://mirror.example.com/some/path"   # a path other than /v2 is used as is
//!     rewrite:                         # first matching regex rewrites the repository,
//!       "^rancher/(.*)": "mirrored/$1" # for the mirror endpoints only
//! configs:
//!   mirror.example.com:                # an endpoint's (or registry's) host[:port], or "*"
//!     auth: {username: u, password: p} # or auth: base64(user:pass), or identitytoken
//!     tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}
//! ```
//!
//! An endpoint without a scheme is https, except a loopback host with a
//! port other than 443 (http, as containerd) or a host given with
//! `--insecure-registry`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::reference::{Reference, DOCKER_HUB};
use super::registry::use_plain_http;
use crate::cri::RegistryAuth;

/// Where `--registries` looks by default.
pub const DEFAULT_REGISTRIES_FILE: &str = "/etc/skiff/registries.yaml";
/// The key of the mirror (and config) that applies to every registry without its own.
const WILDCARD: &str = "*";
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// The parsed and checked registries file: what [`super::Store`] pulls with.
#[derive(Clone, Default)]
pub struct Registries {
    /// The file it came from (None: built-in defaults, no file).
    pub source: Option<PathBuf>,
    mirrors: BTreeMap<String, Mirror>,
    configs: BTreeMap<String, HostSettings>,
}

#[derive(Clone, Debug)]
struct Mirror {
    endpoints: Vec<EndpointUrl>,
    /// In file order; the first whose pattern matches is applied.
    rewrites: Vec<(regex::Regex, String)>,
}

/// A normalised endpoint: `scheme://host[:port]` plus the API path (`/v2`,
/// or the endpoint's own path when it has one, as containerd's `override_path`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointUrl {
    /// As written; None: chosen per [`EndpointUrl::scheme`].
    scheme: Option<String>,
    hostname: String,
    port: Option<String>,
    /// host[:port] to connect to (`registry-1.docker.io` for `docker.io`).
    host: String,
    /// The name its settings are found under in `configs` (`docker.io` for Docker Hub's hosts).
    registry: String,
    path: String,
}

#[derive(Clone, Default)]
struct HostSettings {
    auth: Option<RegistryAuth>,
    /// A client with this host's TLS settings; None: the shared one.
    client: Option<reqwest::Client>,
}

/// One place a pull may fetch an image from.
#[derive(Clone)]
pub struct Endpoint {
    /// `scheme://host[:port]/v2` (or the endpoint's own path), no trailing slash.
    pub base: String,
    /// The repository to ask this endpoint for (rewritten for mirrors).
    pub repository: String,
    /// A mirror endpoint (false: the registry itself).
    pub mirror: bool,
    /// Credentials configured for this endpoint's host.
    pub auth: Option<RegistryAuth>,
    /// A client with this endpoint's TLS settings; None: the shared one.
    pub client: Option<reqwest::Client>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .field("mirror", &self.mirror)
            .field("auth", &self.auth.is_some())
            .field("tls", &self.client.is_some())
            .finish()
    }
}

impl Registries {
    /// Reads `path`; a missing file is no mirrors and no settings (k3s's
    /// behaviour), anything wrong in a present one an error naming the
    /// file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Registries> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(e) => return Err(e).with_context(|| format!("reading registries file {}", path.display())),
        };
        let base = path.parent().unwrap_or(Path::new("/"));
        let mut r = Registries::parse(&text, base).with_context(|| format!("registries file {}", path.display()))?;
        r.source = Some(path.to_path_buf());
        Ok(r)
    }

    /// Parses registries.yaml text; relative TLS file names are taken from `base_dir`.
    pub fn parse(yaml: &str, base_dir: &Path) -> anyhow::Result<Registries> {
        // An empty file (or one with only comments) is a valid, empty configuration.
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
        if doc.is_null() {
            return Ok(Registries::default());
        }
        let spec: FileSpec = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(yaml)).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            // serde_yaml names the field itself for some errors.
            if field.is_empty() || field == "." || inner.to_string().starts_with(&field) {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("field {field}: {inner}")
            }
        })?;
        let mut mirrors = BTreeMap::new();
        for (host, m) in spec.mirrors {
            let at = format!("mirrors.{}", quote_key(&host));
            check_registry_key(&host).with_context(|| at.clone())?;
            let mut endpoints: Vec<EndpointUrl> = Vec::new();
            for (i, e) in m.endpoint.iter().enumerate() {
                let url = EndpointUrl::parse(e).with_context(|| format!("{at}.endpoint[{i}] {e:?}"))?;
                if !endpoints.iter().any(|u| u.base(&[]) == url.base(&[])) {
                    endpoints.push(url);
                }
            }
            let mut rewrites = Vec::new();
            for (pattern, replacement) in m.rewrite.0 {
                let re = regex::Regex::new(&pattern).map_err(|e| anyhow::anyhow!("{at}.rewrite.{}: invalid regular expression: {e}", quote_key(&pattern)))?;
                rewrites.push((re, replacement));
            }
            mirrors.insert(host, Mirror { endpoints, rewrites });
        }
        let mut configs = BTreeMap::new();
        for (host, c) in spec.configs {
            let at = format!("configs.{}", quote_key(&host));
            let settings = HostSettings::build(&c, base_dir).with_context(|| at.clone())?;
            configs.insert(host, settings);
        }
        Ok(Registries { source: None, mirrors, configs })
    }

    /// Whether there is nothing configured (no file, or an empty one).
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.configs.is_empty()
    }

    /// The endpoints to pull `reference` from, in order: the mirror
    /// endpoints of its registry (or of `"*"`), each with the rewritten
    /// repository, then the registry itself with the repository as named.
    pub fn endpoints(&self, reference: &Reference, insecure: &[String]) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = Vec::new();
        let mirror = self.mirrors.get(&reference.registry).or_else(|| self.mirrors.get(WILDCARD));
        for m in mirror.into_iter() {
            let repository = rewrite(&m.rewrites, &reference.repository);
            for url in &m.endpoints {
                let settings = self.settings(&url.registry);
                out.push(Endpoint { base: url.base(insecure), repository: repository.clone(), mirror: true, auth: settings.auth, client: settings.client });
            }
        }
        let host = reference.api_host();
        let scheme = if use_plain_http(host, insecure) { "http" } else { "https" };
        let base = format!("{scheme}://{host}/v2");
        if !out.iter().any(|e| e.base == base && e.repository == reference.repository) {
            let settings = self.settings(&reference.registry);
            out.push(Endpoint { base, repository: reference.repository.clone(), mirror: false, auth: settings.auth, client: settings.client });
        }
        out
    }

    /// Settings for a registry or endpoint host: its own, else `"*"`'s.
    fn settings(&self, registry: &str) -> HostSettings {
        let hub_alias = [DOCKER_HUB, DOCKER_HUB_HOST, "index.docker.io"];
        let mut keys = vec![registry.to_string()];
        if hub_alias.contains(&registry) {
            keys.extend(hub_alias.iter().map(|s| s.to_string()));
        }
        keys.push(WILDCARD.to_string());
        keys.iter().find_map(|k| self.configs.get(k)).cloned().unwrap_or_default()
    }

    /// One line per mirror for the startup log.
    pub fn describe(&self) -> Vec<String> {
        self.mirrors
            .iter()
            .map(|(host, m)| {
                let eps: Vec<String> = m.endpoints.iter().map(|u| u.base(&[])).collect();
                format!("{host} -> [{}] ({} rewrite rules)", eps.join(", "), m.rewrites.len())
            })
            .collect()
    }
}

/// Applies the first rule whose pattern matches `repository`.
fn rewrite(rules: &[(regex::Regex, String)], repository: &str) -> String {
    for (re, replacement) in rules {
        if re.is_match(repository) {
            return re.replace_all(repository, replacement.as_str()).into_owned();
        }
    }
    repository.to_string()
}

impl EndpointUrl {
    /// `[scheme://]host[:port][/path]`, normalised as k3s does for containerd.
    fn parse(endpoint: &str) -> anyhow::Result<EndpointUrl> {
        let e = endpoint.trim();
        anyhow::ensure!(!e.is_empty(), "empty endpoint");
        let (scheme, rest) = match e.split_once("://") {
            Some((s, rest)) => {
                let s = s.to_ascii_lowercase();
                anyhow::ensure!(s == "http" || s == "https", "scheme {s:?} is not http or https");
                (Some(s), rest)
            }
            None => (None, e),
        };
        let url = reqwest::Url::parse(&format!("{}://{rest}", scheme.as_deref().unwrap_or("https"))).map_err(|err| anyhow::anyhow!("not a URL: {err}"))?;
        let hostname = url.host_str().filter(|h| !h.is_empty()).context("no host")?.to_ascii_lowercase();
        anyhow::ensure!(url.query().is_none() && url.fragment().is_none(), "an endpoint takes no query or fragment");
        anyhow::ensure!(url.username().is_empty() && url.password().is_none(), "credentials go under configs.<host>.auth, not in the endpoint URL");
        // The port as written: Url drops one that is its scheme's default.
        let port = written_port(rest.split('/').next().unwrap_or(""));
        let written_host = match &port {
            Some(p) => format!("{hostname}:{p}"),
            None => hostname.clone(),
        };
        let (host, registry) = if matches!(written_host.as_str(), "docker.io" | "index.docker.io" | DOCKER_HUB_HOST) {
            (DOCKER_HUB_HOST.to_string(), DOCKER_HUB.to_string())
        } else {
            (written_host.clone(), written_host)
        };
        let path = url.path().trim_end_matches('/');
        let path = if path.is_empty() || path == "/v2" { "/v2".to_string() } else { path.to_string() };
        Ok(EndpointUrl { scheme, hostname, port, host, registry, path })
    }

    /// The scheme: as written, else http for a loopback host on a port
    /// other than 443 (containerd's rule) or a host in `--insecure-registry`, else https.
    fn scheme(&self, insecure: &[String]) -> &str {
        if let Some(s) = &self.scheme {
            return s;
        }
        let loopback_odd_port = is_loopback(&self.hostname) && self.port.as_deref().is_some_and(|p| p != "443");
        if loopback_odd_port || insecure.iter().any(|i| *i == self.host || *i == self.registry || *i == self.hostname) {
            "http"
        } else {
            "https"
        }
    }

    fn base(&self, insecure: &[String]) -> String {
        format!("{}://{}{}", self.scheme(insecure), self.host, self.path)
    }
}

/// The port of an authority (`host:port`, `[v6]:port`) as written.
fn written_port(authority: &str) -> Option<String> {
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(_, rest)| rest).unwrap_or(""),
        None => authority,
    };
    let (_, port) = after_host.rsplit_once(':')?;
    port.parse::<u16>().ok().map(|p| p.to_string())
}

fn is_loopback(hostname: &str) -> bool {
    let h = hostname.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// A mirror key is a registry host[:port] (no scheme, no path) or `*`.
fn check_registry_key(host: &str) -> anyhow::Result<()> {
    if host == WILDCARD {
        return Ok(());
    }
    anyhow::ensure!(!host.is_empty(), "empty registry name");
    anyhow::ensure!(!host.contains("://") && !host.contains('/'), "a mirror is keyed by registry host[:port] (as in image names), not a URL");
    anyhow::ensure!(!host.chars().any(char::is_whitespace), "registry name has whitespace");
    Ok(())
}

/// A map key as shown in error messages: quoted when it has a dot or is `*`.
fn quote_key(key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

impl HostSettings {
    fn build(spec: &ConfigSpec, base_dir: &Path) -> anyhow::Result<HostSettings> {
        let auth = match &spec.auth {
            None => None,
            Some(a) => {
                let has_pair = a.username.is_some() || a.password.is_some();
                if has_pair && (a.username.is_none() || a.password.is_none()) {
                    bail!("auth: username and password go together");
                }
                if let Some(encoded) = &a.auth {
                    use base64::Engine;
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|e| anyhow::anyhow!("auth.auth: not base64 of user:password: {e}"))?;
                    anyhow::ensure!(String::from_utf8_lossy(&decoded).contains(':'), "auth.auth: the decoded value has no ':' between user and password");
                }
                anyhow::ensure!(has_pair || a.auth.is_some() || a.identitytoken.is_some(), "auth: give username and password, auth, or identitytoken");
                Some(RegistryAuth { username: a.username.clone(), password: a.password.clone(), auth: a.auth.clone(), identity_token: a.identitytoken.clone() })
            }
        };
        let client = match &spec.tls {
            None => None,
            Some(tls) => Some(tls_client(tls, base_dir)?),
        };
        Ok(HostSettings { auth, client })
    }
}

fn read_tls_file(field: &str, path: &Path, base_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let full = if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) };
    std::fs::read(&full).with_context(|| format!("tls.{field}: reading {}", full.display()))
}

fn tls_client(tls: &TlsSpec, base_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let mut builder = super::registry::http_client_builder();
    if let Some(ca) = &tls.ca_file {
        let pem = read_tls_file("ca_file", ca, base_dir)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| anyhow::anyhow!("tls.ca_file {}: not PEM certificates: {e}", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "tls.ca_file {}: no certificate in it", ca.display());
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read_tls_file("cert_file", cert, base_dir)?;
            pem.push(b'\n');
            pem.extend(read_tls_file("key_file", key, base_dir)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("tls.cert_file/key_file {} and {}: not a PEM certificate and private key: {e}", cert.display(), key.display()))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        (Some(_), None) => bail!("tls.cert_file needs tls.key_file"),
        (None, Some(_)) => bail!("tls.key_file needs tls.cert_file"),
    }
    if tls.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().context("tls: building the HTTP client")
}

// ---- the file's shape (rancher/wharfie's registries.yaml) ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default, deserialize_with = "nullable")]
    mirrors: BTreeMap<String, MirrorSpec>,
    #[serde(default, deserialize_with = "nullable")]
    configs: BTreeMap<String, ConfigSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorSpec {
    #[serde(default, deserialize_with = "nullable")]
    endpoint: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    rewrite: OrderedMap,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    #[serde(default)]
    auth: Option<AuthSpec>,
    #[serde(default)]
    tls: Option<TlsSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSpec {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// A string map in file order (rewrite rules are tried in order).
#[derive(Debug, Default)]
struct OrderedMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of regular expression to replacement")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `key:` with nothing after it (YAML null) is the empty value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
#[path = "mirrors_tests.rs"]
mod tests;
