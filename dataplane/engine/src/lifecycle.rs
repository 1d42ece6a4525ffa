//! The end of connections and sessions: DISCONNECT, lost connections, Will Messages with their
//! delay, Session Expiry, keep-alive and connect timeouts.

use std::cmp::Reverse;
use std::sync::Arc;

use tachyon_codec::{Disconnect, ProtocolVersion, ReasonCode, Utf8Str, Will};

use crate::engine::{ConnState, Engine, SessionKey, Timer};
use crate::message::Message;
use crate::session::{OutState, PendingWill};
use crate::violation::Violation;
use crate::ConnId;

impl Engine {
    /// Closes `conn`: the driver flushes its output and closes the socket. If a session is
    /// attached it is detached; `abnormal` publishes (or schedules) the connection's Will.
    pub(crate) fn begin_close(&mut self, now: u64, conn: ConnId, abnormal: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnState::Closing {
            return;
        }
        let was = c.state;
        // Output held behind a barrier still goes out before the close.
        c.release_held();
        if was == ConnState::Claiming {
            // The claim is still in flight: remember it, so that the session it brings is
            // passed on to a newer claim, or kept, but never lost.
            if let Some(id) = c.client_id.clone() {
                let forward_to = c.claim.as_ref().and_then(|cl| cl.forward_to);
                self.zombie_claims.insert(conn, (id, forward_to));
            }
        }
        c.state = ConnState::Closing;
        c.claim = None;
        self.closing.push_back(conn);
        if was == ConnState::Connected {
            self.detach(now, conn, abnormal);
        }
    }

