//! Durability (issue 5) at the engine: what is logged, what waits for the log, and what a
//! crash at any point leaves. `Cluster::durable` keeps each shard's log in memory with a
//! durable prefix; `crash_and_restart` recovers from the durable prefixes only, as the real
//! start-up does (`tachyon_net::durable::prepare`).

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V311, V5};
use tachyon_codec::*;

/// A v5 CONNECT that keeps its session for an hour.
fn persistent(id: &str) -> Connect {
    let mut c = connect(V5, id, false);
    c.properties.session_expiry_interval = Some(3600);
    c
}

fn acks(packets: &[Packet]) -> Vec<(u16, ReasonCode)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) | Packet::PubRec(a) => Some((a.packet_id.get(), a.reason)),
            _ => None,
        })
        .collect()
}

fn payloads(ps: &[Publish]) -> Vec<Vec<u8>> {
    ps.iter().map(|p| p.payload.to_vec()).collect()
}

/// v5 [MQTT-4.3.2-4] / issue 5: PUBACK means the message is on disk for the persistent
/// session that will receive it; until the shard's log is durable it is held.
#[test]
fn puback_waits_until_the_enqueue_is_durable() {
    let mut c = Cluster::durable(1);
    let (s, _) = c.connect_with(0, persistent("sub"));
    c.subscribe(s, "t/#", QoS::AtLeastOnce);
    c.drop_conn(s);
    c.auto_commit = false;
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"m1", QoS::AtLeastOnce, false, 7);
    assert!(
        acks(&c.recv(p)).is_empty(),
        "PUBACK before the record is durable"
    );
    c.commit(0);
    assert_eq!(acks(&c.recv(p)), vec![(7, ReasonCode::SUCCESS)]);
}

/// A message for a subscriber whose session lives on another shard: the PUBACK waits for
/// that shard's log, not only the publisher's.
#[test]
fn puback_waits_for_the_shard_that_queued_the_message() {
    let mut c = Cluster::durable(2);
    let (s, _) = c.connect_with(1, persistent("sub"));
    c.subscribe(s, "t/#", QoS::ExactlyOnce);
    c.drop_conn(s);
    c.auto_commit = false;
    let p = c.connect(0, V311, "pub", true);
    c.commit(0);
    c.commit(1);
    let _ = c.recv(p);
    c.publish(p, "t/1", b"m1", QoS::ExactlyOnce, false, 3);
    c.commit(0);
    assert!(
        acks(&c.recv(p)).is_empty(),
        "PUBREC before shard 1 logged it"
    );
    c.commit(1);
    assert_eq!(acks(&c.recv(p)), vec![(3, ReasonCode::SUCCESS)]);
}

/// Without persistent subscribers nothing is logged and nothing waits.
#[test]
fn clean_sessions_log_nothing_and_wait_for_nothing() {
    let mut c = Cluster::durable(2);
    c.auto_commit = false;
    let s = c.connect(1, V5, "sub", true);
    c.subscribe(s, "t/#", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"m1", QoS::AtLeastOnce, false, 1);
    assert_eq!(acks(&c.recv(p)), vec![(1, ReasonCode::SUCCESS)]);
    assert_eq!(c.publishes(s, true).len(), 1);
    assert!(c.disks.iter().all(|d| d.records.is_empty()));
}

/// The subscriber's SUBACK, and a PUBLISH sent to it, wait for their records too: after a
/// crash it never holds a subscription or a QoS 2 message the broker forgot.
#[test]
fn suback_and_outbound_publish_wait_for_the_log() {
    let mut c = Cluster::durable(1);
    let (s, _) = c.connect_with(0, persistent("sub"));
    c.auto_commit = false;
    c.send(
        s,
        &Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::default(),
            filters: vec![(
                Utf8Str::from_static("t/#"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            )],
        }),
    );
    assert!(c.recv(s).is_empty(), "SUBACK before durable");
    c.commit(0);
    assert!(matches!(c.recv(s)[..], [Packet::SubAck(_)]));
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"x", QoS::ExactlyOnce, false, 1);
    assert!(
        c.publishes(s, false).is_empty(),
        "PUBLISH before its record"
    );
    c.commit(0);
    assert_eq!(c.publishes(s, false).len(), 1);
}

