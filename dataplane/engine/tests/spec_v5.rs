//! MQTT 5.0 behaviour, each test citing the statement it checks.

mod common;

use bytes::Bytes;
use common::*;
use tachyon_codec::ProtocolVersion::V5;
use tachyon_codec::*;
use tachyon_engine::EngineConfig;

fn disconnect_packet(reason: ReasonCode, expiry: Option<u32>) -> Packet {
    let properties = Properties {
        session_expiry_interval: expiry,
        ..Properties::default()
    };
    Packet::Disconnect(Disconnect { reason, properties })
}

fn connect_expiry(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect(V5, id, clean);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

/// v5 [MQTT-3.2.2-16]: a zero-length Client Identifier gets an Assigned Client Identifier.
#[test]
fn connect_empty_id_gets_assigned_identifier() {
    let mut c = Cluster::new(1);
    let (_, ack) = c.connect_with(0, connect(V5, "", true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!id.is_empty());
    assert_eq!(ack.properties.receive_maximum, Some(1024));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(ack.properties.topic_alias_maximum, Some(16));
}

/// v5 [MQTT-3.1.2-4]: Clean Start 1 discards the session; v5 [MQTT-3.1.2-5]: Clean Start 0
/// resumes it and Session Present is 1 (v5 [MQTT-3.2.2-3]).
#[test]
fn clean_start_and_resume() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("x", true, 100));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.send(a, &disconnect_packet(ReasonCode::SUCCESS, None));
    let (b, ack) = c.connect_with(0, connect_expiry("x", false, 100));
    assert!(ack.session_present);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"1", QoS::AtLeastOnce, false, 1);
    assert_eq!(c.publishes(b, true).len(), 1, "subscription survived");
    c.send(b, &disconnect_packet(ReasonCode::SUCCESS, None));
    let (b, ack) = c.connect_with(0, connect_expiry("x", true, 100));
    assert!(!ack.session_present);
    c.publish(p, "t", b"2", QoS::AtLeastOnce, false, 2);
    assert!(c.publishes(b, true).is_empty(), "subscription discarded");
}

/// v5 3.1.2.11: Session Expiry Interval 0 ends the session with the connection; N keeps it
/// N seconds, then it is gone.
#[test]
fn session_expiry_interval_bounds_offline_session() {
    let mut c = Cluster::new(1);
    let (a, _) = c.connect_with(0, connect_expiry("e", false, 10));
    c.subscribe(a, "t", QoS::AtLeastOnce);
    c.drop_conn(a);
    assert_eq!(c.engines[0].session_count(), 1);
    c.advance(9_000);
    let (b, ack) = c.connect_with(0, connect_expiry("e", false, 10));
    assert!(ack.session_present);
    c.drop_conn(b);
    c.advance(10_001);
    assert_eq!(c.engines[0].session_count(), 0, "expired");
    assert_eq!(c.engines[0].stats().sessions_expired, 1);
    let (_, ack) = c.connect_with(0, connect_expiry("e", false, 10));
    assert!(!ack.session_present);
}

/// v5 3.14.2.2.2: DISCONNECT may not set a Session Expiry after CONNECT set 0.
#[test]
fn disconnect_expiry_after_zero_is_protocol_error() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "z", true);
    c.send(a, &disconnect_packet(ReasonCode::SUCCESS, Some(30)));
    assert_eq!(
        disconnect_reason(&c.recv(a)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    assert!(c.is_closed(a));
}

/// v5 [MQTT-3.1.2-8], 3.1.3.2.2: a Will with a delay is sent after the delay when the session
/// is not resumed; v5 [MQTT-3.1.3-9]: not sent when the session resumes within the delay.
#[test]
fn will_delay_sent_late_or_cancelled_by_resume() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtMostOnce);

    let mut cn = connect_expiry("d", false, 100);
    cn.will = Some(will("will/d", b"late", Some(5)));
    let (d, _) = c.connect_with(0, cn.clone());
    c.drop_conn(d);
    c.advance(4_000);
    assert!(c.publishes(w, true).is_empty(), "not before the delay");
    c.advance(1_001);
    assert_eq!(c.publishes(w, true).len(), 1);

    let (d, _) = c.connect_with(0, cn.clone());
    c.drop_conn(d);
    c.advance(2_000);
    let (_d, ack) = c.connect_with(0, cn);
    assert!(ack.session_present);
    c.advance(10_000);
    assert!(c.publishes(w, true).is_empty(), "resumed within the delay");
}

/// v5 3.1.3.2.2: the Will is sent when the session ends, even if its delay is longer.
#[test]
fn will_sent_at_session_end_before_delay() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut cn = connect_expiry("d", false, 2);
    cn.will = Some(will("will/d", b"end", Some(60)));
    let (d, _) = c.connect_with(0, cn);
    c.drop_conn(d);
    c.advance(2_001);
    assert_eq!(c.publishes(w, true).len(), 1);
}

