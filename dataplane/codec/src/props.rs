//! MQTT 5.0 properties (v5 2.2.2): the identifier table, where each property may appear,
//! duplicate and value checks on decode, and one description of the wire order shared by the
//! length computation and the writer so the two cannot disagree.
//!
//! ```text
//!   Property Length (Variable Byte Integer)
//!   { Identifier (Variable Byte Integer) Value }*      value type fixed by the identifier
//! ```
//!
//! Will Properties (v5 3.1.3.2) are their own context: they sit in the CONNECT payload and allow
//! a different set than the CONNECT variable header.

use bytes::{BufMut, Bytes, BytesMut};

use crate::decode::Reader;
use crate::error::{property_name, DecodeError, EncodeError};
use crate::topic::validate_topic_name;
use crate::types::{Properties, Utf8Str};
use crate::varint::{varint_len, write_varint, VARINT_MAX};

/// Where a property list sits; decides which identifiers are allowed (v5 2.2.2.2 Table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropContext {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropContext {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Name for error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PropContext::Connect => "CONNECT",
            PropContext::ConnAck => "CONNACK",
            PropContext::Publish => "PUBLISH",
            PropContext::Will => "Will Properties",
            PropContext::PubAck => "PUBACK",
            PropContext::PubRec => "PUBREC",
            PropContext::PubRel => "PUBREL",
            PropContext::PubComp => "PUBCOMP",
            PropContext::Subscribe => "SUBSCRIBE",
            PropContext::SubAck => "SUBACK",
            PropContext::Unsubscribe => "UNSUBSCRIBE",
            PropContext::UnsubAck => "UNSUBACK",
            PropContext::Disconnect => "DISCONNECT",
            PropContext::Auth => "AUTH",
        }
    }
}

// Property identifiers (v5 2.2.2.2 Table 2-4).
pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The contexts in which a property identifier may appear, or `None` for an identifier the
/// specification does not define (v5 2.2.2.2 Table 2-4).
pub(crate) fn allowed_contexts(id: u8) -> Option<u16> {
    use PropContext::*;
    let m = |cs: &[PropContext]| cs.iter().fold(0u16, |acc, c| acc | c.bit());
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => m(&[Publish, Will]),
        SUBSCRIPTION_IDENTIFIER => m(&[Publish, Subscribe]),
        SESSION_EXPIRY_INTERVAL => m(&[Connect, ConnAck, Disconnect]),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => m(&[ConnAck]),
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => m(&[Connect, ConnAck, Auth]),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => m(&[Connect]),
        WILL_DELAY_INTERVAL => m(&[Will]),
        SERVER_REFERENCE => m(&[ConnAck, Disconnect]),
        REASON_STRING => m(&[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ]),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => m(&[Connect, ConnAck]),
        TOPIC_ALIAS => m(&[Publish]),
        USER_PROPERTY => m(&[
            Connect,
            ConnAck,
            Publish,
            Will,
            PubAck,
            PubRec,
            PubRel,
            PubComp,
            Subscribe,
            SubAck,
            Unsubscribe,
            UnsubAck,
            Disconnect,
            Auth,
        ]),
        _ => return None,
    })
}

fn allowed(id: u8, ctx: PropContext) -> bool {
    allowed_contexts(id).is_some_and(|m| m & ctx.bit() != 0)
}

/// Stores a single-occurrence property; a second one is a Protocol Error (each property's
/// "It is a Protocol Error to include ... more than once", v5 3.x).
fn set_once<T>(slot: &mut Option<T>, v: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { id });
    }
    *slot = Some(v);
    Ok(())
}

/// A Byte property that may only be 0 or 1 (v5 3.1.2.11.6, 3.1.2.11.7, 3.2.2.3.4, 3.2.2.3.5,
/// 3.2.2.3.11-13, 3.3.2.3.2).
fn bool_byte(r: &mut Reader, id: u8) -> Result<u8, DecodeError> {
    let v = r.u8(property_name(id))?;
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue { id });
    }
    Ok(v)
}

