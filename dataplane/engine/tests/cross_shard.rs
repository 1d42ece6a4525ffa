//! Several shards: routing, retained replicas, shared groups and session takeover across
//! shards, with mail delivered in order as the rings do.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V311, V5};
use tachyon_codec::*;

/// Publishers and subscribers on different shards see every message, at every QoS, in order.
#[test]
fn publishers_and_subscribers_on_different_shards() {
    let mut c = Cluster::new(3);
    let subs: Vec<_> = (0..3)
        .map(|i| c.connect(i, V5, &format!("s{i}"), true))
        .collect();
    for &s in &subs {
        c.subscribe(s, "t/#", QoS::ExactlyOnce);
    }
    let pubs: Vec<_> = (0..3)
        .map(|i| c.connect(i, V311, &format!("p{i}"), true))
        .collect();
    let mut id = 1;
    for (i, &p) in pubs.iter().enumerate() {
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            c.publish(p, &format!("t/{i}"), &[i as u8, q as u8], q, false, id);
            id += 1;
            if q == QoS::ExactlyOnce {
                c.send(
                    p,
                    &Packet::PubRel(PubResp::new(pid(id - 1), ReasonCode::SUCCESS)),
                );
            }
        }
    }
    for &s in &subs {
        let got = c.publishes(s, true);
        assert_eq!(got.len(), 9, "{got:?}");
        for i in 0..3u8 {
            let from_i: Vec<u8> = got
                .iter()
                .filter(|m| m.payload[0] == i)
                .map(|m| m.payload[1])
                .collect();
            assert_eq!(from_i, vec![0, 1, 2], "per-publisher order");
        }
    }
}

/// A retained message published on one shard is delivered to a subscriber on another.
#[test]
fn retained_visible_from_every_shard() {
    let mut c = Cluster::new(4);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "r/a", b"1", QoS::AtLeastOnce, true, 1);
    for shard in 0..4 {
        assert_eq!(c.engines[shard].retained_count(), 1);
        let s = c.connect(shard, V5, &format!("s{shard}"), true);
        c.subscribe(s, "r/#", QoS::AtLeastOnce);
        assert_eq!(c.publishes(s, true).len(), 1);
    }
}

/// A client reconnecting on another shard takes its session over: the old connection gets
/// 0x8E, the queued messages and subscriptions follow the session.
#[test]
fn takeover_across_shards_moves_session() {
    let mut c = Cluster::new(2);
    let mut cn = connect(V5, "mover", false);
    cn.properties.session_expiry_interval = Some(300);
    let (old, _) = c.connect_with(0, cn.clone());
    c.subscribe(old, "m", QoS::AtLeastOnce);
    let p = c.connect(1, V5, "p", true);
    c.publish(p, "m", b"before", QoS::AtLeastOnce, false, 1);
    let unacked = c.publishes(old, false);
    assert_eq!(unacked.len(), 1);

    let (new, ack) = c.connect_with(1, cn);
    assert!(ack.session_present);
    assert_eq!(
        disconnect_reason(&c.recv(old)),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(c.is_closed(old));
    let got = c.publishes(new, true);
    assert_eq!(got.len(), 1, "inflight message resent on the new shard");
    assert!(got[0].dup);
    c.publish(p, "m", b"after", QoS::AtLeastOnce, false, 2);
    let got = c.publishes(new, true);
    assert_eq!(got.len(), 1, "subscription moved with the session");
    assert_eq!(c.engines[0].session_count(), 0);
    assert_eq!(c.engines[1].session_count(), 2);
}

/// Two connections claiming one client id on different shards at once: the later claim wins,
/// exactly one stays connected.
#[test]
fn concurrent_claims_leave_one_connection() {
    let mut c = Cluster::new(3);
    let a = c.open(0, V311);
    let b = c.open(2, V311);
    // Feed both CONNECTs before pumping any mail.
    let mut bytes = bytes::BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect(V311, "race", false))),
        V311,
        &mut bytes,
    )
    .unwrap();
    let mut ra = bytes.clone();
    let mut rb = bytes.clone();
    let now = c.now;
    c.engines[0].handle_bytes(now, a, &mut ra);
    c.engines[2].handle_bytes(now, b, &mut rb);
    c.pump();
    let open: Vec<bool> = [a, b].iter().map(|x| !c.is_closed(*x)).collect();
    assert_eq!(open.iter().filter(|x| **x).count(), 1, "{open:?}");
    let total_sessions: usize = c.engines.iter().map(|e| e.session_count()).sum();
    assert_eq!(total_sessions, 1);
}

