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
//! ```

use std::sync::Arc;

use tachyon_codec::Utf8Str;

use crate::message::Message;
use crate::session::Session;
use crate::{ConnId, ShardId};

/// A shared-subscription group at a filter: deliver to one of its members on the receiving shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTarget {
    /// The filter without the `$share/{group}/` prefix.
    pub filter: Utf8Str,
    pub group: Utf8Str,
}

#[derive(Debug)]
pub enum Mail {
    Publish {
        msg: Arc<Message>,
        /// Deliver to the shard's ordinary subscriptions that match.
        normal: bool,
        /// Deliver to one member of each of these groups.
        shared: Vec<SharedTarget>,
    },
    Route {
        filter: Utf8Str,
        group: Option<Utf8Str>,
        shard: ShardId,
        delta: i32,
    },
    RetainSet {
        msg: Arc<Message>,
    },
    RetainApply {
        msg: Arc<Message>,
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
        session: Option<Box<Session>>,
    },
    Release {
        client_id: Utf8Str,
        shard: ShardId,
        claim: ConnId,
    },
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
