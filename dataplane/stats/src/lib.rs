//! # tachyon-stats — the shared statistics region
//!
//! The dataplane's shards publish their counters and latency histograms into one
//! memory-mapped file; the control plane maps the same file and reads them for `/metrics`,
//! the admin API and `$SYS`. Each shard owns one block and is its only writer: it stores
//! whole words with relaxed atomic stores, a few times a second, off its fast path. Readers
//! load words the same way. No lock, no syscall, nothing shared between shards.
//!
//! ```text
//!   [ header: magic, version, shard count, layout, pid, start time ]   512 bytes
//!   [ shard 0: heartbeat, progress, busy | counters (COUNTERS) | histograms (HISTOGRAMS) ]
//!   [ shard 1: ... ]
//! ```
//!
//! A reader sees each word as written at some recent instant; words of one block may come
//! from two consecutive publications (counters are monotonic, so sums stay meaningful).

pub mod histogram;
mod region;

pub use histogram::Histogram;
pub use region::{monotonic_ms, Busy, BusyMarker, Region, RegionError, ShardSlot, ShardSnapshot};

/// Whether a counter only grows (Prometheus `counter`) or goes up and down (`gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One word of a shard's block: its metric name (without the `tachyon_` prefix), its kind,
/// and its help text.
#[derive(Debug)]
pub struct CounterInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// A Prometheus label `key="value"` that distinguishes words sharing a name.
    pub label: Option<(&'static str, &'static str)>,
}

macro_rules! counters {
    ($( $id:ident = $name:literal $(($k:literal = $v:literal))?, $kind:ident, $help:literal; )*) => {
        /// The words of a shard's block, in order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($id),* }
        /// Name, kind and help of each [`Counter`], indexed by it.
        pub const COUNTERS: &[CounterInfo] = &[
            $(CounterInfo { name: $name, kind: Kind::$kind, help: $help, label: counters!(@label $($k, $v)?) }),*
        ];
    };
    (@label) => { None };
    (@label $k:literal, $v:literal) => { Some(($k, $v)) };
}

