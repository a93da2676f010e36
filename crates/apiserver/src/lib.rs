//! The skiff API server: the Kubernetes REST API over a revisioned store,
//! served by one generic path driven by the resource catalog.

mod admission;
mod apply;
pub mod authn;
mod cache;
mod collection;
mod components;
mod decode;
mod discovery;
mod errors;
mod go_form;
mod handlers;
pub mod join;
mod lifecycle;
mod metrics;
mod openapi;
mod pods;
mod limit_ranger;
mod priority;
mod quota_admission;
mod projection;
pub mod pki;
mod protobuf;
mod proxy;
mod registry;
mod request;
mod resource_metrics;
mod respond;
mod runtime_class;
mod service_account_admission;
pub mod serve;
mod storage_admission;
mod strategic;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

pub use admission::Cidr;
use admission::Admission;
use cache::WatchCache;
use errors::ApiError;
use registry::Registry;
use request::{parse_path, ApiPath, Query};

/// The largest request body accepted (upstream's limit is 3 MiB per object, more for lists).
const MAX_BODY: usize = 16 << 20;

pub const KUBERNETES_VERSION: &str = "v1.33.4-skiff";

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub service_cidr: Cidr,
    pub node_ports: (u16, u16),
    /// How long an Event is kept after it was last seen (upstream's --event-ttl).
    pub event_ttl: std::time::Duration,
    /// ClusterIP of the `kube-system/kube-dns` Service (the agents' `--cluster-dns`); None = no such Service.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// Authentication: tokens, the ServiceAccount issuer, anonymous requests.
    pub authn: authn::Options,
}

pub struct App {
    registry: Arc<Registry>,
    metrics: metrics::Metrics,
    server_address: String,
    /// TLS client configuration towards node agents (set by [`start`]; without
    /// it pods/log, exec, attach and portforward answer 503).
    kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// Set by [`Server::enable_join`]; without it the join endpoints answer 503.
    joiner: std::sync::OnceLock<join::Joiner>,
    /// Node and pod usage scraped from the agents (metrics.k8s.io).
    resource_metrics: resource_metrics::ResourceMetrics,
}

/// Opens the datastore, prepares the caches and the built-in objects, and
/// returns the app ready to serve (in-process, or over TLS with [`run`]).
pub async fn build(store: store::DynStore, config: &Config, advertise: IpAddr) -> anyhow::Result<Arc<App>> {
    let storages: Vec<&str> = resources::catalog::CATALOG.iter().map(|r| r.storage).collect();
    let cache = WatchCache::start(store.clone(), &storages).await?;
    let admission = Admission::new(config.service_cidr, config.node_ports);
    let authn = authn::Authenticator::new(&config.authn)?;
    let registry = Arc::new(Registry { store, cache, admission, authn });
    let service_ip = config.service_cidr.nth(1).to_string();
    lifecycle::bootstrap(&registry, &service_ip, &advertise.to_string(), config.port).await?;
    if let Some(dns) = config.cluster_dns {
        anyhow::ensure!(config.service_cidr.contains(dns), "--cluster-dns {dns} is not inside --service-cidr {}", config.service_cidr);
        if let Err(e) = lifecycle::ensure_cluster_dns_service(&registry, dns).await {
            tracing::warn!("cluster DNS Service kube-system/kube-dns at {dns}: {e:#}");
        }
    }
    tokio::spawn(lifecycle::run_namespace_cleanup(registry.clone()));
    tokio::spawn(lifecycle::run_compaction(registry.clone()));
    tokio::spawn(lifecycle::run_event_expiry(registry.clone(), config.event_ttl));
    tokio::spawn(authn::legacy::run(registry.clone()));
    Ok(Arc::new(App {
        registry,
        metrics: metrics::Metrics::default(),
        server_address: SocketAddr::new(advertise, config.port).to_string(),
        kubelet_tls: std::sync::OnceLock::new(),
        joiner: std::sync::OnceLock::new(),
        resource_metrics: Default::default(),
    }))
}

/// The HTTP router: one fallback handler sees every request.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(app)
}

/// A started API server: certificates and kubeconfig written, datastore
/// loaded, port bound; [`Server::serve`] answers requests.
pub struct Server {
    /// The router, for in-process clients (controllers, scheduler, agent).
    pub router: axum::Router,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The cluster PKI, e.g. to issue the local agent's serving certificate.
    pub pki: pki::Pki,
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

pub async fn start(mut config: Config, store: store::DynStore) -> anyhow::Result<Server> {
    let advertise = advertise_address(config.bind_address);
    let mut sans = vec![config.service_cidr.nth(1).to_string(), advertise.to_string()];
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    let pki = pki::ensure(&config.data_dir.join("server").join("tls"), &sans)?;
    let host = if config.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { config.bind_address.to_string() };
    let url = format!("https://{}", SocketAddr::new(host.parse()?, config.port));
    config.authn.signing_key_pem = Some(pki.service_account_key_pem.clone());
    config.authn.ca_pem = pki.ca_cert_pem.clone();
    let app = build(store, &config, advertise).await?;
    let _ = app.kubelet_tls.set(pki::kubelet_client_tls_config(&pki)?);
    tokio::spawn(resource_metrics::scrape::run(app.clone()));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(config.bind_address, config.port)).await?;
    // Written last: its presence tells scripts the server is about to answer.
    pki::write_kubeconfig(&config.kubeconfig, &pki::kubeconfig(&pki, &url))?;
    tracing::info!(address = %listener.local_addr()?, kubeconfig = %config.kubeconfig.display(), "skiff API server listening");
    Ok(Server { router: router(app.clone()), ca_pem: pki.ca_cert_pem.clone(), tls: pki::server_tls_config(&pki)?, pki, app, listener })
}

