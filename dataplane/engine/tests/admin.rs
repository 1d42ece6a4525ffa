//! The control plane's requests to a shard (`engine/src/admin.rs`): listings, kick, retained
//! delete, `$SYS` publication and live limits.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use tachyon_codec::*;
use tachyon_engine::admin::{AdminAnswer, AdminQuery, Page, PAGE_SLOTS};
use tachyon_engine::EngineConfig;

fn ask(c: &mut Cluster, shard: usize, q: AdminQuery) -> AdminAnswer {
    let now = c.now;
    let a = c.engines[shard].handle_admin(now, &q);
    c.pump();
    a
}

#[test]
fn listings_show_clients_sessions_and_subscriptions_of_their_shard() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, ProtocolVersion::V5, "a", true);
    c.subscribe(a, "x/#", QoS::AtLeastOnce);
    let b = c.connect(1, ProtocolVersion::V311, "b", false);
    c.subscribe(b, "y", QoS::AtMostOnce);
    c.drop_conn(b); // offline, persistent
    let AdminAnswer::Clients(Page { items: on0, .. }) = ask(
        &mut c,
        0,
        AdminQuery::Clients {
            client_id: None,
            from: 0,
        },
    ) else {
        panic!()
    };
    assert_eq!(on0.len(), 1);
    assert_eq!(on0[0].client_id, "a");
    assert_eq!(on0[0].protocol, "5");
    assert_eq!(on0[0].session.subscriptions, 1);
    let AdminAnswer::Clients(Page { items: on1, .. }) = ask(
        &mut c,
        1,
        AdminQuery::Clients {
            client_id: None,
            from: 0,
        },
    ) else {
        panic!()
    };
    assert!(on1.is_empty(), "b is offline: no client, a session");
    let AdminAnswer::Sessions(Page { items: s1, .. }) = ask(
        &mut c,
        1,
        AdminQuery::Sessions {
            client_id: None,
            from: 0,
        },
    ) else {
        panic!()
    };
    assert_eq!(s1.len(), 1);
    assert!(!s1[0].connected && s1[0].client_id == "b" && s1[0].protocol == "3.1.1");
    let q = AdminQuery::Subscriptions {
        client_id: Some("a".into()),
        from: 0,
    };
    let AdminAnswer::Subscriptions(Page { items: subs, .. }) = ask(&mut c, 0, q) else {
        panic!()
    };
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].filter.as_str(), subs[0].qos), ("x/#", 1));
}

#[test]
fn kick_sends_administrative_action_and_keeps_the_session() {
    let mut c = Cluster::new(1);
    let mut hello = connect(ProtocolVersion::V5, "a", false);
    hello.properties.session_expiry_interval = Some(3600);
    let (a, _) = c.connect_with(0, hello);
    let q = AdminQuery::Kick {
        client_id: "a".into(),
    };
    assert!(matches!(ask(&mut c, 0, q.clone()), AdminAnswer::Done(1)));
    let got = c.recv(a);
    assert_eq!(
        disconnect_reason(&got),
        Some(ReasonCode::ADMINISTRATIVE_ACTION)
    );
    assert!(c.is_closed(a));
    assert!(matches!(ask(&mut c, 0, q), AdminAnswer::Done(0)));
    let AdminAnswer::Sessions(Page { items: s, .. }) = ask(
        &mut c,
        0,
        AdminQuery::Sessions {
            client_id: None,
            from: 0,
        },
    ) else {
        panic!()
    };
    assert_eq!(s.len(), 1, "the session stays");
}

#[test]
fn delete_retained_clears_every_replica_without_publishing() {
    let mut c = Cluster::new(2);
    let p = c.connect(0, ProtocolVersion::V5, "p", true);
    c.publish(p, "r/t", b"kept", QoS::AtMostOnce, true, 0);
    let sub = c.connect(1, ProtocolVersion::V5, "s", true);
    c.subscribe(sub, "r/#", QoS::AtMostOnce);
    assert_eq!(c.publishes(sub, true).len(), 1, "the retained message");
    let q = AdminQuery::DeleteRetained {
        topic: "r/t".into(),
    };
    assert!(matches!(ask(&mut c, 1, q), AdminAnswer::Done(1)));
    assert!(c.publishes(sub, true).is_empty(), "nothing published");
    for e in &c.engines {
        assert_eq!(e.retained_count(), 0);
    }
}