/// v5 [MQTT-3.14.4-3] and reason 0x04: DISCONNECT with Will Message publishes it; a normal one
/// discards it.
#[test]
fn disconnect_with_will_message_publishes_will() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut cn = connect(V5, "d", true);
    cn.will = Some(will("will/d", b"asked", None));
    let (d, _) = c.connect_with(0, cn.clone());
    c.send(
        d,
        &disconnect_packet(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, None),
    );
    assert_eq!(c.publishes(w, true).len(), 1);
    let (d, _) = c.connect_with(0, cn);
    c.send(d, &disconnect_packet(ReasonCode::SUCCESS, None));
    assert!(c.publishes(w, true).is_empty());
}

/// v5 [MQTT-3.1.4-3]: takeover sends DISCONNECT 0x8E to the existing connection.
#[test]
fn takeover_disconnects_old_with_0x8e() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "same", true);
    let _b = c.connect(0, V5, "same", true);
    assert_eq!(
        disconnect_reason(&c.recv(a)),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(c.is_closed(a));
    assert_eq!(c.engines[0].stats().takeovers, 1);
}

/// v5 [MQTT-3.8.3-3]: No Local.
#[test]
fn no_local_suppresses_own_messages() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe_opts(
        a,
        "t",
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: true,
            ..Default::default()
        },
        None,
    );
    let b = c.connect(0, V5, "b", true);
    c.subscribe(b, "t", QoS::AtMostOnce);
    c.publish(a, "t", b"x", QoS::AtMostOnce, false, 0);
    assert!(c.publishes(a, true).is_empty());
    assert_eq!(c.publishes(b, true).len(), 1);
}

/// v5 [MQTT-3.3.1-12], [MQTT-3.3.1-13]: Retain As Published.
#[test]
fn retain_as_published_keeps_flag() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe_opts(
        a,
        "t",
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    let b = c.connect(0, V5, "b", true);
    c.subscribe(b, "t", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"x", QoS::AtMostOnce, true, 0);
    assert!(c.publishes(a, true)[0].retain);
    assert!(!c.publishes(b, true)[0].retain);
}

/// v5 [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]: Retain Handling 0, 1, 2.
#[test]
fn retain_handling_options() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "r", b"kept", QoS::AtMostOnce, true, 0);
    let s = c.connect(0, V5, "s", true);
    let rh = |h| SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_handling: h,
        ..Default::default()
    };
    c.subscribe_opts(s, "r", rh(0), None);
    assert_eq!(c.publishes(s, true).len(), 1, "RH 0: sent");
    c.subscribe_opts(s, "r", rh(0), None);
    assert_eq!(
        c.publishes(s, true).len(),
        1,
        "RH 0: sent again on re-subscribe"
    );
    c.subscribe_opts(s, "r", rh(1), None);
    assert!(
        c.publishes(s, true).is_empty(),
        "RH 1: subscription existed"
    );
    c.subscribe_opts(s, "r2/#", rh(1), None);
    c.subscribe_opts(s, "r", rh(2), None);
    assert!(c.publishes(s, true).is_empty(), "RH 2: never");
    let t = c.connect(0, V5, "t", true);
    c.subscribe_opts(t, "#", rh(1), None);
    assert_eq!(c.publishes(t, true).len(), 1, "RH 1: new subscription");
}

/// v5 [MQTT-3.3.4-2], [MQTT-3.3.4-3]: overlapping subscriptions give one message with the
/// highest QoS and all Subscription Identifiers.
#[test]
fn overlapping_subscriptions_merge() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V5, "s", true);
    c.subscribe_opts(
        s,
        "a/+",
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            ..Default::default()
        },
        Some(5),
    );
    c.subscribe_opts(
        s,
        "a/#",
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        Some(7),
    );
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "a/b", b"x", QoS::ExactlyOnce, false, 1);
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![5, 7]);
}

/// v5 [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-18],
/// [MQTT-3.3.2-20]: forwarded unchanged: payload format, response topic, correlation data, user
/// properties (in order), content type.
#[test]
fn publish_properties_forwarded_unchanged() {
    let mut c = Cluster::new(2);
    let s = c.connect(1, V5, "s", true);
    c.subscribe(s, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"{}", QoS::AtLeastOnce, false, 1);
    m.properties.payload_format_indicator = Some(1);
    m.properties.response_topic = Some(s_("reply/here"));
    m.properties.correlation_data = Some(Bytes::from_static(b"\x00\x01corr"));
    m.properties.content_type = Some(s_("application/json"));
    m.properties.user_properties = vec![(s_("k"), s_("2")), (s_("a"), s_("1")), (s_("k"), s_("1"))];
    c.send(p, &Packet::Publish(m.clone()));
    let got = c.publishes(s, true);
    let q = &got[0].properties;
    assert_eq!(q.payload_format_indicator, Some(1));
    assert_eq!(q.response_topic, m.properties.response_topic);
    assert_eq!(q.correlation_data, m.properties.correlation_data);
    assert_eq!(q.content_type, m.properties.content_type);
    assert_eq!(q.user_properties, m.properties.user_properties);
}

