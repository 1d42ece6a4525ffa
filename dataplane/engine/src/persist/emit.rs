//! How the engine logs its durable state and holds back what depends on it.
//!
//! The engine encodes records into its own buffer as its state changes (no allocation: the
//! buffer is reused); the driver moves them into the shard's WAL in order, commits, and
//! reports how many are durable (`Engine::handle_durable`). With `acks_wait_for_log`:
//!
//! - output that promises a logged change waits for it (a *fence* on the connection):
//!   CONNACK after the session's record, SUBACK after the subscription's, an outbound QoS 2
//!   PUBLISH after its enqueue and send records, PUBREC/PUBREL/PUBCOMP after the QoS 2 state
//!   they announce (an outbound QoS 1 PUBLISH does not wait: at least once allows sending it
//!   again after a crash);
//! - a publisher's PUBACK/PUBREC waits for every record its message caused on this shard
//!   (a fence at the log position after routing) and on the other shards: each shard the
//!   message was mailed to answers with `RouteAck` once its own records are durable (and
//!   the sessions it forwarded the message to have answered), on the barrier machinery.
//!
//! Only persistent sessions (Session Expiry > 0) are logged, and of their messages only
//! QoS 1 and 2 ones.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use tachyon_codec::{encode_publish_head, PacketId, ProtocolVersion, PublishHead, QoS, Utf8Str};

use super::record::{kind, put_opt_u32, put_str};
use crate::barrier::Barrier;
use crate::engine::{Engine, SessionKey};
use crate::mail::Mail;
use crate::message::Message;
use crate::session::Delivery;
use crate::{ConnId, ShardId};

/// What waits for a log position to become durable.
#[derive(Debug, Clone)]
pub(crate) enum Wait {
    /// Counts as one acknowledgement of a local barrier.
    Barrier(u64),
    /// Acknowledge another shard's barrier.
    Reply(ShardId, u64),
    /// An inbound QoS 2 message is durable everywhere it went: log that.
    Routed(Utf8Str, u16),
}

/// Who is answered once a message's records are durable (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// The publisher's connection: its output (the PUBACK) is held.
    Hold(ConnId),
    /// Another shard's barrier.
    Reply(ShardId, u64),
}

#[derive(Debug)]
pub(crate) struct Scope {
    answer: Answer,
    /// Log position when the scope began: records after it belong to the message.
    start: u64,
    /// A local barrier, opened once the message went to another shard or session owner.
    barrier: Option<u64>,
    /// An inbound QoS 2 message with a receipt: log `Qos2Routed` when it is durable
    /// everywhere (publisher client id, Packet Identifier).
    routed: Option<(Utf8Str, u16)>,
}

/// The engine's log state.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Encoded records not yet taken by the driver: kind (u8), payload length (u32 LE),
    /// payload.
    pub buf: BytesMut,
    /// Records written since the engine started (the log position of the last one).
    pub pos: u64,
    /// Records the driver reported durable.
    pub durable: u64,
    /// Connections whose output is held until `Conn::fence` is durable.
    pub fenced: Vec<ConnId>,
    pub waits: VecDeque<(u64, Wait)>,
    pub scope: Option<Scope>,
    /// Last delivery id given (unique in this shard's log).
    pub next_delivery: u64,
    /// Last session generation given.
    pub last_gen: u64,
    /// Sessions that ended here recently, with their generation and when (Unix ms): written
    /// into snapshots for a while, so that an older generation in another shard's log is not
    /// brought back by recovery.
    pub ended: Vec<(Utf8Str, u64, u64)>,
    /// Shards (bit per shard, this one included) whose log cannot be written (disk full, I/O
    /// error): QoS 1/2 publishes are refused until every one can again.
    pub failed_shards: u64,
    /// Recovery is loading sessions: route changes are not announced (see `restore`).
    pub restoring: bool,
    /// Client messages waiting for a log position before they are routed (see
    /// `Engine::on_publish`), in arrival order.
    pub deferred: VecDeque<Deferred>,
    /// Receipts given (see `Record::Qos2Received`).
    pub receipts: u64,
    /// Inbound QoS 2 messages whose routing is not confirmed yet: snapshots keep them.
    pub unrouted: Vec<(Utf8Str, u16, std::sync::Arc<Message>)>,
    /// Receipts of deliveries completed recently, with the session and when (Unix ms):
    /// snapshots keep them for a while (see `Record::ReceiptDone`).
    pub done_receipts: VecDeque<(Utf8Str, u64, u64)>,
}

