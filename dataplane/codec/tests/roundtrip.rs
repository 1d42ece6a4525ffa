//! Property tests: arbitrary valid packets of every type, in every version, survive
//! encode → decode unchanged, re-encode to the same bytes, and never decode from a prefix.
//!
//! The generators restate the v5 2.2.2.2 property table independently of `props.rs`, so a
//! mistake in either shows up as a failed round trip.

mod common;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tachyon_codec::*;
use ProtocolVersion::{V31, V311, V5};

const MAX: usize = 1 << 20;

fn string() -> impl Strategy<Value = Utf8Str> {
    // Any printable Unicode (excludes U+0000, which is a control character).
    "\\PC{0,6}".prop_map(|s| Utf8Str::from_string(s).expect("generated strings are valid"))
}

fn topic_name() -> impl Strategy<Value = Utf8Str> {
    "[a-z0-9/$ é]{1,8}".prop_map(|s| Utf8Str::from_string(s).expect("valid"))
}

/// A correctly formed Topic Filter (v5 4.7; the codec refuses the others): levels of plain
/// text, `+`, or a last `#`, maybe shared.
fn topic_filter() -> impl Strategy<Value = Utf8Str> {
    let level = prop_oneof![4 => "[a-z0-9$ é]{0,4}", 1 => Just("+".to_string())];
    (option::of("[a-z0-9]{1,3}"), vec(level, 1..4), any::<bool>()).prop_map(
        |(share, levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str(if f.is_empty() { "#" } else { "/#" });
            }
            if f.is_empty() {
                f.push('x');
            }
            if let Some(g) = share {
                f = format!("$share/{g}/{f}");
            }
            Utf8Str::from_string(f).expect("valid")
        },
    )
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).expect("non-zero"))
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(ReasonCode)
}

const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// The v5 codes that v3.1.1 CONNACK return codes 0-5 map back to.
const CONNACK_V311: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL: &[u8] = &[0x00, 0x92];
const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH: &[u8] = &[0x00, 0x18, 0x19];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack, // PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

fn bit01() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

/// Every property with a valid value; [`mask`] then keeps what the context allows.
fn all_properties() -> impl Strategy<Value = Properties> {
    let a = (
        bit01(),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=VARINT_MAX, 0..3),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(any::<u16>()),
        option::of(string()),
        option::of(binary()),
        bit01(),
    );
    let b = (
        option::of(any::<u32>()),
        bit01(),
        option::of(string()),
        option::of(string()),
        option::of(string()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u16..),
        bit01(),
        bit01(),
        vec((string(), string()), 0..3),
        option::of(1u32..),
    );
    let c = (bit01(), bit01(), bit01());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Clears what `ctx` may not carry (v5 2.2.2.2 Table 2-4, restated).
fn mask(mut p: Properties, ctx: Ctx) -> Properties {
    use Ctx::*;
    let is = |cs: &[Ctx]| cs.contains(&ctx);
    macro_rules! keep {
        ($field:ident, $cs:expr) => {
            if !is($cs) {
                p.$field = Default::default();
            }
        };
    }
    keep!(payload_format_indicator, &[Publish, Will]);
    keep!(message_expiry_interval, &[Publish, Will]);
    keep!(content_type, &[Publish, Will]);
    keep!(response_topic, &[Publish, Will]);
    keep!(correlation_data, &[Publish, Will]);
    keep!(subscription_identifiers, &[Publish, Subscribe]);
    keep!(session_expiry_interval, &[Connect, ConnAck, Disconnect]);
    keep!(assigned_client_identifier, &[ConnAck]);
    keep!(server_keep_alive, &[ConnAck]);
    keep!(authentication_method, &[Connect, ConnAck, Auth]);
    keep!(authentication_data, &[Connect, ConnAck, Auth]);
    keep!(request_problem_information, &[Connect]);
    keep!(will_delay_interval, &[Will]);
    keep!(request_response_information, &[Connect]);
    keep!(response_information, &[ConnAck]);
    keep!(server_reference, &[ConnAck, Disconnect]);
    keep!(reason_string, &[ConnAck, Ack, Disconnect, Auth]);
    keep!(receive_maximum, &[Connect, ConnAck]);
    keep!(topic_alias_maximum, &[Connect, ConnAck]);
    keep!(topic_alias, &[Publish]);
    keep!(maximum_qos, &[ConnAck]);
    keep!(retain_available, &[ConnAck]);
    keep!(maximum_packet_size, &[Connect, ConnAck]);
    keep!(wildcard_subscription_available, &[ConnAck]);
    keep!(subscription_identifier_available, &[ConnAck]);
    keep!(shared_subscription_available, &[ConnAck]);
    if ctx == Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p
}

fn props(ctx: Ctx, v: ProtocolVersion) -> BoxedStrategy<Properties> {
    if v != V5 {
        Just(Properties::default()).boxed()
    } else {
        all_properties().prop_map(move |p| mask(p, ctx)).boxed()
    }
}

