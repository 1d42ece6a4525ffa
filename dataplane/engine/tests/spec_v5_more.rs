//! More MQTT 5.0 behaviour, each test citing the normative statements it checks.

mod common;

use bytes::BytesMut;
use common::*;
use tachyon_codec::ProtocolVersion::V5;
use tachyon_codec::*;
use tachyon_engine::{ConnId, EngineConfig};

fn connect_expiry(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect(V5, id, clean);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

fn connect_rm(id: &str, clean: bool, expiry: u32, receive_maximum: u16) -> Connect {
    let mut c = connect_expiry(id, clean, expiry);
    c.properties.receive_maximum = Some(receive_maximum);
    c
}

fn encoded(packets: &[Packet]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for p in packets {
        encode(p, V5, &mut b).unwrap();
    }
    b.to_vec()
}

fn puback(id: u16, reason: ReasonCode) -> Packet {
    Packet::PubAck(PubResp::new(pid(id), reason))
}

fn pubrec(id: u16, reason: ReasonCode) -> Packet {
    Packet::PubRec(PubResp::new(pid(id), reason))
}

fn pubrel(id: u16) -> Packet {
    Packet::PubRel(PubResp::new(pid(id), ReasonCode::SUCCESS))
}

fn pubcomp(id: u16) -> Packet {
    Packet::PubComp(PubResp::new(pid(id), ReasonCode::SUCCESS))
}

fn subscribe_packet(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|(f, q)| {
                (
                    s(f),
                    SubscriptionOptions {
                        qos: *q,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

fn unsubscribe_packet(id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        properties: Properties::default(),
        filters: filters.iter().map(|f| s(f)).collect(),
    })
}

fn id_of(p: &Publish) -> u16 {
    p.packet_id.expect("QoS > 0 has a packet id").get()
}

fn payloads(got: &[Publish]) -> Vec<&[u8]> {
    got.iter().map(|m| &m.payload[..]).collect()
}

/// Feeds `bytes` from `from` to its shard and returns the raw bytes the engine queued for
/// `watch` during that call (before the harness decodes anything). For one-shard clusters,
/// where the whole exchange happens inside the call.
fn raw_output(c: &mut Cluster, from: ConnId, bytes: &[u8], watch: ConnId) -> Vec<u8> {
    let shard = c.clients[&from].shard;
    let now = c.now;
    let mut rx = BytesMut::from(bytes);
    c.engines[shard].handle_bytes(now, from, &mut rx);
    let mut out = Vec::new();
    if let Some(q) = c.engines[shard].out_queue(watch) {
        for ch in q.chunks() {
            out.extend_from_slice(ch);
        }
        let n = q.len_bytes();
        q.consume(n);
    }
    c.pump();
    out
}

/// Feeds bytes to a shard without moving anything else yet.
fn feed(c: &mut Cluster, from: ConnId, packets: &[Packet]) {
    let shard = c.clients[&from].shard;
    let now = c.now;
    let mut rx = BytesMut::from(&encoded(packets)[..]);
    c.engines[shard].handle_bytes(now, from, &mut rx);
}

// ---------------------------------------------------------------------------- packet ids

/// v5 [MQTT-2.2.1-2], [MQTT-4.3.1-1]: a QoS 0 PUBLISH from the server has no Packet
/// Identifier and DUP 0, also when it carries a QoS 1 message (sent with DUP 1) downgraded by
/// a QoS 0 subscription.
#[test]
fn qos0_subscription_publish_has_no_packet_id_and_dup_0() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V5, "s", true);
    c.subscribe(sub, "t", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"x", QoS::AtLeastOnce, false, 7);
    m.dup = true;
    let raw = raw_output(&mut c, p, &encoded(&[Packet::Publish(m)]), sub);
    // 0x30: PUBLISH, DUP 0, QoS 0, RETAIN 0; Topic "t"; Property Length 0; payload "x".
    assert_eq!(raw, vec![0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x']);
    let m = publish("t", b"y", QoS::AtMostOnce, false, 0);
    let raw = raw_output(&mut c, p, &encoded(&[Packet::Publish(m)]), sub);
    assert_eq!(raw, vec![0x30, 0x05, 0x00, 0x01, b't', 0x00, b'y']);
}

/// v5 [MQTT-2.2.1-4], [MQTT-4.3.2-1], [MQTT-4.3.3-1]: every new QoS 1/2 PUBLISH to a client
/// gets a non-zero Packet Identifier that no unacknowledged PUBLISH (or PUBREL) of that
/// session uses; after the identifiers wrap past 65535 the ones still held are skipped.
#[test]
fn inflight_ids_unique_and_held_ids_skipped_after_wrap() {
    // Lift the server's own window cap so that batches of 1000 stay unacknowledged.
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            inflight_max: u16::MAX,
            ..Default::default()
        },
    );
    let sub = c.connect(0, V5, "s", true);
    c.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    // Held for the whole test: a QoS 1 PUBLISH never acknowledged and a QoS 2 one whose
    // PUBREL is never completed.
    c.publish(p, "t", b"held1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"held2", QoS::ExactlyOnce, false, 2);
    c.send(p, &pubrel(2));
    let held = c.publishes(sub, false);
    assert_eq!(held.len(), 2);
    let (h1, h2) = (id_of(&held[0]), id_of(&held[1]));
    assert_ne!(h1, h2);
    c.send(sub, &pubrec(h2, ReasonCode::SUCCESS));
    assert_eq!(c.recv(sub), vec![pubrel(h2)]);

    let mut sent = 0u32;
    let mut wrapped = false;
    let mut last = 0u16;
    while sent < 66_000 {
        let batch: Vec<Packet> = (0..1000u32)
            .map(|i| {
                let id = ((sent + i) % 65_535 + 1) as u16;
                Packet::Publish(publish("t", b"n", QoS::AtLeastOnce, false, id))
            })
            .collect();
        c.send_bytes(p, &encoded(&batch));
        let _ = c.recv(p);
        let got = c.publishes(sub, false);
        assert_eq!(got.len(), 1000);
        let mut seen = std::collections::HashSet::new();
        for m in &got {
            let id = id_of(m);
            assert!(id != h1 && id != h2, "id {id} is still in use");
            assert!(seen.insert(id), "id {id} given twice while unacknowledged");
            if id < last {
                wrapped = true;
            }
            last = id;
        }
        let acks: Vec<Packet> = got
            .iter()
            .map(|m| puback(id_of(m), ReasonCode::SUCCESS))
            .collect();
        c.send_bytes(sub, &encoded(&acks));
        sent += 1000;
    }
    assert!(wrapped, "the identifiers wrapped around");
}

/// v5 [MQTT-2.2.1-6], [MQTT-3.8.4-1], [MQTT-3.8.4-2]: every SUBSCRIBE is answered by a SUBACK
/// with its Packet Identifier, also one whose only filter fails.
#[test]
fn subscribe_any_packet_id_answered_by_suback_with_that_id() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    for id in [1u16, 0x1234, 0xFFFF] {
        c.send(a, &subscribe_packet(id, &[("t", QoS::AtLeastOnce)]));
        let got = c.recv(a);
        assert!(
            matches!(&got[..], [Packet::SubAck(x)] if x.packet_id == pid(id) && x.reasons == vec![ReasonCode::GRANTED_QOS_1]),
            "{got:?}"
        );
    }
    // Refused by policy (more than `limits.max_topic_levels` levels).
    let deep = "l/".repeat(200) + "l";
    c.send(
        a,
        &subscribe_packet(0xBEEF, &[(deep.as_str(), QoS::AtMostOnce)]),
    );
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(x)] if x.packet_id == pid(0xBEEF) && x.reasons == vec![ReasonCode::TOPIC_FILTER_INVALID]),
        "{got:?}"
    );
}