counters! {
    Connections = "connections", Gauge, "Open network connections (MQTT connected or not)";
    ClientsConnected = "clients_connected", Gauge, "Clients with an accepted CONNECT";
    Sessions = "sessions", Gauge, "Sessions held, connected or offline";
    Subscriptions = "subscriptions", Gauge, "Subscriptions of the sessions held";
    Retained = "retained_messages", Gauge, "Retained messages (each shard holds a replica; read shard 0)";
    QueuedMessages = "queued_messages", Gauge, "Messages waiting in session queues (offline or beyond the inflight window)";
    InflightMessages = "inflight_messages", Gauge, "Outbound QoS 1/2 messages sent and not yet acknowledged";
    ConnectionsOpened = "connections_opened_total", Counter, "Network connections accepted";
    ConnectionsClosed = "connections_closed_total", Counter, "Network connections closed";
    ConnectsRefused = "connects_refused_total", Counter, "CONNECTs refused (CONNACK with an error)";
    MsgsInQos0 = "messages_received_total" ("qos" = "0"), Counter, "PUBLISH packets received from clients";
    MsgsInQos1 = "messages_received_total" ("qos" = "1"), Counter, "PUBLISH packets received from clients";
    MsgsInQos2 = "messages_received_total" ("qos" = "2"), Counter, "PUBLISH packets received from clients";
    MsgsOutQos0 = "messages_sent_total" ("qos" = "0"), Counter, "PUBLISH packets sent to clients";
    MsgsOutQos1 = "messages_sent_total" ("qos" = "1"), Counter, "PUBLISH packets sent to clients";
    MsgsOutQos2 = "messages_sent_total" ("qos" = "2"), Counter, "PUBLISH packets sent to clients";
    PayloadInQos0 = "payload_bytes_received_total" ("qos" = "0"), Counter, "Application payload bytes received in PUBLISH packets";
    PayloadInQos1 = "payload_bytes_received_total" ("qos" = "1"), Counter, "Application payload bytes received in PUBLISH packets";
    PayloadInQos2 = "payload_bytes_received_total" ("qos" = "2"), Counter, "Application payload bytes received in PUBLISH packets";
    PayloadOutQos0 = "payload_bytes_sent_total" ("qos" = "0"), Counter, "Application payload bytes sent in PUBLISH packets";
    PayloadOutQos1 = "payload_bytes_sent_total" ("qos" = "1"), Counter, "Application payload bytes sent in PUBLISH packets";
    PayloadOutQos2 = "payload_bytes_sent_total" ("qos" = "2"), Counter, "Application payload bytes sent in PUBLISH packets";
    BytesIn = "bytes_received_total", Counter, "MQTT bytes received (all packets)";
    BytesOut = "bytes_sent_total", Counter, "MQTT bytes queued for sending (all packets)";
    DropQos0Slow = "messages_dropped_total" ("reason" = "qos0_slow_consumer"), Counter, "Messages not delivered, by reason";
    DropQueueFull = "messages_dropped_total" ("reason" = "queue_full"), Counter, "Messages not delivered, by reason";
    DropExpired = "messages_dropped_total" ("reason" = "expired"), Counter, "Messages not delivered, by reason";
    DropTooLarge = "messages_dropped_total" ("reason" = "too_large_for_client"), Counter, "Messages not delivered, by reason";
    DropQos0Offline = "messages_dropped_total" ("reason" = "qos0_offline"), Counter, "Messages not delivered, by reason";
    DropSharedNoMember = "messages_dropped_total" ("reason" = "shared_no_member"), Counter, "Messages not delivered, by reason";
    DropForwardNoSession = "messages_dropped_total" ("reason" = "forward_no_session"), Counter, "Messages not delivered, by reason";
    RefusedLogFailed = "messages_dropped_total" ("reason" = "log_failed"), Counter, "Messages not delivered, by reason";
    ClosedSlowConsumer = "slow_consumers_closed_total", Counter, "Connections closed because their unread output passed the bound";
    RetainedRefused = "retained_refused_total", Counter, "Retained messages not stored: the store was full";
    WillsPublished = "wills_published_total", Counter, "Will Messages published";
    SessionsExpired = "sessions_expired_total", Counter, "Sessions ended by their expiry interval";
    Takeovers = "session_takeovers_total", Counter, "Sessions taken over by a new connection";
    Violations = "protocol_violations_total", Counter, "Connections closed for breaking the protocol";
    UnknownIdPubAck = "unknown_packet_id_acks_total" ("packet" = "puback"), Counter, "Acknowledgements naming a packet identifier no flow uses (a confused client), by packet";
    UnknownIdPubRec = "unknown_packet_id_acks_total" ("packet" = "pubrec"), Counter, "Acknowledgements naming a packet identifier no flow uses (a confused client), by packet";
    UnknownIdPubRel = "unknown_packet_id_acks_total" ("packet" = "pubrel"), Counter, "Acknowledgements naming a packet identifier no flow uses (a confused client), by packet";
    UnknownIdPubComp = "unknown_packet_id_acks_total" ("packet" = "pubcomp"), Counter, "Acknowledgements naming a packet identifier no flow uses (a confused client), by packet";
    LogFailures = "wal_failures_total", Counter, "Times the WAL could not be written (disk full, I/O error)";
    WalCommits = "wal_commits_total", Counter, "WAL group commits";
    WalBytes = "wal_bytes_total", Counter, "Bytes appended to the WAL";
}

/// The latency histograms of a shard's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Hist {
    /// From the pass that read a PUBLISH to the pass that wrote it to a subscriber.
    BrokerHop,
    /// One WAL commit (msync under `sync`).
    WalCommit,
}

/// Name and help of each [`Hist`], indexed by it.
pub const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "broker_hop_latency_microseconds",
        "Time from reading a PUBLISH to writing it to a subscriber (includes time queued for offline or slow subscribers)",
    ),
    (
        "wal_commit_latency_microseconds",
        "Duration of one WAL group commit (msync under durability.sync = \"sync\")",
    ),
];
