//! More MQTT 3.1.1 behaviour, each test citing the normative statements it checks.

mod common;

use bytes::BytesMut;
use common::*;
use tachyon_codec::ProtocolVersion::V311;
use tachyon_codec::*;
use tachyon_engine::{ConnId, EngineConfig};

fn encoded(packets: &[Packet]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for p in packets {
        encode(p, V311, &mut b).unwrap();
    }
    b.to_vec()
}

fn puback(id: u16) -> Packet {
    Packet::PubAck(PubResp::new(pid(id), ReasonCode::SUCCESS))
}

fn pubrec(id: u16) -> Packet {
    Packet::PubRec(PubResp::new(pid(id), ReasonCode::SUCCESS))
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

fn unsuback(id: u16) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(id),
        properties: Properties::default(),
        reasons: vec![],
    })
}

fn disconnect_packet() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
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

/// A CONNECT with the unsupported Protocol Level 6 (refused with return code 1) for Client
/// Identifier `id`, CleanSession 0.
fn connect_level_6(id: &str) -> Vec<u8> {
    let mut b = vec![0x10, (12 + id.len()) as u8, 0, 4];
    b.extend_from_slice(b"MQTT");
    b.extend_from_slice(&[6, 0x00, 0, 60, 0, id.len() as u8]);
    b.extend_from_slice(id.as_bytes());
    b
}

// ---------------------------------------------------------------------------- packet ids

/// v3.1.1 [MQTT-2.3.1-4]: the server's QoS 1/2 PUBLISHes carry non-zero Packet Identifiers
/// that none of its other unacknowledged ones (PUBREL pending included) use, and a resent
/// PUBLISH keeps its identifier.
#[test]
fn outbound_ids_unused_and_kept_on_resend() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V311, "s", false);
    c.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "t", b"a", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"b", QoS::ExactlyOnce, false, 2);
    c.publish(p, "t", b"c", QoS::AtLeastOnce, false, 3);
    let got = c.publishes(sub, false);
    assert_eq!(got.len(), 3);
    let mut ids: Vec<u16> = got.iter().map(id_of).collect();
    c.send(sub, &pubrec(ids[1]));
    assert_eq!(c.recv(sub), vec![pubrel(ids[1])]);
    c.publish(p, "t", b"d", QoS::ExactlyOnce, false, 4);
    let d = c.publishes(sub, false);
    assert_eq!(d.len(), 1);
    ids.push(id_of(&d[0]));
    let unique: std::collections::BTreeSet<u16> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 4, "{ids:?}");
    assert!(!unique.contains(&0));

    c.drop_conn(sub);
    let sub = c.connect(0, V311, "s", false);
    let got = c.recv(sub);
    assert_eq!(got.len(), 4, "{got:?}");
    let resent: Vec<(u16, &[u8])> = got
        .iter()
        .filter_map(|x| match x {
            Packet::Publish(m) => Some((id_of(m), &m.payload[..])),
            _ => None,
        })
        .collect();
    assert_eq!(
        resent,
        vec![
            (ids[0], &b"a"[..]),
            (ids[2], &b"c"[..]),
            (ids[3], &b"d"[..])
        ]
    );
    assert!(got.contains(&pubrel(ids[1])));
}

/// v3.1.1 [MQTT-2.3.1-5], [MQTT-4.3.1-1]: a QoS 0 PUBLISH from the server has no Packet
/// Identifier and DUP 0, also when it carries a QoS 1 message (sent with DUP 1) downgraded by a
/// QoS 0 subscription.
#[test]
fn qos0_publish_has_no_packet_id_and_dup_0() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V311, "s", true);
    c.subscribe(sub, "t", QoS::AtMostOnce);
    let p = c.connect(0, V311, "p", true);
    let mut m = publish("t", b"x", QoS::AtLeastOnce, false, 7);
    m.dup = true;
    let raw = raw_output(&mut c, p, &encoded(&[Packet::Publish(m)]), sub);
    // 0x30: PUBLISH, DUP 0, QoS 0, RETAIN 0; Topic "t"; payload "x".
    assert_eq!(raw, vec![0x30, 0x04, 0x00, 0x01, b't', b'x']);
    let m = publish("t", b"y", QoS::AtMostOnce, false, 0);
    let raw = raw_output(&mut c, p, &encoded(&[Packet::Publish(m)]), sub);
    assert_eq!(raw, vec![0x30, 0x04, 0x00, 0x01, b't', b'y']);
}

