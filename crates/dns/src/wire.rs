//! The DNS message format (RFC 1035, EDNS0 from RFC 6891): reading a query,
//! reading the records of an upstream answer, and writing answers with name
//! compression and truncation. Written here rather than taken from a crate:
//! a server that answers a handful of record types needs a few hundred
//! lines, reads a query without allocating per label and keeps the binary
//! small. Malformed input is an error value, never a panic: every read is
//! bounds-checked and compression pointers may only point backwards.

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
/// Extended rcode 16 (upper bits in OPT): the client's EDNS version is unknown.
const BADVERS: u16 = 16;

/// Size of a UDP answer without EDNS.
pub const MIN_UDP: usize = 512;
/// The UDP payload size we advertise and accept at most (DNS flag day 2020).
pub const MAX_UDP: usize = 1232;
const HEADER: usize = 12;
const MAX_NAME: usize = 255;

/// A query as far as the server needs it.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// The question name in wire form, uncompressed, case as asked.
    pub qname_wire: Vec<u8>,
    /// The same name lower-cased and dotted without the final dot ("" is the
    /// root); bytes that cannot occur in our names become '?'.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The client's EDNS0 OPT record, if it sent one.
    pub edns: Option<Edns>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
}

impl Query {
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }

    /// The largest UDP answer this client takes.
    pub fn udp_limit(&self) -> usize {
        self.edns.map_or(MIN_UDP, |e| (e.udp_size as usize).clamp(MIN_UDP, MAX_UDP))
    }
}

/// What to do with a received packet.
#[derive(Debug)]
pub enum Parsed {
    Query(Query),
    /// An error answer (FORMERR, NOTIMP, BADVERS) to send back as is.
    Reply(Vec<u8>),
    /// Not worth an answer (too short for a header, or itself a response).
    Drop,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the (possibly compressed) name at `at`; returns it uncompressed in
/// wire form and the offset after it in the message.
pub fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(32);
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    out.push(0);
                    return Some((out, end.unwrap_or(at + 1)));
                }
                let label = msg.get(at + 1..at + 1 + len)?;
                if out.len() + 1 + len + 1 > MAX_NAME {
                    return None;
                }
                out.push(len as u8);
                out.extend_from_slice(label);
                at += 1 + len;
            }
            0xC0 => {
                let target = (u16_at(msg, at)? & 0x3FFF) as usize;
                // Only backwards, and not forever.
                if target >= at || jumps > 64 {
                    return None;
                }
                jumps += 1;
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
}

/// A wire-form name as lower-case dotted text (without the final dot).
pub fn dotted(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len());
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 {
            break;
        }
        if !s.is_empty() {
            s.push('.');
        }
        for &b in wire.get(at + 1..at + 1 + len as usize).unwrap_or_default() {
            let c = b.to_ascii_lowercase();
            s.push(if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'*' { c as char } else { '?' });
        }
        at += 1 + len as usize;
    }
    s
}

/// Reads a query. Anything malformed gets FORMERR (when at least the header
/// is there), other opcodes NOTIMP, EDNS versions above 0 BADVERS.
pub fn parse_query(msg: &[u8]) -> Parsed {
    if msg.len() < HEADER {
        return Parsed::Drop;
    }
    let id = u16_at(msg, 0).unwrap_or(0);
    let flags = u16_at(msg, 2).unwrap_or(0);
    if flags & 0x8000 != 0 {
        return Parsed::Drop;
    }
    let err = |rcode: u8| Parsed::Reply(error_reply(id, flags, rcode, None));
    if (flags >> 11) & 0xF != 0 {
        return err(NOTIMP);
    }
    let counts: Vec<u16> = (0..4).map(|i| u16_at(msg, 4 + 2 * i).unwrap_or(0)).collect();
    if counts[0] != 1 {
        return err(FORMERR);
    }
    let Some((qname_wire, at)) = read_name(msg, HEADER) else { return err(FORMERR) };
    let (Some(qtype), Some(qclass)) = (u16_at(msg, at), u16_at(msg, at + 2)) else { return err(FORMERR) };
    let question = (qname_wire.as_slice(), qtype, qclass);
    let mut at = at + 4;
    let mut edns = None;
    for i in 0..(counts[1] as usize + counts[2] as usize + counts[3] as usize) {
        let Some((_, after)) = read_name(msg, at) else { return Parsed::Reply(error_reply(id, flags, FORMERR, Some(question))) };
        let (Some(rtype), Some(class), Some(ttl), Some(rdlen)) = (u16_at(msg, after), u16_at(msg, after + 2), u32_at(msg, after + 4), u16_at(msg, after + 8)) else {
            return Parsed::Reply(error_reply(id, flags, FORMERR, Some(question)));
        };
        at = after + 10 + rdlen as usize;
        if at > msg.len() {
            return Parsed::Reply(error_reply(id, flags, FORMERR, Some(question)));
        }
        if rtype == TYPE_OPT && i >= counts[1] as usize + counts[2] as usize {
            if edns.is_some() {
                return Parsed::Reply(error_reply(id, flags, FORMERR, Some(question)));
            }
            edns = Some(Edns { udp_size: class, version: (ttl >> 16) as u8 });
        }
    }
    if edns.is_some_and(|e| e.version != 0) {
        let mut b = Builder::new(id, flags, 0, question.0, qtype, qclass);
        b.edns = Some(Edns { udp_size: MAX_UDP as u16, version: 0 });
        b.ext_rcode = BADVERS;
        return Parsed::Reply(b.finish(MAX_UDP));
    }
    Parsed::Query(Query { id, flags, name: dotted(&qname_wire), qname_wire, qtype, qclass, edns })
}

