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
use crate::stats::Stats;
use crate::violation::Violation;
use crate::{ConnId, SessionKey};

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
        let key = c.session;
        let inbound = Inbound::of(&packet);
        let pid = packet_id(&packet);
        let id = match (stage, pid, key) {
            (Stage::Connected, Some(pid), Some(key)) => self.id_state(key, inbound, pid),
            _ => IdState::None,
        };
        let reaction = protocol::lookup(version, stage, inbound, id).reaction;
        match reaction {
            Reaction::Accept | Reaction::ReleaseHeldAccept => {
                if let (Reaction::ReleaseHeldAccept, Some(key), Some(pid)) = (reaction, key, pid) {
                    self.release_held_id(conn, key, inbound, pid);
                }
                match packet {
                    Packet::Connect(connect) => self.on_connect(now, conn, connect),
                    Packet::Publish(mut p) => self.on_publish(now, conn, &mut p),
                    Packet::Subscribe(s) => self.on_subscribe(now, conn, s),
                    Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
                    // v5 [MQTT-3.12.4-1], v3.1.1 [MQTT-3.12.4-1]
                    Packet::PingReq => self.send_packet(conn, &Packet::PingResp),
                    Packet::Disconnect(d) => self.on_disconnect(now, conn, d),
                    // `protocol::ACCEPT_ROWS_HAVE_HANDLERS` rules this out at compile time.
                    other => unreachable!("protocol table accepts {:?}", Inbound::of(&other)),
                }
            }
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
        // The reactions below that name an identifier only exist for identifier states,
        // which only a connected session's packets with identifiers have (`id_states`).
        let (Some(key), Some(pid)) = (self.conns.get(&conn).and_then(|c| c.session), pid) else {
            if let Reaction::Violation(rule) = reaction {
                let v = violation_of(rule, inbound, id, pid);
                self.violation(now, conn, v, None);
            } else if reaction == Reaction::Malformed {
                // Only AUTH in MQTT 3.x, which the decoder refuses before the table.
                self.violation(now, conn, Violation::Decode(DecodeError::AuthInV311), None);
            }
            return;
        };
        match reaction {
            // `protocol::ACCEPT_ROWS_HAVE_HANDLERS` and `HOT_PATH_ROWS` rule these out.
            Reaction::Accept | Reaction::Defer | Reaction::ReleaseHeldAccept => {
                unreachable!("protocol table: {reaction:?} for {inbound:?} needs the packet")
            }
            // v5 [MQTT-4.3.3-10], v3.1.1 [MQTT-4.3.3-2]: acknowledged again, not routed again.
            Reaction::PubRecAgain => self.send_packet(
                conn,
                &Packet::PubRec(PubResp::new(pid, ReasonCode::SUCCESS)),
            ),
            Reaction::EndFlow => self.end_flow(now, key, pid),
            Reaction::Release => self.release(now, conn, key, pid, reason, true),
            Reaction::ReleaseAgain => self.release(now, conn, key, pid, reason, false),
            Reaction::Complete => self.complete_inbound(conn, key, pid),
            Reaction::IgnoreUnknownId => self.count_unknown_id(conn, inbound, pid),
            Reaction::PubRelUnknownId | Reaction::PubCompUnknownId => {
                self.count_unknown_id(conn, inbound, pid);
                // v5 3.6.2.1, 3.7.2.1: 0x92 Packet Identifier not found.
                let v5 = self.conns.get(&conn).is_some_and(|c| c.version().is_v5());
                let r = PubResp::new(
                    pid,
                    if v5 {
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                    } else {
                        ReasonCode::SUCCESS
                    },
                );
                let answer = if reaction == Reaction::PubRelUnknownId {
                    Packet::PubRel(r)
                } else {
                    Packet::PubComp(r)
                };
                self.send_packet(conn, &answer);
            }
            Reaction::Violation(rule) => {
                let v = violation_of(rule, inbound, id, Some(pid));
                self.violation(now, conn, v, None);
            }
            Reaction::Malformed => {
                self.violation(now, conn, Violation::Decode(DecodeError::AuthInV311), None)
            }
            Reaction::Ignore => {}
        }
    }

    /// The state of `pid` in the flows of session `key`, in the namespace `inbound` uses.
    fn id_state(&self, key: SessionKey, inbound: Inbound, pid: PacketId) -> IdState {
        let Some(f) = self.sessions.get(key).map(|s| s.flows()) else {
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
                if f.qos2_incoming.is_empty() || !f.qos2_incoming.contains(&pid.get()) {
                    IdState::Free
                } else if f.qos2_incoming_earlier.contains(&pid.get()) {
                    IdState::AwaitPubRelEarlier
                } else {
                    IdState::AwaitPubRel
                }
            }
            _ => IdState::None,
        }
    }

    /// `Reaction::ReleaseHeldAccept`: the client reused the identifier of a QoS 2 flow of an
    /// earlier connection, so it no longer has that flow; it ends here.
    pub(crate) fn release_held_id(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        inbound: Inbound,
        pid: PacketId,
    ) {
        self.release_inbound_id(key, pid);
        self.stats.inbound_ids_released += 1;
        if let Some(c) = self.conns.get(&conn) {
            tracing::info!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                packet = inbound.name(), packet_id = pid.get(),
                "the client reused the packet identifier of its QoS 2 message of an earlier connection (awaiting PUBREL): it lost its session state; that flow ends (the message was delivered)");
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

    fn count_unknown_id(&mut self, conn: ConnId, inbound: Inbound, pid: PacketId) {
        self.stats.unknown_packet_ids[Stats::unknown_id_index(inbound)] += 1;
        if let Some(c) = self.conns.get(&conn) {
            tracing::debug!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                packet = inbound.name(), packet_id = pid.get(),
                "acknowledgement of a packet identifier no flow uses");
        }
    }
}

/// The violation a table row names, with the packet's details.
pub(crate) fn violation_of(
    rule: Rule,
    inbound: Inbound,
    id: IdState,
    pid: Option<PacketId>,
) -> Violation {
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