/// v3.1.1 [MQTT-2.3.1-6]: the server's PUBACK and PUBREC carry the Packet Identifier of the
/// client's PUBLISH, and its PUBREL that of its own PUBLISH.
#[test]
fn acks_carry_packet_id_of_publish() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V311, "s", true);
    c.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    let raw = raw_output(
        &mut c,
        p,
        &encoded(&[Packet::Publish(publish(
            "t",
            b"1",
            QoS::AtLeastOnce,
            false,
            0x0102,
        ))]),
        p,
    );
    assert_eq!(raw, vec![0x40, 0x02, 0x01, 0x02], "PUBACK 0x0102");
    let raw = raw_output(
        &mut c,
        p,
        &encoded(&[Packet::Publish(publish(
            "t",
            b"2",
            QoS::ExactlyOnce,
            false,
            0xFFFE,
        ))]),
        p,
    );
    assert_eq!(raw, vec![0x50, 0x02, 0xFF, 0xFE], "PUBREC 0xFFFE");
    let got = c.publishes(sub, false);
    assert_eq!(got.len(), 2);
    let i = id_of(&got[1]);
    let raw = raw_output(&mut c, sub, &encoded(&[pubrec(i)]), sub);
    assert_eq!(raw, vec![0x62, 0x02, (i >> 8) as u8, i as u8], "PUBREL");
}

/// v3.1.1 [MQTT-2.3.1-7], [MQTT-3.8.4-2]: SUBACK and UNSUBACK carry the Packet Identifier of
/// the SUBSCRIBE and UNSUBSCRIBE they answer.
#[test]
fn suback_unsuback_carry_request_packet_id() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "a", true);
    for id in [1u16, 0x0A0B, 0xFFFF] {
        c.send(a, &subscribe_packet(id, &[("t", QoS::AtLeastOnce)]));
        let got = c.recv(a);
        assert!(
            matches!(&got[..], [Packet::SubAck(x)] if x.packet_id == pid(id)),
            "{got:?}"
        );
        c.send(a, &unsubscribe_packet(id ^ 0x5555, &["t"]));
        assert_eq!(c.recv(a), vec![unsuback(id ^ 0x5555)]);
    }
}

// ---------------------------------------------------------------------------- CONNECT

/// v3.1.1 [MQTT-3.1.2-7]: retained messages are not part of the session: they stay when the
/// publisher's session ends (CleanSession 1 closed, CleanSession 0 discarded by a clean
/// reconnect).
#[test]
fn retained_messages_survive_session_end() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "r/1", b"one", QoS::AtLeastOnce, true, 1);
    c.send(p, &disconnect_packet());
    let q = c.connect(0, V311, "q", false);
    c.publish(q, "r/2", b"two", QoS::AtMostOnce, true, 0);
    c.drop_conn(q);
    let q = c.connect(0, V311, "q", true);
    c.send(q, &disconnect_packet());
    assert_eq!(c.engines[0].session_count(), 0, "both sessions ended");
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "r/#", QoS::AtLeastOnce);
    let mut got: Vec<Vec<u8>> = c
        .publishes(s, true)
        .iter()
        .map(|m| m.payload.to_vec())
        .collect();
    got.sort();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
}

/// v3.1.1 [MQTT-3.1.2-12]: with Will Flag 0 no Will Message is published when the connection
/// ends, also when an earlier connection with the same Client Identifier had a Will.
#[test]
fn will_flag_0_no_will_on_close() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V311, "w", true);
    c.subscribe(w, "#", QoS::AtMostOnce);
    let mut cn = connect(V311, "d", false);
    cn.will = Some(will("will/d", b"old", None));
    let (d, _) = c.connect_with(0, cn);
    c.send(d, &disconnect_packet());
    let (d, _) = c.connect_with(0, connect(V311, "d", false));
    c.drop_conn(d);
    let n = c.connect(0, V311, "n", true);
    c.drop_conn(n);
    assert!(c.publishes(w, true).is_empty());
    assert_eq!(c.engines[0].stats().wills_published, 0);
}