fn s_(x: &str) -> Utf8Str {
    s(x)
}

/// v5 [MQTT-3.3.2-5], [MQTT-3.3.2-6]: an expired message is not delivered; a waiting one is
/// sent with the remaining interval.
#[test]
fn message_expiry_counts_down_and_drops() {
    let mut c = Cluster::new(1);
    let (s, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    c.subscribe(s, "t", QoS::AtLeastOnce);
    c.drop_conn(s);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"short", QoS::AtLeastOnce, false, 1);
    m.properties.message_expiry_interval = Some(5);
    c.send(p, &Packet::Publish(m));
    let mut m = publish("t", b"long", QoS::AtLeastOnce, false, 2);
    m.properties.message_expiry_interval = Some(60);
    c.send(p, &Packet::Publish(m));
    c.advance(10_000);
    let (s, _) = c.connect_with(0, connect_expiry("s", false, 1000));
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0].payload[..], b"long");
    assert_eq!(got[0].properties.message_expiry_interval, Some(50));
    assert_eq!(c.engines[0].stats().dropped_expired, 1);
}

/// v5 3.3.2.3.4: a Topic Alias set with a topic, then used alone.
#[test]
fn inbound_topic_alias_maps_topic() {
    let mut c = Cluster::new(1);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "long/topic", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("long/topic", b"1", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(3);
    c.send(p, &Packet::Publish(m));
    let mut m = publish("", b"2", QoS::AtMostOnce, false, 0);
    m.topic = Utf8Str::default();
    m.properties.topic_alias = Some(3);
    c.send(p, &Packet::Publish(m));
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].topic.as_str(), "long/topic");
}

/// v5 3.3.2.3.4: Topic Alias above the maximum we announced: DISCONNECT 0x94.
#[test]
fn topic_alias_out_of_range_disconnects_0x94() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("t", b"1", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(17);
    c.send(p, &Packet::Publish(m));
    assert_eq!(
        disconnect_reason(&c.recv(p)),
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
    assert!(c.is_closed(p));
}

/// v5 3.3.2.3.4: an alias never set is a Protocol Error.
#[test]
fn unknown_topic_alias_is_protocol_error() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("", b"1", QoS::AtMostOnce, false, 0);
    m.topic = Utf8Str::default();
    m.properties.topic_alias = Some(2);
    c.send(p, &Packet::Publish(m));
    assert_eq!(
        disconnect_reason(&c.recv(p)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

/// v5 3.3.2.3.4: outbound aliases within the client's Topic Alias Maximum.
#[test]
fn outbound_topic_alias_used_on_repeat() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "s", true);
    cn.properties.topic_alias_maximum = Some(1);
    let (s, _) = c.connect_with(0, cn);
    c.subscribe(s, "#", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    for topic in ["a", "a", "b"] {
        c.publish(p, topic, b"x", QoS::AtMostOnce, false, 0);
    }
    let got = c.publishes(s, true);
    assert_eq!(
        (got[0].topic.as_str(), got[0].properties.topic_alias),
        ("a", Some(1))
    );
    assert_eq!(
        (got[1].topic.as_str(), got[1].properties.topic_alias),
        ("", Some(1))
    );
    assert_eq!(
        (got[2].topic.as_str(), got[2].properties.topic_alias),
        ("b", None)
    );
}

/// v5 3.3.4: more unacknowledged QoS 2 PUBLISHes than our Receive Maximum: 0x93.
#[test]
fn receive_maximum_exceeded_disconnects_0x93() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            receive_maximum: 2,
            ..EngineConfig::default()
        },
    );
    let p = c.connect(0, V5, "p", true);
    for id in 1..=3 {
        c.publish(p, "t", b"x", QoS::ExactlyOnce, false, id);
    }
    let got = c.recv(p);
    assert_eq!(
        disconnect_reason(&got),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{got:?}"
    );
}

/// v5 3.3.4: we send at most the client's Receive Maximum unacknowledged QoS 1/2 PUBLISHes;
/// the rest wait and follow as acks arrive.
#[test]
fn client_receive_maximum_limits_inflight() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "s", true);
    cn.properties.receive_maximum = Some(2);
    let (s, _) = c.connect_with(0, cn);
    c.subscribe(s, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    for id in 1..=5 {
        c.publish(p, "t", &[id as u8], QoS::AtLeastOnce, false, id);
    }
    let first = c.publishes(s, false);
    assert_eq!(first.len(), 2);
    for m in &first {
        c.send(
            s,
            &Packet::PubAck(PubResp::new(m.packet_id.unwrap(), ReasonCode::SUCCESS)),
        );
    }
    let next = c.publishes(s, true);
    assert_eq!(next.len(), 2);
    let last = c.publishes(s, true);
    assert_eq!(last.len(), 1);
    let order: Vec<u8> = first
        .iter()
        .chain(&next)
        .chain(&last)
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(order, vec![1, 2, 3, 4, 5], "order kept");
}

