//! One test per rule the decoder enforces: the exact error and its v5 Reason Code.

mod common;

use common::*;
use tachyon_codec::*;
use ProtocolVersion::{V311, V5};

fn expect(bytes: &[u8], v: Option<ProtocolVersion>, err: DecodeError, code: u8) {
    let got = dec_err(bytes, v);
    assert_eq!(got, err, "{bytes:02X?}");
    assert_eq!(got.reason_code(), ReasonCode(code), "{err:?}");
}

/// A v5 CONNECT body with the given flags and the rest of the variable header and payload.
fn connect(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, flags, 0x00, 0x3C];
    body.extend_from_slice(rest);
    pkt(0x10, &body)
}

// ---- Fixed header ---------------------------------------------------------------------------

/// v5 2.1.2 Table 2-1 / v3.1.1 2.2.1 Table 2.1: packet type 0 is reserved.
#[test]
fn packet_type_0_is_malformed() {
    expect(&[0x00, 0x00], None, DecodeError::InvalidPacketType(0), 0x81);
    // Detected from the first byte alone.
    expect(&[0x00], Some(V311), DecodeError::InvalidPacketType(0), 0x81);
}

/// v5 [MQTT-2.1.3-1]; v3.1.1 [MQTT-2.2.2-1], [MQTT-2.2.2-2]: reserved flags of every type.
#[test]
fn reserved_flags_are_malformed() {
    for t in [1u8, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
        let good = if matches!(t, 6 | 8 | 10) { 0b0010 } else { 0 };
        for flags in 0..16u8 {
            if flags == good {
                continue;
            }
            let err = DecodeError::ReservedFlags {
                packet_type: t,
                flags,
            };
            expect(&[(t << 4) | flags], None, err, 0x81);
        }
    }
}

/// v5 [MQTT-3.6.1-1]; v3.1.1 [MQTT-3.6.1-1]: PUBREL flags must be 0010.
#[test]
fn pubrel_flags_0000_are_malformed() {
    let err = DecodeError::ReservedFlags {
        packet_type: 6,
        flags: 0,
    };
    expect(&[0x60, 0x02, 0x00, 0x01], Some(V311), err, 0x81);
}

/// v5 [MQTT-3.8.1-1]; v3.1.1 [MQTT-3.8.1-1]: SUBSCRIBE flags must be 0010.
#[test]
fn subscribe_flags_0000_are_malformed() {
    let err = DecodeError::ReservedFlags {
        packet_type: 8,
        flags: 0,
    };
    expect(&pkt(0x80, &[0, 1, 0, 1, b'a', 0]), Some(V5), err, 0x81);
}

/// v5 [MQTT-3.10.1-1]; v3.1.1 [MQTT-3.10.1-1]: UNSUBSCRIBE flags must be 0010.
#[test]
fn unsubscribe_flags_0000_are_malformed() {
    let err = DecodeError::ReservedFlags {
        packet_type: 10,
        flags: 0,
    };
    expect(&pkt(0xA0, &[0, 1, 0, 1, b'a']), Some(V311), err, 0x81);
}

/// v5 [MQTT-3.14.1-1]; v3.1.1 [MQTT-3.14.1-1]: DISCONNECT reserved bits.
#[test]
fn disconnect_flags_are_malformed() {
    expect(
        &[0xE1, 0x00],
        Some(V5),
        DecodeError::ReservedFlags {
            packet_type: 14,
            flags: 1,
        },
        0x81,
    );
}

/// v5 [MQTT-3.15.1-1]: AUTH reserved bits.
#[test]
fn auth_flags_are_malformed() {
    expect(
        &[0xF8, 0x00],
        Some(V5),
        DecodeError::ReservedFlags {
            packet_type: 15,
            flags: 8,
        },
        0x81,
    );
}

/// v3.1.1 2.2.1 Table 2.1: type 15 is reserved in MQTT 3.1.1.
#[test]
fn auth_in_v311_is_malformed() {
    expect(&[0xF0, 0x00], Some(V311), DecodeError::AuthInV311, 0x81);
}

/// v5 [MQTT-3.3.1-4]; v3.1.1 [MQTT-3.3.1-4]: PUBLISH QoS 3.
#[test]
fn publish_qos_3_is_malformed() {
    expect(&[0x36, 0x00], Some(V5), DecodeError::InvalidQoS, 0x81);
    expect(&[0x3F], Some(V311), DecodeError::InvalidQoS, 0x81);
}

