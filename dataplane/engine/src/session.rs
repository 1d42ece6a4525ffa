//! Session state (v5 4.1): what survives a connection. It is plain data so that a session can
//! move to another shard on takeover (`Mail::Transfer`).

use std::collections::VecDeque;

use crate::hash::{IdMap, KeyedMap, KeyedSet};
use std::sync::Arc;

use tachyon_codec::{PacketId, ProtocolVersion, QoS, SubscriptionOptions, Utf8Str, Will};

use crate::mail::SharedTarget;
use crate::message::Message;
use crate::{ConnId, SessionKey, ShardId};

/// One subscription of a session, keyed by the filter exactly as subscribed.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// A message on its way to one session, with the per-subscriber decisions already made.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(message QoS, subscription QoS) (v5 [MQTT-3.8.4-8]).
    pub qos: QoS,
    /// RETAIN flag to send: Retain As Published, or 1 for retained messages sent at subscribe.
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Its number in this shard's log (`persist::emit`); 0 when not logged.
    pub id: u64,
    /// Set when the message came through a shared subscription; such messages go to another
    /// member if this one leaves before acknowledging.
    pub shared: Option<SharedTarget>,
}

/// Outbound QoS 1/2 state (v5 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH QoS 1 sent, waiting for PUBACK.
    AwaitPubAck,
    /// PUBLISH QoS 2 sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub delivery: Delivery,
    pub state: OutState,
    /// Order of first transmission, for resending in order on resume (v5 [MQTT-4.4.0-1], [MQTT-4.6.0-5]).
    pub seq: u64,
}

/// A Will Message waiting for its Will Delay Interval or the end of the session.
#[derive(Debug, Clone)]
pub struct PendingWill {
    pub will: Will,
    pub due_ms: u64,
}

/// What a session has in flight or queued. An idle session has nothing here, and these
/// containers cost 150 bytes even empty, so they live in a box allocated on first use: an
/// idle connection costs less (docs/benchmarks.md, idle connections).
#[derive(Debug, Clone)]
pub struct Flows {
    pub inflight: IdMap<u16, Inflight>,
    /// Order of first transmission of the last inflight entry.
    pub inflight_seq: u64,
    pub next_packet_id: u16,
    /// Inflight entries from an earlier connection not yet resent on this one, in their
    /// original order: the client's new Receive Maximum may be smaller than what is inflight.
    pub resend: VecDeque<u16>,
    /// Messages waiting for the inflight window or for the client to come back.
    pub queue: VecDeque<Delivery>,
    pub queue_bytes: usize,
    /// When the oldest queued message that still shares the publisher's receive buffer was
    /// queued (`None`: every queued message has its own bytes). See `Engine::enqueue`.
    pub uncompacted_since_ms: Option<u64>,
    /// Inbound QoS 2 Packet Identifiers answered with PUBREC and waiting for PUBREL: a
    /// retransmitted PUBLISH with one of these is not forwarded again (v5 [MQTT-4.3.3-10]).
    pub qos2_incoming: KeyedSet<u16>,
    /// Those of `qos2_incoming` that arrived on an earlier connection of the session: a
    /// client that reuses one for a new packet lost its state (see
    /// `protocol::IdState::AwaitPubRelEarlier`). Usually empty.
    pub qos2_incoming_earlier: KeyedSet<u16>,
}

impl Flows {
    pub const EMPTY: Flows = Flows {
        inflight: IdMap::with_hasher(crate::hash::IdHash),
        inflight_seq: 0,
        next_packet_id: 1,
        resend: VecDeque::new(),
        queue: VecDeque::new(),
        queue_bytes: 0,
        uncompacted_since_ms: None,
        qos2_incoming: KeyedSet::with_hasher(crate::hash::Keyed),
        qos2_incoming_earlier: KeyedSet::with_hasher(crate::hash::Keyed),
    };
}

/// Where a session that moved between shards came from.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The tombstone this session came from, whose forwards it accepts.
    pub from: (ShardId, SessionKey),
    /// Per origin shard, the last message sequence number this shard had processed when it
    /// adopted the session: forwards of later messages it delivered itself.
    pub seen: Vec<u64>,
}

