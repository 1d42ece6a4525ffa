//! Decoding: fixed header first, then one packet body, checked completely before a [`Packet`]
//! exists.
//!
//! ```text
//!   receive buffer (BytesMut)
//!   ┌────────┬──────────────────┬───────────────────────────────────┬─────────
//!   │ byte 1 │ Remaining Length │ variable header + payload          │ next ...
//!   │ type|fl│ 1..=4 bytes      │ (Remaining Length bytes)           │
//!   └────────┴──────────────────┴───────────────────────────────────┴─────────
//!   peek_fixed_header ─▶ type/flags checked, size checked against the maximum
//!                        ─▶ wait until the whole packet is buffered (Ok(None))
//!                        ─▶ split_to(total).freeze() ─▶ fields are Bytes slices of it
//! ```
//!
//! Nothing is allocated in proportion to a length the peer claims: every length is compared
//! with the bytes actually present before it is used, and lists (filters, reason codes, user
//! properties) grow only as entries are read.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{expected_flags, DecodeError};
use crate::props::{decode_properties, PropContext};
use crate::reason::ReasonCode;
use crate::topic::has_wildcard;
use crate::types::*;
use crate::varint::read_varint;

/// The fixed header of the packet at the front of a buffer (v5 2.1.1; v3.1.1 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (high nibble) and flags (low nibble).
    pub first_byte: u8,
    /// Bytes of the fixed header: 1 plus the length of the Remaining Length (2..=5).
    pub header_len: usize,
    /// The Remaining Length: bytes of variable header and payload.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// The control packet type number (v5 2.1.2), 1..=15.
    pub fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    /// Bytes of the whole packet, fixed header included.
    pub fn total_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Checks the first byte alone: packet type 0 and the reserved flag values (v5 2.1.3 Table 2-2;
/// v3.1.1 2.2.2 Table 2.2), and the PUBLISH QoS/DUP bits.
fn check_first_byte(first: u8) -> Result<(), DecodeError> {
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    match packet_type {
        0 => Err(DecodeError::InvalidPacketType(0)),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                // v5 [MQTT-3.3.1-4]; v3.1.1 [MQTT-3.3.1-4].
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                // v5 [MQTT-3.3.1-2]; v3.1.1 [MQTT-3.3.1-2].
                return Err(DecodeError::PublishDupWithQoS0);
            }
            Ok(())
        }
        // v5 [MQTT-2.1.3-1], [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1], [MQTT-3.14.1-1],
        // [MQTT-3.15.1-1]; v3.1.1 [MQTT-2.2.2-1], [MQTT-2.2.2-2].
        t if flags != expected_flags(t) => Err(DecodeError::ReservedFlags { packet_type, flags }),
        _ => Ok(()),
    }
}

/// Reads the fixed header at the front of `buf` without consuming anything.
///
/// Returns `Ok(None)` while the Remaining Length is incomplete. The first byte is checked as
/// soon as it is there: packet type 0, reserved flags and PUBLISH QoS 3 / DUP with QoS 0 are
/// errors even before the Remaining Length arrives. (AUTH in MQTT 3.1.1 depends on the
/// connection's version and is checked by [`decode`].)
///
/// # Errors
/// [`DecodeError::InvalidPacketType`], [`DecodeError::ReservedFlags`],
/// [`DecodeError::InvalidQoS`], [`DecodeError::PublishDupWithQoS0`],
/// [`DecodeError::VarIntTooLong`], [`DecodeError::VarIntNotMinimal`].
pub fn peek_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    check_first_byte(first)?;
    Ok(read_varint(rest)?.map(|(remaining, n)| FixedHeader {
        first_byte: first,
        header_len: 1 + n,
        remaining_len: remaining as usize,
    }))
}

