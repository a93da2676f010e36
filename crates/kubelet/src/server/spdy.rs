//! SPDY/3.1 framing, just what `kubectl port-forward` needs: the frame types
//! of the spec and the zlib-compressed header blocks (one deflate stream per
//! direction for the whole connection, primed with SPDY/3's dictionary).

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// A frame's length field is 24 bits; refuse anything near that as garbage.
const MAX_FRAME: usize = 1 << 24;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status for a stream we cannot serve.
pub const RST_PROTOCOL_ERROR: u32 = 1;

/// Name/value pairs of a header block, in order (names are lower case in SPDY).
pub type Headers = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream { stream_id: u32, associated_to: u32, priority: u8, fin: bool, unidirectional: bool, headers: Headers },
    SynReply { stream_id: u32, fin: bool, headers: Headers },
    RstStream { stream_id: u32, status: u32 },
    /// (flags, id, value) entries.
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway { last_good_stream_id: u32, status: u32 },
    Headers { stream_id: u32, fin: bool, headers: Headers },
    WindowUpdate { stream_id: u32, delta: u32 },
    Data { stream_id: u32, fin: bool, data: Vec<u8> },
    /// A control frame of a type this implementation ignores.
    Unknown { kind: u16 },
}

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// SPDY/3's header compression dictionary (spec section 2.6.10.1): the
/// length-prefixed common header names and values, then a run of common
/// value text. It must be byte-exact, or the peer's inflate fails.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
            "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
            "cache-control", "connection", "content-base", "content-encoding", "content-language",
            "content-length", "content-location", "content-md5", "content-range", "content-type",
            "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
            "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
            "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
            "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
            "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information", "204 No Content", "301 Moved Permanently",
            "400 Bad Request", "401 Unauthorized", "403 Forbidden", "404 Not Found",
            "500 Internal Server Error", "501 Not Implemented", "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Serializes frames; owns the connection's outgoing header compressor, so
/// one writer must serialize every frame of a connection, in send order.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(dictionary()).expect("setting the SPDY dictionary on a fresh deflate stream");
        Encoder { deflate }
    }
}

impl Encoder {
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data { stream_id, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                push_flags_len(&mut out, if *fin { FLAG_FIN } else { 0 }, data.len())?;
                out.extend_from_slice(data);
                return Ok(out);
            }
            Frame::SynStream { stream_id, associated_to, priority, fin, unidirectional, headers } => {
                body.extend_from_slice(&stream_id.to_be_bytes());
                body.extend_from_slice(&associated_to.to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0); // slot
                self.compress_headers(headers, &mut body)?;
                let flags = if *fin { FLAG_FIN } else { 0 } | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
                (SYN_STREAM, flags)
            }
            Frame::SynReply { stream_id, fin, headers } | Frame::Headers { stream_id, fin, headers } => {
                body.extend_from_slice(&stream_id.to_be_bytes());
                self.compress_headers(headers, &mut body)?;
                let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                (kind, if *fin { FLAG_FIN } else { 0 })
            }
            Frame::RstStream { stream_id, status } => {
                body.extend_from_slice(&stream_id.to_be_bytes());
                body.extend_from_slice(&status.to_be_bytes());
                (RST_STREAM, 0)
            }
            Frame::Settings(entries) => {
                body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (flags, id, value) in entries {
                    body.extend_from_slice(&((u32::from(*flags) << 24) | (id & 0xff_ffff)).to_be_bytes());
                    body.extend_from_slice(&value.to_be_bytes());
                }
                (SETTINGS, 0)
            }
            Frame::Ping(id) => {
                body.extend_from_slice(&id.to_be_bytes());
                (PING, 0)
            }
            Frame::GoAway { last_good_stream_id, status } => {
                body.extend_from_slice(&last_good_stream_id.to_be_bytes());
                body.extend_from_slice(&status.to_be_bytes());
                (GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.extend_from_slice(&stream_id.to_be_bytes());
                body.extend_from_slice(&delta.to_be_bytes());
                (WINDOW_UPDATE, 0)
            }
            Frame::Unknown { kind } => bail!("cannot encode an unknown control frame (type {kind})"),
        };
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        push_flags_len(&mut out, flags, body.len())?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn compress_headers(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<()> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name.to_ascii_lowercase().as_str(), value.as_str()] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut input = &raw[..];
        loop {
            out.reserve(raw.len() + 64);
            let before = self.deflate.total_in();
            self.deflate.compress_vec(input, out, FlushCompress::Sync).context("compressing a SPDY header block")?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once all input is in and the flush had room to finish.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) -> Result<()> {
    if len >= MAX_FRAME {
        bail!("SPDY frame of {len} bytes is too large");
    }
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    Ok(())
}

/// Parses frames; owns the connection's incoming header decompressor.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { inflate: Decompress::new(true) }
    }
}

