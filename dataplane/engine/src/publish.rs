//! PUBLISH in both directions: topic aliases, QoS 0/1/2 flows (v5 4.3), routing to shards,
//! fan-out to local subscribers, inflight windows and queues, retained messages.
//!
//! ```text
//!   PUBLISH in ─▶ alias ─▶ QoS flow ─▶ publish_message ─▶ routing trie ─┬▶ deliver_local (this shard)
//!                                                                       └▶ Mail::Publish (others)
//!   deliver_local ─▶ local trie ─▶ per session: deliver ─▶ write_publish | inflight | queue
//! ```

use std::sync::Arc;

use tachyon_codec::{
    encode_publish_head, publish_head_len, Packet, PacketId, ProtocolVersion, PubResp, Publish,
    PublishHead, QoS, ReasonCode,
};

use crate::engine::{Engine, SessionKey, SPARE_MESSAGES};
use crate::protocol;

/// How long a queued message may keep sharing the publisher's receive buffer before it gets
/// its own bytes (see `Engine::enqueue`).
const QUEUE_PIN_MAX_MS: u64 = 100;
const QUEUE_PIN_CHECK_MS: u64 = 10;
use crate::mail::{home_shard, Mail, SharedTarget};
use crate::message::Message;
use crate::persist::emit::Answer;
use crate::session::{Delivery, Inflight, OutState};
use crate::violation::Violation;
use crate::{ConnId, ShardId};

