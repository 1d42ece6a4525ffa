//! Shared by the integration suites: byte-exact packet vectors and small helpers.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use tachyon_codec::*;

pub const MAX: usize = 1 << 20;

pub fn s(v: &'static str) -> Utf8Str {
    Utf8Str::from_static(v)
}

pub fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("test packet ids are non-zero")
}

/// Decodes all of `bytes` as one packet; asserts the buffer is consumed on success.
pub fn dec(bytes: &[u8], v: Option<ProtocolVersion>) -> Result<Option<Packet>, DecodeError> {
    let mut b = BytesMut::from(bytes);
    let r = decode(&mut b, v, MAX);
    if let Ok(Some(_)) = r {
        assert!(b.is_empty(), "packet consumed exactly");
    }
    r
}

pub fn dec_err(bytes: &[u8], v: Option<ProtocolVersion>) -> DecodeError {
    match dec(bytes, v) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02X?}, got {other:?}"),
    }
}

pub fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = encode(p, v, &mut out).expect("test packets encode");
    assert_eq!(n, out.len());
    assert_eq!(encoded_len(p, v), n);
    out.to_vec()
}

/// Prefixes a body with a fixed header (one-byte Remaining Length).
pub fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

pub struct Vector {
    pub name: &'static str,
    pub version: ProtocolVersion,
    pub bytes: Vec<u8>,
    pub packet: Packet,
}

