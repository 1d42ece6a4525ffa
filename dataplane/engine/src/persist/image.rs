//! The durable state of one shard, as recovery rebuilds it: replaying a snapshot and the log
//! tail into an [`Image`] gives the sessions (with subscriptions, queued and inflight messages
//! and their QoS 2 state), the inbound QoS 2 identifiers awaiting PUBREL, pending wills and
//! the retained messages the shard owns. A snapshot is an image written back as records.
//!
//! Replay never fails: a record that names a session or delivery the image does not have is
//! counted and skipped (it can follow a snapshot that already dropped what it refers to).

use std::collections::{BTreeMap, BTreeSet};

use super::record::{Entry, Record};

/// A message held for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryImage {
    pub entry: Entry,
    /// Set once sent at QoS 1/2: the Packet Identifier it went out with.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received and PUBREL sent (resend PUBREL, not the PUBLISH).
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionImage {
    /// Generation (see `Record::SessionOpen`).
    pub gen: u64,
    pub v5: bool,
    pub expiry_secs: u32,
    /// filter -> (packed subscription options, subscription identifier)
    pub subs: BTreeMap<String, (u8, Option<u32>)>,
    /// Deliveries in the order they were enqueued (their ids grow).
    pub deliveries: BTreeMap<u64, DeliveryImage>,
    /// Packet Identifier -> delivery, for those sent and not completed.
    pub by_packet_id: BTreeMap<u16, u64>,
    /// Inbound QoS 2 identifiers awaiting PUBREL: (receipt, the message while its routing
    /// is not confirmed).
    pub qos2_incoming: BTreeMap<u16, (u64, Option<Entry>)>,
    /// Receipts of deliveries this session completed (see `Record::Qos2Received`).
    pub done_receipts: BTreeSet<u64>,
    pub will: Option<(u64, Entry)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub sessions: BTreeMap<String, SessionImage>,
    /// Sessions that ended, with the generation that ended: an older generation of the same
    /// client in another shard's log is not brought back.
    pub ended: BTreeMap<String, u64>,
    /// topic -> retained message
    pub retained: BTreeMap<String, Entry>,
    /// Records that referred to something the image did not hold.
    pub skipped: u64,
}