/// v3.1.1 [MQTT-3.1.3-5]: Client Identifiers of 1 to 23 characters from 0-9, a-z, A-Z are
/// accepted, with CleanSession 0 too, and used as given (reusing one takes over).
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
        let (conn, ack) = c.connect_with(i % 2, connect(V311, id, i % 2 == 0));
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{id}");
        conns.push(conn);
    }
    assert!(conns.iter().all(|&x| !c.is_closed(x)));
    c.connect(1, V311, "abcdefghijklmnopqrstuvw", false);
    assert!(c.is_closed(conns[4]));
}

/// v3.1.1 [MQTT-3.1.4-3]: CONNECT applies CleanSession as 3.1.2.4 says: 0 resumes the stored
/// session (messages, subscriptions), 1 discards it and its own session ends with the
/// connection.
#[test]
fn connect_processes_clean_session() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "cs", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "t", b"m1", QoS::AtLeastOnce, false, 1);
    let (b, ack) = c.connect_with(0, connect(V311, "cs", false));
    assert!(ack.session_present);
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"m1"[..]]);
    c.drop_conn(b);
    c.publish(p, "t", b"m2", QoS::AtLeastOnce, false, 2);

    let (d, ack) = c.connect_with(0, connect(V311, "cs", true));
    assert!(!ack.session_present);
    assert!(c.recv(d).is_empty(), "queued message discarded");
    c.subscribe(d, "u", QoS::AtLeastOnce);
    c.drop_conn(d);
    let (e, ack) = c.connect_with(0, connect(V311, "cs", false));
    assert!(
        !ack.session_present,
        "the clean session ended with its connection"
    );
    c.publish(p, "t", b"m3", QoS::AtLeastOnce, false, 3);
    c.publish(p, "u", b"m4", QoS::AtLeastOnce, false, 4);
    assert!(c.publishes(e, true).is_empty());
}

/// v3.1.1 [MQTT-3.1.4-4]: an accepted CONNECT gets CONNACK with return code 0 (bytes 20 02 00
/// 00 for a new session, 20 02 01 00 when one is resumed).
#[test]
fn accepted_connect_connack_return_code_0() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V311);
    let bytes = encoded(&[Packet::Connect(Box::new(connect(V311, "k", false)))]);
    let raw = raw_output(&mut c, conn, &bytes, conn);
    assert_eq!(raw, vec![0x20, 0x02, 0x00, 0x00]);
    c.drop_conn(conn);
    let conn = c.open(0, V311);
    let raw = raw_output(&mut c, conn, &bytes, conn);
    assert_eq!(raw, vec![0x20, 0x02, 0x01, 0x00]);
}

/// v3.1.1 [MQTT-3.1.4-5]: after a refused CONNECT nothing the client sent behind it is
/// processed (refused for its protocol level, and for anonymous access).
#[test]
fn refused_connect_following_packets_not_processed() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V311, "w", true);
    c.subscribe(w, "#", QoS::AtLeastOnce);
    let conn = c.open(0, V311);
    let mut bytes = connect_level_6("bad");
    bytes.extend(encoded(&[
        subscribe_packet(2, &[("#", QoS::AtLeastOnce)]),
        Packet::Publish(publish("r", b"retained", QoS::AtLeastOnce, true, 3)),
        Packet::PingReq,
    ]));
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason.to_v311_connack() == 1),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
    assert!(c.publishes(w, true).is_empty());
    assert_eq!(c.engines[0].retained_count(), 0);

    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            allow_anonymous: false,
            ..EngineConfig::default()
        },
    );
    let conn = c.open(0, V311);
    let bytes = encoded(&[
        Packet::Connect(Box::new(connect(V311, "anon", false))),
        subscribe_packet(2, &[("#", QoS::AtLeastOnce)]),
        Packet::Publish(publish("r", b"retained", QoS::AtLeastOnce, true, 3)),
        Packet::PingReq,
    ]);
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason.to_v311_connack() == 5),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
    assert_eq!(c.engines[0].retained_count(), 0);
    assert_eq!(c.engines[0].session_count(), 0);
    assert_eq!(c.engines[0].stats().messages_received, [0, 0, 0]);
}

// ---------------------------------------------------------------------------- CONNACK

