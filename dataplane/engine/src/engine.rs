//! The shard's state and its handle/poll surface. The MQTT flows live in sibling modules:
//! `connect` (CONNECT, CONNACK), `publish` (QoS 0/1/2 both ways, retained, routing),
//! `subscribe` (SUBSCRIBE, UNSUBSCRIBE, tries), `directory` (client ids across shards, takeover)
//! and `lifecycle` (close, wills, expiry, timers).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::clients::Clients;
use crate::hash::{IdMap, KeyedMap};
use crate::recycle::Recycler;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tachyon_codec::{
    decode, encode, Connect, Packet, ProtocolVersion, SubscriptionOptions, Utf8Str, Will,
};

use crate::config::EngineConfig;
use crate::mail::Mail;
use crate::message::Message;
use crate::out::OutQueue;
use crate::session::Session;
use crate::stats::Stats;
use crate::topic::Trie;
use crate::violation::Violation;
use crate::{ConnId, ShardId, SHARDS_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// TCP is up, no CONNECT yet.
    AwaitConnect,
    /// CONNECT accepted; waiting for the session from the directory (`Mail::Transfer`).
    Claiming,
    Connected,
    /// Closed by the engine; output is flushed by the driver, then the socket closes.
    Closing,
}

/// One network connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: Peer,
    pub state: ConnState,
    /// The listener it came through (`EngineConfig::listener`).
    pub listener: u16,
    /// Its output is over the soft bound (`Engine::output_soft_bytes`): it slows publishers
    /// down (backpressure for QoS 0), listed in `Engine::out_congested`.
    pub out_congested: bool,
    /// It stayed over the bound for `congestion_timeout_ms` (a client that does not read): no
    /// longer slowing anyone, it gets the drop policy until its output drains.
    pub out_slow: bool,
    pub version: Option<ProtocolVersion>,
    pub client_id: Option<Utf8Str>,
    pub session: Option<SessionKey>,
    /// State of the session claim between CONNECT and CONNACK (boxed: transient).
    pub claim: Option<Box<Claim>>,
    pub keep_alive_ms: u64,
    pub last_rx_ms: u64,
    pub out: OutQueue,
    pub dirty: bool,
    /// Client's Maximum Packet Size (v5 [MQTT-3.1.2-24]).
    pub max_packet_out: u32,
    /// What we told this client (CONNACK) or, before that, the limits when it connected:
    /// a live reconfiguration changes them for new connections only, so a client that obeys
    /// its CONNACK is never judged by a lower limit it was not told.
    pub max_packet_in: u32,
    pub receive_max_in: u16,
    pub alias_max_in: u16,
    /// Topic Aliases both ways; boxed on first use, as most connections never use them.
    pub aliases: Option<Box<TopicAliases>>,
    /// The client's Topic Alias Maximum: how many outbound aliases we may assign.
    pub alias_out_max: u16,
    /// Boxed: most connections have none, and a Will is large (it carries Properties).
    pub will: Option<Box<Will>>,
    /// CONNECT had Session Expiry Interval 0 (v5 3.14.2.2.2).
    pub expiry_zero_at_connect: bool,
    /// Barriers that hold this connection's output (see `barrier.rs`): CONNACK or SUBACK wait
    /// until every shard routes the new subscriptions here.
    pub holds: u32,
    pub held: Vec<Bytes>,
    /// Log position its held output waits for (0: none; see `persist::emit`).
    pub fence: u64,
    /// Its PUBLISHes waiting in `Log::deferred`.
    pub deferred: u32,
    /// When this connection last sent a PUBLISH (backpressure throttles publishers).
    /// Until when this connection counts as a publisher (one second after its last PUBLISH);
    /// 0 when it never published.
    pub publisher_until_ms: u64,
}

/// What, besides the message, decides the bytes of a shareable QoS 0 PUBLISH: protocol
/// version, RETAIN, DUP.
pub(crate) type EncodingKey = (ProtocolVersion, bool, bool);

/// A client's address for log lines: 16 bytes instead of `SocketAddr`'s 32 (IPv6 boxed).
#[derive(Debug)]
pub(crate) enum Peer {
    V4(std::net::SocketAddrV4),
    V6(Box<std::net::SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        match a {
            SocketAddr::V4(a) => Peer::V4(a),
            SocketAddr::V6(a) => Peer::V6(Box::new(a)),
        }
    }
}

impl Peer {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Peer::V4(a) => SocketAddr::V4(*a),
            Peer::V6(a) => SocketAddr::V6(**a),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::V4(a) => a.fmt(f),
            Peer::V6(a) => a.fmt(f),
        }
    }
}

/// A connection between CONNECT and CONNACK, while its session is claimed.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    /// The CONNECT being processed.
    pub connect: Option<Box<Connect>>,
    /// Set when another connection claimed this client id while we were still claiming it.
    pub forward_to: Option<(ShardId, ConnId)>,
    /// Packets that arrived after CONNECT; clients need not wait for CONNACK (v5 3.1.4), so
    /// they are processed once it is sent.
    pub pending: Vec<Packet>,
    pub pending_bytes: usize,
    /// When the claim must have completed (the connect timeout, counted from CONNECT).
    pub deadline_ms: u64,
}