/// v5 [MQTT-2.2.1-6], [MQTT-3.10.4-5]: UNSUBACK carries the UNSUBSCRIBE's Packet Identifier,
/// and is sent even when no subscription is deleted.
#[test]
fn unsubscribe_answered_by_unsuback_with_same_id_even_if_nothing_deleted() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe(a, "t", QoS::AtMostOnce);
    c.send(a, &unsubscribe_packet(0x4321, &["t"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.packet_id == pid(0x4321) && u.reasons == vec![ReasonCode::SUCCESS]),
        "{got:?}"
    );
    c.send(a, &unsubscribe_packet(0xFFFF, &["never/subscribed"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.packet_id == pid(0xFFFF) && u.reasons == vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]),
        "{got:?}"
    );
}

// ---------------------------------------------------------------------------- CONNECT

/// v5 [MQTT-3.1.2-6]: Clean Start 0 without a session for the Client Identifier creates a new
/// one (Session Present 0), which then keeps subscriptions and messages like any session.
#[test]
fn no_session_clean_start_0_creates_new_session() {
    let mut c = Cluster::new(1);
    assert_eq!(c.engines[0].session_count(), 0);
    let (a, ack) = c.connect_with(0, connect_expiry("fresh", false, 100));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    assert_eq!(c.engines[0].session_count(), 1);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"kept", QoS::AtLeastOnce, false, 1);
    let (b, ack) = c.connect_with(0, connect_expiry("fresh", false, 100));
    assert!(ack.session_present);
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"kept"[..]]);
}

/// v5 [MQTT-3.1.2-7]: the Will Message of CONNECT is stored with the session: an abnormal
/// close after other traffic publishes it as given (topic, payload, QoS, RETAIN), and a
/// delayed Will still pending when the session is discarded by a new Clean Start is published
/// then.
#[test]
fn will_flag_stores_will_with_session() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtLeastOnce);
    let mut cn = connect(V5, "d", true);
    let mut wm = will("will/d", b"bye", None);
    wm.qos = QoS::AtLeastOnce;
    wm.retain = true;
    cn.will = Some(wm);
    let (d, _) = c.connect_with(0, cn);
    c.subscribe(d, "x", QoS::AtLeastOnce);
    c.publish(d, "x", b"traffic", QoS::AtLeastOnce, false, 3);
    let _ = c.recv(d);
    assert!(c.publishes(w, true).is_empty());
    c.drop_conn(d);
    let got = c.publishes(w, true);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), &got[0].payload[..], got[0].qos),
        ("will/d", &b"bye"[..], QoS::AtLeastOnce)
    );
    let late = c.connect(0, V5, "late", true);
    c.subscribe(late, "will/d", QoS::AtLeastOnce);
    let got = c.publishes(late, true);
    assert!(
        got.len() == 1 && got[0].retain && &got[0].payload[..] == b"bye",
        "{got:?}"
    );

    // A delayed Will belongs to the session: discarding the session publishes it at once.
    let mut cn = connect_expiry("e", false, 100);
    cn.will = Some(will("will/e", b"session", Some(60)));
    let (e, _) = c.connect_with(0, cn);
    c.drop_conn(e);
    assert!(c.publishes(w, true).is_empty(), "delayed");
    let (_e, ack) = c.connect_with(0, connect_expiry("e", true, 100));
    assert!(!ack.session_present);
    let got = c.publishes(w, true);
    assert_eq!(payloads(&got), vec![&b"session"[..]]);
}

/// v5 [MQTT-3.1.2-26], [MQTT-3.3.2-11]: outbound Topic Aliases never exceed the client's Topic
/// Alias Maximum (and are used correctly up to it); without a Topic Alias Maximum none are
/// sent.
#[test]
fn outbound_topic_alias_never_above_client_maximum() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "two", true);
    cn.properties.topic_alias_maximum = Some(2);
    let (two, _) = c.connect_with(0, cn);
    c.subscribe(two, "#", QoS::AtMostOnce);
    let none = c.connect(0, V5, "none", true);
    c.subscribe(none, "#", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    let topics = ["a", "b", "c", "d", "a", "b", "c", "d", "e", "a"];
    for t in topics {
        c.publish(p, t, b"x", QoS::AtMostOnce, false, 0);
    }
    let got = c.publishes(two, true);
    assert_eq!(got.len(), topics.len());
    let mut map: std::collections::HashMap<u16, String> = Default::default();
    let mut used = std::collections::BTreeSet::new();
    for (m, want) in got.iter().zip(topics) {
        let topic = match m.properties.topic_alias {
            Some(a) => {
                assert!((1..=2).contains(&a), "alias {a} above the maximum 2");
                used.insert(a);
                if !m.topic.is_empty() {
                    map.insert(a, m.topic.as_str().to_string());
                }
                map[&a].clone()
            }
            None => m.topic.as_str().to_string(),
        };
        assert_eq!(topic, want);
    }
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    let got = c.publishes(none, true);
    assert_eq!(got.len(), topics.len());
    for (m, want) in got.iter().zip(topics) {
        assert_eq!(m.properties.topic_alias, None);
        assert_eq!(m.topic.as_str(), want);
    }
}

/// v5 [MQTT-3.1.2-28]: Request Response Information 0 (stated or absent): CONNACK has no
/// Response Information.
#[test]
fn request_response_information_0_gets_no_response_information() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "r0", true);
    cn.properties.request_response_information = Some(0);
    let (_, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.response_information, None);
    let (_, ack) = c.connect_with(0, connect(V5, "absent", true));
    assert_eq!(ack.properties.response_information, None);
}

/// v5 [MQTT-3.1.3-5]: Client Identifiers of 1 to 23 characters from 0-9, a-z, A-Z are accepted
/// and used as given (no Assigned Client Identifier; reusing one takes the session over).
#[test]
fn client_ids_1_to_23_alphanumeric_accepted() {
    let mut c = Cluster::new(2);
    let ids = [
        "0",
        "a",
        "Z",
        "aZ09",
        "abcdefghijklmnopqrstuvw",
        "ABCDEFGHIJKLMNOPQRSTUVW",
        "01234567890123456789012",
    ];
    let mut conns = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (conn, ack) = c.connect_with(i % 2, connect_expiry(id, false, 10));
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{id}");
        assert_eq!(ack.properties.assigned_client_identifier, None, "{id}");
        conns.push(conn);
    }
    assert!(conns.iter().all(|&x| !c.is_closed(x)));
    let (_, ack) = c.connect_with(1, connect_expiry("abcdefghijklmnopqrstuvw", false, 10));
    assert!(ack.session_present);
    assert_eq!(
        disconnect_reason(&c.recv(conns[4])),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
}

