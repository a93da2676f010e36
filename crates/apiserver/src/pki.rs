//! Cluster PKI: the server's CA, serving certificate and admin client
//! certificate, the kubeconfig built from them, and the rustls server
//! configuration.
//!
//! Everything lives under one directory (`DATA_DIR/server/tls`):
//!
//! | file          | what                                                   |
//! |---------------|--------------------------------------------------------|
//! | `ca.crt`      | cluster CA (`CN=skiff-server-ca@<unix time>`, 10 years) |
//! | `ca.key`      | its key (0600)                                         |
//! | `serving.crt` | the API server's serving certificate, signed by the CA |
//! | `serving.key` | its key (0600)                                         |
//! | `admin.crt`   | `CN=system:admin, O=system:masters` client certificate |
//! | `admin.key`   | its key (0600)                                         |
//! | `kubelet-client.crt` | `CN=skiff-apiserver-kubelet-client, O=system:masters`: the API server's certificate towards node agents (logs, exec, port-forward) |
//! | `kubelet-client.key` | its key (0600)                                  |
//! | `service-account.key` | the ECDSA P-256 key ServiceAccount tokens are signed with (0600); never replaced once it exists |
//!
//! On the first start all of them are created; on later starts they are
//! reused as they are. The serving certificate alone is re-issued (with the
//! existing CA and key) when it lacks a subject alternative name that is now
//! needed, is not signed by the CA, or expires within 90 days; the client
//! certificates (admin, kubelet client) are re-issued only when they are not
//! signed by the CA or expire within 90 days. The CA is never replaced once it exists.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

const CA_DAYS: u64 = 3650;
const LEAF_DAYS: u64 = 365;
/// A leaf certificate that expires within this many days is re-issued on start.
const RENEW_BEFORE_DAYS: u64 = 90;
const DAY: u64 = 24 * 60 * 60;

/// The user the API server presents to node agents, as upstream's
/// `--kubelet-client-certificate` conventionally names it.
pub const KUBELET_CLIENT_USER: &str = "skiff-apiserver-kubelet-client";

/// DNS names every serving certificate carries.
const FIXED_DNS_SANS: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The cluster's certificates and keys (PEM) and where they are stored.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert_pem: String,
    /// The CA's private key, for signing further certificates (see
    /// [`Pki::issue_client_cert`]).
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The API server's client certificate towards node agents.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    /// The ServiceAccount token signing key (PKCS#8 PEM).
    pub service_account_key_pem: String,
    pub dir: PathBuf,
    pub ca_cert_path: PathBuf,
    pub ca_key_path: PathBuf,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    pub admin_cert_path: PathBuf,
    pub admin_key_path: PathBuf,
}