fn will(v: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props(Ctx::Will, v),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will(v)),
        option::of(string()),
        option::of(binary()),
        props(Ctx::Connect, v),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive_secs,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                // v3.1.1 [MQTT-3.1.2-22]: no password without a user name.
                let password = if v != V5 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    version: v,
                    clean_start,
                    keep_alive_secs,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v == V5 { CONNACK } else { CONNACK_V311 };
    (any::<bool>(), reason(codes), props(Ctx::ConnAck, v)).prop_map(
        move |(session_present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                // MQTT 3.1 has no Session Present flag.
                session_present: session_present && v != V31,
                reason,
                properties,
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if v == V5 {
        prop_oneof![topic_name(), Just(Utf8Str::default())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic,
        packet_id(),
        props(Ctx::Publish, v),
        binary(),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { None } else { Some(id) },
                properties,
                payload,
            })
        })
}

fn pub_resp(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    let r = if v == V5 {
        reason(codes).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), r, props(Ctx::Ack, v)).prop_map(|(packet_id, reason, properties)| PubResp {
        packet_id,
        reason,
        properties,
    })
}

fn options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(move |(qos, nl, rap, rh)| {
        if v == V5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        }
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        props(Ctx::Subscribe, v),
        vec((topic_filter(), options(v)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v == V5 { SUBACK } else { SUBACK_V311 };
    (packet_id(), props(Ctx::Ack, v), vec(reason(codes), 1..4)).prop_map(
        |(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        props(Ctx::Unsubscribe, v),
        vec(topic_filter(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if v == V5 {
        vec(reason(UNSUBACK), 1..4).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (packet_id(), props(Ctx::Ack, v), reasons).prop_map(|(packet_id, properties, reasons)| {
        Packet::UnsubAck(UnsubAck {
            packet_id,
            properties,
            reasons,
        })
    })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let r = if v == V5 {
        reason(DISCONNECT).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (r, props(Ctx::Disconnect, v))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(AUTH), props(Ctx::Auth, V5))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Every packet type valid in `v` (AUTH only in v5).
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        pub_resp(v, PUBACK).prop_map(Packet::PubAck),
        pub_resp(v, PUBACK).prop_map(Packet::PubRec),
        pub_resp(v, PUBREL).prop_map(Packet::PubRel),
        pub_resp(v, PUBREL).prop_map(Packet::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    if v == V5 {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn round_trip(p: &Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    let n = encode(p, v, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(n, out.len());
    prop_assert_eq!(n, encoded_len(p, v));
    let bytes = out.to_vec();

    // Never decodes from a strict prefix, and never touches the buffer then.
    for k in [0, 1, n / 2, n - 1] {
        let mut b = BytesMut::from(&bytes[..k]);
        prop_assert_eq!(decode(&mut b, Some(v), MAX), Ok(None));
        prop_assert_eq!(&b[..], &bytes[..k]);
    }

    let mut buf = out;
    buf.extend_from_slice(&[0xC0, 0x00]); // a following PINGREQ stays in the buffer
    let got = decode(&mut buf, Some(v), MAX);
    prop_assert_eq!(got, Ok(Some(p.clone())));
    prop_assert_eq!(&buf[..], &[0xC0, 0x00]);

    // Canonical: re-encoding gives the same bytes.
    let mut again = BytesMut::new();
    encode(p, v, &mut again).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&again[..], &bytes[..]);

    // Before CONNECT: CONNECT by its own level, the rest by the v5 rules.
    if v == V5 || matches!(p, Packet::Connect(_)) {
        let mut b = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode(&mut b, None, MAX), Ok(Some(p.clone())));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn v311_packets_round_trip(p in packet(V311)) {
        round_trip(&p, V311)?;
    }

    #[test]
    fn v5_packets_round_trip(p in packet(V5)) {
        round_trip(&p, V5)?;
    }

    /// MQTT 3.1 ("MQIsdp", level 3): the 3.1.1 packets, CONNECT and CONNACK aside.
    #[test]
    fn v31_packets_round_trip(p in packet(V31)) {
        round_trip(&p, V31)?;
    }

    /// Arbitrary bytes never panic, never consume more than one whole packet, and what decodes
    /// re-encodes to a packet that decodes the same.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..64),
        v in prop_oneof![Just(None), Just(Some(V31)), Just(Some(V311)), Just(Some(V5))],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(p)) = decode(&mut buf, v, MAX) {
            prop_assert!(buf.len() < bytes.len());
            let ver = match (&p, v) {
                (Packet::Connect(c), _) => c.version,
                (_, Some(ver)) => ver,
                (_, None) => V5,
            };
            let mut out = BytesMut::new();
            encode(&p, ver, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut out2 = out.clone();
            prop_assert_eq!(decode(&mut out2, Some(ver), MAX), Ok(Some(p)));
        }
    }
}