/// v5 [MQTT-3.3.1-2]; v3.1.1 [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
#[test]
fn publish_dup_with_qos_0_is_malformed() {
    expect(
        &pkt(0x38, &[0, 1, b't']),
        Some(V311),
        DecodeError::PublishDupWithQoS0,
        0x81,
    );
}

/// v5 1.5.5 / v3.1.1 2.2.3: the Remaining Length has at most four bytes.
#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    expect(
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF],
        Some(V5),
        DecodeError::VarIntTooLong,
        0x81,
    );
}

/// v5 [MQTT-1.5.5-1]: the minimum number of bytes.
#[test]
fn non_minimal_remaining_length_is_malformed() {
    expect(
        &[0xC0, 0x80, 0x00],
        Some(V5),
        DecodeError::VarIntNotMinimal,
        0x81,
    );
}

/// v5 [MQTT-1.5.5-1] inside a packet: a non-minimal Property Length.
#[test]
fn non_minimal_property_length_is_malformed() {
    expect(
        &pkt(0x30, &[0, 1, b't', 0x80, 0x00]),
        Some(V5),
        DecodeError::VarIntNotMinimal,
        0x81,
    );
}

// ---- CONNECT --------------------------------------------------------------------------------

/// v5 [MQTT-3.1.2-1]; v3.1.1 [MQTT-3.1.2-1]: the Protocol Name is "MQTT".
#[test]
fn connect_protocol_name_other_than_mqtt() {
    let body = [0x00, 0x04, b'M', b'Q', b'T', b'X', 4, 0x02, 0, 60, 0, 0];
    expect(
        &pkt(0x10, &body),
        None,
        DecodeError::InvalidProtocolName,
        0x84,
    );
    // "MQIsdp" is MQTT 3.1, which is level 3 only.
    let mqisdp_4 = [
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 4, 0x02, 0, 60, 0, 0,
    ];
    expect(
        &pkt(0x10, &mqisdp_4),
        None,
        DecodeError::UnsupportedProtocolVersion { level: 4 },
        0x84,
    );
}

/// v5 [MQTT-3.1.2-2]; v3.1.1 [MQTT-3.1.2-2]: unsupported Protocol Level (CONNACK 0x84 / 0x01).
#[test]
fn connect_unsupported_level() {
    let err = |level| DecodeError::UnsupportedProtocolVersion { level };
    expect(&connect(6, 0x02, &[0, 0]), None, err(6), 0x84);
    // Level 3 is MQTT 3.1 only with its own protocol name.
    expect(&connect(3, 0x02, &[0, 0]), None, err(3), 0x84);
}

/// MQTT 3.1: "MQIsdp" with level 3 decodes as a 3.1 CONNECT; the 3.1 CONNACK has no Session
/// Present flag (its byte 1 is reserved).
#[test]
fn connect_mqtt31_decodes() {
    let mqisdp = [
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'c',
    ];
    let Ok(Some(Packet::Connect(c))) = dec(&pkt(0x10, &mqisdp), None) else {
        panic!("expected a 3.1 CONNECT");
    };
    assert_eq!(c.version, ProtocolVersion::V31);
    assert_eq!(c.client_id.as_str(), "c");
    assert_eq!(peek_connect_level(&pkt(0x10, &mqisdp)), Some(3));
    let mut out = bytes::BytesMut::new();
    encode(&Packet::Connect(c), ProtocolVersion::V31, &mut out).unwrap();
    assert_eq!(&out[..], &pkt(0x10, &mqisdp)[..]);
    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    });
    let mut out = bytes::BytesMut::new();
    encode(&ack, ProtocolVersion::V31, &mut out).unwrap();
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x00]);
    // AUTH does not exist in 3.1 either.
    expect(
        &[0xF0, 0x00],
        Some(ProtocolVersion::V31),
        DecodeError::AuthInV311,
        0x81,
    );
}

/// v5 [MQTT-3.1.2-3]; v3.1.1 [MQTT-3.1.2-3]: the reserved connect flag is 0.
#[test]
fn connect_reserved_flag() {
    expect(
        &connect(5, 0x03, &[0, 0, 0]),
        None,
        DecodeError::ConnectReservedFlag,
        0x81,
    );
    expect(
        &connect(4, 0x01, &[0, 0]),
        None,
        DecodeError::ConnectReservedFlag,
        0x81,
    );
}