impl Image {
    /// Applies one record.
    pub fn apply(&mut self, r: &Record) {
        let ok = match r {
            Record::SessionOpen {
                client,
                gen,
                v5,
                expiry_secs,
            } => {
                let s = self.sessions.entry(client.clone()).or_default();
                if s.gen != *gen {
                    // A new incarnation, or the session moved back here: its state follows.
                    *s = SessionImage {
                        gen: *gen,
                        ..SessionImage::default()
                    };
                }
                s.v5 = *v5;
                s.expiry_secs = *expiry_secs;
                true
            }
            Record::SessionEnd { client, gen } => {
                let e = self.ended.entry(client.clone()).or_insert(*gen);
                *e = (*e).max(*gen);
                if self.sessions.get(client).is_some_and(|s| s.gen <= *gen) {
                    self.sessions.remove(client);
                }
                true
            }
            Record::SnapshotBegin | Record::SnapshotEnd => true,
            Record::Subscribe {
                client,
                filter,
                options,
                id,
            } => self
                .session(client)
                .map(|s| s.subs.insert(filter.clone(), (*options, *id)))
                .is_some(),
            Record::Unsubscribe { client, filter } => self
                .session(client)
                .is_some_and(|s| s.subs.remove(filter).is_some()),
            Record::Enqueue {
                client,
                delivery,
                entry,
            } => self
                .session(client)
                .map(|s| {
                    s.deliveries.insert(
                        *delivery,
                        DeliveryImage {
                            entry: entry.clone(),
                            packet_id: None,
                            released: false,
                        },
                    )
                })
                .is_some(),
            Record::Sent {
                client,
                delivery,
                packet_id,
            } => self
                .session(client)
                .is_some_and(|s| match s.deliveries.get_mut(delivery) {
                    Some(d) => {
                        if let Some(old) = d.packet_id.replace(*packet_id) {
                            s.by_packet_id.remove(&old);
                        }
                        s.by_packet_id.insert(*packet_id, *delivery);
                        true
                    }
                    None => false,
                }),
            Record::Released { client, packet_id } => self.session(client).is_some_and(|s| match s
                .by_packet_id
                .get(packet_id)
                .and_then(|d| s.deliveries.get_mut(d))
            {
                Some(d) => {
                    d.released = true;
                    true
                }
                None => false,
            }),
            Record::Completed { client, packet_id } => {
                self.session(client)
                    .is_some_and(|s| match s.by_packet_id.remove(packet_id) {
                        Some(d) => match s.deliveries.remove(&d) {
                            Some(d) => {
                                if d.entry.receipt != 0 {
                                    s.done_receipts.insert(d.entry.receipt);
                                }
                                true
                            }
                            None => false,
                        },
                        None => false,
                    })
            }
            Record::Dropped { client, delivery } => {
                self.session(client)
                    .is_some_and(|s| match s.deliveries.remove(delivery) {
                        Some(d) => {
                            if let Some(pid) = d.packet_id {
                                s.by_packet_id.remove(&pid);
                            }
                            if d.entry.receipt != 0 {
                                s.done_receipts.insert(d.entry.receipt);
                            }
                            true
                        }
                        None => false,
                    })
            }
            Record::Qos2Received {
                client,
                packet_id,
                receipt,
                entry,
            } => self
                .session(client)
                .map(|s| {
                    s.qos2_incoming
                        .insert(*packet_id, (*receipt, entry.clone()))
                })
                .is_some(),
            Record::Qos2Routed { client, packet_id } => {
                self.session(client)
                    .is_some_and(|s| match s.qos2_incoming.get_mut(packet_id) {
                        Some(q) => {
                            q.1 = None;
                            true
                        }
                        None => false,
                    })
            }
            Record::ReceiptDone { client, receipt } => self
                .session(client)
                .map(|s| s.done_receipts.insert(*receipt))
                .is_some(),
            Record::Qos2Released { client, packet_id } => self
                .session(client)
                .is_some_and(|s| s.qos2_incoming.remove(packet_id).is_some()),
            Record::RetainSet { entry } => match entry.decode_publish() {
                Some(p) => {
                    self.retained
                        .insert(p.topic.as_str().to_owned(), entry.clone());
                    true
                }
                None => false,
            },
            Record::RetainClear { topic } => self.retained.remove(topic).is_some(),
            Record::WillPending {
                client,
                due_unix_ms,
                entry,
            } => self
                .session(client)
                .map(|s| s.will = Some((*due_unix_ms, entry.clone())))
                .is_some(),
            Record::WillDone { client } => self
                .session(client)
                .is_some_and(|s| s.will.take().is_some()),
        };
        if !ok {
            self.skipped += 1;
        }
    }

    fn session(&mut self, client: &str) -> Option<&mut SessionImage> {
        self.sessions.get_mut(client)
    }

    /// The image as records: replaying them into an empty image gives this image back.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        // Ends first: a session in the image is a later generation than its client's end.
        for (client, gen) in &self.ended {
            out.push(Record::SessionEnd {
                client: client.clone(),
                gen: *gen,
            });
        }
        for (client, s) in &self.sessions {
            out.push(Record::SessionOpen {
                client: client.clone(),
                gen: s.gen,
                v5: s.v5,
                expiry_secs: s.expiry_secs,
            });
            for (filter, (options, id)) in &s.subs {
                out.push(Record::Subscribe {
                    client: client.clone(),
                    filter: filter.clone(),
                    options: *options,
                    id: *id,
                });
            }
            for (delivery, d) in &s.deliveries {
                out.push(Record::Enqueue {
                    client: client.clone(),
                    delivery: *delivery,
                    entry: d.entry.clone(),
                });
                if let Some(packet_id) = d.packet_id {
                    out.push(Record::Sent {
                        client: client.clone(),
                        delivery: *delivery,
                        packet_id,
                    });
                    if d.released {
                        out.push(Record::Released {
                            client: client.clone(),
                            packet_id,
                        });
                    }
                }
            }
            for (packet_id, (receipt, entry)) in &s.qos2_incoming {
                out.push(Record::Qos2Received {
                    client: client.clone(),
                    packet_id: *packet_id,
                    receipt: *receipt,
                    entry: entry.clone(),
                });
            }
            for receipt in &s.done_receipts {
                out.push(Record::ReceiptDone {
                    client: client.clone(),
                    receipt: *receipt,
                });
            }
            if let Some((due_unix_ms, entry)) = &s.will {
                out.push(Record::WillPending {
                    client: client.clone(),
                    due_unix_ms: *due_unix_ms,
                    entry: entry.clone(),
                });
            }
        }
        for entry in self.retained.values() {
            out.push(Record::RetainSet {
                entry: entry.clone(),
            });
        }
        out
    }
}