/// A header-only (plus question, when known) answer with `rcode`.
pub fn error_reply(id: u16, flags: u16, rcode: u8, question: Option<(&[u8], u16, u16)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    let f = 0x8000 | (flags & 0x7900) | 0x0080 | rcode as u16;
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&[0, question.is_some() as u8, 0, 0, 0, 0, 0, 0]);
    if let Some((name, qtype, qclass)) = question {
        out.extend_from_slice(name);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&qclass.to_be_bytes());
    }
    out
}

/// Record data we write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Ptr(String),
    Ns(String),
    Txt(String),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Soa { mname: String, rname: String, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 },
    /// Copied from an upstream answer (no names inside).
    Raw { rtype: u16, rdata: Vec<u8> },
}

impl Data {
    pub fn rtype(&self) -> u16 {
        match self {
            Data::A(_) => TYPE_A,
            Data::Cname(_) => TYPE_CNAME,
            Data::Ptr(_) => TYPE_PTR,
            Data::Ns(_) => TYPE_NS,
            Data::Txt(_) => TYPE_TXT,
            Data::Srv { .. } => TYPE_SRV,
            Data::Soa { .. } => TYPE_SOA,
            Data::Raw { rtype, .. } => *rtype,
        }
    }
}

/// One resource record; `name: None` means the question's name as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Option<String>,
    pub ttl: u32,
    pub data: Data,
}

/// Writes an answer: header, question, then records in section order.
pub struct Builder {
    buf: Vec<u8>,
    /// Lower-case dotted name suffixes already written, and where.
    names: HashMap<String, u16>,
    /// Start offset and section (0 answer, 1 authority, 2 additional) of each record.
    records: Vec<(usize, u8)>,
    pub edns: Option<Edns>,
    ext_rcode: u16,
}