/// v5 [MQTT-3.1.3-10]: the Will Message is published with its User Properties in order.
#[test]
fn will_user_properties_keep_order() {
    let mut c = Cluster::new(2);
    let w = c.connect(1, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut cn = connect(V5, "d", true);
    let mut wm = will("will/d", b"bye", None);
    let props = vec![
        (s("k"), s("2")),
        (s("a"), s("1")),
        (s("k"), s("1")),
        (s("z"), s("0")),
    ];
    wm.properties.user_properties = props.clone();
    cn.will = Some(wm);
    let (d, _) = c.connect_with(0, cn);
    c.drop_conn(d);
    let got = c.publishes(w, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.user_properties, props);
}

/// v5 [MQTT-3.1.4-4]: CONNECT applies Clean Start as 3.1.2.4 says: 0 resumes the session with
/// its unacknowledged and queued messages and subscriptions, 1 discards all of them.
#[test]
fn connect_processes_clean_start() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("cs", false, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"m1", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(a, false).len(), 1, "m1 left unacknowledged");
    c.drop_conn(a);
    c.publish(p, "t", b"m2", QoS::AtLeastOnce, false, 2);

    let (b, ack) = c.connect_with(0, connect_expiry("cs", false, 100));
    assert!(ack.session_present);
    let got = c.publishes(b, false);
    assert_eq!(payloads(&got), vec![&b"m1"[..], &b"m2"[..]]);
    assert!(got[0].dup && !got[1].dup);
    c.drop_conn(b);
    c.publish(p, "t", b"m3", QoS::AtLeastOnce, false, 3);

    let (d, ack) = c.connect_with(0, connect_expiry("cs", true, 100));
    assert!(!ack.session_present);
    assert!(c.recv(d).is_empty(), "nothing of the old session");
    c.publish(p, "t", b"m4", QoS::AtLeastOnce, false, 4);
    assert!(c.publishes(d, true).is_empty(), "subscription discarded");
}

/// v5 [MQTT-3.1.4-6]: after a refused CONNECT, nothing the client sent behind it is processed:
/// no subscription, no message, no retained message, no answer.
#[test]
fn refused_connect_following_packets_not_processed() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "w", true);
    c.subscribe(w, "#", QoS::AtLeastOnce);
    let conn = c.open(0, V5);
    let mut cn = connect(V5, "bad", true);
    cn.properties.authentication_method = Some(s("SCRAM-SHA-1"));
    let bytes = encoded(&[
        Packet::Connect(Box::new(cn)),
        subscribe_packet(2, &[("#", QoS::AtLeastOnce)]),
        Packet::Publish(publish("r", b"retained", QoS::AtLeastOnce, true, 3)),
        Packet::Publish(publish("r", b"qos0", QoS::AtMostOnce, false, 0)),
        Packet::PingReq,
    ]);
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::BAD_AUTHENTICATION_METHOD),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
    assert!(c.publishes(w, true).is_empty());
    assert_eq!(c.engines[0].retained_count(), 0);
    assert_eq!(c.engines[0].session_count(), 1, "only the watcher's");
}

// ---------------------------------------------------------------------------- CONNACK

/// v5 [MQTT-3.2.0-1]: CONNACK 0x00 is the first packet on the connection, ahead of queued
/// messages and of the answers to packets pipelined behind CONNECT, also when the session
/// comes from another shard.
#[test]
fn connack_first_before_queued_messages_and_pipelined_answers() {
    let mut c = Cluster::new(2);
    let (a, _) = c.connect_with(0, connect_expiry("q", false, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    let p = c.connect(1, V5, "p", true);
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"2", QoS::AtMostOnce, false, 0);
    let conn = c.open(1, V5);
    let bytes = encoded(&[
        Packet::Connect(Box::new(connect_expiry("q", false, 100))),
        Packet::PingReq,
        subscribe_packet(9, &[("u", QoS::AtMostOnce)]),
    ]);
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[0], Packet::ConnAck(x) if x.reason == ReasonCode::SUCCESS && x.session_present),
        "{got:?}"
    );
    assert_eq!(got.len(), 4, "{got:?}"); // CONNACK, the queued QoS 1 message, PINGRESP, SUBACK
    assert!(got[1..].iter().any(|p| matches!(p, Packet::Publish(_))));
    assert!(got[1..].contains(&Packet::PingResp));
}

/// What a connection may receive around its CONNACK (v5 [MQTT-3.2.0-1], [MQTT-3.2.0-2],
/// [MQTT-3.14.0-1]): nothing before a CONNACK, at most one CONNACK, and nothing after it
/// unless it is 0x00.
fn assert_connack_comes_first(got: &[Packet]) {
    let connacks = got
        .iter()
        .filter(|p| matches!(p, Packet::ConnAck(_)))
        .count();
    assert!(connacks <= 1, "one CONNACK at most: {got:?}");
    match got.first() {
        None => {}
        Some(Packet::ConnAck(a)) => assert!(
            got.len() == 1 || a.reason == ReasonCode::SUCCESS,
            "nothing after a refusing CONNACK: {got:?}"
        ),
        Some(_) => panic!("the first packet must be CONNACK: {got:?}"),
    }
}

/// v5 [MQTT-3.2.0-1], [MQTT-3.2.0-2], [MQTT-3.14.0-1]: a second CONNECT pipelined right behind
/// the first (before CONNACK) is a Protocol Error, but the server sends nothing before a
/// CONNACK (no DISCONNECT ahead of it) and never a second CONNACK.
#[test]
fn claiming_second_connect_nothing_before_connack() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V5);
    let bytes = encoded(&[
        Packet::Connect(Box::new(connect(V5, "twice", true))),
        Packet::Connect(Box::new(connect(V5, "twice", true))),
    ]);
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(c.is_closed(conn));
    assert_connack_comes_first(&got);
}

/// v5 [MQTT-3.2.0-1], [MQTT-3.14.0-1]: too many packets pipelined while the session is being
/// claimed from a slow home shard: whatever the server does, it sends nothing before a CONNACK
/// (no DISCONNECT 0x97 ahead of it).
#[test]
fn claiming_too_many_pipelined_packets_nothing_before_connack() {
    let mut c = Cluster::new(2);
    let id = (0..)
        .map(|i| format!("slow{i}"))
        .find(|id| tachyon_engine::home_shard(id.as_bytes(), 2) == 1)
        .unwrap();
    let conn = c.open(0, V5);
    let mut packets = vec![Packet::Connect(Box::new(connect(V5, &id, true)))];
    packets.extend((0..1100).map(|_| Packet::PingReq));
    // The home shard's answer (mail from shard 1) is held back: the claim is pending.
    c.send_bytes_holding(conn, &encoded(&packets), 1);
    let early = c.recv(conn);
    c.pump();
    let mut got = early;
    got.extend(c.recv(conn));
    assert_connack_comes_first(&got);
}

/// v5 [MQTT-3.2.0-2]: a CONNECT on a connected connection is answered without a second
/// CONNACK.
#[test]
fn connected_second_connect_gets_no_second_connack() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "once", true);
    c.send(a, &Packet::Connect(Box::new(connect(V5, "once", true))));
    let got = c.recv(a);
    assert!(
        !got.iter().any(|p| matches!(p, Packet::ConnAck(_))),
        "{got:?}"
    );
    assert_eq!(disconnect_reason(&got), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(c.is_closed(a));
}

