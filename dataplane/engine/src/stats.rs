//! Counters of one shard. Plain integers owned by the shard; the driver copies them out
//! (later into the shared stats region read by the control plane).

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub clients_connected: u64,
    pub connects_refused: u64,
    pub messages_received: [u64; 3],
    pub messages_sent: [u64; 3],
    pub bytes_received: u64,
    pub bytes_sent_queued: u64,
    /// Application payload bytes of the PUBLISHes counted in `messages_received` / `_sent`.
    pub payload_bytes_received: [u64; 3],
    pub payload_bytes_sent: [u64; 3],
    /// From the driver's clock reading before the read of a PUBLISH to the one before it was
    /// written for a subscriber, microseconds (see `Engine::set_clock_us`).
    pub hop_latency: tachyon_stats::Histogram,
    /// QoS 0 messages dropped because the connection's output bound was reached.
    pub dropped_qos0_slow_consumer: u64,
    /// Connections closed because their unread output passed `output_close_bytes`.
    pub closed_slow_consumer: u64,
    /// Messages dropped because a session queue hit its message or byte limit.
    pub dropped_queue_full: u64,
    /// Messages dropped because their Message Expiry Interval passed before delivery.
    pub dropped_expired: u64,
    /// Messages not sent because they exceed the client's Maximum Packet Size
    /// (v5 [MQTT-3.1.2-25]).
    pub dropped_too_large_for_client: u64,
    /// QoS 0 messages for offline sessions, not queued (policy `queue_qos0`).
    pub dropped_qos0_offline: u64,
    /// Shared-subscription deliveries that found no member on the chosen shard.
    pub dropped_shared_no_member: u64,
    /// Deliveries a tombstone forwarded to its session's new owner after a takeover.
    pub forwarded_after_takeover: u64,
    /// Forwards the new owner dropped because it had delivered the message itself.
    pub forwards_already_delivered: u64,
    /// Deliveries forwarded by a tombstone that found no matching session (the session
    /// moved on again meanwhile).
    pub dropped_forward_no_session: u64,
    pub wills_published: u64,
    /// Retained PUBLISHes to new topics not stored because the store was full.
    pub retained_refused: u64,
    pub sessions_expired: u64,
    pub takeovers: u64,
    /// Times the driver could not write the log (disk full, I/O error).
    pub log_failures: u64,
    /// QoS 1/2 PUBLISHes refused while the log could not be written.
    pub publishes_refused_log_failed: u64,
    /// Logged messages recovery could not decode (counted, skipped).
    pub restore_skipped: u64,
    /// Acknowledgements naming a Packet Identifier no flow uses, by packet: PUBACK, PUBREC,
    /// PUBREL, PUBCOMP (a confused client; see `protocol::Reaction::IgnoreUnknownId`).
    pub unknown_packet_ids: [u64; 4],
    /// Inbound QoS 2 flows of an earlier connection ended because the client reused their
    /// identifier (it lost its state; `protocol::Reaction::ReleaseHeldAccept`).
    pub inbound_ids_released: u64,
    /// Protocol violations by kind (see `Violation::kind`).
    pub violations: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// The slot of `unknown_packet_ids` counting `packet` (PUBACK, PUBREC, PUBREL, PUBCOMP).
    pub fn unknown_id_index(packet: crate::protocol::Inbound) -> usize {
        use crate::protocol::Inbound;
        match packet {
            Inbound::PubAck => 0,
            Inbound::PubRec => 1,
            Inbound::PubRel => 2,
            _ => 3,
        }
    }

    pub fn violations_total(&self) -> u64 {
        self.violations.values().sum()
    }
}