/// The Protocol Level byte of a CONNECT at the front of `buf`, once that many bytes are
/// buffered; `None` if `buf` does not start with a CONNECT fixed header or is too short.
///
/// The engine uses it to answer a CONNECT that failed to decode in the version the client
/// asked for: a v5 CONNACK with a Reason Code for level 5, a v3.1.1 return code otherwise.
pub fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    let (&first, rest) = buf.split_first()?;
    if first >> 4 != PacketType::Connect as u8 {
        return None;
    }
    let (_, n) = read_varint(rest).ok()??;
    let at = 1 + n;
    let name_len = usize::from(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]));
    buf.get(at + 2 + name_len).copied()
}

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version, `None` before CONNECT: a CONNECT is always
/// decoded in the version its own Protocol Level names; other packets use `version`, or the v5
/// rules when it is `None`. `max_packet_size` bounds the whole packet, fixed header included,
/// and is checked as soon as the fixed header is complete, before the body is awaited.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet; `buf` is then untouched.
/// On success the packet's bytes are split off the front of `buf` and the returned packet's
/// strings, binary fields and payload are slices of them (no copy).
///
/// # Errors
/// Any [`DecodeError`]: the peer broke a rule and the connection is to be closed (after a
/// CONNACK or DISCONNECT carrying [`DecodeError::reason_code`] in v5). After an error `buf` may
/// or may not have had the offending packet removed; it must not be decoded further.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = peek_fixed_header(buf)? else {
        return Ok(None);
    };
    if header.packet_type() == PacketType::Auth as u8 && version.is_some_and(|v| !v.is_v5()) {
        // v3.1.1 2.2.1 Table 2.1 (and MQTT 3.1): type 15 is Reserved.
        return Err(DecodeError::AuthInV311);
    }
    let total = header.total_len();
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    // Skip the fixed header in place and split off only the body: one reference-count
    // operation per packet instead of three (they were a tenth of a shard's time).
    buf.advance(header.header_len);
    let body = buf.split_to(total - header.header_len).freeze();
    let version = version.unwrap_or(ProtocolVersion::V5);
    decode_body(header.first_byte, Reader::new(body), version).map(Some)
}

/// A cursor over one packet body (or a property list). Every read checks the bytes left and
/// reports [`DecodeError::Truncated`] naming the field when they run out.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(DecodeError::Truncated { field })?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        self.pos += N;
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Two Byte Integer, big-endian (v5 1.5.2).
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Four Byte Integer, big-endian (v5 1.5.3).
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Variable Byte Integer (v5 1.5.5).
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match read_varint(rest)? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated { field }),
        }
    }

    /// The next `n` bytes as a slice of the packet (no copy).
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary Data: a Two Byte Integer length and that many bytes (v5 1.5.6).
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let n = usize::from(self.u16(field)?);
        self.take(n, field)
    }

    /// UTF-8 Encoded String (v5 1.5.4; v3.1.1 1.5.3): well-formed, no U+0000
    /// (v5 [MQTT-1.5.4-1], [MQTT-1.5.4-2]; v3.1.1 [MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    pub(crate) fn utf8(&mut self, field: &'static str) -> Result<Utf8Str, DecodeError> {
        let b = self.binary(field)?;
        Utf8Str::from_bytes(b).ok_or(DecodeError::InvalidUtf8String { field })
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n, field)?))
    }

    /// Everything left (the PUBLISH payload). The reader gives up its buffer rather than
    /// slicing it (no reference-count operation); it is empty afterwards.
    fn rest(&mut self) -> Bytes {
        let mut b = std::mem::take(&mut self.buf);
        b.advance(self.pos);
        self.pos = 0;
        b
    }

    /// A packet that has read its last field must have consumed the Remaining Length exactly.
    fn finish(&self, packet_type: u8) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { packet_type, extra }),
        }
    }

    fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        // v5 [MQTT-2.2.1-3]; v3.1.1 [MQTT-2.3.1-1].
        PacketId::new(self.u16("Packet Identifier")?).ok_or(DecodeError::ZeroPacketId)
    }
}