/// v5 [MQTT-3.1.2-11]; v3.1.1 [MQTT-3.1.2-13]: Will QoS is 0 without the Will Flag.
#[test]
fn connect_will_qos_without_will_flag() {
    let err = DecodeError::WillFlagsWithoutWill { flags: 0x0A };
    expect(&connect(5, 0x0A, &[0, 0, 0]), None, err, 0x81);
}

/// v5 [MQTT-3.1.2-13]; v3.1.1 [MQTT-3.1.2-15]: Will Retain is 0 without the Will Flag.
#[test]
fn connect_will_retain_without_will_flag() {
    let err = DecodeError::WillFlagsWithoutWill { flags: 0x22 };
    expect(&connect(4, 0x22, &[0, 0]), None, err, 0x81);
}

/// v5 [MQTT-3.1.2-12]; v3.1.1 [MQTT-3.1.2-14]: Will QoS 3.
#[test]
fn connect_will_qos_3() {
    expect(
        &connect(4, 0x1E, &[0, 0]),
        None,
        DecodeError::InvalidWillQoS,
        0x81,
    );
}

/// v3.1.1 [MQTT-3.1.2-22]: Password Flag without User Name Flag (allowed in v5).
#[test]
fn connect_v311_password_without_username() {
    let rest = [0, 1, b'c', 0, 1, b'p'];
    expect(
        &connect(4, 0x42, &rest),
        None,
        DecodeError::PasswordWithoutUsername,
        0x81,
    );
    let mut v5_rest = vec![0];
    v5_rest.extend_from_slice(&rest);
    let Ok(Some(Packet::Connect(c))) = dec(&connect(5, 0x42, &v5_rest), None) else {
        panic!("v5 allows a password without a user name");
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
}

/// v5 [MQTT-3.1.3-4], [MQTT-1.5.4-1]; v3.1.1 [MQTT-3.1.3-4], [MQTT-1.5.3-1]: the Client
/// Identifier is well-formed UTF-8 (a CESU surrogate is not).
#[test]
fn connect_client_id_ill_formed_utf8() {
    let err = DecodeError::InvalidUtf8String {
        field: "Client Identifier",
    };
    expect(
        &connect(4, 0x02, &[0, 2, 0xC3, 0x28]),
        None,
        err.clone(),
        0x81,
    );
    expect(
        &connect(5, 0x02, &[0, 0, 3, 0xED, 0xA0, 0x80]),
        None,
        err,
        0x81,
    );
}

/// v5 [MQTT-1.5.4-2]; v3.1.1 [MQTT-1.5.3-2]: no U+0000 in a UTF-8 string.
#[test]
fn connect_client_id_with_nul() {
    let err = DecodeError::InvalidUtf8String {
        field: "Client Identifier",
    };
    expect(&connect(4, 0x02, &[0, 2, b'a', 0]), None, err, 0x81);
}

/// v5 [MQTT-4.7.0-1], [MQTT-4.7.3-1]: the Will Topic is a Topic Name (no wildcards, non-empty).
#[test]
fn connect_will_topic_invalid() {
    // v3.1.1, Will Flag, wildcard topic.
    let rest = [0, 1, b'c', 0, 1, b'#', 0, 0];
    expect(
        &connect(4, 0x06, &rest),
        None,
        DecodeError::TopicNameInvalid,
        0x90,
    );
    // v5, Will Flag, empty Will Topic.
    let rest = [0, 0, 1, b'c', 0, 0, 0, 0, 0];
    expect(
        &connect(5, 0x06, &rest),
        None,
        DecodeError::TopicNameInvalid,
        0x90,
    );
}

/// v5 1.2 Malformed Packet: the Remaining Length ends inside a field the flags announce
/// (v5 [MQTT-3.1.2-19]: with the Password Flag the Password is present).
#[test]
fn connect_truncated_inside_password() {
    let rest = [0, 0, 1, b'c', 0, 1, b'u', 0, 5, b'p'];
    let err = DecodeError::Truncated { field: "Password" };
    expect(&connect(5, 0xC2, &rest), None, err, 0x81);
}

/// v5 [MQTT-3.1.4-1]; v3.1.1 [MQTT-3.1.4-1]: bytes after the last field.
#[test]
fn connect_trailing_bytes() {
    let err = DecodeError::TrailingBytes {
        packet_type: 1,
        extra: 2,
    };
    expect(
        &connect(4, 0x02, &[0, 1, b'c', 0xAA, 0xBB]),
        None,
        err,
        0x81,
    );
}

/// v5 2.2.2.2: a property not valid for CONNECT (Topic Alias) is a Malformed Packet.
#[test]
fn connect_property_not_allowed() {
    let err = DecodeError::PropertyNotAllowed {
        id: 0x23,
        packet: "CONNECT",
    };
    expect(&connect(5, 0x02, &[3, 0x23, 0, 1, 0, 0]), None, err, 0x81);
}

/// v5 3.1.3.2: Will Properties do not include Session Expiry Interval.
#[test]
fn will_property_not_allowed() {
    let rest = [0, 0, 1, b'c', 5, 0x11, 0, 0, 0, 1, 0, 1, b'w', 0, 0];
    let err = DecodeError::PropertyNotAllowed {
        id: 0x11,
        packet: "Will Properties",
    };
    expect(&connect(5, 0x06, &rest), None, err, 0x81);
}

/// v5 3.1.2.11.3: "It is a Protocol Error ... for [Receive Maximum] to have the value 0".
#[test]
fn connect_receive_maximum_zero() {
    let err = DecodeError::InvalidPropertyValue { id: 0x21 };
    expect(&connect(5, 0x02, &[3, 0x21, 0, 0, 0, 0]), None, err, 0x82);
}

/// v5 3.1.2.11.2: "It is a Protocol Error to include the Session Expiry Interval more than
/// once."
#[test]
fn connect_duplicate_property() {
    let props = [10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2, 0, 0];
    expect(
        &connect(5, 0x02, &props),
        None,
        DecodeError::DuplicateProperty { id: 0x11 },
        0x82,
    );
}

/// v5 3.1.2.11.10: Authentication Data without Authentication Method.
#[test]
fn connect_auth_data_without_method() {
    expect(
        &connect(5, 0x02, &[4, 0x16, 0, 1, 9, 0, 0]),
        None,
        DecodeError::AuthDataWithoutMethod,
        0x82,
    );
}

// ---- CONNACK --------------------------------------------------------------------------------

/// v5 [MQTT-3.2.2-1]: Connect Acknowledge Flags bits 7-1 are reserved.
#[test]
fn connack_reserved_flags() {
    let err = DecodeError::InvalidConnAckFlags { flags: 0x80 };
    expect(&[0x20, 0x03, 0x80, 0x00, 0x00], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.2.2-8]: a CONNACK Reason Code from Table 3-1; v3.1.1 3.2.2.3: return codes 6-255
/// are reserved.
#[test]
fn connack_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 2,
        code: 0x10,
    };
    expect(&[0x20, 0x03, 0x00, 0x10, 0x00], Some(V5), err, 0x81);
    let err = DecodeError::InvalidReasonCode {
        packet_type: 2,
        code: 6,
    };
    expect(&[0x20, 0x02, 0x00, 0x06], Some(V311), err, 0x81);
}

