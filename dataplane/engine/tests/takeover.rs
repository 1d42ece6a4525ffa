//! Session takeover: a second connection with the same Client Identifier while the first is
//! still connected. Every case runs on both protocol versions, with the new connection on
//! the old session's shard and on another one (the directory hand-over).

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::{V311, V5};
use tachyon_codec::*;
use tachyon_engine::ConnId;

/// (version, shard of the new connection) for every case.
const CASES: [(ProtocolVersion, usize); 4] = [(V311, 0), (V311, 1), (V5, 0), (V5, 1)];

/// A CONNECT that is clean (`clean`) and, on v5, keeps the session `expiry` seconds.
fn connect_as(version: ProtocolVersion, id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect(version, id, clean);
    if version == V5 {
        c.properties.session_expiry_interval = Some(expiry);
    }
    c
}

/// A persistent session on v3.1.1 is Clean Session 0; on v5 Clean Start 0 with an expiry.
fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    connect_as(version, id, false, 600)
}

/// A session that ends with its connection: Clean Session 1 (v3.1.1); Clean Start 1 and
/// Session Expiry 0 (v5).
fn ephemeral(version: ProtocolVersion, id: &str) -> Connect {
    connect_as(version, id, true, 0)
}

/// Two shards with a watcher of `will/#` and a publisher, both on shard 1.
fn setup() -> (Cluster, ConnId, ConnId) {
    let mut c = Cluster::new(2);
    let watch = c.connect(1, V5, "watch", true);
    c.subscribe(watch, "will/#", QoS::AtMostOnce);
    let p = c.connect(1, V5, "pub", true);
    (c, watch, p)
}

fn with_will(mut cn: Connect, delay: Option<u32>) -> Connect {
    let mut w = will("will/t", b"gone", None);
    if cn.version == V5 {
        w.properties.will_delay_interval = delay;
    }
    cn.will = Some(w);
    cn
}

/// v3.1.1 [MQTT-3.1.2-6], [MQTT-3.2.2-3]; v5 [MQTT-3.1.4-3], [MQTT-3.1.2-6],
/// [MQTT-3.2.2-3]: a session that ends with its connection (Clean Session 1; v5 Session
/// Expiry 0) is over once a second connection takes over, so a persistent CONNECT finds no
/// session: Session Present 0, no subscriptions, and the old connection's Will (even a
/// delayed one: the session ended) is published.
#[test]
fn clean_connected_persistent_takeover_finds_no_session() {
    for (version, shard) in CASES {
        let (mut c, watch, p) = setup();
        let (old, _) = c.connect_with(0, with_will(ephemeral(version, "x"), Some(30)));
        c.subscribe(old, "t", QoS::AtLeastOnce);
        let (new, ack) = c.connect_with(shard, persistent(version, "x"));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        assert!(
            !ack.session_present,
            "{version:?} shard {shard}: nothing to resume"
        );
        assert!(c.is_closed(old));
        let wills: Vec<_> = c.publishes(watch, true);
        assert_eq!(wills.len(), 1, "{version:?} shard {shard}: the will is due");
        c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
        assert!(
            c.publishes(new, true).is_empty(),
            "{version:?} shard {shard}: the old subscription is gone"
        );
        // The new session is persistent: it outlives its connection.
        c.drop_conn(new);
        let (_, ack) = c.connect_with(1, persistent(version, "x"));
        assert!(ack.session_present, "{version:?} shard {shard}");
    }
}

/// v3.1.1 [MQTT-3.1.2-6]; v5 [MQTT-3.1.2-4]: a clean CONNECT taking over a persistent session
/// discards it (Session Present 0, v5 [MQTT-3.2.2-2]); the old connection's Will is published,
/// a delayed one too, since its session ended.
#[test]
fn persistent_connected_clean_takeover_discards() {
    for (version, shard) in CASES {
        let (mut c, watch, p) = setup();
        let (old, _) = c.connect_with(0, with_will(persistent(version, "x"), Some(30)));
        c.subscribe(old, "t", QoS::AtLeastOnce);
        let (new, ack) = c.connect_with(shard, ephemeral(version, "x"));
        assert!(!ack.session_present, "{version:?} shard {shard}");
        assert!(c.is_closed(old));
        assert_eq!(
            c.publishes(watch, true).len(),
            1,
            "{version:?} shard {shard}"
        );
        c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
        assert!(
            c.publishes(new, true).is_empty(),
            "{version:?} shard {shard}"
        );
    }
}

