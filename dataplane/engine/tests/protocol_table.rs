//! The protocol state table (`tachyon_engine::protocol`), tested exhaustively: for every
//! (protocol version, connection stage, packet, state of the Packet Identifier it names) a
//! fresh two-shard broker is driven into that state, the packet is sent, and the wire bytes
//! and the session afterwards are checked against what the row's reaction promises. The
//! expectations below are written from the reactions' meaning, independently of the engine's
//! dispatch: a row whose reaction the engine does not carry out fails here.
//!
//! v5 1.2 (Protocol Error), [MQTT-4.13.1-1]; v3.1.1 [MQTT-4.8.0-1]: a packet inconsistent
//! with the state closes the connection; v5 [MQTT-4.3.3-10], [MQTT-4.3.3-11], [MQTT-2.2.1-3];
//! v3.1.1 [MQTT-4.3.3-2], [MQTT-2.3.1-2] (the flow rows).

mod common;

use bytes::BytesMut;
use common::*;
use tachyon_codec::*;
use tachyon_engine::protocol::{self, IdState, Inbound, Reaction, Rule, Stage};
use tachyon_engine::ConnId;

/// The subject's Client Identifier: its home shard is 1, its connections are on shard 0, so
/// its claim can be held between CONNECT and CONNACK.
fn subject_id() -> String {
    (0..)
        .map(|i| format!("subject-{i}"))
        .find(|id| tachyon_engine::home_shard(id.as_bytes(), 2) == 1)
        .expect("some id is homed at shard 1")
}

/// The identifier the packet under test names when the setup leaves it free.
const FREE_ID: u16 = 7;

struct Setup {
    c: Cluster,
    version: ProtocolVersion,
    client: String,
    /// The subject's connection, on shard 0.
    conn: ConnId,
    /// The identifier the packet under test names.
    pid: u16,
    /// What the subject's session holds for `pid` before the packet (outbound or inbound).
    held: IdState,
    /// Subscribed to "x/#" (QoS 2, v5, shard 1): sees what the subject's PUBLISHes route.
    watch: ConnId,
}

fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = connect(version, id, false);
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(600);
    }
    c
}

fn encode_for(version: ProtocolVersion, p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(p, version, &mut b).expect("test packets encode");
    b.to_vec()
}

fn resp(id: u16) -> PubResp {
    PubResp::new(pid(id), ReasonCode::SUCCESS)
}

/// The bytes of `packet` naming identifier `id`.
fn packet_bytes(version: ProtocolVersion, packet: Inbound, id: u16, client: &str) -> Vec<u8> {
    let p = match packet {
        Inbound::Connect => Packet::Connect(Box::new(persistent(version, client))),
        Inbound::ConnAck => Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        Inbound::Publish0 => Packet::Publish(publish("x/p0", b"p0", QoS::AtMostOnce, false, 0)),
        Inbound::Publish1 => Packet::Publish(publish("x/p1", b"p1", QoS::AtLeastOnce, false, id)),
        Inbound::Publish2 => Packet::Publish(publish("x/p2", b"p2", QoS::ExactlyOnce, false, id)),
        Inbound::PubAck => Packet::PubAck(resp(id)),
        Inbound::PubRec => Packet::PubRec(resp(id)),
        Inbound::PubRel => Packet::PubRel(resp(id)),
        Inbound::PubComp => Packet::PubComp(resp(id)),
        Inbound::Subscribe => Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Properties::default(),
            filters: vec![(
                s("y/t"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
        }),
        Inbound::SubAck => Packet::SubAck(SubAck {
            packet_id: pid(id),
            properties: Properties::default(),
            reasons: vec![ReasonCode::GRANTED_QOS_0],
        }),
        Inbound::Unsubscribe => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            properties: Properties::default(),
            filters: vec![s("y/t")],
        }),
        Inbound::UnsubAck => Packet::UnsubAck(UnsubAck {
            packet_id: pid(id),
            properties: Properties::default(),
            reasons: if version.is_v5() {
                vec![ReasonCode::SUCCESS]
            } else {
                Vec::new()
            },
        }),
        Inbound::PingReq => Packet::PingReq,
        Inbound::PingResp => Packet::PingResp,
        Inbound::Disconnect => Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        // AUTH does not exist in 3.x: its raw bytes (type 15, no body).
        Inbound::Auth if !version.is_v5() => return vec![0xF0, 0x00],
        Inbound::Auth => Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    };
    encode_for(version, &p)
}

