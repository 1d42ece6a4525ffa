//! MQTT 3.1.1 behaviour of one shard and of several, each test citing the statement it checks.

mod common;

use common::*;
use tachyon_codec::ProtocolVersion::V311;
use tachyon_codec::*;

/// v3.1.1 [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes.
#[test]
fn fresh_connection_publish_first_closes() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V311);
    c.publish(conn, "a", b"x", QoS::AtMostOnce, false, 0);
    assert!(c.is_closed(conn));
    assert!(
        c.recv(conn).is_empty(),
        "no CONNACK, no DISCONNECT in 3.1.1"
    );
    assert_eq!(
        c.engines[0].stats().violations["first_packet_not_connect"],
        1
    );
}

/// v3.1.1 [MQTT-3.1.0-2]: a second CONNECT is a protocol violation and disconnects.
#[test]
fn connected_second_connect_closes() {
    let mut c = Cluster::new(1);
    let conn = c.connect(0, V311, "a", true);
    c.send(conn, &Packet::Connect(Box::new(connect(V311, "a", true))));
    assert!(c.is_closed(conn));
    assert!(c.recv(conn).is_empty());
}

/// v3.1.1 [MQTT-3.1.2-2]: unsupported Protocol Level gets CONNACK return code 1, then close.
#[test]
fn connect_level_6_gets_return_code_1() {
    let mut c = Cluster::new(1);
    let conn = c.open(0, V311);
    // CONNECT "MQTT" level 6, clean session, keep alive 60, client id "a".
    let bytes = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 1, b'a',
    ];
    c.send_bytes(conn, &bytes);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
}

/// v3.1.1 [MQTT-3.1.3-8]: zero-length ClientId with CleanSession 0 -> return code 2, close.
#[test]
fn connect_empty_id_persistent_rejected() {
    let mut c = Cluster::new(1);
    let (conn, ack) = c.connect_with(0, connect(V311, "", false));
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(ack.reason.to_v311_connack(), 2);
    assert!(c.is_closed(conn));
}

/// v3.1.1 [MQTT-3.1.3-6]: zero-length ClientId with CleanSession 1 is assigned a unique id.
#[test]
fn connect_empty_id_clean_accepted() {
    let mut c = Cluster::new(1);
    let (a, ack) = c.connect_with(0, connect(V311, "", true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let (b, ack2) = c.connect_with(0, connect(V311, "", true));
    assert_eq!(ack2.reason, ReasonCode::SUCCESS);
    // Both stay connected: the assigned ids differ, so no takeover happened.
    assert!(!c.is_closed(a) && !c.is_closed(b));
}

/// v3.1.1 [MQTT-3.2.2-1], [MQTT-3.2.2-2], [MQTT-3.2.2-3]: Session Present.
#[test]
fn connack_session_present_follows_stored_state() {
    let mut c = Cluster::new(1);
    let (a, ack) = c.connect_with(0, connect(V311, "p", false));
    assert!(!ack.session_present, "no stored session yet");
    c.send(
        a,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    let (_, ack) = c.connect_with(0, connect(V311, "p", false));
    assert!(ack.session_present, "stored session resumed");
    let (_, ack) = c.connect_with(0, connect(V311, "p", true));
    assert!(!ack.session_present, "clean session");
}

/// v3.1.1 [MQTT-3.1.2-4], [MQTT-4.4.0-1]: a resumed session gets queued messages, and
/// unacknowledged ones again with DUP and their original Packet Identifier.
#[test]
fn persistent_session_queues_and_resends_with_dup() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V311, "sub", false);
    c.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let publ = c.connect(0, V311, "pub", true);
    c.publish(publ, "t/1", b"one", QoS::AtLeastOnce, false, 1);
    let got = c.publishes(sub, false); // not acknowledged
    assert_eq!(got.len(), 1);
    let first_id = got[0].packet_id;
    c.drop_conn(sub);
    c.publish(publ, "t/2", b"two", QoS::AtLeastOnce, false, 2);
    let (sub2, ack) = c.connect_with(0, connect(V311, "sub", false));
    assert!(ack.session_present);
    let got = c.publishes(sub2, true);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].dup && got[0].packet_id == first_id && &got[0].payload[..] == b"one");
    assert!(!got[1].dup && &got[1].payload[..] == b"two");
}

