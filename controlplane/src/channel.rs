//! The control channel between the control plane and the dataplane process: a Unix-domain
//! socket pair created by the control plane, one end inherited by the dataplane.
//!
//! Every message is one frame:
//!
//! ```text
//!   u32 LE  length of what follows (2 + body), at most FRAME_MAX
//!   u16 LE  protocol version (PROTOCOL_VERSION)
//!   body    one message as JSON (ToDataplane or FromDataplane)
//! ```
//!
//! JSON keeps the channel debuggable (`strace -s` shows it) and costs nothing that matters:
//! only administrative traffic crosses it, never messages. A frame of another version is
//! refused with a message telling the operator that the two processes come from different
//! builds.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes meaning.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame accepted (a listing of many clients is the largest thing sent).
pub const FRAME_MAX: usize = 256 << 20;

/// Control plane to dataplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToDataplane {
    /// The first message: what to run.
    Start {
        /// The configuration's TOML text (already validated by the control plane).
        config: String,
        /// Where it came from, for messages.
        origin: String,
        port: Option<u16>,
        data_dir: Option<String>,
        /// Where to create the shared stats region.
        stats_path: String,
        /// Makes assigned client ids unique across restarts.
        boot_nonce: u64,
    },
    Request {
        id: u64,
        op: Op,
    },
    /// Stop cleanly (as SIGTERM would).
    Stop,
}

/// An administrative operation the dataplane performs on its shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Clients {
        client_id: Option<String>,
    },
    Sessions {
        client_id: Option<String>,
    },
    Subscriptions {
        client_id: Option<String>,
    },
    Retained {
        filter: String,
        limit: usize,
    },
    DeleteRetained {
        topic: String,
    },
    Kick {
        client_id: String,
    },
    /// Publish these (topic, UTF-8 payload) pairs retained at QoS 0.
    PublishSys {
        messages: Vec<(String, String)>,
    },
    /// Apply the live part of this configuration (limits, log levels).
    Reconfigure {
        config: String,
    },
}

/// Dataplane to control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromDataplane {
    /// Sent first, before anything can fail. `build` identifies the binary (version and
    /// revision): the control plane refuses a dataplane of another build.
    Hello { pid: u32, build: String },
    /// Recovery done, every listener bound: clients are served.
    Ready { shards: usize },
    Reply {
        id: u64,
        ok: bool,
        /// The answer (`ok`), or `{"error": text}`.
        body: serde_json::Value,
    },
}

/// The channel failed or carried something this build cannot read.
#[derive(Debug)]
pub enum ChannelError {
    Io(std::io::Error),
    Closed,
    Version(u16),
    TooLarge(usize),
    Malformed(String),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Io(e) => write!(f, "control channel: {e}"),
            ChannelError::Closed => write!(f, "control channel closed by the other process"),
            ChannelError::Version(v) => write!(
                f,
                "control channel: peer speaks protocol version {v}, this build {PROTOCOL_VERSION} — the control plane and the dataplane must be the same `tachyon` binary (restart after an upgrade)"
            ),
            ChannelError::TooLarge(n) => {
                write!(f, "control channel: frame of {n} bytes exceeds {FRAME_MAX}")
            }
            ChannelError::Malformed(e) => write!(f, "control channel: malformed message: {e}"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Writes one message as a frame.
///
/// # Errors
/// [`ChannelError::Io`] when the write fails.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ChannelError> {
    let body = serde_json::to_vec(msg).map_err(|e| ChannelError::Malformed(e.to_string()))?;
    if body.len() + 2 > FRAME_MAX {
        return Err(ChannelError::TooLarge(body.len() + 2));
    }
    let mut frame = Vec::with_capacity(6 + body.len());
    frame.extend_from_slice(&((body.len() + 2) as u32).to_le_bytes());
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).map_err(ChannelError::Io)?;
    w.flush().map_err(ChannelError::Io)
}

/// Reads one frame and decodes its message.
///
/// # Errors
/// [`ChannelError::Closed`] at end of stream, [`ChannelError::Version`] for a frame of
/// another protocol version, [`ChannelError::Malformed`] for a body that is not a message.
pub fn recv<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, ChannelError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ChannelError::Closed)
        }
        Err(e) => return Err(ChannelError::Io(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_MAX {
        return Err(ChannelError::TooLarge(len));
    }
    if len < 2 {
        return Err(ChannelError::Malformed(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ChannelError::Closed
        } else {
            ChannelError::Io(e)
        }
    })?;
    let version = u16::from_le_bytes([buf[0], buf[1]]);
    if version != PROTOCOL_VERSION {
        return Err(ChannelError::Version(version));
    }
    serde_json::from_slice(&buf[2..]).map_err(|e| ChannelError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_frames() {
        let msgs = vec![
            ToDataplane::Start {
                config: "[limits]\n".into(),
                origin: "t".into(),
                port: Some(1883),
                data_dir: None,
                stats_path: "/tmp/x".into(),
                boot_nonce: 7,
            },
            ToDataplane::Request {
                id: 3,
                op: Op::Kick {
                    client_id: "c".into(),
                },
            },
            ToDataplane::Stop,
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            send(&mut buf, m).unwrap();
        }
        let mut r = &buf[..];
        for m in &msgs {
            assert_eq!(&recv::<ToDataplane>(&mut r).unwrap(), m);
        }
        assert!(matches!(
            recv::<ToDataplane>(&mut r),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn another_version_or_garbage_is_refused_with_the_reason() {
        let mut buf = Vec::new();
        send(
            &mut buf,
            &FromDataplane::Hello {
                pid: 1,
                build: "b".into(),
            },
        )
        .unwrap();
        buf[4] = 9;
        let e = recv::<FromDataplane>(&mut &buf[..]).unwrap_err();
        assert!(e.to_string().contains("same `tachyon` binary"), "{e}");
        let mut bad = Vec::new();
        bad.extend_from_slice(&5u32.to_le_bytes());
        bad.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        bad.extend_from_slice(b"{x}");
        assert!(matches!(
            recv::<FromDataplane>(&mut &bad[..]),
            Err(ChannelError::Malformed(_))
        ));
        let huge = (FRAME_MAX as u32 + 1).to_le_bytes();
        assert!(matches!(
            recv::<FromDataplane>(&mut &huge[..]),
            Err(ChannelError::TooLarge(_))
        ));
        // A frame cut short is a closed channel, not a hang or a panic.
        assert!(matches!(
            recv::<FromDataplane>(&mut &buf[..7]),
            Err(ChannelError::Closed)
        ));
    }
}