/// v3.1.1 [MQTT-3.1.2-4], [MQTT-3.2.2-2]; v5 [MQTT-3.1.2-5], [MQTT-3.2.2-3]: a persistent
/// CONNECT taking over a persistent session resumes it (Session Present 1, subscriptions and
/// inflight messages kept). The old connection's Will without delay is published; v5
/// [MQTT-3.1.3-9]: a delayed one is not, as the session was resumed in time.
#[test]
fn persistent_connected_persistent_takeover_resumes() {
    for (version, shard) in CASES {
        for delay in [None, Some(30)] {
            if version == V311 && delay.is_some() {
                continue;
            }
            let (mut c, watch, p) = setup();
            let (old, _) = c.connect_with(0, with_will(persistent(version, "x"), delay));
            c.subscribe(old, "t", QoS::AtLeastOnce);
            c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
            assert_eq!(c.publishes(old, false).len(), 1, "unacknowledged");
            let (new, ack) = c.connect_with(shard, persistent(version, "x"));
            assert!(ack.session_present, "{version:?} shard {shard}");
            let got = c.publishes(new, true);
            assert_eq!(got.len(), 1, "{version:?} shard {shard}: inflight resent");
            assert!(got[0].dup);
            c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
            assert_eq!(c.publishes(new, true).len(), 1, "subscription kept");
            c.advance(60_000);
            let wills = c.publishes(watch, true).len();
            assert_eq!(
                wills,
                usize::from(delay.is_none()),
                "{version:?} shard {shard} delay {delay:?}"
            );
        }
    }
}

/// v5 3.1.2.11.2: the Session Expiry Interval of the CONNECT that takes over applies to the
/// resumed session, shorter (here 0: the session now ends with the new connection) or
/// longer than before.
#[test]
fn persistent_connected_takeover_changes_expiry() {
    for shard in [0, 1] {
        let (mut c, _, _) = setup();
        let (a, _) = c.connect_with(0, connect_as(V5, "x", false, 100));
        c.subscribe(a, "t", QoS::AtLeastOnce);
        let (b, ack) = c.connect_with(shard, connect_as(V5, "x", false, 0));
        assert!(ack.session_present, "shard {shard}");
        c.drop_conn(b);
        let (_, ack) = c.connect_with(shard, connect_as(V5, "x", false, 10));
        assert!(!ack.session_present, "shard {shard}: expiry 0 ended it");

        let (mut c, _, _) = setup();
        let (a, _) = c.connect_with(0, connect_as(V5, "y", false, 10));
        c.subscribe(a, "t", QoS::AtLeastOnce);
        let (b, ack) = c.connect_with(shard, connect_as(V5, "y", false, 1000));
        assert!(ack.session_present, "shard {shard}");
        c.drop_conn(b);
        c.advance(60_000);
        let (_, ack) = c.connect_with(shard, connect_as(V5, "y", false, 1000));
        assert!(
            ack.session_present,
            "shard {shard}: the longer expiry applies"
        );
    }
}

/// A client id homed at `home` among `n` shards.
fn id_homed_at(home: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("raced-{i}"))
        .find(|id| tachyon_engine::home_shard(id.as_bytes(), n) == home)
        .expect("some id is homed there")
}

/// The same rules when the connections race: a persistent session S is connected; a clean
/// CONNECT (B) claims it, and before B's claim completes a persistent CONNECT (C) claims
/// again. B came first, so its Clean Start ended S (v3.1.1 [MQTT-3.1.2-6]; v5
/// [MQTT-3.1.2-4]), and B's own session ends with B's connection: C finds no session
/// (Session Present 0, v5 [MQTT-3.2.2-3]) and S's subscription is gone; S's Will is published
/// once. B is closed without a CONNACK.
#[test]
fn clean_claim_in_flight_then_persistent_takeover_finds_no_session() {
    for version in [V311, V5] {
        let mut c = Cluster::new(3);
        let watch = c.connect(0, V5, "watch", true);
        c.subscribe(watch, "will/#", QoS::AtMostOnce);
        let p = c.connect(0, V5, "pub", true);
        let id = id_homed_at(2, 3);
        let (a, _) = c.connect_with(0, with_will(persistent(version, &id), None));
        c.subscribe(a, "t", QoS::AtLeastOnce);
        // B (clean) and C (persistent) on shard 1; the home shard's mail is held until
        // both claims reached it.
        let b = c.open_holding(1, version, 2);
        c.send_holding(b, &Packet::Connect(Box::new(ephemeral(version, &id))), 2);
        let cc = c.open_holding(1, version, 2);
        c.send_holding(cc, &Packet::Connect(Box::new(persistent(version, &id))), 2);
        c.pump();
        let got = c.recv(cc);
        assert!(
            matches!(got.first(), Some(Packet::ConnAck(ack)) if ack.reason == ReasonCode::SUCCESS && !ack.session_present),
            "{version:?}: {got:?}"
        );
        assert!(c.is_closed(a) && c.is_closed(b), "{version:?}");
        assert!(
            !c.recv(b).iter().any(|p| matches!(p, Packet::ConnAck(_))),
            "{version:?}: B never got a CONNACK"
        );
        assert_eq!(
            c.publishes(watch, true).len(),
            1,
            "{version:?}: A's will once"
        );
        c.publish(p, "t", b"x", QoS::AtLeastOnce, false, 1);
        assert!(c.publishes(cc, true).is_empty(), "{version:?}: S ended");
    }
}
