//! Encoding: packet values (and the PUBLISH fast path, [`PublishHead`]) into a `BytesMut`.
//!
//! Lengths are computed first and the bytes written once, so nothing is copied or moved after
//! the fact; the writer asserts that it wrote exactly the computed number of bytes.
//!
//! ```text
//!   encode(Packet)          ─▶ fixed header | variable header | payload
//!   encode_publish_head()   ─▶ fixed header | topic | packet id | properties
//!                              (the caller appends the payload, or hands it to writev)
//! ```
//!
//! MQTT 3.1.1 output omits properties and every v5-only field; v5 output uses the short forms
//! the specification allows when the Reason Code is Success and there are no properties.

use bytes::{BufMut, BytesMut};

use crate::error::EncodeError;
use crate::props::{
    check_encodable, properties_block_len, properties_len, put_len_prefixed, varint_len_usize,
    write_properties, PropContext, PropsOut,
};
use crate::reason::ReasonCode;
use crate::types::*;
use crate::varint::{write_varint, VARINT_MAX};

/// The variable header of an outbound PUBLISH, without its payload: the broker's fast path.
///
/// `properties` are the ones forwarded unaltered from the publisher (Payload Format Indicator,
/// Content Type, Response Topic, Correlation Data, User Properties: v5 [MQTT-3.3.2-4],
/// [MQTT-3.3.2-15] .. [MQTT-3.3.2-20]). Their `message_expiry_interval`, `topic_alias` and
/// `subscription_identifiers` are ignored: the fields of the head are written instead, since
/// they differ per subscriber (v5 [MQTT-3.3.2-6], [MQTT-3.3.4-3]), so the broker need not clone
/// `Properties` for each one. All properties are ignored in MQTT 3.1.1.
#[derive(Debug, Clone, Copy)]
pub struct PublishHead<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Topic Name bytes (a valid MQTT string; empty only with a v5 Topic Alias).
    pub topic: &'a [u8],
    /// Present if and only if `qos` > 0.
    pub packet_id: Option<PacketId>,
    pub properties: Option<&'a Properties>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
}

impl<'a> PublishHead<'a> {
    fn props_out(&self, empty: &'a Properties) -> PropsOut<'a> {
        PropsOut {
            base: self.properties.unwrap_or(empty),
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: self.topic_alias,
            subscription_identifiers: self.subscription_identifiers,
        }
    }

    /// Variable header bytes and the property list length (v5 only, else 0).
    fn var_header_len(&self, version: ProtocolVersion) -> (usize, usize) {
        let mut n = 2 + self.topic.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        let mut props = 0;
        if version == ProtocolVersion::V5 {
            let empty = Properties::default();
            let po = self.props_out(&empty);
            props = properties_len(&po, PropContext::Publish);
            n += varint_len_usize(props) + props;
        }
        (n, props)
    }

    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            // v5 [MQTT-2.2.1-2]; v3.1.1 2.3.1.
            return Err(EncodeError::InvalidPacket {
                what: "PUBLISH has a Packet Identifier if and only if QoS > 0",
            });
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            // v5 [MQTT-3.3.1-2]; v3.1.1 [MQTT-3.3.1-2].
            return Err(EncodeError::InvalidPacket {
                what: "PUBLISH with DUP needs QoS > 0",
            });
        }
        if self.topic.len() > usize::from(u16::MAX) {
            return Err(EncodeError::FieldTooLong {
                field: "Topic Name",
                len: self.topic.len(),
            });
        }
        if !version.is_v5() && self.topic.is_empty() {
            // v3.1.1 [MQTT-4.7.3-1] (and 3.1): no Topic Alias to stand in for the name.
            return Err(EncodeError::InvalidPacket {
                what: "MQTT 3.1.1 PUBLISH needs a topic",
            });
        }
        if version == ProtocolVersion::V5 {
            let empty = Properties::default();
            check_encodable(&self.props_out(&empty), PropContext::Publish)?;
        }
        Ok(())
    }
}

/// Sizes of an outbound PUBLISH: `(head bytes, total packet bytes)`, where the head is what
/// [`encode_publish_head`] writes and the total adds `payload_len`.
///
/// Compare the total with the receiver's Maximum Packet Size before sending (v5
/// [MQTT-3.1.2-24], [MQTT-3.1.2-25]). A Remaining Length over 268,435,455 cannot be encoded;
/// the sizes are still returned (as if it could) so the caller's size check refuses it.
pub fn publish_head_len(
    head: &PublishHead,
    payload_len: usize,
    version: ProtocolVersion,
) -> (usize, usize) {
    let (var_header, _) = head.var_header_len(version);
    let remaining = var_header.saturating_add(payload_len);
    let head_len = 1 + varint_len_usize(remaining) + var_header;
    (head_len, head_len.saturating_add(payload_len))
}

