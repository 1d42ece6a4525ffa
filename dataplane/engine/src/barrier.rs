//! Barriers: "every shard has applied these route changes".
//!
//! A SUBACK or CONNACK promises that messages published afterwards reach the subscription,
//! wherever their publisher is connected. When an operation announces route changes to the
//! other shards, it opens a barrier: each `Mail::Route` asks for a `RouteAck`, and the
//! connection's output is held (in order) until every ack is back. Barriers also order the
//! hand-over of a session between shards:
//!
//! ```text
//!   new owner B: adopt session, announce routes (barrier) ── all acks ──▶ release CONNACK,
//!                                                                        Unforward ──▶ A
//!   old owner A: tombstone forwards stragglers to B; on Unforward withdraw routes (barrier)
//!                ── all acks ──▶ drop the tombstone (nothing can be routed to it any more)
//! ```

use crate::engine::Engine;
use crate::mail::Mail;
use crate::{ConnId, SessionKey, ShardId};

#[derive(Debug)]
pub(crate) enum AfterBarrier {
    /// Release the held output of a connection.
    Release(ConnId),
    /// Tell the old owner that its tombstone may withdraw its routes.
    Unforward(ShardId, SessionKey),
    /// Remove a drained tombstone.
    DropTombstone(SessionKey),
    /// Count as one acknowledgement of another barrier (which waits for this one).
    Ack(u64),
    /// An inbound QoS 2 message is durable everywhere it went (see `persist::emit`).
    Routed(tachyon_codec::Utf8Str, u16),
}

#[derive(Debug, Default)]
pub(crate) struct Barrier {
    pub remaining: u32,
    pub then: Vec<AfterBarrier>,
    /// Release this connection's output (kept out of `then`: a barrier per QoS 1 message
    /// that waits for the log should not allocate).
    pub release: Option<ConnId>,
    /// Acknowledge this barrier of another shard.
    pub reply: Option<(ShardId, u64)>,
}

impl Engine {
    /// Starts collecting route announcements into a new barrier.
    pub(crate) fn begin_barrier(&mut self) -> u64 {
        let id = self.next_barrier;
        self.next_barrier += 1;
        self.barriers.insert(id, Barrier::default());
        self.barrier_ctx = Some(id);
        id
    }

    /// Starts a barrier that holds `conn`'s output from now on (not only from `end_barrier`):
    /// an acknowledgement queued before the barrier completes waits for it.
    pub(crate) fn begin_barrier_holding(&mut self, conn: ConnId) -> u64 {
        let id = self.begin_barrier();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.holds += 1;
            if let Some(b) = self.barriers.get_mut(&id) {
                b.then.push(AfterBarrier::Release(conn));
            }
        }
        id
    }

    /// The current barrier also waits for barrier `earlier` (still open), whose announcement
    /// it relies on: a second subscriber of a filter must not get its SUBACK before the
    /// first subscriber's route reached every shard.
    pub(crate) fn barrier_depend_on(&mut self, earlier: u64) {
        let Some(current) = self.barrier_ctx else {
            return;
        };
        if current == earlier || !self.barriers.contains_key(&earlier) {
            return;
        }
        if let Some(b) = self.barriers.get_mut(&current) {
            b.remaining += 1;
        }
        if let Some(b) = self.barriers.get_mut(&earlier) {
            b.then.push(AfterBarrier::Ack(current));
        }
    }

    /// Called by `announce` for each route change broadcast while a barrier is open.
    pub(crate) fn barrier_expect_acks(&mut self) -> Option<(ShardId, u64)> {
        let id = self.barrier_ctx?;
        let b = self.barriers.get_mut(&id)?;
        b.remaining += (self.shard_count - 1) as u32;
        Some((self.shard, id))
    }

    /// Stops collecting. If acks are outstanding, `hold` (if any) has its output held and
    /// `then` runs when they are in; otherwise `then` runs now.
    pub(crate) fn end_barrier(&mut self, id: u64, hold: Option<ConnId>, then: Vec<AfterBarrier>) {
        self.barrier_ctx = None;
        let pending = self.barriers.get(&id).is_some_and(|b| b.remaining > 0);
        if !pending {
            // Actions registered while the barrier was open (a held connection) run too.
            if let Some(b) = self.barriers.remove(&id) {
                self.barrier_done(b);
            }
            for a in then {
                self.after_barrier(a);
            }
            return;
        }
        let b = self.barriers.get_mut(&id).expect("checked above");
        b.then.extend(then);
        if let Some(conn) = hold {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.holds += 1;
                b.then.push(AfterBarrier::Release(conn));
            }
        }
    }

    pub(crate) fn on_route_ack(&mut self, id: u64) {
        let Some(b) = self.barriers.get_mut(&id) else {
            return;
        };
        b.remaining = b.remaining.saturating_sub(1);
        if b.remaining > 0 {
            return;
        }
        let b = self.barriers.remove(&id).expect("present");
        self.barrier_done(b);
    }

    /// Runs barrier `id` now if nothing is outstanding (a barrier not opened with
    /// `begin_barrier`, see `persist::emit`).
    pub(crate) fn close_barrier(&mut self, id: u64) {
        if self.barriers.get(&id).is_some_and(|b| b.remaining == 0) {
            let b = self.barriers.remove(&id).expect("present");
            self.barrier_done(b);
        }
    }

    fn barrier_done(&mut self, b: Barrier) {
        if let Some(conn) = b.release {
            self.after_barrier(AfterBarrier::Release(conn));
        }
        if let Some((shard, barrier)) = b.reply {
            self.send_mail(shard, Mail::RouteAck { barrier });
        }
        for a in b.then {
            self.after_barrier(a);
        }
    }

    fn after_barrier(&mut self, a: AfterBarrier) {
        match a {
            AfterBarrier::Release(conn) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.holds = c.holds.saturating_sub(1);
                if c.holds == 0 {
                    c.flush_held(conn, &mut self.dirty);
                }
            }
            AfterBarrier::Unforward(shard, tombstone) => {
                self.send_mail(shard, Mail::Unforward { tombstone });
            }
            AfterBarrier::DropTombstone(key) => self.drop_tombstone(key),
            AfterBarrier::Ack(other) => self.on_route_ack(other),
            AfterBarrier::Routed(client, pid) => self.log_qos2_routed(client, pid),
        }
    }
}
