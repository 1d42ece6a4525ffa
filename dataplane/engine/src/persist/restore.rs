//! Recovery into a live engine: sessions, their subscriptions, queued and inflight messages,
//! QoS 2 state and pending Wills, and the retained store, from a merged log image
//! (`image::merge`). The driver places each session on the home shard of its client id
//! (which also owns its directory entry), gives every shard every retained message (they are
//! replicas) and tells every shard where each restored subscription lives
//! (`restore_route`), before any connection is accepted.

use std::cmp::Reverse;
use std::sync::Arc;

use tachyon_codec::{ProtocolVersion, QoS, Utf8Str, Will};

use super::emit::unpack_options;
use super::image::{Image, SessionImage};
use super::record::Entry;
use crate::engine::{Engine, Timer};
use crate::mail::home_shard;
use crate::message::Message;
use crate::session::{Delivery, Inflight, OutState, PendingWill, Session, Subscription};
use crate::{ConnId, ShardId};

/// What `restore_all` brought back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    /// Sessions whose client id is not a valid MQTT string (skipped).
    pub skipped: usize,
}

/// Puts a merged image into the engines of all shards (one per shard, in order): each
/// session on the home shard of its client id, every retained message on every shard, and
/// each restored subscription into every shard's routes.
pub fn restore_all(engines: &mut [Engine], image: &Image, now: u64) -> Restored {
    let n = engines.len();
    let mut r = Restored::default();
    // New receipts must differ from every one in the log (a restart within the same
    // millisecond range would repeat them).
    let top = image
        .sessions
        .values()
        .flat_map(|s| {
            s.deliveries
                .values()
                .map(|d| d.entry.receipt)
                .chain(s.qos2_incoming.values().map(|q| q.0))
                .chain(s.done_receipts.iter().copied())
        })
        .max()
        .unwrap_or(0);
    for e in engines.iter_mut() {
        e.receipts_above(top);
    }
    for (client, s) in &image.sessions {
        let home = home_shard(client.as_bytes(), n);
        if !engines[home].restore_session(now, client, s) {
            r.skipped += 1;
            continue;
        }
        r.sessions += 1;
        r.messages += s.deliveries.len();
        for filter in s.subs.keys() {
            for e in engines.iter_mut() {
                e.restore_route(filter, home);
            }
        }
    }
    for entry in image.retained.values() {
        for e in engines.iter_mut() {
            e.restore_retained(entry);
        }
        r.retained += 1;
    }
    r
}

/// The claim of a restored session: no connection has claimed it since the restart.
pub const RESTORED_CLAIM: ConnId = ConnId(u64::MAX);

/// The message of a stored entry, with engine times (`unix_epoch_ms` is the Unix time of
/// engine time 0). `None` if the entry does not decode.
pub fn message_from_entry(e: &Entry, unix_epoch_ms: u64) -> Option<(Message, bool)> {
    let mut p = e.decode_publish()?;
    let properties = Message::boxed_properties(std::mem::take(&mut p.properties));
    Some((
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at_ms: e.expires_unix_ms.map(|t| t.saturating_sub(unix_epoch_ms)),
            origin: e.origin.clone().and_then(Utf8Str::from_string),
            receipt: e.receipt,
            // Decoded from its own copy of the record.
            owned: true,
            received_us: 0,
        },
        p.retain,
    ))
}

