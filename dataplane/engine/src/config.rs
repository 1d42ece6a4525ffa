//! Engine limits and policies. Built by the control plane from the TOML configuration; the
//! engine only reads it. Every knob documents the Mosquitto/EMQX equivalent where one exists.

/// What a shard needs to know to make MQTT decisions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest packet (fixed header included) accepted from clients; advertised to v5 clients as
    /// Maximum Packet Size. Larger packets are refused from the fixed header alone.
    pub max_packet_size: u32,
    /// Receive Maximum advertised to v5 clients: QoS 1/2 PUBLISHes a client may have
    /// unacknowledged towards us (v5 3.2.2.3.3).
    pub receive_maximum: u16,
    /// Outbound inflight window: QoS 1/2 messages sent and not yet acknowledged, per client.
    /// v5 clients get min(their Receive Maximum, this); v3.1.1 clients this.
    /// Mosquitto: `max_inflight_messages` (20).
    pub inflight_max: u16,
    /// Topic Alias Maximum advertised to v5 clients (aliases they may use towards us).
    pub topic_alias_maximum: u16,
    /// Keep Alive ceiling; larger client values are replaced by Server Keep Alive (v5).
    /// 0 means no ceiling.
    pub keep_alive_max_secs: u16,
    /// Session Expiry Interval ceiling in seconds for v5 clients; `u32::MAX` means never expire.
    pub session_expiry_max_secs: u32,
    /// policy: session expiry for v3.1.1 clients with Clean Session 0 (the spec keeps them
    /// forever; Mosquitto's `persistent_client_expiration`). `u32::MAX` = never.
    pub session_expiry_v311_secs: u32,
    /// Messages held per session while offline or beyond the inflight window.
    /// Mosquitto: `max_queued_messages` (1000).
    pub queued_messages_max: usize,
    /// Bytes of payload held per session in that queue. Mosquitto: `max_queued_bytes`.
    pub queued_bytes_max: usize,
    /// policy: a connected session whose queue passes `queued_messages_max` (or
    /// `queued_bytes_max`) slows the publishers down instead of losing messages: the shards
    /// stop reading connections that publish until it drains. Up to this many times the
    /// limits are queued meanwhile; a session congested for longer than
    /// `congestion_timeout_ms` (a client that stopped reading) falls back to dropping.
    pub queue_hard_factor: usize,
    pub congestion_timeout_ms: u64,
    /// policy: also queue QoS 0 messages for offline persistent sessions
    /// (Mosquitto `queue_qos0_messages`, default false).
    pub queue_qos0: bool,
    /// Bytes of encoded output allowed to wait on one connection. Beyond it QoS 0 messages to
    /// that connection are dropped and counted.
    pub output_bytes_max: usize,
    /// policy: a connection whose unwritten output exceeds this (a client that sends but
    /// does not read: acks, PINGRESPs, QoS 1/2 deliveries pile up) is closed as a slow
    /// consumer, so one client cannot hold unbounded memory.
    pub output_close_bytes: usize,
    /// policy: sessions (connected or not) one shard holds; `limits.max_sessions` divided by
    /// the shard count. New sessions beyond it are refused.
    pub sessions_max_per_shard: usize,
    /// policy: retained messages the broker keeps; a retained PUBLISH to a new topic beyond
    /// it is forwarded but not retained, and counted.
    pub retained_max: usize,
    /// Topic levels allowed in a Topic Name or Filter (EMQX `max_topic_levels`, 128).
    pub topic_levels_max: usize,
    /// Accept clients without a user name (the authentication hook; real authentication comes
    /// with the security layer).
    pub allow_anonymous: bool,
    /// Prefix of Assigned Client Identifiers; the shard id and a counter follow.
    pub assigned_id_prefix: String,
    /// Unique per broker start (supplied by the driver, which may read an RNG or the clock), so
    /// that Assigned Client Identifiers do not repeat across restarts.
    pub boot_nonce: u64,
    /// Wait this long for a CONNECT after the TCP connection opens.
    pub connect_timeout_ms: u64,
    /// Outbound PUBLISHes whose payload is at most this size are copied into the header chunk;
    /// larger payloads are sent by reference (writev), saving the copy.
    pub inline_payload_max: usize,
    /// Log the durable state (persistent sessions, their QoS 1/2 messages and flows,
    /// retained messages) for the WAL (`persist::emit`).
    pub log_state: bool,
    /// Hold acknowledgements until the driver reports the records they promise durable
    /// (`sync`: on disk; `none`: written into the log's pages, which the driver reports
    /// every loop pass).
    pub acks_wait_for_log: bool,
    /// Unix time in milliseconds at engine time 0 (records store Unix times).
    pub unix_epoch_ms: u64,
    /// Rules of each listener, by the number the driver gives it in `Engine::handle_open`;
    /// a listener without an entry gets `ListenerRules::default()`.
    pub listeners: Vec<ListenerRules>,
}

/// What one listener accepts (`[[listeners]]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerRules {
    /// Protocol versions accepted; another gets CONNACK "unsupported protocol version"
    /// (v3.1.1 return code 0x01, v5 0x84). Mosquitto: `protocol` per listener.
    pub mqtt31: bool,
    pub mqtt311: bool,
    pub mqtt5: bool,
    /// policy: MQTT 3.1 limits Client Identifiers to 23 bytes. Mosquitto, EMQX and VerneMQ
    /// accept longer ones, and so do we unless this is set (CONNACK 0x02 then).
    pub v31_strict_client_id: bool,
}

impl Default for ListenerRules {
    fn default() -> Self {
        ListenerRules {
            mqtt31: true,
            mqtt311: true,
            mqtt5: true,
            v31_strict_client_id: false,
        }
    }
}

impl ListenerRules {
    /// Whether a CONNECT of `version` is accepted here.
    pub fn accepts(&self, version: tachyon_codec::ProtocolVersion) -> bool {
        match version {
            tachyon_codec::ProtocolVersion::V31 => self.mqtt31,
            tachyon_codec::ProtocolVersion::V311 => self.mqtt311,
            tachyon_codec::ProtocolVersion::V5 => self.mqtt5,
        }
    }
}

impl EngineConfig {
    /// The rules of listener `index`.
    pub fn listener(&self, index: u16) -> ListenerRules {
        self.listeners
            .get(usize::from(index))
            .copied()
            .unwrap_or_default()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            inflight_max: 256,
            topic_alias_maximum: 16,
            keep_alive_max_secs: 0,
            session_expiry_max_secs: u32::MAX,
            session_expiry_v311_secs: u32::MAX,
            queued_messages_max: 1000,
            queued_bytes_max: 64 * 1024 * 1024,
            queue_hard_factor: 8,
            congestion_timeout_ms: 2_000,
            queue_qos0: false,
            output_bytes_max: 16 * 1024 * 1024,
            output_close_bytes: 64 * 1024 * 1024,
            topic_levels_max: 128,
            sessions_max_per_shard: 1_000_000,
            retained_max: 1_000_000,
            allow_anonymous: true,
            assigned_id_prefix: "tachyon-".to_string(),
            boot_nonce: 0,
            connect_timeout_ms: 10_000,
            inline_payload_max: 512,
            log_state: false,
            acks_wait_for_log: false,
            unix_epoch_ms: 0,
            listeners: Vec::new(),
        }
    }
}