/// A broker with the subject connected (persistent session) and `held` prepared.
fn connected(version: ProtocolVersion, held: IdState) -> Setup {
    let mut c = Cluster::new(2);
    let client = subject_id();
    let watch = c.connect(1, ProtocolVersion::V5, "watch", true);
    c.subscribe(watch, "x/#", QoS::ExactlyOnce);
    let feeder = c.connect(1, ProtocolVersion::V5, "feeder", true);
    let (conn, ack) = c.connect_with(0, persistent(version, &client));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let mut pid = FREE_ID;
    match held {
        IdState::None | IdState::Free => {}
        IdState::AwaitPubAck | IdState::AwaitPubRec | IdState::AwaitPubComp => {
            let qos = if held == IdState::AwaitPubAck {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            c.subscribe(conn, "s/t", qos);
            c.publish(feeder, "s/t", b"to the subject", qos, false, 1);
            let got = c.publishes(conn, false);
            assert_eq!(got.len(), 1, "{got:?}");
            pid = got[0].packet_id.expect("QoS > 0").get();
            if held == IdState::AwaitPubComp {
                c.send(conn, &Packet::PubRec(resp(pid)));
                let got = c.recv(conn);
                assert!(
                    matches!(&got[..], [Packet::PubRel(r)] if r.packet_id.get() == pid),
                    "{got:?}"
                );
            }
        }
        IdState::AwaitPubRel | IdState::AwaitPubRelEarlier => {
            c.publish(conn, "x/held", b"held", QoS::ExactlyOnce, false, FREE_ID);
            let got = c.recv(conn);
            assert!(
                matches!(&got[..], [Packet::PubRec(r)] if r.packet_id.get() == FREE_ID),
                "{got:?}"
            );
            assert_eq!(c.publishes(watch, true).len(), 1);
        }
    }
    let mut conn = conn;
    if held == IdState::AwaitPubRelEarlier {
        // The session is resumed on a new connection: the flow is an earlier connection's.
        c.drop_conn(conn);
        let (again, ack) = c.connect_with(0, persistent(version, &client));
        // (MQTT 3.1's CONNACK has no Session Present flag.)
        assert!(ack.session_present || version == ProtocolVersion::V31);
        conn = again;
    }
    Setup {
        c,
        version,
        client,
        conn,
        pid,
        held,
        watch,
    }
}

/// Sends the packet under test in the case's stage; returns the packets the subject then
/// received.
fn drive(
    version: ProtocolVersion,
    stage: Stage,
    packet: Inbound,
    id: IdState,
) -> (Setup, Vec<Packet>) {
    match stage {
        Stage::BeforeConnect => {
            let mut s = connected(version, IdState::None);
            // A second connection of the subject, not yet with CONNECT.
            s.conn = s.c.open(0, version);
            let bytes = packet_bytes(version, packet, s.pid, &s.client);
            s.c.send_bytes(s.conn, &bytes);
            let got = s.c.recv(s.conn);
            (s, got)
        }
        Stage::Connecting => {
            let mut s = connected(version, IdState::None);
            s.c.drop_conn(s.conn);
            s.conn = s.c.open(0, version);
            // CONNECT, then the packet, while the home shard's answer is held back.
            let mut bytes = packet_bytes(version, Inbound::Connect, 0, &s.client);
            s.c.send_bytes_holding(s.conn, &bytes, 1);
            assert!(
                s.c.recv(s.conn).is_empty(),
                "no CONNACK while the claim is held"
            );
            bytes = packet_bytes(version, packet, s.pid, &s.client);
            s.c.send_bytes_holding(s.conn, &bytes, 1);
            s.c.pump();
            let got = s.c.recv(s.conn);
            (s, got)
        }
        Stage::Connected => {
            let mut s = connected(version, id);
            let bytes = packet_bytes(version, packet, s.pid, &s.client);
            s.c.send_bytes(s.conn, &bytes);
            let got = s.c.recv(s.conn);
            (s, got)
        }
        Stage::Closed => {
            // DISCONNECT and the packet in one read; the subject's QoS 1 delivery is in
            // flight, so that an acknowledgement after DISCONNECT would show.
            let mut s = connected(version, IdState::AwaitPubAck);
            let mut bytes = packet_bytes(version, Inbound::Disconnect, 0, &s.client);
            bytes.extend(packet_bytes(version, packet, s.pid, &s.client));
            s.c.send_bytes(s.conn, &bytes);
            let got = s.c.recv(s.conn);
            (s, got)
        }
    }
}

fn reason_of(p: &Packet) -> Option<(u16, ReasonCode)> {
    match p {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some((r.packet_id.get(), r.reason))
        }
        _ => None,
    }
}