#[test]
fn sys_topics_are_retained_for_subscribers_and_do_not_take_clients_places() {
    let mut c = Cluster::with_config(
        2,
        EngineConfig {
            retained_max: 1,
            ..Default::default()
        },
    );
    let q = AdminQuery::PublishSys {
        messages: vec![
            (
                "$SYS/broker/uptime".into(),
                Bytes::from_static(b"5 seconds"),
            ),
            ("$SYS/broker/version".into(), Bytes::from_static(b"tachyon")),
        ],
    };
    assert!(matches!(ask(&mut c, 0, q), AdminAnswer::Done(2)));
    let s = c.connect(1, ProtocolVersion::V311, "s", true);
    c.subscribe(s, "$SYS/#", QoS::AtMostOnce);
    let got = c.publishes(s, true);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| p.retain));
    // A client's retained message still fits under limits.max_retained = 1.
    let p = c.connect(0, ProtocolVersion::V5, "p", true);
    c.publish(p, "client/t", b"x", QoS::AtMostOnce, true, 0);
    assert_eq!(c.engines[0].stats().retained_refused, 0);
    // A client's own $SYS retained messages count like any other.
    c.publish(p, "$SYS/fake", b"x", QoS::AtMostOnce, true, 0);
    assert_eq!(c.engines[0].stats().retained_refused, 1);
}

#[test]
fn lower_limits_apply_to_new_connections_not_to_those_told_otherwise() {
    let mut c = Cluster::new(1);
    let (old, ack) = c.connect_with(0, connect(ProtocolVersion::V5, "old", true));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024 * 1024));
    let lower = EngineConfig {
        max_packet_size: 1024,
        topic_alias_maximum: 1,
        ..Default::default()
    };
    assert!(matches!(
        ask(&mut c, 0, AdminQuery::Reconfigure(Arc::new(lower))),
        AdminAnswer::Done(1)
    ));
    let (new, ack) = c.connect_with(0, connect(ProtocolVersion::V5, "new", true));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    assert_eq!(ack.properties.topic_alias_maximum, Some(1));
    // The old connection may still send what its CONNACK allowed: 4 KiB, alias 5.
    let mut p = publish("big", &[b'x'; 4096], QoS::AtMostOnce, false, 0);
    p.properties.topic_alias = Some(5);
    c.send(old, &Packet::Publish(p.clone()));
    assert!(!c.is_closed(old), "{:?}", c.recv(old));
    // The new one is held to the new limit (v5 [MQTT-3.2.2-15]: 0x95 Packet too large).
    c.send(new, &Packet::Publish(p));
    assert_eq!(
        disconnect_reason(&c.recv(new)),
        Some(ReasonCode::PACKET_TOO_LARGE)
    );
}

#[test]
fn a_large_listing_comes_in_pages_that_cover_every_session_once() {
    let mut c = Cluster::new(1);
    let n = PAGE_SLOTS + 300;
    for i in 0..n {
        c.connect(0, ProtocolVersion::V311, &format!("c{i}"), true);
    }
    let mut seen = std::collections::HashSet::new();
    let mut from = 0;
    let mut pages = 0;
    loop {
        let q = AdminQuery::Clients {
            client_id: None,
            from,
        };
        let AdminAnswer::Clients(p) = ask(&mut c, 0, q) else {
            panic!()
        };
        pages += 1;
        for ci in p.items {
            assert!(seen.insert(ci.client_id), "listed twice");
        }
        match p.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), n);
    assert_eq!(pages, 2);
    // One client by id: a single answer, no scan.
    let q = AdminQuery::Clients {
        client_id: Some("c7".into()),
        from: 0,
    };
    let AdminAnswer::Clients(p) = ask(&mut c, 0, q) else {
        panic!()
    };
    assert_eq!((p.items.len(), p.next), (1, None));
}

#[test]
fn a_retained_listing_stops_at_its_limit() {
    let mut c = Cluster::new(1);
    let p = c.connect(0, ProtocolVersion::V5, "p", true);
    for i in 0..10 {
        c.publish(p, &format!("r/{i}"), b"x", QoS::AtMostOnce, true, 0);
    }
    let q = |limit| AdminQuery::Retained {
        filter: "r/#".into(),
        limit,
    };
    let AdminAnswer::Retained(three) = ask(&mut c, 0, q(3)) else {
        panic!()
    };
    assert_eq!(three.len(), 3);
    let AdminAnswer::Retained(all) = ask(&mut c, 0, q(100)) else {
        panic!()
    };
    assert_eq!(all.len(), 10);
}

/// A live reconfiguration keeps the listeners' rules: listeners change with a restart only,
/// and a reordered `[[listeners]]` must not give a running listener another's rules.
#[test]
fn reconfigure_keeps_the_listener_rules() {
    let no31 = tachyon_engine::ListenerRules {
        mqtt31: false,
        ..Default::default()
    };
    let mut c = Cluster::with_config(
        1,
        EngineConfig {
            listeners: vec![no31],
            ..Default::default()
        },
    );
    let all = EngineConfig {
        listeners: vec![tachyon_engine::ListenerRules::default()],
        ..Default::default()
    };
    assert!(matches!(
        ask(&mut c, 0, AdminQuery::Reconfigure(Arc::new(all))),
        AdminAnswer::Done(1)
    ));
    let (conn, ack) = c.connect_with(0, connect(ProtocolVersion::V31, "old", true));
    assert_eq!(ack.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert!(c.is_closed(conn));
}
