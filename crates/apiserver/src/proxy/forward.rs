//! The `proxy` subresources of pods, services and nodes: any HTTP request
//! under `.../pods/NAME[:PORT]/proxy/PATH` goes to that pod, under
//! `.../services/NAME[:PORT]/proxy/PATH` to one ready endpoint of the
//! Service, and under `/api/v1/nodes/NAME[:PORT]/proxy/PATH` to the node's
//! agent. This is what `kubectl proxy` URLs, dashboards and
//! `kubectl get --raw .../proxy/...` reach pods through. As upstream, a
//! `https:` prefix on the name speaks TLS without checking the pod's
//! certificate, and the answer streams back as it comes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderName};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::errors::{ApiError, ApiResult};
use crate::App;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "authorization"];

#[derive(Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    kind: Kind,
    namespace: Option<String>,
    scheme: Option<String>,
    name: String,
    port: Option<String>,
    /// The path on the target, with its leading slash.
    rest: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pod,
    Service,
    Node,
}

/// Recognizes `/api/v1/namespaces/NS/{pods|services}/ID/proxy[/...]` and
/// `/api/v1/nodes/ID/proxy[/...]`, where ID is `[scheme:]name[:port]`.
pub fn target(path: &str) -> Option<ProxyTarget> {
    let rest = path.strip_prefix("/api/v1/")?;
    let (kind, namespace, rest) = if let Some(r) = rest.strip_prefix("nodes/") {
        (Kind::Node, None, r)
    } else {
        let r = rest.strip_prefix("namespaces/")?;
        let (ns, r) = r.split_once('/')?;
        let (kind, r) = if let Some(r) = r.strip_prefix("pods/") {
            (Kind::Pod, r)
        } else {
            (Kind::Service, r.strip_prefix("services/")?)
        };
        (kind, Some(ns.to_string()), r)
    };
    let (id, r) = rest.split_once('/')?;
    // `name:port` arrives escaped from some clients (the Python client sends `web%3A8080`).
    let id = percent_encoding::percent_decode_str(id).decode_utf8().ok()?;
    let after = r.strip_prefix("proxy")?;
    if !(after.is_empty() || after.starts_with('/')) {
        return None;
    }
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => (None, *name, None),
        [name, port] => (None, *name, Some(*port)),
        [scheme, name, port] => (Some(*scheme), *name, Some(*port)),
        _ => return None,
    };
    Some(ProxyTarget {
        kind,
        namespace,
        scheme: scheme.filter(|s| !s.is_empty()).map(String::from),
        name: name.to_string(),
        port: port.filter(|p| !p.is_empty()).map(String::from),
        rest: if after.is_empty() { "/".into() } else { after.to_string() },
    })
}

impl ProxyTarget {
    pub fn resource(&self) -> &'static str {
        match self.kind {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Node => "nodes",
        }
    }
}

pub async fn handle(app: &Arc<App>, t: ProxyTarget, req: Request) -> Response {
    match route(app, &t, req).await {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

async fn route(app: &Arc<App>, t: &ProxyTarget, req: Request) -> ApiResult<Response> {
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let path = format!("{}{query}", t.rest);
    let core = |plural| resources::catalog::lookup("", "v1", plural).expect("core kinds are in the catalog");
    match t.kind {
        Kind::Node => {
            let node = app.registry.get(core("nodes"), None, &t.name).await?;
            let (host, default_port) = super::agent_address(&node)
                .ok_or_else(|| ApiError::internal(format!("node {} has no address to reach its agent at", t.name)))?;
            let port = parse_port(t.port.as_deref(), default_port)?;
            let tls = super::agent_tls(app)?;
            let tcp = dial(&host, port).await?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(ApiError::internal)?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| unreachable(&host, port, e))?;
            forward(stream, &host, port, &path, req).await
        }
        Kind::Pod => {
            let pod = app.registry.get(core("pods"), t.namespace.as_deref(), &t.name).await?;
            let ip = pod["status"]["podIP"].as_str().filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", format!("pod {} has no IP address yet", t.name)))?
                .to_string();
            let port = match t.port.as_deref() {
                Some(p) => parse_port(Some(p), 80).or_else(|_| named_container_port(&pod, p))?,
                None => first_container_port(&pod).unwrap_or(80),
            };
            connect_and_forward(t.scheme.as_deref(), &ip, port, &path, req).await
        }
        Kind::Service => {
            let ns = t.namespace.as_deref();
            let svc = app.registry.get(core("services"), ns, &t.name).await?;
            let (ip, port) = service_endpoint(app, &svc, ns.unwrap_or("default"), t).await?;
            connect_and_forward(t.scheme.as_deref(), &ip, port, &path, req).await
        }
    }
}

fn parse_port(p: Option<&str>, default: u16) -> ApiResult<u16> {
    match p {
        None => Ok(default),
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| ApiError::bad_request(format!("invalid port {p:?}"))),
    }
}

fn container_ports(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["containers"].as_array().into_iter().flatten().flat_map(|c| c["ports"].as_array().into_iter().flatten())
}

/// Upstream's default: the first port any container declares.
fn first_container_port(pod: &Value) -> Option<u16> {
    container_ports(pod).find_map(|p| p["containerPort"].as_u64()).and_then(|p| u16::try_from(p).ok())
}

fn named_container_port(pod: &Value, name: &str) -> ApiResult<u16> {
    container_ports(pod)
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid port {name:?}: no container port of that name")))
}