/// Writes the fixed header and variable header of a PUBLISH whose payload is `payload_len`
/// bytes; the caller appends the payload (or sends it with writev). Returns the bytes written,
/// equal to `publish_head_len(..).0`.
///
/// # Panics
/// If the head cannot be put on the wire, which is a caller bug: QoS 0 with a Packet
/// Identifier or QoS > 0 without one, DUP with QoS 0, a topic over 65,535 bytes or empty in
/// MQTT 3.1.1, Correlation Data over 65,535 bytes, a Subscription Identifier outside
/// 1..=268,435,455, or a Remaining Length over 268,435,455 (check the total from
/// [`publish_head_len`] first). [`encode`] reports the same cases as [`EncodeError`].
pub fn encode_publish_head(
    head: &PublishHead,
    payload_len: usize,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> usize {
    if let Err(e) = head.check(version) {
        panic!("encode_publish_head: invalid head: {e}");
    }
    let (var_header, props_len) = head.var_header_len(version);
    let remaining = var_header.saturating_add(payload_len);
    let remaining = u32::try_from(remaining)
        .ok()
        .filter(|&r| r <= VARINT_MAX)
        .unwrap_or_else(|| panic!("encode_publish_head: remaining length {remaining} too large"));
    let start = out.len();
    let first = 0x30 | (u8::from(head.dup) << 3) | (head.qos.as_u8() << 1) | u8::from(head.retain);
    out.reserve(5 + var_header);
    out.put_u8(first);
    write_varint(remaining, out);
    put_len_prefixed(out, head.topic);
    if let Some(id) = head.packet_id {
        out.put_u16(id.get());
    }
    if version == ProtocolVersion::V5 {
        let empty = Properties::default();
        write_properties(
            &head.props_out(&empty),
            PropContext::Publish,
            props_len,
            out,
        );
    }
    out.len() - start
}

fn publish_head(p: &Publish) -> PublishHead<'_> {
    PublishHead {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        topic: p.topic.as_bytes(),
        packet_id: p.packet_id,
        properties: Some(&p.properties),
        message_expiry_interval: p.properties.message_expiry_interval,
        topic_alias: p.properties.topic_alias,
        subscription_identifiers: &p.properties.subscription_identifiers,
    }
}