/// Byte-exact vectors; where a spec figure exists the vector follows it.
pub fn vectors() -> Vec<Vector> {
    use ProtocolVersion::{V311, V5};
    vec![
        // v3.1.1 3.1.2.10 Figure 3.6 variable header example (protocol level 4, flags 0xCE: User
        // Name, Password, Will QoS 1, Will Flag, Clean Session; Keep Alive 10), with a payload in
        // the order of v3.1.1 [MQTT-3.1.3-1].
        Vector {
            name: "v3.1.1 CONNECT (Figure 3.6)",
            version: V311,
            bytes: vec![
                0x10, 0x20, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, 0x00, 0x06,
                b'c', b'l', b'i', b'e', b'n', b't', 0x00, 0x01, b'w', 0x00, 0x03, b'b', b'y', b'e',
                0x00, 0x01, b'u', 0x00, 0x01, b'p',
            ],
            packet: Packet::Connect(Box::new(Connect {
                version: V311,
                clean_start: true,
                keep_alive_secs: 10,
                client_id: s("client"),
                will: Some(Will {
                    topic: s("w"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::default(),
                }),
                username: Some(s("u")),
                password: Some(Bytes::from_static(b"p")),
                properties: Properties::default(),
            })),
        },
        // v5 3.1.2.12 variable header example: level 5, flags 0xCE, Keep Alive 10,
        // Property Length 5 with Session Expiry Interval 10; plus Will Properties (Will Delay 30).
        Vector {
            name: "v5 CONNECT with properties and Will Properties",
            version: V5,
            bytes: vec![
                0x10, 0x2C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xCE, 0x00, 0x0A, 0x05, 0x11,
                0x00, 0x00, 0x00, 0x0A, 0x00, 0x06, b'c', b'l', b'i', b'e', b'n', b't', 0x05, 0x18,
                0x00, 0x00, 0x00, 0x1E, 0x00, 0x01, b'w', 0x00, 0x03, b'b', b'y', b'e', 0x00, 0x01,
                b'u', 0x00, 0x01, b'p',
            ],
            packet: Packet::Connect(Box::new(Connect {
                version: V5,
                clean_start: true,
                keep_alive_secs: 10,
                client_id: s("client"),
                will: Some(Will {
                    topic: s("w"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties {
                        will_delay_interval: Some(30),
                        ..Default::default()
                    },
                }),
                username: Some(s("u")),
                password: Some(Bytes::from_static(b"p")),
                properties: Properties {
                    session_expiry_interval: Some(10),
                    ..Default::default()
                },
            })),
        },
        Vector {
            name: "v5 CONNACK with properties",
            version: V5,
            bytes: vec![
                0x20, 0x0E, 0x01, 0x00, 0x0B, 0x12, 0x00, 0x02, b'i', b'd', 0x21, 0x00, 0x0A, 0x22,
                0x00, 0x05,
            ],
            packet: Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::SUCCESS,
                properties: Properties {
                    assigned_client_identifier: Some(s("id")),
                    receive_maximum: Some(10),
                    topic_alias_maximum: Some(5),
                    ..Default::default()
                },
            }),
        },
        Vector {
            name: "v3.1.1 CONNACK not authorized",
            version: V311,
            bytes: vec![0x20, 0x02, 0x00, 0x05],
            packet: Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::NOT_AUTHORIZED,
                properties: Properties::default(),
            }),
        },
        // v3.1.1 3.3.2.3 Figure 3.11: Topic Name "a/b", Packet Identifier 10.
        Vector {
            name: "v3.1.1 PUBLISH QoS 1 (Figure 3.11)",
            version: V311,
            bytes: vec![
                0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
            ],
            packet: Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: s("a/b"),
                packet_id: Some(pid(10)),
                properties: Properties::default(),
                payload: Bytes::from_static(b"hi"),
            }),
        },
        Vector {
            name: "v5 PUBLISH QoS 0 retained with properties",
            version: V5,
            bytes: vec![
                0x31, 0x0F, 0x00, 0x01, b't', 0x09, 0x01, 0x01, 0x03, 0x00, 0x04, b'j', b's', b'o',
                b'n', b'{', b'}',
            ],
            packet: Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: s("t"),
                packet_id: None,
                properties: Properties {
                    payload_format_indicator: Some(1),
                    content_type: Some(s("json")),
                    ..Default::default()
                },
                payload: Bytes::from_static(b"{}"),
            }),
        },
        Vector {
            name: "v5 PUBLISH QoS 2 DUP, empty topic with Topic Alias",
            version: V5,
            bytes: vec![0x3C, 0x08, 0x00, 0x00, 0x12, 0x34, 0x03, 0x23, 0x00, 0x01],
            packet: Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: Utf8Str::default(),
                packet_id: Some(pid(0x1234)),
                properties: Properties {
                    topic_alias: Some(1),
                    ..Default::default()
                },
                payload: Bytes::new(),
            }),
        },
        Vector {
            name: "v5 PUBACK short form",
            version: V5,
            bytes: vec![0x40, 0x02, 0x00, 0x01],
            packet: Packet::PubAck(PubResp::new(pid(1), ReasonCode::SUCCESS)),
        },
        Vector {
            name: "v5 PUBREC with reason code only",
            version: V5,
            bytes: vec![0x50, 0x03, 0x00, 0x02, 0x10],
            packet: Packet::PubRec(PubResp::new(pid(2), ReasonCode::NO_MATCHING_SUBSCRIBERS)),
        },
        Vector {
            name: "v3.1.1 PUBREL",
            version: V311,
            bytes: vec![0x62, 0x02, 0x00, 0x03],
            packet: Packet::PubRel(PubResp::new(pid(3), ReasonCode::SUCCESS)),
        },
        Vector {
            name: "v5 PUBCOMP with reason string",
            version: V5,
            bytes: vec![0x70, 0x08, 0x00, 0x04, 0x92, 0x04, 0x1F, 0x00, 0x01, b'?'],
            packet: Packet::PubComp(PubResp {
                packet_id: pid(4),
                reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: Properties {
                    reason_string: Some(s("?")),
                    ..Default::default()
                },
            }),
        },
        // v3.1.1 3.8.3 Figure 3.22: "a/b" QoS 1 and "c/d" QoS 2, Packet Identifier 10.
        Vector {
            name: "v3.1.1 SUBSCRIBE (Figure 3.22)",
            version: V311,
            bytes: vec![
                0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/',
                b'd', 0x02,
            ],
            packet: Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                properties: Properties::default(),
                filters: vec![
                    (
                        s("a/b"),
                        SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..Default::default()
                        },
                    ),
                    (
                        s("c/d"),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            ..Default::default()
                        },
                    ),
                ],
            }),
        },
        Vector {
            name: "v5 SUBSCRIBE with Subscription Identifier and options",
            version: V5,
            bytes: vec![
                0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x05, 0x00, 0x03, b'x', b'/', b'#', 0x2D,
            ],
            packet: Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Properties {
                    subscription_identifiers: vec![5],
                    ..Default::default()
                },
                filters: vec![(
                    s("x/#"),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                )],
            }),
        },
        // v3.1.1 3.9.3 Figure 3.26: QoS 0 granted, QoS 2 granted, failure.
        Vector {
            name: "v3.1.1 SUBACK (Figure 3.26)",
            version: V311,
            bytes: vec![0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80],
            packet: Packet::SubAck(SubAck {
                packet_id: pid(10),
                properties: Properties::default(),
                reasons: vec![
                    ReasonCode::GRANTED_QOS_0,
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::UNSPECIFIED_ERROR,
                ],
            }),
        },
        Vector {
            name: "v5 SUBACK",
            version: V5,
            bytes: vec![0x90, 0x05, 0x00, 0x0A, 0x00, 0x01, 0xA2],
            packet: Packet::SubAck(SubAck {
                packet_id: pid(10),
                properties: Properties::default(),
                reasons: vec![
                    ReasonCode::GRANTED_QOS_1,
                    ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                ],
            }),
        },
        Vector {
            name: "v5 UNSUBSCRIBE",
            version: V5,
            bytes: vec![0xA2, 0x06, 0x00, 0x02, 0x00, 0x00, 0x01, b'a'],
            packet: Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                properties: Properties::default(),
                filters: vec![s("a")],
            }),
        },
        Vector {
            name: "v3.1.1 UNSUBSCRIBE",
            version: V311,
            bytes: vec![
                0xA2, 0x0A, 0x00, 0x02, 0x00, 0x01, b'a', 0x00, 0x03, b'b', b'/', b'+',
            ],
            packet: Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                properties: Properties::default(),
                filters: vec![s("a"), s("b/+")],
            }),
        },
        Vector {
            name: "v5 UNSUBACK",
            version: V5,
            bytes: vec![0xB0, 0x04, 0x00, 0x02, 0x00, 0x11],
            packet: Packet::UnsubAck(UnsubAck {
                packet_id: pid(2),
                properties: Properties::default(),
                reasons: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
            }),
        },
        Vector {
            name: "v3.1.1 UNSUBACK",
            version: V311,
            bytes: vec![0xB0, 0x02, 0x00, 0x02],
            packet: Packet::UnsubAck(UnsubAck {
                packet_id: pid(2),
                properties: Properties::default(),
                reasons: vec![],
            }),
        },
        Vector {
            name: "PINGREQ",
            version: V311,
            bytes: vec![0xC0, 0x00],
            packet: Packet::PingReq,
        },
        Vector {
            name: "PINGRESP",
            version: V5,
            bytes: vec![0xD0, 0x00],
            packet: Packet::PingResp,
        },
        Vector {
            name: "v5 DISCONNECT with Will Message and reason string",
            version: V5,
            bytes: vec![0xE0, 0x08, 0x04, 0x06, 0x1F, 0x00, 0x03, b'b', b'y', b'e'],
            packet: Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: Properties {
                    reason_string: Some(s("bye")),
                    ..Default::default()
                },
            }),
        },
        Vector {
            name: "v5 AUTH continue",
            version: V5,
            bytes: vec![
                0xF0, 0x0F, 0x18, 0x0D, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', 0x16, 0x00,
                0x02, 0x01, 0x02,
            ],
            packet: Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some(s("SCRAM")),
                    authentication_data: Some(Bytes::from_static(&[1, 2])),
                    ..Default::default()
                },
            }),
        },
    ]
}