impl Decoder {
    /// Takes one whole frame off the front of `buf`, or returns None when
    /// `buf` does not hold a whole frame yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let fin = flags & FLAG_FIN != 0;
        buf.advance(8);
        let mut body = buf.split_to(len);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream_id: first, fin, data: body.to_vec() }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            bail!("SPDY version {version} is not supported (only 3)");
        }
        let kind = (first & 0xffff) as u16;
        let frame = match kind {
            SYN_STREAM => {
                need(&body, 10, kind)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_to = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                let headers = self.decompress_headers(&body)?;
                Frame::SynStream { stream_id, associated_to, priority, fin, unidirectional: flags & FLAG_UNIDIRECTIONAL != 0, headers }
            }
            SYN_REPLY | HEADERS => {
                need(&body, 4, kind)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&body)?;
                if kind == SYN_REPLY { Frame::SynReply { stream_id, fin, headers } } else { Frame::Headers { stream_id, fin, headers } }
            }
            RST_STREAM => {
                need(&body, 8, kind)?;
                Frame::RstStream { stream_id: body.get_u32() & 0x7fff_ffff, status: body.get_u32() }
            }
            SETTINGS => {
                need(&body, 4, kind)?;
                let n = body.get_u32() as usize;
                need(&body, n.saturating_mul(8), kind)?;
                let entries = (0..n)
                    .map(|_| {
                        let a = body.get_u32();
                        ((a >> 24) as u8, a & 0xff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings(entries)
            }
            PING => {
                need(&body, 4, kind)?;
                Frame::Ping(body.get_u32())
            }
            GOAWAY => {
                need(&body, 4, kind)?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good_stream_id, status }
            }
            WINDOW_UPDATE => {
                need(&body, 8, kind)?;
                Frame::WindowUpdate { stream_id: body.get_u32() & 0x7fff_ffff, delta: body.get_u32() & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    fn decompress_headers(&mut self, mut input: &[u8]) -> Result<Headers> {
        let mut raw = Vec::with_capacity(input.len() * 4 + 64);
        while !input.is_empty() || raw.len() == raw.capacity() {
            raw.reserve(input.len() * 2 + 256);
            let before = self.inflate.total_in();
            match self.inflate.decompress_vec(input, &mut raw, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => bail!("the peer ended its SPDY header compression stream"),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).context("the peer's SPDY header dictionary")?;
                }
                Err(e) => return Err(e).context("decompressing a SPDY header block"),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            if used == 0 && raw.len() < raw.capacity() && !input.is_empty() {
                bail!("SPDY header block does not decompress");
            }
        }
        parse_header_block(&raw)
    }
}

fn need(body: &BytesMut, n: usize, kind: u16) -> Result<()> {
    if body.len() < n {
        bail!("short SPDY control frame (type {kind})");
    }
    Ok(())
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8]> {
        if raw.len() < 4 {
            bail!("truncated SPDY header block");
        }
        let n = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if raw.len() < 4 + n {
            bail!("truncated SPDY header block");
        }
        let s = &raw[4..4 + n];
        *raw = &raw[4 + n..];
        Ok(s)
    }
    let count = u32::from_be_bytes(take_n(&mut raw)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut raw)?).to_ascii_lowercase();
        // Several values of one name are NUL-separated.
        for value in take(&mut raw)?.split(|b| *b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
        }
    }
    Ok(headers)
}