/// v5 [MQTT-3.2.2-6]: a refusing CONNACK has Session Present 0 even though a session exists
/// for the Client Identifier; v5 [MQTT-3.2.2-7], [MQTT-4.13.2-1]: the connection then closes.
#[test]
fn stored_session_refused_connack_session_present_0_then_close() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("x", false, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    assert_eq!(c.engines[0].session_count(), 1);
    let mut cn = connect_expiry("x", false, 100);
    cn.properties.authentication_method = Some(s("KERBEROS"));
    let (conn, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(!ack.session_present);
    assert!(c.is_closed(conn));

    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            allow_anonymous: false,
            ..EngineConfig::default()
        },
    );
    let mut cn = connect(V5, "u", false);
    cn.username = Some(s("user"));
    cn.password = Some(bytes::Bytes::from_static(b"pw"));
    let (conn, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(!ack.session_present);
    assert!(c.is_closed(conn));
}

// ---------------------------------------------------------------------------- PUBLISH

/// v5 [MQTT-3.3.1-1]: QoS 1 and QoS 2 PUBLISHes sent again on resume have DUP 1 and keep their
/// Packet Identifiers.
#[test]
fn resumed_session_redelivery_sets_dup() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("r", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"q1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"q2", QoS::ExactlyOnce, false, 2);
    let first = c.publishes(a, false);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|m| !m.dup));
    c.drop_conn(a);
    let (b, _) = c.connect_with(0, connect_expiry("r", false, 100));
    let again = c.publishes(b, false);
    assert_eq!(again.len(), 2);
    for (x, y) in first.iter().zip(&again) {
        assert!(y.dup, "{y:?}");
        assert_eq!(
            (x.packet_id, &x.payload, x.qos),
            (y.packet_id, &y.payload, y.qos)
        );
    }
}

/// v5 [MQTT-3.3.1-3]: outgoing DUP depends only on whether the server retransmits: a DUP 1
/// PUBLISH from the publisher goes out with DUP 0, and the server's own retransmission of it
/// has DUP 1.
#[test]
fn outgoing_dup_independent_of_incoming_dup() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("r", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"dup-in", QoS::AtLeastOnce, false, 1);
    m.dup = true;
    c.send(p, &Packet::Publish(m));
    let mut m = publish("t", b"dup-in-2", QoS::ExactlyOnce, false, 2);
    m.dup = true;
    c.send(p, &Packet::Publish(m));
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| !m.dup), "{got:?}");
    c.drop_conn(a);
    let (b, _) = c.connect_with(0, connect_expiry("r", false, 100));
    let got = c.publishes(b, true);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.dup), "{got:?}");
    c.publish(p, "t", b"plain", QoS::AtLeastOnce, false, 3);
    let got = c.publishes(b, true);
    assert!(got.len() == 1 && !got[0].dup, "{got:?}");
}

/// v5 [MQTT-3.3.4-1]: the answer follows the PUBLISH's QoS (Table 3-3): none for QoS 0,
/// PUBACK for QoS 1, PUBREC (then PUBCOMP for PUBREL) for QoS 2.
#[test]
fn publish_answer_follows_qos() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"0", QoS::AtMostOnce, false, 0);
    assert!(c.recv(p).is_empty());
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 3);
    let got = c.recv(p);
    assert!(
        matches!(&got[..], [Packet::PubAck(r)] if r.packet_id == pid(3) && !r.reason.is_error()),
        "{got:?}"
    );
    c.publish(p, "t", b"2", QoS::ExactlyOnce, false, 4);
    let got = c.recv(p);
    assert!(
        matches!(&got[..], [Packet::PubRec(r)] if r.packet_id == pid(4) && !r.reason.is_error()),
        "{got:?}"
    );
    c.send(p, &pubrel(4));
    assert_eq!(c.recv(p), vec![pubcomp(4)]);
}

/// v5 [MQTT-3.3.4-9], [MQTT-4.9.0-2]: at most Receive Maximum QoS 1/2 PUBLISHes are
/// unacknowledged at a time; a QoS 2 one holds its place after PUBREC 0x00 until PUBCOMP, and a
/// PUBREC of 0x80 or more frees it.
#[test]
fn receive_maximum_counts_qos2_until_pubcomp_or_error_pubrec() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_rm("s", true, 0, 2));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=5u16 {
        c.publish(p, "t", &[i as u8], QoS::ExactlyOnce, false, i);
        c.send(p, &pubrel(i));
    }
    let w = c.publishes(a, false);
    assert_eq!(payloads(&w), vec![&[1u8][..], &[2u8][..]]);
    let (i1, i2) = (id_of(&w[0]), id_of(&w[1]));
    c.send_bytes(
        a,
        &encoded(&[
            pubrec(i1, ReasonCode::SUCCESS),
            pubrec(i2, ReasonCode::SUCCESS),
        ]),
    );
    assert_eq!(c.recv(a), vec![pubrel(i1), pubrel(i2)], "no PUBLISH yet");
    c.send(a, &pubcomp(i1));
    let w = c.publishes(a, false);
    assert_eq!(payloads(&w), vec![&[3u8][..]]);
    c.send(a, &pubrec(id_of(&w[0]), ReasonCode::UNSPECIFIED_ERROR));
    let w = c.publishes(a, false);
    assert_eq!(
        payloads(&w),
        vec![&[4u8][..]],
        "an error PUBREC frees the place"
    );
    assert!(c.recv(a).is_empty(), "window full: {i2} and message 4");
    c.send(a, &pubcomp(i2));
    assert_eq!(payloads(&c.publishes(a, false)), vec![&[5u8][..]]);
}

/// v5 [MQTT-4.9.0-1]: the initial send quota is non-zero and at most the client's Receive
/// Maximum: with 1 the first message goes out at once and the next waits; with 3, three do.
#[test]
fn initial_send_quota_is_receive_maximum() {
    for rm in [1u16, 3] {
        let mut c = Cluster::new(1);
        let (a, _) = c.connect_with(0, connect_rm("s", true, 0, rm));
        c.subscribe(a, "t", QoS::AtLeastOnce);
        let p = c.connect(0, V5, "p", true);
        for i in 1..=5u16 {
            c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
        }
        let got = c.publishes(a, false);
        assert_eq!(got.len(), rm as usize, "Receive Maximum {rm}");
    }
}

/// v5 [MQTT-3.3.4-10], [MQTT-4.9.0-3]: with the send quota at zero the server still answers
/// every other packet at once (PINGRESP, SUBACK, UNSUBACK, PUBACK, PUBREC, PUBCOMP), and only
/// the QoS 1 PUBLISH waits.
#[test]
fn send_quota_zero_other_packets_answered_at_once() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_rm("s", true, 0, 1));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
    let first = c.publishes(a, false);
    assert_eq!(first.len(), 1, "quota now zero");
    let bytes = encoded(&[
        Packet::PingReq,
        subscribe_packet(5, &[("u", QoS::AtMostOnce)]),
        unsubscribe_packet(6, &["u"]),
        Packet::Publish(publish("x", b"q1", QoS::AtLeastOnce, false, 7)),
        Packet::Publish(publish("x", b"q2", QoS::ExactlyOnce, false, 8)),
        pubrel(8),
    ]);
    c.send_bytes(a, &bytes);
    let got = c.recv(a);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0], Packet::PingResp);
    assert!(matches!(&got[1], Packet::SubAck(x) if x.packet_id == pid(5)));
    assert!(matches!(&got[2], Packet::UnsubAck(x) if x.packet_id == pid(6)));
    assert!(matches!(&got[3], Packet::PubAck(x) if x.packet_id == pid(7)));
    assert!(matches!(&got[4], Packet::PubRec(x) if x.packet_id == pid(8)));
    assert!(matches!(&got[5], Packet::PubComp(x) if x.packet_id == pid(8)));
    c.send(a, &puback(id_of(&first[0]), ReasonCode::SUCCESS));
    assert_eq!(payloads(&c.publishes(a, true)), vec![&b"2"[..]]);
}