// ---- PUBLISH --------------------------------------------------------------------------------

/// v5 [MQTT-3.3.2-2]; v3.1.1 [MQTT-3.3.2-2]: no wildcards in a Topic Name.
#[test]
fn publish_topic_with_wildcard() {
    expect(
        &pkt(0x30, &[0, 3, b'a', b'/', b'+', 0]),
        Some(V5),
        DecodeError::TopicNameInvalid,
        0x90,
    );
    expect(
        &pkt(0x30, &[0, 1, b'#']),
        Some(V311),
        DecodeError::TopicNameInvalid,
        0x90,
    );
}

/// v3.1.1 [MQTT-4.7.3-1]: the Topic Name has at least one character. In v5 an empty Topic Name
/// goes with a Topic Alias, which the engine checks.
#[test]
fn publish_empty_topic() {
    expect(
        &pkt(0x30, &[0, 0, b'x']),
        Some(V311),
        DecodeError::TopicNameInvalid,
        0x90,
    );
    assert!(matches!(
        dec(&pkt(0x30, &[0, 0, 0, b'x']), Some(V5)),
        Ok(Some(Packet::Publish(_)))
    ));
}

/// v5 [MQTT-3.3.2-1], [MQTT-1.5.4-1]; v3.1.1 [MQTT-3.3.2-1]: the Topic Name is UTF-8.
#[test]
fn publish_topic_ill_formed_utf8() {
    let err = DecodeError::InvalidUtf8String {
        field: "Topic Name",
    };
    expect(&pkt(0x30, &[0, 1, 0xFF]), Some(V311), err, 0x81);
}