#[derive(Debug)]
pub(crate) struct Deferred {
    pub pos: u64,
    pub conn: ConnId,
    pub msg: std::sync::Arc<Message>,
    pub pid: Option<PacketId>,
}

/// How long ended-session markers are kept in snapshots.
const ENDED_KEEP_MS: u64 = 10 * 60 * 1000;
/// How long (and how many) receipts of completed deliveries are kept for snapshots: they
/// matter only until the publisher's shard has logged `Qos2Routed`, milliseconds later.
const RECEIPTS_KEEP_MS: u64 = 10_000;
const RECEIPTS_KEEP_MAX: usize = 1 << 20;

impl Engine {
    /// Whether this engine logs state at all.
    pub(crate) fn logging(&self) -> bool {
        self.cfg.log_state
    }

    pub(crate) fn fencing(&self) -> bool {
        self.cfg.log_state && self.cfg.acks_wait_for_log
    }

    pub(crate) fn unix_ms(&self, engine_ms: u64) -> u64 {
        self.cfg.unix_epoch_ms.saturating_add(engine_ms)
    }

    /// Writes one record: `kind`, then the payload `f` appends.
    fn record(&mut self, k: u8, f: impl FnOnce(&mut BytesMut)) {
        let b = &mut self.log.buf;
        b.put_u8(k);
        let at = b.len();
        b.put_u32_le(0);
        f(b);
        let len = (b.len() - at - 4) as u32;
        b[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.log.pos += 1;
    }

    /// Holds `conn`'s output from now on until the current log position is durable.
    pub(crate) fn fence(&mut self, conn: ConnId) {
        if !self.fencing() || self.log.pos <= self.log.durable {
            return;
        }
        let pos = self.log.pos;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.fence == 0 {
            c.holds += 1;
            self.log.fenced.push(conn);
        }
        c.fence = pos;
    }

    fn fence_session(&mut self, key: SessionKey) {
        if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn) {
            self.fence(conn);
        }
    }

    /// Whether `key`'s state goes to the log.
    pub(crate) fn logged(&self, key: SessionKey) -> bool {
        self.logging()
            && self
                .sessions
                .get(key)
                .is_some_and(|s| s.logged && s.forward_to.is_none())
    }

    /// A generation above every earlier one of this shard, and above `after`.
    pub(crate) fn next_gen(&mut self, after: u64) -> u64 {
        let by_clock = self.unix_ms(self.now_ms) << 16;
        let g = by_clock.max(self.log.last_gen + 1).max(after + 1);
        self.log.last_gen = g;
        g
    }

    /// The session's parameters (same generation) changed: expiry, protocol version.
    pub(crate) fn log_session_params(&mut self, key: SessionKey) {
        if !self.logged(key) {
            return;
        }
        let s = self.sessions.get(key).expect("logged");
        let (client, gen, v5, expiry) = (
            s.client_id.clone(),
            s.gen,
            s.version == ProtocolVersion::V5,
            s.expiry_secs,
        );
        self.record(kind::SESSION_OPEN, |b| {
            put_str(b, client.as_str());
            b.put_u64_le(gen);
            b.put_u8(u8::from(v5));
            b.put_u32_le(expiry);
        });
        self.fence_session(key);
    }

    /// Makes the session's log state match its expiry after a connect or a move: a session
    /// that became persistent, arrived from another shard or started anew is written whole
    /// under a new generation; one that stopped being persistent ends in the log.
    pub(crate) fn log_session_attach(&mut self, key: SessionKey, fresh: bool) {
        if !self.logging() {
            return;
        }
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let persistent = s.expiry_secs > 0;
        match (s.logged, persistent) {
            (true, true) if !fresh => self.log_session_params(key),
            (_, true) => self.log_session_dump(key),
            (true, false) => {
                let (client, gen) = (s.client_id.clone(), s.gen);
                self.log_session_end(client, gen);
                if let Some(s) = self.sessions.get_mut(key) {
                    s.logged = false;
                }
            }
            (false, false) => {}
        }
    }