fn nonzero_u16(r: &mut Reader, id: u8) -> Result<u16, DecodeError> {
    let v = r.u16(property_name(id))?;
    if v == 0 {
        return Err(DecodeError::InvalidPropertyValue { id });
    }
    Ok(v)
}

/// Reads a Property Length and the property list it covers, for the packet context `ctx`.
///
/// # Errors
/// [`DecodeError::Truncated`] when the list runs past the packet, [`DecodeError::UnknownProperty`]
/// / [`DecodeError::PropertyNotAllowed`] (Malformed Packet, v5 2.2.2.2),
/// [`DecodeError::DuplicateProperty`], [`DecodeError::InvalidPropertyValue`],
/// [`DecodeError::AuthDataWithoutMethod`] (Protocol Errors), string errors.
pub(crate) fn decode_properties(
    r: &mut Reader,
    ctx: PropContext,
) -> Result<Properties, DecodeError> {
    let len = r.varint("Property Length")? as usize;
    let mut pr = r.sub(len, "properties")?;
    let mut p = Properties::default();
    while pr.remaining() > 0 {
        let raw_id = pr.varint("property identifier")?;
        let id = match u8::try_from(raw_id) {
            Ok(id) if allowed_contexts(id).is_some() => id,
            _ => return Err(DecodeError::UnknownProperty { id: raw_id }),
        };
        if !allowed(id, ctx) {
            return Err(DecodeError::PropertyNotAllowed {
                id,
                packet: ctx.name(),
            });
        }
        let name = property_name(id);
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.payload_format_indicator, v, id)?;
            }
            MESSAGE_EXPIRY_INTERVAL => set_once(&mut p.message_expiry_interval, pr.u32(name)?, id)?,
            CONTENT_TYPE => set_once(&mut p.content_type, pr.utf8(name)?, id)?,
            RESPONSE_TOPIC => {
                let v = pr.utf8(name)?;
                // v5 [MQTT-3.3.2-13], [MQTT-3.3.2-14]: a Topic Name, so non-empty and without
                // wildcards.
                if !validate_topic_name(v.as_bytes()) {
                    return Err(DecodeError::InvalidPropertyValue { id });
                }
                set_once(&mut p.response_topic, v, id)?;
            }
            CORRELATION_DATA => set_once(&mut p.correlation_data, pr.binary(name)?, id)?,
            SUBSCRIPTION_IDENTIFIER => {
                let v = pr.varint(name)?;
                // v5 3.3.2.3.8 / 3.8.2.1.2: "It is a Protocol Error if the Subscription
                // Identifier has a value of 0".
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id });
                }
                // Several are allowed only in PUBLISH (v5 3.3.2.3.8); SUBSCRIBE carries one
                // (v5 3.8.2.1.2 "more than once is a Protocol Error").
                if ctx != PropContext::Publish && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty { id });
                }
                p.subscription_identifiers.push(v);
            }
            SESSION_EXPIRY_INTERVAL => set_once(&mut p.session_expiry_interval, pr.u32(name)?, id)?,
            ASSIGNED_CLIENT_IDENTIFIER => {
                set_once(&mut p.assigned_client_identifier, pr.utf8(name)?, id)?
            }
            SERVER_KEEP_ALIVE => set_once(&mut p.server_keep_alive, pr.u16(name)?, id)?,
            AUTHENTICATION_METHOD => set_once(&mut p.authentication_method, pr.utf8(name)?, id)?,
            AUTHENTICATION_DATA => set_once(&mut p.authentication_data, pr.binary(name)?, id)?,
            REQUEST_PROBLEM_INFORMATION => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.request_problem_information, v, id)?;
            }
            WILL_DELAY_INTERVAL => set_once(&mut p.will_delay_interval, pr.u32(name)?, id)?,
            REQUEST_RESPONSE_INFORMATION => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.request_response_information, v, id)?;
            }
            RESPONSE_INFORMATION => set_once(&mut p.response_information, pr.utf8(name)?, id)?,
            SERVER_REFERENCE => set_once(&mut p.server_reference, pr.utf8(name)?, id)?,
            REASON_STRING => set_once(&mut p.reason_string, pr.utf8(name)?, id)?,
            RECEIVE_MAXIMUM => {
                // v5 3.1.2.11.3 / 3.2.2.3.3: "a Protocol Error ... for it to have the value 0".
                let v = nonzero_u16(&mut pr, id)?;
                set_once(&mut p.receive_maximum, v, id)?;
            }
            TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, pr.u16(name)?, id)?,
            TOPIC_ALIAS => {
                // v5 [MQTT-3.3.2-8]: a Topic Alias of 0 is not permitted.
                let v = nonzero_u16(&mut pr, id)?;
                set_once(&mut p.topic_alias, v, id)?;
            }
            MAXIMUM_QOS => {
                // v5 3.2.2.3.4: "a Protocol Error ... to have a value other than 0 or 1".
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.maximum_qos, v, id)?;
            }
            RETAIN_AVAILABLE => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.retain_available, v, id)?;
            }
            USER_PROPERTY => {
                // May repeat, and the order is kept (v5 [MQTT-3.3.2-18]).
                let k = pr.utf8(name)?;
                let v = pr.utf8(name)?;
                p.user_properties.push((k, v));
            }
            MAXIMUM_PACKET_SIZE => {
                // v5 3.1.2.11.4 / 3.2.2.3.6: "a Protocol Error ... to have the value 0".
                let v = pr.u32(name)?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id });
                }
                set_once(&mut p.maximum_packet_size, v, id)?;
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.wildcard_subscription_available, v, id)?;
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.subscription_identifier_available, v, id)?;
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                let v = bool_byte(&mut pr, id)?;
                set_once(&mut p.shared_subscription_available, v, id)?;
            }
            _ => unreachable!("allowed_contexts() covers exactly the identifiers matched here"),
        }
    }
    // v5 3.1.2.11.10 (and 3.2.2.3.18, 3.15.2.2.3 by reference).
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(p)
}

