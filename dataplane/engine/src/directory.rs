//! Which shard owns which session. Every Client Identifier has a home shard (a stable hash);
//! the home keeps `client id -> (owner shard, claim)` and serialises claims, so two connections
//! with one id, on any shards, are ordered and the older one is taken over.
//!
//! ```text
//!   new conn on B ──Claim──▶ home H ──Evict──▶ owner A ──Transfer(session)──▶ B ── CONNACK
//!                             (no owner) ─────────────────Transfer(none)─────▶ B
//! ```

use tachyon_codec::{ProtocolVersion, ReasonCode, Utf8Str};

use crate::barrier::AfterBarrier;
use crate::engine::{ConnState, Engine};
use crate::mail::{home_shard, Handover, Mail};
use crate::session::{Delivery, PendingWill, Session};
use crate::{ConnId, SessionKey, ShardId};

impl Engine {
    /// At the home shard: record the new owner and ask the old one for the session.
    pub(crate) fn on_claim(&mut self, client_id: Utf8Str, shard: ShardId, conn: ConnId) {
        match self.clients.set_owner(client_id.clone(), (shard, conn)) {
            Some((owner_shard, owner)) => self.send_mail(
                owner_shard,
                Mail::Evict {
                    client_id,
                    owner,
                    to_shard: shard,
                    to_conn: conn,
                },
            ),
            None => self.transfer(shard, client_id, conn, Handover::None),
        }
    }

    /// Tells the home shard of `client_id` that the session owned through `claim` ended here.
    pub(crate) fn release_at_home(&mut self, client_id: Utf8Str, claim: ConnId) {
        let home = home_shard(client_id.as_bytes(), self.shard_count);
        self.send_mail(
            home,
            Mail::Release {
                client_id,
                shard: self.shard,
                claim,
            },
        );
    }

    /// At the home shard: the owner's session ended; forget it unless someone claimed since.
    pub(crate) fn on_release(&mut self, client_id: Utf8Str, shard: ShardId, claim: ConnId) {
        self.clients.remove_owner(&client_id, (shard, claim));
    }

    /// At the owner: hand the session to the new connection, closing ours (takeover).
    pub(crate) fn on_evict(
        &mut self,
        now: u64,
        client_id: Utf8Str,
        owner: ConnId,
        to_shard: ShardId,
        to_conn: ConnId,
    ) {
        let skey = self
            .clients
            .session(&client_id)
            .filter(|k| self.sessions.get(*k).is_some_and(|s| s.claim == owner));
        if let Some(skey) = skey {
            let live = self.sessions.get(skey).and_then(|s| s.conn);
            if let Some(old) = live {
                self.stats.takeovers += 1;
                if let Some(c) = self.conns.get(&old) {
                    tracing::info!(shard = self.shard, client_id = %client_id, peer = %c.peer, "session taken over by a new connection");
                    if c.version() == ProtocolVersion::V5 {
                        // v5 [MQTT-3.1.4-3]: DISCONNECT 0x8E to the existing connection.
                        self.send_disconnect(old, ReasonCode::SESSION_TAKEN_OVER, None);
                    }
                }
                // The old connection ends without DISCONNECT: its Will is published now if
                // it has no delay; a delayed Will travels with the session and is dropped if
                // the new connection resumes it (v5 3.1.3.2.2).
                let will = self
                    .conns
                    .get_mut(&old)
                    .and_then(|c| c.will.take())
                    .map(|b| *b);
                self.close_detached(old);
                let s = self.sessions.get_mut(skey).expect("resolved above");
                s.conn = None;
                s.epoch += 1;
                self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
                if s.expiry_secs == 0 {
                    // v5 3.1.2.11.2, v3.1.1 [MQTT-3.1.2-6]: a session that lasts as long as
                    // its connection ended with it; there is nothing to hand over, and its
                    // Will is due now, delayed or not (v5 3.1.3.2.2: at the session's end).
                    // The new connection starts a new session (v5 [MQTT-3.1.2-6],
                    // [MQTT-3.2.2-3]: Session Present 0).
                    self.end_session(now, skey, will);
                    self.transfer(to_shard, client_id, to_conn, Handover::None);
                    return;
                }
                if let Some(w) = will {
                    let delay = w.properties.will_delay_interval.unwrap_or(0);
                    if delay == 0 {
                        let id = client_id.clone();
                        self.publish_will(now, &id, w);
                    } else {
                        let s = self.sessions.get_mut(skey).expect("resolved above");
                        s.pending_will = Some(Box::new(PendingWill {
                            will: w,
                            due_ms: now + delay as u64 * 1000,
                        }));
                    }
                }
            }
            let handover = self.give_away(skey, to_shard);
            self.transfer(to_shard, client_id, to_conn, handover);
            return;
        }
        // Our own claim for this id is still in flight: pass the session on when it arrives.
        if let Some(c) = self.conns.get_mut(&owner) {
            if c.state == ConnState::Claiming && c.client_id.as_ref() == Some(&client_id) {
                c.claim.get_or_insert_with(Box::default).forward_to = Some((to_shard, to_conn));
                return;
            }
        }
        if let Some((id, forward)) = self.zombie_claims.get_mut(&owner) {
            if *id == client_id {
                *forward = Some((to_shard, to_conn));
                return;
            }
        }
        self.transfer(to_shard, client_id, to_conn, Handover::None);
    }