fn violation_kind(rule: Rule) -> &'static str {
    match rule {
        Rule::FirstPacketNotConnect => "first_packet_not_connect",
        Rule::SecondConnect => "second_connect",
        Rule::ServerOnlyPacket => "server_only_packet",
        Rule::AckOfOtherFlow => "ack_of_other_flow",
        Rule::PacketIdInUse => "packet_id_in_use",
        Rule::AuthNotSupported => "auth_not_supported",
    }
}

/// The subject's outbound flow state for `pid` after the reaction, for the resend check.
fn outbound_after(held: IdState, reaction: Reaction) -> IdState {
    match (held, reaction) {
        (IdState::AwaitPubAck | IdState::AwaitPubComp, Reaction::EndFlow) => IdState::None,
        (IdState::AwaitPubRec, Reaction::Release) => IdState::AwaitPubComp,
        (h @ (IdState::AwaitPubAck | IdState::AwaitPubRec | IdState::AwaitPubComp), _) => h,
        _ => IdState::None,
    }
}

/// One combination: the checks of its row's reaction. `what` names it in failures.
fn check(version: ProtocolVersion, stage: Stage, packet: Inbound, id: IdState) {
    let what = format!("{version:?} {stage:?} {packet:?} {id:?}");
    let row = protocol::lookup(version, stage, packet, id);
    let (mut s, got) = drive(version, stage, packet, id);
    let v5 = version.is_v5();
    let pid_sent = s.pid;
    // Between CONNECT and CONNACK a deferred packet is handled as when connected, once the
    // CONNACK is out; the session is new, so its identifier is free.
    let (rest, reaction, held, stage) = match (stage, row.reaction) {
        (Stage::Connecting, Reaction::Defer) => {
            assert!(
                matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason == ReasonCode::SUCCESS),
                "{what}: CONNACK first: {got:?}"
            );
            let id = *protocol::id_states(Stage::Connected, packet)
                .first()
                .expect("every key has a state");
            let id = if id == IdState::None {
                id
            } else {
                IdState::Free
            };
            let r = protocol::lookup(version, Stage::Connected, packet, id).reaction;
            (got[1..].to_vec(), r, id, Stage::Connected)
        }
        (Stage::Closed, r) => (got.clone(), r, IdState::AwaitPubAck, stage),
        (_, r) => (got.clone(), r, s.held, stage),
    };
    let stats = s.c.engines[0].stats().clone();
    let closed = s.c.is_closed(s.conn);
    if reaction == Reaction::ReleaseHeldAccept {
        assert_eq!(stats.inbound_ids_released, 1, "{what}: counted");
    }
    match reaction {
        Reaction::Accept | Reaction::ReleaseHeldAccept => {
            let routed = s.c.publishes(s.watch, true);
            match packet {
                Inbound::Connect => assert!(
                    matches!(&rest[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::SUCCESS),
                    "{what}: {rest:?}"
                ),
                Inbound::Publish0 | Inbound::Publish1 | Inbound::Publish2 => {
                    match packet {
                        Inbound::Publish0 => assert!(rest.is_empty(), "{what}: {rest:?}"),
                        Inbound::Publish1 => assert!(
                            matches!(&rest[..], [Packet::PubAck(r)] if r.packet_id.get() == pid_sent),
                            "{what}: {rest:?}"
                        ),
                        _ => assert!(
                            matches!(&rest[..], [Packet::PubRec(r)] if r.packet_id.get() == pid_sent),
                            "{what}: {rest:?}"
                        ),
                    }
                    assert_eq!(routed.len(), 1, "{what}: routed once");
                }
                Inbound::Subscribe => assert!(
                    matches!(&rest[..], [Packet::SubAck(a)] if a.packet_id.get() == pid_sent && a.reasons == vec![ReasonCode::GRANTED_QOS_1]),
                    "{what}: {rest:?}"
                ),
                Inbound::Unsubscribe => assert!(
                    matches!(&rest[..], [Packet::UnsubAck(a)] if a.packet_id.get() == pid_sent),
                    "{what}: {rest:?}"
                ),
                Inbound::PingReq => {
                    assert!(matches!(&rest[..], [Packet::PingResp]), "{what}: {rest:?}")
                }
                Inbound::Disconnect => {
                    assert!(rest.is_empty(), "{what}: {rest:?}");
                    assert!(closed, "{what}: DISCONNECT closes");
                }
                other => panic!("{what}: the table accepts {other:?}"),
            }
            if packet != Inbound::Disconnect {
                assert!(!closed, "{what}: stays open");
            }
        }
        Reaction::Defer => panic!("{what}: deferred outside CONNECT..CONNACK"),
        Reaction::PubRecAgain => {
            assert!(
                matches!(&rest[..], [Packet::PubRec(r)] if r.packet_id.get() == pid_sent && r.reason == ReasonCode::SUCCESS),
                "{what}: {rest:?}"
            );
            assert!(
                s.c.publishes(s.watch, true).is_empty(),
                "{what}: not routed again"
            );
            assert!(!closed, "{what}");
        }
        Reaction::EndFlow => {
            assert!(rest.is_empty(), "{what}: {rest:?}");
            assert!(!closed, "{what}");
        }
        Reaction::Release | Reaction::ReleaseAgain => {
            assert!(
                matches!(rest.iter().map(reason_of).collect::<Vec<_>>()[..], [Some((p, ReasonCode::SUCCESS))] if p == pid_sent)
                    && matches!(&rest[..], [Packet::PubRel(_)]),
                "{what}: {rest:?}"
            );
            assert!(!closed, "{what}");
        }
        Reaction::Complete => {
            assert!(
                matches!(&rest[..], [Packet::PubComp(r)] if r.packet_id.get() == pid_sent && r.reason == ReasonCode::SUCCESS),
                "{what}: {rest:?}"
            );
            assert!(!closed, "{what}");
        }
        Reaction::IgnoreUnknownId | Reaction::PubRelUnknownId | Reaction::PubCompUnknownId => {
            let expect_reason = if v5 {
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            } else {
                ReasonCode::SUCCESS
            };
            match reaction {
                Reaction::IgnoreUnknownId => assert!(rest.is_empty(), "{what}: {rest:?}"),
                Reaction::PubRelUnknownId => assert!(
                    matches!(&rest[..], [Packet::PubRel(r)] if r.packet_id.get() == pid_sent && r.reason == expect_reason),
                    "{what}: {rest:?}"
                ),
                _ => assert!(
                    matches!(&rest[..], [Packet::PubComp(r)] if r.packet_id.get() == pid_sent && r.reason == expect_reason),
                    "{what}: {rest:?}"
                ),
            }
            let i = match packet {
                Inbound::PubAck => 0,
                Inbound::PubRec => 1,
                Inbound::PubRel => 2,
                _ => 3,
            };
            assert_eq!(stats.unknown_packet_ids[i], 1, "{what}: counted");
            assert!(!closed, "{what}");
        }
        Reaction::Violation(rule) => {
            match (v5, stage) {
                (true, Stage::Connecting) => assert!(
                    matches!(&rest[..], [Packet::ConnAck(a)] if a.reason.0 == rule.reason_code()),
                    "{what}: {rest:?}"
                ),
                (true, Stage::Connected) => assert!(
                    matches!(&rest[..], [Packet::Disconnect(d)] if d.reason.0 == rule.reason_code()),
                    "{what}: {rest:?}"
                ),
                _ => assert!(rest.is_empty(), "{what}: closed without a packet: {rest:?}"),
            }
            assert!(closed, "{what}: closed");
            assert_eq!(
                stats.violations.get(violation_kind(rule)),
                Some(&1),
                "{what}: {:?}",
                stats.violations
            );
        }
        Reaction::Malformed => {
            if v5 && stage == Stage::Connected {
                assert!(
                    matches!(&rest[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::MALFORMED_PACKET),
                    "{what}: {rest:?}"
                );
            } else {
                assert!(rest.is_empty(), "{what}: {rest:?}");
            }
            assert!(closed, "{what}");
            assert_eq!(stats.violations.get("decode"), Some(&1), "{what}");
        }
        Reaction::Ignore => {
            assert!(
                rest.is_empty(),
                "{what}: nothing after DISCONNECT: {rest:?}"
            );
            assert!(closed, "{what}");
            assert!(
                s.c.publishes(s.watch, true).is_empty(),
                "{what}: nothing routed"
            );
        }
    }
    after(&mut s, &what, held, reaction);
}

/// The session afterwards, as a new connection finds it: the outbound flow of `pid` is
/// resent as its state says (nothing, PUBLISH with DUP, or PUBREL), and an inbound QoS 2
/// flow the reaction kept still holds its identifier (a resent PUBLISH is not routed again).
fn after(s: &mut Setup, what: &str, held: IdState, reaction: Reaction) {
    if !s.c.is_closed(s.conn) {
        s.c.drop_conn(s.conn);
    }
    let (conn, ack) = s.c.connect_with(0, persistent(s.version, &s.client));
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "{what}: reconnect");
    let resent = s.c.recv(conn);
    match outbound_after(held, reaction) {
        IdState::AwaitPubAck | IdState::AwaitPubRec => assert!(
            matches!(&resent[..], [Packet::Publish(p)] if p.dup && p.packet_id.map(PacketId::get) == Some(s.pid)),
            "{what}: the PUBLISH is still unacknowledged: {resent:?}"
        ),
        IdState::AwaitPubComp => assert!(
            matches!(&resent[..], [Packet::PubRel(r)] if r.packet_id.get() == s.pid),
            "{what}: the PUBREL is still unacknowledged: {resent:?}"
        ),
        _ => assert!(resent.is_empty(), "{what}: nothing in flight: {resent:?}"),
    }
    if matches!(held, IdState::AwaitPubRel | IdState::AwaitPubRelEarlier) {
        let kept = !matches!(reaction, Reaction::Complete | Reaction::ReleaseHeldAccept);
        s.c.publish(conn, "x/held", b"held", QoS::ExactlyOnce, false, FREE_ID);
        let got = s.c.recv(conn);
        assert!(
            matches!(&got[..], [Packet::PubRec(r)] if r.packet_id.get() == FREE_ID),
            "{what}: {got:?}"
        );
        let routed = s.c.publishes(s.watch, true).len();
        assert_eq!(
            routed,
            usize::from(!kept),
            "{what}: the inbound QoS 2 flow was {}",
            if kept { "kept" } else { "completed" }
        );
    }
}

