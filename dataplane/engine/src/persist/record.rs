//! What a shard writes to its WAL: one record per change of durable state, and the bytes of
//! each record's payload (the WAL frames them: `tachyon-wal`).
//!
//! Times are Unix milliseconds (engine time is per process). A message travels as a v5
//! PUBLISH frame built by the codec, so every forwarded property survives without a second
//! serializer; decoding goes through the same fuzzed decoder. Payload layout: fields in the
//! order declared, integers little-endian, strings and byte strings with a u32 length.

use bytes::{BufMut, Bytes, BytesMut};
use tachyon_codec::{decode, encode, Packet, ProtocolVersion, Publish};

/// One change of a shard's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session was created, or its parameters changed on a reconnect.
    /// A persistent session was created, moved here, or changed its parameters. `gen` grows
    /// with every incarnation and move of a client's session: when logs of several shards
    /// hold one client, the highest generation is the session (see `image::merge`). A new
    /// generation starts the session afresh: its state follows as records.
    SessionOpen {
        client: String,
        gen: u64,
        v5: bool,
        expiry_secs: u32,
    },
    /// A session ended (expired, replaced by a clean start, closed with expiry 0): every
    /// generation up to `gen`.
    SessionEnd {
        client: String,
        gen: u64,
    },
    Subscribe {
        client: String,
        filter: String,
        options: u8,
        id: Option<u32>,
    },
    Unsubscribe {
        client: String,
        filter: String,
    },
    /// A message for a session (queued, or about to be sent). `delivery` is unique in the
    /// shard's log; later records name it.
    Enqueue {
        client: String,
        delivery: u64,
        entry: Entry,
    },
    /// A queued delivery went out as QoS 1/2 with this Packet Identifier.
    Sent {
        client: String,
        delivery: u64,
        packet_id: u16,
    },
    /// QoS 2: PUBREC received, PUBREL sent.
    Released {
        client: String,
        packet_id: u16,
    },
    /// PUBACK or PUBCOMP received: the flow is over.
    Completed {
        client: String,
        packet_id: u16,
    },
    /// A delivery left without completing (expired, dropped, moved to another member).
    Dropped {
        client: String,
        delivery: u64,
    },
    /// Inbound QoS 2: this Packet Identifier was received (PUBREC follows once the message
    /// is durable wherever it goes); a retransmission is not forwarded again until PUBREL.
    /// `receipt` names the message in the subscribers' logs; `entry` is the message itself
    /// while its routing is not confirmed (`Qos2Routed`): after a crash in between, recovery
    /// gives it to the subscribers that do not have it yet (`image::merge`). Snapshots
    /// write routed ones with receipt 0 and no entry.
    Qos2Received {
        client: String,
        packet_id: u16,
        receipt: u64,
        entry: Option<Entry>,
    },
    /// Every shard that took the message of an inbound QoS 2 identifier has it durably.
    Qos2Routed {
        client: String,
        packet_id: u16,
    },
    /// A delivery carrying this receipt completed for the session (written by snapshots,
    /// for a while: see `Qos2Received`).
    ReceiptDone {
        client: String,
        receipt: u64,
    },
    Qos2Released {
        client: String,
        packet_id: u16,
    },
    RetainSet {
        entry: Entry,
    },
    RetainClear {
        topic: String,
    },
    /// A Will Message waits for its delay or the end of the session.
    WillPending {
        client: String,
        due_unix_ms: u64,
        entry: Entry,
    },
    WillDone {
        client: String,
    },
    /// A snapshot follows: the shard's whole durable state as records, up to `SnapshotEnd`.
    /// Replay starts from the last complete snapshot; an incomplete one is ignored.
    SnapshotBegin,
    SnapshotEnd,
}

