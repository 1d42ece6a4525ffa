//! SUBSCRIBE and UNSUBSCRIBE (v5 3.8-3.11, v3.1.1 3.8-3.11), the local trie, and the routing
//! summary every shard keeps of the others.

use std::sync::Arc;

use bytes::Bytes;
use tachyon_codec::topic::split_shared;
use tachyon_codec::{
    Packet, Properties, ProtocolVersion, ReasonCode, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Utf8Str,
};

use crate::engine::{Engine, LocalGroup, LocalSub, LocalSubs, RouteEntry, RouteGroup, SessionKey};
use crate::mail::Mail;
use crate::message::Message;
use crate::session::{Delivery, Subscription};
use crate::violation::Violation;
use crate::{ConnId, ShardId};

/// Splits a subscribed filter into (plain filter, shared group).
pub(crate) fn parts(filter: &Utf8Str) -> (Utf8Str, Option<Utf8Str>) {
    match split_shared(filter.as_bytes()) {
        None => (filter.clone(), None),
        Some((group, plain)) => {
            let b = filter.bytes();
            let g_start = b"$share/".len();
            let group_b = b.slice(g_start..g_start + group.len());
            let plain_b = b.slice(b.len() - plain.len()..);
            (
                Utf8Str::from_bytes(plain_b).expect("slice of a valid string at '/' boundaries"),
                Some(
                    Utf8Str::from_bytes(group_b)
                        .expect("slice of a valid string at '/' boundaries"),
                ),
            )
        }
    }
}

