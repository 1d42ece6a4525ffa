//! Bad input never panics and never affects another client: each case gets its reason code
//! (v5) or a close (v3.1.1), and a counter.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V311, V5};
use tachyon_codec::*;
use tachyon_engine::EngineConfig;

/// Runs `bytes` on a fresh connected client of `version` and checks that a bystander still
/// works afterwards. Returns what the bad client received and whether it was closed.
fn run_bad(version: ProtocolVersion, bytes: &[u8]) -> (Vec<Packet>, bool, u64) {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            max_packet_size: 1024,
            ..EngineConfig::default()
        },
    );
    let by = c.connect(0, V5, "bystander", true);
    c.subscribe(by, "ok", QoS::AtMostOnce);
    let bad = c.connect(0, version, "bad", true);
    c.send_bytes(bad, bytes);
    let got = c.recv(bad);
    let closed = c.is_closed(bad);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "ok", b"still", QoS::AtMostOnce, false, 0);
    assert_eq!(c.publishes(by, true).len(), 1, "bystander unaffected");
    (got, closed, c.engines[0].stats().violations_total())
}

fn expect_v5(bytes: &[u8], reason: ReasonCode) {
    let (got, closed, violations) = run_bad(V5, bytes);
    assert_eq!(disconnect_reason(&got), Some(reason), "{got:?}");
    assert!(closed);
    assert_eq!(violations, 1);
}

fn expect_v311_close(bytes: &[u8]) {
    let (got, closed, violations) = run_bad(V311, bytes);
    assert!(got.is_empty(), "{got:?}");
    assert!(closed);
    assert_eq!(violations, 1);
}

/// v5 [MQTT-2.1.3-1]: reserved flag bits set in a fixed header -> Malformed Packet.
#[test]
fn reserved_flags_malformed() {
    expect_v5(&[0xC1, 0x00], ReasonCode::MALFORMED_PACKET); // PINGREQ with flags 0001
    expect_v311_close(&[0xC1, 0x00]);
}

/// v5 [MQTT-1.5.5-1]: a Variable Byte Integer of more than 4 bytes is malformed.
#[test]
fn bad_varint_malformed() {
    expect_v5(
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ReasonCode::MALFORMED_PACKET,
    );
    expect_v311_close(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
}

/// v5 [MQTT-1.5.4-1]: ill-formed UTF-8 in a Topic Name is malformed.
#[test]
fn invalid_utf8_topic_malformed() {
    let b = [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00];
    expect_v5(&b, ReasonCode::MALFORMED_PACKET);
    expect_v311_close(&b);
}

/// v5 [MQTT-1.5.4-2]: U+0000 in a string is malformed.
#[test]
fn null_char_in_topic_malformed() {
    let b = [0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00];
    expect_v5(&b, ReasonCode::MALFORMED_PACKET);
    expect_v311_close(&b);
}

/// A packet whose Remaining Length ends inside a field is malformed.
#[test]
fn truncated_packet_malformed() {
    // PUBLISH QoS 1 with remaining length 3: topic "a" and only one byte of packet id.
    expect_v5(
        &[0x32, 0x03, 0x00, 0x01, b'a'],
        ReasonCode::MALFORMED_PACKET,
    );
}

/// v5 [MQTT-3.3.2-2]: a wildcard in a PUBLISH Topic Name -> Topic Name invalid (0x90).
#[test]
fn wildcard_publish_topic() {
    let mut b = bytes::BytesMut::new();
    let p = Publish {
        topic: s("a/#"),
        ..publish("a", b"x", QoS::AtMostOnce, false, 0)
    };
    // Encode by hand: the encoder trusts values, so it writes the bad topic as given.
    encode(&Packet::Publish(p), V5, &mut b).unwrap();
    expect_v5(&b, ReasonCode::TOPIC_NAME_INVALID);
    let mut b = bytes::BytesMut::new();
    let p = Publish {
        topic: s("a/+"),
        ..publish("a", b"x", QoS::AtMostOnce, false, 0)
    };
    encode(&Packet::Publish(p), V311, &mut b).unwrap();
    expect_v311_close(&b);
}

/// Maximum Packet Size is checked from the fixed header: Packet too large (0x95).
#[test]
fn oversized_packet_refused_from_header() {
    // Only the fixed header of a 2000-byte PUBLISH: refused before the body arrives.
    expect_v5(&[0x30, 0xD0, 0x0F], ReasonCode::PACKET_TOO_LARGE);
    expect_v311_close(&[0x30, 0xD0, 0x0F]);
}

/// v5 [MQTT-3.1.0-2]: a second CONNECT -> Protocol Error.
#[test]
fn second_connect_protocol_error() {
    let mut b = bytes::BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect(V5, "bad", true))),
        V5,
        &mut b,
    )
    .unwrap();
    expect_v5(&b, ReasonCode::PROTOCOL_ERROR);
}

/// A packet only a server sends (CONNACK) from a client -> Protocol Error.
#[test]
fn server_only_packet_protocol_error() {
    expect_v5(&[0x20, 0x03, 0x00, 0x00, 0x00], ReasonCode::PROTOCOL_ERROR);
}

/// v5 [MQTT-2.2.1-3]: a PUBLISH QoS 1 with Packet Identifier 0 is a Protocol Error.
#[test]
fn zero_packet_id_protocol_error() {
    expect_v5(
        &[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00],
        ReasonCode::PROTOCOL_ERROR,
    );
}

/// AUTH without a configured method -> Protocol Error.
#[test]
fn auth_packet_protocol_error() {
    expect_v5(&[0xF0, 0x00], ReasonCode::PROTOCOL_ERROR);
}

/// A bad CONNECT before the session exists: v5 gets CONNACK with the reason, then close.
#[test]
fn malformed_v5_connect_gets_connack() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V5);
    // CONNECT v5 with the reserved flag bit set (v5 [MQTT-3.1.2-3]).
    let b = [
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x03, 0, 60, 0, 0, 1, b'a',
    ];
    c.send_bytes(conn, &b);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::MALFORMED_PACKET),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
}

/// A wrong protocol name closes without CONNACK (v5 [MQTT-3.1.2-1]).
#[test]
fn wrong_protocol_name_closes() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V311);
    let b = [
        0x10, 0x0D, 0, 4, b'M', b'Q', b'X', b'X', 4, 0x02, 0, 60, 0, 1, b'a',
    ];
    c.send_bytes(conn, &b);
    assert!(c.is_closed(conn));
}

/// Arbitrary bytes never panic the engine, whatever state the connection is in.
#[test]
fn garbage_never_panics() {
    let mut c = Cluster::new(2);
    let mut seed = 0x1234_5678_u64;
    for round in 0..300 {
        let conn = if round % 2 == 0 {
            c.open(round % 2, V5)
        } else {
            c.connect(round % 2, V5, &format!("g{round}"), round % 3 == 0)
        };
        let len = (seed % 64) as usize;
        let mut b = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.push(seed as u8);
        }
        c.send_bytes(conn, &b);
        let _ = c.recv(conn);
    }
}