/// The properties to put on the wire. For PUBLISH from [`crate::PublishHead`] the three
/// per-subscriber fields come from the head instead of `base`.
pub(crate) struct PropsOut<'a> {
    pub base: &'a Properties,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
}

impl<'a> PropsOut<'a> {
    pub(crate) fn of(p: &'a Properties) -> PropsOut<'a> {
        PropsOut {
            base: p,
            message_expiry_interval: p.message_expiry_interval,
            topic_alias: p.topic_alias,
            subscription_identifiers: &p.subscription_identifiers,
        }
    }
}

/// Receives the properties in wire order; one implementation counts, one writes.
trait Sink {
    fn byte(&mut self, id: u8, v: u8);
    fn u16(&mut self, id: u8, v: u16);
    fn u32(&mut self, id: u8, v: u32);
    fn varint(&mut self, id: u8, v: u32);
    fn bytes(&mut self, id: u8, v: &[u8]);
    fn pair(&mut self, id: u8, k: &[u8], v: &[u8]);
}

struct LenSink(usize);

impl Sink for LenSink {
    fn byte(&mut self, _: u8, _: u8) {
        self.0 += 2;
    }
    fn u16(&mut self, _: u8, _: u16) {
        self.0 += 3;
    }
    fn u32(&mut self, _: u8, _: u32) {
        self.0 += 5;
    }
    fn varint(&mut self, _: u8, v: u32) {
        self.0 += 1 + varint_len(v);
    }
    fn bytes(&mut self, _: u8, v: &[u8]) {
        self.0 += 3 + v.len();
    }
    fn pair(&mut self, _: u8, k: &[u8], v: &[u8]) {
        self.0 += 5 + k.len() + v.len();
    }
}

struct WriteSink<'o>(&'o mut BytesMut);