/// Creates the PKI under `dir` on the first start and reuses it afterwards
/// (see the module documentation). `extra_sans` are added to the serving
/// certificate: each entry that parses as an IP address becomes an IP SAN,
/// any other a DNS SAN. The caller passes the first IP of the service CIDR
/// (e.g. `10.43.0.1`) here, plus any user-supplied `--tls-san`s.
pub fn ensure(dir: &Path, extra_sans: &[String]) -> Result<Pki> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;

    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let server_cert_path = dir.join("serving.crt");
    let server_key_path = dir.join("serving.key");
    let admin_cert_path = dir.join("admin.crt");
    let admin_key_path = dir.join("admin.key");
    let kubelet_client_cert_path = dir.join("kubelet-client.crt");
    let kubelet_client_key_path = dir.join("kubelet-client.key");

    // --- CA -------------------------------------------------------------
    // ca.crt is written last, so its presence means the CA is complete.
    let (ca_cert_pem, ca_key_pem, new_ca) = if ca_cert_path.exists() {
        let cert = read_string(&ca_cert_path)?;
        let key = read_string(&ca_key_path).with_context(|| {
            format!(
                "{} exists but its key cannot be read; remove {} to create a new cluster CA",
                ca_cert_path.display(),
                dir.display()
            )
        })?;
        (cert, key, false)
    } else {
        let (cert, key) = new_ca()?;
        write_private(&ca_key_path, &key)?;
        write_public(&ca_cert_path, &cert)?;
        tracing::info!(path = %ca_cert_path.display(), "created cluster CA");
        (cert, key, true)
    };
    let ca = CaSigner::load(&ca_cert_pem, &ca_key_pem)
        .with_context(|| format!("loading the cluster CA from {}", dir.display()))?;

    // --- serving certificate --------------------------------------------
    let required = required_sans(extra_sans);
    let existing = if new_ca {
        None
    } else {
        read_pair(&server_cert_path, &server_key_path)
    };
    let (server_cert_pem, server_key_pem) = match existing {
        Some((cert, key)) => match check_leaf(&cert, &key, &ca) {
            Ok(info) => {
                let missing: Vec<&San> =
                    required.iter().filter(|s| !info.sans.contains(s)).collect();
                if missing.is_empty() {
                    (cert, key)
                } else {
                    tracing::info!(?missing, "serving certificate lacks names; re-issuing it");
                    let mut sans = info.sans;
                    sans.extend(required.iter().cloned());
                    issue_serving(&ca, Some(&key), &sans, &server_cert_path, &server_key_path)?
                }
            }
            Err(why) => {
                tracing::info!(reason = %why, "re-issuing the serving certificate");
                issue_serving(
                    &ca,
                    Some(&key),
                    &required,
                    &server_cert_path,
                    &server_key_path,
                )?
            }
        },
        None => issue_serving(&ca, None, &required, &server_cert_path, &server_key_path)?,
    };

    // --- client certificates ----------------------------------------------
    let admin = ClientFiles { user: "system:admin", group: "system:masters", cert: &admin_cert_path, key: &admin_key_path };
    let (admin_cert_pem, admin_key_pem) = admin.ensure(&ca, new_ca)?;
    let kubelet_client =
        ClientFiles { user: KUBELET_CLIENT_USER, group: "system:masters", cert: &kubelet_client_cert_path, key: &kubelet_client_key_path };
    let (kubelet_client_cert_pem, kubelet_client_key_pem) = kubelet_client.ensure(&ca, new_ca)?;

    // --- ServiceAccount signing key: replacing it would void every token ---
    let sa_key_path = dir.join("service-account.key");
    let service_account_key_pem = if sa_key_path.exists() {
        read_string(&sa_key_path)?
    } else {
        let pem = crate::authn::jwt::SigningKey::generate_pem()?;
        write_private(&sa_key_path, &pem)?;
        pem
    };

    Ok(Pki {
        service_account_key_pem,
        ca_cert_pem,
        ca_key_pem,
        server_cert_pem,
        server_key_pem,
        admin_cert_pem,
        admin_key_pem,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
        dir: dir.to_path_buf(),
        ca_cert_path,
        ca_key_path,
        server_cert_path,
        server_key_path,
        admin_cert_path,
        admin_key_path,
    })
}

