//! Inbound packets after decoding: the protocol table (`protocol.rs`) gives the reaction for
//! the connection's stage and the state of the Packet Identifier the packet names; this
//! module carries it out. A connected PUBLISH takes a shorter way (`Engine::on_publish`,
//! which consults the table only when its identifier is held by an inbound QoS 2 flow).
//!
//! ```text
//!   packet ─▶ (stage, kind, id state) ─▶ protocol::lookup ─▶ Reaction ─▶ handler / answer /
//!                                                                        violation / defer
//! ```

use tachyon_codec::{DecodeError, Packet, PacketId, PubResp, ReasonCode};

use crate::engine::{ConnState, Engine};
use crate::protocol::{self, IdState, Inbound, Reaction, Rule, Stage};
use crate::session::OutState;
use crate::violation::Violation;
use crate::ConnId;

/// Packets a client may send ahead of CONNACK before we stop buffering them.
const PENDING_PACKETS_MAX: usize = 1024;
/// Bytes of such packets (at least one packet of the maximum size fits).
const PENDING_BYTES_MIN: usize = 4 * 1024 * 1024;

/// The Packet Identifier a client's packet names, if it names one.
fn packet_id(p: &Packet) -> Option<PacketId> {
    match p {
        Packet::Publish(p) => p.packet_id,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some(r.packet_id)
        }
        Packet::Subscribe(s) => Some(s.packet_id),
        Packet::Unsubscribe(u) => Some(u.packet_id),
        _ => None,
    }
}

impl ConnState {
    pub(crate) fn stage(self) -> Stage {
        match self {
            ConnState::AwaitConnect => Stage::BeforeConnect,
            ConnState::Claiming => Stage::Connecting,
            ConnState::Connected => Stage::Connected,
            ConnState::Closing => Stage::Closed,
        }
    }
}

impl Engine {
    /// Carries out the table's reaction to a decoded packet.
    pub(crate) fn handle_packet(&mut self, now: u64, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let stage = c.state.stage();
        let version = c.version();
        let inbound = Inbound::of(&packet);
        let pid = packet_id(&packet);
        let id = match (stage, pid) {
            (Stage::Connected, Some(pid)) => self.id_state(conn, inbound, pid),
            _ => IdState::None,
        };
        let reaction = protocol::lookup(version, stage, inbound, id).reaction;
        match reaction {
            Reaction::Accept => match packet {
                Packet::Connect(connect) => self.on_connect(now, conn, connect),
                Packet::Publish(mut p) => self.on_publish(now, conn, &mut p),
                Packet::Subscribe(s) => self.on_subscribe(now, conn, s),
                Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
                // v5 [MQTT-3.12.4-1], v3.1.1 [MQTT-3.12.4-1]
                Packet::PingReq => self.send_packet(conn, &Packet::PingResp),
                Packet::Disconnect(d) => self.on_disconnect(now, conn, d),
                other => panic!(
                    "protocol table accepts {:?}, which has no handler",
                    Inbound::of(&other)
                ),
            },
            Reaction::Defer => self.defer_until_connack(now, conn, packet),
            _ => {
                let reason = match &packet {
                    Packet::PubRec(r) => r.reason,
                    _ => ReasonCode::SUCCESS,
                };
                self.react(now, conn, reaction, inbound, id, pid, reason);
            }
        }
    }

