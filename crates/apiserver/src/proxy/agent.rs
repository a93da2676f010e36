//! One request to a node agent over TLS (the API server's kubelet client
//! certificate; the agent's certificate checked against the cluster CA):
//! a streamed GET, or an upgrade whose two connections are spliced.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderName, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::errors::{ApiError, ApiResult};

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an agent's error answer is read into the Status message.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Request headers an upgrade needs on the way to the agent.
const UPGRADE_REQUEST_HEADERS: &[&str] =
    &["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "x-stream-protocol-version"];
/// Response headers the client needs to complete its upgrade.
const UPGRADE_RESPONSE_HEADERS: &[&str] = &["connection", "upgrade", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

pub struct Agent {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Agent {
    fn authority(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }

    fn unreachable(&self, path: &str, e: impl std::fmt::Display) -> ApiError {
        ApiError::internal(format!("error dialing the node agent at https://{}{path}: {e}", self.authority()))
    }

    async fn connect(&self, path: &str) -> ApiResult<SendRequest<Empty<Bytes>>> {
        let dial = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(std::io::Error::other)?;
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await
        };
        let tls = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(self.unreachable(path, e)),
            Err(_) => return Err(self.unreachable(path, "timed out")),
        };
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| self.unreachable(path, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "connection to a node agent ended with an error");
            }
        });
        Ok(send)
    }

    /// GETs `path` and streams the agent's answer body through as it comes.
    pub async fn stream(&self, path: &str) -> ApiResult<Response> {
        let mut send = self.connect(path).await?;
        let req = http::Request::get(path).header(header::HOST, self.authority()).body(Empty::new()).expect("valid request");
        let resp = send.send_request(req).await.map_err(|e| self.unreachable(path, e))?;
        if !resp.status().is_success() {
            return Err(agent_error(resp).await);
        }
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(header::HeaderValue::from_static("text/plain"));
        Ok(Response::builder().header(header::CONTENT_TYPE, content_type).body(Body::new(resp.into_body())).expect("valid response"))
    }

    /// GETs `path` and reads the whole answer (at most `limit` bytes).
    pub async fn fetch(&self, path: &str, limit: usize) -> ApiResult<Bytes> {
        let mut send = self.connect(path).await?;
        let req = http::Request::get(path).header(header::HOST, self.authority()).body(Empty::new()).expect("valid request");
        let resp = send.send_request(req).await.map_err(|e| self.unreachable(path, e))?;
        if !resp.status().is_success() {
            return Err(agent_error(resp).await);
        }
        let body = Limited::new(resp.into_body(), limit).collect().await.map_err(|e| self.unreachable(path, e))?;
        Ok(body.to_bytes())
    }

    /// Forwards an upgrade request to `path`; on the agent's 101 answers 101
    /// to the client and splices the two upgraded connections.
    pub async fn upgrade(&self, path: &str, mut req: Request) -> ApiResult<Response> {
        let from_client = hyper::upgrade::on(&mut req);
        let mut out = http::Request::builder().method(req.method().clone()).uri(path).header(header::HOST, self.authority());
        for name in UPGRADE_REQUEST_HEADERS {
            for value in req.headers().get_all(*name) {
                out = out.header(*name, value);
            }
        }
        let out = out.body(Empty::new()).expect("valid request");
        let mut send = self.connect(path).await?;
        let mut resp = send.send_request(out).await.map_err(|e| self.unreachable(path, e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(agent_error(resp).await);
        }
        let from_agent = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for name in UPGRADE_RESPONSE_HEADERS {
            for value in resp.headers().get_all(HeaderName::from_static(name)) {
                answer = answer.header(*name, value);
            }
        }
        tokio::spawn(async move {
            match tokio::join!(from_client, from_agent) {
                (Ok(client), Ok(agent)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent)).await;
                }
                (c, a) => tracing::debug!(client = ?c.err(), agent = ?a.err(), "upgrade to a node agent did not complete"),
            }
        });
        Ok(answer.body(Body::empty()).expect("valid response"))
    }
}

/// The agent's plain-text refusal as a Status, as upstream's response checker does.
async fn agent_error(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status();
    let body = match Limited::new(resp.into_body(), MAX_ERROR_BODY).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(e) => format!("reading the node agent's answer: {e}"),
    };
    match code {
        StatusCode::BAD_REQUEST => ApiError::bad_request(body),
        StatusCode::NOT_FOUND => ApiError::new(404, "NotFound", body),
        _ => ApiError::internal(format!("the node agent answered {code}: {body}")),
    }
}