/// A connection's Topic Alias mappings (v5 3.3.2.3.4).
#[derive(Debug, Default)]
pub(crate) struct TopicAliases {
    /// Inbound, index alias - 1.
    pub inbound: Vec<Option<Utf8Str>>,
    /// Outbound aliases we assigned, bounded by the client's Topic Alias Maximum.
    pub outbound: KeyedMap<Bytes, u16>,
}

impl Conn {
    /// Queues encoded output, behind held output while a barrier is open.
    pub fn push_out(&mut self, b: Bytes, id: ConnId, dirty: &mut Vec<ConnId>) {
        if self.holds > 0 {
            self.held.push(b);
            return;
        }
        self.out.push(b);
        if !self.dirty {
            self.dirty = true;
            dirty.push(id);
        }
    }
}

impl Conn {
    pub fn version(&self) -> ProtocolVersion {
        self.version.unwrap_or(ProtocolVersion::V5)
    }

    /// Moves output held behind barriers into the output queue (closing, or all barriers done).
    /// Bytes of output held behind barriers.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().map(Bytes::len).sum()
    }

    /// On close: output held behind barriers goes out, except when it waits for the log
    /// (an acknowledgement of what is not durable yet is never sent; the client resends).
    /// The last hold is gone: held output goes out, in order. The buffer is kept for the next
    /// hold (a connection fenced on every commit would otherwise allocate one each time).
    pub fn flush_held(&mut self, id: ConnId, dirty: &mut Vec<ConnId>) {
        let mut held = std::mem::take(&mut self.held);
        for b in held.drain(..) {
            self.push_out(b, id, dirty);
        }
        self.held = held;
    }

    pub fn release_held(&mut self) {
        self.holds = 0;
        if self.fence != 0 {
            self.held.clear();
            return;
        }
        for b in std::mem::take(&mut self.held) {
            self.out.push(b);
        }
    }

    /// Client id for logs ("-" before CONNECT).
    pub fn client_label(&self) -> &str {
        self.client_id.as_ref().map(|c| c.as_str()).unwrap_or("-")
    }
}

/// Index and generation of a session in a shard's slab (opaque outside the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    idx: u32,
    gen: u32,
}

impl SessionKey {
    #[cfg(test)]
    pub(crate) fn for_tests(idx: u32) -> SessionKey {
        SessionKey { idx, gen: 0 }
    }
}

/// Sessions of this shard. Keys stay valid until the session is removed; a stale key resolves
/// to nothing, which makes old timers harmless.
#[derive(Debug, Default)]
pub(crate) struct SessionSlab {
    /// Boxed: the table then costs 16 bytes per slot, and a session only what it holds.
    entries: Vec<(u32, Option<Box<Session>>)>,
    free: Vec<u32>,
    len: usize,
}