/// v3.1.1 [MQTT-3.1.2-6]: CleanSession 1 discards the previous session.
#[test]
fn clean_session_discards_subscriptions() {
    let mut c = Cluster::new(1);
    let sub = c.connect(0, V311, "s", false);
    c.subscribe(sub, "t", QoS::AtLeastOnce);
    c.drop_conn(sub);
    let sub = c.connect(0, V311, "s", true);
    let publ = c.connect(0, V311, "p", true);
    c.publish(publ, "t", b"x", QoS::AtLeastOnce, false, 1);
    assert!(c.publishes(sub, true).is_empty());
}

/// v3.1.1 [MQTT-3.1.2-8]: the Will is published when the connection closes without DISCONNECT.
#[test]
fn connected_connection_lost_publishes_will() {
    let mut c = Cluster::new(1);
    let watcher = c.connect(0, V311, "w", true);
    c.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let mut cn = connect(V311, "dies", true);
    cn.will = Some(will("will/dies", b"gone", None));
    let (dies, _) = c.connect_with(0, cn);
    c.drop_conn(dies);
    let got = c.publishes(watcher, true);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"gone");
}

/// v3.1.1 [MQTT-3.14.4-3], [MQTT-3.1.2-10]: DISCONNECT discards the Will.
#[test]
fn connected_disconnect_discards_will() {
    let mut c = Cluster::new(1);
    let watcher = c.connect(0, V311, "w", true);
    c.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let mut cn = connect(V311, "leaves", true);
    cn.will = Some(will("will/leaves", b"gone", None));
    let (leaves, _) = c.connect_with(0, cn);
    c.send(
        leaves,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    c.drop_conn(leaves);
    assert!(c.publishes(watcher, true).is_empty());
}

/// v3.1.1 [MQTT-3.1.2-24]: no packet for 1.5 x Keep Alive closes the connection.
#[test]
fn connected_silent_past_keep_alive_closes() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V311, "k", true);
    cn.keep_alive_secs = 10;
    let (k, _) = c.connect_with(0, cn);
    c.advance(14_000);
    assert!(!c.is_closed(k), "still within 1.5 x keep alive");
    c.send(k, &Packet::PingReq);
    assert_eq!(c.recv(k), vec![Packet::PingResp]); // v3.1.1 [MQTT-3.12.4-1]
    c.advance(14_999);
    assert!(!c.is_closed(k));
    c.advance(2);
    assert!(c.is_closed(k));
}

/// v3.1.1 [MQTT-3.1.4-2]: a second connection with the same ClientId disconnects the first.
#[test]
fn same_client_id_takes_over() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V311, "dup", true);
    let b = c.connect(0, V311, "dup", true);
    assert!(c.is_closed(a));
    assert!(!c.is_closed(b));
    assert!(
        c.recv(a).is_empty(),
        "3.1.1 has no DISCONNECT from the server"
    );
}

/// v3.1.1 [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8]: retained messages are stored and sent
/// with RETAIN 1 to new subscriptions; v3.1.1 [MQTT-3.3.1-9]: RETAIN 0 on live forwarding.
#[test]
fn retained_message_sent_on_subscribe_with_retain_flag() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "r/1", b"kept", QoS::AtLeastOnce, true, 1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "r/+", QoS::AtLeastOnce);
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(&got[0].payload[..], b"kept");
    c.publish(p, "r/1", b"live", QoS::AtLeastOnce, true, 2);
    let got = c.publishes(s, true);
    assert!(!got[0].retain, "established subscription: RETAIN 0");
}

/// v3.1.1 [MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained payload clears the topic and is
/// forwarded as normal.
#[test]
fn retained_empty_payload_clears() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "r", b"kept", QoS::AtMostOnce, true, 0);
    let live = c.connect(0, V311, "l", true);
    c.subscribe(live, "r", QoS::AtMostOnce);
    let _ = c.publishes(live, true);
    c.publish(p, "r", b"", QoS::AtMostOnce, true, 0);
    assert_eq!(
        c.publishes(live, true).len(),
        1,
        "the clearing message is forwarded"
    );
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "r", QoS::AtMostOnce);
    assert!(c.publishes(s, true).is_empty());
    assert_eq!(c.engines[0].retained_count(), 0);
}

