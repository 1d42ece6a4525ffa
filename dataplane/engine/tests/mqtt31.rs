//! MQTT 3.1 ("MQIsdp", protocol level 3): accepted with 3.1's rules where they differ from
//! 3.1.1 (MQTT V3.1 Protocol Specification, IBM/Eurotech 2010, sections 3.1 CONNECT and
//! 3.2 CONNACK), and turned off per listener.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V31, V311, V5};
use tachyon_codec::*;
use tachyon_engine::{EngineConfig, ListenerRules};

/// A 3.1 client connects, subscribes and exchanges QoS 0/1/2 messages with v3.1.1 and v5
/// clients; its session persists (Clean Session 0) and resumes with its queued messages.
#[test]
fn v31_client_publishes_subscribes_and_resumes() {
    let mut c = Cluster::new(2);
    let old = c.connect(0, V31, "legacy", false);
    assert_eq!(
        c.subscribe(old, "t/#", QoS::ExactlyOnce).reasons,
        vec![ReasonCode::GRANTED_QOS_2]
    );
    let v5 = c.connect(1, V5, "new", true);
    c.subscribe(v5, "t/#", QoS::ExactlyOnce);
    for (q, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        c.publish(v5, "t/a", b"from v5", qos, false, q as u16 + 1);
        c.publish(old, "t/b", b"from 3.1", qos, false, q as u16 + 1);
    }
    let got = c.publishes(old, true);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(c.publishes(v5, true).len(), 6);
    c.drop_conn(old);
    c.publish(v5, "t/c", b"while away", QoS::AtLeastOnce, false, 9);
    let (back, ack) = c.connect_with(1, connect(V31, "legacy", false));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let got = c.publishes(back, true);
    assert_eq!(got.len(), 1, "queued message delivered on resume");
    let p311 = c.connect(0, V311, "p311", true);
    c.publish(p311, "t/d", b"from 3.1.1", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(back, true).len(), 1);
}

/// MQTT 3.1 3.2: the CONNACK's first variable header byte is reserved (no Session Present
/// flag): it is 0 even when a stored session is resumed.
#[test]
fn v31_connack_has_no_session_present_flag() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V31, "keep", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    let conn = c.open(0, V31);
    let mut b = bytes::BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect(V31, "keep", false))),
        V31,
        &mut b,
    )
    .unwrap();
    c.send_bytes(conn, &b);
    assert_eq!(c.recv_raw(conn), vec![0x20, 0x02, 0x00, 0x00]);
    // The session was resumed all the same: its subscription delivers.
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"x", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(conn, true).len(), 1);
}

/// MQTT 3.1 3.1 "Client Identifier": 1 to 23 characters. An empty one gets CONNACK 2
/// (identifier rejected) and a close: 3.1 has no assigned identifiers.
#[test]
fn v31_empty_client_id_rejected() {
    let mut c = Cluster::new(1);
    for clean in [true, false] {
        let (conn, ack) = c.connect_with(0, connect(V31, "", clean));
        assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        assert_eq!(ack.reason.to_v311_connack(), 2);
        assert!(c.is_closed(conn));
    }
}

/// policy: a 3.1 Client Identifier longer than 23 bytes is accepted (as by Mosquitto and
/// EMQX), unless the listener sets `v31_strict_client_id` (CONNACK 2 then).
#[test]
fn v31_long_client_id_accepted_unless_strict() {
    let long = "a-client-identifier-of-40-characters-xyz";
    let mut c = Cluster::new(1);
    let (_, ack) = c.connect_with(0, connect(V31, long, true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);

    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            listeners: vec![ListenerRules {
                v31_strict_client_id: true,
                ..ListenerRules::default()
            }],
            ..EngineConfig::default()
        },
    );
    let (conn, ack) = c.connect_with(0, connect(V31, long, true));
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(c.is_closed(conn));
    let (_, ack) = c.connect_with(0, connect(V31, &long[..23], true));
    assert_eq!(
        ack.reason,
        ReasonCode::SUCCESS,
        "23 bytes is within 3.1's limit"
    );
    let (_, ack) = c.connect_with(0, connect(V311, long, true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "3.1.1 has no such limit");
}

/// policy: `listeners[].protocols` turns a version off on one listener: its CONNECT gets
/// "unacceptable protocol version" (v3.1.1 [MQTT-3.1.2-2], return code 1; v5
/// [MQTT-3.1.2-2], 0x84) and a close; other listeners and versions are unaffected.
#[test]
fn listener_without_version_refuses_it() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            listeners: vec![
                ListenerRules::default(),
                ListenerRules {
                    mqtt31: false,
                    mqtt5: false,
                    ..ListenerRules::default()
                },
            ],
            ..EngineConfig::default()
        },
    );
    for version in [V31, V5] {
        let conn = c.open_on(0, version, 1);
        c.send(
            conn,
            &Packet::Connect(Box::new(connect(version, "x", true))),
        );
        let raw = c.recv_raw(conn);
        let want = if version == V5 {
            vec![0x20, 0x03, 0x00, 0x84, 0x00]
        } else {
            vec![0x20, 0x02, 0x00, 0x01]
        };
        assert_eq!(raw, want, "{version:?}");
        assert!(c.is_closed(conn));
    }
    let conn = c.open_on(0, V311, 1);
    c.send(conn, &Packet::Connect(Box::new(connect(V311, "y", true))));
    assert!(matches!(&c.recv(conn)[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::SUCCESS));
    let conn = c.open_on(0, V31, 0);
    c.send(conn, &Packet::Connect(Box::new(connect(V31, "z", true))));
    assert!(matches!(&c.recv(conn)[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::SUCCESS));
}

/// policy: MQTT 3.1's SUBACK has only granted QoS values; a refused subscription gets 0x80,
/// as 3.1.1 defines it and as EMQX and VerneMQ answer 3.1 clients (Mosquitto grants the
/// requested QoS without subscribing, which hides the refusal).
#[test]
fn v31_refused_subscription_gets_0x80() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            topic_levels_max: 2,
            ..EngineConfig::default()
        },
    );
    let a = c.connect(0, V31, "a", true);
    let ack = c.subscribe(a, "a/b/c", QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::UNSPECIFIED_ERROR]);
    assert!(!c.is_closed(a));
}