/// v5 [MQTT-3.1.2-24], [MQTT-3.1.2-25]: nothing larger than the client's Maximum Packet Size
/// is sent; the message is dropped as if delivered.
#[test]
fn client_maximum_packet_size_respected() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "s", true);
    cn.properties.maximum_packet_size = Some(64);
    let (s, _) = c.connect_with(0, cn);
    c.subscribe(s, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", &[0u8; 100], QoS::AtLeastOnce, false, 1);
    c.publish(p, "t", b"small", QoS::AtLeastOnce, false, 2);
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"small");
    assert_eq!(c.engines[0].stats().dropped_too_large_for_client, 1);
}

/// v5 3.2.2.3.14: a Keep Alive ceiling is announced as Server Keep Alive and enforced.
#[test]
fn server_keep_alive_overrides_client_value() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            keep_alive_max_secs: 30,
            ..EngineConfig::default()
        },
    );
    let mut cn = connect(V5, "k", true);
    cn.keep_alive_secs = 0;
    let (k, ack) = c.connect_with(0, cn);
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    c.advance(45_001);
    assert!(c.is_closed(k));
    assert_eq!(
        disconnect_reason(&c.recv(k)),
        Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
    );
}

/// v5 4.8.2: shared subscriptions: one member per message, round robin, no retained.
#[test]
fn shared_subscription_round_robin_without_retained() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "job/1", b"retained", QoS::AtMostOnce, true, 0);
    let a = c.connect(0, V5, "a", true);
    let b = c.connect(0, V5, "b", true);
    c.subscribe(a, "$share/g/job/+", QoS::AtLeastOnce);
    c.subscribe(b, "$share/g/job/+", QoS::AtLeastOnce);
    assert!(
        c.publishes(a, true).is_empty() && c.publishes(b, true).is_empty(),
        "no retained for shared"
    );
    for i in 0..10u16 {
        c.publish(p, "job/1", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1);
    }
    let (ga, gb) = (c.publishes(a, true), c.publishes(b, true));
    assert_eq!(ga.len() + gb.len(), 10);
    assert_eq!(ga.len(), 5);
}

/// v5 4.8.2: a QoS 1 message inflight to a member whose session ends goes to another member.
#[test]
fn shared_inflight_goes_to_another_member_when_member_leaves() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    let b = c.connect(0, V5, "b", true);
    c.subscribe(a, "$share/g/t", QoS::AtLeastOnce);
    c.subscribe(b, "$share/g/t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"m1", QoS::AtLeastOnce, false, 1);
    let (ga, gb) = (c.publishes(a, false), c.publishes(b, false));
    let (holder, other) = if ga.len() == 1 { (a, b) } else { (b, a) };
    assert_eq!(ga.len() + gb.len(), 1);
    c.drop_conn(holder);
    let got = c.publishes(other, true);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"m1");
}

/// v5 [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
#[test]
fn shared_with_no_local_is_protocol_error() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    let opts = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    c.send(
        a,
        &Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::default(),
            filters: vec![(s_("$share/g/t"), opts)],
        }),
    );
    assert_eq!(
        disconnect_reason(&c.recv(a)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

/// v5 3.11.3: UNSUBACK reason 0x11 when no subscription existed.
#[test]
fn unsubscribe_reports_per_filter() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    c.subscribe(a, "x", QoS::AtMostOnce);
    c.send(
        a,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Properties::default(),
            filters: vec![s_("x"), s_("y")],
        }),
    );
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]),
        "{got:?}"
    );
}

/// Offline queue policy: beyond `queued_messages_max` new messages are dropped and counted.
#[test]
fn offline_queue_full_drops_newest() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            queued_messages_max: 3,
            ..EngineConfig::default()
        },
    );
    let (s, _) = c.connect_with(0, connect_expiry("s", false, 100));
    c.subscribe(s, "t", QoS::AtLeastOnce);
    c.drop_conn(s);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=5u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    assert_eq!(c.engines[0].stats().dropped_queue_full, 2);
    let (s, _) = c.connect_with(0, connect_expiry("s", false, 100));
    let got: Vec<u8> = c.publishes(s, true).iter().map(|m| m.payload[0]).collect();
    assert_eq!(got, vec![1, 2, 3]);
}

