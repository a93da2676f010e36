//! Port-forward over a plain WebSocket (`v4.channel.k8s.io`, its base64
//! form, or no subprotocol), as kube-rs and the Python client speak it and
//! upstream's kubelet serves it: the ports come from the query, one
//! connection to each is made at once, and port `i` gets data channel `2i`
//! and error channel `2i+1`. Each channel's first message carries the port
//! (u16, little endian); an error is text on the error channel. The
//! WebSocket closes once every port's connection has ended.

use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::portforward::Dialer;

/// The subprotocols upstream's kubelet accepts for WebSocket port-forward.
const BINARY: &str = "v4.channel.k8s.io";
const BASE64: &str = "v4.base64.channel.k8s.io";

/// After one direction of a forwarded connection ends, how long the other
/// may take to finish (as upstream's container runtime allows).
const OTHER_DIRECTION_GRACE: Duration = Duration::from_secs(1);

/// How channel messages are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: a channel byte, then the data.
    Binary,
    /// Text messages: the channel as an ASCII digit ('0' + n), then the data in base64.
    Base64,
}

impl Codec {
    /// The first protocol the client offers that we speak, as upstream picks
    /// it; no offer at all means binary with no protocol in the answer.
    pub fn negotiate(offered: &str) -> Option<(Codec, &'static str)> {
        let offered: Vec<&str> = offered.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if offered.is_empty() {
            return Some((Codec::Binary, ""));
        }
        offered.iter().find_map(|p| match *p {
            BINARY => Some((Codec::Binary, BINARY)),
            BASE64 => Some((Codec::Base64, BASE64)),
            _ => None,
        })
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => Message::Binary(super::channel::encode(channel, data).into()),
            Codec::Base64 => {
                let text = format!("{}{}", char::from(b'0' + channel), base64::engine::general_purpose::STANDARD.encode(data));
                Message::Text(text.into())
            }
        }
    }

    /// A client message's channel and data; text and binary messages alike,
    /// as upstream reads both.
    pub fn decode(self, msg: &[u8]) -> Option<(u8, Vec<u8>)> {
        let (&first, data) = msg.split_first()?;
        match self {
            Codec::Binary => Some((first, data.to_vec())),
            Codec::Base64 => Some((first.checked_sub(b'0')?, base64::engine::general_purpose::STANDARD.decode(data).ok()?)),
        }
    }
}

/// The ports of a WebSocket port-forward request: every `port` query value,
/// each a comma-separated list of ports from 1 to 65535.
pub fn parse_ports(values: &[String]) -> Result<Vec<u16>, String> {
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            let port: u16 = p.parse().map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Serves one session until every port's connection has ended or the client has gone.
pub async fn serve<S>(ws: WebSocketStream<S>, codec: Codec, ports: Vec<u16>, dial: Dialer, pod: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let last = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || last {
                break;
            }
        }
        // Flush any answer to the client's close and end the connection
        // cleanly (TLS close_notify), so a client still reading sees the end.
        let _ = sink.close().await;
    });

    // Every channel opens with its port, before any data.
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let _ = tx.send(codec.encode(channel as u8, &port.to_le_bytes())).await;
        }
    }
    let mut inbound = Vec::new();
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_tx, data_rx) = mpsc::channel::<Vec<u8>>(16);
        inbound.push(Some(data_tx));
        forwards.push(forward(dial.clone(), *port, pod.clone(), codec, 2 * i as u8, data_rx, tx.clone()));
    }
    let mut all_done = Box::pin(futures::future::join_all(forwards));

    let reader = async {
        while let Some(Ok(msg)) = source.next().await {
            let (channel, data) = match &msg {
                Message::Binary(b) => codec.decode(b),
                Message::Text(t) => codec.decode(t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            }
            .unwrap_or((u8::MAX, Vec::new()));
            // Only data channels take input; the rest is dropped, as upstream does.
            let Some(slot) = (channel % 2 == 0).then(|| inbound.get_mut(usize::from(channel / 2))).flatten() else { continue };
            if let Some(sender) = slot {
                if !data.is_empty() && sender.send(data).await.is_err() {
                    *slot = None;
                }
            }
        }
        // The client is gone: the pods' connections get their end of input.
        inbound.clear();
    };
    tokio::select! {
        _ = &mut all_done => {}
        _ = reader => { all_done.await; }
    }
    let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// One port: dials it and copies between the connection and data channel
/// `data_channel`; a failed dial is reported on the error channel after it.
async fn forward(
    dial: Dialer,
    port: u16,
    pod: String,
    codec: Codec,
    data_channel: u8,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Message>,
) {
    let tcp = match dial(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            tracing::debug!("{msg}");
            let _ = tx.send(codec.encode(data_channel + 1, msg.as_bytes())).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
    let mut upload = Box::pin(async move {
        while let Some(data) = from_client.recv().await {
            if tcp_wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = tcp_wr.shutdown().await;
    });
    let mut download = Box::pin(async move {
        let mut buf = vec![0u8; 32 << 10];
        while let Ok(n @ 1..) = tcp_rd.read(&mut buf).await {
            if tx.send(codec.encode(data_channel, &buf[..n])).await.is_err() {
                return;
            }
        }
    });
    // The first direction to end ends the forward; the other gets a moment.
    tokio::select! {
        _ = &mut upload => { let _ = tokio::time::timeout(OTHER_DIRECTION_GRACE, download).await; }
        _ = &mut download => { let _ = tokio::time::timeout(OTHER_DIRECTION_GRACE, upload).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_and_framing_as_upstream() {
        assert_eq!(Codec::negotiate("v5.channel.k8s.io, v4.channel.k8s.io"), Some((Codec::Binary, BINARY)));
        assert_eq!(Codec::negotiate(""), Some((Codec::Binary, "")));
        assert_eq!(Codec::negotiate("v4.base64.channel.k8s.io"), Some((Codec::Base64, BASE64)));
        assert_eq!(Codec::negotiate("v5.channel.k8s.io"), None);
        assert_eq!(Codec::Binary.encode(1, &[0x90, 0x1f]), Message::Binary(vec![1, 0x90, 0x1f].into()));
        assert_eq!(Codec::Base64.encode(1, b"hi"), Message::Text("1aGk=".into()));
        assert_eq!(Codec::Base64.decode(b"0aGk="), Some((0, b"hi".to_vec())));
        assert_eq!(Codec::Binary.decode(b"\x02ab"), Some((2, b"ab".to_vec())));
        assert_eq!(Codec::Binary.decode(b""), None);
    }

    #[test]
    fn ports_as_upstream_parses_them() {
        assert_eq!(parse_ports(&["8080".into(), "80,443".into()]), Ok(vec![8080, 80, 443]));
        assert!(parse_ports(&[]).unwrap_err().contains("required"));
        assert!(parse_ports(&["0".into()]).unwrap_err().contains("must be > 0"));
        assert!(parse_ports(&["http".into()]).unwrap_err().contains("unable to parse"));
        assert!(parse_ports(&["".into()]).unwrap_err().contains("cannot be empty"));
    }
}
