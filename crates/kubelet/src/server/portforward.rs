//! `kubectl port-forward` over SPDY/3.1 (plain, or tunneled in WebSocket):
//! the client opens, per forwarded connection, an error stream and a data
//! stream sharing a `requestid`; we dial the pod's port and copy bytes
//! between the data stream and that TCP connection, and report a failure as
//! text on the error stream.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::spdy::{self, Frame};

/// Opens a TCP connection to a port of the pod.
pub type Dialer = Arc<dyn Fn(u16) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// The data and error streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: Option<u16>,
    data: Option<(u32, mpsc::Receiver<Vec<u8>>)>,
    error: Option<u32>,
}

/// Serves one port-forward connection until the client goes away; `pod`
/// names the pod in error messages.
pub async fn serve_session<IO>(io: IO, dial: Dialer, pod: String) -> Result<()>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (frames, mut outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut enc = spdy::Encoder::default();
        while let Some(frame) = outgoing.recv().await {
            let bytes = match enc.encode(&frame) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "encoding a SPDY frame");
                    break;
                }
            };
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut dec = spdy::Decoder::default();
    let mut buf = BytesMut::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let result = loop {
        let frame = match spdy::read_frame(&mut rd, &mut dec, &mut buf).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match frame {
            Frame::SynStream { stream_id, headers, fin, .. } => {
                let _ = frames.send(Frame::SynReply { stream_id, fin: false, headers: vec![] }).await;
                let kind = spdy::header(&headers, "streamtype").unwrap_or("").to_string();
                let request = spdy::header(&headers, "requestid").unwrap_or("").to_string();
                let port = spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = pair.port.or(port);
                match kind.as_str() {
                    "error" => pair.error = Some(stream_id),
                    "data" => {
                        let (tx, rx) = mpsc::channel(16);
                        if !fin {
                            inbound.insert(stream_id, tx);
                        }
                        pair.data = Some((stream_id, rx));
                    }
                    other => {
                        tracing::debug!(stream_id, streamtype = other, "unknown port-forward stream type");
                        let _ = frames.send(Frame::RstStream { stream_id, status: spdy::RST_PROTOCOL_ERROR }).await;
                        continue;
                    }
                }
                if pair.data.is_some() && pair.error.is_some() {
                    let pair = pairs.remove(&request).unwrap_or_default();
                    let (data_id, data_rx) = pair.data.expect("checked");
                    let error_id = pair.error.expect("checked");
                    forwards.spawn(forward(dial.clone(), pod.clone(), pair.port, data_id, error_id, data_rx, frames.clone()));
                }
            }
            Frame::Data { stream_id, fin, data } => {
                if let Some(tx) = inbound.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        inbound.remove(&stream_id);
                    }
                }
                if fin {
                    inbound.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                inbound.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = frames.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break Ok(()),
            // No flow control: kubectl's SPDY stack keeps none either.
            _ => {}
        }
    };
    inbound.clear();
    forwards.shutdown().await;
    drop(frames);
    let _ = writer.await;
    result
}

/// Copies between one data stream and a new connection to `port`.
async fn forward(
    dial: Dialer,
    pod: String,
    port: Option<u16>,
    data_id: u32,
    error_id: u32,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
) {
    let fin = |stream_id: u32| Frame::Data { stream_id, fin: true, data: vec![] };
    let conn = match port {
        None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the stream names no valid port")),
        Some(p) => dial(p).await,
    };
    let tcp = match conn {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {} to pod {pod}: {e}", port.unwrap_or(0));
            tracing::debug!("{msg}");
            let _ = frames.send(Frame::Data { stream_id: error_id, fin: false, data: msg.into_bytes() }).await;
            let _ = frames.send(fin(error_id)).await;
            let _ = frames.send(fin(data_id)).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
    let upload = async move {
        while let Some(data) = from_client.recv().await {
            if tcp_wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = tcp_wr.shutdown().await;
    };
    let download = {
        let frames = frames.clone();
        async move {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n @ 1..) = tcp_rd.read(&mut buf).await {
                if frames.send(Frame::Data { stream_id: data_id, fin: false, data: buf[..n].to_vec() }).await.is_err() {
                    return;
                }
            }
            let _ = frames.send(fin(data_id)).await;
        }
    };
    tokio::join!(upload, download);
    let _ = frames.send(fin(error_id)).await;
}
