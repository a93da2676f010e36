//! Bridges a WebSocket channel-protocol session (`kubectl exec`/`attach`)
//! with a running process: client stdin and resizes go in, stdout/stderr
//! come out, and the exit code is reported on the error channel before the
//! connection closes.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use runtime::cri::ExecProcess;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{self, Incoming, Protocol};

/// After the process exits, how long its output may take to drain (a
/// background child can keep the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// What the client asked for (`stdin`, `stdout`, `stderr`, `tty` query flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How the session ends on the error channel.
#[derive(Clone, Debug)]
pub enum ExitReport {
    /// exec: Success, or NonZeroExitCode with the code, naming the command.
    ExitCode { command: Vec<String> },
    /// attach: Success when the container's process ends.
    SuccessOnEnd,
}

/// Runs the session until the process exits (then reports and closes) or
/// the client goes away (then closes stdin and returns).
pub async fn bridge<S>(ws: WebSocketStream<S>, protocol: Protocol, mut process: ExecProcess, streams: Streams, report: ExitReport)
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
    });

    let exit = std::mem::replace(&mut process.exit, tokio::sync::oneshot::channel().1);
    let stdin = process.stdin.take().filter(|_| streams.stdin);
    let mut pumps = Vec::new();
    if let Some(out) = process.stdout.take() {
        pumps.push(tokio::spawn(pump(out, channel::STDOUT, streams.stdout, tx.clone())));
    }
    if let Some(err) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(err, channel::STDERR, streams.stderr && !streams.tty, tx.clone())));
    }
    let process = Arc::new(process);

    let resizer = process.clone();
    let mut reader = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(Ok(msg)) = source.next().await {
            // Text messages carry the same channel bytes: the Python client
            // sends a str written to stdin as one, and upstream reads both.
            let data = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.into(),
                Message::Close(_) => break,
                _ => continue,
            };
            match channel::decode(protocol, &data) {
                Incoming::Stdin(bytes) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(bytes).await.is_err() || s.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Incoming::Resize { width, height } => {
                    if let Err(e) = resizer.resize(width, height) {
                        tracing::debug!(error = %e, "terminal resize failed");
                    }
                }
                // Dropping the pipe gives the process its end of input.
                Incoming::Close(channel::STDIN) => stdin = None,
                _ => {}
            }
        }
    });

    let code = tokio::select! {
        code = exit => Some(code),
        _ = &mut reader => None,
    };
    match code {
        None => tracing::debug!("streaming client went away before the process ended"),
        Some(code) => {
            let drained = futures::future::join_all(pumps);
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drained).await;
            let status = match (code, &report) {
                (Ok(code), ExitReport::ExitCode { command }) => channel::exit_status(protocol, command, code),
                (Ok(_), ExitReport::SuccessOnEnd) => channel::exit_status(protocol, &[], 0),
                (Err(_), _) => channel::failure(protocol, "the runtime lost track of the process"),
            };
            if !status.is_empty() {
                let _ = tx.send(Message::Binary(channel::encode(channel::ERROR, &status).into())).await;
            }
            let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
            reader.abort();
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Copies one output of the process to its channel; output nobody asked
/// for is read and dropped so the process never blocks on a full pipe.
async fn pump(mut src: tokio::fs::File, channel: u8, forward: bool, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 << 10];
    let mut forward = forward;
    loop {
        match src.read(&mut buf).await {
            // A pty master reads EIO once the terminal's last user is gone: its end.
            Ok(0) | Err(_) => break,
            Ok(n) if forward => {
                if tx.send(Message::Binary(channel::encode(channel, &buf[..n]).into())).await.is_err() {
                    forward = false;
                }
            }
            Ok(_) => {}
        }
    }
}
