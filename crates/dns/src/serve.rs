//! Serving DNS over UDP and TCP: each message is parsed, answered from the
//! index (synchronously, no await) or forwarded upstream (in a task of its
//! own, so a slow resolver holds up nobody else).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::answer::{answer, Answer, Outcome};
use crate::forward::Upstreams;
use crate::index::Index;
use crate::wire::{self, Builder, Parsed, Query};

/// How long an idle TCP connection is kept (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once; more wait to be accepted.
const MAX_TCP: usize = 256;
/// UDP receive loops per socket.
const UDP_LOOPS: usize = 4;
/// Queries for outside names each receive loop forwards at once.
const MAX_UDP_FORWARDS: usize = 256;

pub struct Handler {
    pub index: Arc<Index>,
    pub upstreams: Upstreams,
}

/// What to do with one message.
pub enum Step {
    Reply(Vec<u8>),
    /// Needs the upstream resolvers (forwarding, or following a CNAME out of the zone).
    Upstream(Query, Option<Answer>),
    Drop,
}

impl Handler {
    /// Everything that needs no network: parse, answer from the index.
    /// `tcp`: no size limit but the 64 KiB of a TCP message.
    pub fn local(&self, msg: &[u8], tcp: bool) -> Step {
        let q = match wire::parse_query(msg) {
            Parsed::Query(q) => q,
            Parsed::Reply(r) => return Step::Reply(r),
            Parsed::Drop => return Step::Drop,
        };
        let limit = if tcp { 65535 } else { q.udp_limit() };
        if q.qclass != wire::CLASS_IN && q.qclass != wire::CLASS_ANY {
            return Step::Reply(wire::error_reply(q.id, q.flags, wire::NOTIMP, Some((&q.qname_wire, q.qtype, q.qclass))));
        }
        match answer(&self.index, &q.name, q.qtype) {
            Outcome::Forward => Step::Upstream(q, None),
            Outcome::Local(a) if a.chase.is_some() => Step::Upstream(q, Some(a)),
            Outcome::Local(a) => Step::Reply(encode(&q, &a, limit)),
        }
    }

    /// The network part: forward `msg`, or complete `partial` with the
    /// upstream answer for its CNAME target.
    pub async fn upstream(&self, msg: &[u8], q: Query, partial: Option<Answer>, tcp: bool) -> Vec<u8> {
        let limit = if tcp { 65535 } else { q.udp_limit() };
        match partial {
            None => match self.upstreams.exchange(msg, limit).await {
                Some(reply) => reply,
                None => {
                    tracing::debug!(name = q.name, "no upstream resolver answered");
                    wire::error_reply(q.id, q.flags, wire::SERVFAIL, Some((&q.qname_wire, q.qtype, q.qclass)))
                }
            },
            Some(mut a) => {
                if let Some(target) = a.chase.take() {
                    if let Some(records) = self.upstreams.resolve(&target, q.qtype).await {
                        a.answers.extend(records);
                    }
                }
                encode(&q, &a, limit)
            }
        }
    }

    pub async fn handle(&self, msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match self.local(msg, tcp) {
            Step::Reply(r) => Some(r),
            Step::Drop => None,
            Step::Upstream(q, partial) => Some(self.upstream(msg, q, partial, tcp).await),
        }
    }
}

/// An authoritative answer in wire form, at most `limit` bytes.
pub fn encode(q: &Query, a: &Answer, limit: usize) -> Vec<u8> {
    let mut b = Builder::new(q.id, q.flags, a.rcode, &q.qname_wire, q.qtype, q.qclass);
    b.set_aa();
    if q.edns.is_some() {
        b.edns = Some(wire::Edns { udp_size: wire::MAX_UDP as u16, version: 0 });
    }
    for r in &a.answers {
        b.record(0, r);
    }
    for r in &a.authority {
        b.record(1, r);
    }
    for r in &a.additional {
        b.record(2, r);
    }
    b.finish(limit)
}

/// Serves UDP on `sock` until the task is aborted.
pub async fn serve_udp(sock: UdpSocket, handler: Arc<Handler>) {
    let sock = Arc::new(sock);
    let loops: Vec<_> = (0..UDP_LOOPS)
        .map(|_| {
            let (sock, handler) = (sock.clone(), handler.clone());
            tokio::spawn(async move { udp_loop(sock, handler).await })
        })
        .collect();
    let _abort = AbortAll(loops.iter().map(|l| l.abort_handle()).collect());
    futures::future::join_all(loops).await;
}

async fn udp_loop(sock: Arc<UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0u8; 65535];
    let forwarding = Arc::new(tokio::sync::Semaphore::new(MAX_UDP_FORWARDS));
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!("dns udp receive: {e}");
                continue;
            }
        };
        match handler.local(&buf[..n], false) {
            Step::Reply(r) => send(&sock, &r, peer).await,
            Step::Drop => {}
            Step::Upstream(q, partial) => {
                // A flood of outside names must not take every socket and
                // buffer: past the limit a query is dropped and the
                // client's resolver asks again, as after a lost packet.
                let Ok(permit) = forwarding.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "dns: {MAX_UDP_FORWARDS} forwarded queries in flight; dropping one");
                    continue;
                };
                let (sock, handler, msg) = (sock.clone(), handler.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    let r = handler.upstream(&msg, q, partial, false).await;
                    send(&sock, &r, peer).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn send(sock: &UdpSocket, msg: &[u8], peer: SocketAddr) {
    if let Err(e) = sock.send_to(msg, peer).await {
        tracing::debug!(%peer, "dns udp send: {e}");
    }
}

/// Serves TCP (2-byte length before each message) until the task is aborted.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _ = tcp_conn(stream, handler).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!("dns tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_conn(mut stream: TcpStream, handler: Arc<Handler>) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return Ok(()) };
        let mut msg = vec![0u8; len? as usize];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
        let Some(reply) = handler.handle(&msg, true).await else { return Ok(()) };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        self.0.iter().for_each(|h| h.abort());
    }
}