    /// Writes the whole session under a new generation: parameters, subscriptions, inflight
    /// and queued messages (numbered anew), inbound QoS 2 identifiers, pending Will.
    pub(crate) fn log_session_dump(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let gen = self.next_gen(s.gen);
        let s = self.sessions.get_mut(key).expect("checked");
        s.gen = gen;
        s.logged = true;
        self.log_session_params(key);
        self.log_session_state(key, true);
    }

    /// Everything of a logged session after its `SessionOpen` (snapshots: `renumber` false).
    pub(crate) fn log_session_state(&mut self, key: SessionKey, renumber: bool) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let client = s.client_id.clone();
        let subs: Vec<(Utf8Str, u8, Option<u32>)> = s
            .subscriptions
            .iter()
            .map(|(f, x)| (f.clone(), pack_options(&x.options), x.id))
            .collect();
        for (filter, options, id) in subs {
            self.record(kind::SUBSCRIBE, |b| {
                put_str(b, client.as_str());
                put_str(b, filter.as_str());
                b.put_u8(options);
                put_opt_u32(b, id);
            });
        }
        // Inflight in order of first transmission, then the queue in order.
        let Some(f) = self.sessions.get_mut(key).and_then(|s| s.flows_if_any()) else {
            self.log_will(key);
            self.fence_session(key);
            return;
        };
        let mut inflight: Vec<(u64, u16)> = f.inflight.iter().map(|(p, i)| (i.seq, *p)).collect();
        inflight.sort_unstable();
        let mut flows = std::mem::replace(f, crate::session::Flows::EMPTY);
        for &(_, pid) in &inflight {
            let Some(inf) = flows.inflight.get_mut(&pid) else {
                continue;
            };
            if inf.delivery.qos == QoS::AtMostOnce {
                continue;
            }
            if renumber || inf.delivery.id == 0 {
                self.log.next_delivery += 1;
                inf.delivery.id = self.log.next_delivery;
            }
            self.write_enqueue(&client, &inf.delivery);
            let id = inf.delivery.id;
            self.record(kind::SENT, |b| {
                put_str(b, client.as_str());
                b.put_u64_le(id);
                b.put_u16_le(pid);
            });
            if inf.state == crate::session::OutState::AwaitPubComp {
                self.record(kind::RELEASED, |b| {
                    put_str(b, client.as_str());
                    b.put_u16_le(pid);
                });
            }
        }
        for d in flows.queue.iter_mut() {
            if d.qos == QoS::AtMostOnce {
                continue;
            }
            if renumber || d.id == 0 {
                self.log.next_delivery += 1;
                d.id = self.log.next_delivery;
            }
            self.write_enqueue(&client, d);
        }
        for pid in flows.qos2_incoming.iter().copied().collect::<Vec<_>>() {
            self.write_qos2_received(&client, pid);
        }
        if let Some(f) = self.sessions.get_mut(key).and_then(|s| s.flows_if_any()) {
            *f = flows;
        }
        self.log_will(key);
        self.fence_session(key);
    }

    pub(crate) fn log_session_end(&mut self, client: Utf8Str, gen: u64) {
        if !self.logging() {
            return;
        }
        self.record(kind::SESSION_END, |b| {
            put_str(b, client.as_str());
            b.put_u64_le(gen);
        });
        let now = self.unix_ms(self.now_ms);
        self.log.ended.retain(|e| now < e.2 + ENDED_KEEP_MS);
        self.log.ended.push((client, gen, now));
    }

    /// A session leaves this shard's log for good (it ended): called before it is removed.
    pub(crate) fn log_session_removed(&mut self, key: SessionKey) {
        if !self.logged(key) {
            return;
        }
        let s = self.sessions.get(key).expect("logged");
        let (client, gen) = (s.client_id.clone(), s.gen);
        self.log_session_end(client, gen);
    }

    pub(crate) fn log_subscription(
        &mut self,
        key: SessionKey,
        filter: &Utf8Str,
        sub: Option<(u8, Option<u32>)>,
    ) {
        if !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        match sub {
            Some((options, id)) => self.record(kind::SUBSCRIBE, |b| {
                put_str(b, client.as_str());
                put_str(b, filter.as_str());
                b.put_u8(options);
                put_opt_u32(b, id);
            }),
            None => self.record(kind::UNSUBSCRIBE, |b| {
                put_str(b, client.as_str());
                put_str(b, filter.as_str());
            }),
        }
        self.fence_session(key);
    }

    /// A QoS 1/2 delivery joins a logged session (queued or sent at once): it gets an id and
    /// an enqueue record.
    pub(crate) fn log_enqueue(&mut self, key: SessionKey, d: &mut Delivery) {
        if d.id != 0 || d.qos == QoS::AtMostOnce || !self.logged(key) {
            return;
        }
        self.log.next_delivery += 1;
        d.id = self.log.next_delivery;
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        self.write_enqueue(&client, d);
        // A QoS 1 delivery may go out before its record is durable: after a crash it is
        // sent again (at least once), or the publisher, not yet acknowledged, resends it.
        // QoS 2 must not be delivered from state the log could lose (see `log_sent`).
        if d.qos == QoS::ExactlyOnce {
            self.fence_session(key);
        }
    }

    fn write_enqueue(&mut self, client: &Utf8Str, d: &Delivery) {
        let id = d.id;
        let expires = d.msg.expires_at_ms.map(|t| self.unix_ms(t));
        self.record(kind::ENQUEUE, |b| {
            put_str(b, client.as_str());
            b.put_u64_le(id);
            put_message(b, &d.msg, d.qos, d.retain, &d.sub_ids, expires);
        });
    }

    /// A logged delivery goes out with `pid`; a QoS 2 one only once this is durable, so that
    /// after a crash it is resent with the same identifier, never as a new message.
    pub(crate) fn log_sent(&mut self, key: SessionKey, id: u64, pid: u16, qos: QoS) {
        if id == 0 || !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        self.record(kind::SENT, |b| {
            put_str(b, client.as_str());
            b.put_u64_le(id);
            b.put_u16_le(pid);
        });
        if qos == QoS::ExactlyOnce {
            self.fence_session(key);
        }
    }

    /// Outbound flow state by Packet Identifier: `Released` (PUBREL goes out: fenced) or
    /// `Completed` (nothing waits for it).
    pub(crate) fn log_flow(&mut self, key: SessionKey, pid: u16, released: bool) {
        if !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        let k = if released {
            kind::RELEASED
        } else {
            kind::COMPLETED
        };
        self.record(k, |b| {
            put_str(b, client.as_str());
            b.put_u16_le(pid);
        });
        if released {
            self.fence_session(key);
        }
    }

    /// A logged delivery left its session without completing (expired, moved to another
    /// member of a shared group).
    pub(crate) fn log_dropped(&mut self, key: SessionKey, id: u64) {
        if id == 0 || !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        self.record(kind::DROPPED, |b| {
            put_str(b, client.as_str());
            b.put_u64_le(id);
        });
    }

    /// Inbound QoS 2: PUBREC (`received`) or PUBCOMP (released) goes out after this.
    pub(crate) fn log_qos2_incoming(&mut self, key: SessionKey, pid: u16, received: bool) {
        if !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        let k = if received {
            kind::QOS2_RECEIVED
        } else {
            kind::QOS2_RELEASED
        };
        self.record(k, |b| {
            put_str(b, client.as_str());
            b.put_u16_le(pid);
        });
        self.fence_session(key);
    }

    /// The session's pending Will (or that it has none any more).
    pub(crate) fn log_will(&mut self, key: SessionKey) {
        if !self.logged(key) {
            return;
        }
        let s = self.sessions.get(key).expect("logged");
        let client = s.client_id.clone();
        match &s.pending_will {
            Some(p) => {
                let due = self.unix_ms(p.due_ms);
                let w = &p.will;
                let msg = Message {
                    topic: w.topic.clone(),
                    payload: w.payload.clone(),
                    qos: w.qos,
                    retain: w.retain,
                    properties: Message::boxed_properties(w.properties.clone()),
                    expires_at_ms: None,
                    origin: Some(client.clone()),
                    receipt: 0,
                    owned: false,
                    received_us: 0,
                };
                self.record(kind::WILL_PENDING, |b| {
                    put_str(b, client.as_str());
                    b.put_u64_le(due);
                    put_message(b, &msg, msg.qos, msg.retain, &[], None);
                });
            }
            None => self.record(kind::WILL_DONE, |b| put_str(b, client.as_str())),
        }
    }

    /// A retained message changed at its home shard (the shard that orders the topic's
    /// updates logs them).
    pub(crate) fn log_retained(&mut self, msg: &Message) {
        // The broker's own `$SYS` topics are republished at every interval: not logged.
        if !self.logging()
            || msg.is_broker_sys()
            || crate::mail::home_shard(msg.topic.as_bytes(), self.shard_count) != self.shard
        {
            return;
        }
        if msg.payload.is_empty() {
            self.record(kind::RETAIN_CLEAR, |b| put_str(b, msg.topic.as_str()));
        } else {
            let expires = msg.expires_at_ms.map(|t| self.unix_ms(t));
            self.record(kind::RETAIN_SET, |b| {
                put_message(b, msg, msg.qos, true, &[], expires)
            });
        }
    }

    // ---- acknowledgements that wait for the log ----

    /// Starts collecting the records that one message causes (see `Answer`). Nested calls
    /// join the outer scope.
    pub(crate) fn scope_begin(&mut self, answer: Answer) -> bool {
        if !self.fencing() || self.log.scope.is_some() {
            return false;
        }
        self.log.scope = Some(Scope {
            answer,
            start: self.log.pos,
            barrier: None,
            routed: None,
        });
        true
    }

    /// The scope's message is an inbound QoS 2 one with a receipt (see `Scope::routed`).
    pub(crate) fn scope_routed(&mut self, routed: Option<(Utf8Str, u16)>) {
        if let Some(s) = &mut self.log.scope {
            s.routed = routed;
        }
    }

    /// A receipt unique among the shards and runs: a counter (above every receipt in the
    /// recovered log, and starting from the start time in milliseconds x 1024), then the
    /// shard in the low 6 bits.
    pub(crate) fn next_receipt(&mut self) -> u64 {
        let floor = self.cfg.unix_epoch_ms << 10;
        self.log.receipts = self.log.receipts.max(floor) + 1;
        (self.log.receipts << 6) | self.shard as u64
    }

    /// Recovery: receipts given from now on are above `receipt` (one seen in the log).
    pub fn receipts_above(&mut self, receipt: u64) {
        self.log.receipts = self.log.receipts.max(receipt >> 6);
    }

    /// Logs a new inbound QoS 2 identifier with its message (routing not confirmed yet).
    pub(crate) fn log_qos2_received(
        &mut self,
        key: SessionKey,
        pid: u16,
        msg: &std::sync::Arc<Message>,
    ) {
        if !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        self.log.unrouted.push((client.clone(), pid, msg.clone()));
        self.write_qos2_received(&client, pid);
        self.fence_session(key);
    }

    /// `Qos2Received` for `client`'s identifier `pid`: with the message while it is not
    /// routed, else without.
    fn write_qos2_received(&mut self, client: &Utf8Str, pid: u16) {
        let unrouted = self
            .log
            .unrouted
            .iter()
            .find(|(c, p, _)| *p == pid && c == client)
            .map(|(_, _, m)| m.clone());
        let expires = unrouted
            .as_ref()
            .and_then(|m| m.expires_at_ms)
            .map(|t| self.unix_ms(t));
        self.record(kind::QOS2_RECEIVED, |b| {
            put_str(b, client.as_str());
            b.put_u16_le(pid);
            match &unrouted {
                Some(m) => {
                    b.put_u64_le(m.receipt);
                    b.put_u8(1);
                    put_message(b, m, m.qos, m.retain, &[], expires);
                }
                None => {
                    b.put_u64_le(0);
                    b.put_u8(0);
                }
            }
        });
    }

    /// An inbound QoS 2 message is durable everywhere it went.
    pub(crate) fn log_qos2_routed(&mut self, client: Utf8Str, pid: u16) {
        let Some(i) = self
            .log
            .unrouted
            .iter()
            .position(|(c, p, _)| *p == pid && *c == client)
        else {
            return;
        };
        self.log.unrouted.swap_remove(i);
        self.record(kind::QOS2_ROUTED, |b| {
            put_str(b, client.as_str());
            b.put_u16_le(pid);
        });
    }

    /// A delivery carrying `receipt` completed or left `key` (see `Log::done_receipts`).
    pub(crate) fn note_receipt_done(&mut self, key: SessionKey, receipt: u64) {
        if receipt == 0 || !self.logged(key) {
            return;
        }
        let client = self.sessions.get(key).expect("logged").client_id.clone();
        let now = self.unix_ms(self.now_ms);
        while self.log.done_receipts.front().is_some_and(|e| {
            now >= e.2 + RECEIPTS_KEEP_MS || self.log.done_receipts.len() >= RECEIPTS_KEEP_MAX
        }) {
            self.log.done_receipts.pop_front();
        }
        self.log.done_receipts.push_back((client, receipt, now));
    }

    /// The message is going to another shard (or session owner): the barrier it answers
    /// there, created on first use.
    pub(crate) fn scope_ack_target(&mut self) -> Option<(ShardId, u64)> {
        let scope = self.log.scope.as_ref()?;
        let id = match scope.barrier {
            Some(id) => id,
            None => {
                let id = self.next_barrier;
                self.next_barrier += 1;
                let mut b = Barrier::default();
                match scope.answer {
                    Answer::Hold(conn) => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.holds += 1;
                            b.release = Some(conn);
                        }
                    }
                    Answer::Reply(shard, barrier) => b.reply = Some((shard, barrier)),
                }
                self.barriers.insert(id, b);
                self.log.scope.as_mut().expect("checked").barrier = Some(id);
                id
            }
        };
        if let Some(b) = self.barriers.get_mut(&id) {
            b.remaining += 1;
        }
        Some((self.shard, id))
    }

    /// Ends the scope: the answer goes out once this shard's records are durable and every
    /// shard the message went to has answered.
    pub(crate) fn scope_end(&mut self) {
        let Some(scope) = self.log.scope.take() else {
            return;
        };
        let pos = self.log.pos;
        let logged = pos > scope.start && pos > self.log.durable;
        match (scope.answer, scope.barrier) {
            (Answer::Hold(conn), barrier) => {
                if logged {
                    self.fence(conn);
                }
                if let Some(r) = scope.routed {
                    // `Qos2Routed` once this shard's records and every other shard's are
                    // durable.
                    match barrier.and_then(|id| self.barriers.get_mut(&id).map(|b| (id, b))) {
                        Some((id, b)) => {
                            b.then.push(crate::barrier::AfterBarrier::Routed(r.0, r.1));
                            if logged {
                                b.remaining += 1;
                                self.log.waits.push_back((pos, Wait::Barrier(id)));
                            }
                        }
                        None if logged => self.log.waits.push_back((pos, Wait::Routed(r.0, r.1))),
                        None => self.log_qos2_routed(r.0, r.1),
                    }
                }
                if let Some(id) = barrier {
                    self.close_barrier(id);
                }
            }
            (Answer::Reply(..), Some(id)) => {
                if logged {
                    if let Some(b) = self.barriers.get_mut(&id) {
                        b.remaining += 1;
                    }
                    self.log.waits.push_back((pos, Wait::Barrier(id)));
                }
                self.close_barrier(id);
            }
            (Answer::Reply(shard, barrier), None) => {
                if logged {
                    self.log.waits.push_back((pos, Wait::Reply(shard, barrier)));
                } else {
                    self.send_mail(shard, Mail::RouteAck { barrier });
                }
            }
        }
    }

    /// Holds a client's message until the log is durable up to now (see `on_publish`).
    pub(crate) fn defer_publish(
        &mut self,
        conn: ConnId,
        msg: std::sync::Arc<Message>,
        pid: Option<PacketId>,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.deferred += 1;
        }
        let pos = self.log.pos;
        self.log.deferred.push_back(Deferred {
            pos,
            conn,
            msg,
            pid,
        });
    }

    /// The driver wrote the first `pos` records durably.
    pub fn handle_durable(&mut self, now: u64, pos: u64) {
        self.now_ms = now;
        if pos <= self.log.durable {
            return;
        }
        self.log.durable = pos;
        let mut fenced = std::mem::take(&mut self.log.fenced);
        fenced.retain(|&conn| {
            let Some(c) = self.conns.get_mut(&conn) else {
                return false;
            };
            if c.fence > pos {
                return true;
            }
            c.fence = 0;
            c.holds = c.holds.saturating_sub(1);
            if c.holds == 0 {
                c.flush_held(conn, &mut self.dirty);
            }
            false
        });
        fenced.append(&mut self.log.fenced);
        self.log.fenced = fenced;
        while self.log.deferred.front().is_some_and(|d| d.pos <= pos) {
            let d = self.log.deferred.pop_front().expect("checked");
            if let Some(c) = self.conns.get_mut(&d.conn) {
                c.deferred = c.deferred.saturating_sub(1);
            }
            // Routed even if the publisher left: its "received" record is durable, so it
            // will not resend the message.
            self.route_and_ack(now, d.conn, d.msg, d.pid);
        }
        while self.log.waits.front().is_some_and(|(at, _)| *at <= pos) {
            let (_, w) = self.log.waits.pop_front().expect("checked");
            match w {
                Wait::Barrier(id) => self.on_route_ack(id),
                Wait::Reply(shard, barrier) => self.send_mail(shard, Mail::RouteAck { barrier }),
                Wait::Routed(client, pid) => self.log_qos2_routed(client, pid),
            }
        }
        self.drain_self_mail(now);
    }

    /// Records waiting for the driver: it passes each (kind, payload) to `write` in order
    /// and stops at the first error, keeping that record and the ones after it for the next
    /// call. Returns how many were written.
    pub fn drain_log<E>(
        &mut self,
        mut write: impl FnMut(u8, &[u8]) -> Result<(), E>,
    ) -> (u64, Result<(), E>) {
        let buf = &self.log.buf;
        let mut off = 0;
        let mut n = 0u64;
        let mut res = Ok(());
        while off + 5 <= buf.len() {
            let k = buf[off];
            let len = u32::from_le_bytes(buf[off + 1..off + 5].try_into().expect("4")) as usize;
            if let Err(e) = write(k, &buf[off + 5..off + 5 + len]) {
                res = Err(e);
                break;
            }
            off += 5 + len;
            n += 1;
        }
        if off == self.log.buf.len() {
            self.log.buf.clear();
        } else {
            let _ = self.log.buf.split_to(off);
        }
        (n, res)
    }

    /// Records the driver has not taken yet.
    pub fn log_pending(&self) -> bool {
        !self.log.buf.is_empty()
    }

    /// Records written so far (the driver's count of appended records must follow it).
    pub fn log_position(&self) -> u64 {
        self.log.pos
    }

    /// The driver cannot write the log (`true`) or can again (`false`): while it cannot,
    /// QoS 1/2 publishes are refused (nothing unlogged is acknowledged) and the rest goes on.
    pub fn set_log_failed(&mut self, failed: bool) {
        let shard = self.shard;
        if failed == (self.log.failed_shards & (1 << shard) != 0) {
            return;
        }
        self.stats.log_failures += u64::from(failed);
        self.on_log_health(shard, failed);
        self.broadcast(|| Mail::LogHealth { shard, failed });
    }

    pub(crate) fn on_log_health(&mut self, shard: ShardId, failed: bool) {
        if failed {
            self.log.failed_shards |= 1 << shard;
        } else {
            self.log.failed_shards &= !(1 << shard);
        }
    }

    /// Whether QoS 1/2 publishes are refused (some shard cannot write its log).
    pub(crate) fn refusing_qos12(&self) -> bool {
        self.log.failed_shards != 0
    }

    /// Writes a snapshot of this shard's durable state into the log: every logged session,
    /// recent session ends, and the retained messages this shard is home for.
    pub fn snapshot(&mut self) {
        if !self.logging() {
            return;
        }
        self.record(kind::SNAPSHOT_BEGIN, |_| {});
        let now = self.unix_ms(self.now_ms);
        self.log.ended.retain(|e| now < e.2 + ENDED_KEEP_MS);
        let ended = std::mem::take(&mut self.log.ended);
        for (client, gen, _) in &ended {
            self.record(kind::SESSION_END, |b| {
                put_str(b, client.as_str());
                b.put_u64_le(*gen);
            });
        }
        self.log.ended = ended;
        let keys: Vec<SessionKey> = self.sessions.keys().collect();
        for key in keys {
            if self.logged(key) {
                self.log_session_params(key);
                self.log_session_state(key, false);
            }
        }
        while self
            .log
            .done_receipts
            .front()
            .is_some_and(|e| now >= e.2 + RECEIPTS_KEEP_MS)
        {
            self.log.done_receipts.pop_front();
        }
        let done = std::mem::take(&mut self.log.done_receipts);
        for (client, receipt, _) in &done {
            self.record(kind::RECEIPT_DONE, |b| {
                put_str(b, client.as_str());
                b.put_u64_le(*receipt);
            });
        }
        self.log.done_receipts = done;
        let mut retained = Vec::new();
        self.retained.for_each(|_, m| retained.push(m.clone()));
        for m in retained {
            self.log_retained(&m);
        }
        self.record(kind::SNAPSHOT_END, |_| {});
    }
}

