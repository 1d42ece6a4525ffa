//! Behaviour where the specification lets the Server choose (docs/spec/choices.md), each
//! test naming its row there.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V311, V5};
use tachyon_codec::*;
use tachyon_engine::EngineConfig;

fn acks(packets: &[Packet]) -> Vec<(&'static str, u16, ReasonCode)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(r) => Some(("PUBACK", r.packet_id.get(), r.reason)),
            Packet::PubRec(r) => Some(("PUBREC", r.packet_id.get(), r.reason)),
            _ => None,
        })
        .collect()
}

/// Row 12. v5 3.4.2.1, 3.5.2.1: PUBACK / PUBREC 0x10 No matching subscribers when no
/// subscription on any shard matches (ordinary or shared); 0x00 as soon as one does, on
/// this shard, on another one, or through a shared group; v3.1.1 has no reason codes.
#[test]
fn no_route_acknowledged_with_0x10() {
    let mut c = Cluster::new(2);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "nobody/here", b"1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "nobody/here", b"2", QoS::ExactlyOnce, false, 2);
    let got = c.recv(p);
    assert_eq!(
        acks(&got),
        vec![
            ("PUBACK", 1, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            ("PUBREC", 2, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        ]
    );
    // PUBREC 0x10 is below 0x80: the flow goes on (v5 [MQTT-4.3.3-4]).
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(2), ReasonCode::SUCCESS)),
    );
    assert!(matches!(&c.recv(p)[..], [Packet::PubComp(r)] if r.reason == ReasonCode::SUCCESS));

    // A subscriber on the other shard, then a shared group on this one.
    for (shard, filter, id) in [(1, "there/#", "s1"), (0, "$share/g/grp/+", "s2")] {
        let s = c.connect(shard, V5, id, true);
        c.subscribe(s, filter, QoS::AtLeastOnce);
    }
    for (n, topic) in [(3, "there/x"), (4, "grp/x")] {
        c.publish(p, topic, b"x", QoS::AtLeastOnce, false, n);
        assert_eq!(
            acks(&c.recv(p)),
            vec![("PUBACK", n, ReasonCode::SUCCESS)],
            "{topic}"
        );
    }
    // v3.1.1: no Reason Code on the wire.
    let q = c.connect(0, V311, "q", true);
    c.publish(q, "nobody/here", b"3", QoS::AtLeastOnce, false, 5);
    assert_eq!(acks(&c.recv(q)), vec![("PUBACK", 5, ReasonCode::SUCCESS)]);
}

/// Row 12: a retained message with no subscribers is acknowledged with 0x10 and is stored
/// all the same (durability does not change), and a subscriber excluded only by No Local
/// counts as matching (the routes cannot tell).
#[test]
fn no_route_retained_is_stored_and_no_local_counts_as_matching() {
    let mut c = Cluster::new(2);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "kept/t", b"retained", QoS::AtLeastOnce, true, 1);
    assert_eq!(
        acks(&c.recv(p)),
        vec![("PUBACK", 1, ReasonCode::NO_MATCHING_SUBSCRIBERS)]
    );
    let s = c.connect(1, V5, "s", true);
    c.subscribe(s, "kept/#", QoS::AtLeastOnce);
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1, "retained although nobody listened");
    assert!(got[0].retain);

    c.subscribe_opts(
        p,
        "self/t",
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            ..Default::default()
        },
        None,
    );
    c.publish(p, "self/t", b"x", QoS::AtLeastOnce, false, 2);
    assert_eq!(acks(&c.recv(p)), vec![("PUBACK", 2, ReasonCode::SUCCESS)]);
}

/// Row 10: a client subscribed to its own topic gets the copy of its message before the
/// PUBACK / PUBREC of that PUBLISH (the message is routed before it is acknowledged).
#[test]
fn own_copy_precedes_the_acknowledgement() {
    for version in [V311, V5] {
        let mut c = Cluster::new(1);
        let a = c.connect(0, version, "a", true);
        c.subscribe(a, "loop/t", QoS::ExactlyOnce);
        for (qos, n) in [(QoS::AtLeastOnce, 1u16), (QoS::ExactlyOnce, 2)] {
            c.publish(a, "loop/t", b"x", qos, false, n);
            let got = c.recv(a);
            assert!(
                matches!(
                    &got[..],
                    [Packet::Publish(_), Packet::PubAck(_) | Packet::PubRec(_)]
                ),
                "{version:?} {qos:?}: {got:?}"
            );
            if qos == QoS::ExactlyOnce {
                c.unread(a, got);
                let _ = c.publishes(a, true);
            }
        }
    }
}

/// Row 11: a QoS 2 message is routed when its PUBLISH arrives (subscribers have it before
/// the publisher's PUBREL).
#[test]
fn qos2_routed_at_publish_not_at_pubrel() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "q2/t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "q2/t", b"x", QoS::ExactlyOnce, false, 1);
    assert!(matches!(&c.recv(p)[..], [Packet::PubRec(_)]));
    assert_eq!(c.publishes(s, false).len(), 1, "before PUBREL");
}

/// Row 1: the v5 DISCONNECT for a broken rule names it in a Reason String, unless that
/// would exceed the client's Maximum Packet Size (v5 [MQTT-3.14.2-3]).
#[test]
fn disconnect_reason_string_names_the_rule_within_maximum_packet_size() {
    for (max, want) in [(None, true), (Some(16), false)] {
        let mut c = Cluster::with_config(1, EngineConfig::default());
        let mut cn = connect(V5, "a", true);
        cn.properties.maximum_packet_size = max;
        let (a, _) = c.connect_with(0, cn);
        c.send(a, &Packet::PingResp);
        let got = c.recv(a);
        let Some(Packet::Disconnect(d)) = got.first() else {
            panic!("{got:?}");
        };
        assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
        assert_eq!(
            d.properties.reason_string.as_ref().map(|s| s.as_str()),
            want.then_some("client sent PINGRESP, which only a server sends"),
            "maximum packet size {max:?}"
        );
    }
}