/// First byte of the fixed header for the non-PUBLISH packets (v5 2.1.3 Table 2-2).
fn first_byte(packet: &Packet) -> u8 {
    let t = packet.packet_type() as u8;
    let flags = match packet {
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (t << 4) | flags
}

fn is_v5(v: ProtocolVersion) -> bool {
    v == ProtocolVersion::V5
}

/// Length of a v5 property block (Property Length + list), 0 in v3.1.1.
fn props_block(p: &Properties, ctx: PropContext, v: ProtocolVersion) -> usize {
    if is_v5(v) {
        properties_block_len(&PropsOut::of(p), ctx)
    } else {
        0
    }
}

/// True when the v5 short form without Reason Code applies (v5 3.4.2.1, 3.14.2.1, 3.15.2.1).
fn short_form(reason: ReasonCode, p: &Properties) -> bool {
    reason == ReasonCode::SUCCESS && p.is_empty()
}

fn pub_resp_ctx(packet: &Packet) -> PropContext {
    match packet {
        Packet::PubAck(_) => PropContext::PubAck,
        Packet::PubRec(_) => PropContext::PubRec,
        Packet::PubRel(_) => PropContext::PubRel,
        _ => PropContext::PubComp,
    }
}

/// v3.1.1 SUBACK return code for a v5 Reason Code: granted QoS stays, everything else is
/// 0x80 Failure (v3.1.1 3.9.3 [MQTT-3.9.3-2]).
fn suback_v311(r: ReasonCode) -> u8 {
    match r.0 {
        0x00..=0x02 => r.0,
        _ => 0x80,
    }
}

/// Subscription Options byte (v5 3.8.3.1; v3.1.1 has the QoS bits only).
fn options_byte(o: &SubscriptionOptions, v: ProtocolVersion) -> u8 {
    let mut b = o.qos.as_u8();
    if is_v5(v) {
        b |= u8::from(o.no_local) << 2;
        b |= u8::from(o.retain_as_published) << 3;
        b |= o.retain_handling << 4;
    }
    b
}

/// Remaining Length of a non-PUBLISH packet.
fn body_len(packet: &Packet, v: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(c) => {
            // Protocol Name ("MQTT", or "MQIsdp" for 3.1), level, flags, keep alive.
            let mut n = 2 + v.protocol_name().len() + 1 + 1 + 2;
            n += props_block(&c.properties, PropContext::Connect, v);
            n += 2 + c.client_id.len();
            if let Some(w) = &c.will {
                n += props_block(&w.properties, PropContext::Will, v);
                n += 2 + w.topic.len() + 2 + w.payload.len();
            }
            if let Some(u) = &c.username {
                n += 2 + u.len();
            }
            if let Some(p) = &c.password {
                n += 2 + p.len();
            }
            n
        }
        Packet::ConnAck(c) => 2 + props_block(&c.properties, PropContext::ConnAck, v),
        Packet::Publish(p) => {
            let (var_header, _) = publish_head(p).var_header_len(v);
            var_header + p.payload.len()
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            if !is_v5(v) || short_form(r.reason, &r.properties) {
                2
            } else if r.properties.is_empty() {
                3
            } else {
                3 + props_block(&r.properties, pub_resp_ctx(packet), v)
            }
        }
        Packet::Subscribe(s) => {
            2 + props_block(&s.properties, PropContext::Subscribe, v)
                + s.filters
                    .iter()
                    .map(|(f, _)| 2 + f.len() + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => {
            2 + props_block(&s.properties, PropContext::SubAck, v) + s.reasons.len()
        }
        Packet::Unsubscribe(u) => {
            2 + props_block(&u.properties, PropContext::Unsubscribe, v)
                + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            if is_v5(v) {
                2 + props_block(&u.properties, PropContext::UnsubAck, v) + u.reasons.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if !is_v5(v) || short_form(d.reason, &d.properties) {
                0
            } else if d.properties.is_empty() {
                1 // v5 3.14.2.2.1: no Property Length when the Remaining Length is below 2.
            } else {
                1 + props_block(&d.properties, PropContext::Disconnect, v)
            }
        }
        Packet::Auth(a) => {
            if short_form(a.reason, &a.properties) {
                0
            } else {
                // Always with a Property Length: v5 3.15 only names the Remaining Length 0 form.
                1 + props_block(&a.properties, PropContext::Auth, v)
            }
        }
    }
}

/// Total bytes [`encode`] writes for `packet` in `version`, fixed header included.
///
/// For a packet [`encode`] refuses the value is not meaningful (0 for AUTH in MQTT 3.1.1).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    if !is_v5(version) && matches!(packet, Packet::Auth(_)) {
        return 0;
    }
    let body = body_len(packet, version);
    1 + varint_len_usize(body) + body
}

fn too_long(field: &'static str, len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(())
}

fn check_props(p: &Properties, ctx: PropContext, v: ProtocolVersion) -> Result<(), EncodeError> {
    if is_v5(v) {
        check_encodable(&PropsOut::of(p), ctx)?;
    }
    Ok(())
}

/// Everything the types do not already guarantee, checked before a byte is written.
fn check(packet: &Packet, v: ProtocolVersion) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => {
            if c.version != v {
                return Err(EncodeError::InvalidPacket {
                    what: "CONNECT version differs from the version to encode in",
                });
            }
            if !is_v5(v) && c.password.is_some() && c.username.is_none() {
                // v3.1.1 [MQTT-3.1.2-22].
                return Err(EncodeError::InvalidPacket {
                    what: "MQTT 3.1.1 CONNECT with a Password needs a User Name",
                });
            }
            check_props(&c.properties, PropContext::Connect, v)?;
            if let Some(w) = &c.will {
                too_long("Will Payload", w.payload.len())?;
                check_props(&w.properties, PropContext::Will, v)?;
            }
            if let Some(p) = &c.password {
                too_long("Password", p.len())?;
            }
        }
        Packet::ConnAck(c) => check_props(&c.properties, PropContext::ConnAck, v)?,
        Packet::Publish(p) => publish_head(p).check(v)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            check_props(&r.properties, pub_resp_ctx(packet), v)?
        }
        Packet::Subscribe(s) => {
            if s.filters.is_empty() {
                return Err(EncodeError::InvalidPacket {
                    what: "SUBSCRIBE without Topic Filter",
                });
            }
            if s.filters.iter().any(|(_, o)| o.retain_handling > 2) {
                return Err(EncodeError::InvalidPacket {
                    what: "Retain Handling above 2",
                });
            }
            check_props(&s.properties, PropContext::Subscribe, v)?;
        }
        Packet::SubAck(s) => {
            if s.reasons.is_empty() {
                return Err(EncodeError::InvalidPacket {
                    what: "SUBACK without Reason Code",
                });
            }
            check_props(&s.properties, PropContext::SubAck, v)?;
        }
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(EncodeError::InvalidPacket {
                    what: "UNSUBSCRIBE without Topic Filter",
                });
            }
            check_props(&u.properties, PropContext::Unsubscribe, v)?;
        }
        Packet::UnsubAck(u) => {
            if is_v5(v) && u.reasons.is_empty() {
                return Err(EncodeError::InvalidPacket {
                    what: "UNSUBACK without Reason Code",
                });
            }
            check_props(&u.properties, PropContext::UnsubAck, v)?;
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => check_props(&d.properties, PropContext::Disconnect, v)?,
        Packet::Auth(a) => {
            if !is_v5(v) {
                return Err(EncodeError::NotInVersion {
                    packet: PacketType::Auth,
                });
            }
            check_props(&a.properties, PropContext::Auth, v)?;
        }
    }
    Ok(())
}