impl SessionSlab {
    pub fn insert(&mut self, s: Session) -> SessionKey {
        self.len += 1;
        if let Some(idx) = self.free.pop() {
            let e = &mut self.entries[idx as usize];
            e.0 = e.0.wrapping_add(1);
            e.1 = Some(Box::new(s));
            return SessionKey { idx, gen: e.0 };
        }
        self.entries.push((0, Some(Box::new(s))));
        SessionKey {
            idx: (self.entries.len() - 1) as u32,
            gen: 0,
        }
    }
    pub fn get(&self, k: SessionKey) -> Option<&Session> {
        match self.entries.get(k.idx as usize) {
            Some((g, Some(s))) if *g == k.gen => Some(&**s),
            _ => None,
        }
    }
    pub fn get_mut(&mut self, k: SessionKey) -> Option<&mut Session> {
        match self.entries.get_mut(k.idx as usize) {
            Some((g, Some(s))) if *g == k.gen => Some(&mut **s),
            _ => None,
        }
    }
    /// Swaps the session at `k` for `s` (the key stays valid) and returns the old one.
    pub fn replace(&mut self, k: SessionKey, s: Session) -> Option<Session> {
        let slot = self.get_mut(k)?;
        Some(std::mem::replace(slot, s))
    }
    pub fn remove(&mut self, k: SessionKey) -> Option<Session> {
        let e = self.entries.get_mut(k.idx as usize)?;
        if e.0 != k.gen || e.1.is_none() {
            return None;
        }
        self.len -= 1;
        self.free.push(k.idx);
        e.1.take().map(|s| *s)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// Calls `f` with the sessions in slots `from..from + n`; returns the slot to continue
    /// from, or 0 after the last one.
    pub fn scan(&self, from: usize, n: usize, mut f: impl FnMut(&Session)) -> usize {
        let end = from.saturating_add(n).min(self.entries.len());
        for (_, s) in self.entries.get(from..end).unwrap_or(&[]) {
            if let Some(s) = s {
                f(s);
            }
        }
        if end >= self.entries.len() {
            0
        } else {
            end
        }
    }
    pub fn keys(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.entries.iter().enumerate().filter_map(|(i, (gen, s))| {
            s.as_ref().map(|_| SessionKey {
                idx: i as u32,
                gen: *gen,
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    ConnectTimeout(ConnId),
    KeepAlive(ConnId),
    WillDelay(SessionKey, u64),
    SessionExpiry(SessionKey, u64),
}

/// A subscription as the local trie holds it.
#[derive(Debug, Clone)]
pub(crate) struct LocalSub {
    pub session: SessionKey,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
    /// Belongs to a tombstone whose routes are being withdrawn: it still forwards what
    /// arrives, but no longer counts as a subscriber of this shard.
    pub draining: bool,
}

#[derive(Debug)]
pub(crate) struct LocalGroup {
    pub name: Utf8Str,
    pub members: Vec<LocalSub>,
    pub next: usize,
}

/// Local trie node value: this shard's subscriptions of one filter.
#[derive(Debug, Default)]
pub(crate) struct LocalSubs {
    pub normal: Vec<LocalSub>,
    pub shared: Vec<LocalGroup>,
    /// The barrier carrying this filter's "+1" announcement while it may still be open.
    pub announcing: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct RouteGroup {
    pub name: Utf8Str,
    /// Members per shard.
    pub counts: Vec<u32>,
    /// Round-robin position; a `Cell` so that matching can pick while the trie is borrowed.
    pub next: std::cell::Cell<u64>,
}

impl RouteGroup {
    /// policy: shared subscriptions are served round robin over all members of the group,
    /// across shards: the n-th message goes to the shard holding member n mod members.
    pub fn pick(&self) -> Option<ShardId> {
        self.pick_excluding(0, 0)
    }

    /// As `pick`, counting `minus` fewer members on `shard` (members known to be gone).
    pub fn pick_excluding(&self, shard: ShardId, minus: u32) -> Option<ShardId> {
        let count = |s: usize, c: u32| if s == shard { c.saturating_sub(minus) } else { c } as u64;
        let total: u64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(s, &c)| count(s, c))
            .sum();
        if total == 0 {
            return None;
        }
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let mut r = n % total;
        for (s, &c) in self.counts.iter().enumerate() {
            let c = count(s, c);
            if r < c {
                return Some(s);
            }
            r -= c;
        }
        None
    }
}

/// Routing trie node value: which shards subscribe to one filter.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub filter: Utf8Str,
    /// Bit `s` set: shard `s` has ordinary subscribers.
    pub shards: u64,
    pub shared: Vec<RouteGroup>,
}

/// Size of the shard's encode buffer. Outbound packets are split off it as chunks; when less
/// than `SCRATCH_LOW` is left, a fresh buffer is taken (the old one is freed when its last
/// chunk is written), so output costs one allocation per this many bytes, not per packet.
const SCRATCH_CAPACITY: usize = 256 * 1024;
const SCRATCH_LOW: usize = 8 * 1024;
/// Used encode buffers kept for reuse (see `recycle.rs`): at 300 MB/s of output, allocating a
/// new one each time was a thousand allocations a second. Subscribers that are behind hold
/// chunks of several buffers (up to the soft output bound each), so the pool must outnumber
/// what they hold; after a second without output it shrinks to `SCRATCH_POOL_IDLE`.
const SCRATCH_POOL: usize = 32;
/// Spare message `Arc`s kept for reuse: enough for the acknowledgements of a few full QoS
/// 1/2 windows arriving together (~150 bytes each: at most ~150 KiB per shard).
pub(crate) const SPARE_MESSAGES: usize = 1024;
const SCRATCH_POOL_IDLE: usize = 2;

/// One broker shard. See the crate docs for the handle/poll contract.
pub struct Engine {
    pub(crate) shard: ShardId,
    pub(crate) shard_count: usize,
    pub(crate) cfg: Arc<EngineConfig>,
    /// Boxed: a map slot then costs 16 bytes, which matters with many idle connections.
    pub(crate) conns: IdMap<ConnId, Box<Conn>>,
    pub(crate) sessions: SessionSlab,
    /// Client ids: their sessions here, and (home shard) who owns each session.
    pub(crate) clients: Clients,
    pub(crate) local: Trie<LocalSubs>,
    pub(crate) routes: Trie<RouteEntry>,
    pub(crate) retained: Trie<Arc<Message>>,
    /// Entries of `retained` that are the broker's own `$SYS` messages.
    pub(crate) sys_retained: usize,
    pub(crate) timers: BinaryHeap<Reverse<(u64, Timer)>>,
    /// Connect timeouts, due in the order they were armed (all have the same length), so a
    /// FIFO of 16-byte entries does what the heap would with 32 (many connections arrive at
    /// once, and each arms one or two).
    pub(crate) connect_deadlines: VecDeque<(u64, ConnId)>,
    pub(crate) dirty: Vec<ConnId>,
    pub(crate) closing: VecDeque<ConnId>,
    pub(crate) outbox: VecDeque<(ShardId, Mail)>,
    pub(crate) self_mail: VecDeque<Mail>,
    pub(crate) scratch: BytesMut,
    /// Encode buffers filled earlier, some of whose chunks may still be queued.
    pub(crate) scratch_pool: Recycler,
    /// While delivering one message locally (`deliver_local`): its last QoS 0 encoding, by
    /// (version, RETAIN, DUP), shared with the next subscriber that needs the same bytes.
    pub(crate) share_encodes: bool,
    pub(crate) shared_encode: Option<(Arc<Message>, EncodingKey, Bytes)>,
    pub(crate) scratch_refilled_ms: u64,
    /// Message `Arc`s nobody else holds, reused for the next PUBLISHes (see `message_arc`).
    pub(crate) spare_messages: Vec<Arc<Message>>,
    /// The last message copied for a queue, and its copy (see `enqueue`).
    pub(crate) compact_cache: Option<(Arc<Message>, Arc<Message>)>,
    /// Sessions whose queues hold messages that still share a receive buffer (see
    /// `enqueue`), checked by `compact_aged_queues`.
    pub(crate) pinning: Vec<SessionKey>,
    pub(crate) pinning_checked_ms: u64,
    /// Reused by `deliver_local` so that matching does not allocate per message.
    pub(crate) match_scratch: Vec<(SessionKey, SubscriptionOptions, Option<u32>)>,
    pub(crate) barriers: IdMap<u64, crate::barrier::Barrier>,
    pub(crate) next_barrier: u64,
    /// The barrier that route announcements join while an operation runs.
    pub(crate) barrier_ctx: Option<u64>,
    /// Sequence number of the last message this shard published (see `Mail::Publish`).
    pub(crate) msg_seq: u64,
    /// Per origin shard, the highest message sequence number processed here.
    pub(crate) seen: Vec<u64>,
    /// Claims whose connection closed before the session arrived, with where to pass it on
    /// if a newer claim asked for it meanwhile.
    pub(crate) zombie_claims: HashMap<ConnId, (Utf8Str, Option<(ShardId, ConnId)>)>,
    /// Sessions (live, or tombstones) on this shard by the tombstone they came from: forwards
    /// from that older tombstone are passed on (a session that moved twice), and its
    /// `TombstoneGone` finds them.
    pub(crate) tombstones: HashMap<(ShardId, SessionKey), SessionKey>,
    /// Forwards of a tombstone whose session passed through here without stopping (a claim
    /// that lost to a newer one) go on to this shard.
    pub(crate) relays: HashMap<(ShardId, SessionKey), ShardId>,
    /// Connected sessions over their queue limit (see `EngineConfig::queue_hard_factor`),
    /// plus connections in `out_congested`.
    pub(crate) congested: usize,
    /// Connections whose output is over the soft bound, and since when.
    pub(crate) out_congested: Vec<(ConnId, u64)>,
    pub(crate) congestion_checked_ms: u64,
    /// Queue-full drops since the last warning, and when that was (rate-limited log).
    pub(crate) queue_drops_unlogged: u64,
    pub(crate) queue_drops_logged_ms: Option<u64>,
    pub(crate) assigned_ids: u64,
    pub(crate) now_ms: u64,
    /// The driver's microsecond clock (`set_clock_us`), for the broker-hop histogram only.
    pub(crate) now_us: u64,
    /// Where `scan_gauges` continues, and its sums so far.
    pub(crate) gauge_scan: (usize, crate::admin::Gauges),
    pub(crate) shutting_down: bool,
    pub(crate) stats: Stats,
    pub(crate) log: crate::persist::emit::Log,
}

impl Engine {
    /// A shard `shard` of `shard_count`.
    ///
    /// # Panics
    /// If `shard >= shard_count` or `shard_count` is 0 or above [`SHARDS_MAX`].
    pub fn new(shard: ShardId, shard_count: usize, cfg: Arc<EngineConfig>) -> Engine {
        assert!(
            shard_count > 0 && shard_count <= SHARDS_MAX,
            "1..=64 shards"
        );
        assert!(shard < shard_count, "shard index within shard count");
        Engine {
            shard,
            shard_count,
            cfg,
            conns: IdMap::default(),
            sessions: SessionSlab::default(),
            clients: Clients::default(),
            local: Trie::new(),
            routes: Trie::new(),
            retained: Trie::new(),
            sys_retained: 0,
            timers: BinaryHeap::new(),
            connect_deadlines: VecDeque::new(),
            dirty: Vec::new(),
            closing: VecDeque::new(),
            outbox: VecDeque::new(),
            self_mail: VecDeque::new(),
            scratch: BytesMut::with_capacity(SCRATCH_CAPACITY),
            scratch_pool: Recycler::new(SCRATCH_CAPACITY, SCRATCH_POOL),
            scratch_refilled_ms: 0,
            share_encodes: false,
            shared_encode: None,
            match_scratch: Vec::new(),
            compact_cache: None,
            spare_messages: Vec::with_capacity(SPARE_MESSAGES),
            pinning: Vec::new(),
            pinning_checked_ms: 0,
            barriers: IdMap::default(),
            next_barrier: 1,
            barrier_ctx: None,
            msg_seq: 0,
            seen: vec![0; shard_count],
            zombie_claims: HashMap::new(),
            tombstones: HashMap::new(),
            relays: HashMap::new(),
            congested: 0,
            out_congested: Vec::new(),
            congestion_checked_ms: 0,
            queue_drops_unlogged: 0,
            queue_drops_logged_ms: None,
            assigned_ids: 0,
            now_ms: 0,
            now_us: 0,
            gauge_scan: Default::default(),
            shutting_down: false,
            stats: Stats::default(),
            log: Default::default(),
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The driver's monotonic microsecond clock (never 0), read before each batch of input
    /// (a socket read, a mail drain): messages are stamped with it on receipt and the
    /// broker-hop histogram measures from it. Decisions never depend on it.
    pub fn set_clock_us(&mut self, us: u64) {
        self.now_us = us.max(1);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections currently open on this shard.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Sessions (connected or not) held by this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Backpressure: some connected subscriber is behind. The driver should then not read
    /// connections for which [`Engine::throttled`] is true, nor mail from other shards, until
    /// this is false again (it bounds itself: see `congestion_timeout_ms`).
    pub fn congested(&self) -> bool {
        self.congested > 0
    }

    /// While [`Engine::congested`]: whether input from `conn` should wait (it published
    /// recently and is not itself a congested subscriber, whose acknowledgements must flow).
    pub fn throttled(&self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let publisher = self.now_ms < c.publisher_until_ms;
        let congested_self = c.out_congested
            || c.session
                .and_then(|k| self.sessions.get(k))
                .is_some_and(|s| s.congested_since_ms.is_some());
        publisher && !congested_self
    }

    /// Timers in the heap (live and not yet discarded), for tests and metrics.
    pub fn timer_count(&self) -> usize {
        self.timers.len() + self.connect_deadlines.len()
    }

    /// Retained messages in this shard's replica of the retained store.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A new TCP connection. The engine expects CONNECT within `connect_timeout_ms`.
    pub fn handle_open(&mut self, now: u64, conn: ConnId, peer: SocketAddr, listener: u16) {
        self.now_ms = now;
        self.stats.connections_opened += 1;
        let c = Box::new(Conn {
            peer: peer.into(),
            state: ConnState::AwaitConnect,
            listener,
            out_congested: false,
            out_slow: false,
            version: None,
            client_id: None,
            session: None,
            claim: None,
            keep_alive_ms: 0,
            last_rx_ms: now,
            out: OutQueue::default(),
            dirty: false,
            max_packet_out: u32::MAX,
            max_packet_in: self.cfg.max_packet_size,
            receive_max_in: self.cfg.receive_maximum,
            alias_max_in: self.cfg.topic_alias_maximum,
            aliases: None,
            alias_out_max: 0,
            will: None,
            expiry_zero_at_connect: false,
            holds: 0,
            held: Vec::new(),
            fence: 0,
            deferred: 0,
            publisher_until_ms: 0,
        });
        if self.shutting_down {
            self.conns.insert(conn, c);
            self.begin_close(now, conn, false);
            return;
        }
        self.conns.insert(conn, c);
        self.arm(
            now + self.cfg.connect_timeout_ms,
            Timer::ConnectTimeout(conn),
        );
        tracing::debug!(shard = self.shard, conn = conn.0, client_id = "-", peer = %peer, "connection opened");
    }

    /// Bytes arrived on `conn`. Every complete packet at the front of `rx` is split off and
    /// processed; a partial packet stays in `rx` for the next call.
    pub fn handle_bytes(&mut self, now: u64, conn: ConnId, rx: &mut BytesMut) {
        self.now_ms = now;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                rx.clear();
                return;
            };
            if matches!(c.state, ConnState::Closing) {
                // The protocol table's row for every packet after close: discarded.
                rx.clear();
                return;
            }
            if rx.is_empty() {
                break;
            }
            let version = c.version;
            let before = rx.len();
            // Before CONNECT, note the protocol level: a broken CONNECT gets a CONNACK only
            // if it is a v5 one (the decoder consumes the frame).
            let level = if version.is_none() {
                tachyon_codec::peek_connect_level(rx)
            } else {
                None
            };
            if version.is_none() && rx[0] >> 4 != tachyon_codec::PacketType::Connect as u8 {
                // v5 [MQTT-3.1.0-1], v3.1.1 [MQTT-3.1.0-1]: judged from the first byte, before
                // decoding a body whose version is unknown (the protocol table's row for
                // every packet but CONNECT before CONNECT: `protocol::HOT_PATH_ROWS`).
                self.violation(now, conn, Violation::FirstPacketNotConnect, None);
                rx.clear();
                break;
            }
            let max_in = self
                .conns
                .get(&conn)
                .map_or(self.cfg.max_packet_size, |c| c.max_packet_in);
            match decode(rx, version, max_in as usize) {
                Ok(None) => break,
                Ok(Some(mut packet)) => {
                    // Keep alive counts Control Packets, not bytes (v5 [MQTT-3.1.2-22]):
                    // a trickle of partial packet bytes does not keep a connection alive.
                    let connected = match self.conns.get_mut(&conn) {
                        Some(c) => {
                            c.last_rx_ms = now;
                            c.state == ConnState::Connected
                        }
                        None => false,
                    };
                    self.stats.bytes_received += (before - rx.len()) as u64;
                    // The hot path: a PUBLISH is handled in place (see `on_publish`).
                    match &mut packet {
                        Packet::Publish(p) if connected => self.on_publish(now, conn, p),
                        _ => self.handle_packet(now, conn, packet),
                    }
                }
                Err(e) => {
                    self.violation(now, conn, Violation::Decode(e), level);
                    rx.clear();
                    break;
                }
            }
        }
        self.drain_self_mail(now);
    }

    /// The driver saw the connection end (peer closed, reset, I/O error), or finished closing a
    /// connection from [`Engine::poll_close`]. Idempotent.
    pub fn handle_closed(&mut self, now: u64, conn: ConnId) {
        self.now_ms = now;
        if let Some(c) = self.conns.get(&conn) {
            if c.state != ConnState::Closing {
                tracing::debug!(shard = self.shard, client_id = c.client_label(), peer = %c.peer, "connection lost");
                // Not closed by DISCONNECT: the Will Message is published (v5 [MQTT-3.1.2-8]).
                self.begin_close(now, conn, true);
            }
        }
        if self.conns.remove(&conn).is_some() {
            self.stats.connections_closed += 1;
        }
        self.drain_self_mail(now);
    }

    /// A message from another shard (or from this one, through the driver).
    pub fn handle_mail(&mut self, now: u64, mail: Mail) {
        self.now_ms = now;
        self.process_mail(now, mail);
        self.drain_self_mail(now);
    }

    /// Runs the timers due at `now`: keep alive, connect timeout, will delay, session expiry.
    pub fn handle_tick(&mut self, now: u64) {
        self.now_ms = now;
        self.compact_timers();
        self.check_congestion(now);
        self.check_output_congestion(now);
        self.compact_aged_queues(now);
        if self.scratch_pool.len() > SCRATCH_POOL_IDLE && now > self.scratch_refilled_ms + 1000 {
            self.scratch_pool.trim(SCRATCH_POOL_IDLE);
        }
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Reverse((_, timer)) = self.timers.pop().expect("peeked");
            self.fire(now, timer);
        }
        while let Some(&(due, conn)) = self.connect_deadlines.front() {
            if due > now {
                break;
            }
            self.connect_deadlines.pop_front();
            self.fire(now, Timer::ConnectTimeout(conn));
        }
        if self.connect_deadlines.is_empty() && self.connect_deadlines.capacity() > 1024 {
            // A burst of connections is over: give its memory back.
            self.connect_deadlines = VecDeque::new();
        }
        self.drain_self_mail(now);
    }

    /// Broker shutdown: v5 clients get DISCONNECT 0x8B (Server shutting down), every
    /// connection is closed, and new connections are refused.
    pub fn handle_shutdown(&mut self, now: u64) {
        self.now_ms = now;
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            if c.state == ConnState::Closing {
                continue;
            }
            if c.state == ConnState::Connected && c.version() == ProtocolVersion::V5 {
                self.send_disconnect(id, tachyon_codec::ReasonCode::SERVER_SHUTTING_DOWN, None);
            }
            self.begin_close(now, id, false);
        }
        self.drain_self_mail(now);
    }

    /// Next connection with output to write.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.dirty = false;
                if c.out.len_bytes() > self.cfg.output_close_bytes && c.state != ConnState::Closing
                {
                    self.stats.closed_slow_consumer += 1;
                    tracing::warn!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                        queued_bytes = c.out.len_bytes(), limit = self.cfg.output_close_bytes,
                        "slow consumer: output not read by the client; closing (limits.max_output_bytes_before_close)");
                    // Nothing more can be written to it in time; drop what is queued (a packet
                    // cut short is followed only by the FIN).
                    c.out.clear();
                    c.held.clear();
                    c.holds = 0;
                    let now = self.now_ms;
                    self.begin_close(now, id, true);
                    self.drain_self_mail(now);
                    continue;
                }
                if !c.out.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The output of `conn`: the driver writes from the front and calls `consume`.
    pub fn out_queue(&mut self, conn: ConnId) -> Option<&mut OutQueue> {
        self.conns.get_mut(&conn).map(|c| &mut c.out)
    }

    /// Next connection to close: write what is in its `out_queue`, close the socket, then
    /// call [`Engine::handle_closed`].
    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.closing.pop_front()
    }

    /// Next message for another shard.
    pub fn poll_mail(&mut self) -> Option<(ShardId, Mail)> {
        self.outbox.pop_front()
    }

    /// When `handle_tick` next has work.
    pub fn poll_deadline(&self) -> Option<u64> {
        let heap = self.timers.peek().map(|Reverse((t, _))| *t);
        let fifo = self.connect_deadlines.front().map(|&(t, _)| t);
        match (heap, fifo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers are never cancelled; those of closed connections and old session epochs are
    /// ignored when they fire. When they outnumber the live ones by far, drop them, so that a
    /// reconnect loop with long keep alive or expiry cannot grow the heap without bound.
    fn compact_timers(&mut self) {
        if self.connect_deadlines.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.connect_deadlines.retain(|(_, c)| {
                conns
                    .get(c)
                    .is_some_and(|c| c.state != ConnState::Connected)
            });
        }
        let live_max = 2 * (self.conns.len() + self.sessions.len()) + 1024;
        if self.timers.len() <= 2 * live_max {
            return;
        }
        let timers = std::mem::take(&mut self.timers).into_vec();
        self.timers = timers
            .into_iter()
            .filter(|Reverse((_, t))| match *t {
                Timer::ConnectTimeout(c) | Timer::KeepAlive(c) => self.conns.contains_key(&c),
                Timer::WillDelay(k, e) | Timer::SessionExpiry(k, e) => {
                    self.sessions.get(k).is_some_and(|s| s.epoch == e)
                }
            })
            .collect();
    }

    pub(crate) fn arm(&mut self, due: u64, timer: Timer) {
        match timer {
            Timer::ConnectTimeout(conn) => {
                debug_assert!(self.connect_deadlines.back().is_none_or(|&(t, _)| t <= due));
                self.connect_deadlines.push_back((due, conn));
            }
            _ => self.timers.push(Reverse((due, timer))),
        }
    }

    pub(crate) fn send_mail(&mut self, to: ShardId, mail: Mail) {
        if to == self.shard {
            self.self_mail.push_back(mail);
        } else {
            self.outbox.push_back((to, mail));
        }
    }

    /// Sends `mail` (made by `make`) to every shard, this one last and directly.
    pub(crate) fn broadcast(&mut self, make: impl Fn() -> Mail) {
        for s in 0..self.shard_count {
            if s != self.shard {
                self.outbox.push_back((s, make()));
            }
        }
    }

    /// Opens a scope that answers `ack` once this shard's records of the mail are durable
    /// (see `persist::emit`); without one (not waiting for the log), answers at once.
    fn answer_when_durable(&mut self, ack: Option<(ShardId, u64)>) -> bool {
        let Some((to, barrier)) = ack else {
            return false;
        };
        if self.scope_begin(crate::persist::emit::Answer::Reply(to, barrier)) {
            return true;
        }
        self.send_mail(to, Mail::RouteAck { barrier });
        false
    }

    fn ack_retain(&mut self, ack: Option<(ShardId, u64)>) {
        if let Some((to, barrier)) = ack {
            if to != self.shard {
                self.send_mail(to, Mail::RouteAck { barrier });
            }
        }
    }

    pub(crate) fn drain_self_mail(&mut self, now: u64) {
        while let Some(m) = self.self_mail.pop_front() {
            self.process_mail(now, m);
        }
    }

    fn process_mail(&mut self, now: u64, mail: Mail) {
        match mail {
            Mail::Publish {
                msg,
                normal,
                shared,
                fanout,
                origin,
                seq,
                ack,
            } => {
                let scoped = self.answer_when_durable(ack);
                self.deliver_local(now, &msg, normal, &shared, (origin, seq, fanout));
                if scoped {
                    self.scope_end();
                }
            }
            Mail::Sync { ack: (to, barrier) } => self.send_mail(to, Mail::RouteAck { barrier }),
            Mail::Route {
                filter,
                group,
                shard,
                delta,
                ack,
            } => {
                self.apply_route(&filter, group.as_ref(), shard, delta);
                if let Some((to, barrier)) = ack {
                    self.send_mail(to, Mail::RouteAck { barrier });
                }
            }
            Mail::RouteAck { barrier } => self.on_route_ack(barrier),
            Mail::Forward {
                client_id,
                tombstone,
                delivery,
                tag,
                ack,
            } => {
                let scoped = self.answer_when_durable(ack);
                self.on_forward(now, client_id, tombstone, delivery, tag);
                if scoped {
                    self.scope_end();
                }
            }
            Mail::Unforward { tombstone } => self.on_unforward(tombstone),
            Mail::TombstoneGone { tombstone } => self.on_tombstone_gone(tombstone),
            Mail::RetainSet { msg, ack } => {
                let m = msg.clone();
                self.broadcast(|| Mail::RetainApply {
                    msg: m.clone(),
                    ack,
                });
                // The home shard logs the update: the origin's barrier waits for that too.
                let scoped = self.answer_when_durable(ack.filter(|a| a.0 != self.shard));
                self.apply_retain(msg);
                if scoped {
                    self.scope_end();
                }
            }
            Mail::RetainApply { msg, ack } => {
                self.apply_retain(msg);
                self.ack_retain(ack);
            }
            Mail::Claim {
                client_id,
                shard,
                conn,
            } => self.on_claim(client_id, shard, conn),
            Mail::Evict {
                client_id,
                owner,
                to_shard,
                to_conn,
            } => self.on_evict(now, client_id, owner, to_shard, to_conn),
            Mail::Transfer {
                client_id,
                conn,
                handover,
                discard,
            } => self.on_transfer(now, client_id, conn, handover, discard),
            Mail::Release {
                client_id,
                shard,
                claim,
            } => self.on_release(client_id, shard, claim),
            Mail::LogHealth { shard, failed } => self.on_log_health(shard, failed),
        }
    }

    /// Encodes `packet` for `conn` and queues it.
    pub(crate) fn send_packet(&mut self, conn: ConnId, packet: &Packet) {
        self.scratch_ready();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let version = c.version();
        match encode(packet, version, &mut self.scratch) {
            Ok(_) => {
                let b = self.scratch.split().freeze();
                if b.len() > c.max_packet_out as usize {
                    // v5 [MQTT-3.1.2-24]: never above the client's Maximum Packet Size.
                    tracing::debug!(
                        shard = self.shard,
                        client_id = c.client_label(),
                        size = b.len(),
                        "packet above the client's maximum packet size not sent"
                    );
                    return;
                }
                self.stats.bytes_sent_queued += b.len() as u64;
                c.push_out(b, conn, &mut self.dirty);
            }
            Err(e) => {
                // Our own packets are built valid; an error here is a bug worth a loud log,
                // not a crash of the shard.
                tracing::error!(shard = self.shard, client_id = c.client_label(), peer = %c.peer, error = %e, "could not encode packet");
            }
        }
    }

    /// Makes room in the encode buffer (see `SCRATCH_CAPACITY`).
    pub(crate) fn scratch_ready(&mut self) {
        if self.scratch.capacity() - self.scratch.len() >= SCRATCH_LOW {
            return;
        }
        self.scratch.clear();
        self.scratch_pool.refill(&mut self.scratch);
        self.scratch_refilled_ms = self.now_ms;
    }

    pub(crate) fn send_disconnect(
        &mut self,
        conn: ConnId,
        reason: tachyon_codec::ReasonCode,
        reason_string: Option<&str>,
    ) {
        let mut properties = tachyon_codec::Properties::default();
        let max = self.conns.get(&conn).map_or(u32::MAX, |c| c.max_packet_out) as usize;
        if let Some(s) = reason_string {
            // The Reason String is optional: leave it out if it would make the packet too
            // large for the client.
            if s.len() + 16 <= max {
                properties.reason_string = Utf8Str::from_string(s.to_string());
            }
        }
        self.send_packet(
            conn,
            &Packet::Disconnect(tachyon_codec::Disconnect { reason, properties }),
        );
    }

    /// A peer broke a rule: count, log, tell it why (v5) and close.
    /// `connect_level` is the protocol level of a CONNECT that failed to decode, if known.
    pub(crate) fn violation(
        &mut self,
        now: u64,
        conn: ConnId,
        v: Violation,
        connect_level: Option<u8>,
    ) {
        *self.stats.violations.entry(v.kind()).or_insert(0) += 1;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let reason = v.reason_code();
        tracing::warn!(
            shard = self.shard,
            client_id = c.client_label(),
            peer = %c.peer,
            kind = v.kind(),
            reason = %reason,
            "protocol violation: {v}; closing connection"
        );
        match c.state {
            ConnState::AwaitConnect => {
                // A CONNECT that failed: v5 clients get CONNACK with the reason (v5 3.2.2.2);
                // v3.1.1 clients get CONNACK only for an unacceptable protocol level
                // (v3.1.1 [MQTT-3.1.2-2]), otherwise just the close (v3.1.1 [MQTT-3.1.4-1]).
                let unsupported = reason == tachyon_codec::ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
                let version = match connect_level {
                    Some(5) if !unsupported => Some(ProtocolVersion::V5),
                    _ if unsupported => Some(ProtocolVersion::V311),
                    _ => None,
                };
                if let Some(version) = version {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.version = Some(version);
                    }
                    self.send_connack_refusal(conn, reason);
                }
            }
            // No CONNACK was sent yet: a v5 client gets the reason in CONNACK, never a
            // DISCONNECT before CONNACK (v5 [MQTT-3.2.0-1]); the claim completes in the
            // background and the session stays offline.
            ConnState::Claiming => {
                if c.version() == ProtocolVersion::V5 {
                    self.send_connack_refusal(conn, reason);
                }
            }
            ConnState::Connected => {
                if c.version() == ProtocolVersion::V5 {
                    self.send_disconnect(conn, reason, Some(&v.to_string()));
                }
            }
            ConnState::Closing => return,
        }
        self.begin_close(now, conn, true);
    }
}