    /// Recomputes whether session `key` slows publishers down, after its queue or its
    /// connection changed (see `EngineConfig::queue_hard_factor`).
    pub(crate) fn update_congestion(&mut self, key: SessionKey) {
        let now = self.now_ms;
        let (soft_msgs, soft_bytes) = (self.cfg.queued_messages_max, self.cfg.queued_bytes_max);
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let over = s.flows().queue.len() >= soft_msgs || s.flows().queue_bytes >= soft_bytes;
        if !over {
            s.slow = false;
        }
        let should = over && s.conn.is_some() && s.forward_to.is_none() && !s.slow;
        match (s.congested_since_ms.is_some(), should) {
            (false, true) => {
                s.congested_since_ms = Some(now);
                self.congested += 1;
            }
            (true, false) => {
                s.congested_since_ms = None;
                self.congested = self.congested.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Output over this many bytes (256 KiB by default) makes a connection slow the
    /// publishers down: the kernel's send buffer holds megabytes more, so the client never
    /// starves, and little output stays referenced in the shard's encode buffers.
    pub(crate) fn output_soft_bytes(&self) -> usize {
        self.cfg.output_bytes_max / 64
    }

    /// Before a QoS 0 message is written to `conn` (one lookup for both bounds): false at the
    /// hard bound (`max_output_bytes`; the message is dropped). QoS 0 has no queue or window
    /// to fill, so the output buffer is what shows that a subscriber falls behind: over the
    /// soft bound, the shard stops reading publishers (`throttled`) and other shards' mail
    /// until it drains, instead of dropping messages at the hard bound.
    pub(crate) fn admit_qos0(&mut self, conn: ConnId) -> bool {
        let soft = self.output_soft_bytes();
        let now = self.now_ms;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let len = c.out.len_bytes();
        if len + c.held_bytes() > self.cfg.output_bytes_max {
            return false;
        }
        if c.out_slow && len <= soft / 2 {
            c.out_slow = false;
        }
        if len > soft && !c.out_congested && !c.out_slow {
            c.out_congested = true;
            self.congested += 1;
            self.out_congested.push((conn, now));
        }
        true
    }

    /// Releases connections whose output drained (below half the soft bound), or that stayed
    /// congested for `congestion_timeout_ms` (they get the drop policy). Cheap: it looks only
    /// at the connections listed.
    pub(crate) fn check_output_congestion(&mut self, now: u64) {
        let soft = self.output_soft_bytes();
        let timeout = self.cfg.congestion_timeout_ms;
        let mut i = 0;
        while i < self.out_congested.len() {
            let (conn, since) = self.out_congested[i];
            let release = match self.conns.get_mut(&conn) {
                None => true,
                Some(c) if c.out.len_bytes() <= soft / 2 => {
                    c.out_congested = false;
                    true
                }
                Some(c) if now >= since + timeout => {
                    c.out_congested = false;
                    c.out_slow = true;
                    tracing::warn!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                        queued_bytes = c.out.len_bytes(),
                        "subscriber has not read its output for limits.congestion_timeout_ms; no longer slowing publishers, its QoS 0 messages beyond limits.max_output_bytes are dropped");
                    true
                }
                Some(_) => false,
            };
            if release {
                self.out_congested.swap_remove(i);
                self.congested = self.congested.saturating_sub(1);
            } else {
                i += 1;
            }
        }
    }

    /// Forgets the congestion of a session leaving this shard's slab.
    pub(crate) fn clear_congestion(&mut self, s: &mut crate::session::Session) {
        if s.congested_since_ms.take().is_some() {
            self.congested = self.congested.saturating_sub(1);
        }
    }

    /// A session congested for longer than `congestion_timeout_ms` stops slowing everyone
    /// down (its client stopped reading): it gets the drop policy.
    pub(crate) fn check_congestion(&mut self, now: u64) {
        if self.congested == 0 || now < self.congestion_checked_ms + 100 {
            return;
        }
        self.congestion_checked_ms = now;
        let timeout = self.cfg.congestion_timeout_ms;
        let stuck: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter(|k| {
                self.sessions
                    .get(*k)
                    .and_then(|s| s.congested_since_ms)
                    .is_some_and(|t| now >= t + timeout)
            })
            .collect();
        for k in stuck {
            if let Some(s) = self.sessions.get_mut(k) {
                s.slow = true;
                tracing::warn!(shard = self.shard, client_id = %s.client_id, queued = s.flows().queue.len(),
                    "subscriber has not kept up for limits.congestion_timeout_ms; no longer slowing publishers, its excess messages are dropped");
            }
            self.update_congestion(k);
        }
    }

    /// Closes `conn` without touching any session (the session was moved away).
    pub(crate) fn close_detached(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session = None;
        c.will = None;
        c.release_held();
        if c.state != ConnState::Closing {
            c.state = ConnState::Closing;
            c.claim = None;
            self.closing.push_back(conn);
        }
    }

    fn detach(&mut self, now: u64, conn: ConnId, abnormal: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(skey) = c.session.take() else { return };
        let will = c.will.take().map(|b| *b).filter(|_| abnormal);
        self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        s.conn = None;
        s.epoch += 1;
        self.after_detach(now, skey, will);
    }

    /// A session has no connection any more: end it now (expiry 0) or arm its timers.
    pub(crate) fn after_detach(&mut self, now: u64, skey: SessionKey, will: Option<Will>) {
        if let Some(s) = self.sessions.get_mut(skey) {
            // Rebuilt from `inflight` when the session is resumed.
            if let Some(f) = s.flows_if_any() {
                f.resend.clear();
            }
        }
        self.redispatch_shared(now, skey);
        // Offline now: it no longer slows publishers down.
        self.update_congestion(skey);
        // Inflight and queued messages now wait for the client to come back, maybe long:
        // give them their own bytes so that they do not pin receive buffers.
        self.compact_queue(skey);
        if let Some(f) = self.sessions.get_mut(skey).and_then(|s| s.flows_if_any()) {
            let mut inflight = std::mem::take(&mut f.inflight);
            for inf in inflight.values_mut() {
                inf.delivery.msg = self.compacted(inf.delivery.msg.clone());
            }
            if let Some(f) = self.sessions.get_mut(skey).and_then(|s| s.flows_if_any()) {
                f.inflight = inflight;
            }
        }
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let expiry = s.expiry_secs;
        let epoch = s.epoch;
        if expiry == 0 {
            // v5 [MQTT-3.1.2-8] / 3.1.2.11: the session ends with the connection; its Will
            // is due now.
            self.end_session(now, skey, will);
            return;
        }
        if let Some(w) = will {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            if delay == 0 {
                let id = s.client_id.clone();
                self.publish_will(now, &id, w);
            } else {
                // v5 3.1.3.2.2: sent at the earlier of the Will Delay and the session's end.
                let due = now + delay.min(expiry) as u64 * 1000;
                s.pending_will = Some(Box::new(PendingWill {
                    will: w,
                    due_ms: due,
                }));
                self.arm(due, Timer::WillDelay(skey, epoch));
                self.log_will(skey);
            }
        } else if let Some(p) = &s.pending_will {
            // A delayed Will carried over from a takeover keeps its due time.
            let due = p.due_ms;
            self.arm(due, Timer::WillDelay(skey, epoch));
        }
        if expiry != u32::MAX {
            self.arm(
                now + expiry as u64 * 1000,
                Timer::SessionExpiry(skey, epoch),
            );
        }
    }

    /// Removes the session, publishes its Will if one is due, and tells the directory.
    pub(crate) fn end_session(&mut self, now: u64, skey: SessionKey, will: Option<Will>) {
        // Shared-subscription messages still queued go to other members (v5 4.8.2).
        self.redispatch_shared(now, skey);
        self.log_session_removed(skey);
        let Some(mut s) = self.take_session(skey) else {
            return;
        };
        tracing::debug!(shard = self.shard, client_id = %s.client_id, "session ended");
        let will = will.or_else(|| s.pending_will.take().map(|p| p.will));
        if let Some(w) = will {
            self.publish_will(now, &s.client_id, w);
        }
        self.release_at_home(s.client_id, s.claim);
    }

    /// Publishes a Will Message as if its client had sent it (v5 3.1.3.2, v3.1.1 3.1.2.5).
    pub(crate) fn publish_will(&mut self, now: u64, client_id: &Utf8Str, will: Will) {
        self.stats.wills_published += 1;
        tracing::info!(shard = self.shard, client_id = %client_id, topic = %will.topic, "publishing will message");
        let mut props = will.properties;
        props.will_delay_interval = None;
        let expiry = props.message_expiry_interval.take();
        let msg = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: Message::boxed_properties(props),
            expires_at_ms: expiry.map(|s| now + s as u64 * 1000),
            origin: Some(client_id.clone()),
            receipt: 0,
            owned: false,
            received_us: 0,
        };
        self.publish_message(now, Arc::new(msg));
    }

    /// Shared-subscription messages a member can no longer take go to another member of
    /// their group: QoS 1 messages inflight (unacknowledged) and every queued (unsent) one.
    pub(crate) fn redispatch_shared(&mut self, now: u64, skey: SessionKey) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let Some(f) = s.flows_if_any() else { return };
        let mut moved = Vec::new();
        f.inflight.retain(|_, inf| {
            // QoS 1 may go to another member at once (v5 4.8.2, a MAY); a QoS 2 message
            // already sent stays with this member: its delivery completes if the client
            // comes back, and it goes to nobody else if the session ends
            // (v5 [MQTT-4.8.2-4], [MQTT-4.8.2-5]).
            let keep = inf.delivery.shared.is_none() || inf.state != OutState::AwaitPubAck;
            if !keep {
                moved.push(inf.delivery.clone());
            }
            keep
        });
        let mut i = 0;
        while i < f.queue.len() {
            if f.queue[i].shared.is_some() {
                let d = f.queue.remove(i).expect("index checked");
                f.queue_bytes = f.queue_bytes.saturating_sub(d.msg.size());
                moved.push(d);
            } else {
                i += 1;
            }
        }
        for mut d in moved {
            // It leaves this session's log; wherever it goes next logs it anew.
            self.log_dropped(skey, std::mem::take(&mut d.id));
            self.note_receipt_done(skey, d.msg.receipt);
            self.dispatch_shared_again(now, d, skey);
        }
    }