impl Server {
    /// Lets nodes join (see [`join`]) with the token stored at `token_path`
    /// (`explicit` replaces it), and logs how to join.
    pub fn enable_join(&self, token_path: &std::path::Path, explicit: Option<&str>, cluster_cidr: &str) -> anyhow::Result<()> {
        let token = join::ensure_token(token_path, explicit, &self.pki.ca_cert_pem)?;
        let joiner = join::Joiner { secret: token.secret, cluster_cidr: cluster_cidr.to_string(), pki: self.pki.clone() };
        let _ = self.app.joiner.set(joiner);
        tracing::info!(
            token = %token_path.display(),
            "nodes join with: skiff agent --server https://{} --token $(cat {})",
            self.app.server_address,
            token_path.display()
        );
        Ok(())
    }

    /// Serves the API over TLS until `shutdown` completes.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        serve::serve(self.listener, self.tls, self.router, shutdown).await
    }
}

/// The address other nodes and the `kubernetes` service reach us at.
fn advertise_address(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() && !bind.is_loopback() {
        return bind;
    }
    // The source address of the default route, found without sending anything.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn json_ok(v: &Value) -> Response {
    respond::json_response(200, respond::json_line(v), &[])
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Paths anyone may read, as upstream's system:public-info-viewer allows.
fn is_public(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz", "/version"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// Serves one request; a panic in handling it answers 500 with a Status
/// (and is logged with the request) instead of resetting the client's
/// stream, and leaves every other request alone.
async fn dispatch(state: State<Arc<App>>, req: Request) -> Response {
    use futures::FutureExt;
    // Kept for the log line only; formatted only if a panic happens.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    match std::panic::AssertUnwindSafe(handle(state, req)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            tracing::error!(request = %format!("{method} {uri}"), "panic while handling a request: {why}");
            ApiError::internal("an error on the server prevented the request from succeeding").into_response()
        }
    }
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    // Routed on the decoded path, as Go's URL.Path: clients escape names
    // (the Python client sends `system:node` as `system%3Anode`).
    let path = percent_encoding::percent_decode_str(&raw_path).decode_utf8_lossy().into_owned();
    let q = Query::parse(parts.uri.query());
    // Joining agents have no client certificate yet: the token is checked there.
    if join::is_join_path(&path) {
        return join::handle(app.joiner.get(), Request::from_parts(parts, body)).await;
    }
    // Requests over TLS carry the client certificate's identity; in-process
    // clients (controllers, scheduler, the local agent) carry none and are trusted.
    let mut parts = parts;
    if let Some(conn) = parts.extensions.get::<serve::Identity>() {
        let id = match app.registry.authn.authenticate(&app.registry, &parts.headers, conn).await {
            Ok(id) => id,
            Err(e) => return e.into_response(),
        };
        if id.is_anonymous() && !is_public(&path) {
            return authn::unauthorized().into_response();
        }
        parts.extensions.insert(id);
    }
    if let Some(r) = (parts.method == Method::GET).then(|| authn::oidc::handle(&app.registry.authn, &app.server_address, &path)).flatten() {
        return r;
    }
    // HTTP to a pod, a Service's endpoint or a node's agent, streamed both ways.
    // The proxied rest of the path goes on as the client escaped it.
    if let Some(target) = proxy::forward::target(&raw_path) {
        let (verb, resource) = (parts.method.to_string(), target.resource());
        let response = proxy::forward::handle(&app, target, Request::from_parts(parts, body)).await;
        app.metrics.observe(&verb, resource, response.status().as_u16(), start.elapsed());
        return response;
    }
    // Streamed from the pod's node agent: the body (and any upgrade) goes through untouched.
    if let Some(target) = proxy::target(&path) {
        let verb = target.verb();
        let response = proxy::handle(&app, target, Request::from_parts(parts, body)).await;
        app.metrics.observe(verb, "pods", response.status().as_u16(), start.elapsed());
        return response;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(413, "RequestEntityTooLarge", "the request body is too large").into_response(),
    };
    let (verb, resource, response) = route(&app, &parts.method, &path, &q, &parts.headers, body).await;
    let response = response.unwrap_or_else(IntoResponse::into_response);
    // A watch's latency is the time to start streaming, not its whole life.
    app.metrics.observe(verb, &resource, response.status().as_u16(), start.elapsed());
    response
}