/// A message as stored: the PUBLISH frame (topic, payload, QoS, retain, properties) plus what
/// the frame does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A v5 PUBLISH frame (no Packet Identifier).
    pub publish: Bytes,
    /// QoS to deliver at (min of message and subscription).
    pub qos: u8,
    pub sub_ids: Vec<u32>,
    pub expires_unix_ms: Option<u64>,
    /// Publisher's client id, for No Local.
    pub origin: Option<String>,
    /// The QoS 2 receipt of the message (`Record::Qos2Received`), 0 when none.
    pub receipt: u64,
}

impl Entry {
    /// Builds an entry from a PUBLISH whose topic is resolved (its Packet Identifier, Topic
    /// Alias and Subscription Identifiers are per transmission and not kept). `None` if the
    /// PUBLISH cannot be encoded (never a panic on what a client sent).
    pub fn new(
        publish: &Publish,
        qos: u8,
        sub_ids: Vec<u32>,
        expires_unix_ms: Option<u64>,
        origin: Option<String>,
    ) -> Option<Entry> {
        let mut p = publish.clone();
        p.packet_id = None;
        p.dup = false;
        p.properties.topic_alias = None;
        p.properties.subscription_identifiers.clear();
        if p.qos != tachyon_codec::QoS::AtMostOnce {
            // The frame keeps the message's QoS; a QoS 1/2 frame needs an identifier to encode.
            p.packet_id = tachyon_codec::PacketId::new(1);
        }
        let mut out = BytesMut::new();
        encode(&Packet::Publish(p), ProtocolVersion::V5, &mut out).ok()?;
        Some(Entry {
            publish: out.freeze(),
            qos,
            sub_ids,
            expires_unix_ms,
            origin,
            receipt: 0,
        })
    }

    /// The stored PUBLISH, decoded.
    pub fn decode_publish(&self) -> Option<Publish> {
        let mut b = BytesMut::from(&self.publish[..]);
        match decode(&mut b, Some(ProtocolVersion::V5), usize::MAX) {
            Ok(Some(Packet::Publish(p))) if b.is_empty() => Some(p),
            _ => None,
        }
    }
}

/// Record kinds as written (one byte in the WAL frame).
pub mod kind {
    pub const SESSION_OPEN: u8 = 1;
    pub const SESSION_END: u8 = 2;
    pub const SUBSCRIBE: u8 = 3;
    pub const UNSUBSCRIBE: u8 = 4;
    pub const ENQUEUE: u8 = 5;
    pub const SENT: u8 = 6;
    pub const RELEASED: u8 = 7;
    pub const COMPLETED: u8 = 8;
    pub const DROPPED: u8 = 9;
    pub const QOS2_RECEIVED: u8 = 10;
    pub const QOS2_RELEASED: u8 = 11;
    pub const RETAIN_SET: u8 = 12;
    pub const RETAIN_CLEAR: u8 = 13;
    pub const WILL_PENDING: u8 = 14;
    pub const WILL_DONE: u8 = 15;
    pub const SNAPSHOT_BEGIN: u8 = 16;
    pub const SNAPSHOT_END: u8 = 17;
    pub const QOS2_ROUTED: u8 = 18;
    pub const RECEIPT_DONE: u8 = 19;
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(crate) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

pub(crate) fn put_opt_u32(out: &mut BytesMut, v: Option<u32>) {
    match v {
        Some(v) => {
            out.put_u8(1);
            out.put_u32_le(v);
        }
        None => out.put_u8(0),
    }
}

fn put_entry(out: &mut BytesMut, e: &Entry) {
    put_bytes(out, &e.publish);
    out.put_u8(e.qos);
    out.put_u32_le(e.sub_ids.len() as u32);
    for id in &e.sub_ids {
        out.put_u32_le(*id);
    }
    match e.expires_unix_ms {
        Some(t) => {
            out.put_u8(1);
            out.put_u64_le(t);
        }
        None => out.put_u8(0),
    }
    match &e.origin {
        Some(o) => {
            out.put_u8(1);
            put_str(out, o);
        }
        None => out.put_u8(0),
    }
    out.put_u64_le(e.receipt);
}

impl Record {
    /// The kind byte of this record.
    pub fn kind(&self) -> u8 {
        use kind::*;
        match self {
            Record::SessionOpen { .. } => SESSION_OPEN,
            Record::SessionEnd { .. } => SESSION_END,
            Record::Subscribe { .. } => SUBSCRIBE,
            Record::Unsubscribe { .. } => UNSUBSCRIBE,
            Record::Enqueue { .. } => ENQUEUE,
            Record::Sent { .. } => SENT,
            Record::Released { .. } => RELEASED,
            Record::Completed { .. } => COMPLETED,
            Record::Dropped { .. } => DROPPED,
            Record::Qos2Received { .. } => QOS2_RECEIVED,
            Record::Qos2Routed { .. } => QOS2_ROUTED,
            Record::ReceiptDone { .. } => RECEIPT_DONE,
            Record::Qos2Released { .. } => QOS2_RELEASED,
            Record::RetainSet { .. } => RETAIN_SET,
            Record::RetainClear { .. } => RETAIN_CLEAR,
            Record::WillPending { .. } => WILL_PENDING,
            Record::WillDone { .. } => WILL_DONE,
            Record::SnapshotBegin => SNAPSHOT_BEGIN,
            Record::SnapshotEnd => SNAPSHOT_END,
        }
    }

