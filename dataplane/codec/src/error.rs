//! Decode and encode errors.
//!
//! [`DecodeError`] is "the peer broke a rule": one variant per rule, each documented with the
//! statement it enforces, and [`DecodeError::reason_code`] maps it to the v5 Reason Code the
//! specification names. For MQTT 3.1.1 the engine closes the connection instead (or answers
//! CONNACK return code 0x01 for an unsupported protocol level, v3.1.1 [MQTT-3.1.2-2]).
//!
//! Classification (v5 1.2, 4.13): a packet that cannot be parsed, or a field whose encoding or
//! enumerated value is not one the specification defines, is a Malformed Packet (0x81); a
//! packet that parses but carries a value the specification calls "a Protocol Error" is 0x82.
//! Where the specification names a more specific code (0x84, 0x90, 0x94, 0x95) that one is used.
//!
//! "Need more bytes" is not an error: the decoder returns `Ok(None)`.

use std::fmt;

use crate::reason::ReasonCode;
use crate::topic::FilterRule;
use crate::types::PacketType;

/// Name of a control packet type number for messages (v5 2.1.2).
pub(crate) fn packet_type_name(t: u8) -> &'static str {
    match t {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved packet type",
    }
}

/// The peer sent bytes that are not a valid MQTT control packet. After any of these the
/// connection is closed (v5 [MQTT-4.13.1-1]; v3.1.1 4.8).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Control packet type 0 is reserved (v5 2.1.2 Table 2-1 "Forbidden"; v3.1.1 2.2.1).
    InvalidPacketType(u8),
    /// The low nibble of the fixed header differs from the value Table 2-2 lists for this
    /// packet type: v5 [MQTT-2.1.3-1], [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1],
    /// [MQTT-3.14.1-1], [MQTT-3.15.1-1]; v3.1.1 [MQTT-2.2.2-1], [MQTT-2.2.2-2].
    ReservedFlags { packet_type: u8, flags: u8 },
    /// Packet type 15 is reserved in MQTT 3.1.1 (v3.1.1 2.2.1 Table 2.1); AUTH exists only in v5.
    AuthInV311,
    /// A Variable Byte Integer needs a fifth byte; v5 1.5.5 and v3.1.1 2.2.3 allow four.
    VarIntTooLong,
    /// A Variable Byte Integer uses more bytes than its value needs (v5 [MQTT-1.5.5-1]).
    VarIntNotMinimal,
    /// The whole packet (fixed header included) is larger than the Maximum Packet Size the
    /// server accepts (v5 3.1.2.11.4 / 3.2.2.3.6: Reason Code 0x95 Packet too large).
    PacketTooLarge { size: usize, max: usize },
    /// The Remaining Length (or a Property Length) ends inside the named field (v5 1.2
    /// "Malformed Packet"; v5 2.1.4, v3.1.1 2.2.3 Remaining Length).
    Truncated { field: &'static str },
    /// Bytes are left over after the last field the packet can hold (v5 1.2 "Malformed
    /// Packet"; v3.1.1 [MQTT-3.1.4-1] and 4.8 for CONNECT and the others).
    TrailingBytes { packet_type: u8, extra: usize },
    /// A UTF-8 Encoded String is not well-formed UTF-8 or contains U+0000: v5 [MQTT-1.5.4-1],
    /// [MQTT-1.5.4-2]; v3.1.1 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    InvalidUtf8String { field: &'static str },
    /// The CONNECT Protocol Name is not "MQTT": v5 [MQTT-3.1.2-1]; v3.1.1 [MQTT-3.1.2-1].
    InvalidProtocolName,
    /// The CONNECT Protocol Level is not 4 or 5 with "MQTT", or 3 with "MQIsdp" (MQTT 3.1):
    /// v5 [MQTT-3.1.2-2]; v3.1.1 [MQTT-3.1.2-2] (CONNACK return code 0x01).
    UnsupportedProtocolVersion { level: u8 },
    /// The reserved bit 0 of the CONNECT flags is set: v5 [MQTT-3.1.2-3]; v3.1.1 [MQTT-3.1.2-3].
    ConnectReservedFlag,
    /// PUBLISH with both QoS bits set: v5 [MQTT-3.3.1-4]; v3.1.1 [MQTT-3.3.1-4].
    InvalidQoS,
    /// Will QoS 3 in CONNECT: v5 [MQTT-3.1.2-12]; v3.1.1 [MQTT-3.1.2-14].
    InvalidWillQoS,
    /// Will QoS or Will Retain set while the Will Flag is 0: v5 [MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13]; v3.1.1 [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15].
    WillFlagsWithoutWill { flags: u8 },
    /// Password Flag set while the User Name Flag is 0 (v3.1.1 [MQTT-3.1.2-22]; v5 allows it).
    PasswordWithoutUsername,
    /// PUBLISH with DUP set and QoS 0: v5 [MQTT-3.3.1-2]; v3.1.1 [MQTT-3.3.1-2].
    PublishDupWithQoS0,
    /// A Packet Identifier of 0: v5 [MQTT-2.2.1-3], [MQTT-2.2.1-4]; v3.1.1 [MQTT-2.3.1-1].
    ZeroPacketId,
    /// A Topic Name with a wildcard (v5 [MQTT-3.3.2-2], [MQTT-4.7.0-1]; v3.1.1 [MQTT-3.3.2-2],
    /// [MQTT-4.7.1-1]) or an empty one where a Topic Name is required (v3.1.1 PUBLISH and every
    /// Will Topic: v5 [MQTT-4.7.3-1]; v3.1.1 [MQTT-4.7.3-1]). An empty v5 PUBLISH Topic Name is
    /// left to the engine, which checks it against the Topic Alias.
    TopicNameInvalid,
    /// A Topic Filter in SUBSCRIBE or UNSUBSCRIBE that is not correctly formed (the rule is
    /// named by [`FilterRule`]: v5 [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1],
    /// [MQTT-4.8.2-1], [MQTT-4.8.2-2]; v3.1.1 [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]).
    /// A Malformed Packet (0x81): the filter does not conform to the specification's syntax
    /// (v5 3.14.2.1, 0x81 "The received packet does not conform to this specification"); 0x8F
    /// stays for correctly formed filters a Server refuses (v5 3.9.3). v3.1.1: a protocol
    /// violation, the connection is closed (v3.1.1 [MQTT-4.8.0-1]).
    TopicFilterInvalid { packet_type: u8, rule: FilterRule },
    /// SUBSCRIBE or UNSUBSCRIBE without any Topic Filter: v5 [MQTT-3.8.3-2], [MQTT-3.10.3-2];
    /// v3.1.1 [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    NoTopicFilters { packet_type: u8 },
    /// Reserved bits of a Subscription Options byte are set: v5 bits 6-7 [MQTT-3.8.3-5];
    /// v3.1.1 bits 2-7 [MQTT-3-8.3-4].
    InvalidSubscriptionOptions { options: u8 },
    /// Requested QoS 3 in a Subscription Options byte (v5 3.8.3.1 "It is a Protocol Error";
    /// v3.1.1 [MQTT-3-8.3-4]).
    InvalidSubscriptionQoS { options: u8 },
    /// Retain Handling 3 in a Subscription Options byte (v5 3.8.3.1 "It is a Protocol Error").
    InvalidRetainHandling { options: u8 },
    /// SUBACK or UNSUBACK without any Reason Code: v5 [MQTT-3.8.4-6], [MQTT-3.11.3-1] (one per
    /// Topic Filter, and a SUBSCRIBE/UNSUBSCRIBE has at least one).
    NoReasonCodes { packet_type: u8 },
    /// CONNACK Acknowledge Flags bits 7-1 are set: v5 [MQTT-3.2.2-1]; v3.1.1 3.2.2.1.
    InvalidConnAckFlags { flags: u8 },
    /// A property given twice where the specification allows it once (v5 2.2.2.2 and each
    /// property's "It is a Protocol Error to include ... more than once").
    DuplicateProperty { id: u8 },
    /// A property that the packet (or the Will Properties) may not carry: v5 2.2.2.2 "A Control
    /// Packet which contains an Identifier which is not valid for its packet type ... is a
    /// Malformed Packet".
    PropertyNotAllowed { id: u8, packet: &'static str },
    /// A property identifier the specification does not define (v5 2.2.2.2).
    UnknownProperty { id: u32 },
    /// A property value outside its range: a 0/1 byte with another value, Receive Maximum 0,
    /// Maximum Packet Size 0, Subscription Identifier 0, Topic Alias 0 (v5 [MQTT-3.3.2-8]),
    /// Maximum QoS other than 0/1, a Response Topic that is not a Topic Name
    /// (v5 [MQTT-3.3.2-14]).
    InvalidPropertyValue { id: u8 },
    /// Authentication Data without Authentication Method (v5 3.1.2.11.10 "It is a Protocol
    /// Error to include Authentication Data if there is no Authentication Method").
    AuthDataWithoutMethod,
    /// A Reason Code the packet type does not define: v5 [MQTT-3.2.2-8] (CONNACK),
    /// [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1], [MQTT-3.7.2-1], [MQTT-3.9.3-2],
    /// [MQTT-3.11.3-2], [MQTT-3.14.2-1], [MQTT-3.15.2-1]; v3.1.1 [MQTT-3.9.3-2] (SUBACK) and
    /// CONNACK return codes 6-255 (v3.1.1 3.2.2.3 "reserved").
    InvalidReasonCode { packet_type: u8, code: u8 },
}

impl DecodeError {
    /// The v5 Reason Code the specification gives for this violation (for CONNACK before the
    /// session exists, DISCONNECT after). MQTT 3.1.1 has no such codes: the engine closes the
    /// connection, except for [`DecodeError::UnsupportedProtocolVersion`] (CONNACK 0x01).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            InvalidProtocolName | UnsupportedProtocolVersion { .. } => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            // v5 3.3.2.3.4: a Topic Alias of 0 is answered with 0x94 Topic Alias invalid.
            InvalidPropertyValue { id: 0x23 } => ReasonCode::TOPIC_ALIAS_INVALID,
            ZeroPacketId
            | NoTopicFilters { .. }
            | InvalidSubscriptionQoS { .. }
            | InvalidRetainHandling { .. }
            | NoReasonCodes { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            InvalidPacketType(_)
            | ReservedFlags { .. }
            | AuthInV311
            | VarIntTooLong
            | VarIntNotMinimal
            | Truncated { .. }
            | TrailingBytes { .. }
            | InvalidUtf8String { .. }
            | ConnectReservedFlag
            | InvalidQoS
            | InvalidWillQoS
            | WillFlagsWithoutWill { .. }
            | PasswordWithoutUsername
            | PublishDupWithQoS0
            | InvalidSubscriptionOptions { .. }
            | TopicFilterInvalid { .. }
            | InvalidConnAckFlags { .. }
            | PropertyNotAllowed { .. }
            | UnknownProperty { .. }
            | InvalidReasonCode { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match *self {
            InvalidPacketType(t) => write!(f, "fixed header has reserved packet type {t}"),
            ReservedFlags { packet_type, flags } => write!(
                f,
                "{} fixed header flags 0b{flags:04b} differ from the reserved value 0b{:04b}",
                packet_type_name(packet_type),
                expected_flags(packet_type)
            ),
            AuthInV311 => f.write_str("packet type 15 (AUTH) is reserved in MQTT 3.1.1"),
            VarIntTooLong => f.write_str(
                "variable byte integer longer than 4 bytes (continuation bit in byte 4)",
            ),
            VarIntNotMinimal => {
                f.write_str("variable byte integer not encoded in the minimum number of bytes")
            }
            PacketTooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds the maximum packet size of {max} bytes"
                )
            }
            Truncated { field } => write!(f, "remaining length ends inside the {field}"),
            TrailingBytes { packet_type, extra } => write!(
                f,
                "{} has {extra} unexpected byte(s) after its last field",
                packet_type_name(packet_type)
            ),
            InvalidUtf8String { field } => {
                write!(
                    f,
                    "{field} is not a valid MQTT UTF-8 string (ill-formed or contains U+0000)"
                )
            }
            InvalidProtocolName => f.write_str("CONNECT protocol name is not \"MQTT\""),
            UnsupportedProtocolVersion { level } => write!(
                f,
                "CONNECT protocol level {level} is not supported (3 = MQTT 3.1 with \"MQIsdp\", 4 = MQTT 3.1.1, 5 = MQTT 5.0)"
            ),
            ConnectReservedFlag => f.write_str("CONNECT flags reserved bit 0 is set"),
            InvalidQoS => f.write_str("PUBLISH has QoS 3 (both QoS bits set)"),
            InvalidWillQoS => f.write_str("CONNECT Will QoS is 3"),
            WillFlagsWithoutWill { flags } => write!(
                f,
                "CONNECT flags 0x{flags:02X} set Will QoS or Will Retain without the Will Flag"
            ),
            PasswordWithoutUsername => f.write_str(
                "CONNECT sets the Password Flag without the User Name Flag (MQTT 3.1.1)",
            ),
            PublishDupWithQoS0 => f.write_str("PUBLISH has the DUP flag set with QoS 0"),
            ZeroPacketId => f.write_str("packet identifier is 0"),
            TopicNameInvalid => {
                f.write_str("topic name is empty or contains a wildcard ('+' or '#')")
            }
            NoTopicFilters { packet_type } => {
                write!(f, "{} has no topic filter", packet_type_name(packet_type))
            }
            TopicFilterInvalid { packet_type, rule } => write!(
                f,
                "{} has a malformed topic filter: {}",
                packet_type_name(packet_type),
                rule.describe()
            ),
            InvalidSubscriptionOptions { options } => {
                write!(f, "subscription options 0x{options:02X} set reserved bits")
            }
            InvalidSubscriptionQoS { options } => {
                write!(f, "subscription options 0x{options:02X} request QoS 3")
            }
            InvalidRetainHandling { options } => {
                write!(
                    f,
                    "subscription options 0x{options:02X} set Retain Handling 3"
                )
            }
            NoReasonCodes { packet_type } => {
                write!(f, "{} has no reason code", packet_type_name(packet_type))
            }
            InvalidConnAckFlags { flags } => {
                write!(
                    f,
                    "CONNACK acknowledge flags 0x{flags:02X} set reserved bits 7-1"
                )
            }
            DuplicateProperty { id } => {
                write!(
                    f,
                    "property {} (0x{id:02X}) appears more than once",
                    property_name(id)
                )
            }
            PropertyNotAllowed { id, packet } => write!(
                f,
                "property {} (0x{id:02X}) is not allowed in {packet}",
                property_name(id)
            ),
            UnknownProperty { id } => write!(f, "unknown property identifier 0x{id:02X}"),
            InvalidPropertyValue { id } => {
                write!(
                    f,
                    "property {} (0x{id:02X}) has an invalid value",
                    property_name(id)
                )
            }
            AuthDataWithoutMethod => {
                f.write_str("Authentication Data property without Authentication Method")
            }
            InvalidReasonCode { packet_type, code } => write!(
                f,
                "reason code 0x{code:02X} is not valid in {}",
                packet_type_name(packet_type)
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fixed-header flags v5 Table 2-2 requires for a packet type (PUBLISH excepted).
pub(crate) fn expected_flags(packet_type: u8) -> u8 {
    match packet_type {
        6 | 8 | 10 => 0b0010,
        _ => 0,
    }
}

/// Name of a v5 property identifier (v5 2.2.2.2 Table 2-4), for messages.
pub(crate) fn property_name(id: u8) -> &'static str {
    match id {
        0x01 => "Payload Format Indicator",
        0x02 => "Message Expiry Interval",
        0x03 => "Content Type",
        0x08 => "Response Topic",
        0x09 => "Correlation Data",
        0x0B => "Subscription Identifier",
        0x11 => "Session Expiry Interval",
        0x12 => "Assigned Client Identifier",
        0x13 => "Server Keep Alive",
        0x15 => "Authentication Method",
        0x16 => "Authentication Data",
        0x17 => "Request Problem Information",
        0x18 => "Will Delay Interval",
        0x19 => "Request Response Information",
        0x1A => "Response Information",
        0x1C => "Server Reference",
        0x1F => "Reason String",
        0x21 => "Receive Maximum",
        0x22 => "Topic Alias Maximum",
        0x23 => "Topic Alias",
        0x24 => "Maximum QoS",
        0x25 => "Retain Available",
        0x26 => "User Property",
        0x27 => "Maximum Packet Size",
        0x28 => "Wildcard Subscription Available",
        0x29 => "Subscription Identifier Available",
        0x2A => "Shared Subscription Available",
        _ => "unknown",
    }
}

/// A packet value that cannot be put on the wire.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The Remaining Length would exceed 268,435,455 ([`crate::VARINT_MAX`], v5 1.5.5);
    /// `size` is the Remaining Length that was needed.
    PacketTooLarge { size: usize },
    /// The packet type does not exist in the protocol version (AUTH in MQTT 3.1.1).
    NotInVersion { packet: PacketType },
    /// A length-prefixed field (Binary Data, Will Payload, Password, Correlation Data,
    /// Authentication Data) is longer than the 65,535 bytes its two-byte length can state
    /// (v5 1.5.6, v3.1.1 1.5.3).
    FieldTooLong { field: &'static str, len: usize },
    /// The packet value breaks a rule the wire format depends on (`what` says which), e.g. a
    /// PUBLISH with QoS > 0 but no Packet Identifier, or a SUBSCRIBE without filters.
    InvalidPacket { what: &'static str },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::PacketTooLarge { size } => write!(
                f,
                "remaining length {size} exceeds the MQTT maximum of {}",
                crate::varint::VARINT_MAX
            ),
            EncodeError::NotInVersion { packet } => {
                write!(
                    f,
                    "{} does not exist in MQTT 3.1.1",
                    packet_type_name(packet as u8)
                )
            }
            EncodeError::FieldTooLong { field, len } => {
                write!(
                    f,
                    "{field} of {len} bytes exceeds the 65535-byte field limit"
                )
            }
            EncodeError::InvalidPacket { what } => write!(f, "cannot encode packet: {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use DecodeError::*;

    /// Every variant: its Display text (operators read these) and its Reason Code.
    #[test]
    fn display_texts_and_reason_codes() {
        let table: Vec<(DecodeError, &str, u8)> = vec![
            (InvalidPacketType(0), "fixed header has reserved packet type 0", 0x81),
            (
                ReservedFlags { packet_type: 6, flags: 0 },
                "PUBREL fixed header flags 0b0000 differ from the reserved value 0b0010",
                0x81,
            ),
            (
                ReservedFlags { packet_type: 12, flags: 1 },
                "PINGREQ fixed header flags 0b0001 differ from the reserved value 0b0000",
                0x81,
            ),
            (AuthInV311, "packet type 15 (AUTH) is reserved in MQTT 3.1.1", 0x81),
            (
                VarIntTooLong,
                "variable byte integer longer than 4 bytes (continuation bit in byte 4)",
                0x81,
            ),
            (
                VarIntNotMinimal,
                "variable byte integer not encoded in the minimum number of bytes",
                0x81,
            ),
            (
                PacketTooLarge { size: 2000, max: 1024 },
                "packet of 2000 bytes exceeds the maximum packet size of 1024 bytes",
                0x95,
            ),
            (Truncated { field: "Topic Name" }, "remaining length ends inside the Topic Name", 0x81),
            (
                TrailingBytes { packet_type: 12, extra: 2 },
                "PINGREQ has 2 unexpected byte(s) after its last field",
                0x81,
            ),
            (
                InvalidUtf8String { field: "Client Identifier" },
                "Client Identifier is not a valid MQTT UTF-8 string (ill-formed or contains U+0000)",
                0x81,
            ),
            (InvalidProtocolName, "CONNECT protocol name is not \"MQTT\"", 0x84),
            (
                UnsupportedProtocolVersion { level: 6 },
                "CONNECT protocol level 6 is not supported (3 = MQTT 3.1 with \"MQIsdp\", 4 = MQTT 3.1.1, 5 = MQTT 5.0)",
                0x84,
            ),
            (ConnectReservedFlag, "CONNECT flags reserved bit 0 is set", 0x81),
            (InvalidQoS, "PUBLISH has QoS 3 (both QoS bits set)", 0x81),
            (InvalidWillQoS, "CONNECT Will QoS is 3", 0x81),
            (
                WillFlagsWithoutWill { flags: 0x20 },
                "CONNECT flags 0x20 set Will QoS or Will Retain without the Will Flag",
                0x81,
            ),
            (
                PasswordWithoutUsername,
                "CONNECT sets the Password Flag without the User Name Flag (MQTT 3.1.1)",
                0x81,
            ),
            (PublishDupWithQoS0, "PUBLISH has the DUP flag set with QoS 0", 0x81),
            (ZeroPacketId, "packet identifier is 0", 0x82),
            (TopicNameInvalid, "topic name is empty or contains a wildcard ('+' or '#')", 0x90),
            (NoTopicFilters { packet_type: 8 }, "SUBSCRIBE has no topic filter", 0x82),
            (NoTopicFilters { packet_type: 10 }, "UNSUBSCRIBE has no topic filter", 0x82),
            (
                TopicFilterInvalid { packet_type: 8, rule: FilterRule::MultiLevelWildcard },
                "SUBSCRIBE has a malformed topic filter: '#' must be alone in the last level of a topic filter",
                0x81,
            ),
            (
                TopicFilterInvalid { packet_type: 10, rule: FilterRule::Empty },
                "UNSUBSCRIBE has a malformed topic filter: a topic filter must not be empty",
                0x81,
            ),
            (
                InvalidSubscriptionOptions { options: 0xC0 },
                "subscription options 0xC0 set reserved bits",
                0x81,
            ),
            (
                InvalidSubscriptionQoS { options: 0x03 },
                "subscription options 0x03 request QoS 3",
                0x82,
            ),
            (
                InvalidRetainHandling { options: 0x30 },
                "subscription options 0x30 set Retain Handling 3",
                0x82,
            ),
            (NoReasonCodes { packet_type: 9 }, "SUBACK has no reason code", 0x82),
            (
                InvalidConnAckFlags { flags: 0x02 },
                "CONNACK acknowledge flags 0x02 set reserved bits 7-1",
                0x81,
            ),
            (
                DuplicateProperty { id: 0x11 },
                "property Session Expiry Interval (0x11) appears more than once",
                0x82,
            ),
            (
                PropertyNotAllowed { id: 0x23, packet: "Will Properties" },
                "property Topic Alias (0x23) is not allowed in Will Properties",
                0x81,
            ),
            (UnknownProperty { id: 0x07 }, "unknown property identifier 0x07", 0x81),
            (
                InvalidPropertyValue { id: 0x21 },
                "property Receive Maximum (0x21) has an invalid value",
                0x82,
            ),
            (
                InvalidPropertyValue { id: 0x23 },
                "property Topic Alias (0x23) has an invalid value",
                0x94,
            ),
            (
                AuthDataWithoutMethod,
                "Authentication Data property without Authentication Method",
                0x82,
            ),
            (
                InvalidReasonCode { packet_type: 4, code: 0x05 },
                "reason code 0x05 is not valid in PUBACK",
                0x81,
            ),
        ];
        for (err, text, code) in table {
            assert_eq!(err.to_string(), text, "{err:?}");
            assert_eq!(err.reason_code(), ReasonCode(code), "{err:?}");
        }
    }

    #[test]
    fn encode_error_display_texts() {
        let table = [
            (
                EncodeError::PacketTooLarge { size: 268_435_456 },
                "remaining length 268435456 exceeds the MQTT maximum of 268435455",
            ),
            (
                EncodeError::NotInVersion {
                    packet: PacketType::Auth,
                },
                "AUTH does not exist in MQTT 3.1.1",
            ),
            (
                EncodeError::FieldTooLong {
                    field: "Correlation Data",
                    len: 70_000,
                },
                "Correlation Data of 70000 bytes exceeds the 65535-byte field limit",
            ),
            (
                EncodeError::InvalidPacket {
                    what: "PUBLISH with QoS > 0 needs a Packet Identifier",
                },
                "cannot encode packet: PUBLISH with QoS > 0 needs a Packet Identifier",
            ),
        ];
        for (err, text) in table {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn errors_are_std_errors() {
        fn is_error<E: std::error::Error>(_: &E) {}
        is_error(&DecodeError::VarIntTooLong);
        is_error(&EncodeError::PacketTooLarge { size: 0 });
    }
}