    /// Answers a claim with the session (or none) it finds.
    fn transfer(
        &mut self,
        to_shard: ShardId,
        client_id: Utf8Str,
        to_conn: ConnId,
        handover: Handover,
    ) {
        let mail = Mail::Transfer {
            client_id,
            conn: to_conn,
            handover,
            discard: false,
        };
        self.send_mail(to_shard, mail);
    }

    /// Gives a detached session to `to_shard`. On this shard it stays where it is; to another
    /// shard it moves, and a tombstone with its subscriptions stays behind to forward what is
    /// still routed here until the new owner's routes are in place everywhere.
    fn give_away(&mut self, skey: SessionKey, to_shard: ShardId) -> Handover {
        if to_shard == self.shard {
            return Handover::InPlace(skey);
        }
        let Some(s) = self.sessions.get(skey) else {
            return Handover::None;
        };
        if s.subscriptions.is_empty() {
            return match self.take_session(skey) {
                Some(s) => Handover::Moved {
                    session: Box::new(s),
                    tombstone: None,
                },
                None => Handover::None,
            };
        }
        let mut tomb = Session::new(s.client_id.clone(), s.version, s.claim);
        tomb.subscriptions = s.subscriptions.clone();
        tomb.forward_to = Some(to_shard);
        tomb.epoch = s.epoch + 1;
        // A session that itself came from a tombstone (it moves again before that one is
        // gone): this tombstone relays the older one's forwards and outlives it.
        tomb.adopted = s.adopted.clone();
        tomb.upstream_alive = s.adopted.is_some();
        if let Some(from) = s.forwarded_from() {
            self.tombstones.insert(from, skey);
        }
        let mut session = self.sessions.replace(skey, tomb).expect("resolved above");
        self.clear_congestion(&mut session);
        self.clients.remove_session(&session.client_id, skey);
        Handover::Moved {
            session: Box::new(session),
            tombstone: Some((self.shard, skey)),
        }
    }

    /// Passes a session that arrived for a claim that lost to a newer one on to that claim.
    /// A tombstone that forwards to this shard gets a relay here, so its forwards follow.
    fn pass_on(
        &mut self,
        client_id: Utf8Str,
        handover: Handover,
        to_shard: ShardId,
        to_conn: ConnId,
        discard: bool,
    ) {
        let handover = match handover {
            Handover::InPlace(k) => self.give_away(k, to_shard),
            Handover::Moved { session, tombstone } => {
                if let Some(t) = tombstone {
                    if to_shard != self.shard {
                        self.relays.insert(t, to_shard);
                    }
                }
                Handover::Moved { session, tombstone }
            }
            Handover::None => Handover::None,
        };
        let mail = Mail::Transfer {
            client_id,
            conn: to_conn,
            handover,
            discard,
        };
        self.send_mail(to_shard, mail);
    }