/// Slow consumer: QoS 0 beyond the output bound is dropped and counted.
#[test]
fn slow_consumer_qos0_dropped_beyond_output_bound() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            output_bytes_max: 1000,
            ..EngineConfig::default()
        },
    );
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "t", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    // The harness drains output on every pump, so fill the queue directly through one call:
    // publish many messages in one read.
    let mut bytes = bytes::BytesMut::new();
    for _ in 0..50 {
        encode(
            &Packet::Publish(publish("t", &[7u8; 100], QoS::AtMostOnce, false, 0)),
            V5,
            &mut bytes,
        )
        .unwrap();
    }
    c.send_bytes(p, &bytes);
    let got = c.publishes(s, true);
    assert!(got.len() < 50 && got.len() >= 9, "{}", got.len());
    assert_eq!(
        c.engines[0].stats().dropped_qos0_slow_consumer as usize,
        50 - got.len()
    );
}

/// Shutdown: v5 clients get DISCONNECT 0x8B (Server shutting down).
#[test]
fn shutdown_sends_0x8b() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, V5, "a", true);
    let now = c.now;
    c.engines[0].handle_shutdown(now);
    c.pump();
    assert_eq!(
        disconnect_reason(&c.recv(a)),
        Some(ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(c.is_closed(a));
}

/// v5 4.12: unsupported extended authentication: CONNACK 0x8C.
#[test]
fn connect_with_auth_method_refused_0x8c() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "a", true);
    cn.properties.authentication_method = Some(s_("SCRAM-SHA-1"));
    let (a, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(c.is_closed(a));
}

/// Anonymous access disabled: CONNACK 0x87 Not authorized.
#[test]
fn anonymous_refused_when_disabled() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            allow_anonymous: false,
            ..EngineConfig::default()
        },
    );
    let (a, ack) = c.connect_with(0, connect(V5, "a", true));
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    assert!(c.is_closed(a));
}

/// v5 3.1.4: packets sent before CONNACK are processed after it, in order.
#[test]
fn packets_pipelined_after_connect_are_processed() {
    let mut c = Cluster::new(2);
    let conn = c.open(1, V5);
    let mut b = bytes::BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect(V5, "pipelined", true))),
        V5,
        &mut b,
    )
    .unwrap();
    encode(
        &Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::default(),
            filters: vec![(s_("t"), SubscriptionOptions::default())],
        }),
        V5,
        &mut b,
    )
    .unwrap();
    encode(&Packet::PingReq, V5, &mut b).unwrap();
    c.send_bytes(conn, &b);
    let got = c.recv(conn);
    assert!(
        matches!(
            &got[..],
            [Packet::ConnAck(_), Packet::SubAck(_), Packet::PingResp]
        ),
        "{got:?}"
    );
}

/// v5 [MQTT-3.3.2-5]: a retained message past its Message Expiry Interval is not sent to new
/// subscriptions and leaves the store.
#[test]
fn retained_message_expires() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, V5, "p", true);
    let mut m = publish("r", b"short-lived", QoS::AtMostOnce, true, 0);
    m.properties.message_expiry_interval = Some(2);
    c.send(p, &Packet::Publish(m));
    assert_eq!(c.engines[0].retained_count(), 1);
    c.advance(2_500);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "r", QoS::AtMostOnce);
    assert!(c.publishes(s, true).is_empty());
    assert_eq!(c.engines[0].retained_count(), 0);
}

/// v5 [MQTT-4.8.2-4], [MQTT-4.8.2-5]: a QoS 2 message sent to a shared member stays with it
/// when its connection breaks; it is completed on resume and never sent to another member.
#[test]
fn shared_qos2_inflight_stays_with_member() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "a", false);
    cn.properties.session_expiry_interval = Some(60);
    let (a, _) = c.connect_with(0, cn.clone());
    let b = c.connect(0, V5, "b", true);
    c.subscribe(a, "$share/g/t", QoS::ExactlyOnce);
    c.subscribe(b, "$share/g/t", QoS::ExactlyOnce);
    let p = c.connect(0, V5, "p", true);
    // Round robin: the first message goes to the first member, "a".
    c.publish(p, "t", b"q2", QoS::ExactlyOnce, false, 1);
    let got = c.publishes(a, false);
    assert_eq!(got.len(), 1, "a holds the message unacknowledged");
    c.drop_conn(a);
    assert!(c.publishes(b, true).is_empty(), "not redispatched to b");
    let (a2, ack) = c.connect_with(0, cn);
    assert!(ack.session_present);
    let again = c.publishes(a2, true);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup && again[0].packet_id == got[0].packet_id);
}

/// policy: a client that sends but never reads is closed once its unread output passes
/// `output_close_bytes`; other clients are unaffected.
#[test]
fn client_not_reading_closed_as_slow_consumer() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            output_close_bytes: 2000,
            ..EngineConfig::default()
        },
    );
    let by = c.connect(0, V5, "bystander", true);
    let greedy = c.connect(0, V5, "greedy", true);
    let mut b = bytes::BytesMut::new();
    for _ in 0..1500 {
        encode(&Packet::PingReq, V5, &mut b).unwrap();
    }
    // One read holding 1500 PINGREQs: 3000 bytes of PINGRESP pile up unread.
    let now = c.now;
    c.engines[0].handle_bytes(now, greedy, &mut b);
    c.pump();
    assert!(c.is_closed(greedy));
    assert_eq!(c.engines[0].stats().closed_slow_consumer, 1);
    c.send(by, &Packet::PingReq);
    assert_eq!(c.recv(by), vec![Packet::PingResp]);
}

