//! What the control plane asks a shard (through the dataplane's control thread and the
//! shard's admin inbox, see `tachyon_shard::Mesh::submit_admin`): listings of clients,
//! sessions, subscriptions and retained messages, kicking a client, deleting a retained
//! message, publishing `$SYS` topics, and applying new limits. Rare and off the fast path:
//! answers are built with ordinary allocations.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tachyon_codec::{ProtocolVersion, QoS, ReasonCode, Utf8Str};

use crate::config::EngineConfig;
use crate::engine::ConnState;
use crate::message::Message;
use crate::session::Session;
use crate::{ConnId, Engine, ShardId};

/// A request to one shard.
#[derive(Debug, Clone)]
pub enum AdminQuery {
    /// Connected clients of this shard, optionally only `client_id`; a page of session
    /// slots from `from` (see [`Page`]).
    Clients {
        client_id: Option<String>,
        from: usize,
    },
    /// Sessions held by this shard (connected or offline), optionally only `client_id`.
    Sessions {
        client_id: Option<String>,
        from: usize,
    },
    /// Subscriptions of this shard's sessions, optionally of one client.
    Subscriptions {
        client_id: Option<String>,
        from: usize,
    },
    /// Retained messages whose topic matches `filter` (this shard's replica), at most `limit`.
    Retained { filter: String, limit: usize },
    /// Clears the retained message of `topic` everywhere, without publishing anything.
    DeleteRetained { topic: String },
    /// Closes `client_id`'s connection if it is on this shard (v5: DISCONNECT 0x98
    /// Administrative action). Its session stays, as after any network loss; its Will is
    /// published.
    Kick { client_id: String },
    /// Publishes each (topic, payload) as a retained QoS 0 message from the broker itself.
    PublishSys { messages: Vec<(String, Bytes)> },
    /// New limits. The identity of the running broker (boot nonce, log settings, time
    /// origin) is kept from the current configuration.
    Reconfigure(Arc<EngineConfig>),
}

/// A shard's answer.
#[derive(Debug, Clone)]
pub enum AdminAnswer {
    Clients(Page<ClientInfo>),
    Sessions(Page<SessionInfo>),
    Subscriptions(Page<SubscriptionInfo>),
    Retained(Vec<RetainedInfo>),
    /// How many things the operation acted on (0: not found here).
    Done(usize),
    /// The request cannot be done; the text says why.
    Refused(String),
}

/// Session slots one listing request visits: a shard answers a large listing a slice per
/// request (one per loop pass), so no pass pauses for long.
pub const PAGE_SLOTS: usize = 2048;

/// Part of a listing: what slots `from..next` held. Ask again from `next` until it is
/// `None`.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub peer: SocketAddr,
    pub protocol: &'static str,
    pub keep_alive_secs: u64,
    pub session: SessionInfo,
}

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client_id: String,
    pub shard: ShardId,
    pub connected: bool,
    pub protocol: &'static str,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// Its state is in the WAL (a persistent session with durability on).
    pub durable: bool,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
    pub queued_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct RetainedInfo {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    /// Seconds left of its Message Expiry Interval, if it has one.
    pub expires_in_secs: Option<u32>,
}

/// Sums over the sessions of a shard, gathered a slice at a time (see `Engine::scan_gauges`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sessions: u64,
    pub subscriptions: u64,
    pub queued: u64,
    pub inflight: u64,
}

fn protocol(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5",
        _ => "3.1.1",
    }
}