/// v3.1.1 [MQTT-3.2.0-1]: the first packet the server sends is CONNACK, ahead of queued and
/// resent messages and of answers to packets pipelined behind CONNECT, also when the session
/// comes from another shard.
#[test]
fn connack_first_before_queued_messages_and_pipelined_answers() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, V311, "q", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(1, V311, "p", true);
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(a, false).len(), 1, "left unacknowledged");
    c.drop_conn(a);
    c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
    let conn = c.open(1, V311);
    let bytes = encoded(&[
        Packet::Connect(Box::new(connect(V311, "q", false))),
        Packet::PingReq,
        subscribe_packet(9, &[("u", QoS::AtMostOnce)]),
    ]);
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[0], Packet::ConnAck(x) if x.reason == ReasonCode::SUCCESS && x.session_present),
        "{got:?}"
    );
    assert_eq!(got.len(), 5, "{got:?}"); // CONNACK, 2 messages, PINGRESP, SUBACK
    assert!(!got[1..].iter().any(|p| matches!(p, Packet::ConnAck(_))));
}

/// v3.1.1 [MQTT-3.2.2-4]: a CONNACK with a non-zero return code has Session Present 0, even
/// though a session is stored for the Client Identifier; v3.1.1 [MQTT-3.2.2-5]: then the
/// server closes the connection.
#[test]
fn refused_connack_session_present_0_then_close() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "kept", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    assert_eq!(c.engines[0].session_count(), 1);
    let conn = c.open(0, V311);
    let raw = raw_output(&mut c, conn, &connect_level_6("kept"), conn);
    assert_eq!(
        raw,
        vec![0x20, 0x02, 0x00, 0x01],
        "Session Present 0, return code 1"
    );
    assert!(c.is_closed(conn));

    let (conn, ack) = c.connect_with(0, connect(V311, "", false));
    assert_eq!(ack.reason.to_v311_connack(), 2);
    assert!(!ack.session_present);
    assert!(c.is_closed(conn));

    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            allow_anonymous: false,
            ..EngineConfig::default()
        },
    );
    let mut cn = connect(V311, "u", false);
    cn.username = Some(s("user"));
    cn.password = Some(bytes::Bytes::from_static(b"pw"));
    let (conn, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason.to_v311_connack(), 4);
    assert!(!ack.session_present);
    assert!(c.is_closed(conn));
}

// ---------------------------------------------------------------------------- PUBLISH

/// v3.1.1 [MQTT-3.3.1-3]: outgoing DUP depends only on whether the server retransmits: a DUP 1
/// PUBLISH from the publisher goes out with DUP 0, and the server's own retransmission of it
/// has DUP 1.
#[test]
fn outgoing_dup_independent_of_incoming_dup() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "r", false);
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    let mut m = publish("t", b"q1", QoS::AtLeastOnce, false, 1);
    m.dup = true;
    c.send(p, &Packet::Publish(m));
    let mut m = publish("t", b"q2", QoS::ExactlyOnce, false, 2);
    m.dup = true;
    c.send(p, &Packet::Publish(m));
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| !m.dup), "{got:?}");
    c.drop_conn(a);
    let b = c.connect(0, V311, "r", false);
    let got = c.publishes(b, true);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.dup), "{got:?}");
    c.publish(p, "t", b"plain", QoS::AtLeastOnce, false, 3);
    let got = c.publishes(b, true);
    assert!(got.len() == 1 && !got[0].dup, "{got:?}");
}

/// v3.1.1 [MQTT-3.3.1-7]: a QoS 0 PUBLISH with RETAIN 1 discards the message retained for the
/// topic (and becomes the retained message).
#[test]
fn retained_qos0_replaces_retained_message() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "r", b"old", QoS::AtLeastOnce, true, 1);
    c.publish(p, "r", b"new", QoS::AtMostOnce, true, 0);
    assert_eq!(c.engines[0].retained_count(), 1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "r", QoS::AtLeastOnce);
    let got = c.publishes(s, true);
    assert_eq!(payloads(&got), vec![&b"new"[..]]);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert!(got[0].retain);
}

