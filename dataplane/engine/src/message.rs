//! An Application Message as it travels inside the broker: decoded once, shared by reference
//! between subscribers and shards (`Arc`), payload and strings still slices of the publisher's
//! receive buffer.

use std::sync::LazyLock;

use bytes::Bytes;
use tachyon_codec::{Properties, QoS, Utf8Str};

#[derive(Debug)]
pub struct Message {
    pub topic: Utf8Str,
    pub payload: Bytes,
    /// QoS of the PUBLISH as received; each subscriber gets min(this, its subscription QoS).
    pub qos: QoS,
    pub retain: bool,
    /// Properties forwarded unchanged (v5 [MQTT-3.3.2-4], [MQTT-3.3.2-15] .. [MQTT-3.3.2-18], [MQTT-3.3.2-20]): payload format indicator,
    /// content type, response topic, correlation data, user properties. Topic alias, message
    /// expiry and subscription identifiers are cleared here and set per delivery.
    ///
    /// `None` when there are none, the common case: the message then stays small, and
    /// building it and moving it into its `Arc` copies ~130 bytes instead of ~530 (a tenth
    /// of the shard's time in QoS 0 fan-in was such copies). Read it with `properties()`.
    pub properties: Option<Box<Properties>>,
    /// Absolute expiry in engine milliseconds (from Message Expiry Interval), if any.
    pub expires_at_ms: Option<u64>,
    /// Client Identifier of the publisher, for No Local (v5 [MQTT-3.8.3-3]).
    pub origin: Option<Utf8Str>,
    /// A QoS 2 message of a logged publisher session: its receipt in the logs (see
    /// `persist::record::Record::Qos2Received`); 0 otherwise.
    pub receipt: u64,
    /// Its topic and payload are its own bytes, not slices of a shared receive buffer:
    /// queue compaction (`Engine::compacted`) leaves it as it is.
    pub owned: bool,
    /// The driver's clock (`Engine::set_clock_us`) when it was read; 0 when it did not come
    /// from the network (wills, recovery): the broker-hop histogram skips those.
    pub received_us: u64,
}

impl Message {
    /// The forwarded properties (empty when there are none).
    pub fn properties(&self) -> &Properties {
        static NONE: LazyLock<Properties> = LazyLock::new(Properties::default);
        self.properties.as_deref().unwrap_or(&NONE)
    }

    /// `p` boxed, or `None` when it is empty.
    pub fn boxed_properties(p: Properties) -> Option<Box<Properties>> {
        (!p.is_empty()).then(|| Box::new(p))
    }

    /// True when the Message Expiry Interval has passed (v5 [MQTT-3.3.2-5]).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }

    /// Remaining Message Expiry Interval in seconds to send to a subscriber
    /// (v5 [MQTT-3.3.2-6]); `None` when the message does not expire.
    pub fn remaining_expiry_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms
            .map(|t| (t.saturating_sub(now_ms).div_ceil(1000)).min(u32::MAX as u64) as u32)
    }

    /// An empty message (holds no buffer): what a spare `Arc<Message>` keeps meanwhile.
    pub fn empty() -> Message {
        Message {
            topic: Utf8Str::from_static(""),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            expires_at_ms: None,
            origin: None,
            receipt: 0,
            owned: true,
            received_us: 0,
        }
    }

    /// A copy whose topic and payload own their memory (not slices of a receive buffer).
    pub fn owned_copy(&self) -> Message {
        Message {
            topic: self.topic.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.as_ref().map(|p| Box::new(p.detached())),
            expires_at_ms: self.expires_at_ms,
            origin: self.origin.as_ref().map(Utf8Str::detached),
            receipt: self.receipt,
            owned: true,
            received_us: self.received_us,
        }
    }

    /// One of the broker's own `$SYS/...` messages (published by the control plane, not by
    /// a client): not logged, not counted against `retained_max`.
    pub fn is_broker_sys(&self) -> bool {
        self.origin.is_none() && self.topic.as_bytes().starts_with(b"$SYS/")
    }

    /// Bytes this message holds that count against queue limits.
    pub fn size(&self) -> usize {
        self.payload.len() + self.topic.len()
    }
}