/// v5 [MQTT-2.2.1-3]; v3.1.1 [MQTT-2.3.1-1]: a Packet Identifier is non-zero.
#[test]
fn publish_packet_id_zero() {
    expect(
        &pkt(0x32, &[0, 1, b't', 0, 0, 0]),
        Some(V5),
        DecodeError::ZeroPacketId,
        0x82,
    );
    expect(
        &pkt(0x34, &[0, 1, b't', 0, 0]),
        Some(V311),
        DecodeError::ZeroPacketId,
        0x82,
    );
}

/// v5 1.2: the Remaining Length ends inside the Topic Name.
#[test]
fn publish_truncated_topic() {
    let err = DecodeError::Truncated {
        field: "Topic Name",
    };
    expect(&pkt(0x30, &[0, 5, b'a', b'b']), Some(V5), err, 0x81);
}

/// v5 1.2: the Remaining Length ends inside the Packet Identifier.
#[test]
fn publish_truncated_packet_id() {
    let err = DecodeError::Truncated {
        field: "Packet Identifier",
    };
    expect(&pkt(0x32, &[0, 1, b't', 0]), Some(V311), err, 0x81);
}

/// v5 [MQTT-3.3.2-8]: a Topic Alias of 0 (Reason Code 0x94 Topic Alias invalid).
#[test]
fn publish_topic_alias_zero() {
    let err = DecodeError::InvalidPropertyValue { id: 0x23 };
    expect(
        &pkt(0x30, &[0, 1, b't', 3, 0x23, 0, 0]),
        Some(V5),
        err,
        0x94,
    );
}

/// v5 [MQTT-3.3.2-14]: the Response Topic has no wildcards.
#[test]
fn publish_response_topic_with_wildcard() {
    let err = DecodeError::InvalidPropertyValue { id: 0x08 };
    expect(
        &pkt(0x30, &[0, 1, b't', 4, 0x08, 0, 1, b'+']),
        Some(V5),
        err,
        0x82,
    );
}

/// v5 3.3.2.3.3: "It is a Protocol Error to include the Message Expiry Interval more than once."
#[test]
fn publish_duplicate_message_expiry() {
    let props = [10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1];
    let mut body = vec![0, 1, b't'];
    body.extend_from_slice(&props);
    expect(
        &pkt(0x30, &body),
        Some(V5),
        DecodeError::DuplicateProperty { id: 0x02 },
        0x82,
    );
}

/// v5 3.3.2.3.2: Payload Format Indicator is 0 or 1.
#[test]
fn publish_payload_format_indicator_2() {
    let err = DecodeError::InvalidPropertyValue { id: 0x01 };
    expect(&pkt(0x30, &[0, 1, b't', 2, 0x01, 2]), Some(V5), err, 0x82);
}

/// v5 2.2.2.2: a property not valid for PUBLISH (Session Expiry Interval).
#[test]
fn publish_property_not_allowed() {
    let err = DecodeError::PropertyNotAllowed {
        id: 0x11,
        packet: "PUBLISH",
    };
    expect(
        &pkt(0x30, &[0, 1, b't', 5, 0x11, 0, 0, 0, 0]),
        Some(V5),
        err,
        0x81,
    );
}

/// v5 2.2.2.2: an undefined property identifier.
#[test]
fn publish_unknown_property() {
    let err = DecodeError::UnknownProperty { id: 0x7F };
    expect(&pkt(0x30, &[0, 1, b't', 2, 0x7F, 0]), Some(V5), err, 0x81);
}

/// v5 1.2: a Property Length beyond the Remaining Length.
#[test]
fn publish_property_length_beyond_packet() {
    let err = DecodeError::Truncated {
        field: "properties",
    };
    expect(&pkt(0x30, &[0, 1, b't', 9, 0x01, 1]), Some(V5), err, 0x81);
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ----------------------------------------------------------

/// v5 [MQTT-3.4.2-1]: the PUBACK Reason Codes.
#[test]
fn puback_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 4,
        code: 0x92,
    };
    expect(&[0x40, 0x03, 0, 1, 0x92], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.5.2-1]: the PUBREC Reason Codes.