/// Replays a shard's log: records apply to the image, except that a snapshot
/// (`SnapshotBegin` .. `SnapshotEnd`) replaces it once complete; a snapshot cut short by a
/// crash is ignored (the records before it still hold).
#[derive(Debug, Default)]
pub struct Replay {
    image: Image,
    staged: Option<Image>,
    /// Snapshots applied, and records of an incomplete one ignored.
    pub snapshots: u64,
    pub incomplete: u64,
}

impl Replay {
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::SnapshotBegin => {
                if let Some(s) = self.staged.take() {
                    self.incomplete += s.sessions.len() as u64 + s.retained.len() as u64;
                }
                self.staged = Some(Image::default());
            }
            Record::SnapshotEnd => {
                if let Some(s) = self.staged.take() {
                    self.image = s;
                    self.snapshots += 1;
                }
            }
            _ => match &mut self.staged {
                Some(s) => s.apply(r),
                None => self.image.apply(r),
            },
        }
    }

    pub fn finish(mut self) -> Image {
        if let Some(s) = self.staged.take() {
            self.incomplete += s.sessions.len() as u64 + s.retained.len() as u64;
        }
        self.image
    }
}

/// Combines the images of several shard logs (a session can appear in more than one: it
/// moved between shards, and the old owner's log still holds the older generation until
/// its next snapshot). Per client the highest generation wins, and a session whose highest
/// generation ended is gone. Retained messages are the union (a topic is logged by its home
/// shard; after a change of the shard count the later log's copy wins).
pub fn merge(images: Vec<Image>) -> Image {
    let mut out = Image::default();
    for img in images {
        out.skipped += img.skipped;
        for (client, gen) in img.ended {
            let e = out.ended.entry(client).or_insert(gen);
            *e = (*e).max(gen);
        }
        for (client, s) in img.sessions {
            match out.sessions.get(&client) {
                Some(have) if have.gen >= s.gen => {}
                _ => {
                    out.sessions.insert(client, s);
                }
            }
        }
        out.retained.extend(img.retained);
    }
    let ended = &out.ended;
    out.sessions
        .retain(|client, s| ended.get(client).is_none_or(|&g| s.gen > g));
    reroute(&mut out);
    out
}

/// Inbound QoS 2 messages whose routing was not confirmed before the crash go to every
/// persistent session that subscribes to their topic and has neither a delivery nor a
/// completion of their receipt: each gets them once (the publisher's retransmission is
/// recognised by its identifier and not routed again). Shared subscriptions are not
/// considered (a message for a group stays with the member that logged it, if any).
fn reroute(img: &mut Image) {
    let mut pending: Vec<(String, Entry)> = Vec::new();
    for (client, s) in img.sessions.iter_mut() {
        for (receipt, entry) in s.qos2_incoming.values_mut() {
            if let Some(mut e) = entry.take() {
                e.receipt = *receipt;
                pending.push((client.clone(), e));
            }
        }
    }
    // Receipts grow with arrival on each shard: one publisher's messages keep their order.
    pending.sort_by_key(|(_, e)| e.receipt);
    for (publisher, e) in pending {
        let Some(p) = e.decode_publish() else {
            continue;
        };
        let topic = p.topic.as_bytes();
        for (client, s) in img.sessions.iter_mut() {
            let has = s.done_receipts.contains(&e.receipt)
                || s.deliveries.values().any(|d| d.entry.receipt == e.receipt);
            if has {
                continue;
            }
            let mut qos: Option<u8> = None;
            let mut sub_ids = Vec::new();
            for (filter, (options, id)) in &s.subs {
                let no_local = options & 4 != 0;
                if filter.starts_with("$share/")
                    || (no_local && *client == publisher)
                    || !crate::topic::filter_matches(filter.as_bytes(), topic)
                {
                    continue;
                }
                qos = Some(qos.unwrap_or(0).max(options & 3));
                sub_ids.extend(*id);
            }
            let Some(q) = qos else { continue };
            let id = s.deliveries.keys().next_back().map_or(1, |k| k + 1);
            let mut entry = e.clone();
            entry.qos = q.min(p.qos as u8);
            entry.sub_ids = sub_ids;
            if entry.qos == 0 {
                continue;
            }
            s.deliveries.insert(
                id,
                DeliveryImage {
                    entry,
                    packet_id: None,
                    released: false,
                },
            );
        }
    }
}
