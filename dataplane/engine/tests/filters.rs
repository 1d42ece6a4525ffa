//! Topic Filters in SUBSCRIBE and UNSUBSCRIBE, on every protocol version: a filter that is not
//! correctly formed makes the packet malformed (v5 DISCONNECT 0x81, then close; v3.x close),
//! while a correctly formed filter refused by policy gets its failure code in SUBACK and the
//! connection stays.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V31, V311, V5};
use tachyon_codec::*;
use tachyon_engine::{ConnId, EngineConfig};

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

/// Filters that break a syntax rule, with the rule.
const MALFORMED: [&str; 11] = [
    "",            // v5 [MQTT-4.7.3-1]; v3.1.1 [MQTT-4.7.3-1]
    "#/a",         // v5 [MQTT-4.7.1-1]; v3.1.1 [MQTT-4.7.1-2]
    "a/#/b",       // v5 [MQTT-4.7.1-1]; v3.1.1 [MQTT-4.7.1-2]
    "a#",          // v5 [MQTT-4.7.1-1]; v3.1.1 [MQTT-4.7.1-2]
    "a+/b",        // v5 [MQTT-4.7.1-2]; v3.1.1 [MQTT-4.7.1-3]
    "a/b+",        // v5 [MQTT-4.7.1-2]; v3.1.1 [MQTT-4.7.1-3]
    "$share/g",    // v5 [MQTT-4.8.2-2]
    "$share//a",   // v5 [MQTT-4.8.2-1]
    "$share/g+/a", // v5 [MQTT-4.8.2-2]
    "$share/g/",   // v5 [MQTT-4.8.2-2]
    "$share/#/a",  // v5 [MQTT-4.8.2-2]
];

/// A packet of `first` byte with `body`, as raw bytes (filters the encoder cannot hold).
fn raw_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![first];
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.push(byte);
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(body);
    b
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

/// SUBSCRIBE id 1 of a good filter "ok" then `filter`, both QoS 1; v5 with `properties`
/// (a property block, e.g. `[0]` or a Subscription Identifier).
fn subscribe_raw(version: ProtocolVersion, filter: &[u8], properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    if version == V5 {
        body.extend_from_slice(properties);
    }
    body.extend(string(b"ok"));
    body.push(1);
    body.extend(string(filter));
    body.push(1);
    raw_packet(0x82, &body)
}

fn unsubscribe_raw(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 2];
    if version == V5 {
        body.push(0);
    }
    body.extend(string(filter));
    raw_packet(0xA2, &body)
}

/// The connection was closed as for a malformed packet: v5 DISCONNECT 0x81 first.
fn assert_malformed_close(c: &mut Cluster, conn: ConnId, version: ProtocolVersion, what: &str) {
    let got = c.recv(conn);
    assert!(c.is_closed(conn), "{version:?} {what}: closed");
    if version == V5 {
        assert!(
            matches!(&got[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::MALFORMED_PACKET),
            "{what}: {got:?}"
        );
    } else {
        assert!(
            got.is_empty(),
            "{version:?} {what}: nothing before the close: {got:?}"
        );
    }
}

/// v5 [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1], [MQTT-4.8.2-1], [MQTT-4.8.2-2],
/// [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1], [MQTT-4.8.0-1]:
/// SUBSCRIBE with a Topic Filter that is not correctly formed is a malformed packet (v5
/// DISCONNECT 0x81 "does not conform to this specification", v3.x close); nothing in it is
/// subscribed, not even its correct filters, and the session (persistent here) is kept.
#[test]
fn connected_subscribe_malformed_filter_closes() {
    for version in VERSIONS {
        for filter in MALFORMED {
            // v5 with and without properties.
            let property_blocks: &[&[u8]] = if version == V5 {
                &[&[0], &[2, 0x0B, 7]]
            } else {
                &[&[]]
            };
            for props in property_blocks {
                let mut c = Cluster::new(1);
                let a = c.connect(0, version, "a", false);
                c.send_bytes(a, &subscribe_raw(version, filter.as_bytes(), props));
                assert_malformed_close(&mut c, a, version, filter);
                let (b, ack) = c.connect_with(0, connect(version, "a", false));
                assert_eq!(ack.reason, ReasonCode::SUCCESS);
                let p = c.connect(0, V5, "p", true);
                c.publish(p, "ok", b"x", QoS::AtLeastOnce, false, 1);
                assert!(
                    c.publishes(b, true).is_empty(),
                    "{version:?} {filter:?}: the packet was not processed"
                );
                assert_eq!(c.engines[0].stats().violations["decode"], 1);
            }
        }
    }
}

/// v5 [MQTT-1.5.4-2]; v3.1.1 [MQTT-1.5.3-2]: U+0000 in a Topic Filter makes the string, and
/// so the packet, malformed (SUBSCRIBE and UNSUBSCRIBE).
#[test]
fn connected_filter_with_nul_closes() {
    for version in VERSIONS {
        let mut c = Cluster::new(1);
        let a = c.connect(0, version, "a", true);
        c.send_bytes(a, &subscribe_raw(version, b"a\0b", &[0]));
        assert_malformed_close(&mut c, a, version, "SUBSCRIBE a\\0b");
        let a = c.connect(0, version, "a", true);
        c.send_bytes(a, &unsubscribe_raw(version, b"a\0b"));
        assert_malformed_close(&mut c, a, version, "UNSUBSCRIBE a\\0b");
    }
}

/// The same filter rules in UNSUBSCRIBE (v5 [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1],
/// [MQTT-4.8.2-1], [MQTT-4.8.2-2]; v3.1.1 [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]): a
/// filter that could never be subscribed is malformed, not "No subscription existed".
#[test]
fn connected_unsubscribe_malformed_filter_closes() {
    for version in VERSIONS {
        for filter in MALFORMED {
            let mut c = Cluster::new(1);
            let a = c.connect(0, version, "a", true);
            c.subscribe(a, "ok", QoS::AtLeastOnce);
            c.send_bytes(a, &unsubscribe_raw(version, filter.as_bytes()));
            assert_malformed_close(&mut c, a, version, filter);
        }
    }
}

/// v5 3.9.3 (0x8F: correctly formed, not allowed for this Client), v3.1.1 [MQTT-3.8.4-5]
/// (0x80): a correctly formed filter refused by policy (`limits.max_topic_levels`) fails in
/// SUBACK alone; the others are granted and the connection stays. Its UNSUBSCRIBE finds no
/// subscription (v5 0x11).
#[test]
fn connected_subscribe_filter_refused_by_policy_fails_alone() {
    for version in VERSIONS {
        let mut c = Cluster::with_config(
            1,
            EngineConfig {
                topic_levels_max: 3,
                ..Default::default()
            },
        );
        let a = c.connect(0, version, "a", true);
        c.send_bytes(a, &subscribe_raw(version, b"a/b/c/d", &[0]));
        let got = c.recv(a);
        let refused = if version == V5 {
            ReasonCode::TOPIC_FILTER_INVALID
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        assert!(
            matches!(&got[..], [Packet::SubAck(x)] if x.reasons == vec![ReasonCode::GRANTED_QOS_1, refused]),
            "{version:?}: {got:?}"
        );
        assert!(!c.is_closed(a));
        c.send_bytes(a, &unsubscribe_raw(version, b"a/b/c/d"));
        let got = c.recv(a);
        let want = if version == V5 {
            vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]
        } else {
            Vec::new()
        };
        assert!(
            matches!(&got[..], [Packet::UnsubAck(x)] if x.reasons == want),
            "{version:?}: {got:?}"
        );
        assert!(!c.is_closed(a));
    }
}