impl Sink for WriteSink<'_> {
    fn byte(&mut self, id: u8, v: u8) {
        self.0.put_u8(id);
        self.0.put_u8(v);
    }
    fn u16(&mut self, id: u8, v: u16) {
        self.0.put_u8(id);
        self.0.put_u16(v);
    }
    fn u32(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        self.0.put_u32(v);
    }
    fn varint(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        write_varint(v, self.0);
    }
    fn bytes(&mut self, id: u8, v: &[u8]) {
        self.0.put_u8(id);
        put_len_prefixed(self.0, v);
    }
    fn pair(&mut self, id: u8, k: &[u8], v: &[u8]) {
        self.0.put_u8(id);
        put_len_prefixed(self.0, k);
        put_len_prefixed(self.0, v);
    }
}

/// Writes a two-byte length and the bytes (v5 1.5.4 / 1.5.6).
///
/// # Panics
/// If `v` is longer than 65535 bytes; callers check with [`check_encodable`] or get the
/// guarantee from [`Utf8Str`].
pub(crate) fn put_len_prefixed(out: &mut BytesMut, v: &[u8]) {
    let len = u16::try_from(v.len()).expect("length-prefixed field checked to fit 65535 bytes");
    out.put_u16(len);
    out.put_slice(v);
}

/// Walks the properties allowed in `ctx`, in identifier order (user properties in their own
/// order). Properties that `ctx` does not allow are not written, and SUBSCRIBE gets at most one
/// Subscription Identifier, so the encoder never produces a packet the decoder would refuse.
fn emit<S: Sink>(po: &PropsOut<'_>, ctx: PropContext, s: &mut S) {
    let p = po.base;
    let ok = |id: u8| allowed(id, ctx);
    fn str_b(v: &Option<Utf8Str>) -> Option<&[u8]> {
        v.as_ref().map(|s| s.as_bytes())
    }
    fn bin_b(v: &Option<Bytes>) -> Option<&[u8]> {
        v.as_deref()
    }
    macro_rules! one {
        ($id:expr, $val:expr, $m:ident) => {
            if ok($id) {
                if let Some(v) = $val {
                    s.$m($id, v);
                }
            }
        };
    }
    one!(PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator, byte);
    one!(MESSAGE_EXPIRY_INTERVAL, po.message_expiry_interval, u32);
    one!(CONTENT_TYPE, str_b(&p.content_type), bytes);
    one!(RESPONSE_TOPIC, str_b(&p.response_topic), bytes);
    one!(CORRELATION_DATA, bin_b(&p.correlation_data), bytes);
    if ok(SUBSCRIPTION_IDENTIFIER) {
        let n = if ctx == PropContext::Publish {
            usize::MAX
        } else {
            1
        };
        for &v in po.subscription_identifiers.iter().take(n) {
            s.varint(SUBSCRIPTION_IDENTIFIER, v);
        }
    }
    one!(SESSION_EXPIRY_INTERVAL, p.session_expiry_interval, u32);
    one!(
        ASSIGNED_CLIENT_IDENTIFIER,
        str_b(&p.assigned_client_identifier),
        bytes
    );
    one!(SERVER_KEEP_ALIVE, p.server_keep_alive, u16);
    one!(
        AUTHENTICATION_METHOD,
        str_b(&p.authentication_method),
        bytes
    );
    one!(AUTHENTICATION_DATA, bin_b(&p.authentication_data), bytes);
    one!(
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
        byte
    );
    one!(WILL_DELAY_INTERVAL, p.will_delay_interval, u32);
    one!(
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
        byte
    );
    one!(RESPONSE_INFORMATION, str_b(&p.response_information), bytes);
    one!(SERVER_REFERENCE, str_b(&p.server_reference), bytes);
    one!(REASON_STRING, str_b(&p.reason_string), bytes);
    one!(RECEIVE_MAXIMUM, p.receive_maximum, u16);
    one!(TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum, u16);
    one!(TOPIC_ALIAS, po.topic_alias, u16);
    one!(MAXIMUM_QOS, p.maximum_qos, byte);
    one!(RETAIN_AVAILABLE, p.retain_available, byte);
    if ok(USER_PROPERTY) {
        for (k, v) in &p.user_properties {
            s.pair(USER_PROPERTY, k.as_bytes(), v.as_bytes());
        }
    }
    one!(MAXIMUM_PACKET_SIZE, p.maximum_packet_size, u32);
    one!(
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
        byte
    );
    one!(
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
        byte
    );
    one!(
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
        byte
    );
}