// ---------------------------------------------------------------------------- SUBSCRIBE

/// v5 [MQTT-3.8.4-5]: a SUBSCRIBE with several filters acts as that many SUBSCRIBEs in order
/// (a filter repeated later replaces the earlier one) answered by a single SUBACK.
#[test]
fn subscribe_several_filters_acts_as_sequence_one_suback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.send(
        a,
        &subscribe_packet(
            3,
            &[
                ("a/+", QoS::ExactlyOnce),
                ("b", QoS::AtLeastOnce),
                ("a/+", QoS::AtMostOnce),
            ],
        ),
    );
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(x)] if x.packet_id == pid(3)
            && x.reasons == vec![ReasonCode::GRANTED_QOS_2, ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_0]),
        "{got:?}"
    );
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "a/x", b"a", QoS::ExactlyOnce, false, 1);
    c.send(p, &pubrel(1));
    c.publish(p, "b", b"b", QoS::ExactlyOnce, false, 2);
    c.send(p, &pubrel(2));
    let got = c.publishes(a, true);
    assert_eq!(got.len(), 2, "one subscription per filter: {got:?}");
    assert_eq!(
        got[0].qos,
        QoS::AtMostOnce,
        "the later a/+ replaced the first"
    );
    assert_eq!(got[1].qos, QoS::AtLeastOnce);
}

/// v5 [MQTT-3.9.3-1]: SUBACK Reason Codes follow the order of the filters (0x8F for those
/// refused by policy: more levels than `limits.max_topic_levels`).
#[test]
fn suback_reason_codes_in_filter_order() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            topic_levels_max: 4,
            ..Default::default()
        },
    );
    let a = c.connect(0, V5, "a", true);
    let filters = [
        ("x/#", QoS::ExactlyOnce),
        ("deep/a/b/c/#", QoS::AtLeastOnce),
        ("y", QoS::AtMostOnce),
        ("$share/g/deep/+/+/+/+", QoS::AtLeastOnce),
        ("$share/g/z", QoS::AtLeastOnce),
    ];
    let want = vec![
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::TOPIC_FILTER_INVALID,
        ReasonCode::GRANTED_QOS_0,
        ReasonCode::TOPIC_FILTER_INVALID,
        ReasonCode::GRANTED_QOS_1,
    ];
    c.send(a, &subscribe_packet(1, &filters));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(x)] if x.reasons == want),
        "{got:?}"
    );
    let rev: Vec<_> = filters.iter().rev().copied().collect();
    let want_rev: Vec<_> = want.iter().rev().copied().collect();
    c.send(a, &subscribe_packet(2, &rev));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(x)] if x.reasons == want_rev),
        "{got:?}"
    );
}

// ---------------------------------------------------------------------------- UNSUBSCRIBE

/// v5 [MQTT-3.10.4-1]: UNSUBSCRIBE deletes only a subscription whose filter is equal character
/// for character: not one it would cover, not one differing in case or a trailing "/"; a
/// shared subscription only by its full "$share/..." filter.
#[test]
fn unsubscribe_deletes_only_exact_filter() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe(a, "a/+", QoS::AtLeastOnce);
    c.subscribe(a, "a/b", QoS::ExactlyOnce);
    c.subscribe(a, "$share/g/c", QoS::AtLeastOnce);
    c.send(
        a,
        &unsubscribe_packet(2, &["a/#", "A/+", "a/+/", "a/b/", "c", "$share/h/c"]),
    );
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::NO_SUBSCRIPTION_EXISTED; 6]),
        "{got:?}"
    );
    let p = c.connect(0, V5, "p", true);
    let mut id = 0;
    // QoS of what one QoS 2 message to `topic` brings (overlapping subscriptions give one
    // message at the highest QoS).
    let mut qos_of_next = |c: &mut Cluster, topic: &str| {
        id += 1;
        c.publish(p, topic, b"x", QoS::ExactlyOnce, false, id);
        c.send(p, &pubrel(id));
        c.publishes(a, true)
            .iter()
            .map(|m| m.qos)
            .collect::<Vec<_>>()
    };
    assert_eq!(qos_of_next(&mut c, "a/b"), vec![QoS::ExactlyOnce]);
    assert_eq!(qos_of_next(&mut c, "c"), vec![QoS::AtLeastOnce]);

    c.send(a, &unsubscribe_packet(3, &["a/b"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::SUCCESS]),
        "{got:?}"
    );
    assert_eq!(
        qos_of_next(&mut c, "a/b"),
        vec![QoS::AtLeastOnce],
        "only a/+ remains"
    );
    c.send(a, &unsubscribe_packet(4, &["a/+", "$share/g/c"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::SUCCESS; 2]),
        "{got:?}"
    );
    assert_eq!(qos_of_next(&mut c, "a/b"), vec![]);
    assert_eq!(qos_of_next(&mut c, "c"), vec![]);
}

/// v5 [MQTT-3.10.4-3]: QoS 1 and QoS 2 messages already being sent when their subscription is
/// removed are delivered to the end: PUBREC still gets PUBREL, and after a reconnect the
/// unacknowledged PUBLISH and the PUBREL are sent again.
#[test]
fn unsubscribe_inflight_deliveries_complete() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"one", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"two", QoS::ExactlyOnce, false, 2);
    let got = c.publishes(a, false);
    assert_eq!(payloads(&got), vec![&b"one"[..], &b"two"[..]]);
    let (i1, i2) = (id_of(&got[0]), id_of(&got[1]));
    c.send(a, &unsubscribe_packet(7, &["t"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::SUCCESS]),
        "{got:?}"
    );
    c.send(a, &pubrec(i2, ReasonCode::SUCCESS));
    assert_eq!(c.recv(a), vec![pubrel(i2)]);
    c.drop_conn(a);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 100));
    let got = c.recv(b);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(
        |x| matches!(x, Packet::Publish(m) if m.dup && id_of(m) == i1 && &m.payload[..] == b"one")
    ));
    assert!(got.contains(&pubrel(i2)));
    c.send_bytes(b, &encoded(&[puback(i1, ReasonCode::SUCCESS), pubcomp(i2)]));
    assert!(c.recv(b).is_empty());
    c.publish(p, "t", b"after", QoS::AtLeastOnce, false, 3);
    assert!(c.publishes(b, true).is_empty(), "unsubscribed");
}