fn take_n(raw: &mut &[u8]) -> Result<[u8; 4]> {
    if raw.len() < 4 {
        bail!("truncated SPDY header block");
    }
    let n = [raw[0], raw[1], raw[2], raw[3]];
    *raw = &raw[4..];
    Ok(n)
}

/// Reads the next frame from `r`, buffering in `buf`; None at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, dec: &mut Decoder, buf: &mut BytesMut) -> Result<Option<Frame>> {
    loop {
        if let Some(f) = dec.decode(buf)? {
            return Ok(Some(f));
        }
        buf.reserve(16 << 10);
        if r.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a SPDY frame");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn every_frame_roundtrips_with_shared_compression_state() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: hdrs(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: hdrs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply { stream_id: 1, fin: false, headers: vec![] },
            Frame::Headers { stream_id: 3, fin: true, headers: hdrs(&[("x", "1"), ("x", "2")]) },
            Frame::Data { stream_id: 3, fin: false, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
            Frame::Data { stream_id: 3, fin: true, data: vec![] },
            Frame::RstStream { stream_id: 5, status: 5 },
            Frame::Settings(vec![(0, 4, 100), (1, 7, 65536)]),
            Frame::Ping(42),
            Frame::GoAway { last_good_stream_id: 3, status: 0 },
            Frame::WindowUpdate { stream_id: 0, delta: 65536 },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            wire.extend_from_slice(&enc.encode(f).unwrap());
        }
        // Fed a byte at a time, the decoder waits for whole frames.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn header_compression_uses_the_dictionary_and_keeps_state() {
        let mut enc = Encoder::default();
        let h = hdrs(&[("content-type", "text/plain"), ("user-agent", "kubectl/v1.32.0")]);
        let first = enc.encode(&Frame::SynReply { stream_id: 1, fin: false, headers: h.clone() }).unwrap();
        let second = enc.encode(&Frame::SynReply { stream_id: 3, fin: false, headers: h.clone() }).unwrap();
        // The zlib header announces a preset dictionary (FDICT) with SPDY's Adler-32.
        assert_eq!(first[13] & 0x20, 0x20, "FDICT bit");
        // The second block refers back to the first: far smaller.
        assert!(second.len() < first.len(), "{} vs {}", second.len(), first.len());
        // A decoder that never saw the first block cannot read the second.
        let mut fresh = Decoder::default();
        assert!(fresh.decode(&mut BytesMut::from(&second[..])).is_err());
        let mut dec = Decoder::default();
        dec.decode(&mut BytesMut::from(&first[..])).unwrap().unwrap();
        let f = dec.decode(&mut BytesMut::from(&second[..])).unwrap().unwrap();
        assert_eq!(f, Frame::SynReply { stream_id: 3, fin: false, headers: h.clone() });
        assert_eq!(header(&h, "Content-Type"), Some("text/plain"));
    }

    #[test]
    fn decodes_a_stream_compressed_by_plain_zlib_with_the_dictionary() {
        // Independently compressed with flate2's writer, as another SPDY stack would.
        let mut raw = Vec::new();
        raw.extend_from_slice(&1u32.to_be_bytes());
        for s in ["streamtype", "data"] {
            raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(dictionary()).unwrap();
        let mut block = Vec::with_capacity(256);
        c.compress_vec(&raw, &mut block, FlushCompress::Sync).unwrap();
        let mut frame = Vec::new();
        frame.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
        frame.extend_from_slice(&SYN_STREAM.to_be_bytes());
        frame.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&block);
        let f = Decoder::default().decode(&mut BytesMut::from(&frame[..])).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynStream { stream_id: 5, associated_to: 0, priority: 0, fin: false, unidirectional: false, headers: hdrs(&[("streamtype", "data")]) }
        );
    }

    #[test]
    fn rejects_other_versions() {
        let mut f = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(Decoder::default().decode(&mut BytesMut::from(&f[..])).is_err());
        f[1] = 3;
        assert_eq!(Decoder::default().decode(&mut BytesMut::from(&f[..])).unwrap(), Some(Frame::Ping(1)));
    }
}