impl Engine {
    pub(crate) fn on_subscribe(&mut self, now: u64, conn: ConnId, sub: Subscribe) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(skey) = c.session else { return };
        let v5 = c.version() == ProtocolVersion::V5;
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained_for: Vec<(Utf8Str, SubscriptionOptions)> = Vec::new();
        // SUBACK waits until every shard routes the new filters here (see barrier.rs).
        let barrier = self.begin_barrier();
        for (filter, opts) in &sub.filters {
            let filter = &filter.detached();
            let levels = filter.as_bytes().iter().filter(|&&b| b == b'/').count() + 1;
            // The decoder refused filters that are not correctly formed (a malformed packet);
            // what is left to refuse here is policy.
            if levels > self.cfg.topic_levels_max {
                // policy: limits.max_topic_levels. v5 3.9.3: 0x8F Topic Filter invalid
                // ("correctly formed but not allowed"); v3.1.1 3.9.3: 0x80 Failure.
                reasons.push(if v5 {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let (plain, group) = parts(filter);
            if group.is_some() && opts.no_local {
                // v5 [MQTT-3.8.3-4]
                self.end_barrier(barrier, None, Vec::new());
                self.violation(now, conn, Violation::NoLocalOnSharedSubscription, None);
                return;
            }
            let Some(s) = self.sessions.get_mut(skey) else {
                self.end_barrier(barrier, None, Vec::new());
                return;
            };
            // v5 [MQTT-3.8.4-3], v3.1.1 [MQTT-3.8.4-3]: an identical filter replaces the
            // existing subscription.
            let existed = s
                .subscriptions
                .insert(
                    filter.clone(),
                    Subscription {
                        options: *opts,
                        id: sub_id,
                    },
                )
                .is_some();
            if !existed || !self.local_update(skey, &plain, group.as_ref(), *opts, sub_id) {
                self.local_add(skey, &plain, group.as_ref(), *opts, sub_id);
            }
            // SUBACK (below) waits until a persistent session's subscription is durable.
            let packed = crate::persist::emit::pack_options(opts);
            self.log_subscription(skey, filter, Some((packed, sub_id)));
            // v5 [MQTT-3.8.4-7]: granted QoS; we grant what was asked (QoS 2 supported).
            reasons.push(ReasonCode(opts.qos as u8));
            // Retain Handling (v5 3.8.3.1); shared subscriptions get no retained messages
            // (v5 4.8.2: retained messages are not sent to shared subscriptions).
            let send_retained = group.is_none()
                && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed));
            if send_retained {
                retained_for.push((plain, *opts));
            }
        }
        self.end_barrier(barrier, Some(conn), Vec::new());
        // v5 [MQTT-3.8.4-1], [MQTT-3.8.4-2]: SUBACK with the same Packet Identifier; one code
        // per filter, in order (v5 [MQTT-3.9.3-1]).
        self.send_packet(
            conn,
            &Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                properties: Properties::default(),
                reasons,
            }),
        );
        for (filter, opts) in retained_for {
            let mut found: Vec<Arc<Message>> = Vec::new();
            self.retained
                .for_each_matched_by(filter.as_bytes(), |m| found.push(m.clone()));
            for msg in found {
                if msg.expired(now) {
                    // v5 3.3.2.3.3: an expired retained message is no longer delivered; drop
                    // it from this replica (the others drop theirs when they meet it).
                    self.retained
                        .remove_if(msg.topic.as_bytes(), |m| Arc::ptr_eq(m, &msg));
                    continue;
                }
                // v3.1.1 [MQTT-3.3.1-8] (v5 3.3.1.3 in prose): RETAIN set on messages sent because
                // of a new subscription.
                let d = Delivery {
                    qos: msg.qos.min(opts.qos),
                    msg,
                    retain: true,
                    sub_ids: sub_id.into_iter().collect(),
                    id: 0,
                    shared: None,
                };
                self.deliver(now, skey, d);
            }
        }
    }

    pub(crate) fn on_unsubscribe(&mut self, conn: ConnId, unsub: Unsubscribe) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(skey) = c.session else { return };
        let v5 = c.version() == ProtocolVersion::V5;
        let mut reasons = Vec::with_capacity(unsub.filters.len());
        for filter in &unsub.filters {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            if s.subscriptions.remove(filter).is_some() {
                let (plain, group) = parts(filter);
                self.local_remove(skey, &plain, group.as_ref());
                self.log_subscription(skey, filter, None);
                reasons.push(ReasonCode::SUCCESS);
            } else {
                reasons.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        // v5 [MQTT-3.10.4-4], [MQTT-3.10.4-5]: UNSUBACK even when nothing was removed.
        self.send_packet(
            conn,
            &Packet::UnsubAck(UnsubAck {
                packet_id: unsub.packet_id,
                properties: Properties::default(),
                reasons: if v5 { reasons } else { Vec::new() },
            }),
        );
    }

    /// Puts all of a session's subscriptions into the local trie (after a transfer).
    pub(crate) fn register_subscriptions(&mut self, skey: SessionKey) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let subs: Vec<(Utf8Str, Subscription)> = s
            .subscriptions
            .iter()
            .map(|(f, x)| (f.clone(), x.clone()))
            .collect();
        for (filter, sub) in subs {
            let (plain, group) = parts(&filter);
            self.local_add(skey, &plain, group.as_ref(), sub.options, sub.id);
        }
    }

    /// A session's subscriptions as (plain filter, shared group) pairs.
    fn filter_parts(&self, skey: SessionKey) -> Vec<(Utf8Str, Option<Utf8Str>)> {
        self.sessions
            .get(skey)
            .map(|s| s.subscriptions.keys().map(parts).collect())
            .unwrap_or_default()
    }

    pub(crate) fn unregister_subscriptions(&mut self, skey: SessionKey) {
        for (plain, group) in self.filter_parts(skey) {
            self.local_remove(skey, &plain, group.as_ref());
        }
    }

    fn local_add(
        &mut self,
        skey: SessionKey,
        plain: &Utf8Str,
        group: Option<&Utf8Str>,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) {
        let ls = self
            .local
            .entry_or_insert_with(plain.as_bytes(), LocalSubs::default);
        let sub = LocalSub {
            session: skey,
            options,
            id,
            draining: false,
        };
        match group {
            None => {
                ls.normal.push(sub);
                // Announce when this shard gains its first (non-draining) subscriber; a later
                // one waits for that announcement if it is still in flight.
                if live_count(&ls.normal) == 1 {
                    ls.announcing = self.barrier_ctx;
                    self.announce(plain, None, 1);
                } else if let Some(earlier) = ls.announcing {
                    self.barrier_depend_on(earlier);
                }
            }
            Some(g) => {
                match ls.shared.iter_mut().find(|x| &x.name == g) {
                    Some(x) => x.members.push(sub),
                    None => ls.shared.push(LocalGroup {
                        name: g.clone(),
                        members: vec![sub],
                        next: 0,
                    }),
                }
                self.announce(plain, Some(g), 1);
            }
        }
    }

    /// Changes the options of an existing entry in place (a re-subscription), so that the
    /// routes see no gap. Returns false if there was no entry.
    fn local_update(
        &mut self,
        skey: SessionKey,
        plain: &Utf8Str,
        group: Option<&Utf8Str>,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let Some(ls) = self.local.get_mut(plain.as_bytes()) else {
            return false;
        };
        let list = match group {
            None => Some(&mut ls.normal),
            Some(g) => ls
                .shared
                .iter_mut()
                .find(|x| &x.name == g)
                .map(|x| &mut x.members),
        };
        match list.and_then(|l| l.iter_mut().find(|x| x.session == skey && !x.draining)) {
            Some(entry) => {
                entry.options = options;
                entry.id = id;
                true
            }
            None => false,
        }
    }

    /// Removes `skey`'s entries of one filter. `announce_changes` is false when dropping a
    /// drained tombstone, whose withdrawal was announced already.
    fn local_remove_with(
        &mut self,
        skey: SessionKey,
        plain: &Utf8Str,
        group: Option<&Utf8Str>,
        announce_changes: bool,
    ) {
        let mut announce = false;
        self.local.remove_if(plain.as_bytes(), |ls| {
            match group {
                None => {
                    let before = live_count(&ls.normal);
                    ls.normal.retain(|s| s.session != skey);
                    announce = before > 0 && live_count(&ls.normal) == 0;
                }
                Some(g) => {
                    if let Some(x) = ls.shared.iter_mut().find(|x| &x.name == g) {
                        let before = live_count(&x.members);
                        x.members.retain(|s| s.session != skey);
                        announce = live_count(&x.members) < before;
                    }
                    ls.shared.retain(|x| !x.members.is_empty());
                }
            }
            ls.normal.is_empty() && ls.shared.is_empty()
        });
        if announce && announce_changes {
            self.announce(plain, group, -1);
        }
    }

    fn local_remove(&mut self, skey: SessionKey, plain: &Utf8Str, group: Option<&Utf8Str>) {
        self.local_remove_with(skey, plain, group, true);
    }

    /// A tombstone stops counting as a subscriber: its routes are withdrawn (under the
    /// current barrier) while its entries keep forwarding whatever still arrives.
    pub(crate) fn drain_subscriptions(&mut self, skey: SessionKey) {
        for (plain, group) in self.filter_parts(skey) {
            let mut announce = false;
            if let Some(ls) = self.local.get_mut(plain.as_bytes()) {
                let list = match &group {
                    None => Some(&mut ls.normal),
                    Some(g) => ls
                        .shared
                        .iter_mut()
                        .find(|x| &x.name == g)
                        .map(|x| &mut x.members),
                };
                if let Some(list) = list {
                    let before = live_count(list);
                    for sub in list.iter_mut().filter(|x| x.session == skey) {
                        sub.draining = true;
                    }
                    let after = live_count(list);
                    announce = match group {
                        None => before > 0 && after == 0,
                        Some(_) => after < before,
                    };
                }
            }
            if announce {
                self.announce(&plain, group.as_ref(), -1);
            }
        }
    }

    /// Removes a drained tombstone and its entries (already withdrawn from the routes), once
    /// the tombstone it relays for (if any) is gone too.
    pub(crate) fn drop_tombstone(&mut self, skey: SessionKey) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if s.upstream_alive {
            s.drained = true;
            return;
        }
        let downstream = s.forward_to;
        for (plain, group) in self.filter_parts(skey) {
            self.local_remove_with(skey, &plain, group.as_ref(), false);
        }
        if let Some(t) = self.sessions.remove(skey) {
            if let Some(from) = t.forwarded_from() {
                if self.tombstones.get(&from) == Some(&skey) {
                    self.tombstones.remove(&from);
                }
            }
        }
        // Sent after this tombstone's last Forward on the same ring.
        if let Some(to) = downstream {
            let me = (self.shard, skey);
            self.send_mail(to, Mail::TombstoneGone { tombstone: me });
        }
    }

    /// Tells every shard (this one directly) that our subscribers of `filter` changed. Inside
    /// an open barrier each shard acknowledges.
    fn announce(&mut self, filter: &Utf8Str, group: Option<&Utf8Str>, delta: i32) {
        let shard = self.shard;
        self.apply_route(filter, group, shard, delta);
        if self.shard_count == 1 || self.log.restoring {
            // Recovery tells the other shards directly (`Engine::restore_route`).
            return;
        }
        let ack = self.barrier_expect_acks();
        let (f, g) = (filter.clone(), group.cloned());
        self.broadcast(|| Mail::Route {
            filter: f.clone(),
            group: g.clone(),
            shard,
            delta,
            ack,
        });
    }

    pub(crate) fn apply_route(
        &mut self,
        filter: &Utf8Str,
        group: Option<&Utf8Str>,
        shard: ShardId,
        delta: i32,
    ) {
        let n = self.shard_count;
        let e = self
            .routes
            .entry_or_insert_with(filter.as_bytes(), || RouteEntry {
                filter: Utf8Str::from_bytes(Bytes::copy_from_slice(filter.as_bytes()))
                    .expect("copy of a valid string"),
                shards: 0,
                shared: Vec::new(),
            });
        match group {
            None => {
                if delta > 0 {
                    e.shards |= 1 << shard;
                } else {
                    e.shards &= !(1 << shard);
                }
            }
            Some(g) => {
                let idx = match e.shared.iter().position(|x| &x.name == g) {
                    Some(i) => i,
                    None => {
                        e.shared.push(RouteGroup {
                            name: g.clone(),
                            counts: vec![0; n],
                            next: Default::default(),
                        });
                        e.shared.len() - 1
                    }
                };
                let c = &mut e.shared[idx].counts[shard];
                *c = (*c as i64 + delta as i64).max(0) as u32;
                if e.shared[idx].counts.iter().all(|&c| c == 0) {
                    e.shared.remove(idx);
                }
            }
        }
        if e.shards == 0 && e.shared.is_empty() {
            self.routes.remove_if(filter.as_bytes(), |_| true);
        }
    }
}

/// Subscribers that count for routing (tombstones being drained do not).
fn live_count(list: &[LocalSub]) -> usize {
    list.iter().filter(|s| !s.draining).count()
}