fn qos_of(b: u8) -> QoS {
    match b {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Engine {
    /// Brings back a session from the log, offline. Returns false (and restores nothing) if
    /// this is not the home shard of `client` or the id is not valid UTF-8 for MQTT.
    pub fn restore_session(&mut self, now: u64, client: &str, img: &SessionImage) -> bool {
        self.now_ms = now;
        if home_shard(client.as_bytes(), self.shard_count) != self.shard {
            return false;
        }
        let Some(client_id) = Utf8Str::from_string(client.to_owned()) else {
            return false;
        };
        let version = if img.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let epoch_ms = self.cfg.unix_epoch_ms;
        let mut s = Session::new(client_id.clone(), version, RESTORED_CLAIM);
        s.expiry_secs = img.expiry_secs;
        s.gen = img.gen;
        s.logged = true;
        s.receive_maximum = self.cfg.inflight_max;
        for (filter, (options, id)) in &img.subs {
            if let Some(f) = Utf8Str::from_string(filter.clone()) {
                s.subscriptions.insert(
                    f,
                    Subscription {
                        options: unpack_options(*options),
                        id: *id,
                    },
                );
            }
        }
        for d in img.deliveries.values() {
            let Some((msg, retain)) = message_from_entry(&d.entry, epoch_ms) else {
                self.stats.restore_skipped += 1;
                continue;
            };
            self.log.next_delivery += 1;
            let delivery = Delivery {
                msg: Arc::new(msg),
                qos: qos_of(d.entry.qos),
                retain,
                sub_ids: d.entry.sub_ids.clone(),
                id: self.log.next_delivery,
                shared: None,
            };
            let f = s.flows_mut();
            match d.packet_id {
                Some(pid) => {
                    f.inflight_seq += 1;
                    let state = match (delivery.qos, d.released) {
                        (_, true) => OutState::AwaitPubComp,
                        (QoS::ExactlyOnce, false) => OutState::AwaitPubRec,
                        _ => OutState::AwaitPubAck,
                    };
                    let seq = f.inflight_seq;
                    f.inflight.insert(
                        pid,
                        Inflight {
                            delivery,
                            state,
                            seq,
                        },
                    );
                }
                None => {
                    f.queue_bytes += delivery.msg.size();
                    f.queue.push_back(delivery);
                }
            }
        }
        for pid in img.qos2_incoming.keys() {
            s.flows_mut().qos2_incoming.insert(*pid);
        }
        let mut will_due = None;
        if let Some((due_unix, entry)) = &img.will {
            if let Some((msg, _)) = message_from_entry(entry, epoch_ms) {
                let due = due_unix.saturating_sub(epoch_ms);
                s.pending_will = Some(Box::new(PendingWill {
                    will: Will {
                        topic: msg.topic.clone(),
                        payload: msg.payload.clone(),
                        qos: msg.qos,
                        retain: msg.retain,
                        properties: msg.properties().clone(),
                    },
                    due_ms: due,
                }));
                will_due = Some(due);
            }
        }
        self.log.last_gen = self.log.last_gen.max(img.gen);
        let epoch = s.epoch;
        let expiry = s.expiry_secs;
        let skey = self.sessions.insert(s);
        self.clients.set_session(client_id.clone(), skey);
        self.clients
            .set_owner(client_id, (self.shard, RESTORED_CLAIM));
        self.log.restoring = true;
        self.register_subscriptions(skey);
        self.log.restoring = false;
        if let Some(due) = will_due {
            self.timers
                .push(Reverse((due.max(now), Timer::WillDelay(skey, epoch))));
        }
        if expiry != u32::MAX {
            // The time the client was last seen is not logged: expiry counts from the
            // restart (it never ends a session early).
            self.arm(
                now + expiry as u64 * 1000,
                Timer::SessionExpiry(skey, epoch),
            );
        }
        true
    }

    /// Puts a retained message into this shard's replica (every shard gets each one).
    pub fn restore_retained(&mut self, e: &Entry) -> bool {
        let Some((msg, _)) = message_from_entry(e, self.cfg.unix_epoch_ms) else {
            self.stats.restore_skipped += 1;
            return false;
        };
        if msg.payload.is_empty() {
            return false;
        }
        let msg = Arc::new(Message {
            retain: true,
            ..msg
        });
        let topic = msg.topic.clone();
        let slot = self
            .retained
            .entry_or_insert_with(topic.as_bytes(), || msg.clone());
        *slot = msg;
        true
    }

    /// Shard `shard` restored a session subscribed to `filter` (as subscribed, with any
    /// `$share/` prefix): route matching messages there.
    pub fn restore_route(&mut self, filter: &str, shard: ShardId) {
        if shard == self.shard {
            return;
        }
        let Some(f) = Utf8Str::from_string(filter.to_owned()) else {
            return;
        };
        let (plain, group) = crate::subscribe::parts(&f);
        self.apply_route(&plain, group.as_ref(), shard, 1);
    }
}
