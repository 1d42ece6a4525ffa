//! CONNECT and CONNACK (v5 3.1, 3.2; v3.1.1 3.1, 3.2; MQTT 3.1).

use tachyon_codec::{
    ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, ReasonCode, Utf8Str, Will,
};

use crate::barrier::AfterBarrier;
use crate::engine::{ConnState, Engine, Timer};
use crate::mail::{home_shard, Handover, Mail};
use crate::session::Session;
use crate::ConnId;

impl Engine {
    pub(crate) fn send_connack_refusal(&mut self, conn: ConnId, reason: ReasonCode) {
        self.stats.connects_refused += 1;
        self.send_packet(
            conn,
            &Packet::ConnAck(ConnAck {
                session_present: false,
                reason,
                properties: Properties::default(),
            }),
        );
    }

    fn refuse_connect(&mut self, now: u64, conn: ConnId, reason: ReasonCode, why: &str) {
        if let Some(c) = self.conns.get(&conn) {
            tracing::info!(shard = self.shard, client_id = c.client_label(), peer = %c.peer, reason = %reason, "connection refused: {why}");
        }
        self.send_connack_refusal(conn, reason);
        self.begin_close(now, conn, false);
    }

    pub(crate) fn on_connect(&mut self, now: u64, conn: ConnId, mut connect: Box<Connect>) {
        let version = connect.version;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.version = Some(version);
        let listener = c.listener;

        let rules = self.cfg.listener(listener);
        if !rules.accepts(version) {
            // policy: `listeners[].protocols`; v3.1.1 [MQTT-3.1.2-2] (return code 0x01),
            // v5 [MQTT-3.1.2-2] (0x84 Unsupported Protocol Version).
            self.refuse_connect(
                now,
                conn,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                &format!(
                    "MQTT {} is turned off on this listener (listeners[{}].protocols)",
                    version.name(),
                    listener
                ),
            );
            return;
        }

        let mut client_id = connect.client_id.detached();
        let mut assigned = false;
        if version == ProtocolVersion::V31
            && (client_id.is_empty() || (rules.v31_strict_client_id && client_id.len() > 23))
        {
            // MQTT 3.1 (3.1 "Client Identifier"): 1 to 23 characters, CONNACK 2 (identifier
            // rejected) otherwise. policy: longer ones are accepted, as by Mosquitto and EMQX,
            // unless `listeners[].v31_strict_client_id` is set.
            self.refuse_connect(
                now,
                conn,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                if client_id.is_empty() {
                    "MQTT 3.1 needs a client identifier (it has no assigned identifiers)"
                } else {
                    "MQTT 3.1 client identifier longer than 23 bytes (listeners[].v31_strict_client_id)"
                },
            );
            return;
        }
        if client_id.is_empty() {
            if version == ProtocolVersion::V311 && !connect.clean_start {
                // v3.1.1 [MQTT-3.1.3-8]: zero-length id with CleanSession 0 -> return code 2.
                self.refuse_connect(
                    now,
                    conn,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client identifier with clean session 0",
                );
                return;
            }
            // v5 [MQTT-3.1.3-6], v3.1.1 [MQTT-3.1.3-6]: assign a unique identifier.
            self.assigned_ids += 1;
            let id = format!(
                "{}{:x}-{}-{}",
                self.cfg.assigned_id_prefix, self.cfg.boot_nonce, self.shard, self.assigned_ids
            );
            client_id = Utf8Str::from_string(id).expect("assigned ids are short ASCII");
            assigned = true;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client_id = Some(client_id.clone());
        }

        // The authentication hook. Extended authentication (AUTH) is not offered.
        if connect.properties.authentication_method.is_some() {
            // v5 [MQTT-4.12.0-1]: unsupported method -> CONNACK 0x8C and close.
            self.refuse_connect(
                now,
                conn,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                "extended authentication is not configured",
            );
            return;
        }
        if !self.cfg.allow_anonymous {
            let (reason, why) = if connect.username.is_none() {
                (
                    ReasonCode::NOT_AUTHORIZED,
                    "anonymous access is disabled (auth.allow_anonymous)",
                )
            } else {
                (
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                    "no credential store is configured",
                )
            };
            self.refuse_connect(now, conn, reason, why);
            return;
        }

        if let Some(w) = &connect.will {
            let levels = w.topic.as_bytes().iter().filter(|&&b| b == b'/').count() + 1;
            if levels > self.cfg.topic_levels_max {
                // The Will Topic becomes a Topic Name (and maybe a retained topic): it gets the
                // same depth limit as PUBLISH. v5: CONNACK 0x90; v3.1.1 has no return code for
                // it, so the connection closes (v3.1.1 [MQTT-3.2.2-6]).
                if version == ProtocolVersion::V5 {
                    self.refuse_connect(
                        now,
                        conn,
                        ReasonCode::TOPIC_NAME_INVALID,
                        "will topic has too many levels (limits.max_topic_levels)",
                    );
                } else {
                    *self
                        .stats
                        .violations
                        .entry("will_topic_too_deep")
                        .or_insert(0) += 1;
                    self.begin_close(now, conn, false);
                }
                return;
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Keep Alive: a ceiling, if configured, is announced as Server Keep Alive (v5 3.2.2.3.14).
        let mut keep_alive = connect.keep_alive_secs;
        let max = self.cfg.keep_alive_max_secs;
        if version == ProtocolVersion::V5 && max > 0 && (keep_alive == 0 || keep_alive > max) {
            keep_alive = max;
        }
        c.keep_alive_ms = keep_alive as u64 * 1000;
        c.max_packet_out = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
        c.alias_out_max = connect.properties.topic_alias_maximum.unwrap_or(0);
        c.expiry_zero_at_connect = connect.properties.session_expiry_interval.unwrap_or(0) == 0;
        // Detached: the Will may wait long, and must not pin the receive buffer.
        c.will = connect.will.take().map(|w| {
            Box::new(Will {
                topic: w.topic.detached(),
                payload: bytes::Bytes::copy_from_slice(&w.payload),
                properties: w.properties.detached(),
                ..w
            })
        });
        c.state = ConnState::Claiming;
        if assigned {
            connect.client_id = Utf8Str::default();
        }
        // The claim must finish within the connect timeout too (a shard that never answers
        // must not leave the client waiting without a CONNACK), counted from CONNECT. The
        // connect timeout armed at open fires first and re-arms for this deadline.
        let claim = c.claim.get_or_insert_with(Box::default);
        claim.connect = Some(connect);
        claim.deadline_ms = now + self.cfg.connect_timeout_ms;
        // Find the session wherever it lives: ask the client id's home shard.
        let home = home_shard(client_id.as_bytes(), self.shard_count);
        self.send_mail(
            home,
            Mail::Claim {
                client_id,
                shard: self.shard,
                conn,
            },
        );
    }

    /// The claimed session (or none) arrived: decide Session Present, attach, send CONNACK,
    /// resend what was inflight, and run the packets that came in meanwhile.
    /// The Session Expiry Interval a CONNECT asks for, and the one it gets (v5 3.1.2.11);
    /// v3.1.1 CleanSession 1 lasts as long as the connection (v3.1.1 [MQTT-3.1.2-6]),
    /// CleanSession 0 uses the configured policy.
    pub(crate) fn session_expiry(&self, connect: &Connect) -> (u32, u32) {
        match connect.version {
            ProtocolVersion::V5 => {
                let requested = connect.properties.session_expiry_interval.unwrap_or(0);
                (requested, requested.min(self.cfg.session_expiry_max_secs))
            }
            ProtocolVersion::V311 | ProtocolVersion::V31 if connect.clean_start => (0, 0),
            ProtocolVersion::V311 | ProtocolVersion::V31 => {
                let e = self.cfg.session_expiry_v311_secs;
                (e, e)
            }
        }
    }

    /// Whether a CONNECT ends the session it claims whatever follows: Clean Start discards
    /// it, and a session of expiry 0 ends with its connection.
    pub(crate) fn connect_ends_session(&self, connect: &Connect) -> bool {
        connect.clean_start || self.session_expiry(connect).1 == 0
    }

    /// `discard`: a claim that came in between ended the session (see `Mail::Transfer`).
    pub(crate) fn complete_connect(
        &mut self,
        now: u64,
        conn: ConnId,
        client_id: tachyon_codec::Utf8Str,
        handover: Handover,
        discard: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let connect = c
            .claim
            .as_mut()
            .and_then(|cl| cl.connect.take())
            .expect("a claiming connection keeps its CONNECT");
        let version = connect.version;
        let assigned = connect.client_id.is_empty();
        let (requested, expiry) = self.session_expiry(&connect);

        if matches!(handover, Handover::None)
            && self.sessions.len() >= self.cfg.sessions_max_per_shard
        {
            // policy: limits.max_sessions — a new session beyond the limit is refused
            // (v5 0x97 Quota exceeded; v3.1.1 return code 3, Server unavailable).
            let reason = match version {
                ProtocolVersion::V5 => ReasonCode::QUOTA_EXCEEDED,
                ProtocolVersion::V311 | ProtocolVersion::V31 => ReasonCode::SERVER_UNAVAILABLE,
            };
            self.refuse_connect(
                now,
                conn,
                reason,
                "session limit reached (limits.max_sessions)",
            );
            // The claim has completed: nothing more will arrive for it.
            self.zombie_claims.remove(&conn);
            self.release_at_home(client_id, conn);
            return;
        }
        // Route changes for the session's subscriptions form a barrier: CONNACK (and all
        // output after it) waits until every shard routes them here, and only then may the
        // old owner's tombstone withdraw (see barrier.rs).
        let barrier = self.begin_barrier();
        let mut then = Vec::new();
        let mut present = false;
        // The session is written to the log whole (new generation) unless resumed in place.
        let mut fresh = true;
        // Generation of a discarded session: the new one must be later.
        let mut discarded_gen = None;
        let skey = match handover {
            // v5 [MQTT-3.1.2-5], v3.1.1 [MQTT-3.1.2-4]: resume the existing session.
            Handover::InPlace(k)
                if !connect.clean_start && !discard && self.sessions.get(k).is_some() =>
            {
                present = true;
                fresh = false;
                k
            }
            Handover::Moved {
                mut session,
                tombstone,
            } if !connect.clean_start && !discard => {
                present = true;
                session.adopted = tombstone.map(|from| {
                    Box::new(crate::session::Adopted {
                        from,
                        seen: self.seen.clone(),
                    })
                });
                then.extend(tombstone.map(|(shard, key)| AfterBarrier::Unforward(shard, key)));
                let k = self.sessions.insert(*session);
                if let Some(t) = tombstone {
                    // Its upstream tombstone's forwards, and its TombstoneGone, come here.
                    self.tombstones.insert(t, k);
                }
                self.register_subscriptions(k);
                k
            }
            old => {
                // v5 [MQTT-3.1.2-4], v3.1.1 [MQTT-3.1.2-6]: Clean Start discards the session
                // (this CONNECT's, or that of a claim passed over on the way: `discard`).
                // Its shared-subscription messages go to other members first (v5 4.8.2).
                let discarded = match old {
                    Handover::InPlace(k) => {
                        self.redispatch_shared(now, k);
                        self.take_session(k)
                    }
                    Handover::Moved { session, tombstone } => {
                        then.extend(
                            tombstone.map(|(shard, key)| AfterBarrier::Unforward(shard, key)),
                        );
                        let k = self.sessions.insert(*session);
                        self.redispatch_shared(now, k);
                        self.sessions.remove(k)
                    }
                    Handover::None => None,
                };
                if let Some(mut s) = discarded {
                    discarded_gen = Some(s.gen);
                    if s.logged || s.expiry_secs > 0 {
                        // Its generation ends in the logs (here, or the shard it came from).
                        self.log_session_end(s.client_id.clone(), s.gen);
                    }
                    if let Some(p) = s.pending_will.take() {
                        // The old session ends here, so its delayed Will is due now.
                        self.publish_will(now, &s.client_id, p.will);
                    }
                }
                self.sessions
                    .insert(Session::new(client_id.clone(), version, conn))
            }
        };
        let session = self
            .sessions
            .get_mut(skey)
            .expect("inserted or resolved above");
        let had_will = present && session.pending_will.is_some();
        if present {
            // v5 [MQTT-3.1.3-9]: a resumed session cancels the pending Will.
            session.pending_will = None;
            // Inbound QoS 2 flows still awaiting PUBREL are now an earlier connection's.
            if let Some(f) = session
                .flows_if_any()
                .filter(|f| !f.qos2_incoming.is_empty())
            {
                f.qos2_incoming_earlier = f.qos2_incoming.clone();
            }
        }
        if let Some(g) = discarded_gen {
            session.gen = session.gen.max(g);
        }
        session.version = version;
        session.claim = conn;
        session.expiry_secs = expiry;
        session.conn = Some(conn);
        session.epoch += 1;
        // CONNACK (below) waits until the session's record is durable.
        self.log_session_attach(skey, fresh);
        if had_will && !fresh {
            self.log_will(skey);
        }
        let Some(session) = self.sessions.get_mut(skey) else {
            return;
        };
        // Our outbound window: the client's Receive Maximum, capped by our own limit (sending
        // fewer is allowed); v3.1.1 has no Receive Maximum, so the limit alone.
        session.receive_maximum = match version {
            ProtocolVersion::V5 => connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(self.cfg.inflight_max),
            ProtocolVersion::V311 | ProtocolVersion::V31 => self.cfg.inflight_max,
        };
        self.clients.set_session(client_id.clone(), skey);
        self.end_barrier(barrier, Some(conn), then);

        let Some(c) = self.conns.get_mut(&conn) else {
            // Nothing above closes a claiming connection; if that ever changes, the session
            // simply stays offline.
            return;
        };
        c.state = ConnState::Connected;
        c.session = Some(skey);
        let keep_alive_ms = c.keep_alive_ms;
        self.stats.clients_connected += 1;

        // CONNACK (v5 3.2).
        let mut props = Properties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                // v5 [MQTT-3.2.2-16]
                props.assigned_client_identifier = Some(client_id.clone());
            }
            if requested != expiry {
                props.session_expiry_interval = Some(expiry);
            }
            // v5 [MQTT-3.2.2-21]: the client uses Server Keep Alive when we send one.
            let effective = (keep_alive_ms / 1000) as u16;
            if effective != connect.keep_alive_secs {
                props.server_keep_alive = Some(effective);
            }
            props.receive_maximum = Some(self.cfg.receive_maximum);
            props.maximum_packet_size = Some(self.cfg.max_packet_size);
            props.topic_alias_maximum = Some(self.cfg.topic_alias_maximum);
        }
        // From now on this connection is held to what it is told here.
        if let Some(c) = self.conns.get_mut(&conn) {
            c.max_packet_in = self.cfg.max_packet_size;
            c.receive_max_in = self.cfg.receive_maximum;
            c.alias_max_in = self.cfg.topic_alias_maximum;
        }
        self.send_packet(
            conn,
            &Packet::ConnAck(ConnAck {
                // v3.1.1 [MQTT-3.2.2-1], v5 [MQTT-3.2.2-2]: 0 after a clean start. (MQTT 3.1
                // has no such flag: the encoder writes 0.)
                session_present: present,
                reason: ReasonCode::SUCCESS,
                properties: props,
            }),
        );
        if keep_alive_ms > 0 {
            self.arm(now + keep_alive_ms * 3 / 2, Timer::KeepAlive(conn));
        }
        let peer = self
            .conns
            .get(&conn)
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        tracing::info!(
            shard = self.shard,
            client_id = %client_id,
            peer = %peer,
            version = ?version,
            clean_start = connect.clean_start,
            session_present = present,
            keep_alive_secs = keep_alive_ms / 1000,
            "client connected"
        );

        // v5 [MQTT-4.4.0-1], v3.1.1 [MQTT-4.4.0-1]: resend unacknowledged PUBLISH (DUP set)
        // and PUBREL with their original Packet Identifiers, in their original order.
        self.resend_inflight(now, skey, conn);
        self.fill_window(now, skey);

        let pending = match self.conns.get_mut(&conn) {
            // The claim is over: its packets are processed now.
            Some(c) => c.claim.take().map(|cl| cl.pending).unwrap_or_default(),
            None => return,
        };
        for p in pending {
            self.handle_packet(now, conn, p);
        }
    }