impl Engine {
    /// Answers one admin request. `now` is the engine time in milliseconds.
    pub fn handle_admin(&mut self, now: u64, q: &AdminQuery) -> AdminAnswer {
        self.now_ms = now;
        match q {
            AdminQuery::Clients { client_id, from } => {
                AdminAnswer::Clients(self.page(client_id, *from, |e, s, out| {
                    let Some(c) = s.conn.and_then(|id| e.conns.get(&id)) else {
                        return;
                    };
                    if c.state == ConnState::Connected {
                        out.push(ClientInfo {
                            client_id: s.client_id.as_str().to_owned(),
                            peer: c.peer.addr(),
                            protocol: protocol(s.version),
                            keep_alive_secs: c.keep_alive_ms / 1000,
                            session: e.session_info(s),
                        });
                    }
                }))
            }
            AdminQuery::Sessions { client_id, from } => {
                AdminAnswer::Sessions(
                    self.page(client_id, *from, |e, s, out| out.push(e.session_info(s))),
                )
            }
            AdminQuery::Subscriptions { client_id, from } => {
                AdminAnswer::Subscriptions(self.page(client_id, *from, |_, s, out| {
                    for (filter, sub) in s.subscriptions.iter() {
                        out.push(SubscriptionInfo {
                            client_id: s.client_id.as_str().to_owned(),
                            filter: filter.as_str().to_owned(),
                            qos: sub.options.qos as u8,
                            no_local: sub.options.no_local,
                            retain_as_published: sub.options.retain_as_published,
                            retain_handling: sub.options.retain_handling,
                            subscription_id: sub.id,
                        });
                    }
                }))
            }
            AdminQuery::Retained { filter, limit } => {
                let mut out = Vec::new();
                // The walk stops at `limit`: a listing of a large store costs the shard only
                // what it returns.
                self.retained.matched_by_while(filter.as_bytes(), |m| {
                    if out.len() >= *limit {
                        return false;
                    }
                    if !m.expired(now) {
                        out.push(RetainedInfo {
                            topic: m.topic.as_str().to_owned(),
                            payload: m.payload.clone(),
                            qos: m.qos as u8,
                            expires_in_secs: m.remaining_expiry_secs(now),
                        });
                    }
                    true
                });
                AdminAnswer::Retained(out)
            }
            AdminQuery::DeleteRetained { topic } => {
                let Some(t) = Utf8Str::from_string(topic.clone()) else {
                    return AdminAnswer::Refused(format!("{topic:?} is not a topic name"));
                };
                let found = usize::from(self.retained.get(t.as_bytes()).is_some());
                let mut clear = Message::empty();
                clear.topic = t;
                clear.retain = true;
                self.update_retained(&clear);
                AdminAnswer::Done(found)
            }
            AdminQuery::Kick { client_id } => AdminAnswer::Done(self.kick(now, client_id)),
            AdminQuery::PublishSys { messages } => {
                for (topic, payload) in messages {
                    let Some(topic) = Utf8Str::from_string(topic.clone()) else {
                        continue;
                    };
                    let mut m = Message::empty();
                    m.topic = topic;
                    m.payload = payload.clone();
                    m.qos = QoS::AtMostOnce;
                    m.retain = true;
                    self.publish_message(now, Arc::new(m));
                }
                AdminAnswer::Done(messages.len())
            }
            AdminQuery::Reconfigure(cfg) => {
                let mut next = EngineConfig::clone(cfg);
                next.boot_nonce = self.cfg.boot_nonce;
                next.log_state = self.cfg.log_state;
                next.acks_wait_for_log = self.cfg.acks_wait_for_log;
                next.unix_epoch_ms = self.cfg.unix_epoch_ms;
                next.assigned_id_prefix = self.cfg.assigned_id_prefix.clone();
                // Listeners change with a restart only: their rules stay those of the
                // sockets the driver has (matched by position).
                next.listeners = self.cfg.listeners.clone();
                self.cfg = Arc::new(next);
                AdminAnswer::Done(1)
            }
        }
    }

    /// Visits the sessions that live here (not tombstones of sessions that moved to another
    /// shard): only `client_id`'s, or those in the slots of one page from `from`.
    fn page<T>(
        &self,
        client_id: &Option<String>,
        from: usize,
        mut f: impl FnMut(&Engine, &Session, &mut Vec<T>),
    ) -> Page<T> {
        let mut items = Vec::new();
        if let Some(id) = client_id {
            let s = Utf8Str::from_string(id.clone())
                .and_then(|id| self.clients.session(&id))
                .and_then(|k| self.sessions.get(k));
            if let Some(s) = s.filter(|s| s.forward_to.is_none()) {
                f(self, s, &mut items);
            }
            return Page { items, next: None };
        }
        let next = self.sessions.scan(from, PAGE_SLOTS, |s| {
            if s.forward_to.is_none() {
                f(self, s, &mut items);
            }
        });
        Page {
            items,
            next: (next != 0).then_some(next),
        }
    }

    fn session_info(&self, s: &Session) -> SessionInfo {
        let f = s.flows();
        SessionInfo {
            client_id: s.client_id.as_str().to_owned(),
            shard: self.shard,
            connected: s.conn.is_some(),
            protocol: protocol(s.version),
            expiry_secs: s.expiry_secs,
            durable: s.logged,
            subscriptions: s.subscriptions.len(),
            inflight: f.inflight.len(),
            queued: f.queue.len(),
            queued_bytes: f.queue_bytes,
        }
    }

    /// Closes the connection of `client_id` if it is connected to this shard.
    fn kick(&mut self, now: u64, client_id: &str) -> usize {
        let conn: Option<ConnId> = self.conns.iter().find_map(|(&id, c)| {
            (c.state == ConnState::Connected
                && c.client_id
                    .as_ref()
                    .is_some_and(|i| i.as_str() == client_id))
            .then_some(id)
        });
        let Some(conn) = conn else { return 0 };
        if let Some(c) = self.conns.get(&conn) {
            tracing::info!(shard = self.shard, client_id = %client_id, peer = %c.peer,
                "disconnecting client: administrative action");
            if c.version() == ProtocolVersion::V5 {
                self.send_disconnect(
                    conn,
                    ReasonCode::ADMINISTRATIVE_ACTION,
                    Some("disconnected by the broker's administrator"),
                );
            }
        }
        self.begin_close(now, conn, true);
        1
    }

    /// Advances the gauge scan over up to `budget` session slots. Returns the sums once a
    /// pass over all sessions completes (a large shard completes one every few calls, so no
    /// call costs more than `budget` slots).
    pub fn scan_gauges(&mut self, budget: usize) -> Option<Gauges> {
        let mut acc = self.gauge_scan.1;
        let next = self.sessions.scan(self.gauge_scan.0, budget, |s| {
            if s.forward_to.is_some() {
                return;
            }
            let f = s.flows();
            acc.sessions += 1;
            acc.subscriptions += s.subscriptions.len() as u64;
            acc.queued += f.queue.len() as u64;
            acc.inflight += f.inflight.len() as u64;
        });
        if next == 0 {
            self.gauge_scan = (0, Gauges::default());
            Some(acc)
        } else {
            self.gauge_scan = (next, acc);
            None
        }
    }
}