impl Pki {
    /// Issues a new client certificate (clientAuth EKU, 1 year) signed by the
    /// cluster CA, with subject `CN=<user>` and `O=<group>` as Kubernetes
    /// reads them (e.g. `system:node:<name>` in `system:nodes`). At most one
    /// group: rcgen 0.13 can't put two O attributes in a subject. Returns
    /// `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        let ca = CaSigner::load(&self.ca_cert_pem, &self.ca_key_pem)?;
        let key = KeyPair::generate()?;
        let cert = client_params(user, groups)?.signed_by(&key, &ca.cert, &ca.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a node agent's serving certificate (serverAuth, 1 year) signed
    /// by the cluster CA: `CN=system:node:<node>, O=system:nodes`, with the
    /// node name and `ips` as subject alternative names, so the API server
    /// can verify the agent it proxies logs/exec/port-forward to. Returns
    /// `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_node_serving_cert(&self, node: &str, ips: &[IpAddr]) -> Result<(String, String)> {
        let ca = CaSigner::load(&self.ca_cert_pem, &self.ca_key_pem)?;
        let key = KeyPair::generate()?;
        let cert = node_cert_params(node, Some(ips))?.signed_by(&key, &ca.cert, &ca.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a joining node's certificate signing request (PEM). Only the
    /// CSR's public key is used (its signature proves the node holds the
    /// key); subject, usage and names are set here: with `serving_ips` the
    /// node's serving certificate (as [`Pki::issue_node_serving_cert`]),
    /// without them its client certificate `CN=system:node:<node>,
    /// O=system:nodes`. Returns the certificate (PEM).
    pub fn sign_node_csr(&self, csr_pem: &str, node: &str, serving_ips: Option<&[IpAddr]>) -> Result<String> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow!("unusable certificate signing request: {e}"))?;
        let ca = CaSigner::load(&self.ca_cert_pem, &self.ca_key_pem)?;
        Ok(node_cert_params(node, serving_ips)?.signed_by(&csr.public_key, &ca.cert, &ca.key)?.pem())
    }
}

/// A node's certificate: serving (node name and `ips` as SANs) or, without
/// IPs, client; both `CN=system:node:<node>, O=system:nodes`.
fn node_cert_params(node: &str, serving_ips: Option<&[IpAddr]>) -> Result<CertificateParams> {
    let cn = format!("system:node:{node}");
    let Some(ips) = serving_ips else {
        return client_params(&cn, &["system:nodes"]);
    };
    let mut params = leaf_params(&cn, &["system:nodes"], ExtendedKeyUsagePurpose::ServerAuth);
    let mut sans: BTreeSet<San> = ips.iter().map(|ip| San::Ip(*ip)).collect();
    sans.extend(San::parse(node));
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
    Ok(params)
}