/// Issue 5, done means: a crash loses nothing acknowledged and duplicates nothing. Offline
/// queues, inflight QoS 1 and QoS 2 (before and after PUBREC), inbound QoS 2 awaiting
/// PUBREL, subscriptions and retained messages all come back.
#[test]
fn a_crash_brings_back_sessions_queues_inflight_and_retained() {
    let mut c = Cluster::durable(2);
    // Offline subscriber with a queue.
    let (off, _) = c.connect_with(0, persistent("offline"));
    c.subscribe(off, "q/#", QoS::ExactlyOnce);
    c.drop_conn(off);
    // Online subscriber that receives and does not acknowledge: inflight.
    let (on, _) = c.connect_with(1, persistent("online"));
    c.subscribe(on, "f/#", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "pub", true);
    for i in 0..3u8 {
        c.publish(p, "q/a", &[b'q', i], QoS::AtLeastOnce, false, 10 + i as u16);
    }
    c.publish(p, "f/a", b"f1", QoS::AtLeastOnce, false, 20);
    c.publish(p, "f/a", b"f2", QoS::ExactlyOnce, false, 21);
    c.publish(p, "f/a", b"f3", QoS::ExactlyOnce, false, 22);
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(21), ReasonCode::SUCCESS)),
    );
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(22), ReasonCode::SUCCESS)),
    );
    c.publish(p, "r/x", b"kept", QoS::AtLeastOnce, true, 30);
    let got = c.publishes(on, false);
    assert_eq!(
        payloads(&got),
        vec![b"f1".to_vec(), b"f2".to_vec(), b"f3".to_vec()]
    );
    // f3: PUBREC from the subscriber, so the broker sends PUBREL (released).
    let f3 = got[2].packet_id.unwrap();
    c.send(on, &Packet::PubRec(PubResp::new(f3, ReasonCode::SUCCESS)));
    assert!(matches!(c.recv(on)[..], [Packet::PubRel(_)]));
    // An inbound QoS 2 message of a persistent publisher, PUBREC sent, no PUBREL yet.
    let (pp, _) = c.connect_with(1, persistent("pub2"));
    c.publish(pp, "q/b", b"once", QoS::ExactlyOnce, false, 5);
    assert_eq!(acks(&c.recv(pp)), vec![(5, ReasonCode::SUCCESS)]);

    let r = c.crash_and_restart();
    assert_eq!(r.sessions, 3, "{r:?}");
    assert_eq!(r.retained, 1);

    // The publisher resends its QoS 2 PUBLISH (DUP) after reconnecting: not forwarded again
    // (v5 [MQTT-4.3.3-10]).
    let (pp, ack) = c.connect_with(0, persistent("pub2"));
    assert!(ack.session_present);
    let mut again = publish("q/b", b"once", QoS::ExactlyOnce, false, 5);
    again.dup = true;
    c.send(pp, &Packet::Publish(again));
    assert_eq!(acks(&c.recv(pp)), vec![(5, ReasonCode::SUCCESS)]);
    c.send(
        pp,
        &Packet::PubRel(PubResp::new(pid(5), ReasonCode::SUCCESS)),
    );

    // The offline subscriber gets its queue in order, then the QoS 2 message once.
    let (off, ack) = c.connect_with(1, persistent("offline"));
    assert!(ack.session_present);
    let got = c.publishes(off, true);
    assert_eq!(
        payloads(&got),
        vec![
            vec![b'q', 0],
            vec![b'q', 1],
            vec![b'q', 2],
            b"once".to_vec()
        ]
    );
    // The online one: f1 and f2 resent with DUP and their identifiers (v5 [MQTT-4.4.0-1]),
    // f3 continues with PUBREL.
    let (on, ack) = c.connect_with(0, persistent("online"));
    assert!(ack.session_present);
    let got = c.recv(on);
    let mut resent = Vec::new();
    let mut pubrel = Vec::new();
    for p in &got {
        match p {
            Packet::Publish(m) => {
                assert!(m.dup, "resent PUBLISH has DUP");
                resent.push(m.payload.to_vec());
            }
            Packet::PubRel(r) => pubrel.push(r.packet_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(resent, vec![b"f1".to_vec(), b"f2".to_vec()]);
    assert_eq!(pubrel, vec![f3]);
    // Subscriptions survived: a new message reaches both.
    let p = c.connect(1, V5, "pub", true);
    c.publish(p, "q/z", b"new", QoS::AtLeastOnce, false, 1);
    assert_eq!(payloads(&c.publishes(off, true)), vec![b"new".to_vec()]);
    // The retained message too.
    let s = c.connect(1, V5, "late", true);
    c.subscribe(s, "r/#", QoS::AtLeastOnce);
    assert_eq!(payloads(&c.publishes(s, true)), vec![b"kept".to_vec()]);
}

/// What was not durable at the crash is lost, but it was never acknowledged either: the
/// publisher resends it and it arrives once.
#[test]
fn a_crash_before_the_commit_loses_only_what_was_not_acknowledged() {
    let mut c = Cluster::durable(1);
    let (s, _) = c.connect_with(0, persistent("sub"));
    c.subscribe(s, "t/#", QoS::AtLeastOnce);
    c.drop_conn(s);
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"acked", QoS::AtLeastOnce, false, 1);
    assert_eq!(acks(&c.recv(p)).len(), 1);
    c.auto_commit = false;
    c.publish(p, "t/1", b"unacked", QoS::AtLeastOnce, false, 2);
    assert!(acks(&c.recv(p)).is_empty());
    c.crash_and_restart();
    c.auto_commit = true;
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"unacked", QoS::AtLeastOnce, false, 2);
    let (s, _) = c.connect_with(0, persistent("sub"));
    assert_eq!(
        payloads(&c.publishes(s, true)),
        vec![b"acked".to_vec(), b"unacked".to_vec()]
    );
}