/// v5 [MQTT-3.10.4-6]: an UNSUBSCRIBE with several filters acts as a sequence of UNSUBSCRIBEs
/// answered by one UNSUBACK: a filter repeated after its deletion reports 0x11.
#[test]
fn unsubscribe_several_filters_acts_as_sequence_one_unsuback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe(a, "a", QoS::AtMostOnce);
    c.subscribe(a, "b", QoS::AtMostOnce);
    c.send(a, &unsubscribe_packet(4, &["a", "c", "a", "b"]));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.packet_id == pid(4) && u.reasons == vec![
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::SUCCESS,
        ]),
        "{got:?}"
    );
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "a", b"x", QoS::AtMostOnce, false, 0);
    c.publish(p, "b", b"x", QoS::AtMostOnce, false, 0);
    assert!(c.publishes(a, true).is_empty());
}

// ---------------------------------------------------------------------------- DISCONNECT

/// v5 [MQTT-3.14.2-2]: no DISCONNECT from the server carries a Session Expiry Interval;
/// v5 [MQTT-3.14.4-2], [MQTT-4.13.2-1]: after sending one (all these Reason Codes are 0x80 or
/// more) the server closes the connection. Cases: takeover, shutdown, keep alive, bad Topic
/// Alias, second CONNECT, malformed packet.
#[test]
fn server_disconnect_has_no_session_expiry_and_closes() {
    type Case = (&'static str, ReasonCode, fn(&mut Cluster, ConnId));
    let cases: [Case; 6] = [
        ("takeover", ReasonCode::SESSION_TAKEN_OVER, |c, _| {
            c.connect_with(0, connect_expiry("victim", false, 300));
        }),
        ("shutdown", ReasonCode::SERVER_SHUTTING_DOWN, |c, _| {
            let now = c.now;
            c.engines[0].handle_shutdown(now);
            c.pump();
        }),
        ("keep alive", ReasonCode::KEEP_ALIVE_TIMEOUT, |c, _| {
            c.advance(91_000)
        }),
        ("topic alias", ReasonCode::TOPIC_ALIAS_INVALID, |c, v| {
            let mut m = publish("t", b"x", QoS::AtMostOnce, false, 0);
            m.properties.topic_alias = Some(1000);
            c.send(v, &Packet::Publish(m));
        }),
        ("second connect", ReasonCode::PROTOCOL_ERROR, |c, v| {
            c.send(v, &Packet::Connect(Box::new(connect(V5, "victim", true))))
        }),
        ("malformed", ReasonCode::MALFORMED_PACKET, |c, v| {
            c.send_bytes(v, &[0xC1, 0x00])
        }),
    ];
    for (name, reason, act) in cases {
        let mut c = Cluster::new(1);
        let (v, _) = c.connect_with(0, connect_expiry("victim", false, 300));
        act(&mut c, v);
        let got = c.recv(v);
        let d = got.iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d),
            _ => None,
        });
        let d = d.unwrap_or_else(|| panic!("{name}: no DISCONNECT in {got:?}"));
        assert_eq!(d.reason, reason, "{name}");
        assert_eq!(d.properties.session_expiry_interval, None, "{name}");
        assert!(
            matches!(got.last(), Some(Packet::Disconnect(_))),
            "{name}: {got:?}"
        );
        assert!(c.is_closed(v), "{name}: closed");
    }
}

/// v5 [MQTT-3.14.4-1]: after its DISCONNECT the server sends nothing more on the connection:
/// not the answers to packets behind the offending one, nor messages published to the
/// client's subscription meanwhile (they wait in the session instead).
#[test]
fn server_disconnect_nothing_sent_after_it() {
    let mut c = Cluster::new(1);
    let (v, _) = c.connect_with(0, connect_expiry("v", false, 100));
    c.subscribe(v, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    let mut bad = publish("t", b"x", QoS::AtMostOnce, false, 0);
    bad.properties.topic_alias = Some(1000);
    // The bad packet, then a PINGREQ and a PUBLISH to its own subscription, in one read; then
    // a message from another client before anything is flushed.
    feed(
        &mut c,
        v,
        &[
            Packet::Publish(bad),
            Packet::PingReq,
            Packet::Publish(publish("t", b"own", QoS::AtMostOnce, false, 0)),
        ],
    );
    feed(
        &mut c,
        p,
        &[Packet::Publish(publish(
            "t",
            b"later",
            QoS::AtLeastOnce,
            false,
            1,
        ))],
    );
    c.pump();
    let got = c.recv(v);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        disconnect_reason(&got),
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
    assert!(c.is_closed(v));
    let (v2, ack) = c.connect_with(0, connect_expiry("v", false, 100));
    assert!(ack.session_present);
    assert_eq!(payloads(&c.publishes(v2, true)), vec![&b"later"[..]]);
}

// ---------------------------------------------------------------------------- sessions

/// v5 [MQTT-4.1.0-1]: while the connection is open the session is kept, whatever its Session
/// Expiry Interval (0 or 1 s): after an hour, the subscription and the unacknowledged message
/// (with the one waiting behind it) are still there.
#[test]
fn open_connection_session_state_kept_past_expiry_interval() {
    for expiry in [0u32, 1] {
        let mut c = Cluster::new(1);
        let mut cn = connect_rm("s", false, expiry, 1);
        cn.keep_alive_secs = 0;
        let (a, _) = c.connect_with(0, cn);
        c.subscribe(a, "t", QoS::AtLeastOnce);
        let p = c.connect(0, V5, "p", true);
        c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
        c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
        let first = c.publishes(a, false);
        assert_eq!(first.len(), 1);
        c.advance(3_600_000);
        assert!(!c.is_closed(a), "expiry {expiry}");
        assert_eq!(c.engines[0].stats().sessions_expired, 0);
        c.send(a, &puback(id_of(&first[0]), ReasonCode::SUCCESS));
        assert_eq!(payloads(&c.publishes(a, true)), vec![&b"2"[..]]);
        let p = c.connect(0, V5, "p2", true);
        c.publish(p, "t", b"3", QoS::AtLeastOnce, false, 3);
        assert_eq!(payloads(&c.publishes(a, true)), vec![&b"3"[..]]);
    }
}

// ---------------------------------------------------------------------------- QoS flows

/// v5 [MQTT-4.3.2-1], [MQTT-4.3.2-2], [MQTT-4.3.2-3]: each new QoS 1 message gets its own
/// unused Packet Identifier and goes out with QoS 1 and DUP 0; it stays unacknowledged (sent
/// again on resume) until its PUBACK arrives, and only until then.
#[test]
fn qos1_outbound_unacknowledged_until_puback() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=3u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|m| m.qos == QoS::AtLeastOnce && !m.dup));
    let ids: std::collections::BTreeSet<u16> = got.iter().map(id_of).collect();
    assert_eq!(ids.len(), 3);
    c.send(a, &puback(id_of(&got[1]), ReasonCode::SUCCESS));
    c.drop_conn(a);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 100));
    let again = c.publishes(b, false);
    assert_eq!(payloads(&again), vec![&[1u8][..], &[3u8][..]]);
    assert_eq!(
        again.iter().map(id_of).collect::<Vec<_>>(),
        vec![id_of(&got[0]), id_of(&got[2])]
    );
    for m in &again {
        c.send(b, &puback(id_of(m), ReasonCode::SUCCESS));
    }
    c.drop_conn(b);
    let (d, _) = c.connect_with(0, connect_expiry("s", false, 100));
    assert!(c.recv(d).is_empty(), "all acknowledged");
}

