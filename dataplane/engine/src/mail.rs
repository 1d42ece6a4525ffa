//! Messages between shards. The shard loop carries them over bounded SPSC rings; the engine
//! only produces and consumes them. Payloads are shared (`Arc`), never copied.
//!
//! ```text
//!   Publish      origin shard -> each shard with matching subscribers (routing trie)
//!   Route        a shard's subscriber set of a filter changed -> every shard
//!   RetainSet    origin -> home shard of the topic (orders updates of one topic)
//!   RetainApply  home shard -> every shard (each keeps a replica for subscribe-time lookups)
//!   Claim        shard of a new connection -> home shard of the Client Identifier
//!   Evict        home -> shard that owns the session now
//!   Transfer     owner -> claiming shard (the session, or none)
//!   Release      owner -> home, when the session ended
//!   RouteAck     a shard applied a Route that asked for an ack (barriers, see `barrier.rs`)
//!   Forward      old owner -> new owner: a delivery that reached the old owner's tombstone
//!   Unforward    new owner -> old owner: routes to the new owner are in place everywhere
//!   LogHealth    a shard -> every shard: its WAL cannot (or can again) be written
//! ```

use std::sync::Arc;

use tachyon_codec::Utf8Str;

use crate::message::Message;
use crate::session::{Delivery, Session};
use crate::{ConnId, SessionKey, ShardId};

/// A shared-subscription group at a filter: deliver to one of its members on the receiving shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTarget {
    /// The filter without the `$share/{group}/` prefix.
    pub filter: Utf8Str,
    pub group: Utf8Str,
    /// Times this delivery was passed on because the chosen shard had no member left.
    pub hops: u8,
}

#[derive(Debug)]
pub enum Mail {
    Publish {
        msg: Arc<Message>,
        /// Deliver to the shard's ordinary subscriptions that match.
        normal: bool,
        /// Deliver to one member of each of these groups.
        shared: Vec<SharedTarget>,
        /// Bit `s` set: the origin sent this message to shard `s` for its ordinary
        /// subscriptions.
        fanout: u64,
        /// The origin shard and its sequence number for this message (0: not numbered).
        /// With `fanout` they let a session's new owner tell whether it delivered a message
        /// itself or needs the copy its old owner's tombstone forwards.
        origin: ShardId,
        seq: u64,
        /// Answer this barrier with `RouteAck` once what the message changed here is durable
        /// (a QoS 1/2 message whose acknowledgement waits for the log: `persist::emit`).
        ack: Option<(ShardId, u64)>,
    },
    /// Reply with `RouteAck`: everything this shard sent to the asker before is delivered.
    Sync {
        ack: (ShardId, u64),
    },
    Route {
        filter: Utf8Str,
        group: Option<Utf8Str>,
        shard: ShardId,
        delta: i32,
        /// Reply with `RouteAck` to this shard and barrier.
        ack: Option<(ShardId, u64)>,
    },
    RouteAck {
        barrier: u64,
    },
    Forward {
        client_id: Utf8Str,
        /// The tombstone that forwarded it; the new owner only accepts forwards from the
        /// tombstone of the session it adopted.
        tombstone: (ShardId, SessionKey),
        delivery: Delivery,
        /// (origin, seq, fanout) of the Publish the tombstone matched; `None` for a shared
        /// subscription delivery, which went to one shard only.
        tag: Option<(ShardId, u64, u64)>,
        /// As for `Publish`: answered once the delivery is durable where it lands.
        ack: Option<(ShardId, u64)>,
    },
    Unforward {
        tombstone: SessionKey,
    },
    /// A tombstone that forwarded to the receiver is gone (no more `Forward` from it).
    TombstoneGone {
        tombstone: (ShardId, SessionKey),
    },
    RetainSet {
        msg: Arc<Message>,
        /// The origin's barrier: every shard but the origin acknowledges once it applied.
        ack: Option<(ShardId, u64)>,
    },
    RetainApply {
        msg: Arc<Message>,
        ack: Option<(ShardId, u64)>,
    },
    Claim {
        client_id: Utf8Str,
        shard: ShardId,
        conn: ConnId,
    },
    Evict {
        client_id: Utf8Str,
        /// The claim the directory recorded for the current owner.
        owner: ConnId,
        to_shard: ShardId,
        to_conn: ConnId,
    },
    Transfer {
        client_id: Utf8Str,
        conn: ConnId,
        handover: Handover,
        /// A claim the session passed through on its way here (a CONNECT that lost to a
        /// newer one before its CONNACK) ended it: Clean Start, or expiry 0 with its
        /// connection taken over. The receiver discards it as a Clean Start would.
        discard: bool,
    },
    Release {
        client_id: Utf8Str,
        shard: ShardId,
        claim: ConnId,
    },
    /// A shard can (no longer) write its log: while any cannot, every shard refuses QoS 1/2
    /// publishes (their messages may need that shard's log).
    LogHealth {
        shard: ShardId,
        failed: bool,
    },
}

/// How a session reaches the connection that claimed it.
#[derive(Debug)]
pub enum Handover {
    /// No session existed.
    None,
    /// The session moved from another shard, which keeps a forwarding tombstone until the
    /// routes to the new owner are in place (`tombstone`).
    Moved {
        session: Box<Session>,
        tombstone: Option<(ShardId, SessionKey)>,
    },
    /// The session stays in this shard's slab under the same key (same-shard takeover).
    InPlace(SessionKey),
}

/// Stable hash used to pick home shards; the same on every shard and every run (FNV-1a).
pub fn home_shard(key: &[u8], shard_count: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shard_count as u64) as ShardId
}