    /// Appends the payload bytes of this record to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Record::SessionOpen {
                client,
                gen,
                v5,
                expiry_secs,
            } => {
                put_str(out, client);
                out.put_u64_le(*gen);
                out.put_u8(u8::from(*v5));
                out.put_u32_le(*expiry_secs);
            }
            Record::SessionEnd { client, gen } => {
                put_str(out, client);
                out.put_u64_le(*gen);
            }
            Record::WillDone { client } => put_str(out, client),
            Record::SnapshotBegin | Record::SnapshotEnd => {}
            Record::Subscribe {
                client,
                filter,
                options,
                id,
            } => {
                put_str(out, client);
                put_str(out, filter);
                out.put_u8(*options);
                put_opt_u32(out, *id);
            }
            Record::Unsubscribe { client, filter } => {
                put_str(out, client);
                put_str(out, filter);
            }
            Record::Enqueue {
                client,
                delivery,
                entry,
            } => {
                put_str(out, client);
                out.put_u64_le(*delivery);
                put_entry(out, entry);
            }
            Record::Sent {
                client,
                delivery,
                packet_id,
            } => {
                put_str(out, client);
                out.put_u64_le(*delivery);
                out.put_u16_le(*packet_id);
            }
            Record::Released { client, packet_id }
            | Record::Completed { client, packet_id }
            | Record::Qos2Routed { client, packet_id }
            | Record::Qos2Released { client, packet_id } => {
                put_str(out, client);
                out.put_u16_le(*packet_id);
            }
            Record::Dropped { client, delivery } => {
                put_str(out, client);
                out.put_u64_le(*delivery);
            }
            Record::Qos2Received {
                client,
                packet_id,
                receipt,
                entry,
            } => {
                put_str(out, client);
                out.put_u16_le(*packet_id);
                out.put_u64_le(*receipt);
                match entry {
                    Some(e) => {
                        out.put_u8(1);
                        put_entry(out, e);
                    }
                    None => out.put_u8(0),
                }
            }
            Record::ReceiptDone { client, receipt } => {
                put_str(out, client);
                out.put_u64_le(*receipt);
            }
            Record::RetainSet { entry } => put_entry(out, entry),
            Record::RetainClear { topic } => put_str(out, topic),
            Record::WillPending {
                client,
                due_unix_ms,
                entry,
            } => {
                put_str(out, client);
                out.put_u64_le(*due_unix_ms);
                put_entry(out, entry);
            }
        }
    }

    /// Reads a record back. `None` for an unknown kind or malformed bytes (never a panic; no
    /// allocation larger than the input).
    pub fn decode(kind: u8, payload: &[u8]) -> Option<Record> {
        let mut r = Reader { b: payload };
        let rec = match kind {
            kind::SESSION_OPEN => Record::SessionOpen {
                client: r.string()?,
                gen: r.u64()?,
                v5: r.u8()? != 0,
                expiry_secs: r.u32()?,
            },
            kind::SESSION_END => Record::SessionEnd {
                client: r.string()?,
                gen: r.u64()?,
            },
            kind::SUBSCRIBE => Record::Subscribe {
                client: r.string()?,
                filter: r.string()?,
                options: r.u8()?,
                id: r.opt_u32()?,
            },
            kind::UNSUBSCRIBE => Record::Unsubscribe {
                client: r.string()?,
                filter: r.string()?,
            },
            kind::ENQUEUE => Record::Enqueue {
                client: r.string()?,
                delivery: r.u64()?,
                entry: r.entry()?,
            },
            kind::SENT => Record::Sent {
                client: r.string()?,
                delivery: r.u64()?,
                packet_id: r.u16()?,
            },
            kind::RELEASED => Record::Released {
                client: r.string()?,
                packet_id: r.u16()?,
            },
            kind::COMPLETED => Record::Completed {
                client: r.string()?,
                packet_id: r.u16()?,
            },
            kind::DROPPED => Record::Dropped {
                client: r.string()?,
                delivery: r.u64()?,
            },
            kind::QOS2_RECEIVED => Record::Qos2Received {
                client: r.string()?,
                packet_id: r.u16()?,
                receipt: r.u64()?,
                entry: match r.u8()? {
                    0 => None,
                    1 => Some(r.entry()?),
                    _ => return None,
                },
            },
            kind::QOS2_ROUTED => Record::Qos2Routed {
                client: r.string()?,
                packet_id: r.u16()?,
            },
            kind::RECEIPT_DONE => Record::ReceiptDone {
                client: r.string()?,
                receipt: r.u64()?,
            },
            kind::QOS2_RELEASED => Record::Qos2Released {
                client: r.string()?,
                packet_id: r.u16()?,
            },
            kind::RETAIN_SET => Record::RetainSet { entry: r.entry()? },
            kind::RETAIN_CLEAR => Record::RetainClear { topic: r.string()? },
            kind::WILL_PENDING => Record::WillPending {
                client: r.string()?,
                due_unix_ms: r.u64()?,
                entry: r.entry()?,
            },
            kind::WILL_DONE => Record::WillDone {
                client: r.string()?,
            },
            kind::SNAPSHOT_BEGIN => Record::SnapshotBegin,
            kind::SNAPSHOT_END => Record::SnapshotEnd,
            _ => return None,
        };
        r.b.is_empty().then_some(rec)
    }
}

/// Bounds-checked reads over a record payload.
struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
    fn opt_u32(&mut self) -> Option<Option<u32>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.u32().map(Some),
            _ => None,
        }
    }
    fn entry(&mut self) -> Option<Entry> {
        let publish = Bytes::copy_from_slice(self.bytes()?);
        let qos = self.u8()?;
        let n = self.u32()? as usize;
        // Each id takes 4 bytes: a count larger than what is left is malformed (and must not
        // size an allocation).
        if n > self.b.len() / 4 {
            return None;
        }
        let mut sub_ids = Vec::with_capacity(n);
        for _ in 0..n {
            sub_ids.push(self.u32()?);
        }
        let expires_unix_ms = match self.u8()? {
            0 => None,
            1 => Some(self.u64()?),
            _ => return None,
        };
        let origin = match self.u8()? {
            0 => None,
            1 => Some(self.string()?),
            _ => return None,
        };
        let receipt = self.u64()?;
        Some(Entry {
            publish,
            qos,
            sub_ids,
            expires_unix_ms,
            origin,
            receipt,
        })
    }
}