    pub(crate) fn on_disconnect(&mut self, now: u64, conn: ConnId, d: Disconnect) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.version() == ProtocolVersion::V5 {
            if let Some(exp) = d.properties.session_expiry_interval {
                if c.expiry_zero_at_connect && exp != 0 {
                    // v5 3.14.2.2.2: a Protocol Error.
                    self.violation(now, conn, Violation::SessionExpiryAfterZero, None);
                    return;
                }
                let max = self.cfg.session_expiry_max_secs;
                let session = c.session;
                if let Some(k) = session {
                    if let Some(s) = self.sessions.get_mut(k) {
                        s.expiry_secs = exp.min(max);
                    }
                    self.log_session_params(k);
                }
            }
        }
        // v5 [MQTT-3.14.4-3], v3.1.1 [MQTT-3.14.4-3]: a normal DISCONNECT discards the Will;
        // reason 0x04 asks for it to be published.
        // (v5 3.1.2.5: only reason 0x00 deletes it; >= 0x80 reports an error.)
        let with_will = d.reason != ReasonCode::SUCCESS;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        tracing::info!(shard = self.shard, client_id = c.client_label(), peer = %c.peer, reason = %d.reason, "client disconnected");
        self.begin_close(now, conn, with_will);
    }

    pub(crate) fn fire(&mut self, now: u64, timer: Timer) {
        match timer {
            Timer::ConnectTimeout(conn) => match self.conns.get(&conn).map(|c| c.state) {
                Some(ConnState::AwaitConnect) => {
                    self.violation(now, conn, Violation::ConnectTimeout, None);
                }
                Some(ConnState::Claiming) => {
                    let deadline = self
                        .conns
                        .get(&conn)
                        .and_then(|c| c.claim.as_ref())
                        .map_or(0, |cl| cl.deadline_ms);
                    if now < deadline {
                        // Later than the FIFO's order allows: the heap takes it (rare, as
                        // claims take microseconds).
                        self.timers
                            .push(Reverse((deadline, Timer::ConnectTimeout(conn))));
                        return;
                    }
                    if let Some(c) = self.conns.get(&conn) {
                        tracing::warn!(shard = self.shard, client_id = c.client_label(), peer = %c.peer,
                            "session claim did not complete within the connect timeout; refusing (server busy)");
                    }
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| c.version() == ProtocolVersion::V5)
                    {
                        self.send_connack_refusal(conn, ReasonCode::SERVER_BUSY);
                    }
                    self.begin_close(now, conn, false);
                }
                _ => {}
            },
            Timer::KeepAlive(conn) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if c.state != ConnState::Connected || c.keep_alive_ms == 0 {
                    return;
                }
                // v5 [MQTT-3.1.2-22], v3.1.1 [MQTT-3.1.2-24]: 1.5 x Keep Alive of silence.
                let due = c.last_rx_ms + c.keep_alive_ms * 3 / 2;
                if now >= due {
                    self.violation(now, conn, Violation::KeepAliveTimeout, None);
                } else {
                    self.arm(due, Timer::KeepAlive(conn));
                }
            }
            Timer::WillDelay(skey, epoch) => {
                let Some(s) = self.sessions.get_mut(skey) else {
                    return;
                };
                if s.epoch != epoch || s.conn.is_some() {
                    return;
                }
                if let Some(p) = s.pending_will.take() {
                    let id = s.client_id.clone();
                    self.log_will(skey);
                    self.publish_will(now, &id, p.will);
                }
            }
            Timer::SessionExpiry(skey, epoch) => {
                let Some(s) = self.sessions.get(skey) else {
                    return;
                };
                if s.epoch != epoch || s.conn.is_some() {
                    return;
                }
                self.stats.sessions_expired += 1;
                self.end_session(now, skey, None);
            }
        }
    }
}