/// Length of the property list alone (without its Property Length prefix).
pub(crate) fn properties_len(po: &PropsOut<'_>, ctx: PropContext) -> usize {
    let mut s = LenSink(0);
    emit(po, ctx, &mut s);
    s.0
}

/// Length of Property Length plus the list.
pub(crate) fn properties_block_len(po: &PropsOut<'_>, ctx: PropContext) -> usize {
    let n = properties_len(po, ctx);
    varint_len_usize(n) + n
}

/// [`varint_len`] for a `usize` that may exceed [`VARINT_MAX`]; such sizes are refused later
/// by the packet-size check, so any length will do here.
pub(crate) fn varint_len_usize(n: usize) -> usize {
    match u32::try_from(n) {
        Ok(v) if v <= VARINT_MAX => varint_len(v),
        _ => 4,
    }
}

/// Writes Property Length and the list; `list_len` must come from [`properties_len`].
pub(crate) fn write_properties(
    po: &PropsOut<'_>,
    ctx: PropContext,
    list_len: usize,
    out: &mut BytesMut,
) {
    let len = u32::try_from(list_len).expect("property length checked against VARINT_MAX");
    write_varint(len, out);
    let start = out.len();
    emit(po, ctx, &mut WriteSink(out));
    assert_eq!(
        out.len() - start,
        list_len,
        "property length computed and written agree"
    );
}

