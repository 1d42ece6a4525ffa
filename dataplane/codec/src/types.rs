//! Packet values. A value of these types only exists when it is valid for the wire: the
//! decoder checks every rule before it builds one, and the encoder trusts them.

use bytes::Bytes;
use std::num::NonZeroU16;

use crate::reason::ReasonCode;

/// The protocol from CONNECT: "MQIsdp" level 3 is MQTT 3.1, "MQTT" level 4 is MQTT 3.1.1,
/// level 5 is MQTT 5.0.
///
/// MQTT 3.1 packets are MQTT 3.1.1 packets on the wire, except CONNECT (its protocol name and
/// level) and CONNACK (byte 1 is reserved in 3.1: no Session Present flag). Everything else is
/// encoded and decoded by the 3.1.1 rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    V31,
    V311,
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The Protocol Name of CONNECT.
    pub fn protocol_name(self) -> &'static [u8] {
        match self {
            ProtocolVersion::V31 => b"MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
        }
    }

    /// MQTT 5.0: reason codes and properties on the wire.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }

    /// How people name it: "3.1", "3.1.1", "5".
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5",
        }
    }
}

/// Quality of Service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A Packet Identifier: never zero (v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    pub fn new(v: u16) -> Option<PacketId> {
        NonZeroU16::new(v).map(PacketId)
    }
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// A UTF-8 Encoded String as MQTT defines it (v5 1.5.4, v3.1.1 1.5.3): valid UTF-8, no U+0000,
/// at most 65535 bytes. Backed by a slice of the receive buffer, so decoding does not copy it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Utf8Str(Bytes);

impl Utf8Str {
    /// Checks the MQTT string rules. Returns `None` when `b` is not valid UTF-8, contains
    /// U+0000 or is longer than 65535 bytes. (Rust `str` already excludes surrogates.)
    pub fn from_bytes(b: Bytes) -> Option<Utf8Str> {
        if b.len() > u16::MAX as usize {
            return None;
        }
        // Topics and ids are nearly always ASCII: one vectorised pass over 1..=0x7F is enough
        // (it excludes U+0000 too), instead of a search for NUL and then a UTF-8 decode.
        if b.iter().all(|&c| c.wrapping_sub(1) < 0x7F) {
            return Some(Utf8Str(b));
        }
        if b.contains(&0) {
            return None;
        }
        std::str::from_utf8(&b).ok()?;
        Some(Utf8Str(b))
    }
    pub fn from_static(s: &'static str) -> Utf8Str {
        assert!(
            s.len() <= u16::MAX as usize && !s.contains('\0'),
            "static MQTT string is valid"
        );
        Utf8Str(Bytes::from_static(s.as_bytes()))
    }
    pub fn from_string(s: String) -> Option<Utf8Str> {
        Utf8Str::from_bytes(Bytes::from(s))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A copy that owns its bytes. Decoded strings are slices of a receive buffer; anything
    /// kept for long (client ids, filters, retained topics) should not pin that buffer.
    pub fn detached(&self) -> Utf8Str {
        Utf8Str(Bytes::copy_from_slice(&self.0))
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("Utf8Str is validated at construction")
    }
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Utf8Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Utf8Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Subscription Options byte of SUBSCRIBE (v5 3.8.3.1; v3.1.1 only has the QoS bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained messages at subscribe; 1: only if the subscription is new; 2: never.
    pub retain_handling: u8,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// Every MQTT 5.0 property (v5 2.2.2.2). One struct serves all packets; the decoder only fills
/// the fields a packet may carry and refuses a property that is not allowed there, or repeated
/// where only one is allowed. For MQTT 3.1.1 it stays empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<Utf8Str>,
    pub response_topic: Option<Utf8Str>,
    pub correlation_data: Option<Bytes>,
    /// Several in PUBLISH (server to client); at most one in SUBSCRIBE; never 0.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<Utf8Str>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<Utf8Str>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<Utf8Str>,
    pub server_reference: Option<Utf8Str>,
    pub reason_string: Option<Utf8Str>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(Utf8Str, Utf8Str)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// No property present. Field by field (a destructuring, so that a new field must be
    /// added here): this runs for every PUBLISH.
    pub fn is_empty(&self) -> bool {
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    /// A copy whose strings and binary data own their bytes (see [`Utf8Str::detached`]).
    pub fn detached(&self) -> Properties {
        let s = |v: &Option<Utf8Str>| v.as_ref().map(Utf8Str::detached);
        let b = |v: &Option<Bytes>| v.as_ref().map(|x| Bytes::copy_from_slice(x));
        Properties {
            content_type: s(&self.content_type),
            response_topic: s(&self.response_topic),
            correlation_data: b(&self.correlation_data),
            assigned_client_identifier: s(&self.assigned_client_identifier),
            authentication_method: s(&self.authentication_method),
            authentication_data: b(&self.authentication_data),
            response_information: s(&self.response_information),
            server_reference: s(&self.server_reference),
            reason_string: s(&self.reason_string),
            user_properties: self
                .user_properties
                .iter()
                .map(|(k, v)| (k.detached(), v.detached()))
                .collect(),
            subscription_identifiers: self.subscription_identifiers.clone(),
            ..*self
        }
    }
}

/// Will Message of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// A Topic Name: non-empty, no wildcards.
    pub topic: Utf8Str,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will Properties (v5 3.1.3.2).
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: ProtocolVersion,
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    /// May be empty (the server assigns one, or v3.1.1 rules apply).
    pub client_id: Utf8Str,
    pub will: Option<Will>,
    pub username: Option<Utf8Str>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// A v5 Reason Code. For MQTT 3.1.1 the encoder maps it to the CONNACK return code
    /// (see [`ReasonCode::to_v311_connack`]) and the decoder maps back.
    pub reason: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Topic Name. Empty only in v5 when a Topic Alias property is present.
    pub topic: Utf8Str,
    /// Present if and only if `qos` > 0.
    pub packet_id: Option<PacketId>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: Properties,
}

impl PubResp {
    pub fn new(packet_id: PacketId, reason: ReasonCode) -> PubResp {
        PubResp {
            packet_id,
            reason,
            properties: Properties::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// At least one (v5 [MQTT-3.8.3-2], v3.1.1 [MQTT-3.8.3-3]); each a correctly formed Topic
    /// Filter ([`crate::topic::check_filter`]) when decoded. Limits a Server sets on them are
    /// the engine's (SUBACK failure codes).
    pub filters: Vec<(Utf8Str, SubscriptionOptions)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// One per filter. In v3.1.1 only 0x00, 0x01, 0x02 and 0x80 exist.
    pub reasons: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// Correctly formed Topic Filters when decoded ([`crate::topic::check_filter`]).
    pub filters: Vec<Utf8Str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// v5 only; empty for v3.1.1 (whose UNSUBACK has no payload).
    pub reasons: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// v5 only; v3.1.1 DISCONNECT has no variable header (decodes as Success).
    pub reason: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// A whole MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// Control packet type numbers of the fixed header (v5 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}