/// A shared group with members on two shards: each message goes to exactly one member.
#[test]
fn shared_group_across_shards_one_member_per_message() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, V5, "a", true);
    let b = c.connect(1, V5, "b", true);
    c.subscribe(a, "$share/workers/jobs", QoS::AtLeastOnce);
    c.subscribe(b, "$share/workers/jobs", QoS::AtLeastOnce);
    let p = c.connect(1, V5, "p", true);
    for i in 1..=20u16 {
        c.publish(p, "jobs", &i.to_be_bytes(), QoS::AtLeastOnce, false, i);
    }
    let (ga, gb) = (c.publishes(a, true), c.publishes(b, true));
    assert_eq!(ga.len() + gb.len(), 20);
    assert!(!ga.is_empty() && !gb.is_empty());
    let mut all: Vec<u16> = ga
        .iter()
        .chain(&gb)
        .map(|m| u16::from_be_bytes([m.payload[0], m.payload[1]]))
        .collect();
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
}

/// Unsubscribing on one shard stops routing to it from the others.
#[test]
fn unsubscribe_updates_routes_everywhere() {
    let mut c = Cluster::new(2);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "x", QoS::AtMostOnce);
    c.send(
        s,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Properties::default(),
            filters: vec![s_("x")],
        }),
    );
    let _ = c.recv(s);
    let p = c.connect(1, V5, "p", true);
    c.publish(p, "x", b"1", QoS::AtMostOnce, false, 0);
    assert!(c.publishes(s, true).is_empty());
    // No mail was sent for the publish at all: shard 1's routing trie knows shard 0 left.
    assert!(c.engines[1].poll_mail().is_none());
}

fn s_(x: &str) -> Utf8Str {
    s(x)
}

/// A client id whose home shard is `home` among `n`.
fn id_homed_at(prefix: &str, home: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| tachyon_engine::home_shard(id.as_bytes(), n) == home)
        .unwrap()
}

/// SUBACK promises delivery of what is published afterwards on any shard, so it waits until
/// every shard routes the new filter (barrier).
#[test]
fn suback_waits_until_every_shard_routes_the_filter() {
    let mut c = Cluster::new(2);
    let s = c.connect(0, V5, "s", true);
    let p = c.connect(1, V5, "p", true);
    let sub = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Properties::default(),
        filters: vec![(
            s_("fresh/topic"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    });
    // Shard 1 is slow: its ack has not come back yet.
    c.send_holding(s, &sub, 1);
    assert!(
        c.recv(s).is_empty(),
        "SUBACK held until shard 1 acknowledged the route"
    );
    c.pump();
    assert!(matches!(&c.recv(s)[..], [Packet::SubAck(_)]));
    c.publish(p, "fresh/topic", b"m", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(s, true).len(), 1);
}

/// A message routed to the old owner while the session moves is forwarded by the tombstone,
/// exactly once; one sent to both owners is not forwarded twice.
#[test]
fn takeover_forwards_stragglers_exactly_once() {
    let n = 3;
    let id = id_homed_at("mover-", 0, n);
    let mut c = Cluster::new(n);
    let mut cn = connect(V5, &id, false);
    cn.properties.session_expiry_interval = Some(300);
    let (old, _) = c.connect_with(0, cn.clone());
    c.subscribe(old, "t", QoS::AtLeastOnce);
    let p = c.connect(2, V5, "p", true);
    let newc = c.open(1, V5);

    // 1. Shard 2 routes message 1 to shard 0 (the only owner it knows); its ring is slow.
    c.send_holding(
        p,
        &Packet::Publish(publish("t", b"one", QoS::AtLeastOnce, false, 1)),
        2,
    );
    // 2. The client reconnects on shard 1; shard 0 hands the session over and keeps a
    //    tombstone; shard 2 learns the new route but its ack waits in its slow ring.
    c.send_holding(newc, &Packet::Connect(Box::new(cn)), 2);
    assert!(c.is_closed(old));
    assert!(
        c.recv(newc).is_empty(),
        "CONNACK held until shard 2 routes to shard 1"
    );
    // 3. Shard 2 now routes message 2 to both shard 0 (tombstone) and shard 1.
    c.send_holding(
        p,
        &Packet::Publish(publish("t", b"two", QoS::AtLeastOnce, false, 2)),
        2,
    );
    // 4. Everything flows.
    c.pump();
    let got = c.recv(newc);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{got:?}"
    );
    c.unread(newc, got.into_iter().skip(1).collect());
    let mut payloads: Vec<Vec<u8>> = c
        .publishes(newc, true)
        .iter()
        .map(|m| m.payload.to_vec())
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        vec![b"one".to_vec(), b"two".to_vec()],
        "each message once"
    );
    // The tombstone forwarded both; shard 1 knew it had delivered message two itself.
    assert_eq!(c.engines[0].stats().forwarded_after_takeover, 2);
    assert_eq!(c.engines[1].stats().forwards_already_delivered, 1);
    // The tombstone is gone once every shard withdrew its route.
    assert_eq!(c.engines[0].session_count(), 0);
    c.publish(p, "t", b"three", QoS::AtLeastOnce, false, 3);
    assert_eq!(c.publishes(newc, true).len(), 1);
}