impl Adopted {
    /// Whether message `seq` of `origin` was processed here after the adoption.
    pub fn after(&self, origin: ShardId, seq: u64) -> bool {
        self.seen.get(origin).is_some_and(|&a| seq > a)
    }
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Utf8Str,
    pub version: ProtocolVersion,
    /// The connection attached to this session, if any.
    pub conn: Option<ConnId>,
    /// The connection whose claim made this shard the owner (the directory's epoch).
    pub claim: ConnId,
    /// Session Expiry Interval in seconds; 0 ends the session with the connection,
    /// `u32::MAX` never expires.
    pub expiry_secs: u32,
    pub subscriptions: KeyedMap<Utf8Str, Subscription>,
    /// Client's Receive Maximum: our outbound inflight window.
    pub receive_maximum: u16,
    /// QoS 1/2 flows and queued messages; `None` until the session has had any (see `Flows`).
    flows: Option<Box<Flows>>,
    /// Boxed: rare, and a Will is large.
    pub pending_will: Option<Box<PendingWill>>,
    /// Bumped on every attach and detach; timers carry it so stale ones do nothing.
    pub epoch: u64,
    /// Set on a tombstone: the session moved to this shard; deliveries that still reach its
    /// subscriptions here are forwarded there.
    pub forward_to: Option<ShardId>,
    /// Incarnation of the client's session, for the log (see `Record::SessionOpen`).
    pub gen: u64,
    /// Its state is in this shard's log (a persistent session).
    pub logged: bool,
    /// Set when this session came here from a tombstone (boxed: rare).
    pub adopted: Option<Box<Adopted>>,
    /// Since when this connected session's queue is over the soft limit (it slows the
    /// publishers down: backpressure); `None` when it is not.
    pub congested_since_ms: Option<u64>,
    /// Congested for too long (a client that stopped reading): it no longer slows anyone
    /// down and gets the drop policy until its queue is below the limit again.
    pub slow: bool,
    /// On a tombstone that relays an older one: that one may still forward (see `drained`).
    pub upstream_alive: bool,
    /// On a tombstone: its own routes are withdrawn; it goes once `upstream_alive` is false.
    pub drained: bool,
}

impl Session {
    pub fn new(client_id: Utf8Str, version: ProtocolVersion, claim: ConnId) -> Session {
        Session {
            client_id,
            version,
            conn: None,
            claim,
            expiry_secs: 0,
            subscriptions: KeyedMap::default(),
            receive_maximum: u16::MAX,
            flows: None,
            pending_will: None,
            epoch: 0,
            forward_to: None,
            gen: 0,
            logged: false,
            adopted: None,
            congested_since_ms: None,
            slow: false,
            upstream_alive: false,
            drained: false,
        }
    }

    /// The session's flows, read-only; an empty set when it never had any.
    pub fn flows(&self) -> &Flows {
        static NONE: Flows = Flows::EMPTY;
        self.flows.as_deref().unwrap_or(&NONE)
    }

    /// The session's flows, allocated on first use.
    pub fn flows_mut(&mut self) -> &mut Flows {
        self.flows.get_or_insert_with(|| Box::new(Flows::EMPTY))
    }

    /// The flows if the session has any, without allocating them.
    pub fn flows_if_any(&mut self) -> Option<&mut Flows> {
        self.flows.as_deref_mut()
    }

    /// The tombstone this session came from, whose forwards it accepts.
    pub fn forwarded_from(&self) -> Option<(ShardId, SessionKey)> {
        self.adopted.as_ref().map(|a| a.from)
    }

    /// A free Packet Identifier for a new outbound QoS 1/2 PUBLISH (v5 [MQTT-2.2.1-4]);
    /// `None` when all 65535 are in use (the caller keeps the message queued).
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        let f = self.flows_mut();
        if f.inflight.len() >= u16::MAX as usize {
            return None;
        }
        loop {
            let id = f.next_packet_id;
            f.next_packet_id = f.next_packet_id.checked_add(1).unwrap_or(1);
            if !f.inflight.contains_key(&id) {
                return PacketId::new(id);
            }
        }
    }

    /// Room in the outbound inflight window.
    /// Room in the outbound inflight window (entries waiting to be resent do not count:
    /// they are not on this connection yet).
    pub fn window_open(&self) -> bool {
        let f = self.flows();
        f.inflight.len() - f.resend.len().min(f.inflight.len()) < self.receive_maximum as usize
    }

    /// Ends an outbound flow.
    pub fn complete(&mut self, id: u16) -> Option<Inflight> {
        let f = self.flows_if_any()?;
        let done = f.inflight.remove(&id);
        if done.is_some() && !f.resend.is_empty() {
            f.resend.retain(|&x| x != id);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_and_in_use() {
        let mut s = Session::new(Utf8Str::from_static("c"), ProtocolVersion::V5, ConnId(1));
        s.flows_mut().next_packet_id = u16::MAX;
        assert_eq!(s.allocate_packet_id().unwrap().get(), u16::MAX);
        assert_eq!(s.allocate_packet_id().unwrap().get(), 1);
    }
}
