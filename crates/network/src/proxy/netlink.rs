//! Map and set elements straight to the kernel as nf_tables netlink
//! messages, for a full sync's bulk (100,000 endpoint elements at 10,000
//! Services): nft spends ~10 µs parsing and evaluating each one, encoding
//! them here costs well under 1 µs. Only the element shapes of the proxy's
//! shared maps are known (`encode`); everything else still goes through
//! nft text. One `Elements` is one transaction: all or nothing.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
// Attribute numbers of the nf_tables netlink API (linux/netfilter/nf_tables.h).
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
/// A message's element list is one attribute, whose length is 16 bits.
const MAX_LIST: usize = 60_000;

/// What an element maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    None,
    Value(Vec<u8>),
    Verdict(i32, Option<String>),
}

/// One transaction of element additions.
pub struct Elements {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the element messages (each is acknowledged).
    messages: Vec<u32>,
    /// The open message: (table, set, offset of its header, offset of the element list).
    open: Option<(String, String, usize, usize)>,
}

impl Default for Elements {
    fn default() -> Self {
        Self::new()
    }
}

impl Elements {
    pub fn new() -> Elements {
        let mut e = Elements { buf: Vec::new(), seq: 1, messages: Vec::new(), open: None };
        e.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        e
    }

    /// Adds `key : data` to `set` of the `ip` table `table`.
    pub fn add(&mut self, table: &str, set: &str, key: &[u8], data: &Data) {
        let same = matches!(&self.open, Some((t, s, _, list)) if t == table && s == set && self.buf.len() - list < MAX_LIST);
        if !same {
            self.close();
            let start = self.buf.len();
            self.seq += 1;
            self.messages.push(self.seq);
            self.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, libc::AF_INET as u8, 0);
            attr(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            attr(&mut self.buf, NFTA_SET_ELEM_LIST_SET, &cstr(set));
            let list = nest_start(&mut self.buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            self.open = Some((table.to_string(), set.to_string(), start, list));
        }
        let elem = nest_start(&mut self.buf, NFTA_LIST_ELEM);
        let k = nest_start(&mut self.buf, NFTA_SET_ELEM_KEY);
        attr(&mut self.buf, NFTA_DATA_VALUE, key);
        nest_end(&mut self.buf, k);
        match data {
            Data::None => {}
            Data::Value(v) => {
                let d = nest_start(&mut self.buf, NFTA_SET_ELEM_DATA);
                attr(&mut self.buf, NFTA_DATA_VALUE, v);
                nest_end(&mut self.buf, d);
            }
            Data::Verdict(code, chain) => {
                let d = nest_start(&mut self.buf, NFTA_SET_ELEM_DATA);
                let v = nest_start(&mut self.buf, NFTA_DATA_VERDICT);
                attr(&mut self.buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(c) = chain {
                    attr(&mut self.buf, NFTA_VERDICT_CHAIN, &cstr(c));
                }
                nest_end(&mut self.buf, v);
                nest_end(&mut self.buf, d);
            }
        }
        nest_end(&mut self.buf, elem);
    }

    /// The batch bytes and the sequence numbers to expect acknowledgements for.
    fn finish(mut self) -> (Vec<u8>, Vec<u32>) {
        self.close();
        self.seq += 1;
        self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        (self.buf, self.messages)
    }

    fn close(&mut self) {
        if let Some((_, _, start, list)) = self.open.take() {
            nest_end(&mut self.buf, list);
            let len = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// nlmsghdr + nfgenmsg; the length is fixed up by `close` (or is final here).
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) {
        self.buf.extend_from_slice(&20u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

fn nest_start(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A netfilter netlink socket in the calling thread's network namespace.
pub struct Socket(OwnedFd);

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket calls on a descriptor this owns.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sock = Socket(OwnedFd::from_raw_fd(fd));
            // Acknowledgements carry only the header, not the whole request.
            sock.set(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
            sock.set(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1)?;
            // Never wait forever for an answer the kernel will not send.
            let timeout = libc::timeval { tv_sec: 30, tv_usec: 0 };
            let size = std::mem::size_of::<libc::timeval>() as u32;
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout as *const _ as *const libc::c_void, size) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(sock)
        }
    }

    fn set(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        // SAFETY: value outlives the call; the size is that of an int.
        let r = unsafe { libc::setsockopt(self.0.as_raw_fd(), level, name, &value as *const i32 as *const libc::c_void, 4) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends the transaction and waits for the kernel's verdict on it.
    pub fn send(&self, elements: Elements) -> anyhow::Result<()> {
        let (buf, mut waiting) = elements.finish();
        if waiting.is_empty() {
            return Ok(());
        }
        // The whole batch goes in one message (the kernel needs it whole),
        // and every element message is acknowledged: room for both.
        let room = i32::try_from(buf.len() + 4096).unwrap_or(i32::MAX);
        self.set(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room).context("netlink send buffer")?;
        let acks = i32::try_from(waiting.len()).unwrap_or(i32::MAX / 4096).saturating_add(16).saturating_mul(2048);
        self.set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, acks).context("netlink receive buffer")?;
        // SAFETY: buf is valid for its length; a zeroed sockaddr_nl is the kernel.
        let sent = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(self.0.as_raw_fd(), buf.as_ptr() as *const _, buf.len(), 0, &to as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending nf_tables elements");
        }
        let mut first_error = None;
        let mut reply = vec![0u8; 1 << 16];
        while !waiting.is_empty() {
            // SAFETY: reply is valid for its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), reply.as_mut_ptr() as *mut _, reply.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("reading the nf_tables acknowledgements");
            }
            let mut at = 0;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(reply[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(reply[at + 8..at + 12].try_into().unwrap());
                if kind == NLMSG_ERROR && at + 20 <= n {
                    let errno = -i32::from_ne_bytes(reply[at + 16..at + 20].try_into().unwrap());
                    let known = waiting.contains(&seq);
                    waiting.retain(|s| *s != seq);
                    if errno != 0 {
                        let e = io::Error::from_raw_os_error(errno);
                        // An error about the batch itself: no more answers follow.
                        if !known {
                            bail!("adding nf_tables elements: {e}");
                        }
                        first_error.get_or_insert(e);
                    }
                }
                if len < 16 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
        match first_error {
            Some(e) => bail!("adding nf_tables elements: {e}"),
            None => Ok(()),
        }
    }
}

/// The field types of the proxy's shared maps' keys and values.
#[derive(Clone, Copy)]
enum Field {
    Ip,
    Proto,
    Port,
    /// numgen's output: a 32-bit integer in host byte order.
    Int,
}

/// Key and data of one element of one of the proxy's shared maps, from the
/// text `rules` writes for it. None for maps and shapes it does not know
/// (the caller then sends that element as nft text).
pub fn encode(map: &str, key: &str, value: Option<&str>) -> Option<(Vec<u8>, Data)> {
    use Field::*;
    let (k, v): (&[Field], Option<&[Field]>) = match map {
        "service-ips" | "no-endpoint-services" | "firewall-ips" => (&[Ip, Proto, Port], None),
        "service-nodeports" | "no-endpoint-nodeports" => (&[Proto, Port], None),
        "hairpin" => (&[Ip, Ip], None),
        m if m.starts_with("service-endpoints-") || m.starts_with("local-endpoints-") => (&[Ip, Port, Int], Some(&[Ip, Port])),
        m if m.starts_with("nodeport-endpoints-") || m.starts_with("nodeport-local-endpoints-") => (&[Port, Int], Some(&[Ip, Port])),
        _ => return None,
    };
    let key = fields(k, key)?;
    let data = match (map, v, value) {
        ("hairpin", _, None) => Data::None,
        (_, Some(v), Some(value)) => Data::Value(fields(v, value)?),
        (_, None, Some(verdict)) => verdict_data(verdict)?,
        _ => return None,
    };
    Some((key, data))
}

fn fields(types: &[Field], text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split(" . ").collect();
    if parts.len() != types.len() {
        return None;
    }
    let mut out = Vec::with_capacity(4 * parts.len());
    for (t, p) in types.iter().zip(parts) {
        // Each field takes a whole 32-bit register, zero padded.
        match t {
            Field::Ip => out.extend_from_slice(&p.parse::<Ipv4Addr>().ok()?.octets()),
            Field::Proto => {
                let n: u8 = match p {
                    "tcp" => 6,
                    "udp" => 17,
                    "sctp" => 132,
                    _ => return None,
                };
                out.extend_from_slice(&[n, 0, 0, 0]);
            }
            Field::Port => {
                out.extend_from_slice(&p.parse::<u16>().ok()?.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Field::Int => out.extend_from_slice(&p.parse::<u32>().ok()?.to_ne_bytes()),
        }
    }
    Some(out)
}

fn verdict_data(text: &str) -> Option<Data> {
    match text.split_once(' ') {
        Some(("goto", chain)) => Some(Data::Verdict(NFT_GOTO, Some(chain.to_string()))),
        Some(("jump", chain)) => Some(Data::Verdict(NFT_JUMP, Some(chain.to_string()))),
        None if text == "drop" => Some(Data::Verdict(NF_DROP, None)),
        None if text == "accept" => Some(Data::Verdict(NF_ACCEPT, None)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_shapes() {
        let (key, data) = encode("service-endpoints-tcp", "10.43.0.5 . 80 . 3", Some("10.42.0.3 . 8080")).unwrap();
        assert_eq!(key, [[10, 43, 0, 5], [0, 80, 0, 0], 3u32.to_ne_bytes()].concat());
        assert_eq!(data, Data::Value(vec![10, 42, 0, 3, 0x1f, 0x90, 0, 0]));
        let (key, data) = encode("service-ips", "10.43.0.5 . udp . 53", Some("goto pick-2")).unwrap();
        assert_eq!(key, [10, 43, 0, 5, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(data, Data::Verdict(NFT_GOTO, Some("pick-2".into())));
        assert_eq!(encode("no-endpoint-nodeports", "sctp . 30080", Some("drop")).unwrap().1, Data::Verdict(NF_DROP, None));
        assert_eq!(encode("hairpin", "10.42.0.3 . 10.42.0.3", None).unwrap().0, [10, 42, 0, 3, 10, 42, 0, 3]);
        assert!(encode("svceps-0123456789ab", "0", Some("goto ep-x")).is_none(), "per-service maps go as text");
        assert!(encode("service-ips", "10.43.0.5 . 80", Some("goto pick-2")).is_none());
    }

    #[test]
    fn messages_are_split_per_set_and_size() {
        let mut e = Elements::new();
        for i in 0..3000u32 {
            e.add("t", "hairpin", &[0; 8], &Data::None);
            e.add("t", if i < 2 { "service-ips" } else { "hairpin" }, &i.to_ne_bytes(), &Data::None);
        }
        let (buf, messages) = e.finish();
        // hairpin, service-ips, hairpin, service-ips, then hairpin split by size.
        assert!(messages.len() > 5, "{messages:?}");
        let mut at = 0;
        let mut seen = 0;
        while at < buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            assert!(len <= 65535 + 64, "{len}");
            at += len;
            seen += 1;
        }
        assert_eq!(at, buf.len());
        assert_eq!(seen, messages.len() + 2, "with the batch begin and end");
    }
}