/// v5 [MQTT-4.3.2-4]: a QoS 1 PUBLISH gets a PUBACK with its Packet Identifier once the server
/// owns the message: it reaches the (offline) subscriber although the publisher left right
/// after the PUBACK.
#[test]
fn qos1_inbound_puback_after_taking_ownership() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"owned", QoS::AtLeastOnce, false, 0x2222);
    let got = c.recv(p);
    assert!(
        matches!(&got[..], [Packet::PubAck(r)] if r.packet_id == pid(0x2222) && !r.reason.is_error()),
        "{got:?}"
    );
    c.drop_conn(p);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 100));
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"owned"[..]]);
}

/// v5 [MQTT-4.3.2-5]: after its PUBACK, a PUBLISH with the same Packet Identifier is a new
/// message, whether DUP is 1 or 0.
#[test]
fn qos1_inbound_same_id_after_puback_is_new_message() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "s", true);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"one", QoS::AtLeastOnce, false, 5);
    let mut again = publish("t", b"one", QoS::AtLeastOnce, false, 5);
    again.dup = true;
    c.send(p, &Packet::Publish(again));
    c.publish(p, "t", b"two", QoS::AtLeastOnce, false, 5);
    let acks = c.recv(p);
    assert_eq!(acks.len(), 3);
    assert!(acks
        .iter()
        .all(|x| matches!(x, Packet::PubAck(r) if r.packet_id == pid(5))));
    assert_eq!(
        payloads(&c.publishes(a, true)),
        vec![&b"one"[..], &b"one"[..], &b"two"[..]]
    );
}

/// v5 [MQTT-4.3.3-1], [MQTT-4.3.3-2]: new QoS 2 messages get Packet Identifiers unused by any
/// unacknowledged message (QoS 1, QoS 2, or waiting for PUBCOMP) and go out with QoS 2 and
/// DUP 0.
#[test]
fn qos2_outbound_unused_id_qos2_dup0() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "s", true);
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"a", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"b", QoS::ExactlyOnce, false, 2);
    c.publish(p, "t", b"c", QoS::ExactlyOnce, false, 3);
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert!(got[1..].iter().all(|m| m.qos == QoS::ExactlyOnce && !m.dup));
    let mut ids: Vec<u16> = got.iter().map(id_of).collect();
    c.send(a, &pubrec(ids[1], ReasonCode::SUCCESS));
    assert_eq!(c.recv(a), vec![pubrel(ids[1])]);
    c.publish(p, "t", b"d", QoS::ExactlyOnce, false, 4);
    let d = c.publishes(a, false);
    assert!(d.len() == 1 && d[0].qos == QoS::ExactlyOnce && !d[0].dup);
    ids.push(id_of(&d[0]));
    let unique: std::collections::BTreeSet<u16> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 4, "{ids:?}");
}

/// v5 [MQTT-4.3.3-3]: a QoS 2 PUBLISH without PUBREC is sent again on resume (DUP 1, same id);
/// v5 [MQTT-4.3.3-4]: a PUBREC below 0x80 (0x00 or 0x10) gets a PUBREL with the same id;
/// v5 [MQTT-4.3.3-5], [MQTT-4.3.3-6]: after PUBREL only the PUBREL is sent again, until PUBCOMP,
/// never the PUBLISH.
#[test]
fn qos2_outbound_pubrel_replaces_publish_until_pubcomp() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    for (i, m) in [b"x", b"y", b"z"].iter().enumerate() {
        let i = i as u16 + 1;
        c.publish(p, "t", &m[..], QoS::ExactlyOnce, false, i);
        c.send(p, &pubrel(i));
    }
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 3);
    let (i1, i2, i3) = (id_of(&got[0]), id_of(&got[1]), id_of(&got[2]));
    c.send(a, &pubrec(i1, ReasonCode::SUCCESS));
    assert_eq!(c.recv(a), vec![pubrel(i1)]);
    c.send(a, &pubrec(i2, ReasonCode::NO_MATCHING_SUBSCRIBERS));
    assert_eq!(c.recv(a), vec![pubrel(i2)]);
    c.drop_conn(a);

    let (b, _) = c.connect_with(0, connect_expiry("s", false, 100));
    let got = c.recv(b);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], pubrel(i1));
    assert_eq!(got[1], pubrel(i2));
    assert!(
        matches!(&got[2], Packet::Publish(m) if m.dup && id_of(m) == i3 && &m.payload[..] == b"z"),
        "{got:?}"
    );
    c.send(b, &pubcomp(i1));
    assert!(c.recv(b).is_empty());
    c.drop_conn(b);

    let (d, _) = c.connect_with(0, connect_expiry("s", false, 100));
    let got = c.recv(d);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], pubrel(i2));
    assert!(matches!(&got[1], Packet::Publish(m) if id_of(m) == i3));
}

/// v5 [MQTT-4.3.3-7]: once a QoS 2 PUBLISH has been sent its Message Expiry no longer applies:
/// resumed after the interval, the server still sends it again, and the flow completes.
#[test]
fn qos2_outbound_sent_message_not_expired() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"short", QoS::ExactlyOnce, false, 1);
    m.properties.message_expiry_interval = Some(2);
    c.send(p, &Packet::Publish(m));
    c.send(p, &pubrel(1));
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 1);
    let i = id_of(&got[0]);
    c.drop_conn(a);
    c.advance(10_000);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    let got = c.publishes(b, false);
    assert!(
        got.len() == 1 && got[0].dup && id_of(&got[0]) == i && &got[0].payload[..] == b"short",
        "{got:?}"
    );
    assert_eq!(c.engines[0].stats().dropped_expired, 0);
    c.send(b, &pubrec(i, ReasonCode::SUCCESS));
    assert_eq!(c.recv(b), vec![pubrel(i)]);
    c.send(b, &pubcomp(i));
    assert!(c.recv(b).is_empty());
}

/// v5 [MQTT-4.3.3-8]: a QoS 2 PUBLISH gets a PUBREC with its Packet Identifier once the server
/// owns the message: it reaches the (offline) subscriber although the publisher never sends
/// PUBREL.
#[test]
fn qos2_inbound_pubrec_after_taking_ownership() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    c.drop_conn(a);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"owned", QoS::ExactlyOnce, false, 0x3333);
    let got = c.recv(p);
    assert!(
        matches!(&got[..], [Packet::PubRec(r)] if r.packet_id == pid(0x3333) && !r.reason.is_error()),
        "{got:?}"
    );
    c.drop_conn(p);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 100));
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"owned"[..]]);
}

/// v5 [MQTT-4.3.3-13]: the QoS 2 receiver finishes the flow although the message expired
/// meanwhile: PUBREL after the Message Expiry Interval still gets PUBCOMP 0x00.
#[test]
fn qos2_inbound_expired_message_flow_completes() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    c.drop_conn(a);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"short", QoS::ExactlyOnce, false, 9);
    m.properties.message_expiry_interval = Some(1);
    c.send(p, &Packet::Publish(m));
    assert_eq!(c.recv(p), vec![pubrec(9, ReasonCode::SUCCESS)]);
    c.advance(5_000);
    let (b, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    assert!(c.publishes(b, true).is_empty(), "expired");
    assert_eq!(c.engines[0].stats().dropped_expired, 1);
    c.send(p, &pubrel(9));
    assert_eq!(c.recv(p), vec![pubcomp(9)]);
}