/// The new owner may process a Publish before the session's Transfer arrives (different
/// rings): the tombstone's forward is then delivered, because the message was processed before
/// the adoption. Exactly once.
#[test]
fn takeover_publish_before_transfer_delivered_once() {
    let n = 3;
    let id = id_homed_at("early-", 1, n);
    let mut c = Cluster::new(n);
    let mut cn = connect(V5, &id, false);
    cn.properties.session_expiry_interval = Some(300);
    let (old, _) = c.connect_with(0, cn.clone());
    c.subscribe(old, "t/#", QoS::AtLeastOnce);
    let other = c.connect(1, V5, "other", true);
    c.subscribe(other, "t/x", QoS::AtLeastOnce);
    let p = c.connect(2, V5, "p", true);
    let newc = c.open(1, V5);
    // Shard 0 (old owner) is slow: its Transfer and forwards wait.
    c.send_holding(newc, &Packet::Connect(Box::new(cn)), 0);
    c.send_holding(
        p,
        &Packet::Publish(publish("t/x", b"early", QoS::AtLeastOnce, false, 1)),
        0,
    );
    assert_eq!(
        c.publishes(other, true).len(),
        1,
        "shard 1 processed the publish already"
    );
    c.pump();
    let got = c.recv(newc);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{got:?}"
    );
    c.unread(newc, got.into_iter().skip(1).collect());
    let msgs = c.publishes(newc, true);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(&msgs[0].payload[..], b"early");
}

/// A connection that closes while its claim is in flight does not strand the session: a newer
/// claim for the same id gets it (with Session Present).
#[test]
fn claim_closed_in_flight_passes_session_to_newer_claim() {
    let n = 3;
    let id = id_homed_at("flaky-", 1, n);
    let mut c = Cluster::new(n);
    let mut cn = connect(V311, &id, false);
    cn.keep_alive_secs = 0;
    let (first, _) = c.connect_with(2, cn.clone());
    c.subscribe(first, "f", QoS::AtLeastOnce);
    c.drop_conn(first);
    // X claims on shard 0; the owner (shard 2) is slow to hand the session over.
    let x = c.open(0, V311);
    c.send_holding(x, &Packet::Connect(Box::new(cn.clone())), 2);
    c.drop_conn_holding(x, 2);
    // Y claims on shard 1 while X's claim is still in flight.
    let y = c.open_holding(1, V311, 2);
    c.send_holding(y, &Packet::Connect(Box::new(cn)), 2);
    c.pump();
    let got = c.recv(y);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{got:?}"
    );
    let total: usize = c.engines.iter().map(|e| e.session_count()).sum();
    assert_eq!(total, 1, "one session, not an orphan");
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "f", b"still subscribed", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(y, true).len(), 1);
}

/// A shared member's unacknowledged QoS 1 messages go to the member on the other shard when
/// its connection ends; none is dropped.
#[test]
fn shared_member_leaves_inflight_goes_to_other_shard() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, V5, "a", true);
    let b = c.connect(1, V5, "b", true);
    c.subscribe(a, "$share/g/t", QoS::AtLeastOnce);
    c.subscribe(b, "$share/g/t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=10u16 {
        c.publish(p, "t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i);
    }
    let held = c.publishes(a, false);
    let got_b = c.publishes(b, true).len();
    assert_eq!(held.len() + got_b, 10);
    c.drop_conn(a);
    let moved = c.publishes(b, true).len();
    assert_eq!(moved, held.len(), "every unacknowledged message reached b");
    assert_eq!(
        c.engines[0].stats().dropped_shared_no_member
            + c.engines[1].stats().dropped_shared_no_member,
        0
    );
}