/// Subscription options as one byte, laid out as in a v5 SUBSCRIBE.
pub(crate) fn pack_options(o: &tachyon_codec::SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling & 3) << 4
}

pub(crate) fn unpack_options(b: u8) -> tachyon_codec::SubscriptionOptions {
    tachyon_codec::SubscriptionOptions {
        qos: match b & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        },
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    }
}

/// Appends an `Entry` (see `record.rs`) for `msg` without building one: the v5 PUBLISH frame
/// (no Packet Identifier needed beyond the placeholder, no expiry: it is stored as a time),
/// then QoS, Subscription Identifiers, expiry and origin.
fn put_message(
    b: &mut BytesMut,
    msg: &Message,
    qos: QoS,
    retain: bool,
    sub_ids: &[u32],
    expires_unix_ms: Option<u64>,
) {
    let head = PublishHead {
        dup: false,
        qos: msg.qos,
        retain,
        topic: msg.topic.as_bytes(),
        packet_id: (msg.qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("1 is valid")),
        properties: Some(msg.properties()),
        message_expiry_interval: None,
        topic_alias: None,
        subscription_identifiers: &[],
    };
    let at = b.len();
    b.put_u32_le(0);
    encode_publish_head(&head, msg.payload.len(), ProtocolVersion::V5, b);
    b.extend_from_slice(&msg.payload);
    let len = (b.len() - at - 4) as u32;
    b[at..at + 4].copy_from_slice(&len.to_le_bytes());
    b.put_u8(qos as u8);
    b.put_u32_le(sub_ids.len() as u32);
    for id in sub_ids {
        b.put_u32_le(*id);
    }
    match expires_unix_ms {
        Some(t) => {
            b.put_u8(1);
            b.put_u64_le(t);
        }
        None => b.put_u8(0),
    }
    match &msg.origin {
        Some(o) => {
            b.put_u8(1);
            put_str(b, o.as_str());
        }
        None => b.put_u8(0),
    }
    b.put_u64_le(msg.receipt);
}