    /// At the claiming shard: the session (or none) arrived.
    pub(crate) fn on_transfer(
        &mut self,
        now: u64,
        client_id: Utf8Str,
        conn: ConnId,
        handover: Handover,
        discard: bool,
    ) {
        let claiming = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.state == ConnState::Claiming);
        if claiming {
            let forward = self
                .conns
                .get(&conn)
                .and_then(|c| c.claim.as_ref()?.forward_to);
            if let Some((to_shard, to_conn)) = forward {
                // A newer connection claimed the id while we waited: it wins (takeover
                // before CONNACK, so this one is only closed). This CONNECT came first: its
                // Clean Start discards the session, and a session of expiry 0 it would have
                // made ends as its connection is taken over (v5 [MQTT-3.1.2-4]; v3.1.1
                // [MQTT-3.1.2-6]).
                let ends = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.claim.as_ref()?.connect.as_deref())
                    .is_some_and(|cn| self.connect_ends_session(cn));
                self.stats.takeovers += 1;
                self.close_detached(conn);
                self.pass_on(client_id, handover, to_shard, to_conn, discard || ends);
                return;
            }
            self.complete_connect(now, conn, client_id, handover, discard);
            return;
        }
        // The connection went away while claiming (its CONNECT never took effect). If a
        // newer claim asked for the session meanwhile, it goes there.
        if let Some((_, Some((to_shard, to_conn)))) = self.zombie_claims.remove(&conn) {
            self.pass_on(client_id, handover, to_shard, to_conn, discard);
            return;
        }
        // Otherwise the directory names us as owner now: keep the session as an offline one
        // (it may still have queued messages).
        match handover {
            Handover::Moved {
                mut session,
                tombstone,
            } => {
                session.claim = conn;
                session.conn = None;
                session.epoch += 1;
                if discard {
                    // Ended on the way: it ends here (after_detach, expiry 0).
                    session.expiry_secs = 0;
                }
                session.adopted = tombstone.map(|from| {
                    Box::new(crate::session::Adopted {
                        from,
                        seen: self.seen.clone(),
                    })
                });
                let skey = self.sessions.insert(*session);
                if let Some(t) = tombstone {
                    self.tombstones.insert(t, skey);
                }
                self.clients.set_session(client_id, skey);
                let barrier = self.begin_barrier();
                self.register_subscriptions(skey);
                let then = tombstone
                    .map(|(shard, key)| AfterBarrier::Unforward(shard, key))
                    .into_iter()
                    .collect();
                self.end_barrier(barrier, None, then);
                self.log_session_attach(skey, true);
                self.after_detach(now, skey, None);
            }
            Handover::InPlace(skey) => {
                if let Some(s) = self.sessions.get_mut(skey) {
                    s.claim = conn;
                    s.epoch += 1;
                    if discard {
                        s.expiry_secs = 0;
                    }
                }
                self.after_detach(now, skey, None);
            }
            Handover::None => self.release_at_home(client_id, conn),
        }
    }

    /// At the new owner: a delivery that reached the old owner's tombstone.
    pub(crate) fn on_forward(
        &mut self,
        now: u64,
        client_id: Utf8Str,
        tombstone: (ShardId, SessionKey),
        delivery: Delivery,
        tag: Option<(ShardId, u64, u64)>,
    ) {
        let key = self.clients.session(&client_id).filter(|k| {
            self.sessions
                .get(*k)
                .is_some_and(|s| s.forwarded_from() == Some(tombstone))
        });
        if let Some(k) = key {
            if let Some((origin, seq, fanout)) = tag {
                let s = self.sessions.get(k).expect("resolved above");
                let after_adoption = s.adopted.as_ref().is_some_and(|a| a.after(origin, seq));
                if fanout & (1 << self.shard) != 0 && after_adoption {
                    // The origin sent this message here too, and it was (or will be) processed
                    // after the session arrived: the session got it directly.
                    self.stats.forwards_already_delivered += 1;
                    return;
                }
            }
            self.deliver(now, k, delivery);
            return;
        }
        // The session moved on from here too: pass the forward along its path.
        if let Some(&here) = self.tombstones.get(&tombstone) {
            if let Some(t) = self.sessions.get(here) {
                if let (Some(to), Some((origin, seq, fanout))) = (t.forward_to, tag) {
                    let after = t.adopted.as_ref().is_some_and(|a| a.after(origin, seq));
                    if fanout & (1 << self.shard) != 0 && after {
                        // Delivered here directly while the session was here.
                        self.stats.forwards_already_delivered += 1;
                        return;
                    }
                    self.forward(to, here, delivery, tag);
                    return;
                }
                if let Some(to) = t.forward_to {
                    self.forward(to, here, delivery, tag);
                    return;
                }
            }
        }
        if let Some(&to) = self.relays.get(&tombstone) {
            let ack = if delivery.qos == tachyon_codec::QoS::AtMostOnce {
                None
            } else {
                self.scope_ack_target()
            };
            self.send_mail(
                to,
                Mail::Forward {
                    client_id,
                    tombstone,
                    ack,
                    delivery,
                    tag,
                },
            );
            return;
        }
        self.stats.dropped_forward_no_session += 1;
    }

    /// At the old owner: the new owner's routes are in place; withdraw the tombstone's, and
    /// drop it once every shard has delivered what it had already sent here.
    pub(crate) fn on_unforward(&mut self, tombstone: SessionKey) {
        if self
            .sessions
            .get(tombstone)
            .is_none_or(|s| s.forward_to.is_none())
        {
            return;
        }
        let barrier = self.begin_barrier();
        self.drain_subscriptions(tombstone);
        if let Some(ack) = self.barrier_expect_acks() {
            self.broadcast(|| Mail::Sync { ack });
        }
        self.end_barrier(barrier, None, vec![AfterBarrier::DropTombstone(tombstone)]);
    }

    /// An upstream tombstone is gone: nothing more will be forwarded from it.
    pub(crate) fn on_tombstone_gone(&mut self, upstream: (ShardId, SessionKey)) {
        if let Some(to) = self.relays.remove(&upstream) {
            self.send_mail(
                to,
                Mail::TombstoneGone {
                    tombstone: upstream,
                },
            );
        }
        if let Some(here) = self.tombstones.remove(&upstream) {
            if let Some(t) = self.sessions.get_mut(here) {
                if t.forward_to.is_none() {
                    // A live session: no more forwards will come for it.
                    t.adopted = None;
                } else {
                    t.upstream_alive = false;
                    if t.drained {
                        self.drop_tombstone(here);
                    }
                }
            }
        }
    }

    /// Removes a session from this shard (unsubscribing it from the tries) and returns it.
    pub(crate) fn take_session(&mut self, skey: SessionKey) -> Option<Session> {
        // It leaves this shard's list of queues to copy (`compact_aged_queues`): copy now.
        self.compact_queue(skey);
        self.unregister_subscriptions(skey);
        let mut s = self.sessions.remove(skey)?;
        self.clear_congestion(&mut s);
        self.clients.remove_session(&s.client_id, skey);
        Some(s)
    }
}