/// v5 [MQTT-3.3.1-5]: once a retained PUBLISH is acknowledged, a subscription made on any
/// shard gets it: the PUBACK waits until every replica of the retained store has it.
#[test]
fn retained_puback_waits_for_every_replica() {
    let mut c = Cluster::new(3);
    let p = c.connect(0, V5, "p", true);
    c.send_holding(
        p,
        &Packet::Publish(publish("r/t", b"kept", QoS::AtLeastOnce, true, 1)),
        2,
    );
    assert!(
        c.recv(p).is_empty(),
        "PUBACK held until shard 2 has the retained message"
    );
    c.pump();
    // Nobody subscribes: 0x10 No matching subscribers (stored all the same).
    assert_eq!(
        c.recv(p),
        vec![Packet::PubAck(PubResp::new(
            pid(1),
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        ))]
    );
    for shard in 0..3 {
        assert_eq!(c.engines[shard].retained_count(), 1);
    }
}

/// A retained QoS 2 PUBLISH retransmitted (DUP) before PUBREL is answered with PUBREC and the
/// connection keeps working (the retained barrier of a duplicate must not hold it forever).
#[test]
fn retained_qos2_duplicate_does_not_stall_connection() {
    let mut c = Cluster::new(2);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "r/q2", b"v", QoS::ExactlyOnce, true, 7);
    // Nobody subscribes: 0x10 No matching subscribers.
    assert_eq!(
        c.recv(p),
        vec![Packet::PubRec(PubResp::new(
            pid(7),
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        ))]
    );
    let mut again = publish("r/q2", b"v", QoS::ExactlyOnce, true, 7);
    again.dup = true;
    c.send(p, &Packet::Publish(again));
    assert_eq!(
        c.recv(p),
        vec![Packet::PubRec(PubResp::new(pid(7), ReasonCode::SUCCESS))]
    );
    c.send(p, &Packet::PingReq);
    assert_eq!(
        c.recv(p),
        vec![Packet::PingResp],
        "output not stuck behind a barrier"
    );
}

/// A second subscriber of a filter does not get its SUBACK before the first subscriber's route
/// announcement reached every shard.
#[test]
fn second_subscriber_waits_for_first_announcement() {
    let mut c = Cluster::new(2);
    let s1 = c.connect(0, V5, "s1", true);
    let s2 = c.connect(0, V5, "s2", true);
    let p = c.connect(1, V5, "p", true);
    let sub = |id: u16| {
        Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Properties::default(),
            filters: vec![(
                s_("same/t"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
        })
    };
    c.send_holding(s1, &sub(1), 1);
    c.send_holding(s2, &sub(2), 1);
    assert!(
        c.recv(s1).is_empty() && c.recv(s2).is_empty(),
        "both SUBACKs wait for shard 1"
    );
    c.pump();
    assert!(matches!(&c.recv(s2)[..], [Packet::SubAck(_)]));
    c.publish(p, "same/t", b"m", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(s2, true).len(), 1);
}

/// A session that moves twice (shard 0 -> 1 -> 2) while a message is still on its way to the
/// first owner: shard 0's tombstone forwards it to shard 1, whose tombstone relays it to
/// shard 2. Delivered exactly once, and every tombstone is gone in the end.
#[test]
fn session_moving_twice_forwards_follow() {
    let n = 4;
    let id = id_homed_at("twice-", 0, n);
    let mut c = Cluster::new(n);
    let mut cn = connect(V5, &id, false);
    cn.properties.session_expiry_interval = Some(300);
    let (first, _) = c.connect_with(0, cn.clone());
    c.subscribe(first, "m/#", QoS::AtLeastOnce);
    let p = c.connect(3, V5, "p", true);
    let second = c.open(1, V5);
    let third = c.open(2, V5);
    // Shard 3 (the publisher's) is slow: the message to shard 0 and its route acks wait.
    c.send_holding(
        p,
        &Packet::Publish(publish("m/1", b"straggler", QoS::AtLeastOnce, false, 1)),
        3,
    );
    c.send_holding(second, &Packet::Connect(Box::new(cn.clone())), 3);
    assert!(
        c.recv(second).is_empty(),
        "CONNACK held: shard 3 has not acknowledged"
    );
    c.send_holding(third, &Packet::Connect(Box::new(cn)), 3);
    assert!(c.is_closed(second));
    c.pump();
    let got = c.recv(third);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{got:?}"
    );
    c.unread(third, got.into_iter().skip(1).collect());
    let msgs = c.publishes(third, true);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(&msgs[0].payload[..], b"straggler");
    assert_eq!(
        c.engines
            .iter()
            .map(|e| e.stats().dropped_forward_no_session)
            .sum::<u64>(),
        0
    );
    c.publish(p, "m/2", b"after", QoS::AtLeastOnce, false, 2);
    assert_eq!(c.publishes(third, true).len(), 1);
    let total: usize = c.engines.iter().map(|e| e.session_count()).sum();
    assert_eq!(
        total, 2,
        "the moved session and the publisher's; no tombstone left"
    );
}
