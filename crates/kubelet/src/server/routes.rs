//! The agent's streaming endpoints, shaped like upstream kubelet's:
//! `/containerLogs/{ns}/{pod}/{container}`, `/exec/...`, `/attach/...`
//! (`{ns}/{pod}[/{uid}]/{container}`), `/portForward/{ns}/{pod}[/{uid}]`,
//! and resource usage at `/metrics/resource` and `/stats/summary`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use runtime::cri::{ContainerState, RuntimeService};
use tokio::sync::{mpsc, watch};

use super::channel::Protocol;
use super::exec::{self, ExitReport, Streams};
use super::logs::{self, LogOptions};
use super::metrics;
use super::lookup::{self, HttpError};
use super::portforward::{self, Dialer};
use super::portforward_ws;
use super::upgrade;

pub type Body = BoxBody<Bytes, Infallible>;

/// How often a followed container is checked for having exited.
const FOLLOW_STATUS_POLL: Duration = Duration::from_secs(1);

pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().unwrap());
    resp
}

fn error(e: HttpError) -> Response<Body> {
    text(e.status, e.message)
}

fn empty_body() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// Query parameters in order, repeated names kept (`command=a&command=b`).
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(q: Option<&str>) -> Self {
        QueryParams(url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
    /// Go's strconv.ParseBool truths; a bare `?follow` counts too.
    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "t" | "T" | "true" | "TRUE" | "True" | ""))
    }
    fn number(&self, name: &str) -> Result<Option<i64>, HttpError> {
        self.get(name).map(|v| v.parse::<i64>().map_err(|_| HttpError::bad_request(format!("invalid {name}: {v:?}")))).transpose()
    }
}

pub async fn handle(rt: Arc<dyn RuntimeService>, node_name: &str, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> =
        path.trim_matches('/').split('/').map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = QueryParams::parse(req.uri().query());
    let streaming = matches!(*req.method(), Method::GET | Method::POST);
    let result = match (segs.as_slice(), req.method()) {
        (["healthz"], &Method::GET) => Ok(text(StatusCode::OK, "ok")),
        (["metrics", "resource"], &Method::GET) => metrics::resource(rt.as_ref()).await.map(|body| {
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut().insert(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8".parse().unwrap());
            resp
        }),
        (["stats", "summary"], &Method::GET) => metrics::summary(rt.as_ref(), node_name).await.map(|v| {
            let mut resp = text(StatusCode::OK, v.to_string());
            resp.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            resp
        }),
        (["containerLogs", ns, pod, container], &Method::GET) => container_logs(rt, ns, pod, container, &q).await,
        (["exec", ns, pod, container] | ["exec", ns, pod, _, container], _) if streaming => {
            let upgrade = hyper::upgrade::on(&mut req);
            exec(rt, ns, pod, container, &q, req.headers(), upgrade, false).await
        }
        (["attach", ns, pod, container] | ["attach", ns, pod, _, container], _) if streaming => {
            let upgrade = hyper::upgrade::on(&mut req);
            exec(rt, ns, pod, container, &q, req.headers(), upgrade, true).await
        }
        (["portForward", ns, pod] | ["portForward", ns, pod, _], _) if streaming => {
            let upgrade = hyper::upgrade::on(&mut req);
            port_forward(rt, ns, pod, &q, req.headers(), upgrade).await
        }
        _ => Err(HttpError::not_found("404 page not found")),
    };
    result.unwrap_or_else(error)
}

async fn container_logs(rt: Arc<dyn RuntimeService>, ns: &str, pod: &str, name: &str, q: &QueryParams) -> Result<Response<Body>, HttpError> {
    let previous = q.flag("previous");
    let container = lookup::container(rt.as_ref(), ns, pod, name, previous).await?;
    let mut since = match q.get("sinceTime") {
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t).map_err(|_| HttpError::bad_request(format!("invalid sinceTime: {t:?}")))?.with_timezone(&Utc),
        ),
        None => None,
    };
    if let Some(secs) = q.number("sinceSeconds")? {
        since = Some(Utc::now() - chrono::Duration::seconds(secs.max(0)));
    }
    let opts = LogOptions {
        follow: q.flag("follow"),
        tail_lines: q.number("tailLines")?.and_then(|n| usize::try_from(n).ok()),
        since,
        limit_bytes: q.number("limitBytes")?.and_then(|n| usize::try_from(n).ok()),
        timestamps: q.flag("timestamps"),
    };
    let path: PathBuf = container.log_path.clone();
    if !path.exists() {
        // Created, but nothing written yet.
        return Ok(Response::new(empty_body()));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (running_tx, running_rx) = watch::channel(container.state == ContainerState::Running);
    if opts.follow && container.state == ContainerState::Running {
        let watcher_tx = tx.clone();
        let id = container.id.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_STATUS_POLL) => {}
                    _ = watcher_tx.closed() => return,
                }
                let running = matches!(rt.container_status(&id).await, Ok(s) if s.state == ContainerState::Running);
                if !running {
                    let _ = running_tx.send(false);
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = logs::stream_log(path, opts, tx, running_rx).await {
            tracing::warn!(error = %format!("{e:#}"), "streaming a container log");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx)) });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn exec(
    rt: Arc<dyn RuntimeService>,
    ns: &str,
    pod: &str,
    name: &str,
    q: &QueryParams,
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
    attach: bool,
) -> Result<Response<Body>, HttpError> {
    let streams = Streams { stdin: q.flag("stdin"), stdout: q.flag("output") || q.flag("stdout"), stderr: q.flag("stderr"), tty: q.flag("tty") };
    let command = q.all("command");
    if !attach && command.is_empty() {
        return Err(HttpError::bad_request("you must specify at least one command for the container"));
    }
    if !(streams.stdin || streams.stdout || streams.stderr) {
        return Err(HttpError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if !upgrade::is_websocket(headers) {
        return Err(HttpError::bad_request("exec and attach need a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io)"));
    }
    let offered = upgrade::offered_protocols(headers);
    let protocol = Protocol::negotiate(&offered).ok_or_else(|| {
        HttpError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{offered}], server supports {:?}",
            Protocol::supported_names()
        ))
    })?;
    let container = lookup::running_container(rt.as_ref(), ns, pod, name).await?;
    let response = upgrade::websocket_accept(headers, protocol.name()).map_err(HttpError::bad_request)?;
    let (process, report) = if attach {
        (rt.attach(&container.id, streams.stdin).await, ExitReport::SuccessOnEnd)
    } else {
        (rt.exec(&container.id, &command, streams.tty, streams.stdin).await, ExitReport::ExitCode { command })
    };
    let process = process.map_err(HttpError::internal)?;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => exec::bridge(upgrade::server_websocket(upgraded).await, protocol, process, streams, report).await,
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    Ok(response.map(|()| empty_body()))
}