impl Engine {
    /// Takes `p` by reference: a `Publish` is ~470 bytes (its properties), and moving it by
    /// value through the dispatch was a tenth of a shard's time in QoS 0 fan-in. The
    /// message's parts are taken out of it.
    pub(crate) fn on_publish(&mut self, now: u64, conn: ConnId, p: &mut Publish) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let version = c.version();
        let v5 = version.is_v5();
        if v5 {
            if let Some(alias) = p.properties.topic_alias.take() {
                let max = c.alias_max_in;
                if alias == 0 || alias > max {
                    // Outside 1..=Topic Alias Maximum (v5 [MQTT-3.3.2-12] is what we accept).
                    self.violation(
                        now,
                        conn,
                        Violation::TopicAliasOutOfRange { alias, max },
                        None,
                    );
                    return;
                }
                let inbound = &mut c.aliases.get_or_insert_with(Box::default).inbound;
                if inbound.len() < max as usize {
                    inbound.resize(max as usize, None);
                }
                let slot = &mut inbound[alias as usize - 1];
                if p.topic.is_empty() {
                    match slot {
                        Some(t) => p.topic = t.clone(),
                        None => {
                            self.violation(now, conn, Violation::TopicAliasUnknown { alias }, None);
                            return;
                        }
                    }
                } else {
                    // v5 3.3.2.3.4: a non-empty topic (re)sets the alias.
                    *slot = Some(p.topic.detached());
                }
            } else if p.topic.is_empty() {
                self.violation(now, conn, Violation::EmptyTopicWithoutAlias, None);
                return;
            }
        }
        let levels = p.topic.as_bytes().iter().filter(|&&b| b == b'/').count() + 1;
        if levels > self.cfg.topic_levels_max {
            let v = Violation::TopicTooDeep {
                levels,
                max: self.cfg.topic_levels_max,
            };
            self.violation(now, conn, v, None);
            return;
        }
        let Some(skey) = c.session else { return };
        c.publisher_until_ms = now + 1000;
        let receive_max_in = c.receive_max_in;
        let client_id = c.client_id.clone();
        self.stats.messages_received[p.qos as usize] += 1;
        self.stats.payload_bytes_received[p.qos as usize] += p.payload.len() as u64;
        if self.refusing_qos12() && p.qos != QoS::AtMostOnce {
            self.refuse_unloggable(now, conn, p);
            return;
        }

        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (qos, Some(pid)) => {
                let f = self
                    .sessions
                    .get(skey)
                    .expect("connected conns have sessions")
                    .flows();
                if !f.qos2_incoming.is_empty() && f.qos2_incoming.contains(&pid.get()) {
                    // The identifier is held by the client's QoS 2 flow: the protocol table
                    // decides (a QoS 2 retransmission, an identifier in use, or a client that
                    // lost the state of an earlier connection).
                    let inbound = protocol::Inbound::publish(qos);
                    let id = if f.qos2_incoming_earlier.contains(&pid.get()) {
                        protocol::IdState::AwaitPubRelEarlier
                    } else {
                        protocol::IdState::AwaitPubRel
                    };
                    let reaction =
                        protocol::lookup(version, protocol::Stage::Connected, inbound, id).reaction;
                    if reaction != protocol::Reaction::ReleaseHeldAccept {
                        self.react(
                            now,
                            conn,
                            reaction,
                            inbound,
                            id,
                            Some(pid),
                            ReasonCode::SUCCESS,
                        );
                        return;
                    }
                    self.release_held_id(conn, skey, inbound, pid);
                }
                // Inbound QoS 1 identifiers are not tracked: PUBACK at once (v5
                // [MQTT-4.3.2-5]); a QoS 2 one is held until PUBREL.
                if qos == QoS::ExactlyOnce {
                    let s = self
                        .sessions
                        .get_mut(skey)
                        .expect("connected conns have sessions");
                    if s.flows().qos2_incoming.len() >= receive_max_in as usize {
                        // v5 [MQTT-3.3.4-7]
                        let v = Violation::ReceiveMaximumExceeded {
                            max: receive_max_in,
                        };
                        self.violation(now, conn, v, None);
                        return;
                    }
                    s.flows_mut().qos2_incoming.insert(pid.get());
                }
            }
            _ => unreachable!("the codec guarantees a packet id exactly when QoS > 0"),
        }

        p.properties.subscription_identifiers.clear();
        let expiry = p.properties.message_expiry_interval.take();
        let properties = if p.properties.is_empty() {
            None
        } else {
            Some(Box::new(std::mem::take(&mut p.properties)))
        };
        let msg = Message {
            topic: std::mem::take(&mut p.topic),
            payload: std::mem::take(&mut p.payload),
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at_ms: expiry.map(|s| now + s as u64 * 1000),
            origin: client_id,
            // A new QoS 2 message of a logged session gets a receipt (see `persist::emit`).
            receipt: if p.qos == QoS::ExactlyOnce && self.logged(skey) {
                self.next_receipt()
            } else {
                0
            },
            owned: false,
            received_us: self.now_us,
        };
        let msg = self.message_arc(msg);
        let pid = p.packet_id;
        if let (1.., Some(pid)) = (msg.receipt, pid) {
            self.log_qos2_received(skey, pid.get(), &msg);
        }
        // A QoS 2 message of a logged session is routed only once its "received" record is
        // durable: otherwise another shard could log it for a subscriber first, and after a
        // crash the publisher's retransmission would be taken for a new message (a
        // duplicate). Later PUBLISHes of the connection wait behind it (order).
        let defer = self.fencing()
            && (msg.receipt != 0 || self.conns.get(&conn).is_some_and(|c| c.deferred > 0));
        if defer {
            self.defer_publish(conn, msg, pid);
            return;
        }
        self.route_and_ack(now, conn, msg, pid);
    }

    /// Routes a client's message and acknowledges it once that is safe (see `persist::emit`).
    pub(crate) fn route_and_ack(
        &mut self,
        now: u64,
        conn: ConnId,
        msg: Arc<Message>,
        pid: Option<PacketId>,
    ) {
        // A retained PUBLISH is acknowledged (and the connection's later output sent) only
        // once every shard's replica of the retained store has it.
        let barrier =
            (msg.retain && self.shard_count > 1).then(|| self.begin_barrier_holding(conn));
        // The acknowledgement waits for what the message changed in durable state, on this
        // shard and the others.
        let routed = match (msg.receipt, &msg.origin, pid) {
            (0, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(client), Some(pid)) => Some((client.clone(), pid.get())),
        };
        let scoped = msg.qos != QoS::AtMostOnce && self.scope_begin(Answer::Hold(conn));
        if scoped {
            self.scope_routed(routed.clone());
        }
        let matched = self.publish_message(now, msg.clone());
        if scoped {
            self.scope_end();
        } else if let Some((client, pid)) = routed {
            // Not waiting for the disk: routed as soon as written.
            self.log_qos2_routed(client, pid);
        }
        // policy: v5 3.4.2.1, 3.5.2.1: 0x10 when the routes (every shard's subscriptions,
        // shared groups included) match nothing; known here without waiting for anyone. A
        // retained message is stored all the same.
        let reason = if matched || !self.conns.get(&conn).is_some_and(|c| c.version().is_v5()) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        };
        // v5 [MQTT-4.3.2-4], v3.1.1 [MQTT-4.3.2-2]: PUBACK once we own the message; v5
        // [MQTT-4.3.3-9]: PUBREC likewise (both after routing, so order is kept).
        match (msg.qos, pid) {
            (QoS::AtLeastOnce, Some(pid)) => {
                self.send_packet(conn, &Packet::PubAck(PubResp::new(pid, reason)))
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                self.send_packet(conn, &Packet::PubRec(PubResp::new(pid, reason)))
            }
            _ => {}
        }
        self.recycle_message(msg);
        if let Some(b) = barrier {
            self.end_barrier(b, None, Vec::new());
        }
    }

    /// A QoS 1/2 PUBLISH while the log cannot be written: refused, never acknowledged
    /// (v5: PUBACK/PUBREC 0x97 Quota exceeded; v3.1.1 has no refusal code: the connection
    /// is closed, and the client resends after reconnecting).
    fn refuse_unloggable(&mut self, now: u64, conn: ConnId, p: &Publish) {
        self.stats.publishes_refused_log_failed += 1;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if self.stats.publishes_refused_log_failed.is_power_of_two() {
            tracing::warn!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                refused = self.stats.publishes_refused_log_failed,
                "QoS 1/2 PUBLISH refused: the WAL cannot be written (disk full or I/O error; see the error logged by the shard; free space under durability.data_dir)");
        }
        if !c.version().is_v5() {
            self.begin_close(now, conn, true);
            return;
        }
        let Some(pid) = p.packet_id else { return };
        let r = PubResp::new(pid, ReasonCode::QUOTA_EXCEEDED);
        let packet = if p.qos == QoS::AtLeastOnce {
            Packet::PubAck(r)
        } else {
            Packet::PubRec(r)
        };
        self.send_packet(conn, &packet);
    }

    /// Wraps a message in an `Arc`, reusing a spare one: a message delivered on this shard
    /// only (the common QoS 0 case), or one whose QoS 1/2 flows have all completed, costs no
    /// allocation.
    fn message_arc(&mut self, msg: Message) -> Arc<Message> {
        while let Some(mut spare) = self.spare_messages.pop() {
            if let Some(slot) = Arc::get_mut(&mut spare) {
                *slot = msg;
                return spare;
            }
        }
        Arc::new(msg)
    }

    /// Keeps `msg` for reuse if it went nowhere else (no queue, no inflight, no other shard).
    fn recycle_message(&mut self, msg: Arc<Message>) {
        if Arc::strong_count(&msg) == 1 && self.spare_messages.len() < SPARE_MESSAGES {
            self.spare_messages.push(msg);
        }
    }

    /// Keeps the message of a completed outbound flow for reuse, emptied first: a spare may
    /// wait a while, and its topic and payload would pin the publisher's receive buffer.
    fn recycle_completed(&mut self, mut msg: Arc<Message>) {
        if self.spare_messages.len() >= SPARE_MESSAGES {
            return;
        }
        if let Some(slot) = Arc::get_mut(&mut msg) {
            *slot = Message::empty();
            self.spare_messages.push(msg);
        }
    }

    /// Routes a message from a client or a Will: retained store, then every shard with
    /// matching subscribers. Returns false when no subscription on any shard matched.
    pub(crate) fn publish_message(&mut self, now: u64, msg: Arc<Message>) -> bool {
        if msg.retain {
            self.update_retained(&msg);
        }
        self.route_message(now, msg)
    }

    /// The retained-store part of a retained PUBLISH (an empty payload clears the topic).
    pub(crate) fn update_retained(&mut self, msg: &Message) {
        // Retained updates of one topic are ordered by its home shard, which then updates
        // every replica. The stored copy owns its bytes so that it does not pin the
        // publisher's receive buffer for as long as it is retained.
        let stored = Arc::new(msg.owned_copy());
        // This shard's replica changes at once, so a SUBSCRIBE that follows on this
        // shard sees it; the home shard then orders it against other shards' updates
        // and every replica (this one included) converges on its order.
        self.apply_retain(stored.clone());
        // Inside a barrier (a client's retained PUBLISH), its acknowledgement waits until
        // every replica has the update, so a SUBSCRIBE anywhere afterwards sees it.
        let ack = if self.shard_count > 1 {
            self.barrier_expect_acks()
        } else {
            None
        };
        let home = home_shard(msg.topic.as_bytes(), self.shard_count);
        if home == self.shard {
            self.broadcast(|| Mail::RetainApply {
                msg: stored.clone(),
                ack,
            });
        } else {
            self.send_mail(home, Mail::RetainSet { msg: stored, ack });
        }
    }

    /// Delivers a message to every shard with matching subscribers. Returns false when the
    /// routing trie (every shard's subscriptions, shared groups included) has no match.
    fn route_message(&mut self, now: u64, msg: Arc<Message>) -> bool {
        let mut mask = 0u64;
        let mut picks: Vec<(ShardId, SharedTarget)> = Vec::new();
        self.routes.for_each_match(msg.topic.as_bytes(), |e| {
            mask |= e.shards;
            for g in &e.shared {
                if let Some(shard) = g.pick() {
                    picks.push((
                        shard,
                        SharedTarget {
                            filter: e.filter.clone(),
                            group: g.name.clone(),
                            hops: 0,
                        },
                    ));
                }
            }
        });
        self.msg_seq += 1;
        let seq = self.msg_seq;
        let origin = self.shard;
        for shard in 0..self.shard_count {
            let normal = mask & (1 << shard) != 0;
            let shared: Vec<SharedTarget> = if picks.is_empty() {
                Vec::new()
            } else {
                picks
                    .iter()
                    .filter(|(s, _)| *s == shard)
                    .map(|(_, t)| t.clone())
                    .collect()
            };
            if !normal && shared.is_empty() {
                continue;
            }
            if shard == self.shard {
                self.deliver_local(now, &msg, normal, &shared, (origin, seq, mask));
            } else {
                let ack = if msg.qos == QoS::AtMostOnce {
                    None
                } else {
                    self.scope_ack_target()
                };
                self.outbox.push_back((
                    shard,
                    Mail::Publish {
                        msg: msg.clone(),
                        normal,
                        shared,
                        fanout: mask,
                        origin,
                        seq,
                        ack,
                    },
                ));
            }
        }
        if self.seen[origin] < seq {
            self.seen[origin] = seq;
        }
        mask != 0 || !picks.is_empty()
    }

    /// Picks a shard for a shared-group delivery, counting `minus` fewer members on this shard.
    fn pick_shared_shard(&self, target: &SharedTarget, minus: u32) -> Option<ShardId> {
        let e = self.routes.get(target.filter.as_bytes())?;
        let g = e.shared.iter().find(|g| g.name == target.group)?;
        g.pick_excluding(self.shard, minus)
    }

    fn send_shared(
        &mut self,
        now: u64,
        shard: ShardId,
        msg: Arc<Message>,
        target: SharedTarget,
        avoid: Option<SessionKey>,
    ) {
        if shard == self.shard {
            self.deliver_shared(now, &msg, &target, avoid);
        } else {
            let ack = if msg.qos == QoS::AtMostOnce {
                None
            } else {
                self.scope_ack_target()
            };
            let mail = Mail::Publish {
                msg,
                normal: false,
                shared: vec![target],
                fanout: 0,
                origin: self.shard,
                seq: 0,
                ack,
            };
            self.outbox.push_back((shard, mail));
        }
    }

    /// Sends a shared-subscription delivery whose member left to another member of the group;
    /// if it was the only member, the delivery stays queued in its session.
    pub(crate) fn dispatch_shared_again(&mut self, now: u64, d: Delivery, leaving: SessionKey) {
        let Some(target) = d.shared.clone() else {
            return;
        };
        match self.pick_shared_shard(&target, 1) {
            Some(shard) => self.send_shared(now, shard, d.msg, target, Some(leaving)),
            None => self.enqueue(leaving, d),
        }
    }

    /// Delivers a message to this shard's subscribers.
    pub(crate) fn deliver_local(
        &mut self,
        now: u64,
        msg: &Arc<Message>,
        normal: bool,
        shared: &[SharedTarget],
        tag: (ShardId, u64, u64),
    ) {
        // Encodings are shared between this message's subscribers only, and the message is
        // not held after (its `Arc` may be reused for the next PUBLISH: `message_arc`).
        self.share_encodes = true;
        self.deliver_local_inner(now, msg, normal, shared, tag);
        self.share_encodes = false;
        self.shared_encode = None;
    }

    fn deliver_local_inner(
        &mut self,
        now: u64,
        msg: &Arc<Message>,
        normal: bool,
        shared: &[SharedTarget],
        tag: (ShardId, u64, u64),
    ) {
        let (origin, seq, _) = tag;
        if seq > 0 && self.seen[origin] < seq {
            self.seen[origin] = seq;
        }
        if normal {
            let mut matches = std::mem::take(&mut self.match_scratch);
            matches.clear();
            self.local.for_each_match(msg.topic.as_bytes(), |ls| {
                for sub in &ls.normal {
                    matches.push((sub.session, sub.options, sub.id));
                }
            });
            // Overlapping subscriptions of one session give one delivery with the highest QoS
            // and every Subscription Identifier (v5 [MQTT-3.3.4-2], [MQTT-3.3.4-3]).
            matches.sort_unstable_by_key(|m| m.0);
            let mut i = 0;
            while i < matches.len() {
                let key = matches[i].0;
                let mut j = i;
                let mut qos: Option<QoS> = None;
                let mut retain = false;
                let mut ids = Vec::new();
                // Compared only when a subscription asks for No Local.
                let origin_is_self = || match (self.sessions.get(key), &msg.origin) {
                    (Some(s), Some(o)) => &s.client_id == o,
                    _ => false,
                };
                // Options of a session created over v5 do not apply once it is resumed over
                // v3.1.1: RETAIN is 0 on established subscriptions (v3.1.1 [MQTT-3.3.1-9]).
                let v5 = self
                    .sessions
                    .get(key)
                    .is_some_and(|s| s.version == ProtocolVersion::V5);
                while j < matches.len() && matches[j].0 == key {
                    let (_, opts, id) = matches[j];
                    j += 1;
                    // v5 [MQTT-3.8.3-3]: No Local.
                    if v5 && opts.no_local && origin_is_self() {
                        continue;
                    }
                    qos = Some(qos.map_or(opts.qos, |q| q.max(opts.qos)));
                    // v5 [MQTT-3.3.1-12], [MQTT-3.3.1-13]; v3.1.1 [MQTT-3.3.1-9].
                    retain |= v5 && opts.retain_as_published && msg.retain;
                    if let Some(id) = id {
                        ids.push(id);
                    }
                }
                i = j;
                let Some(sub_qos) = qos else { continue };
                let d = Delivery {
                    msg: msg.clone(),
                    // v5 [MQTT-3.8.4-8]: the lower of the published and the granted QoS.
                    qos: msg.qos.min(sub_qos),
                    retain,
                    sub_ids: ids,
                    id: 0,
                    shared: None,
                };
                if let Some(to) = self.sessions.get(key).and_then(|s| s.forward_to) {
                    // A tombstone: the session moved; its new owner decides from the tag
                    // whether it delivered this message itself.
                    self.forward(to, key, d, Some(tag));
                } else {
                    self.deliver(now, key, d);
                }
            }
            self.match_scratch = matches;
        }
        for t in shared {
            self.deliver_shared(now, msg, t, None);
        }
    }

    /// One member of a local shared group gets the message; connected members first, round
    /// robin (policy: see docs/architecture.md#shared-subscriptions).
    fn deliver_shared(
        &mut self,
        now: u64,
        msg: &Arc<Message>,
        t: &SharedTarget,
        avoid: Option<SessionKey>,
    ) {
        let sessions = &self.sessions;
        let mut chosen = None;
        if let Some(ls) = self.local.get_mut(t.filter.as_bytes()) {
            if let Some(g) = ls.shared.iter_mut().find(|g| g.name == t.group) {
                let n = g.members.len();
                let usable = |m: &crate::engine::LocalSub| Some(m.session) != avoid;
                let connected = |m: &crate::engine::LocalSub| {
                    !m.draining && sessions.get(m.session).is_some_and(|s| s.conn.is_some())
                };
                let mut pick = None;
                for pass in 0..2 {
                    for k in 0..n {
                        let idx = (g.next + k) % n;
                        let m = &g.members[idx];
                        if usable(m) && (pass == 1 || connected(m)) {
                            pick = Some(idx);
                            break;
                        }
                    }
                    if pick.is_some() {
                        break;
                    }
                }
                if let Some(idx) = pick {
                    g.next = idx + 1;
                    let m = &g.members[idx];
                    chosen = Some((m.session, m.options, m.id));
                }
            }
        }
        let Some((key, opts, id)) = chosen else {
            // The member this shard was picked for left before the message arrived: pass it
            // to a member elsewhere (a bounded number of times), else count it as dropped.
            let elsewhere = (t.hops < 2)
                .then(|| self.pick_shared_shard(t, u32::MAX))
                .flatten();
            match elsewhere {
                Some(shard) if shard != self.shard => {
                    let target = SharedTarget {
                        hops: t.hops + 1,
                        ..t.clone()
                    };
                    self.send_shared(now, shard, msg.clone(), target, None);
                }
                _ => self.stats.dropped_shared_no_member += 1,
            }
            return;
        };
        let d = Delivery {
            msg: msg.clone(),
            qos: msg.qos.min(opts.qos),
            retain: opts.retain_as_published && msg.retain,
            sub_ids: id.into_iter().collect(),
            id: 0,
            shared: Some(t.clone()),
        };
        self.deliver(now, key, d);
    }

    /// Hands one delivery to a session: written now, put in flight, or queued.
    pub(crate) fn deliver(&mut self, now: u64, key: SessionKey, d: Delivery) {
        if d.msg.expired(now) {
            self.stats.dropped_expired += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(to) = s.forward_to {
            self.forward(to, key, d, None);
            return;
        }
        let online = s.conn.filter(|c| self.conns.contains_key(c));
        match online {
            Some(conn) => {
                if d.qos == QoS::AtMostOnce {
                    if !self.admit_qos0(conn) {
                        // Slow consumer: QoS 0 is dropped and counted, never buffered without bound.
                        self.stats.dropped_qos0_slow_consumer += 1;
                        return;
                    }
                    self.write_publish(now, conn, &d, None, false);
                } else if s.window_open() && s.flows().queue.is_empty() {
                    self.send_new_inflight(now, key, conn, d);
                } else {
                    self.enqueue(key, d);
                }
            }
            None => {
                if d.qos == QoS::AtMostOnce && !self.cfg.queue_qos0 {
                    self.stats.dropped_qos0_offline += 1;
                    return;
                }
                self.enqueue(key, d);
            }
        }
    }

    /// Sends a delivery that reached tombstone `key` to the session's new owner.
    pub(crate) fn forward(
        &mut self,
        to: ShardId,
        key: SessionKey,
        d: Delivery,
        tag: Option<(ShardId, u64, u64)>,
    ) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let client_id = s.client_id.clone();
        self.stats.forwarded_after_takeover += 1;
        let ack = if d.qos == QoS::AtMostOnce {
            None
        } else {
            self.scope_ack_target()
        };
        self.send_mail(
            to,
            Mail::Forward {
                client_id,
                tombstone: (self.shard, key),
                delivery: d,
                tag,
                ack,
            },
        );
    }

    /// policy: a full queue drops the new message and counts it (Mosquitto does the same);
    /// see `limits.max_queued_messages` / `limits.max_queued_bytes`.
    fn enqueue(&mut self, key: SessionKey, mut d: Delivery) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let size = d.msg.size();
        // A connected session that keeps up slows publishers down rather than losing
        // messages: it may queue up to `queue_hard_factor` times the limits meanwhile.
        let factor = if s.conn.is_some() && !s.slow && d.qos != QoS::AtMostOnce {
            self.cfg.queue_hard_factor.max(1)
        } else {
            1
        };
        if s.flows().queue.len() >= self.cfg.queued_messages_max * factor
            || s.flows().queue_bytes + size > self.cfg.queued_bytes_max * factor
        {
            self.stats.dropped_queue_full += 1;
            // One warning per second per shard at most, with the count since the last one:
            // dropped QoS 1/2 messages are something an operator must see.
            self.queue_drops_unlogged += 1;
            if self
                .queue_drops_logged_ms
                .is_none_or(|t| self.now_ms >= t + 1000)
            {
                tracing::warn!(shard = self.shard, client_id = %s.client_id,
                    dropped = self.queue_drops_unlogged, queued = s.flows().queue.len(), queued_bytes = s.flows().queue_bytes,
                    "session queue full: messages dropped (the client reads too slowly or is offline; raise limits.max_queued_messages / max_queued_bytes)");
                self.queue_drops_unlogged = 0;
                self.queue_drops_logged_ms = Some(self.now_ms);
            }
            return;
        }
        // Queued messages may wait long: they get their own bytes so that they do not pin
        // the publisher's receive buffer (one copy per message, shared by the sessions it is
        // queued for: consecutive deliveries of one message hit this cache). For a connected
        // session that keeps up, the copy waits: most such messages leave within
        // milliseconds (a full inflight window, e.g. fan-in), and copying each would cost
        // allocations per message. What is still queued after `QUEUE_PIN_MAX_MS` is copied
        // then, and all of it when the client goes away (`compact_queue`).
        let lazy = s.conn.is_some() && !s.slow;
        if !lazy {
            d.msg = self.compacted(d.msg);
        }
        self.log_enqueue(key, &mut d);
        let now = self.now_ms;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let f = s.flows_mut();
        f.queue_bytes += size;
        f.queue.push_back(d);
        if lazy && f.uncompacted_since_ms.is_none() {
            f.uncompacted_since_ms = Some(now);
            self.pinning.push(key);
        }
        self.update_congestion(key);
    }

    /// Gives every queued message of `key` its own bytes.
    pub(crate) fn compact_queue(&mut self, key: SessionKey) {
        let Some(f) = self.sessions.get_mut(key).and_then(|s| s.flows_if_any()) else {
            return;
        };
        if f.uncompacted_since_ms.take().is_none() {
            return;
        }
        let mut queue = std::mem::take(&mut f.queue);
        for d in queue.iter_mut() {
            d.msg = self.compacted(d.msg.clone());
        }
        if let Some(f) = self.sessions.get_mut(key).and_then(|s| s.flows_if_any()) {
            f.queue = queue;
        }
    }

    /// Copies the queues that have held shared receive buffers for longer than
    /// `QUEUE_PIN_MAX_MS` (checked every few milliseconds).
    pub(crate) fn compact_aged_queues(&mut self, now: u64) {
        if self.pinning.is_empty() || now < self.pinning_checked_ms + QUEUE_PIN_CHECK_MS {
            return;
        }
        self.pinning_checked_ms = now;
        let mut pinning = std::mem::take(&mut self.pinning);
        pinning.retain(|&key| {
            let Some(f) = self.sessions.get_mut(key).and_then(|s| s.flows_if_any()) else {
                return false;
            };
            match f.uncompacted_since_ms {
                None => false,
                Some(_) if f.queue.is_empty() => {
                    // Everything it held has left: nothing to copy.
                    f.uncompacted_since_ms = None;
                    false
                }
                Some(t) if now >= t + QUEUE_PIN_MAX_MS => {
                    self.compact_queue(key);
                    false
                }
                Some(_) => true,
            }
        });
        // Sessions registered meanwhile (none: compaction does not enqueue) are kept too.
        pinning.append(&mut self.pinning);
        self.pinning = pinning;
    }

    pub(crate) fn compacted(&mut self, msg: Arc<Message>) -> Arc<Message> {
        if msg.owned {
            // Already its own bytes (copied earlier, or recovered): nothing to copy again.
            return msg;
        }
        if let Some((orig, compact)) = &self.compact_cache {
            if Arc::ptr_eq(orig, &msg) || Arc::ptr_eq(compact, &msg) {
                return compact.clone();
            }
        }
        let compact = Arc::new(msg.owned_copy());
        self.compact_cache = Some((msg, compact.clone()));
        compact
    }

    fn send_new_inflight(&mut self, now: u64, key: SessionKey, conn: ConnId, mut d: Delivery) {
        self.log_enqueue(key, &mut d);
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(pid) = s.allocate_packet_id() else {
            // Every identifier is in use: wait in the queue for one to be freed.
            let f = s.flows_mut();
            f.queue_bytes += d.msg.size();
            f.queue.push_front(d);
            return;
        };
        let state = if d.qos == QoS::AtLeastOnce {
            OutState::AwaitPubAck
        } else {
            OutState::AwaitPubRec
        };
        // Logged before the PUBLISH is written: after a crash it is resent with this
        // Packet Identifier, never as a new message (QoS 2 exactly once).
        self.log_sent(key, d.id, pid.get(), d.qos);
        if !self.write_publish(now, conn, &d, Some(pid), false) {
            self.log_flow(key, pid.get(), false);
        } else {
            let s = self.sessions.get_mut(key).expect("checked above");
            let f = s.flows_mut();
            f.inflight_seq += 1;
            let seq = f.inflight_seq;
            f.inflight.insert(
                pid.get(),
                Inflight {
                    delivery: d,
                    state,
                    seq,
                },
            );
        }
    }

    /// Moves queued messages into the inflight window while it has room.
    pub(crate) fn fill_window(&mut self, now: u64, key: SessionKey) {
        self.fill_window_inner(now, key);
        self.update_congestion(key);
    }

    fn fill_window_inner(&mut self, now: u64, key: SessionKey) {
        if let Some(conn) = self
            .sessions
            .get(key)
            .filter(|s| !s.flows().resend.is_empty())
            .and_then(|s| s.conn)
        {
            self.resend_pending(now, key, conn);
        }
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let Some(conn) = s.conn else { return };
            if !s.window_open() {
                return;
            }
            let Some(f) = s.flows_if_any() else { return };
            let Some(d) = f.queue.pop_front() else { return };
            f.queue_bytes = f.queue_bytes.saturating_sub(d.msg.size());
            if d.msg.expired(now) {
                self.stats.dropped_expired += 1;
                self.log_dropped(key, d.id);
                self.note_receipt_done(key, d.msg.receipt);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                self.write_publish(now, conn, &d, None, false);
            } else {
                self.send_new_inflight(now, key, conn, d);
            }
        }
    }

    /// Encodes one outbound PUBLISH onto `conn`. Returns false when the packet exceeds the
    /// client's Maximum Packet Size, in which case it is dropped as if delivered
    /// (v5 [MQTT-3.1.2-25]).
    pub(crate) fn write_publish(
        &mut self,
        now: u64,
        conn: ConnId,
        d: &Delivery,
        pid: Option<PacketId>,
        dup: bool,
    ) -> bool {
        self.scratch_ready();
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let version = c.version();
        let v5 = version == ProtocolVersion::V5;
        let msg = &d.msg;
        let mut head = PublishHead {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: msg.topic.as_bytes(),
            packet_id: pid,
            properties: if v5 { Some(msg.properties()) } else { None },
            message_expiry_interval: if v5 {
                msg.remaining_expiry_secs(now)
            } else {
                None
            },
            topic_alias: None,
            subscription_identifiers: if v5 { &d.sub_ids } else { &[] },
        };
        let (_, total) = publish_head_len(&head, msg.payload.len(), version);
        // v5 [MQTT-3.1.2-24]; the codec cannot encode a Remaining Length above VARINT_MAX.
        if total > c.max_packet_out as usize || total > tachyon_codec::VARINT_MAX as usize {
            self.stats.dropped_too_large_for_client += 1;
            return false;
        }
        // Fan-out: a QoS 0 packet without per-subscriber parts (Packet Identifier,
        // Subscription Identifiers, Topic Alias) is the same bytes for every subscriber of
        // this version and RETAIN flag: encode it once and share the chunk.
        let shareable = self.share_encodes
            && pid.is_none()
            && head.subscription_identifiers.is_empty()
            && !(v5 && c.alias_out_max > 0)
            && msg.payload.len() <= self.cfg.inline_payload_max;
        let share_key = (version, d.retain, dup);
        if shareable {
            if let Some((m, key, bytes)) = &self.shared_encode {
                if Arc::ptr_eq(m, msg) && *key == share_key {
                    c.push_out(bytes.clone(), conn, &mut self.dirty);
                    self.count_sent(d, total);
                    return true;
                }
            }
        }
        // Outbound Topic Aliases (v5 3.3.2.3.4): map a topic once, then send only the alias.
        if v5 && c.alias_out_max > 0 {
            let outbound = &mut c.aliases.get_or_insert_with(Box::default).outbound;
            if let Some(&a) = outbound.get(msg.topic.bytes()) {
                head.topic = b"";
                head.topic_alias = Some(a);
            } else if outbound.len() < c.alias_out_max as usize {
                let a = outbound.len() as u16 + 1;
                outbound.insert(msg.topic.detached().bytes().clone(), a);
                head.topic_alias = Some(a);
            }
        }
        encode_publish_head(&head, msg.payload.len(), version, &mut self.scratch);
        if msg.payload.len() <= self.cfg.inline_payload_max {
            self.scratch.extend_from_slice(&msg.payload);
            let chunk = self.scratch.split().freeze();
            if shareable {
                self.shared_encode = Some((Arc::clone(msg), share_key, chunk.clone()));
            }
            c.push_out(chunk, conn, &mut self.dirty);
        } else {
            let chunk = self.scratch.split().freeze();
            c.push_out(chunk, conn, &mut self.dirty);
            c.push_out(msg.payload.clone(), conn, &mut self.dirty);
        }
        self.count_sent(d, total);
        true
    }

    /// Counts a PUBLISH written for a subscriber, and its time in the broker.
    fn count_sent(&mut self, d: &Delivery, total: usize) {
        let q = d.qos as usize;
        self.stats.messages_sent[q] += 1;
        self.stats.payload_bytes_sent[q] += d.msg.payload.len() as u64;
        self.stats.bytes_sent_queued += total as u64;
        if d.msg.received_us != 0 {
            let hop = self.now_us.saturating_sub(d.msg.received_us);
            self.stats.hop_latency.record(hop);
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) ends an outbound flow of session `key` (the
    /// protocol table checked that it awaits that packet), and frees a place in the window.
    pub(crate) fn end_flow(&mut self, now: u64, key: SessionKey, pid: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(done) = s.complete(pid.get()) {
            self.note_receipt_done(key, done.delivery.msg.receipt);
            self.recycle_completed(done.delivery.msg);
        }
        self.log_flow(key, pid.get(), false);
        self.fill_window(now, key);
    }

    /// PUBREC for a QoS 2 PUBLISH of session `key` awaiting it (`first`), or repeated after
    /// the PUBREL (the protocol table checked the state).
    pub(crate) fn release(
        &mut self,
        now: u64,
        conn: ConnId,
        key: SessionKey,
        pid: PacketId,
        reason: ReasonCode,
        first: bool,
    ) {
        if reason.is_error() {
            // v5 4.3.3, [MQTT-4.4.0-2]: a PUBREC with an error ends the flow.
            self.end_flow(now, key, pid);
            return;
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        // v5 [MQTT-4.3.3-4]: answer PUBREC with PUBREL; the message is now delivered.
        let f = s.flows_mut();
        if let Some(inf) = f.inflight.get_mut(&pid.get()) {
            inf.state = OutState::AwaitPubComp;
        }
        if !f.resend.is_empty() {
            // Acknowledged before we resent it: it is on this connection now.
            f.resend.retain(|&x| x != pid.get());
        }
        if first {
            self.log_flow(key, pid.get(), true);
        }
        self.send_packet(
            conn,
            &Packet::PubRel(PubResp::new(pid, ReasonCode::SUCCESS)),
        );
    }

    /// PUBREL of the client's QoS 2 PUBLISH awaiting it: PUBCOMP (v5 [MQTT-4.3.3-11]).
    pub(crate) fn complete_inbound(&mut self, conn: ConnId, key: SessionKey, pid: PacketId) {
        self.release_inbound_id(key, pid);
        self.send_packet(
            conn,
            &Packet::PubComp(PubResp::new(pid, ReasonCode::SUCCESS)),
        );
    }

    /// Ends the client's QoS 2 flow of `pid` (its message was routed when the PUBLISH came).
    pub(crate) fn release_inbound_id(&mut self, key: SessionKey, pid: PacketId) {
        let removed = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.flows_if_any())
            .is_some_and(|f| {
                if !f.qos2_incoming_earlier.is_empty() {
                    f.qos2_incoming_earlier.remove(&pid.get());
                }
                f.qos2_incoming.remove(&pid.get())
            });
        if removed {
            self.log_qos2_incoming(key, pid.get(), false);
        }
    }

    /// Updates this shard's replica of the retained store. An empty payload clears the topic
    /// (v5 [MQTT-3.3.1-6], [MQTT-3.3.1-7]; v3.1.1 [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
    pub(crate) fn apply_retain(&mut self, msg: Arc<Message>) {
        self.log_retained(&msg);
        let sys = msg.is_broker_sys();
        // Whether the entry before and after this update is one of the broker's `$SYS`
        // messages (none: no entry), to keep `sys_retained` exact.
        let mut was_sys = false;
        let is_sys;
        if msg.payload.is_empty() {
            self.retained.remove_if(msg.topic.as_bytes(), |old| {
                was_sys = old.is_broker_sys();
                true
            });
            is_sys = false;
        } else if self.retained.len().saturating_sub(self.sys_retained) >= self.cfg.retained_max
            && !sys
            && self.retained.get(msg.topic.as_bytes()).is_none()
        {
            // The broker's own `$SYS` topics do not take clients' places.
            self.stats.retained_refused += 1;
            tracing::debug!(shard = self.shard, topic = %msg.topic, "retained store full (limits.max_retained); not retained");
            return;
        } else {
            let topic = msg.topic.clone();
            let mut fresh = false;
            let slot = self.retained.entry_or_insert_with(topic.as_bytes(), || {
                fresh = true;
                msg.clone()
            });
            if !fresh {
                was_sys = slot.is_broker_sys();
            }
            *slot = msg;
            is_sys = sys;
        }
        // Saturating: an entry that reached the store another way (recovery) is never
        // counted here, and a miscount must not panic on the network path.
        self.sys_retained =
            (self.sys_retained + usize::from(is_sys)).saturating_sub(usize::from(was_sys));
    }
}