/// A session that moved between shards (takeover) is in two logs; recovery takes the later
/// generation. A session ended by a clean start does not come back.
#[test]
fn moved_and_ended_sessions_recover_to_their_last_state() {
    let mut c = Cluster::durable(2);
    let (a, _) = c.connect_with(0, persistent("mover"));
    c.subscribe(a, "old/#", QoS::AtLeastOnce);
    c.drop_conn(a);
    // Reconnect on the other shard: the session moves (written whole there).
    let (b, ack) = c.connect_with(1, persistent("mover"));
    assert!(ack.session_present);
    c.subscribe(b, "new/#", QoS::AtLeastOnce);
    c.drop_conn(b);
    let (e, _) = c.connect_with(0, persistent("ender"));
    c.subscribe(e, "e/#", QoS::AtLeastOnce);
    c.drop_conn(e);
    let (e, ack) = c.connect_with(1, connect(V311, "ender", true));
    assert!(!ack.session_present);
    c.drop_conn(e);
    let r = c.crash_and_restart();
    assert_eq!(r.sessions, 1, "only the mover: {r:?}");
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "old/1", b"o", QoS::AtLeastOnce, false, 1);
    c.publish(p, "new/1", b"n", QoS::AtLeastOnce, false, 2);
    c.publish(p, "e/1", b"e", QoS::AtLeastOnce, false, 3);
    let (m, ack) = c.connect_with(0, persistent("mover"));
    assert!(ack.session_present);
    assert_eq!(
        payloads(&c.publishes(m, true)),
        vec![b"o".to_vec(), b"n".to_vec()]
    );
    let (e, ack) = c.connect_with(0, connect(V311, "ender", false));
    assert!(!ack.session_present, "an ended session is not resurrected");
    assert!(c.publishes(e, true).is_empty());
}