/// Dials ports inside the pod's network namespace (the host's with hostNetwork).
fn pod_dialer(netns: Option<PathBuf>) -> Dialer {
    Arc::new(move |port| {
        let netns = netns.clone();
        Box::pin(async move {
            let Some(netns) = netns else { return tokio::net::TcpStream::connect(("127.0.0.1", port)).await };
            let std = tokio::task::spawn_blocking(move || network::connect_in_netns(&netns, port)).await.map_err(std::io::Error::other)??;
            std.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(std)
        })
    })
}

async fn port_forward(
    rt: Arc<dyn RuntimeService>,
    ns: &str,
    pod: &str,
    q: &QueryParams,
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Result<Response<Body>, HttpError> {
    let sandbox = lookup::ready_sandbox(rt.as_ref(), ns, pod).await?;
    let dial = pod_dialer(sandbox.netns_path.clone());
    let pod = format!("{ns}/{pod}");
    if upgrade::is_websocket(headers) && !upgrade::offers_spdy_tunnel(headers) {
        return serve_port_forward_websocket(headers, &q.all("port"), upgrade, dial, pod);
    }
    serve_port_forward(headers, upgrade, dial, pod)
}

/// Answers a SPDY port-forward upgrade (plain, or tunneled in WebSocket) and serves the session.
fn serve_port_forward(headers: &HeaderMap, upgrade: hyper::upgrade::OnUpgrade, dial: Dialer, pod: String) -> Result<Response<Body>, HttpError> {
    let tunneled = upgrade::is_websocket(headers) && upgrade::offers_spdy_tunnel(headers);
    let response = if tunneled {
        upgrade::websocket_accept(headers, upgrade::SPDY_TUNNEL_PROTOCOL).map_err(HttpError::bad_request)?
    } else if upgrade::is_spdy(headers) && upgrade::offers_port_forward(headers) {
        upgrade::spdy_accept()
    } else {
        return Err(HttpError::bad_request(
            "port-forward needs an upgrade to SPDY/3.1 with X-Stream-Protocol-Version portforward.k8s.io, or to WebSocket (v4.channel.k8s.io, or SPDY/3.1+portforward.k8s.io)",
        ));
    };
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "port-forward upgrade failed"),
        };
        let result = if tunneled {
            let ws = upgrade::server_websocket(upgraded).await;
            portforward::serve_session(upgrade::tunnel(ws), dial, pod).await
        } else {
            portforward::serve_session(hyper_util::rt::TokioIo::new(upgraded), dial, pod).await
        };
        if let Err(e) = result {
            tracing::debug!(error = %format!("{e:#}"), "port-forward session ended");
        }
    });
    Ok(response.map(|()| empty_body()))
}

/// Answers a plain WebSocket port-forward upgrade (kube-rs, the Python client) and serves the session.
fn serve_port_forward_websocket(
    headers: &HeaderMap,
    ports: &[String],
    upgrade: hyper::upgrade::OnUpgrade,
    dial: Dialer,
    pod: String,
) -> Result<Response<Body>, HttpError> {
    let ports = portforward_ws::parse_ports(ports).map_err(HttpError::bad_request)?;
    let offered = upgrade::offered_protocols(headers);
    let (codec, protocol) = portforward_ws::Codec::negotiate(&offered).ok_or_else(|| {
        HttpError::bad_request(format!(
            "unable to upgrade websocket connection: requested protocol(s) are not supported: [{offered}]; supports [v4.channel.k8s.io v4.base64.channel.k8s.io SPDY/3.1+portforward.k8s.io]"
        ))
    })?;
    let response = upgrade::websocket_accept(headers, protocol).map_err(HttpError::bad_request)?;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => portforward_ws::serve(upgrade::server_websocket(upgraded).await, codec, ports, dial, pod).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Ok(response.map(|()| empty_body()))
}