    /// Carries out a reaction that needs only the packet's kind, identifier and (PUBREC)
    /// Reason Code.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn react(
        &mut self,
        now: u64,
        conn: ConnId,
        reaction: Reaction,
        inbound: Inbound,
        id: IdState,
        pid: Option<PacketId>,
        reason: ReasonCode,
    ) {
        let v5 = self.conns.get(&conn).is_some_and(|c| c.version().is_v5());
        let not_found = if v5 {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            ReasonCode::SUCCESS
        };
        let ack = |r| PubResp::new(pid.expect("identifier states come with an identifier"), r);
        match reaction {
            Reaction::Accept | Reaction::Defer => {
                panic!("protocol table: {reaction:?} for {inbound:?} needs the packet")
            }
            // v5 [MQTT-4.3.3-10], v3.1.1 [MQTT-4.3.3-2]: acknowledged again, not routed again.
            Reaction::PubRecAgain => {
                self.send_packet(conn, &Packet::PubRec(ack(ReasonCode::SUCCESS)))
            }
            Reaction::EndFlow => self.end_flow(now, conn, ack(reason).packet_id),
            Reaction::Release => self.release(now, conn, ack(reason).packet_id, reason),
            Reaction::ReleaseAgain => {
                self.send_packet(conn, &Packet::PubRel(ack(ReasonCode::SUCCESS)))
            }
            Reaction::Complete => self.complete_inbound(conn, ack(reason).packet_id),
            Reaction::IgnoreUnknownId => self.count_unknown_id(conn, inbound, pid),
            Reaction::PubRelUnknownId => {
                self.count_unknown_id(conn, inbound, pid);
                // v5 3.6.2.1: 0x92 Packet Identifier not found.
                self.send_packet(conn, &Packet::PubRel(ack(not_found)));
            }
            Reaction::PubCompUnknownId => {
                self.count_unknown_id(conn, inbound, pid);
                // v5 3.7.2.1, [MQTT-4.3.3-11]: PUBCOMP with the same identifier, 0x92.
                self.send_packet(conn, &Packet::PubComp(ack(not_found)));
            }
            Reaction::Violation(rule) => {
                let v = violation_of(rule, inbound, id, pid);
                self.violation(now, conn, v, None);
            }
            // Only AUTH in MQTT 3.x, which the decoder refuses before the table is consulted.
            Reaction::Malformed => {
                self.violation(now, conn, Violation::Decode(DecodeError::AuthInV311), None)
            }
            Reaction::Ignore => {}
        }
    }

    /// The state of `pid` in the flows of `conn`'s session, in the namespace `inbound` uses.
    fn id_state(&self, conn: ConnId, inbound: Inbound, pid: PacketId) -> IdState {
        let flows = self
            .conns
            .get(&conn)
            .and_then(|c| c.session)
            .and_then(|k| self.sessions.get(k))
            .map(|s| s.flows());
        let Some(f) = flows else {
            return IdState::Free;
        };
        match inbound {
            Inbound::PubAck | Inbound::PubRec | Inbound::PubComp => {
                match f.inflight.get(&pid.get()).map(|i| i.state) {
                    None => IdState::Free,
                    Some(OutState::AwaitPubAck) => IdState::AwaitPubAck,
                    Some(OutState::AwaitPubRec) => IdState::AwaitPubRec,
                    Some(OutState::AwaitPubComp) => IdState::AwaitPubComp,
                }
            }
            Inbound::Publish1
            | Inbound::Publish2
            | Inbound::PubRel
            | Inbound::Subscribe
            | Inbound::Unsubscribe => {
                if f.qos2_incoming.contains(&pid.get()) {
                    IdState::AwaitPubRel
                } else {
                    IdState::Free
                }
            }
            _ => IdState::None,
        }
    }

    /// Keeps a packet that arrived between CONNECT and CONNACK (v5 3.1.4: the Client need not
    /// wait); it is handled once CONNACK is sent.
    fn defer_until_connack(&mut self, now: u64, conn: ConnId, p: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let size = tachyon_codec::encoded_len(&p, c.version());
        let bytes_max = PENDING_BYTES_MIN.max(self.cfg.max_packet_size as usize);
        let claim = c.claim.get_or_insert_with(Box::default);
        claim.pending_bytes += size;
        if claim.pending.len() >= PENDING_PACKETS_MAX || claim.pending_bytes > bytes_max {
            let v = Violation::TooManyPacketsBeforeConnack {
                max: PENDING_PACKETS_MAX,
            };
            self.violation(now, conn, v, None);
        } else {
            claim.pending.push(p);
        }
    }

    fn count_unknown_id(&mut self, conn: ConnId, inbound: Inbound, pid: Option<PacketId>) {
        let i = match inbound {
            Inbound::PubAck => 0,
            Inbound::PubRec => 1,
            Inbound::PubRel => 2,
            _ => 3,
        };
        self.stats.unknown_packet_ids[i] += 1;
        if let Some(c) = self.conns.get(&conn) {
            tracing::debug!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                packet = inbound.name(), packet_id = pid.map_or(0, PacketId::get),
                "acknowledgement of a packet identifier no flow uses");
        }
    }
}

/// The violation a table row names, with the packet's details.
fn violation_of(rule: Rule, inbound: Inbound, id: IdState, pid: Option<PacketId>) -> Violation {
    let id_num = pid.map_or(0, PacketId::get);
    match rule {
        Rule::FirstPacketNotConnect => Violation::FirstPacketNotConnect,
        Rule::SecondConnect => Violation::SecondConnect,
        Rule::ServerOnlyPacket => Violation::ServerOnlyPacket {
            packet: inbound.name(),
        },
        Rule::AckOfOtherFlow => Violation::AckOfOtherFlow {
            packet: inbound.name(),
            id: id_num,
            awaiting: match id {
                IdState::AwaitPubAck => "PUBACK",
                IdState::AwaitPubRec => "PUBREC",
                IdState::AwaitPubComp => "PUBCOMP",
                _ => "another packet",
            },
        },
        Rule::PacketIdInUse => Violation::PacketIdInUse {
            packet: inbound.name(),
            id: id_num,
        },
        Rule::AuthNotSupported => Violation::AuthNotSupported,
    }
}
