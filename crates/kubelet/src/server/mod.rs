//! The agent's HTTPS endpoint (port 10250) the API server proxies pods/log,
//! exec, attach and portforward to. Only clients whose certificate chains to
//! `client_ca_pem` and whose common name is in `allowed_users` (the API
//! server's `skiff-apiserver-kubelet-client`) are served: anyone else gets
//! 401 (no certificate) or 403.

mod channel;
mod exec;
mod logs;
mod lookup;
pub mod metrics;
mod portforward;
mod portforward_ws;
mod routes;
mod spdy;
mod upgrade;
#[cfg(test)]
mod kubectl_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use logs::{stream_log, LogOptions};

/// The port upstream's kubelet serves on.
pub const DEFAULT_PORT: u16 = 10250;
/// The user the API server authenticates to agents as.
pub const API_SERVER_CLIENT: &str = "skiff-apiserver-kubelet-client";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The node's serving certificate (PEM chain) and key.
    pub cert_pem: String,
    pub key_pem: String,
    /// CA that client certificates must chain to (the cluster CA).
    pub client_ca_pem: String,
    /// Common names allowed in; by default only [`API_SERVER_CLIENT`].
    pub allowed_users: Vec<String>,
    pub runtime: Arc<dyn runtime::cri::RuntimeService>,
    /// The node's name, as `/stats/summary` reports it.
    pub node_name: String,
}

impl ServerConfig {
    pub fn new(cert_pem: String, key_pem: String, client_ca_pem: String, runtime: Arc<dyn runtime::cri::RuntimeService>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            cert_pem,
            key_pem,
            client_ca_pem,
            allowed_users: vec![API_SERVER_CLIENT.to_string()],
            runtime,
            node_name: String::new(),
        }
    }
}

/// Binds `config.listen` and serves until the task is dropped.
pub async fn serve(config: ServerConfig) -> Result<()> {
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding the agent's streaming port {}", config.listen))?;
    serve_on(listener, config).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve_on(listener: TcpListener, config: ServerConfig) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&config)?);
    let allowed = Arc::new(config.allowed_users);
    let node: Arc<str> = config.node_name.into();
    tracing::info!(address = %listener.local_addr()?, "agent streaming server listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, allowed, rt, node) = (acceptor.clone(), allowed.clone(), config.runtime.clone(), node.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let user = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c));
            let svc = hyper::service::service_fn(move |req| {
                let (rt, user, allowed, node) = (rt.clone(), user.clone(), allowed.clone(), node.clone());
                async move {
                    let resp = match user {
                        None => routes::text(StatusCode::UNAUTHORIZED, "Unauthorized"),
                        Some(u) if !allowed.contains(&u) => {
                            routes::text(StatusCode::FORBIDDEN, format!("Forbidden (user={u}, verb=get, resource=nodes, subresource=proxy)"))
                        }
                        Some(_) => routes::handle(rt, &node, req).await,
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "agent connection ended with an error");
            }
        });
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    (!cn.is_empty()).then_some(cn)
}

/// Serving certificate plus optional client certificates that must chain to the client CA.
fn tls_config(config: &ServerConfig) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut config.client_ca_pem.as_bytes()) {
        roots.add(ca.context("parsing the client CA")?).context("adding the client CA")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let chain = rustls_pemfile::certs(&mut config.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().context("parsing the serving certificate")?;
    let key = rustls_pemfile::private_key(&mut config.key_pem.as_bytes())
        .context("parsing the serving key")?
        .ok_or_else(|| anyhow!("no private key in the agent's serving key PEM"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the agent's serving certificate and key")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
