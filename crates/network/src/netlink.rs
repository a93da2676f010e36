//! A minimal synchronous rtnetlink client: build a request, send it, collect
//! the replies until the kernel's acknowledgement. Requests take microseconds,
//! which keeps pod attach far below the cost of spawning `ip` processes.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_ROUTE: i32 = 0;
const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;
const HEADER_LEN: usize = 16;

/// A failed netlink request: the errno plus the kernel's extended-ack text.
#[derive(Debug)]
pub struct NlError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NlError {
    fn from_io(e: io::Error) -> NlError {
        NlError {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            message: None,
        }
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        match &self.message {
            Some(m) => write!(f, "{m}: {os}"),
            None => write!(f, "{os}"),
        }
    }
}

impl std::error::Error for NlError {}

pub type NlResult<T> = Result<T, NlError>;

/// A request body: the fixed family header followed by attributes.
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    pub fn new(fixed_header: &[u8]) -> Message {
        Message {
            buf: fixed_header.to_vec(),
        }
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Message {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn attr_u32(&mut self, ty: u16, value: u32) -> &mut Message {
        self.attr(ty, &value.to_ne_bytes())
    }

    pub fn attr_str(&mut self, ty: u16, value: &str) -> &mut Message {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data)
    }

    /// Appends raw bytes (a nested family header) inside an open nest.
    pub fn raw(&mut self, data: &[u8]) -> &mut Message {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Opens a nested attribute; pass the returned offset to `end_nest`.
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    pub fn end_nest(&mut self, at: usize) -> &mut Message {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// An rtnetlink socket bound to the network namespace of the thread that
/// opened it (it stays there even if that thread later moves).
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> NlResult<Netlink> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NlError::from_io(io::Error::last_os_error()));
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: valid fd and a pointer to a c_int of the given size.
            // Failure only loses error detail, so the result is ignored.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
        }
        // The kernel answers at once; a bounded wait turns a lost reply into
        // an error instead of a hung pod start.
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: valid fd and a pointer to a timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request and returns the bodies of the reply messages
    /// (without netlink headers); an error reply becomes `NlError`.
    pub fn request(&mut self, msg_type: u16, flags: u16, body: &Message) -> NlResult<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = Vec::with_capacity(HEADER_LEN + body.buf.len());
        packet.extend_from_slice(&((HEADER_LEN + body.buf.len()) as u32).to_ne_bytes());
        packet.extend_from_slice(&msg_type.to_ne_bytes());
        packet.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        packet.extend_from_slice(&seq.to_ne_bytes());
        packet.extend_from_slice(&0u32.to_ne_bytes());
        packet.extend_from_slice(&body.buf);
        self.send(&packet)?;

        let mut replies = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.recv(&mut buf)?;
            let mut at = 0;
            while at + HEADER_LEN <= n {
                let len = u32_at(&buf, at) as usize;
                if len < HEADER_LEN || at + len > n {
                    return Err(NlError {
                        errno: libc::EBADMSG,
                        message: Some("truncated netlink reply".into()),
                    });
                }
                let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let msg_flags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
                let msg_seq = u32_at(&buf, at + 8);
                let payload = &buf[at + HEADER_LEN..at + len];
                at += align4(len);
                if msg_seq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let errno = -(u32_at(payload, 0) as i32);
                        if errno == 0 {
                            return Ok(replies);
                        }
                        return Err(NlError {
                            errno,
                            message: ext_ack_message(payload, msg_flags),
                        });
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(payload.to_vec()),
                }
            }
        }
    }

    fn send(&self, packet: &[u8]) -> NlResult<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr() as *const libc::c_void,
                packet.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(NlError::from_io(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> NlResult<usize> {
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NlError::from_io(e));
            }
        }
    }
}

/// Iterates the attributes of a reply body after its fixed header.
pub fn attrs(body: &[u8], fixed_header_len: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = fixed_header_len;
    std::iter::from_fn(move || {
        if at + 4 > body.len() {
            return None;
        }
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > body.len() {
            return None;
        }
        let data = &body[at + 4..at + len];
        at += align4(len);
        Some((ty, data))
    })
}

pub fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The kernel's explanation attached to an error (NETLINK_EXT_ACK).
fn ext_ack_message(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 4 + HEADER_LEN {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        u32_at(payload, 4) as usize
    };
    attrs(payload, 4 + echoed)
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, data)| {
            String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_padded() {
        let mut m = Message::new(&[0u8; 4]);
        let nest = m.begin_nest(18);
        m.attr_str(1, "veth");
        m.end_nest(nest);
        m.attr_u32(4, 1500);
        let parsed: Vec<_> = attrs(&m.buf, 4).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, 18);
        let inner: Vec<_> = attrs(parsed[0].1, 0).collect();
        assert_eq!(inner, vec![(1, &b"veth\0"[..])]);
        assert_eq!(parsed[1], (4, &1500u32.to_ne_bytes()[..]));
    }
}