/// v3.1.1 [MQTT-3.3.2-2]: a wildcard in a PUBLISH Topic Name closes the connection.
#[test]
fn publish_wildcard_topic_closes() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "a/+", b"x", QoS::AtMostOnce, false, 0);
    assert!(c.is_closed(p));
}

/// v3.1.1 [MQTT-3.3.4-1], [MQTT-4.3.2-2]: QoS 1 is answered with PUBACK.
#[test]
fn publish_qos1_acked() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "a", b"x", QoS::AtLeastOnce, false, 7);
    assert_eq!(
        c.recv(p),
        vec![Packet::PubAck(PubResp::new(pid(7), ReasonCode::SUCCESS))]
    );
}

/// v3.1.1 [MQTT-4.3.3-2]: QoS 2 PUBREC, then PUBCOMP for PUBREL; a retransmitted PUBLISH
/// before PUBREL is not delivered again.
#[test]
fn publish_qos2_exactly_once() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "a", QoS::ExactlyOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "a", b"x", QoS::ExactlyOnce, false, 9);
    assert_eq!(
        c.recv(p),
        vec![Packet::PubRec(PubResp::new(pid(9), ReasonCode::SUCCESS))]
    );
    let mut again = publish("a", b"x", QoS::ExactlyOnce, false, 9);
    again.dup = true;
    c.send(p, &Packet::Publish(again));
    assert_eq!(
        c.recv(p),
        vec![Packet::PubRec(PubResp::new(pid(9), ReasonCode::SUCCESS))]
    );
    c.send(
        p,
        &Packet::PubRel(PubResp::new(pid(9), ReasonCode::SUCCESS)),
    );
    assert_eq!(
        c.recv(p),
        vec![Packet::PubComp(PubResp::new(pid(9), ReasonCode::SUCCESS))]
    );
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

/// v3.1.1 [MQTT-3.8.4-1], [MQTT-3.8.4-6]: SUBACK; delivery at min(published, granted) QoS.
#[test]
fn subscription_qos_downgrades_delivery() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    let ack = c.subscribe(s, "a", QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "a", b"x", QoS::ExactlyOnce, false, 1);
    let got = c.publishes(s, true);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    c.publish(p, "a", b"y", QoS::AtMostOnce, false, 0);
    assert_eq!(c.publishes(s, true)[0].qos, QoS::AtMostOnce);
}

/// v3.1.1 [MQTT-3.10.4-4]: UNSUBACK, and no more messages.
#[test]
fn unsubscribe_stops_delivery() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "a/#", QoS::AtMostOnce);
    c.send(
        s,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            properties: Properties::default(),
            filters: vec![s_("a/#")],
        }),
    );
    assert_eq!(
        c.recv(s),
        vec![Packet::UnsubAck(UnsubAck {
            packet_id: pid(3),
            properties: Properties::default(),
            reasons: vec![]
        })]
    );
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "a/b", b"x", QoS::AtMostOnce, false, 0);
    assert!(c.publishes(s, true).is_empty());
}

fn s_(x: &str) -> Utf8Str {
    s(x)
}

/// v3.1.1 [MQTT-4.7.2-1]: `#` and `+/...` do not match topics starting with `$`.
#[test]
fn dollar_topics_not_matched_by_leading_wildcards() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V311, "s", true);
    c.subscribe(s, "#", QoS::AtMostOnce);
    c.subscribe(s, "+/x", QoS::AtMostOnce);
    let d = c.connect(0, V311, "d", true);
    c.subscribe(d, "$SYS/#", QoS::AtMostOnce);
    let p = c.connect(0, V311, "p", true);
    c.publish(p, "$SYS/x", b"1", QoS::AtMostOnce, false, 0);
    assert!(c.publishes(s, true).is_empty());
    assert_eq!(c.publishes(d, true).len(), 1);
}