impl Builder {
    /// Header (QR, RA, the client's RD and opcode, `rcode`) and the question.
    pub fn new(id: u16, flags: u16, rcode: u8, qname_wire: &[u8], qtype: u16, qclass: u16) -> Builder {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&id.to_be_bytes());
        let f = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode as u16 & 0xF);
        buf.extend_from_slice(&f.to_be_bytes());
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut b = Builder { buf, names: HashMap::new(), records: Vec::new(), edns: None, ext_rcode: 0 };
        // The question name is written as asked; its suffixes are known by their lower-case text.
        let mut at = 0;
        while let Some(&len) = qname_wire.get(at) {
            if len == 0 {
                break;
            }
            let key = dotted(&qname_wire[at..]);
            b.names.entry(key).or_insert((HEADER + at) as u16);
            at += 1 + len as usize;
        }
        b.buf.extend_from_slice(qname_wire);
        b.buf.extend_from_slice(&qtype.to_be_bytes());
        b.buf.extend_from_slice(&qclass.to_be_bytes());
        b
    }

    pub fn set_aa(&mut self) {
        self.buf[2] |= 0x04;
    }

    fn name(&mut self, name: &str, compress: bool) {
        let mut rest = name.trim_end_matches('.');
        while !rest.is_empty() {
            if compress {
                if let Some(&off) = self.names.get(rest) {
                    self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes());
                    return;
                }
                if self.buf.len() < 0x3FFF {
                    self.names.insert(rest.to_string(), self.buf.len() as u16);
                }
            }
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let label = &label.as_bytes()[..label.len().min(63)];
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
            rest = tail;
        }
        self.buf.push(0);
    }

    /// Appends a record to `section` (0 answer, 1 authority, 2 additional);
    /// sections must be written in order.
    pub fn record(&mut self, section: u8, r: &Record) {
        self.records.push((self.buf.len(), section));
        match &r.name {
            Some(n) => self.name(n, true),
            None => self.buf.extend_from_slice(&(0xC000u16 | HEADER as u16).to_be_bytes()),
        }
        self.buf.extend_from_slice(&r.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.data {
            Data::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            Data::Cname(n) | Data::Ptr(n) | Data::Ns(n) => self.name(n, true),
            Data::Txt(t) => {
                for chunk in t.as_bytes().chunks(255) {
                    self.buf.push(chunk.len() as u8);
                    self.buf.extend_from_slice(chunk);
                }
            }
            Data::Srv { priority, weight, port, target } => {
                for v in [priority, weight, port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 2782: the target is not compressed.
                self.name(target, false);
            }
            Data::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
                self.name(mname, true);
                self.name(rname, true);
                for v in [serial, refresh, retry, expire, minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            Data::Raw { rdata, .. } => self.buf.extend_from_slice(rdata),
        }
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// The message, at most `limit` bytes: whole records are dropped from
    /// the end and TC set when it does not fit. The OPT record (when the
    /// client sent one) is always kept.
    pub fn finish(mut self, limit: usize) -> Vec<u8> {
        let opt_len = if self.edns.is_some() { 11 } else { 0 };
        if self.buf.len() + opt_len > limit {
            // The most whole records whose end (the next one's start) fits.
            let end = |k: usize| self.records.get(k).map_or(self.buf.len(), |r| r.0);
            let mut keep = self.records.len();
            while keep > 0 && end(keep) + opt_len > limit {
                keep -= 1;
            }
            let cut = end(keep);
            self.buf.truncate(cut);
            self.records.truncate(keep);
            self.buf[2] |= 0x02;
        }
        let mut counts = [0u16; 3];
        for (_, s) in &self.records {
            counts[*s as usize] += 1;
        }
        if let Some(e) = self.edns {
            counts[2] += 1;
            self.buf.push(0);
            self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.buf.extend_from_slice(&e.udp_size.to_be_bytes());
            self.buf.push((self.ext_rcode >> 4) as u8);
            self.buf.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        for (i, c) in counts.iter().enumerate() {
            self.buf[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }
}

/// The header fields of an answer that a forwarder looks at.
pub struct ReplyHead {
    pub id: u16,
    pub truncated: bool,
    pub rcode: u8,
}

pub fn reply_head(msg: &[u8]) -> Option<ReplyHead> {
    let flags = u16_at(msg, 2)?;
    (msg.len() >= HEADER && flags & 0x8000 != 0).then(|| ReplyHead { id: u16_at(msg, 0).unwrap_or(0), truncated: flags & 0x0200 != 0, rcode: (flags & 0xF) as u8 })
}

/// The answer-section records of an upstream reply, for following an
/// ExternalName's CNAME: A and CNAME become our own records, other types
/// without names inside are copied raw, the rest are left out.
pub fn answer_records(msg: &[u8]) -> Option<Vec<Record>> {
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut at = HEADER;
    for _ in 0..qd {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (name, after) = read_name(msg, at)?;
        let (rtype, ttl, rdlen) = (u16_at(msg, after)?, u32_at(msg, after + 4)?, u16_at(msg, after + 8)? as usize);
        let rdata = msg.get(after + 10..after + 10 + rdlen)?;
        let data = match rtype {
            TYPE_A if rdlen == 4 => Some(Data::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
            TYPE_CNAME => Some(Data::Cname(dotted(&read_name(msg, after + 10)?.0))),
            TYPE_AAAA | TYPE_TXT => Some(Data::Raw { rtype, rdata: rdata.to_vec() }),
            _ => None,
        };
        if let Some(data) = data {
            out.push(Record { name: Some(dotted(&name)), ttl, data });
        }
        at = after + 10 + rdlen;
    }
    Some(out)
}

/// A name in wire form from dotted text.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// A recursive query for `name`/`qtype` (for following a CNAME upstream).
pub fn query_message(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut b = Builder::new(id, 0x0100, 0, &wire_name(name), qtype, CLASS_IN);
    b.edns = Some(Edns { udp_size: MAX_UDP as u16, version: 0 });
    let mut msg = b.finish(MAX_UDP);
    msg[2] &= 0x7F; // a query, not a response
    msg[3] &= 0x70; // no RA
    msg
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