/// v3.1.1 [MQTT-3.3.2-3]: the Topic Name sent to a subscriber matches its subscription's
/// filter (4.7) and is the topic as published.
#[test]
fn delivered_topic_names_match_filter() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "a/+/c", QoS::AtMostOnce);
    c.subscribe(s, "x/#", QoS::AtMostOnce);
    let p = c.connect(0, V311, "p", true);
    let topics = [
        "a/b/c", "a/b/d", "a/b/c/d", "a//c", "x", "x/y/z", "xy/z", "a/c", "b/x",
    ];
    for t in topics {
        c.publish(p, t, t.as_bytes(), QoS::AtMostOnce, false, 0);
    }
    let got: Vec<(String, Vec<u8>)> = c
        .publishes(s, true)
        .iter()
        .map(|m| (m.topic.as_str().to_string(), m.payload.to_vec()))
        .collect();
    let want: Vec<(String, Vec<u8>)> = ["a/b/c", "a//c", "x", "x/y/z"]
        .iter()
        .map(|t| (t.to_string(), t.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------- SUBSCRIBE

/// v3.1.1 [MQTT-3.8.4-3]: a SUBSCRIBE with the filter of an existing subscription replaces it
/// (new QoS, one subscription), the retained message is sent again, and publications keep
/// flowing.
#[test]
fn resubscribe_replaces_and_resends_retained() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "r", b"kept", QoS::AtLeastOnce, true, 1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "r", QoS::AtMostOnce);
    let got = c.publishes(s, true);
    assert!(got.len() == 1 && got[0].retain && got[0].qos == QoS::AtMostOnce);
    c.publish(p, "r", b"before", QoS::AtLeastOnce, false, 2);
    let ack = c.subscribe(s, "r", QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    c.publish(p, "r", b"after", QoS::AtLeastOnce, false, 3);
    let got = c.publishes(s, true);
    let summary: Vec<(&[u8], bool, QoS)> = got
        .iter()
        .map(|m| (&m.payload[..], m.retain, m.qos))
        .collect();
    assert_eq!(
        summary,
        vec![
            (&b"before"[..], false, QoS::AtMostOnce),
            (&b"kept"[..], true, QoS::AtLeastOnce),
            (&b"after"[..], false, QoS::AtLeastOnce),
        ]
    );
}

/// v3.1.1 [MQTT-3.8.4-4]: a SUBSCRIBE with several filters acts as that many SUBSCRIBEs in
/// order (a filter repeated later replaces the earlier one) answered by one SUBACK.
#[test]
fn subscribe_several_filters_acts_as_sequence_one_suback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "a", true);
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
    let p = c.connect(0, V311, "p", true);
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

/// v3.1.1 [MQTT-3.8.4-5]: SUBACK has one return code per filter: the QoS granted, or 0x80 for
/// a failed subscription (here refused by policy: more levels than `limits.max_topic_levels`);
/// v3.1.1 [MQTT-3.9.3-1]: in the order of the filters.
#[test]
fn suback_return_code_per_filter_in_order() {
    let mut c = Cluster::with_config(
        1,
        tachyon_engine::EngineConfig {
            topic_levels_max: 4,
            ..Default::default()
        },
    );
    let a = c.connect(0, V311, "a", true);
    let filters = [
        ("q2", QoS::ExactlyOnce),
        ("deep/a/b/c/#", QoS::AtLeastOnce),
        ("q0", QoS::AtMostOnce),
        ("q1/+", QoS::AtLeastOnce),
        ("deep/+/+/+/+", QoS::AtMostOnce),
    ];
    let want = [
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::UNSPECIFIED_ERROR,
        ReasonCode::GRANTED_QOS_0,
        ReasonCode::GRANTED_QOS_1,
        ReasonCode::UNSPECIFIED_ERROR,
    ];
    let raw = raw_output(&mut c, a, &encoded(&[subscribe_packet(7, &filters)]), a);
    assert_eq!(
        raw,
        vec![0x90, 0x07, 0x00, 0x07, 0x02, 0x80, 0x00, 0x01, 0x80]
    );
    let rev: Vec<_> = filters.iter().rev().copied().collect();
    let want_rev: Vec<_> = want.iter().rev().copied().collect();
    c.send(a, &subscribe_packet(8, &rev));
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(x)] if x.reasons == want_rev),
        "{got:?}"
    );
}

// ---------------------------------------------------------------------------- UNSUBSCRIBE