/// A ready endpoint for the Service port named (by name or number) in the
/// target, or its only port: the endpoint's address and target port.
async fn service_endpoint(app: &Arc<App>, svc: &Value, ns: &str, t: &ProxyTarget) -> ApiResult<(String, u16)> {
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let wanted = t.port.as_deref();
    let port = ports
        .iter()
        .find(|p| match wanted {
            None => ports.len() == 1,
            Some(w) => p["name"] == w || p["port"].as_u64().is_some_and(|n| n.to_string() == w),
        })
        .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", format!("no service port {:?} found for service {:?}", wanted.unwrap_or(""), t.name)))?;
    let port_name = port["name"].as_str().unwrap_or("");
    let slices = resources::catalog::lookup("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices are in the catalog");
    let prefix = crate::registry::collection_prefix(slices, Some(ns));
    app.registry.cache.sync().await?;
    for slice in app.registry.cache.prefix(slices.storage).snapshot(&prefix).iter().map(|c| c.obj()) {
        if slice["metadata"]["labels"]["kubernetes.io/service-name"] != t.name.as_str() {
            continue;
        }
        let Some(target_port) = slice["ports"].as_array().into_iter().flatten().find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64()).and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        let ready = slice["endpoints"].as_array().into_iter().flatten().find(|e| e["conditions"]["ready"] != false);
        if let Some(ip) = ready.and_then(|e| e["addresses"][0].as_str()) {
            return Ok((ip.to_string(), target_port));
        }
    }
    Err(ApiError::new(503, "ServiceUnavailable", format!("no endpoints available for service \"{}\"", t.name)))
}

async fn dial(host: &str, port: u16) -> ApiResult<tokio::net::TcpStream> {
    match tokio::time::timeout(super::agent::CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(unreachable(host, port, e)),
        Err(_) => Err(unreachable(host, port, "timed out")),
    }
}

fn unreachable(host: &str, port: u16, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", format!("error trying to reach service: dial tcp {host}:{port}: {e}"))
}

async fn connect_and_forward(scheme: Option<&str>, ip: &str, port: u16, path: &str, req: Request) -> ApiResult<Response> {
    let tcp = dial(ip, port).await?;
    match scheme {
        None | Some("http") => forward(tcp, ip, port, path, req).await,
        Some("https") => {
            // Upstream's pod and service proxies do not verify the backend's certificate.
            let config = crate::pki::insecure_client_tls_config();
            let name = rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(ApiError::internal)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| unreachable(ip, port, e))?;
            forward(tls, ip, port, path, req).await
        }
        Some(other) => Err(ApiError::bad_request(format!("unsupported scheme {other:?}: use http or https"))),
    }
}

/// Sends `req` (method, headers but hop-by-hop ones and credentials, body)
/// to `path` over `stream` and streams the answer back.
async fn forward<S>(stream: S, host: &str, port: u16, path: &str, req: Request) -> ApiResult<Response>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(host, port, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "proxied connection ended with an error");
        }
    });
    let (parts, body) = req.into_parts();
    let mut out = http::Request::builder().method(parts.method).uri(path).header(header::HOST, format!("{host}:{port}"));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != header::HOST {
            out = out.header(name, value);
        }
    }
    let out = out.body(body).map_err(ApiError::internal)?;
    let resp = send.send_request(out).await.map_err(|e| unreachable(host, port, e))?;
    let (parts, body) = resp.into_parts();
    let mut answer = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            answer = answer.header(HeaderName::from(name), value);
        }
    }
    answer.body(Body::new(body)).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_proxy_paths_with_scheme_name_and_port() {
        let t = target("/api/v1/namespaces/web/services/https:front:8443/proxy/a/b").unwrap();
        assert_eq!((t.kind, t.namespace.as_deref(), t.scheme.as_deref(), t.name.as_str(), t.port.as_deref(), t.rest.as_str()),
            (Kind::Service, Some("web"), Some("https"), "front", Some("8443"), "/a/b"));
        let t = target("/api/v1/namespaces/d/pods/p/proxy").unwrap();
        assert_eq!((t.kind, t.name.as_str(), t.port, t.rest.as_str()), (Kind::Pod, "p", None, "/"));
        let t = target("/api/v1/nodes/n1:10250/proxy/healthz").unwrap();
        assert_eq!((t.kind, t.namespace, t.port.as_deref(), t.rest.as_str()), (Kind::Node, None, Some("10250"), "/healthz"));
        let t = target("/api/v1/namespaces/d/services/web:/proxy/").unwrap();
        assert_eq!((t.port, t.rest.as_str()), (None, "/"));
        // The Python client escapes the colon.
        let t = target("/api/v1/namespaces/d/pods/web%3A8080/proxy/index.html").unwrap();
        assert_eq!((t.name.as_str(), t.port.as_deref(), t.rest.as_str()), ("web", Some("8080"), "/index.html"));
        for other in ["/api/v1/namespaces/d/pods/p/log", "/api/v1/namespaces/d/pods/p/proxyx", "/api/v1/namespaces/d/configmaps/c/proxy", "/apis/apps/v1/nodes/n/proxy"] {
            assert_eq!(target(other), None, "{other}");
        }
    }

    #[test]
    fn pod_ports_by_default_and_by_name() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}]}});
        assert_eq!(first_container_port(&pod), Some(8080));
        assert_eq!(named_container_port(&pod, "http").unwrap(), 8080);
        assert_eq!(named_container_port(&pod, "nope").unwrap_err().code, 400);
    }
}