/// Appends `packet` encoded for `version` to `out` and returns the number of bytes written.
///
/// MQTT 3.1.1: properties and v5-only fields are left out, CONNACK carries
/// [`ReasonCode::to_v311_connack`], SUBACK failures become 0x80, UNSUBACK has no payload and
/// DISCONNECT is empty. v5: PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT and AUTH use the short
/// forms when the Reason Code is Success and there are no properties. Properties a packet may
/// not carry are not written (v5 2.2.2.2).
///
/// # Errors
/// [`EncodeError::NotInVersion`] for AUTH in MQTT 3.1.1, [`EncodeError::PacketTooLarge`] when
/// the Remaining Length would exceed 268,435,455, [`EncodeError::FieldTooLong`] and
/// [`EncodeError::InvalidPacket`] for values the wire cannot carry. Nothing is written then.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check(packet, version)?;
    let body = body_len(packet, version);
    if body > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge { size: body });
    }
    if let Packet::Publish(p) = packet {
        let head = publish_head(p);
        out.reserve(1 + 4 + body);
        let n = encode_publish_head(&head, p.payload.len(), version, out);
        out.put_slice(&p.payload);
        return Ok(n + p.payload.len());
    }
    let start = out.len();
    out.reserve(1 + 4 + body);
    out.put_u8(first_byte(packet));
    write_varint(body as u32, out);
    let body_start = out.len();
    write_body(packet, version, out);
    assert_eq!(
        out.len() - body_start,
        body,
        "computed and written remaining length agree"
    );
    Ok(out.len() - start)
}

fn write_props(p: &Properties, ctx: PropContext, v: ProtocolVersion, out: &mut BytesMut) {
    if is_v5(v) {
        let po = PropsOut::of(p);
        let n = properties_len(&po, ctx);
        write_properties(&po, ctx, n, out);
    }
}

