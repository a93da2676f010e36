//! Connection upgrades: the WebSocket handshake (exec/attach and tunneled
//! port-forward), plain `SPDY/3.1` upgrades (port-forward), and the byte
//! stream kubectl tunnels through WebSocket binary messages.

use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Port-forward's SPDY streams tunneled through WebSocket (kubectl 1.31+).
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(header_str(headers, header::CONNECTION), "upgrade") && has_token(header_str(headers, header::UPGRADE), "websocket")
}

/// A plain SPDY upgrade asking for the port-forward protocol.
pub fn is_spdy(headers: &HeaderMap) -> bool {
    has_token(header_str(headers, header::CONNECTION), "upgrade") && header_str(headers, header::UPGRADE).eq_ignore_ascii_case("SPDY/3.1")
}

pub fn offered_protocols(headers: &HeaderMap) -> String {
    headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",")
}

pub fn offers_spdy_tunnel(headers: &HeaderMap) -> bool {
    has_token(&offered_protocols(headers), SPDY_TUNNEL_PROTOCOL)
}

pub fn offers_port_forward(headers: &HeaderMap) -> bool {
    headers.get_all("x-stream-protocol-version").iter().filter_map(|v| v.to_str().ok()).any(|v| has_token(v, PORT_FORWARD_PROTOCOL))
}

/// The 101 answer to a WebSocket handshake choosing `protocol`.
pub fn websocket_accept<B: Default>(headers: &HeaderMap, protocol: &str) -> Result<Response<B>, String> {
    if header_str(headers, header::SEC_WEBSOCKET_VERSION) != "13" {
        return Err("unsupported WebSocket version (want 13)".into());
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?;
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|e| e.to_string())?);
    // No subprotocol offered (port-forward allows that): none answered.
    if !protocol.is_empty() {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(protocol).map_err(|e| e.to_string())?);
    }
    Ok(resp)
}

/// The 101 answer to a SPDY/3.1 port-forward upgrade.
pub fn spdy_accept<B: Default>() -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert("x-stream-protocol-version", HeaderValue::from_static(PORT_FORWARD_PROTOCOL));
    resp
}

pub async fn server_websocket(upgraded: Upgraded) -> WebSocketStream<TokioIo<Upgraded>> {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
}

/// The byte stream carried in a WebSocket's binary messages, as kubectl
/// tunnels SPDY: what is written to the returned end goes out as one
/// binary message per write; what arrives comes out of its read side.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        let (mut from_session, mut to_session) = tokio::io::split(theirs);
        let inbound = async move {
            while let Some(Ok(msg)) = source.next().await {
                match msg {
                    Message::Binary(b) if to_session.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = to_session.shutdown().await;
        };
        let outbound = async move {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n @ 1..) = from_session.read(&mut buf).await {
                if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
        };
        // The session ends when either side does; the other gets a moment to finish.
        let inbound = tokio::spawn(inbound);
        outbound.await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), inbound).await;
    });
    ours
}