/// v3.1.1 [MQTT-3.10.4-1]: UNSUBSCRIBE deletes only a subscription whose filter is equal
/// character for character: not one it would cover, nor one differing in case or a trailing
/// "/".
#[test]
fn unsubscribe_deletes_only_exact_filter() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "a", true);
    c.subscribe(a, "a/+", QoS::AtLeastOnce);
    c.subscribe(a, "a/b", QoS::ExactlyOnce);
    c.send(
        a,
        &unsubscribe_packet(2, &["a/#", "A/+", "a/+/", "a/b/", "+/b"]),
    );
    assert_eq!(c.recv(a), vec![unsuback(2)]);
    let p = c.connect(0, V311, "p", true);
    let mut id = 0;
    let mut qos_of_next = |c: &mut Cluster| {
        id += 1;
        c.publish(p, "a/b", b"x", QoS::ExactlyOnce, false, id);
        c.send(p, &pubrel(id));
        c.publishes(a, true)
            .iter()
            .map(|m| m.qos)
            .collect::<Vec<_>>()
    };
    // Overlapping subscriptions are delivered once, at the highest QoS.
    assert_eq!(
        qos_of_next(&mut c),
        vec![QoS::ExactlyOnce],
        "both still there"
    );
    c.send(a, &unsubscribe_packet(3, &["a/b"]));
    assert_eq!(c.recv(a), vec![unsuback(3)]);
    assert_eq!(
        qos_of_next(&mut c),
        vec![QoS::AtLeastOnce],
        "only a/+ remains"
    );
    c.send(a, &unsubscribe_packet(4, &["a/+"]));
    let _ = c.recv(a);
    assert_eq!(qos_of_next(&mut c), vec![], "none remains");
}

/// v3.1.1 [MQTT-3.10.4-3]: QoS 1 and QoS 2 messages already being sent when their subscription
/// is deleted are delivered to the end: PUBREC still gets PUBREL, and after a reconnect the
/// unacknowledged PUBLISH and the PUBREL are sent again.
#[test]
fn unsubscribe_inflight_deliveries_complete() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "s", false);
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "t", b"one", QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"two", QoS::ExactlyOnce, false, 2);
    let got = c.publishes(a, false);
    assert_eq!(payloads(&got), vec![&b"one"[..], &b"two"[..]]);
    let (i1, i2) = (id_of(&got[0]), id_of(&got[1]));
    c.send(a, &unsubscribe_packet(7, &["t"]));
    assert_eq!(c.recv(a), vec![unsuback(7)]);
    c.send(a, &pubrec(i2));
    assert_eq!(c.recv(a), vec![pubrel(i2)]);
    c.drop_conn(a);
    let b = c.connect(0, V311, "s", false);
    let got = c.recv(b);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(
        |x| matches!(x, Packet::Publish(m) if m.dup && id_of(m) == i1 && &m.payload[..] == b"one")
    ));
    assert!(got.contains(&pubrel(i2)));
    c.send_bytes(b, &encoded(&[puback(i1), pubcomp(i2)]));
    assert!(c.recv(b).is_empty());
    c.publish(p, "t", b"after", QoS::AtLeastOnce, false, 3);
    assert!(c.publishes(b, true).is_empty(), "unsubscribed");
}

/// v3.1.1 [MQTT-3.10.4-5]: UNSUBACK is sent even when no subscription was deleted.
#[test]
fn unsubscribe_nothing_deleted_still_unsuback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "a", true);
    c.send(a, &unsubscribe_packet(0x0203, &["never/subscribed"]));
    assert_eq!(c.recv(a), vec![unsuback(0x0203)]);
    let raw = raw_output(
        &mut c,
        a,
        &encoded(&[unsubscribe_packet(0x0405, &["nor/this", "#"])]),
        a,
    );
    assert_eq!(raw, vec![0xB0, 0x02, 0x04, 0x05]);
}

/// v3.1.1 [MQTT-3.10.4-6]: an UNSUBSCRIBE with several filters acts as a sequence of
/// UNSUBSCRIBEs answered by a single UNSUBACK.
#[test]
fn unsubscribe_several_filters_acts_as_sequence_one_unsuback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "a", true);
    c.subscribe(a, "a", QoS::AtMostOnce);
    c.subscribe(a, "b", QoS::AtMostOnce);
    c.subscribe(a, "c", QoS::AtMostOnce);
    c.send(a, &unsubscribe_packet(4, &["a", "x", "a", "b"]));
    assert_eq!(c.recv(a), vec![unsuback(4)], "exactly one UNSUBACK");
    let p = c.connect(0, V311, "p", true);
    for t in ["a", "b", "c"] {
        c.publish(p, t, t.as_bytes(), QoS::AtMostOnce, false, 0);
    }
    assert_eq!(payloads(&c.publishes(a, true)), vec![&b"c"[..]]);
}