/// v5 [MQTT-4.4.0-2]: a PUBACK or PUBREC with a Reason Code of 0x80 or more acknowledges the
/// PUBLISH: no PUBREL follows and nothing is sent again on resume.
#[test]
fn error_puback_pubrec_not_retransmitted_on_resume() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"q1", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"q2", QoS::ExactlyOnce, false, 2);
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 2);
    c.send_bytes(
        a,
        &encoded(&[
            puback(id_of(&got[0]), ReasonCode::UNSPECIFIED_ERROR),
            pubrec(id_of(&got[1]), ReasonCode::NOT_AUTHORIZED),
        ]),
    );
    assert!(c.recv(a).is_empty(), "no PUBREL after an error PUBREC");
    c.drop_conn(a);
    let (b, ack) = c.connect_with(0, connect_expiry("s", false, 100));
    assert!(ack.session_present);
    assert!(c.recv(b).is_empty(), "nothing retransmitted");
}

// ---------------------------------------------------------------------------- topics

/// v5 [MQTT-4.7.3-3]: Topic Names are at most 65,535 bytes: one of exactly that length is
/// routed and forwarded byte for byte (one byte more is not a valid MQTT string at all).
#[test]
fn topic_name_of_65535_bytes_forwarded() {
    let mut c = Cluster::new(2);
    let long = "t".repeat(65_535);
    assert!(Utf8Str::from_string("t".repeat(65_536)).is_none());
    let a = c.connect(1, V5, "a", true);
    c.subscribe(a, "#", QoS::AtLeastOnce);
    let b = c.connect(0, V5, "b", true);
    c.subscribe(b, &long, QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, &long, b"x", QoS::AtLeastOnce, false, 1);
    for conn in [a, b] {
        let got = c.publishes(conn, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].topic.as_str(), long);
    }
}

// ---------------------------------------------------------------------------- shared

/// Finds which of `members` received a message; returns (index, message).
fn holder(c: &mut Cluster, members: &[ConnId]) -> (usize, Publish) {
    let mut found = None;
    for (i, &m) in members.iter().enumerate() {
        let got = c.publishes(m, false);
        assert!(got.len() <= 1);
        if let Some(x) = got.into_iter().next() {
            assert!(found.is_none(), "sent to two members");
            found = Some((i, x));
        }
    }
    found.expect("one member got the message")
}

/// v5 [MQTT-4.8.2-6]: a PUBACK or PUBREC of 0x80 or more from the chosen member of a shared
/// subscription discards the message: no other member gets it, not even when the rejecting
/// member leaves afterwards.
#[test]
fn shared_error_ack_discards_message() {
    let mut c = Cluster::new(1);
    let members: Vec<ConnId> = ["a", "b", "c"]
        .iter()
        .map(|id| c.connect(0, V5, id, true))
        .collect();
    for &m in &members {
        c.subscribe(m, "$share/g/t", QoS::ExactlyOnce);
    }
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"m1", QoS::AtLeastOnce, false, 1);
    let (x, m1) = holder(&mut c, &members);
    c.send(
        members[x],
        &puback(id_of(&m1), ReasonCode::UNSPECIFIED_ERROR),
    );
    c.publish(p, "t", b"m2", QoS::ExactlyOnce, false, 2);
    let (y, m2) = holder(&mut c, &members);
    assert_ne!(x, y);
    c.send(
        members[y],
        &pubrec(id_of(&m2), ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR),
    );
    assert!(c.recv(members[y]).is_empty(), "no PUBREL");
    for &m in &members {
        assert!(c.publishes(m, false).is_empty());
    }
    c.drop_conn(members[x]);
    c.drop_conn(members[y]);
    let z = members[3 - x - y];
    assert!(
        c.publishes(z, false).is_empty(),
        "not sent to another member"
    );
    c.publish(p, "t", b"m3", QoS::AtLeastOnce, false, 3);
    assert_eq!(payloads(&c.publishes(z, true)), vec![&b"m3"[..]]);
}

/// v5 [MQTT-4.8.2-4]: a QoS 2 message sent to a shared-subscription member whose connection
/// breaks before PUBREC stays with that member: no other member gets it, and it is completed
/// when the member reconnects.
#[test]
fn shared_qos2_inflight_stays_with_member_and_completes_on_reconnect() {
    let mut c = Cluster::new(1);
    let ids = ["a", "b"];
    let members: Vec<ConnId> = ids
        .iter()
        .map(|id| c.connect_with(0, connect_expiry(id, false, 100)).0)
        .collect();
    for &m in &members {
        c.subscribe(m, "$share/g/t", QoS::ExactlyOnce);
    }
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"q2", QoS::ExactlyOnce, false, 1);
    c.send(p, &pubrel(1));
    let (x, m) = holder(&mut c, &members);
    c.drop_conn(members[x]);
    let other = members[1 - x];
    assert!(
        c.publishes(other, false).is_empty(),
        "stays with its member"
    );
    let (back, ack) = c.connect_with(0, connect_expiry(ids[x], false, 100));
    assert!(ack.session_present);
    let got = c.publishes(back, false);
    assert!(
        got.len() == 1 && got[0].dup && got[0].packet_id == m.packet_id,
        "{got:?}"
    );
    c.send(back, &pubrec(id_of(&m), ReasonCode::SUCCESS));
    assert_eq!(c.recv(back), vec![pubrel(id_of(&m))]);
    c.send(back, &pubcomp(id_of(&m)));
    assert!(c.publishes(other, false).is_empty());
}

/// v5 [MQTT-4.8.2-5]: if that member's session ends before it reconnects, the QoS 2 message
/// goes to no other member.
#[test]
fn shared_qos2_inflight_member_session_ends_not_sent_elsewhere() {
    let mut c = Cluster::new(1);
    let ids = ["a", "b"];
    let members: Vec<ConnId> = ids
        .iter()
        .map(|id| c.connect_with(0, connect_expiry(id, false, 2)).0)
        .collect();
    for &m in &members {
        c.subscribe(m, "$share/g/t", QoS::ExactlyOnce);
    }
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"q2", QoS::ExactlyOnce, false, 1);
    c.send(p, &pubrel(1));
    let (x, _) = holder(&mut c, &members);
    c.drop_conn(members[x]);
    c.advance(3_000);
    assert_eq!(c.engines[0].stats().sessions_expired, 1);
    let other = members[1 - x];
    assert!(!c.is_closed(other));
    assert!(c.publishes(other, false).is_empty());
}

// ---------------------------------------------------------------------------- AUTH

/// v5 [MQTT-4.12.0-6]: without an Authentication Method in CONNECT the server sends no AUTH
/// and no Authentication Method or Data in CONNACK, not even when the client sends AUTH.
#[test]
fn no_auth_method_no_auth_from_server() {
    let mut c = Cluster::new(1);
    let (a, ack) = c.connect_with(0, connect(V5, "a", true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.authentication_method, None);
    assert_eq!(ack.properties.authentication_data, None);
    c.send(a, &Packet::PingReq);
    c.send_bytes(a, &[0xF0, 0x00]); // AUTH, Reason Code 0x00
    let got = c.recv(a);
    assert!(!got.iter().any(|p| matches!(p, Packet::Auth(_))), "{got:?}");
    assert_eq!(got[0], Packet::PingResp);
    assert_eq!(disconnect_reason(&got), Some(ReasonCode::PROTOCOL_ERROR));
}