#[test]
fn pubrec_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 5,
        code: 0x01,
    };
    expect(&[0x50, 0x04, 0, 1, 0x01, 0], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.6.2-1]: the PUBREL Reason Codes.
#[test]
fn pubrel_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 6,
        code: 0x10,
    };
    expect(&[0x62, 0x03, 0, 1, 0x10], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.7.2-1]: the PUBCOMP Reason Codes.
#[test]
fn pubcomp_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 7,
        code: 0x80,
    };
    expect(&[0x70, 0x03, 0, 1, 0x80], Some(V5), err, 0x81);
}

/// v5 [MQTT-2.2.1-5] needs a real Packet Identifier; v5 [MQTT-2.2.1-3] / v3.1.1 [MQTT-2.3.1-1].
#[test]
fn puback_packet_id_zero() {
    expect(
        &[0x40, 0x02, 0, 0],
        Some(V311),
        DecodeError::ZeroPacketId,
        0x82,
    );
}

/// v3.1.1 3.4: PUBACK holds only the Packet Identifier (Remaining Length 2).
#[test]
fn puback_v311_trailing_bytes() {
    let err = DecodeError::TrailingBytes {
        packet_type: 4,
        extra: 1,
    };
    expect(&[0x40, 0x03, 0, 1, 0], Some(V311), err, 0x81);
}

/// v5 3.4.2.2.1: after the properties nothing may follow.
#[test]
fn puback_v5_trailing_bytes() {
    let err = DecodeError::TrailingBytes {
        packet_type: 4,
        extra: 1,
    };
    expect(&[0x40, 0x05, 0, 1, 0, 0, 0xFF], Some(V5), err, 0x81);
}

// ---- SUBSCRIBE ------------------------------------------------------------------------------

/// v5 [MQTT-3.8.3-2]: at least one Topic Filter.
#[test]
fn subscribe_v5_without_filters() {
    let err = DecodeError::NoTopicFilters { packet_type: 8 };
    expect(&[0x82, 0x03, 0, 1, 0], Some(V5), err, 0x82);
}

/// v3.1.1 [MQTT-3.8.3-3]: a SUBSCRIBE with no payload is a protocol violation.
#[test]
fn subscribe_v311_without_filters() {
    let err = DecodeError::NoTopicFilters { packet_type: 8 };
    expect(&[0x82, 0x02, 0, 1], Some(V311), err, 0x82);
}

/// v5 [MQTT-3.8.3-5]: reserved bits 6-7 of the Subscription Options.
#[test]
fn subscribe_v5_reserved_option_bits() {
    let err = DecodeError::InvalidSubscriptionOptions { options: 0x40 };
    expect(
        &pkt(0x82, &[0, 1, 0, 0, 1, b'a', 0x40]),
        Some(V5),
        err,
        0x81,
    );
}

/// v3.1.1 [MQTT-3-8.3-4]: bits 2-7 of the Requested QoS byte are reserved.
#[test]
fn subscribe_v311_reserved_option_bits() {
    let err = DecodeError::InvalidSubscriptionOptions { options: 0x04 };
    expect(&pkt(0x82, &[0, 1, 0, 1, b'a', 0x04]), Some(V311), err, 0x81);
}

/// v5 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3"; v3.1.1
/// [MQTT-3-8.3-4].
#[test]
fn subscribe_qos_3() {
    let err = DecodeError::InvalidSubscriptionQoS { options: 0x03 };
    expect(
        &pkt(0x82, &[0, 1, 0, 0, 1, b'a', 0x03]),
        Some(V5),
        err.clone(),
        0x82,
    );
    expect(&pkt(0x82, &[0, 1, 0, 1, b'a', 0x03]), Some(V311), err, 0x82);
}

/// v5 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
#[test]
fn subscribe_retain_handling_3() {
    let err = DecodeError::InvalidRetainHandling { options: 0x30 };
    expect(
        &pkt(0x82, &[0, 1, 0, 0, 1, b'a', 0x30]),
        Some(V5),
        err,
        0x82,
    );
}