// v5 Reason Codes each packet may carry (v5 2.4 Table 2-6 and the packet sections).
/// CONNACK, v5 3.2.2.2 Table 3-1.
pub(crate) const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// PUBACK (v5 3.4.2.1) and PUBREC (v5 3.5.2.1).
pub(crate) const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// PUBREL (v5 3.6.2.1) and PUBCOMP (v5 3.7.2.1).
pub(crate) const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
/// SUBACK, v5 3.9.3.
pub(crate) const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// SUBACK return codes of v3.1.1 (v3.1.1 3.9.3, [MQTT-3.9.3-2]).
pub(crate) const SUBACK_REASONS_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
/// UNSUBACK, v5 3.11.3.
pub(crate) const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// DISCONNECT, v5 3.14.2.1.
pub(crate) const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// AUTH, v5 3.15.2.1.
pub(crate) const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

fn reason(r: &mut Reader, packet_type: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let code = r.u8("Reason Code")?;
    if !allowed.contains(&code) {
        return Err(DecodeError::InvalidReasonCode { packet_type, code });
    }
    Ok(ReasonCode(code))
}

fn decode_body(first: u8, mut r: Reader, v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let packet_type = first >> 4;
    let v5 = v == ProtocolVersion::V5;
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r, v5)?),
        3 => Packet::Publish(decode_publish(first, &mut r, v5)?),
        4..=7 => {
            let (ctx, allowed) = match packet_type {
                4 => (PropContext::PubAck, PUBACK_REASONS),
                5 => (PropContext::PubRec, PUBACK_REASONS),
                6 => (PropContext::PubRel, PUBREL_REASONS),
                _ => (PropContext::PubComp, PUBREL_REASONS),
            };
            let resp = decode_pub_resp(&mut r, v5, packet_type, ctx, allowed)?;
            match packet_type {
                4 => Packet::PubAck(resp),
                5 => Packet::PubRec(resp),
                6 => Packet::PubRel(resp),
                _ => Packet::PubComp(resp),
            }
        }
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => Packet::SubAck(decode_suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (reason, properties) =
                decode_reason_and_props(&mut r, v5, packet_type, PropContext::Disconnect)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 => {
            // Only reached for v5 (or before CONNECT): decode() refuses type 15 in v3.1.1.
            let (reason, properties) =
                decode_reason_and_props(&mut r, true, packet_type, PropContext::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
        _ => return Err(DecodeError::InvalidPacketType(packet_type)),
    };
    // PUBLISH, SUBSCRIBE, UNSUBSCRIBE and the acks with lists read to the end themselves.
    r.finish(packet_type)?;
    Ok(packet)
}

/// CONNECT (v5 3.1; v3.1.1 3.1), decoded per its own Protocol Level.
fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("Protocol Name")?;
    let is_mqtt = &name[..] == b"MQTT";
    // MQTT 3.1 used "MQIsdp" with level 3 (MQTT V3.1 Protocol Specification, 3.1).
    let is_mqisdp = &name[..] == b"MQIsdp";
    if !is_mqtt && !is_mqisdp {
        // v5 [MQTT-3.1.2-1]; v3.1.1 [MQTT-3.1.2-1].
        return Err(DecodeError::InvalidProtocolName);
    }
    let level = r.u8("Protocol Level")?;
    let version = match (is_mqtt, level) {
        (true, 4) => ProtocolVersion::V311,
        (true, 5) => ProtocolVersion::V5,
        (false, 3) => ProtocolVersion::V31,
        // v5 [MQTT-3.1.2-2]; v3.1.1 [MQTT-3.1.2-2]. "MQIsdp" with another level gets the same
        // answer (CONNACK 0x01), as from Mosquitto.
        _ => return Err(DecodeError::UnsupportedProtocolVersion { level }),
    };
    let v5 = version == ProtocolVersion::V5;
    let flags = r.u8("Connect Flags")?;
    if flags & 0x01 != 0 {
        // v5 [MQTT-3.1.2-3]; v3.1.1 [MQTT-3.1.2-3].
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        // v5 [MQTT-3.1.2-11], [MQTT-3.1.2-13]; v3.1.1 [MQTT-3.1.2-13], [MQTT-3.1.2-15].
        return Err(DecodeError::WillFlagsWithoutWill { flags });
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?; // v5 [MQTT-3.1.2-12]; v3.1.1 [MQTT-3.1.2-14].
    if !v5 && password_flag && !username_flag {
        // v3.1.1 [MQTT-3.1.2-22].
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive_secs = r.u16("Keep Alive")?;
    let properties = if v5 {
        decode_properties(r, PropContext::Connect)?
    } else {
        Properties::default()
    };
    // Payload order: v5 [MQTT-3.1.3-1]; v3.1.1 [MQTT-3.1.3-1].
    let client_id = r.utf8("Client Identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            decode_properties(r, PropContext::Will)?
        } else {
            Properties::default()
        };
        let topic = r.utf8("Will Topic")?;
        if !crate::topic::validate_topic_name(topic.as_bytes()) {
            // A Will Topic is a Topic Name: v5 [MQTT-4.7.3-1], [MQTT-4.7.0-1].
            return Err(DecodeError::TopicNameInvalid);
        }
        let payload = r.binary("Will Payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.utf8("User Name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("Password")?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// CONNACK (v5 3.2; v3.1.1 3.2).
fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("Connect Acknowledge Flags")?;
    if flags & 0xFE != 0 {
        // v5 [MQTT-3.2.2-1]; v3.1.1 3.2.2.1.
        return Err(DecodeError::InvalidConnAckFlags { flags });
    }
    let session_present = flags & 0x01 != 0;
    if v5 {
        let reason = reason(r, 2, CONNACK_REASONS)?; // v5 [MQTT-3.2.2-8].
        let properties = decode_properties(r, PropContext::ConnAck)?;
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    } else {
        let code = r.u8("Connect Return code")?;
        let reason = ReasonCode::from_v311_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet_type: 2,
            code,
        })?;
        Ok(ConnAck {
            session_present,
            reason,
            properties: Properties::default(),
        })
    }
}

/// PUBLISH (v5 3.3; v3.1.1 3.3). The fixed-header flags were checked by `check_first_byte`.
fn decode_publish(first: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let dup = first & 0b1000 != 0;
    let qos = QoS::from_u8((first >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain = first & 0b0001 != 0;
    // v5 [MQTT-3.3.2-1]; v3.1.1 [MQTT-3.3.2-1].
    let topic = r.utf8("Topic Name")?;
    // v5 [MQTT-3.3.2-2]; v3.1.1 [MQTT-3.3.2-2]. Empty is a v5 Topic Alias case for the engine;
    // v3.1.1 [MQTT-4.7.3-1] requires at least one character.
    if has_wildcard(topic.as_bytes()) || (!v5 && topic.is_empty()) {
        return Err(DecodeError::TopicNameInvalid);
    }
    // v5 [MQTT-2.2.1-2]: a Packet Identifier only when QoS > 0.
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let properties = if v5 {
        decode_properties(r, PropContext::Publish)?
    } else {
        Properties::default()
    };
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (v5 3.4-3.7; v3.1.1 3.4-3.7).
fn decode_pub_resp(
    r: &mut Reader,
    v5: bool,
    packet_type: u8,
    ctx: PropContext,
    allowed: &[u8],
) -> Result<PubResp, DecodeError> {
    let packet_id = r.packet_id()?;
    // v5 3.4.2.1: "If the Remaining Length is 2, then there is no Reason Code and the value of
    // 0x00 (Success) is used"; 3.4.2.2.1: "If the Remaining Length is less than 4 there is no
    // Property Length and the value of 0 is used." v3.1.1 has the Packet Identifier only.
    if !v5 || r.remaining() == 0 {
        return Ok(PubResp::new(packet_id, ReasonCode::SUCCESS));
    }
    // v5 [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1], [MQTT-3.7.2-1].
    let reason = reason(r, packet_type, allowed)?;
    let properties = if r.remaining() == 0 {
        Properties::default()
    } else {
        decode_properties(r, ctx)?
    };
    Ok(PubResp {
        packet_id,
        reason,
        properties,
    })
}

/// DISCONNECT (v5 3.14) and AUTH (v5 3.15): Remaining Length 0 means Success without
/// properties, and a Reason Code alone means no properties (v5 3.14.2.2.1 "If the Remaining
/// Length is less than 2, a value of 0 is used"). policy: AUTH gets the same leniency for a
/// Reason Code alone, which v5 3.15 does not spell out but some clients send. v3.1.1 DISCONNECT
/// has no variable header.
fn decode_reason_and_props(
    r: &mut Reader,
    v5: bool,
    packet_type: u8,
    ctx: PropContext,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let allowed = if ctx == PropContext::Auth {
        AUTH_REASONS
    } else {
        DISCONNECT_REASONS
    };
    // v5 [MQTT-3.14.2-1], [MQTT-3.15.2-1].
    let reason = reason(r, packet_type, allowed)?;
    let properties = if r.remaining() == 0 {
        Properties::default()
    } else {
        decode_properties(r, ctx)?
    };
    Ok((reason, properties))
}

/// SUBSCRIBE (v5 3.8; v3.1.1 3.8). A Topic Filter that is not correctly formed makes the packet
/// malformed; a correctly formed one may still be refused by the Server in SUBACK (0x8F/0x80).
fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropContext::Subscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.utf8("Topic Filter")?; // v5 [MQTT-3.8.3-1]; v3.1.1 [MQTT-3.8.3-1].
        well_formed_filter(&filter, 8)?;
        let options = r.u8("Subscription Options")?;
        filters.push((filter, subscription_options(options, v5)?));
    }
    if filters.is_empty() {
        // v5 [MQTT-3.8.3-2]; v3.1.1 [MQTT-3.8.3-3].
        return Err(DecodeError::NoTopicFilters { packet_type: 8 });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// A Topic Filter's syntax (v5 4.7, 4.8.2; v3.1.1 4.7): `packet_type` 8 or 10.
fn well_formed_filter(filter: &Utf8Str, packet_type: u8) -> Result<(), DecodeError> {
    crate::topic::check_filter(filter.as_bytes())
        .map_err(|rule| DecodeError::TopicFilterInvalid { packet_type, rule })
}

/// Subscription Options byte (v5 3.8.3.1; v3.1.1 3.8.3 "Requested QoS").
fn subscription_options(options: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    // v5 [MQTT-3.8.3-5]: bits 6-7 reserved; v3.1.1 [MQTT-3-8.3-4]: bits 2-7 reserved.
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if options & reserved != 0 {
        return Err(DecodeError::InvalidSubscriptionOptions { options });
    }
    let qos =
        QoS::from_u8(options & 0x03).ok_or(DecodeError::InvalidSubscriptionQoS { options })?;
    let retain_handling = (options >> 4) & 0x03;
    if retain_handling == 3 {
        // v5 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
        return Err(DecodeError::InvalidRetainHandling { options });
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: options & 0x04 != 0,
        retain_as_published: options & 0x08 != 0,
        retain_handling,
    })
}

/// Reads the rest of the packet as one Reason Code per byte.
fn reason_list(
    r: &mut Reader,
    packet_type: u8,
    allowed: &[u8],
) -> Result<Vec<ReasonCode>, DecodeError> {
    // The capacity is the bytes actually received, not a claimed count.
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reasons.push(reason(r, packet_type, allowed)?);
    }
    if reasons.is_empty() {
        // One per Topic Filter and at least one filter: v5 [MQTT-3.8.4-6], [MQTT-3.11.3-1].
        return Err(DecodeError::NoReasonCodes { packet_type });
    }
    Ok(reasons)
}

/// SUBACK (v5 3.9; v3.1.1 3.9).
fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropContext::SubAck)?
    } else {
        Properties::default()
    };
    // v5 [MQTT-3.9.3-2]; v3.1.1 [MQTT-3.9.3-2].
    let allowed = if v5 {
        SUBACK_REASONS
    } else {
        SUBACK_REASONS_V311
    };
    let reasons = reason_list(r, 9, allowed)?;
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