    /// Everything inflight from the earlier connection is resent in its original order, as far
    /// as the client's new Receive Maximum allows (v5 [MQTT-3.3.4-9]); `fill_window` sends the
    /// rest as acknowledgements come in.
    fn resend_inflight(&mut self, now: u64, skey: crate::engine::SessionKey, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if let Some(f) = s.flows_if_any() {
            let mut order: Vec<(u64, u16)> =
                f.inflight.iter().map(|(id, i)| (i.seq, *id)).collect();
            order.sort_unstable();
            f.resend = order.into_iter().map(|(_, id)| id).collect();
        }
        self.resend_pending(now, skey, conn);
    }

    /// Resends waiting inflight entries while the window has room.
    pub(crate) fn resend_pending(
        &mut self,
        now: u64,
        skey: crate::engine::SessionKey,
        conn: ConnId,
    ) {
        loop {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            let receive_maximum = s.receive_maximum as usize;
            let Some(f) = s.flows_if_any() else { return };
            if f.resend.is_empty() {
                return;
            }
            // The entries still waiting are excluded from the window count: open means one
            // more may go out.
            let sent = f.inflight.len() - f.resend.len();
            if sent >= receive_maximum {
                return;
            }
            let id = f.resend.pop_front().expect("checked non-empty");
            let Some(inf) = f.inflight.get(&id) else {
                continue;
            };
            let pid = PacketId::new(id).expect("inflight ids are non-zero");
            match inf.state {
                crate::session::OutState::AwaitPubComp => {
                    self.send_packet(
                        conn,
                        &Packet::PubRel(tachyon_codec::PubResp::new(pid, ReasonCode::SUCCESS)),
                    );
                }
                _ => {
                    let d = inf.delivery.clone();
                    if !self.write_publish(now, conn, &d, Some(pid), true) {
                        // Too large for the client's new Maximum Packet Size: dropped as if
                        // delivered (v5 [MQTT-3.1.2-25]), so it does not hold the window.
                        if let Some(s) = self.sessions.get_mut(skey) {
                            s.complete(id);
                        }
                    }
                }
            }
        }
    }
}