/// v5 [MQTT-3.8.3-1]; v3.1.1 [MQTT-3.8.3-1]: Topic Filters are UTF-8 strings.
#[test]
fn subscribe_filter_ill_formed_utf8() {
    let err = DecodeError::InvalidUtf8String {
        field: "Topic Filter",
    };
    expect(&pkt(0x82, &[0, 1, 0, 1, 0xC0, 0]), Some(V311), err, 0x81);
}

/// v5 1.2: a Topic Filter without its Subscription Options byte.
#[test]
fn subscribe_filter_without_options() {
    let err = DecodeError::Truncated {
        field: "Subscription Options",
    };
    expect(&pkt(0x82, &[0, 1, 0, 0, 1, b'a']), Some(V5), err, 0x81);
}

/// v5 3.8.2.1.2: "It is a Protocol Error to include the Subscription Identifier more than
/// once"; and "a Protocol Error if the Subscription Identifier has a value of 0".
#[test]
fn subscribe_subscription_identifier_rules() {
    let twice = pkt(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]);
    expect(
        &twice,
        Some(V5),
        DecodeError::DuplicateProperty { id: 0x0B },
        0x82,
    );
    let zero = pkt(0x82, &[0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]);
    expect(
        &zero,
        Some(V5),
        DecodeError::InvalidPropertyValue { id: 0x0B },
        0x82,
    );
}

/// v5 [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1], [MQTT-4.8.2-1], [MQTT-4.8.2-2];
/// v3.1.1 [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]: a Topic Filter that is not correctly
/// formed makes SUBSCRIBE and UNSUBSCRIBE malformed (0x81), whatever the other filters.
#[test]
fn topic_filter_syntax_is_malformed() {
    use tachyon_codec::topic::FilterRule::*;
    for (filter, rule) in [
        ("", Empty),
        ("#/a", MultiLevelWildcard),
        ("a/#/b", MultiLevelWildcard),
        ("a+/b", SingleLevelWildcard),
        ("$share/g", ShareName),
        ("$share//a", ShareName),
        ("$share/g/", SharedFilterMissing),
    ] {
        let f = filter.as_bytes();
        // SUBSCRIBE: a good filter, then the bad one.
        let mut sub = vec![0, 1, 0, 2, b'o', b'k', 1];
        sub.extend_from_slice(&(f.len() as u16).to_be_bytes());
        sub.extend_from_slice(f);
        sub.push(1);
        let err = DecodeError::TopicFilterInvalid {
            packet_type: 8,
            rule,
        };
        expect(&pkt(0x82, &sub), Some(V311), err.clone(), 0x81);
        let mut sub5 = vec![0, 1, 0];
        sub5.extend_from_slice(&sub[2..]);
        expect(&pkt(0x82, &sub5), Some(V5), err, 0x81);
        // UNSUBSCRIBE.
        let mut unsub = vec![0, 1];
        unsub.extend_from_slice(&(f.len() as u16).to_be_bytes());
        unsub.extend_from_slice(f);
        let err = DecodeError::TopicFilterInvalid {
            packet_type: 10,
            rule,
        };
        expect(&pkt(0xA2, &unsub), Some(V311), err.clone(), 0x81);
        let mut unsub5 = vec![0, 1, 0];
        unsub5.extend_from_slice(&unsub[2..]);
        expect(&pkt(0xA2, &unsub5), Some(V5), err, 0x81);
    }
}

// ---- SUBACK, UNSUBSCRIBE, UNSUBACK --------------------------------------------------------------

/// v5 [MQTT-3.9.3-2]; v3.1.1 [MQTT-3.9.3-2]: SUBACK Reason Codes.
#[test]
fn suback_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 9,
        code: 0x87,
    };
    expect(&[0x90, 0x03, 0, 1, 0x87], Some(V311), err, 0x81);
    let err = DecodeError::InvalidReasonCode {
        packet_type: 9,
        code: 0x03,
    };
    expect(&[0x90, 0x04, 0, 1, 0, 0x03], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.8.4-6]: one Reason Code per Topic Filter, so at least one.
#[test]
fn suback_without_reason_codes() {
    let err = DecodeError::NoReasonCodes { packet_type: 9 };
    expect(&[0x90, 0x03, 0, 1, 0], Some(V5), err, 0x82);
}