/// A snapshot written at any point, then the log after it, recovers the same state as the
/// whole log: here, after a snapshot, more traffic, and a crash.
#[test]
fn snapshot_then_tail_recovers_everything() {
    let mut c = Cluster::durable(1);
    let (s, _) = c.connect_with(0, persistent("sub"));
    c.subscribe(s, "t/#", QoS::AtLeastOnce);
    c.drop_conn(s);
    let p = c.connect(0, V5, "pub", true);
    c.publish(p, "t/1", b"before", QoS::AtLeastOnce, false, 1);
    c.engines[0].snapshot();
    c.pump();
    c.publish(p, "t/1", b"after", QoS::AtLeastOnce, false, 2);
    c.crash_and_restart();
    let (s, _) = c.connect_with(0, persistent("sub"));
    assert_eq!(
        payloads(&c.publishes(s, true)),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
}

/// Disk full: QoS 1/2 publishes are refused (v5 0x97; v3.1.1 close), QoS 0 goes on.
#[test]
fn a_failed_log_refuses_qos1_and_keeps_qos0() {
    let mut c = Cluster::durable(1);
    let s = c.connect(0, V5, "sub", true);
    c.subscribe(s, "t/#", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "pub", true);
    let p3 = c.connect(0, V311, "pub3", true);
    c.engines[0].set_log_failed(true);
    c.publish(p, "t/1", b"q1", QoS::AtLeastOnce, false, 1);
    assert_eq!(acks(&c.recv(p)), vec![(1, ReasonCode::QUOTA_EXCEEDED)]);
    c.publish(p, "t/1", b"q0", QoS::AtMostOnce, false, 0);
    assert_eq!(payloads(&c.publishes(s, true)), vec![b"q0".to_vec()]);
    c.publish(p3, "t/1", b"q1", QoS::AtLeastOnce, false, 1);
    assert!(c.is_closed(p3), "v3.1.1 has no refusal code: closed");
    c.engines[0].set_log_failed(false);
    c.publish(p, "t/1", b"ok", QoS::AtLeastOnce, false, 2);
    assert_eq!(acks(&c.recv(p)), vec![(2, ReasonCode::SUCCESS)]);
    assert_eq!(c.engines[0].stats().publishes_refused_log_failed, 2);
}

/// One shard's full disk makes every shard refuse QoS 1/2 (a message may need that shard's
/// log), until it recovers.
#[test]
fn a_failed_log_on_another_shard_refuses_too() {
    let mut c = Cluster::durable(2);
    let p = c.connect(0, V5, "pub", true);
    c.engines[1].set_log_failed(true);
    c.pump();
    c.publish(p, "t/1", b"q1", QoS::ExactlyOnce, false, 1);
    assert_eq!(acks(&c.recv(p)), vec![(1, ReasonCode::QUOTA_EXCEEDED)]);
    c.engines[1].set_log_failed(false);
    c.pump();
    c.publish(p, "t/1", b"q1", QoS::ExactlyOnce, false, 2);
    // Accepted again (nobody subscribes: 0x10 No matching subscribers).
    assert_eq!(
        acks(&c.recv(p)),
        vec![(2, ReasonCode::NO_MATCHING_SUBSCRIBERS)]
    );
}

/// A delayed Will of an offline session survives a crash and is published when due.
#[test]
fn a_pending_will_survives_a_crash() {
    let mut c = Cluster::durable(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtLeastOnce);
    let mut conn = persistent("dying");
    conn.will = Some(will("will/dying", b"gone", Some(60)));
    let (d, _) = c.connect_with(0, conn);
    c.drop_conn(d);
    c.crash_and_restart();
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtLeastOnce);
    c.advance(30_000);
    assert!(c.publishes(w, true).is_empty(), "not due yet");
    c.advance(31_000);
    assert_eq!(payloads(&c.publishes(w, true)), vec![b"gone".to_vec()]);
}