/// Checks what the types do not guarantee before anything is written: Binary Data fits its
/// two-byte length (v5 1.5.6) and Subscription Identifiers are 1..=268,435,455 (v5 3.3.2.3.8).
pub(crate) fn check_encodable(po: &PropsOut<'_>, ctx: PropContext) -> Result<(), EncodeError> {
    let p = po.base;
    for (id, field, v) in [
        (CORRELATION_DATA, "Correlation Data", &p.correlation_data),
        (
            AUTHENTICATION_DATA,
            "Authentication Data",
            &p.authentication_data,
        ),
    ] {
        if let Some(v) = v {
            if allowed(id, ctx) && v.len() > usize::from(u16::MAX) {
                return Err(EncodeError::FieldTooLong {
                    field,
                    len: v.len(),
                });
            }
        }
    }
    if allowed(SUBSCRIPTION_IDENTIFIER, ctx)
        && po
            .subscription_identifiers
            .iter()
            .any(|&v| v == 0 || v > VARINT_MAX)
    {
        return Err(EncodeError::InvalidPacket {
            what: "Subscription Identifier must be 1..=268435455",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], ctx: PropContext) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes));
        let p = decode_properties(&mut r, ctx)?;
        assert_eq!(r.remaining(), 0);
        Ok(p)
    }

    fn enc(p: &Properties, ctx: PropContext) -> Vec<u8> {
        let po = PropsOut::of(p);
        let n = properties_len(&po, ctx);
        let mut out = BytesMut::new();
        write_properties(&po, ctx, n, &mut out);
        assert_eq!(out.len(), properties_block_len(&po, ctx));
        out.to_vec()
    }

    #[test]
    fn empty_list_is_a_zero_length() {
        assert_eq!(
            dec(&[0x00], PropContext::Publish),
            Ok(Properties::default())
        );
        assert_eq!(enc(&Properties::default(), PropContext::Connect), [0x00]);
    }

    #[test]
    fn publish_properties_byte_exact() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(0x0102_0304),
            topic_alias: Some(7),
            subscription_identifiers: vec![1, 200],
            user_properties: vec![(Utf8Str::from_static("k"), Utf8Str::from_static("v"))],
            ..Properties::default()
        };
        let bytes = [
            22, // Property Length
            0x01, 0x01, // Payload Format Indicator
            0x02, 0x01, 0x02, 0x03, 0x04, // Message Expiry Interval
            0x0B, 0x01, // Subscription Identifier 1
            0x0B, 0xC8, 0x01, // Subscription Identifier 200
            0x23, 0x00, 0x07, // Topic Alias
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property
        ];
        assert_eq!(enc(&p, PropContext::Publish), bytes);
        assert_eq!(dec(&bytes, PropContext::Publish), Ok(p));
    }

    #[test]
    fn encoder_skips_properties_not_allowed_in_context() {
        let p = Properties {
            topic_alias: Some(3),
            session_expiry_interval: Some(10),
            subscription_identifiers: vec![4, 5],
            ..Properties::default()
        };
        // SUBSCRIBE: only the first Subscription Identifier; no Topic Alias or Session Expiry.
        assert_eq!(enc(&p, PropContext::Subscribe), [2, 0x0B, 4]);
        assert_eq!(enc(&p, PropContext::PubAck), [0]);
    }

    /// v5 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
    #[test]
    fn property_not_allowed_in_will_is_malformed() {
        let e = dec(&[3, 0x23, 0x00, 0x01], PropContext::Will).unwrap_err();
        assert_eq!(
            e,
            DecodeError::PropertyNotAllowed {
                id: 0x23,
                packet: "Will Properties"
            }
        );
        assert_eq!(e.reason_code(), crate::ReasonCode::MALFORMED_PACKET);
    }

    /// v5 2.2.2.2: an identifier the specification does not define is a Malformed Packet.
    #[test]
    fn unknown_property_is_malformed() {
        assert_eq!(
            dec(&[2, 0x04, 0x00], PropContext::Publish),
            Err(DecodeError::UnknownProperty { id: 0x04 })
        );
        // Identifier 0x80 0x01 = 128, a two-byte Variable Byte Integer.
        assert_eq!(
            dec(&[3, 0x80, 0x01, 0x00], PropContext::Publish),
            Err(DecodeError::UnknownProperty { id: 128 })
        );
    }

    /// v5 3.3.2.3.2: "It is a Protocol Error to include the Payload Format Indicator more than
    /// once."
    #[test]
    fn duplicate_property_is_protocol_error() {
        let e = dec(&[4, 0x01, 0x00, 0x01, 0x01], PropContext::Publish).unwrap_err();
        assert_eq!(e, DecodeError::DuplicateProperty { id: 0x01 });
        assert_eq!(e.reason_code(), crate::ReasonCode::PROTOCOL_ERROR);
    }

    /// v5 3.8.2.1.2: one Subscription Identifier in SUBSCRIBE; several in PUBLISH (3.3.2.3.8).
    #[test]
    fn subscription_identifier_repeats_only_in_publish() {
        let bytes = [4, 0x0B, 0x01, 0x0B, 0x02];
        assert_eq!(
            dec(&bytes, PropContext::Subscribe),
            Err(DecodeError::DuplicateProperty { id: 0x0B })
        );
        assert_eq!(
            dec(&bytes, PropContext::Publish)
                .unwrap()
                .subscription_identifiers,
            [1, 2]
        );
    }

    #[test]
    fn user_property_repeats_in_order() {
        let bytes = [
            14, 0x26, 0, 1, b'a', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2',
        ];
        let p = dec(&bytes, PropContext::Disconnect).unwrap();
        let vals: Vec<_> = p.user_properties.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(vals, ["1", "2"]);
    }

    /// Value checks: 0/1 bytes, non-zero Receive Maximum, Maximum Packet Size, Topic Alias
    /// (v5 [MQTT-3.3.2-8]), Subscription Identifier, Response Topic as a Topic Name
    /// (v5 [MQTT-3.3.2-14]).
    #[test]
    fn invalid_values_are_refused() {
        let cases: &[(&[u8], PropContext, u8)] = &[
            (&[2, 0x01, 0x02], PropContext::Publish, 0x01),
            (&[2, 0x17, 0x02], PropContext::Connect, 0x17),
            (&[2, 0x19, 0x05], PropContext::Connect, 0x19),
            (&[2, 0x24, 0x02], PropContext::ConnAck, 0x24),
            (&[2, 0x25, 0x02], PropContext::ConnAck, 0x25),
            (&[2, 0x28, 0x02], PropContext::ConnAck, 0x28),
            (&[2, 0x29, 0x02], PropContext::ConnAck, 0x29),
            (&[2, 0x2A, 0x02], PropContext::ConnAck, 0x2A),
            (&[3, 0x21, 0, 0], PropContext::Connect, 0x21),
            (&[5, 0x27, 0, 0, 0, 0], PropContext::Connect, 0x27),
            (&[3, 0x23, 0, 0], PropContext::Publish, 0x23),
            (&[2, 0x0B, 0x00], PropContext::Subscribe, 0x0B),
            (&[5, 0x08, 0, 2, b'a', b'#'], PropContext::Publish, 0x08),
            (&[3, 0x08, 0, 0], PropContext::Will, 0x08),
        ];
        for &(bytes, ctx, id) in cases {
            assert_eq!(
                dec(bytes, ctx),
                Err(DecodeError::InvalidPropertyValue { id }),
                "{bytes:02X?}"
            );
        }
    }

    /// v5 3.1.2.11.10: Authentication Data without Authentication Method.
    #[test]
    fn auth_data_without_method_is_protocol_error() {
        assert_eq!(
            dec(&[4, 0x16, 0, 1, 0xAA], PropContext::Connect),
            Err(DecodeError::AuthDataWithoutMethod)
        );
    }

    #[test]
    fn property_list_longer_than_packet_is_truncated() {
        assert_eq!(
            dec(&[5, 0x01, 0x00], PropContext::Publish),
            Err(DecodeError::Truncated {
                field: "properties"
            })
        );
        // The value runs past the Property Length.
        assert_eq!(
            dec(&[2, 0x02, 0x00, 0x00, 0x00, 0x00], PropContext::Publish).unwrap_err(),
            DecodeError::Truncated {
                field: "Message Expiry Interval"
            }
        );
    }

    #[test]
    fn invalid_utf8_in_string_property() {
        assert_eq!(
            dec(&[4, 0x03, 0, 1, 0xFF], PropContext::Publish),
            Err(DecodeError::InvalidUtf8String {
                field: "Content Type"
            })
        );
    }

    #[test]
    fn every_defined_identifier_has_a_name_and_contexts() {
        for id in 0u8..=0x30 {
            assert_eq!(
                allowed_contexts(id).is_some(),
                property_name(id) != "unknown",
                "{id}"
            );
        }
    }

    #[test]
    fn check_encodable_refuses_oversize_binary_and_bad_sub_ids() {
        let big = Properties {
            correlation_data: Some(Bytes::from(vec![0; 65_536])),
            ..Properties::default()
        };
        assert_eq!(
            check_encodable(&PropsOut::of(&big), PropContext::Publish),
            Err(EncodeError::FieldTooLong {
                field: "Correlation Data",
                len: 65_536
            })
        );
        let zero = Properties {
            subscription_identifiers: vec![0],
            ..Properties::default()
        };
        assert!(check_encodable(&PropsOut::of(&zero), PropContext::Publish).is_err());
    }
}