/// v5 [MQTT-3.10.3-2]; v3.1.1 [MQTT-3.10.3-2]: at least one Topic Filter.
#[test]
fn unsubscribe_without_filters() {
    let err = DecodeError::NoTopicFilters { packet_type: 10 };
    expect(&[0xA2, 0x03, 0, 1, 0], Some(V5), err.clone(), 0x82);
    expect(&[0xA2, 0x02, 0, 1], Some(V311), err, 0x82);
}

/// v5 [MQTT-3.10.3-1]; v3.1.1 [MQTT-3.10.3-1]: Topic Filters are UTF-8 strings.
#[test]
fn unsubscribe_filter_with_nul() {
    let err = DecodeError::InvalidUtf8String {
        field: "Topic Filter",
    };
    expect(&pkt(0xA2, &[0, 1, 0, 1, 0]), Some(V311), err, 0x81);
}

/// v5 [MQTT-3.11.3-2]: UNSUBACK Reason Codes.
#[test]
fn unsuback_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 11,
        code: 0x10,
    };
    expect(&[0xB0, 0x04, 0, 1, 0, 0x10], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.11.3-1]: one Reason Code per Topic Filter.
#[test]
fn unsuback_without_reason_codes() {
    let err = DecodeError::NoReasonCodes { packet_type: 11 };
    expect(&[0xB0, 0x03, 0, 1, 0], Some(V5), err, 0x82);
}

/// v3.1.1 3.11: UNSUBACK has no payload.
#[test]
fn unsuback_v311_trailing_bytes() {
    let err = DecodeError::TrailingBytes {
        packet_type: 11,
        extra: 1,
    };
    expect(&[0xB0, 0x03, 0, 1, 0], Some(V311), err, 0x81);
}

// ---- PINGREQ, PINGRESP, DISCONNECT, AUTH ------------------------------------------------------

/// v5 3.12 / 3.13: no variable header, no payload.
#[test]
fn ping_with_body() {
    let err = DecodeError::TrailingBytes {
        packet_type: 12,
        extra: 1,
    };
    expect(&[0xC0, 0x01, 0x00], Some(V5), err, 0x81);
    let err = DecodeError::TrailingBytes {
        packet_type: 13,
        extra: 1,
    };
    expect(&[0xD0, 0x01, 0x00], Some(V311), err, 0x81);
}

/// v5 [MQTT-3.14.2-1]: DISCONNECT Reason Codes.
#[test]
fn disconnect_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 14,
        code: 0x84,
    };
    expect(&[0xE0, 0x01, 0x84], Some(V5), err, 0x81);
}

/// v3.1.1 3.14: DISCONNECT has no variable header.
#[test]
fn disconnect_v311_with_body() {
    let err = DecodeError::TrailingBytes {
        packet_type: 14,
        extra: 1,
    };
    expect(&[0xE0, 0x01, 0x00], Some(V311), err, 0x81);
}

/// v5 2.2.2.2: Topic Alias is not a DISCONNECT property.
#[test]
fn disconnect_property_not_allowed() {
    let err = DecodeError::PropertyNotAllowed {
        id: 0x23,
        packet: "DISCONNECT",
    };
    expect(&[0xE0, 0x05, 0x00, 0x03, 0x23, 0, 1], Some(V5), err, 0x81);
}

/// v5 [MQTT-3.15.2-1]: AUTH Reason Codes.
#[test]
fn auth_invalid_reason_code() {
    let err = DecodeError::InvalidReasonCode {
        packet_type: 15,
        code: 0x04,
    };
    expect(&[0xF0, 0x02, 0x04, 0x00], Some(V5), err, 0x81);
}

/// Short forms: DISCONNECT and AUTH with a Reason Code alone (v5 3.14.2.2.1), PUBACK with
/// Remaining Length 3 (v5 3.4.2.2.1).
#[test]
fn short_forms_decode() {
    let p = dec(&[0xE0, 0x01, 0x8E], Some(V5)).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default()
        })
    );
    let p = dec(&[0xF0, 0x01, 0x19], Some(V5)).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::Auth(Auth {
            reason: ReasonCode::RE_AUTHENTICATE,
            properties: Properties::default()
        })
    );
    let p = dec(&[0x40, 0x03, 0, 9, 0x97], Some(V5)).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::PubAck(PubResp::new(pid(9), ReasonCode::QUOTA_EXCEEDED))
    );
}