/// The TLS client configuration the API server dials node agents with: the
/// kubelet client certificate, and agents' serving certificates checked
/// against the cluster CA. HTTP/1.1 only (the streams are upgrades).
pub fn kubelet_client_tls_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in parse_certs(&pki.ca_cert_pem).context("parsing the CA certificate")? {
        roots.add(ca).context("adding the CA to the agent trust roots")?;
    }
    let chain = parse_certs(&pki.kubelet_client_cert_pem).context("parsing the kubelet client certificate")?;
    let key = rustls_pemfile::private_key(&mut pki.kubelet_client_key_pem.as_bytes())
        .context("parsing the kubelet client key")?
        .ok_or_else(|| anyhow!("no private key in the kubelet client key PEM"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("kubelet client certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client configuration that accepts any server certificate (its
/// signatures still checked): upstream's pod and service proxies dial
/// `https:` backends this way, since pods' certificates name no pod IP.
pub fn insecure_client_tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyServerCert(provider.clone()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A kubeconfig (YAML) with the CA, the admin client certificate and its key
/// embedded as base64 data; cluster, user and context are all named
/// `default`, and `default` is the current context.
pub fn kubeconfig(pki: &Pki, server_url: &str) -> String {
    kubeconfig_for(server_url, &pki.ca_cert_pem, &pki.admin_cert_pem, &pki.admin_key_pem)
}

/// A kubeconfig as [`kubeconfig`] makes, for any client certificate and key.
pub fn kubeconfig_for(server_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    // A JSON string is a valid YAML double-quoted scalar.
    let server = serde_json::Value::String(server_url.to_string()).to_string();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// Writes a kubeconfig to `path` (mode 0600), creating parent directories.
/// The file is replaced atomically, so an existing file with looser
/// permissions ends up 0600 as well.
pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    write_private(path, contents)
}

/// The rustls server configuration: the serving certificate and key; client
/// certificates are optional but, when presented, must chain to the cluster
/// CA; ALPN offers `h2` and `http/1.1`.
pub fn server_tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = rustls::RootCertStore::empty();
    for ca in parse_certs(&pki.ca_cert_pem).context("parsing the CA certificate")? {
        roots
            .add(ca)
            .context("adding the CA to the client trust roots")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("building the client certificate verifier")?;

    let chain = parse_certs(&pki.server_cert_pem).context("parsing the serving certificate")?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .context("parsing the serving key")?
        .ok_or_else(|| anyhow!("no private key in the serving key PEM"))?;

    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("serving certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------
// certificates

/// A subject alternative name, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    fn parse(s: &str) -> Option<San> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let unbracketed = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Some(San::Ip(ip));
        }
        let dns = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = !dns.is_empty()
            && dns.len() <= 253
            && dns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
        valid.then_some(San::Dns(dns))
    }

    fn to_rcgen(&self) -> Result<SanType> {
        Ok(match self {
            San::Dns(d) => SanType::DnsName(d.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// Every name the serving certificate must carry now.
fn required_sans(extra: &[String]) -> BTreeSet<San> {
    let mut sans = BTreeSet::new();
    for d in FIXED_DNS_SANS {
        sans.insert(San::Dns(d.to_string()));
    }
    sans.insert(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.insert(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    if let Some(h) = hostname().and_then(|h| San::parse(&h)) {
        sans.insert(h);
    }
    for ip in interface_addrs() {
        sans.insert(San::Ip(ip));
    }
    for e in extra {
        match San::parse(e) {
            Some(s) => {
                sans.insert(s);
            }
            None => tracing::warn!(san = %e, "ignoring an invalid subject alternative name"),
        }
    }
    sans
}

/// The host name, as the kernel has it.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // on success when the name fits (we also stop at the buffer's end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        fs::read_to_string("/proc/sys/kernel/hostname").ok()?
    };
    let name = name.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The addresses of the host's network interfaces (IPv6 link-local ones
/// left out: they need a zone to be used, which a certificate can't carry).
fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a linked list that we walk
    // read-only and release with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "getifaddrs failed");
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out.sort();
    out.dedup();
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets validity from one hour ago (some clock skew) to `days` from now.
fn set_validity(params: &mut CertificateParams, days: u64) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_now());
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(days * DAY);
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01; // positive, no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn new_ca() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("skiff-server-ca@{}", unix_now()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA loaded for signing: rcgen wants an issuer `Certificate`, which we
/// rebuild from the stored CA's subject and key identifier.
struct CaSigner {
    cert: Certificate,
    key: KeyPair,
    /// The stored CA certificate (DER), to check leaves against.
    der: Vec<u8>,
}

impl CaSigner {
    fn load(cert_pem: &str, key_pem: &str) -> Result<CaSigner> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        let der = parse_certs(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no certificate in the CA PEM"))?
            .to_vec();
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow!("parsing the CA certificate: {e}"))?;
        if x509.public_key().raw != key.public_key_der().as_slice() {
            bail!("the CA key does not match the CA certificate");
        }
        let params = CertificateParams::from_ca_cert_der(&der.clone().into())
            .context("reading the CA certificate")?;
        let cert = params.self_signed(&key)?;
        Ok(CaSigner { cert, key, der })
    }
}

fn leaf_params(cn: &str, orgs: &[&str], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, LEAF_DAYS);
    params
}

fn client_params(user: &str, groups: &[&str]) -> Result<CertificateParams> {
    if user.is_empty() {
        bail!("a client certificate needs a user name");
    }
    if groups.len() > 1 {
        bail!("a client certificate can carry at most one group here, got {groups:?}");
    }
    Ok(leaf_params(
        user,
        groups,
        ExtendedKeyUsagePurpose::ClientAuth,
    ))
}

/// Reuses `old_key` when it parses, else makes a new key.
fn key_or_new(old_key: Option<&str>) -> Result<KeyPair> {
    match old_key.map(KeyPair::from_pem) {
        Some(Ok(k)) => Ok(k),
        _ => Ok(KeyPair::generate()?),
    }
}

fn issue_serving(
    ca: &CaSigner,
    old_key: Option<&str>,
    sans: &BTreeSet<San>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(String, String)> {
    let key = key_or_new(old_key)?;
    let mut params = leaf_params("skiff-apiserver", &[], ExtendedKeyUsagePurpose::ServerAuth);
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    write_private(key_path, &key_pem)?;
    write_public(cert_path, &cert_pem)?;
    tracing::info!(path = %cert_path.display(), sans = ?sans, "issued the serving certificate");
    Ok((cert_pem, key_pem))
}

/// A client certificate kept on disk: created once, reused, re-issued
/// (with its key) only when not signed by the CA or about to expire.
struct ClientFiles<'a> {
    user: &'a str,
    group: &'a str,
    cert: &'a Path,
    key: &'a Path,
}

impl ClientFiles<'_> {
    fn ensure(&self, ca: &CaSigner, new_ca: bool) -> Result<(String, String)> {
        let existing = if new_ca { None } else { read_pair(self.cert, self.key) };
        match existing {
            Some((cert, key)) => match check_leaf(&cert, &key, ca) {
                Ok(_) => Ok((cert, key)),
                Err(why) => {
                    tracing::info!(reason = %why, user = self.user, "re-issuing a client certificate");
                    self.issue(ca, Some(&key))
                }
            },
            None => self.issue(ca, None),
        }
    }

    fn issue(&self, ca: &CaSigner, old_key: Option<&str>) -> Result<(String, String)> {
        let key = key_or_new(old_key)?;
        let cert = client_params(self.user, &[self.group])?.signed_by(&key, &ca.cert, &ca.key)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        write_private(self.key, &key_pem)?;
        write_public(self.cert, &cert_pem)?;
        tracing::info!(path = %self.cert.display(), user = self.user, "issued a client certificate");
        Ok((cert_pem, key_pem))
    }
}

struct LeafInfo {
    sans: BTreeSet<San>,
}

/// Checks a stored leaf: it parses, its key matches, it is signed by the
/// CA and does not expire within [`RENEW_BEFORE_DAYS`].
fn check_leaf(cert_pem: &str, key_pem: &str, ca: &CaSigner) -> Result<LeafInfo> {
    let der = parse_certs(cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no certificate in the PEM"))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("unparsable certificate: {e}"))?;
    let key = KeyPair::from_pem(key_pem).context("unparsable key")?;
    if x509.public_key().raw != key.public_key_der().as_slice() {
        bail!("the key does not match the certificate");
    }
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca.der)
        .map_err(|e| anyhow!("unparsable CA certificate: {e}"))?;
    if x509.issuer().as_raw() != ca_x509.subject().as_raw()
        || x509.verify_signature(Some(ca_x509.public_key())).is_err()
    {
        bail!("not signed by the cluster CA");
    }
    let not_after = x509.validity().not_after.timestamp();
    if not_after < (unix_now() + RENEW_BEFORE_DAYS * DAY) as i64 {
        bail!("expires within {RENEW_BEFORE_DAYS} days");
    }
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    if let Some(s) = San::parse(d) {
                        sans.insert(s);
                    }
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = (*b).try_into().unwrap();
                        sans.insert(San::Ip(IpAddr::from(a)));
                    }
                    16 => {
                        let a: [u8; 16] = (*b).try_into().unwrap();
                        sans.insert(San::Ip(IpAddr::from(a)));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(LeafInfo { sans })
}

fn parse_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        bail!("no certificate in the PEM");
    }
    Ok(certs)
}

// ---------------------------------------------------------------------------
// files

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_pair(cert: &Path, key: &Path) -> Option<(String, String)> {
    Some((
        fs::read_to_string(cert).ok()?,
        fs::read_to_string(key).ok()?,
    ))
}

/// Writes `path` atomically, mode 0600.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    write_atomic(path, contents, 0o600)
}

/// Writes `path` atomically, mode 0644.
pub fn write_public(path: &Path, contents: &str) -> Result<()> {
    write_atomic(path, contents, 0o644)
}

/// Writes `<path>.tmp` created with `mode` (never wider), fsyncs it and
/// renames it over `path`.
fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