/// A Will Topic deeper than `topic_levels_max` is refused like a PUBLISH topic (it may become
/// a retained topic): CONNACK 0x90.
#[test]
fn connect_will_topic_too_deep_refused() {
    let mut c = Cluster::new(1);
    let mut cn = connect(V5, "deep", true);
    cn.will = Some(will(&"/".repeat(200), b"x", None));
    let (conn, ack) = c.connect_with(0, cn);
    assert_eq!(ack.reason, ReasonCode::TOPIC_NAME_INVALID);
    assert!(c.is_closed(conn));
}

/// v5 3.1.2.5: only DISCONNECT 0x00 deletes the Will; an error reason publishes it.
#[test]
fn disconnect_with_error_reason_publishes_will() {
    let mut c = Cluster::new(1);
    let w = c.connect(0, V5, "watch", true);
    c.subscribe(w, "will/#", QoS::AtMostOnce);
    let mut cn = connect(V5, "d", true);
    cn.will = Some(will("will/d", b"err", None));
    let (d, _) = c.connect_with(0, cn);
    c.send(d, &disconnect_packet(ReasonCode::UNSPECIFIED_ERROR, None));
    assert_eq!(c.publishes(w, true).len(), 1);
}

/// A retained PUBLISH followed by SUBSCRIBE in one read: the subscription sees the message
/// (v5 [MQTT-3.3.1-9]); and an empty retained PUBLISH before SUBSCRIBE clears it.
#[test]
fn retained_then_subscribe_in_one_read_sees_it() {
    let mut c = Cluster::new(3);
    let a = c.connect(0, V5, "a", true);
    let mut b = bytes::BytesMut::new();
    encode(
        &Packet::Publish(publish("r/x", b"kept", QoS::AtMostOnce, true, 0)),
        V5,
        &mut b,
    )
    .unwrap();
    let sub = Subscribe {
        packet_id: pid(1),
        properties: Properties::default(),
        filters: vec![(s_("r/#"), SubscriptionOptions::default())],
    };
    encode(&Packet::Subscribe(sub.clone()), V5, &mut b).unwrap();
    c.send_bytes(a, &b);
    let got = c.recv(a);
    assert!(
        matches!(&got[..], [Packet::SubAck(_), Packet::Publish(p)] if &p.payload[..] == b"kept"),
        "{got:?}"
    );
    let mut b = bytes::BytesMut::new();
    encode(
        &Packet::Publish(publish("r/x", b"", QoS::AtMostOnce, true, 0)),
        V5,
        &mut b,
    )
    .unwrap();
    encode(&Packet::Subscribe(sub), V5, &mut b).unwrap();
    c.send_bytes(a, &b);
    let got = c.recv(a);
    assert!(
        got.iter()
            .all(|p| !matches!(p, Packet::Publish(m) if !m.payload.is_empty())),
        "{got:?}"
    );
}

/// A claim that never completes (a shard that does not answer) ends with CONNACK 0x89 at the
/// connect timeout, not with a client waiting forever.
#[test]
fn claim_without_answer_times_out_with_server_busy() {
    let n = 2;
    let id = (0..)
        .map(|i| format!("stuck{i}"))
        .find(|x| tachyon_engine::home_shard(x.as_bytes(), n) == 1)
        .unwrap();
    let mut c = Cluster::new(n);
    let conn = c.open(0, V5);
    c.send_holding(conn, &Packet::Connect(Box::new(connect(V5, &id, true))), 1);
    // Shard 1 (the home) never gets the claim processed: drop its mail.
    while c.engines[0].poll_mail().is_some() {}
    c.advance(10_001);
    let got = c.recv(conn);
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::SERVER_BUSY),
        "{got:?}"
    );
    assert!(c.is_closed(conn));
}