/// The exactly-once trap across shards: a persistent publisher's QoS 2 message is routed
/// (and logged for subscribers on other shards) only after its "received" record is
/// durable; a crash in between loses it everywhere, and the publisher's retransmission is
/// then delivered once.
#[test]
fn qos2_from_a_persistent_publisher_is_routed_after_its_received_record() {
    let mut c = Cluster::durable(2);
    let (s, _) = c.connect_with(1, persistent("sub"));
    c.subscribe(s, "t/#", QoS::ExactlyOnce);
    c.drop_conn(s);
    let (p, _) = c.connect_with(0, persistent("pub"));
    c.auto_commit = false;
    c.publish(p, "t/1", b"x", QoS::ExactlyOnce, false, 9);
    c.publish(p, "t/1", b"y", QoS::AtLeastOnce, false, 10);
    c.commit(1);
    assert!(
        c.disks[1].records.len() == c.disks[1].durable && c.disks[1].durable > 0,
        "shard 1 durable"
    );
    let before = c.disks[1].records.len();
    c.pump();
    assert_eq!(
        c.disks[1].records.len(),
        before,
        "nothing reached shard 1 before shard 0's record is durable"
    );
    // Crash now: the message is gone everywhere; the publisher resends it.
    c.crash_and_restart();
    c.auto_commit = true;
    let (p, ack) = c.connect_with(0, persistent("pub"));
    assert!(ack.session_present);
    let mut again = publish("t/1", b"x", QoS::ExactlyOnce, false, 9);
    again.dup = true;
    c.send(p, &Packet::Publish(again));
    assert_eq!(acks(&c.recv(p)), vec![(9, ReasonCode::SUCCESS)]);
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(9), ReasonCode::SUCCESS)),
    );
    let (s, _) = c.connect_with(1, persistent("sub"));
    assert_eq!(payloads(&c.publishes(s, true)), vec![b"x".to_vec()]);
    // Without a crash: routed after the commit, then the QoS 1 message behind it, in order.
    let s2 = c.connect(1, V5, "watch", true);
    c.subscribe(s2, "u/#", QoS::ExactlyOnce);
    c.auto_commit = false;
    c.publish(p, "u/1", b"a", QoS::ExactlyOnce, false, 11);
    c.publish(p, "u/1", b"b", QoS::AtLeastOnce, false, 12);
    assert!(c.publishes(s2, true).is_empty());
    c.commit(0);
    assert_eq!(
        acks(&c.recv(p)),
        vec![(11, ReasonCode::SUCCESS), (12, ReasonCode::SUCCESS)]
    );
    assert_eq!(
        payloads(&c.publishes(s2, true)),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

/// The other half: the publisher's "received" record (with the message) is durable but a
/// subscriber's shard had not made the message durable when the broker died. Recovery gives
/// it to that subscriber; one that had it already does not get it twice; the publisher's
/// retransmission is recognised.
#[test]
fn qos2_received_but_not_routed_everywhere_is_rerouted_once() {
    let mut c = Cluster::durable(3);
    let (s1, _) = c.connect_with(1, persistent("late-shard"));
    c.subscribe(s1, "t/#", QoS::ExactlyOnce);
    c.drop_conn(s1);
    let (s2, _) = c.connect_with(2, persistent("quick-shard"));
    c.subscribe(s2, "t/#", QoS::ExactlyOnce);
    c.drop_conn(s2);
    let (p, _) = c.connect_with(0, persistent("pub"));
    c.auto_commit = false;
    c.publish(p, "t/1", b"x", QoS::ExactlyOnce, false, 4);
    c.commit(0); // "received" durable: the message is routed now
    c.commit(2); // shard 2 has it durably, shard 1 does not
    assert!(acks(&c.recv(p)).is_empty(), "PUBREC waits for shard 1");
    let r = c.crash_and_restart();
    assert_eq!(r.sessions, 3);
    c.auto_commit = true;
    let (p, _) = c.connect_with(0, persistent("pub"));
    let mut again = publish("t/1", b"x", QoS::ExactlyOnce, false, 4);
    again.dup = true;
    c.send(p, &Packet::Publish(again));
    assert_eq!(acks(&c.recv(p)), vec![(4, ReasonCode::SUCCESS)]);
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(4), ReasonCode::SUCCESS)),
    );
    for id in ["late-shard", "quick-shard"] {
        let (s, _) = c.connect_with(0, persistent(id));
        assert_eq!(payloads(&c.publishes(s, true)), vec![b"x".to_vec()], "{id}");
    }
}