async fn route(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &http::HeaderMap,
    body: Bytes,
) -> (&'static str, String, Result<Response, ApiError>) {
    let get = method == Method::GET;
    let nonresource = |r: Result<Response, ApiError>| ("GET", String::new(), r);
    match path {
        "/healthz" | "/livez" | "/readyz" | "/healthz/ping" | "/livez/ping" | "/readyz/ping" if get => {
            return nonresource(Ok(health(path, q)));
        }
        "/version" | "/version/" if get => {
            return nonresource(Ok(json_ok(&version())));
        }
        "/metrics" if get => return nonresource(Ok(text(StatusCode::OK, app.metrics.render()))),
        "/api" | "/api/" | "/apis" | "/apis/" if get => {
            let legacy = path.starts_with("/api") && !path.starts_with("/apis");
            if discovery::wants_aggregated(headers) {
                let body = Bytes::from(serde_json::to_vec(&discovery::aggregated(legacy)).unwrap());
                let r = Response::builder()
                    .header(http::header::CONTENT_TYPE, discovery::aggregated_content_type())
                    .header(http::header::VARY, "Accept")
                    .body(Body::from(body))
                    .unwrap();
                return nonresource(Ok(r));
            }
            let v = if legacy { discovery::core_versions(&app.server_address) } else { discovery::group_list() };
            return nonresource(Ok(json_ok(&v)));
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix(resource_metrics::PREFIX) {
        let resource = rest.split('/').find(|s| *s == "nodes" || *s == "pods").unwrap_or_default();
        let result = resource_metrics::handle(&app.resource_metrics, &app.registry, method, rest, q);
        return ("GET", format!("{resource}.metrics.k8s.io"), result);
    }
    if let Some(rest) = path.strip_prefix("/openapi/") {
        return nonresource(openapi_response(rest, headers));
    }
    match parse_path(method, path, q) {
        Err(e) => {
            let verb = match *method {
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::PATCH => "PATCH",
                Method::DELETE => "DELETE",
                _ => "GET",
            };
            (verb, String::new(), Err(e))
        }
        Ok(None) => nonresource(Err(ApiError::path_not_found())),
        Ok(Some(ApiPath::Group(g))) => nonresource(discovery::group(&g).map(|v| json_ok(&v)).ok_or_else(ApiError::path_not_found)),
        Ok(Some(ApiPath::GroupVersion { group, version })) => nonresource(
            discovery::resource_list(&group, &version).map(|v| json_ok(&v)).ok_or_else(ApiError::path_not_found),
        ),
        Ok(Some(ApiPath::Resource(r))) if r.info.kind == "ComponentStatus" => {
            (r.verb.metric_label(), r.info.plural.to_string(), components::handle(&app.registry, &r, q, headers).await)
        }
        Ok(Some(ApiPath::Resource(r))) => {
            let verb = r.verb.metric_label();
            let resource = r.info.plural.to_string();
            let result = handlers::handle(app.registry.clone(), r, q.clone(), headers.clone(), body).await;
            (verb, resource, result)
        }
    }
}

fn openapi_response(rest: &str, headers: &http::HeaderMap) -> Result<Response, ApiError> {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    // client-go reads /openapi/v2 only as protobuf (client-side validation, explain --output=plaintext-openapiv2).
    if rest.trim_end_matches('/') == "v2" && openapi::wants_v2_protobuf(accept) {
        return Ok(Response::builder()
            .header(http::header::CONTENT_TYPE, openapi::V2_PROTOBUF_CONTENT_TYPE)
            .body(Body::from(Bytes::from_static(openapi::v2_protobuf())))
            .unwrap());
    }
    if !openapi::accepts_json(accept) {
        return Err(ApiError::not_acceptable("application/json"));
    }
    let bytes = match rest.trim_end_matches('/') {
        "v2" => Some(openapi::v2()),
        "v3" => Some(openapi::v3_index()),
        p => p.strip_prefix("v3/").and_then(openapi::v3_group_version),
    };
    match bytes {
        Some(b) => Ok(respond::json_response(200, Bytes::from_static(b), &[])),
        None => Err(ApiError::path_not_found()),
    }
}

/// `/healthz`, `/livez` and `/readyz`; `?verbose` lists the checks and
/// names the endpoint in its last line, as upstream does.
fn health(path: &str, q: &Query) -> Response {
    if q.0.contains_key("verbose") {
        let checks = ["ping", "log", "etcd", "poststarthook/start-apiextensions-controllers", "poststarthook/bootstrap-controller"];
        let mut out: String = checks.iter().map(|c| format!("[+]{c} ok\n")).collect();
        let endpoint = path.trim_start_matches('/').split('/').next().unwrap_or("healthz");
        out.push_str(&format!("{endpoint} check passed\n"));
        return text(StatusCode::OK, out);
    }
    text(StatusCode::OK, "ok".into())
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": KUBERNETES_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"), "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rustc", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}