/// v5 [MQTT-3.3.4-9], [MQTT-4.4.0-1]: on resume, unacknowledged messages are resent with their
/// identifiers, but no more at once than the client's new Receive Maximum.
#[test]
fn resume_resends_within_new_receive_maximum() {
    let mut c = Cluster::new(1);
    let mut cn = connect_expiry("s", false, 300);
    let (s, _) = c.connect_with(0, cn.clone());
    c.subscribe(s, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=5u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    assert_eq!(c.publishes(s, false).len(), 5);
    c.drop_conn(s);
    cn.properties.receive_maximum = Some(2);
    let (s, _) = c.connect_with(0, cn);
    let first = c.publishes(s, false);
    assert_eq!(first.len(), 2, "window of 2");
    assert!(first.iter().all(|m| m.dup));
    let mut all: Vec<u8> = first.iter().map(|m| m.payload[0]).collect();
    for m in &first {
        c.send(
            s,
            &Packet::PubAck(PubResp::new(m.packet_id.unwrap(), ReasonCode::SUCCESS)),
        );
    }
    loop {
        let more = c.publishes(s, true);
        if more.is_empty() {
            break;
        }
        assert!(more.len() <= 2);
        all.extend(more.iter().map(|m| m.payload[0]));
    }
    assert_eq!(all, vec![1, 2, 3, 4, 5], "all, in order");
}

/// Timers of connections that are gone do not accumulate: a reconnect loop with a long keep
/// alive leaves the timer heap bounded.
#[test]
fn reconnect_loop_does_not_grow_timers_without_bound() {
    let mut c = Cluster::new(1);
    for i in 0..5000 {
        let mut cn = connect(V5, &format!("loop{}", i % 3), true);
        cn.keep_alive_secs = 65535;
        let (conn, _) = c.connect_with(0, cn);
        c.drop_conn(conn);
        if i % 500 == 0 {
            c.advance(1);
        }
    }
    c.advance(1);
    assert!(
        c.engines[0].timer_count() < 3000,
        "{}",
        c.engines[0].timer_count()
    );
}

/// policy `limits.max_sessions`: a new session beyond the limit gets CONNACK 0x97; resuming
/// an existing one still works.
#[test]
fn session_limit_refuses_new_sessions_only() {
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            sessions_max_per_shard: 2,
            ..EngineConfig::default()
        },
    );
    let (a, _) = c.connect_with(0, connect_expiry("a", false, 100));
    let _b = c.connect(0, V5, "b", true);
    let (x, ack) = c.connect_with(0, connect(V5, "c", true));
    assert_eq!(ack.reason, ReasonCode::QUOTA_EXCEEDED);
    assert!(c.is_closed(x));
    c.drop_conn(a);
    let (_a2, ack) = c.connect_with(0, connect_expiry("a", false, 100));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(ack.session_present);
}

/// policy `limits.max_retained`: beyond it, retained PUBLISHes to new topics are forwarded but
/// not stored; existing topics can still be replaced and cleared.
#[test]
fn retained_limit_keeps_store_bounded() {
    let mut c = Cluster::with_config(
        2,
        EngineConfig {
            retained_max: 2,
            ..EngineConfig::default()
        },
    );
    let p = c.connect(0, V5, "p", true);
    let s = c.connect(1, V5, "s", true);
    c.subscribe(s, "r/#", QoS::AtMostOnce);
    for t in ["r/1", "r/2", "r/3"] {
        c.publish(p, t, b"v", QoS::AtMostOnce, true, 0);
    }
    assert_eq!(c.publishes(s, true).len(), 3, "all forwarded");
    assert_eq!(c.engines[0].retained_count(), 2);
    assert_eq!(c.engines[1].retained_count(), 2);
    c.publish(p, "r/1", b"", QoS::AtMostOnce, true, 0);
    assert_eq!(c.engines[1].retained_count(), 1);
}

/// policy (backpressure): a connected subscriber that falls behind does not lose QoS 1
/// messages at the queue limit; the shard reports congestion and throttles the publisher
/// until the subscriber catches up. One that stops reading for `congestion_timeout_ms` falls
/// back to the drop policy.
#[test]
fn slow_subscriber_throttles_publishers_then_times_out() {
    let cfg = EngineConfig {
        queued_messages_max: 5,
        queue_hard_factor: 4,
        inflight_max: 2,
        congestion_timeout_ms: 1_000,
        ..EngineConfig::default()
    };
    let mut c = Cluster::with_config(1, cfg);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "t", QoS::AtLeastOnce);
    let p = c.connect(0, V5, "p", true);
    for i in 1..=12u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    assert_eq!(
        c.engines[0].stats().dropped_queue_full,
        0,
        "over the limit, still queued"
    );
    assert!(c.engines[0].congested());
    assert!(c.engines[0].throttled(p), "the publisher waits");
    assert!(!c.engines[0].throttled(s), "the subscriber's acks flow");
    // The subscriber catches up: everything arrives, in order, and the pressure is gone.
    let mut got = Vec::new();
    loop {
        let batch = c.publishes(s, true);
        if batch.is_empty() {
            break;
        }
        got.extend(batch.iter().map(|m| m.payload[0]));
    }
    assert_eq!(got, (1..=12).collect::<Vec<u8>>());
    assert!(!c.engines[0].congested());
    // Now it stops reading: after the timeout it is "slow" and its excess is dropped.
    for i in 13..=40u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    assert!(c.engines[0].congested());
    c.advance(1_200);
    assert!(
        !c.engines[0].congested(),
        "a stalled subscriber does not hold everyone forever"
    );
    for i in 41..=60u16 {
        c.publish(p, "t", &[i as u8], QoS::AtLeastOnce, false, i);
    }
    assert!(c.engines[0].stats().dropped_queue_full > 0);
}

