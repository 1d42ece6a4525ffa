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
    pub v5: bool,
    pub expiry_secs: u32,
    /// filter -> (packed subscription options, subscription identifier)
    pub subs: BTreeMap<String, (u8, Option<u32>)>,
    /// Deliveries in the order they were enqueued (their ids grow).
    pub deliveries: BTreeMap<u64, DeliveryImage>,
    /// Packet Identifier -> delivery, for those sent and not completed.
    pub by_packet_id: BTreeMap<u16, u64>,
    pub qos2_incoming: BTreeSet<u16>,
    pub will: Option<(u64, Entry)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub sessions: BTreeMap<String, SessionImage>,
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
                v5,
                expiry_secs,
            } => {
                let s = self.sessions.entry(client.clone()).or_default();
                s.v5 = *v5;
                s.expiry_secs = *expiry_secs;
                true
            }
            Record::SessionEnd { client } => self.sessions.remove(client).is_some(),
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
                        Some(d) => s.deliveries.remove(&d).is_some(),
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
                            true
                        }
                        None => false,
                    })
            }
            Record::Qos2Received { client, packet_id } => self
                .session(client)
                .map(|s| s.qos2_incoming.insert(*packet_id))
                .is_some(),
            Record::Qos2Released { client, packet_id } => self
                .session(client)
                .is_some_and(|s| s.qos2_incoming.remove(packet_id)),
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
        for (client, s) in &self.sessions {
            out.push(Record::SessionOpen {
                client: client.clone(),
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
            for packet_id in &s.qos2_incoming {
                out.push(Record::Qos2Received {
                    client: client.clone(),
                    packet_id: *packet_id,
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