/// Every combination, each in a fresh broker. The count is printed (scripts/test.sh shows it).
#[test]
fn every_combination_reacts_as_its_row_says() {
    let mut n = 0;
    for version in protocol::VERSIONS {
        for stage in protocol::STAGES {
            for packet in protocol::PACKETS {
                for &id in protocol::id_states(stage, packet) {
                    check(version, stage, packet, id);
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, protocol::combinations());
    println!(
        "protocol table: {} rows, {} combinations of version, stage, packet and packet identifier state checked",
        protocol::ROWS.len(),
        n
    );
}

/// The §1 cases of the issue, on both versions, named: each acknowledgement of a flow of
/// another kind or stage is a Protocol Error (v5 DISCONNECT 0x82, v3.1.1 close), and the
/// message stays in the session as a dropped connection leaves it.
#[test]
fn connected_ack_of_other_flow_is_protocol_error() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for (packet, id) in [
            (Inbound::PubComp, IdState::AwaitPubAck),
            (Inbound::PubRec, IdState::AwaitPubAck),
            (Inbound::PubAck, IdState::AwaitPubRec),
            (Inbound::PubAck, IdState::AwaitPubComp),
            (Inbound::PubComp, IdState::AwaitPubRec),
        ] {
            assert_eq!(
                protocol::lookup(version, Stage::Connected, packet, id).reaction,
                Reaction::Violation(Rule::AckOfOtherFlow)
            );
            check(version, Stage::Connected, packet, id);
        }
    }
}

/// The rows the issues decided, written out here (the exhaustive test takes its expectation
/// from the table, so a wrong row would pass it; these would not).
#[test]
fn decided_rows_are_pinned() {
    use IdState::*;
    use Inbound::*;
    let pinned = [
        // Issue 19 §1: an acknowledgement of another flow is a Protocol Error.
        (
            PubComp,
            AwaitPubAck,
            Reaction::Violation(Rule::AckOfOtherFlow),
        ),
        (
            PubRec,
            AwaitPubAck,
            Reaction::Violation(Rule::AckOfOtherFlow),
        ),
        (
            PubAck,
            AwaitPubRec,
            Reaction::Violation(Rule::AckOfOtherFlow),
        ),
        (
            PubAck,
            AwaitPubComp,
            Reaction::Violation(Rule::AckOfOtherFlow),
        ),
        (
            PubComp,
            AwaitPubRec,
            Reaction::Violation(Rule::AckOfOtherFlow),
        ),
        // ... and unknown identifiers keep their answers.
        (PubAck, Free, Reaction::IgnoreUnknownId),
        (PubComp, Free, Reaction::IgnoreUnknownId),
        (PubRec, Free, Reaction::PubRelUnknownId),
        (PubRel, Free, Reaction::PubCompUnknownId),
        // The flows themselves.
        (PubAck, AwaitPubAck, Reaction::EndFlow),
        (PubRec, AwaitPubRec, Reaction::Release),
        (PubRec, AwaitPubComp, Reaction::ReleaseAgain),
        (PubComp, AwaitPubComp, Reaction::EndFlow),
        (PubRel, AwaitPubRel, Reaction::Complete),
        (PubRel, AwaitPubRelEarlier, Reaction::Complete),
        (Publish2, AwaitPubRel, Reaction::PubRecAgain),
        (Publish2, AwaitPubRelEarlier, Reaction::PubRecAgain),
        (
            Publish1,
            AwaitPubRel,
            Reaction::Violation(Rule::PacketIdInUse),
        ),
        (
            Subscribe,
            AwaitPubRel,
            Reaction::Violation(Rule::PacketIdInUse),
        ),
        (Publish1, AwaitPubRelEarlier, Reaction::ReleaseHeldAccept),
        (Unsubscribe, AwaitPubRelEarlier, Reaction::ReleaseHeldAccept),
        (ConnAck, None, Reaction::Violation(Rule::ServerOnlyPacket)),
        (PingResp, None, Reaction::Violation(Rule::ServerOnlyPacket)),
        (Connect, None, Reaction::Violation(Rule::SecondConnect)),
    ];
    for version in protocol::VERSIONS {
        for (packet, id, want) in pinned {
            let got = protocol::lookup(version, Stage::Connected, packet, id).reaction;
            assert_eq!(got, want, "{version:?} {packet:?} {id:?}");
        }
        let auth = protocol::lookup(version, Stage::Connected, Auth, None).reaction;
        if version.is_v5() {
            assert_eq!(auth, Reaction::Violation(Rule::AuthNotSupported));
        } else {
            assert_eq!(auth, Reaction::Malformed);
        }
        for packet in protocol::PACKETS {
            let before = protocol::lookup(version, Stage::BeforeConnect, packet, None).reaction;
            let after = protocol::lookup(version, Stage::Closed, packet, None).reaction;
            assert_eq!(after, Reaction::Ignore);
            if packet == Connect {
                assert_eq!(before, Reaction::Accept);
            } else {
                assert_eq!(before, Reaction::Violation(Rule::FirstPacketNotConnect));
            }
        }
    }
}

/// The rendered table in docs/spec/protocol-table.md is the table's; `TACHYON_BLESS=1`
/// writes it.
#[test]
fn table_doc_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/spec/protocol-table.md"
    );
    let want = protocol::markdown();
    if std::env::var("TACHYON_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &want).expect("writing docs/spec/protocol-table.md");
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/spec/protocol-table.md is not the table in protocol.rs: run `TACHYON_BLESS=1 cargo test -p tachyon-engine --test protocol_table`"
    );
}

/// v5 [MQTT-4.4.0-2]: a PUBREC with a Reason Code of 0x80 or more ends the flow, also when
/// it repeats a PUBREC after the PUBREL: nothing is resent on reconnect.
#[test]
fn repeated_pubrec_with_error_ends_the_flow() {
    let mut s = connected(ProtocolVersion::V5, IdState::AwaitPubComp);
    let id = pid(s.pid);
    s.c.send(
        s.conn,
        &Packet::PubRec(PubResp::new(id, ReasonCode::UNSPECIFIED_ERROR)),
    );
    assert!(s.c.recv(s.conn).is_empty());
    after(
        &mut s,
        "PUBREC 0x80 after PUBREL",
        IdState::AwaitPubComp,
        Reaction::EndFlow,
    );
}