/// UNSUBSCRIBE (v5 3.10; v3.1.1 3.10).
fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropContext::Unsubscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.utf8("Topic Filter")?; // v5 [MQTT-3.10.3-1]; v3.1.1 [MQTT-3.10.3-1].
                                              // The same syntax as in SUBSCRIBE: a filter that could never have been subscribed is
                                              // malformed, not "no subscription existed".
        well_formed_filter(&filter, 10)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        // v5 [MQTT-3.10.3-2]; v3.1.1 [MQTT-3.10.3-2].
        return Err(DecodeError::NoTopicFilters { packet_type: 10 });
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

/// UNSUBACK (v5 3.11; v3.1.1 3.11, which has only the Packet Identifier).
fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reasons: Vec::new(),
        });
    }
    let properties = decode_properties(r, PropContext::UnsubAck)?;
    // v5 [MQTT-3.11.3-2].
    let reasons = reason_list(r, 11, UNSUBACK_REASONS)?;
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn dec(bytes: &[u8], v: Option<ProtocolVersion>) -> Result<Option<Packet>, DecodeError> {
        let mut b = BytesMut::from(bytes);
        let r = decode(&mut b, v, MAX);
        if let Ok(Some(_)) = r {
            assert!(b.is_empty(), "whole packet consumed");
        }
        r
    }

    #[test]
    fn fixed_header_accessors() {
        let h = peek_fixed_header(&[0x30, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!(
            h,
            FixedHeader {
                first_byte: 0x30,
                header_len: 3,
                remaining_len: 128
            }
        );
        assert_eq!(h.packet_type(), 3);
        assert_eq!(h.total_len(), 131);
        assert_eq!(peek_fixed_header(&[]), Ok(None));
        assert_eq!(peek_fixed_header(&[0xC0]), Ok(None));
    }

    #[test]
    fn peek_connect_level_reads_the_level_byte() {
        let connect = [0x10, 0x0A, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60];
        assert_eq!(peek_connect_level(&connect), Some(5));
        assert_eq!(peek_connect_level(&connect[..8]), None);
        assert_eq!(peek_connect_level(&connect[..9]), Some(5));
        let mqisdp = [0x10, 0x0C, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3];
        assert_eq!(peek_connect_level(&mqisdp), Some(3));
        assert_eq!(peek_connect_level(&[0x30, 0x00]), None);
        assert_eq!(peek_connect_level(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    #[test]
    fn pingreq_decodes_and_consumes_only_itself() {
        let mut b = BytesMut::from(&[0xC0, 0x00, 0xD0][..]);
        assert_eq!(decode(&mut b, None, MAX), Ok(Some(Packet::PingReq)));
        assert_eq!(&b[..], [0xD0]);
    }

    #[test]
    fn reader_reports_the_field_that_ran_out() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(
            r.utf8("Topic Name"),
            Err(DecodeError::Truncated {
                field: "Topic Name"
            })
        );
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert_eq!(
            r.u16("Keep Alive"),
            Err(DecodeError::Truncated {
                field: "Keep Alive"
            })
        );
        assert_eq!(r.u32("x"), Err(DecodeError::Truncated { field: "x" }));
        assert_eq!(r.u8("y"), Ok(1));
        assert_eq!(r.u8("y"), Err(DecodeError::Truncated { field: "y" }));
    }

    /// Zero copy: the payload and topic point into the packet's own buffer.
    #[test]
    fn publish_fields_are_slices_of_the_receive_buffer() {
        let bytes = [0x30, 0x07, 0x00, 0x01, b't', 0x00, b'p', b'a', b'y'];
        let mut b = BytesMut::from(&bytes[..]);
        let base = b.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut b, Some(ProtocolVersion::V5), MAX).unwrap()
        else {
            panic!("expected PUBLISH");
        };
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
        assert_eq!(p.payload.as_ptr() as usize, base + 6);
        assert_eq!(&p.payload[..], b"pay");
    }

    #[test]
    fn disconnect_v311_and_v5_short_form() {
        let d = Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        });
        assert_eq!(
            dec(&[0xE0, 0x00], Some(ProtocolVersion::V311)),
            Ok(Some(d.clone()))
        );
        assert_eq!(dec(&[0xE0, 0x00], Some(ProtocolVersion::V5)), Ok(Some(d)));
        assert_eq!(
            dec(&[0xE0, 0x01, 0x00], Some(ProtocolVersion::V311)),
            Err(DecodeError::TrailingBytes {
                packet_type: 14,
                extra: 1
            })
        );
    }
}