/// policy (backpressure for QoS 0): a subscriber whose unread output passes the soft bound
/// (`max_output_bytes` / 64) throttles publishers instead of losing QoS 0 messages at the
/// hard bound; when it reads again, the pressure is gone and nothing was dropped. One that
/// stops reading for `congestion_timeout_ms` no longer holds anyone back.
#[test]
fn qos0_subscriber_behind_throttles_publishers_instead_of_dropping() {
    let cfg = EngineConfig {
        output_bytes_max: 256 * 1024, // soft bound 4 KiB
        congestion_timeout_ms: 1_000,
        ..EngineConfig::default()
    };
    let mut c = Cluster::with_config(1, cfg);
    let s = c.connect(0, V5, "s", true);
    c.subscribe(s, "t", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    c.stall(s);
    let payload = [7u8; 100];
    let mut sent = 0;
    while !c.engines[0].congested() {
        c.publish(p, "t", &payload, QoS::AtMostOnce, false, 0);
        sent += 1;
        assert!(
            sent < 100,
            "congested before 100 x 100 B with a 4 KiB soft bound"
        );
    }
    assert!(c.queued_output(s) > 4096);
    assert!(c.engines[0].throttled(p), "the publisher waits");
    assert!(
        !c.engines[0].throttled(s),
        "the subscriber itself is not held back"
    );
    // It reads: everything arrives, nothing was dropped, the pressure is gone.
    c.unstall(s);
    assert_eq!(c.publishes(s, true).len(), sent);
    assert!(!c.engines[0].congested());
    assert_eq!(c.engines[0].stats().dropped_qos0_slow_consumer, 0);
    // It stops reading for good: after the timeout it is released, and what passes the hard
    // bound is dropped and counted (the broker never buffers without bound).
    c.stall(s);
    while !c.engines[0].congested() {
        c.publish(p, "t", &payload, QoS::AtMostOnce, false, 0);
    }
    c.advance(1_200);
    assert!(
        !c.engines[0].congested(),
        "a stalled subscriber does not hold everyone forever"
    );
    for _ in 0..3_000 {
        c.publish(p, "t", &payload, QoS::AtMostOnce, false, 0);
    }
    assert!(
        !c.engines[0].congested(),
        "a slow subscriber does not congest again"
    );
    assert!(c.engines[0].stats().dropped_qos0_slow_consumer > 0);
    assert!(c.queued_output(s) <= 256 * 1024 + 200);
}

/// QoS 0 fan-out shares one encoding between subscribers that need the same bytes; the ones
/// with per-subscriber parts still get their own: a Subscription Identifier (v5
/// [MQTT-3.3.4-3]), a Topic Alias (v5 3.3.2.3.4), the v3.1.1 encoding, RETAIN as published
/// (v5 [MQTT-3.3.1-12]).
#[test]
fn shared_fan_out_encoding_keeps_per_subscriber_parts() {
    let mut c = Cluster::new(1);
    let plain1 = c.connect(0, V5, "plain1", true);
    c.subscribe(plain1, "t", QoS::AtMostOnce);
    let with_id = c.connect(0, V5, "with-id", true);
    c.subscribe_opts(with_id, "t", SubscriptionOptions::default(), Some(9));
    let mut cn = connect(V5, "alias", true);
    cn.properties.topic_alias_maximum = Some(4);
    let (alias, _) = c.connect_with(0, cn);
    c.subscribe(alias, "t", QoS::AtMostOnce);
    let rap = c.connect(0, V5, "rap", true);
    c.subscribe_opts(
        rap,
        "t",
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    let old = c.connect(0, ProtocolVersion::V311, "old", true);
    c.subscribe(old, "t", QoS::AtMostOnce);
    let plain2 = c.connect(0, V5, "plain2", true);
    c.subscribe(plain2, "t", QoS::AtMostOnce);
    let p = c.connect(0, V5, "p", true);
    c.publish(p, "t", b"payload", QoS::AtMostOnce, true, 0);
    for (conn, ids, alias_prop, retain) in [
        (plain1, vec![], None, false),
        (with_id, vec![9], None, false),
        (alias, vec![], Some(1), false),
        (rap, vec![], None, true),
        (old, vec![], None, false),
        (plain2, vec![], None, false),
    ] {
        let got = c.publishes(conn, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].topic.as_str(), "t");
        assert_eq!(got[0].payload.as_ref(), b"payload");
        assert_eq!(got[0].properties.subscription_identifiers, ids);
        assert_eq!(got[0].properties.topic_alias, alias_prop);
        assert_eq!(got[0].retain, retain);
    }
}