// ---------------------------------------------------------------------------- sessions

/// v3.1.1 [MQTT-4.1.0-1]: a CleanSession 0 session keeps its state for as long as it lasts:
/// a week offline, its subscription, its queued message and its unacknowledged one are all
/// there.
#[test]
fn persistent_session_state_kept_while_offline() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "s", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(a, false).len(), 1);
    c.drop_conn(a);
    c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
    c.advance(7 * 24 * 3_600_000);
    let (b, ack) = c.connect_with(0, connect(V311, "s", false));
    assert!(ack.session_present);
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"1"[..], &b"2"[..]]);
    let p = c.connect(0, V311, "p2", true);
    c.publish(p, "t", b"3", QoS::AtLeastOnce, false, 3);
    assert_eq!(payloads(&c.publishes(b, true)), vec![&b"3"[..]]);
}

/// v3.1.1 [MQTT-4.1.0-2]: a session lasts at least as long as its connection, even with a
/// one-second expiry policy for offline sessions, and for CleanSession 1.
#[test]
fn session_lasts_while_connection_open() {
    for clean in [false, true] {
        let mut c = Cluster::with_config(
            1,
            EngineConfig {
                session_expiry_v311_secs: 1,
                ..EngineConfig::default()
            },
        );
        let mut cn = connect(V311, "s", clean);
        cn.keep_alive_secs = 0;
        let (a, _) = c.connect_with(0, cn);
        c.subscribe(a, "t", QoS::AtLeastOnce);
        c.advance(3_600_000);
        assert!(!c.is_closed(a));
        assert_eq!(c.engines[0].stats().sessions_expired, 0);
        let p = c.connect(0, V311, "p", true);
        c.publish(p, "t", b"x", QoS::AtLeastOnce, false, 1);
        assert_eq!(c.publishes(a, true).len(), 1, "clean {clean}");
    }
}

// ---------------------------------------------------------------------------- QoS flows

/// v3.1.1 [MQTT-4.3.2-1]: a QoS 1 message to a subscriber gets an unused Packet Identifier,
/// goes out with QoS 1 and DUP 0, and stays unacknowledged (sent again on resume) until its
/// PUBACK, and only until then.
#[test]
fn qos1_outbound_unacknowledged_until_puback() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "s", false);
    c.subscribe(a, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V311, "p", true);
    for i in 1..=3u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|m| m.qos == QoS::AtLeastOnce && !m.dup));
    let ids: std::collections::BTreeSet<u16> = got.iter().map(id_of).collect();
    assert_eq!(ids.len(), 3);
    c.send(a, &puback(id_of(&got[1])));
    c.drop_conn(a);
    let b = c.connect(0, V311, "s", false);
    let again = c.publishes(b, false);
    assert_eq!(payloads(&again), vec![&[1u8][..], &[3u8][..]]);
    assert!(again.iter().all(|m| m.dup));
    assert_eq!(
        again.iter().map(id_of).collect::<Vec<_>>(),
        vec![id_of(&got[0]), id_of(&got[2])]
    );
    for m in &again {
        c.send(b, &puback(id_of(m)));
    }
    c.drop_conn(b);
    let d = c.connect(0, V311, "s", false);
    assert!(c.recv(d).is_empty(), "all acknowledged");
}

/// v3.1.1 [MQTT-4.3.3-1]: the QoS 2 sender: unused Packet Identifier, PUBLISH with QoS 2 and
/// DUP 0, PUBREL with the same id after PUBREC, and from then on only the PUBREL is sent again
/// (never the PUBLISH) until PUBCOMP.
#[test]
fn qos2_outbound_flow() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "s", false);
    c.subscribe(a, "t", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "t", b"x", QoS::ExactlyOnce, false, 1);
    c.publish(p, "t", b"y", QoS::ExactlyOnce, false, 2);
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.qos == QoS::ExactlyOnce && !m.dup));
    let (i1, i2) = (id_of(&got[0]), id_of(&got[1]));
    assert_ne!(i1, i2);
    c.send(a, &pubrec(i1));
    assert_eq!(c.recv(a), vec![pubrel(i1)]);
    c.drop_conn(a);
    let b = c.connect(0, V311, "s", false);
    let got = c.recv(b);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], pubrel(i1), "PUBREL again, not the PUBLISH");
    assert!(matches!(&got[1], Packet::Publish(m) if m.dup && id_of(m) == i2));
    c.send(b, &pubcomp(i1));
    c.send(b, &pubrec(i2));
    assert_eq!(c.recv(b), vec![pubrel(i2)]);
    c.send(b, &pubcomp(i2));
    c.drop_conn(b);
    let d = c.connect(0, V311, "s", false);
    assert!(c.recv(d).is_empty(), "both flows complete");
}

