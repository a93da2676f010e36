//! The Kubernetes streaming channel protocol over WebSocket (`kubectl exec`
//! and `attach`): every binary message starts with a channel byte — 0 stdin,
//! 1 stdout, 2 stderr, 3 error (a meta/v1 Status from v4 on, plain text
//! before), 4 terminal resize — and in v5 a message on channel 255 carrying
//! a channel number closes that stream (the client's half-close of stdin).

use serde_json::{json, Value};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `channel.k8s.io`, `v2.`, `v3.`: the error channel carries plain text.
    V1,
    /// `v4.channel.k8s.io`: the error channel carries a Status.
    V4,
    /// `v5.channel.k8s.io`: v4 plus stream close signals.
    V5,
}

impl Protocol {
    /// Ours, most preferred first.
    const SUPPORTED: &'static [(&'static str, Protocol)] = &[
        ("v5.channel.k8s.io", Protocol::V5),
        ("v4.channel.k8s.io", Protocol::V4),
        ("v3.channel.k8s.io", Protocol::V1),
        ("v2.channel.k8s.io", Protocol::V1),
        ("channel.k8s.io", Protocol::V1),
    ];

    pub fn name(self) -> &'static str {
        Self::SUPPORTED.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("channel.k8s.io")
    }

    /// Our most preferred protocol among those of a `Sec-WebSocket-Protocol` header.
    pub fn negotiate(offered: &str) -> Option<Protocol> {
        let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
        Self::SUPPORTED.iter().find(|(name, _)| offered.contains(name)).map(|(_, p)| *p)
    }

    /// All names we speak, for error messages.
    pub fn supported_names() -> Vec<&'static str> {
        Self::SUPPORTED.iter().map(|(n, _)| *n).collect()
    }
}

pub fn encode(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(data.len() + 1);
    msg.push(channel);
    msg.extend_from_slice(data);
    msg
}

/// What a client's message asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    Resize { width: u16, height: u16 },
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    /// Empty, unknown channel, or bad resize JSON: ignored.
    Ignored,
}

pub fn decode(protocol: Protocol, msg: &[u8]) -> Incoming<'_> {
    let Some((&channel, data)) = msg.split_first() else { return Incoming::Ignored };
    match channel {
        STDIN => Incoming::Stdin(data),
        RESIZE => match serde_json::from_slice::<Value>(data) {
            Ok(v) => Incoming::Resize {
                width: v["Width"].as_u64().unwrap_or(0).min(u64::from(u16::MAX)) as u16,
                height: v["Height"].as_u64().unwrap_or(0).min(u64::from(u16::MAX)) as u16,
            },
            Err(_) => Incoming::Ignored,
        },
        CLOSE if protocol == Protocol::V5 && !data.is_empty() => Incoming::Close(data[0]),
        _ => Incoming::Ignored,
    }
}

/// The error-channel message that ends a session: how kubectl learns the
/// exit code (`NonZeroExitCode` with an `ExitCode` cause, as upstream).
pub fn exit_status(protocol: Protocol, command: &[String], exit_code: i32) -> Vec<u8> {
    if exit_code == 0 {
        return match protocol {
            Protocol::V1 => Vec::new(),
            _ => json!({"metadata": {}, "status": "Success"}).to_string().into_bytes(),
        };
    }
    let message = format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {exit_code}");
    match protocol {
        Protocol::V1 => message.into_bytes(),
        _ => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
        })
        .to_string()
        .into_bytes(),
    }
}

/// The error-channel message for a failure that isn't an exit code.
pub fn failure(protocol: Protocol, message: &str) -> Vec<u8> {
    match protocol {
        Protocol::V1 => message.as_bytes().to_vec(),
        _ => json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}).to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_newest() {
        assert_eq!(Protocol::negotiate("v4.channel.k8s.io, v5.channel.k8s.io"), Some(Protocol::V5));
        assert_eq!(Protocol::negotiate("v4.channel.k8s.io,channel.k8s.io"), Some(Protocol::V4));
        assert_eq!(Protocol::negotiate("channel.k8s.io"), Some(Protocol::V1));
        assert_eq!(Protocol::negotiate("base64.channel.k8s.io"), None);
        assert_eq!(Protocol::V5.name(), "v5.channel.k8s.io");
    }

    #[test]
    fn messages_roundtrip() {
        assert_eq!(encode(STDOUT, b"hi"), b"\x01hi");
        assert_eq!(decode(Protocol::V5, b"\x00abc"), Incoming::Stdin(b"abc"));
        assert_eq!(decode(Protocol::V4, br#"{"Width":120,"Height":40}"#.as_slice()), Incoming::Ignored);
        assert_eq!(decode(Protocol::V4, &encode(RESIZE, br#"{"Width":120,"Height":40}"#)), Incoming::Resize { width: 120, height: 40 });
        assert_eq!(decode(Protocol::V5, &[CLOSE, STDIN]), Incoming::Close(STDIN));
        assert_eq!(decode(Protocol::V4, &[CLOSE, STDIN]), Incoming::Ignored, "close signals are v5 only");
        assert_eq!(decode(Protocol::V5, b""), Incoming::Ignored);
        assert_eq!(decode(Protocol::V5, &encode(RESIZE, b"not json")), Incoming::Ignored);
    }

    #[test]
    fn exit_codes_as_kubectl_reads_them() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let v: Value = serde_json::from_slice(&exit_status(Protocol::V5, &cmd, 3)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok: Value = serde_json::from_slice(&exit_status(Protocol::V4, &cmd, 0)).unwrap();
        assert_eq!(ok["status"], "Success");
        assert!(exit_status(Protocol::V1, &cmd, 0).is_empty());
        assert!(String::from_utf8(exit_status(Protocol::V1, &cmd, 2)).unwrap().contains("exit code 2"));
    }
}