fn write_body(packet: &Packet, v: ProtocolVersion, out: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => {
            put_len_prefixed(out, v.protocol_name());
            out.put_u8(v.level());
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | (w.qos.as_u8() << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            out.put_u8(flags);
            out.put_u16(c.keep_alive_secs);
            write_props(&c.properties, PropContext::Connect, v, out);
            put_len_prefixed(out, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                write_props(&w.properties, PropContext::Will, v, out);
                put_len_prefixed(out, w.topic.as_bytes());
                put_len_prefixed(out, &w.payload);
            }
            if let Some(u) = &c.username {
                put_len_prefixed(out, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_len_prefixed(out, p);
            }
        }
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no Session Present flag: the byte is reserved (0).
            out.put_u8(u8::from(c.session_present && v != ProtocolVersion::V31));
            if is_v5(v) {
                out.put_u8(c.reason.0);
                write_props(&c.properties, PropContext::ConnAck, v, out);
            } else {
                out.put_u8(c.reason.to_v311_connack());
            }
        }
        Packet::Publish(_) => unreachable!("PUBLISH is written by encode_publish_head"),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            out.put_u16(r.packet_id.get());
            if is_v5(v) && !short_form(r.reason, &r.properties) {
                out.put_u8(r.reason.0);
                if !r.properties.is_empty() {
                    write_props(&r.properties, pub_resp_ctx(packet), v, out);
                }
            }
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id.get());
            write_props(&s.properties, PropContext::Subscribe, v, out);
            for (f, o) in &s.filters {
                put_len_prefixed(out, f.as_bytes());
                out.put_u8(options_byte(o, v));
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id.get());
            write_props(&s.properties, PropContext::SubAck, v, out);
            for r in &s.reasons {
                out.put_u8(if is_v5(v) { r.0 } else { suback_v311(*r) });
            }
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id.get());
            write_props(&u.properties, PropContext::Unsubscribe, v, out);
            for f in &u.filters {
                put_len_prefixed(out, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id.get());
            if is_v5(v) {
                write_props(&u.properties, PropContext::UnsubAck, v, out);
                for r in &u.reasons {
                    out.put_u8(r.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if is_v5(v) && !short_form(d.reason, &d.properties) {
                out.put_u8(d.reason.0);
                if !d.properties.is_empty() {
                    write_props(&d.properties, PropContext::Disconnect, v, out);
                }
            }
        }
        Packet::Auth(a) => {
            if !short_form(a.reason, &a.properties) {
                out.put_u8(a.reason.0);
                write_props(&a.properties, PropContext::Auth, v, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        let n = encode(p, v, &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(n, encoded_len(p, v));
        out.to_vec()
    }

    fn pid(v: u16) -> PacketId {
        PacketId::new(v).unwrap()
    }

    #[test]
    fn puback_short_forms() {
        let ok = Packet::PubAck(PubResp::new(pid(1), ReasonCode::SUCCESS));
        assert_eq!(enc(&ok, ProtocolVersion::V5), [0x40, 0x02, 0x00, 0x01]);
        let no_subs = Packet::PubAck(PubResp::new(pid(1), ReasonCode::NO_MATCHING_SUBSCRIBERS));
        assert_eq!(
            enc(&no_subs, ProtocolVersion::V5),
            [0x40, 0x03, 0x00, 0x01, 0x10]
        );
        // v3.1.1 has no Reason Code: only the Packet Identifier.
        assert_eq!(
            enc(&no_subs, ProtocolVersion::V311),
            [0x40, 0x02, 0x00, 0x01]
        );
        let with_props = Packet::PubRel(PubResp {
            packet_id: pid(2),
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                reason_string: Some(Utf8Str::from_static("x")),
                ..Properties::default()
            },
        });
        assert_eq!(
            enc(&with_props, ProtocolVersion::V5),
            [0x62, 0x08, 0x00, 0x02, 0x00, 0x04, 0x1F, 0x00, 0x01, b'x']
        );
    }

    #[test]
    fn disconnect_and_auth_short_forms() {
        let d = |r| {
            Packet::Disconnect(Disconnect {
                reason: r,
                properties: Properties::default(),
            })
        };
        assert_eq!(
            enc(&d(ReasonCode::SUCCESS), ProtocolVersion::V5),
            [0xE0, 0x00]
        );
        assert_eq!(
            enc(&d(ReasonCode::SERVER_SHUTTING_DOWN), ProtocolVersion::V5),
            [0xE0, 1, 0x8B]
        );
        assert_eq!(
            enc(&d(ReasonCode::SERVER_SHUTTING_DOWN), ProtocolVersion::V311),
            [0xE0, 0]
        );
        let a = |r| {
            Packet::Auth(Auth {
                reason: r,
                properties: Properties::default(),
            })
        };
        assert_eq!(
            enc(&a(ReasonCode::SUCCESS), ProtocolVersion::V5),
            [0xF0, 0x00]
        );
        assert_eq!(
            enc(&a(ReasonCode::CONTINUE_AUTHENTICATION), ProtocolVersion::V5),
            [0xF0, 0x02, 0x18, 0x00]
        );
        let mut out = BytesMut::new();
        assert_eq!(
            encode(&a(ReasonCode::SUCCESS), ProtocolVersion::V311, &mut out),
            Err(EncodeError::NotInVersion {
                packet: PacketType::Auth
            })
        );
        assert!(out.is_empty());
        assert_eq!(
            encoded_len(&a(ReasonCode::SUCCESS), ProtocolVersion::V311),
            0
        );
    }

    #[test]
    fn connack_v311_uses_return_codes() {
        let c = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::BANNED,
            properties: Properties::default(),
        });
        assert_eq!(enc(&c, ProtocolVersion::V311), [0x20, 0x02, 0x00, 0x05]);
        assert_eq!(enc(&c, ProtocolVersion::V5), [0x20, 0x03, 0x00, 0x8A, 0x00]);
    }

    #[test]
    fn suback_v311_maps_failures_to_0x80() {
        let s = Packet::SubAck(SubAck {
            packet_id: pid(7),
            properties: Properties::default(),
            reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::NOT_AUTHORIZED],
        });
        assert_eq!(
            enc(&s, ProtocolVersion::V311),
            [0x90, 0x04, 0x00, 0x07, 0x02, 0x80]
        );
        assert_eq!(
            enc(&s, ProtocolVersion::V5),
            [0x90, 0x05, 0x00, 0x07, 0x00, 0x02, 0x87]
        );
    }

    #[test]
    fn publish_head_uses_explicit_fields_not_forwarded_ones() {
        let forwarded = Properties {
            content_type: Some(Utf8Str::from_static("t")),
            message_expiry_interval: Some(999),
            topic_alias: Some(9),
            subscription_identifiers: vec![9],
            ..Properties::default()
        };
        let head = PublishHead {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: b"a/b",
            packet_id: Some(pid(0x0102)),
            properties: Some(&forwarded),
            message_expiry_interval: Some(5),
            topic_alias: None,
            subscription_identifiers: &[3],
        };
        let (head_len, total) = publish_head_len(&head, 4, ProtocolVersion::V5);
        let mut out = BytesMut::new();
        assert_eq!(
            encode_publish_head(&head, 4, ProtocolVersion::V5, &mut out),
            head_len
        );
        assert_eq!(total, head_len + 4);
        let expected = [
            0x3A, 23, // PUBLISH DUP QoS 1, Remaining Length 7 + 1 + 11 + 4
            0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02, // topic, packet id
            11,   // Property Length
            0x02, 0, 0, 0, 5, // Message Expiry Interval from the head
            0x03, 0x00, 0x01, b't', // Content Type forwarded
            0x0B, 0x03, // Subscription Identifier from the head
        ];
        assert_eq!(&out[..], expected);
        out.put_slice(b"data");
        let mut buf = out;
        let Some(Packet::Publish(p)) = crate::decode(&mut buf, None, 1 << 20).unwrap() else {
            panic!("expected PUBLISH");
        };
        assert_eq!(p.properties.message_expiry_interval, Some(5));
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.properties.subscription_identifiers, [3]);
        assert_eq!(p.payload, Bytes::from_static(b"data"));

        // v3.1.1: no properties at all.
        let (h311, _) = publish_head_len(&head, 4, ProtocolVersion::V311);
        let mut out = BytesMut::new();
        assert_eq!(
            encode_publish_head(&head, 4, ProtocolVersion::V311, &mut out),
            h311
        );
        assert_eq!(&out[..], [0x3A, 11, 0, 3, b'a', b'/', b'b', 1, 2]);
    }

    #[test]
    #[should_panic(expected = "invalid head")]
    fn publish_head_without_packet_id_at_qos1_panics() {
        let head = PublishHead {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: b"a",
            packet_id: None,
            properties: None,
            message_expiry_interval: None,
            topic_alias: None,
            subscription_identifiers: &[],
        };
        encode_publish_head(&head, 0, ProtocolVersion::V5, &mut BytesMut::new());
    }

    #[test]
    fn invalid_packets_are_refused_without_writing() {
        let bad = [
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: Utf8Str::from_static("a"),
                packet_id: None,
                properties: Properties::default(),
                payload: Bytes::new(),
            }),
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Properties::default(),
                filters: vec![],
            }),
            Packet::Connect(Box::new(Connect {
                version: ProtocolVersion::V5,
                clean_start: true,
                keep_alive_secs: 0,
                client_id: Utf8Str::default(),
                will: None,
                username: None,
                password: Some(Bytes::from(vec![0; 70_000])),
                properties: Properties::default(),
            })),
        ];
        for p in &bad {
            let mut out = BytesMut::new();
            assert!(encode(p, ProtocolVersion::V5, &mut out).is_err(), "{p:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn publish_too_large_for_remaining_length() {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Utf8Str::from_static("a"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from(vec![0u8; VARINT_MAX as usize]),
        });
        let mut out = BytesMut::new();
        assert_eq!(
            encode(&p, ProtocolVersion::V311, &mut out),
            Err(EncodeError::PacketTooLarge {
                size: VARINT_MAX as usize + 3
            })
        );
    }
}