/// v3.1.1 [MQTT-4.5.0-1]: a message the server took ownership of is added to the session of
/// every client with a matching subscription, connected or not.
#[test]
fn owned_message_added_to_every_matching_session() {
    let mut c = Cluster::new(2);
    let on = c.connect(0, V311, "on", false);
    c.subscribe(on, "t/+", QoS::AtLeastOnce);
    let off = c.connect(1, V311, "off", false);
    c.subscribe(off, "t/#", QoS::AtLeastOnce);
    c.drop_conn(off);
    let other = c.connect(1, V311, "other", true);
    c.subscribe(other, "u", QoS::AtLeastOnce);
    let p = c.connect(1, V311, "p", true);
    c.publish(p, "t/1", b"m", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.recv(p), vec![puback(1)]);
    c.drop_conn(p);
    assert_eq!(payloads(&c.publishes(on, true)), vec![&b"m"[..]]);
    assert!(c.publishes(other, true).is_empty());
    let off = c.connect(0, V311, "off", false);
    assert_eq!(payloads(&c.publishes(off, true)), vec![&b"m"[..]]);
}

// ---------------------------------------------------------------------------- topics

/// v3.1.1 [MQTT-4.7.3-4]: no normalisation in matching: "a/b" does not match "a//b", "A/b",
/// "a/b/" or "/a/b", and precomposed "é" does not match "e" + combining acute accent.
#[test]
fn topic_matching_without_normalisation() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "a/b", QoS::AtMostOnce);
    c.subscribe(s, "caf\u{e9}", QoS::AtMostOnce);
    c.subscribe(s, "A//b", QoS::AtMostOnce);
    let p = c.connect(0, V311, "p", true);
    for t in [
        "a//b",
        "A/b",
        "a/b/",
        "/a/b",
        "a/B",
        "cafe\u{301}",
        "CAF\u{c9}",
        "A/b/",
        "a/b",
        "caf\u{e9}",
        "A//b",
    ] {
        c.publish(p, t, t.as_bytes(), QoS::AtMostOnce, false, 0);
    }
    let got: Vec<String> = c
        .publishes(s, true)
        .iter()
        .map(|m| m.topic.as_str().to_string())
        .collect();
    assert_eq!(got, vec!["a/b", "caf\u{e9}", "A//b"]);
}

/// v3.1.1 [MQTT-4.7.1-1]: wildcards are not allowed in a Topic Name: a PUBLISH to "a/+",
/// "#" or "a/#" closes the connection and reaches no subscriber; a Will Topic with a
/// wildcard refuses the CONNECT.
#[test]
fn wildcard_in_topic_name_refused() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "#", QoS::AtMostOnce);
    c.subscribe(s, "a/+", QoS::AtMostOnce);
    for (i, t) in ["a/+", "#", "a/#", "+"].iter().enumerate() {
        let p = c.connect(0, V311, &format!("p{i}"), true);
        c.publish(p, t, b"x", QoS::AtMostOnce, false, 0);
        assert!(c.is_closed(p), "{t}");
        assert!(c.recv(p).is_empty());
    }
    let conn = c.open(0, V311);
    let mut cn = connect(V311, "w", true);
    cn.will = Some(will("will/#", b"x", None));
    c.send(conn, &Packet::Connect(Box::new(cn)));
    assert!(c.is_closed(conn));
    assert!(!c
        .recv(conn)
        .iter()
        .any(|p| matches!(p, Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS)));
    assert!(c.publishes(s, true).is_empty());
    assert_eq!(c.engines[0].stats().wills_published, 0);
}
