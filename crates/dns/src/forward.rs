//! Forwarding what is not ours to the host's resolvers (the nameservers of
//! its resolv.conf): over UDP from a fresh socket with a fresh query ID per
//! attempt, each resolver in turn with a timeout, and over TCP when the
//! UDP answer came back truncated.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire;

pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// The nameservers of a resolv.conf, leaving out `own` addresses (ours:
/// forwarding there would loop).
pub fn resolv_conf_servers(text: &str, own: &[IpAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not supported here.
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| !own.contains(ip) && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Upstreams {
    /// Sends `query` (a client's message) upstream and returns the answer
    /// with the client's ID, at most `limit` bytes long when the client asked
    /// over UDP (a longer TCP answer then gives way to the truncated one).
    /// None when no resolver answered.
    pub async fn exchange(&self, query: &[u8], limit: usize) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let client_id = [query[0], query[1]];
        let mut msg = query.to_vec();
        for server in &self.servers {
            let id: u16 = rand::random();
            msg[..2].copy_from_slice(&id.to_be_bytes());
            let Some(mut reply) = self.udp(*server, &msg, id).await else { continue };
            if wire::reply_head(&reply).is_some_and(|h| h.truncated) {
                if let Some(full) = self.tcp(*server, &msg, id).await.filter(|r| r.len() <= limit) {
                    reply = full;
                }
            }
            reply[..2].copy_from_slice(&client_id);
            return Some(reply);
        }
        None
    }

    async fn udp(&self, server: SocketAddr, msg: &[u8], id: u16) -> Option<Vec<u8>> {
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
        let sock = UdpSocket::bind(bind).await.ok()?;
        sock.connect(server).await.ok()?;
        sock.send(msg).await.ok()?;
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.ok()?.ok()?;
            // Only the answer to this query: same ID, same question.
            if wire::reply_head(&buf[..n]).is_some_and(|h| h.id == id) && same_question(msg, &buf[..n]) {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, msg: &[u8], id: u16) -> Option<Vec<u8>> {
        let exchange = async {
            let mut s = TcpStream::connect(server).await.ok()?;
            let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(msg);
            s.write_all(&framed).await.ok()?;
            let len = s.read_u16().await.ok()? as usize;
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf).await.ok()?;
            wire::reply_head(&buf).filter(|h| h.id == id)?;
            Some(buf)
        };
        tokio::time::timeout(self.timeout, exchange).await.ok()?
    }

    /// Looks `name`/`qtype` up upstream and returns its answer records
    /// (for following an ExternalName outside the zone).
    pub async fn resolve(&self, name: &str, qtype: u16) -> Option<Vec<wire::Record>> {
        let query = wire::query_message(rand::random(), name, qtype);
        let reply = self.exchange(&query, 65535).await?;
        wire::answer_records(&reply)
    }
}

/// The question of a reply equals the one asked (case-insensitively).
fn same_question(query: &[u8], reply: &[u8]) -> bool {
    let q = wire::read_name(query, 12);
    let r = wire::read_name(reply, 12);
    match (q, r) {
        (Some((qn, qa)), Some((rn, ra))) => qn.eq_ignore_ascii_case(&rn) && query.get(qa..qa + 4) == reply.get(ra..ra + 4),
        _ => false,
    }
}
