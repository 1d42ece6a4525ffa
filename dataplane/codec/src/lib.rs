//! # tachyon-codec — layer 1: MQTT 3.1.1 and 5.0 packets on the wire
//!
//! Bytes in, packets out, and back. No I/O, no clock, no allocation per payload:
//!
//! ```text
//!   BytesMut (receive buffer) ──decode──▶ Packet (payload, topic, strings are Bytes slices)
//!   Packet / PublishHead       ──encode──▶ BytesMut (payload appended or sent by writev)
//! ```
//!
//! Decoding checks the fixed header first: a Remaining Length over the caller's maximum is
//! refused before the body is buffered. Every malformed input is a [`DecodeError`] whose
//! [`DecodeError::reason_code`] is the v5 Reason Code the specification names; for v3.1.1 the
//! engine closes the connection instead.
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod props;
mod reason;
pub mod topic;
mod types;
mod varint;

pub use decode::{decode, peek_connect_level, peek_fixed_header, FixedHeader};
pub use encode::{encode, encode_publish_head, encoded_len, publish_head_len, PublishHead};
pub use error::{DecodeError, EncodeError};
pub use reason::ReasonCode;
pub use types::*;
pub use varint::{varint_len, VARINT_MAX};
