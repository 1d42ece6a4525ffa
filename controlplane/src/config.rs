//! The broker configuration file. `configs/dev.toml` is the embedded default.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tachyon_engine::EngineConfig;
use tachyon_net::{IdleStrategy, KernelConfig};

use crate::userspace::{Dataplane, Dpdk, Driver, Tap, Userspace};

/// The configuration used when `tachyon serve` gets no `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/dev.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub shards: Shards,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub sessions: Sessions,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub net: Net,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub durability: Durability,
    #[serde(default)]
    pub dataplane: Dataplane,
    #[serde(default)]
    pub userspace: Userspace,
    #[serde(default)]
    pub tap: Tap,
    #[serde(default)]
    pub dpdk: Dpdk,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub sys: Sys,
    #[serde(default)]
    pub supervisor: Supervisor,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `host:port`, e.g. "127.0.0.1:1883" or "[::1]:1883".
    pub bind: String,
    /// MQTT versions accepted: any of "3.1", "3.1.1", "5" (all by default). A CONNECT of
    /// another version gets CONNACK "unacceptable protocol version".
    #[serde(default = "default_protocols")]
    pub protocols: Vec<String>,
    /// MQTT 3.1 limits client identifiers to 23 bytes; like Mosquitto and EMQX the broker
    /// accepts longer ones unless this is true.
    #[serde(default)]
    pub v31_strict_client_id: bool,
}

/// The protocol names `listeners[].protocols` takes.
const PROTOCOLS: [&str; 3] = ["3.1", "3.1.1", "5"];

fn default_protocols() -> Vec<String> {
    PROTOCOLS.iter().map(|p| p.to_string()).collect()
}

impl Listener {
    /// The engine's rules for this listener.
    pub fn rules(&self) -> tachyon_engine::ListenerRules {
        let has = |name: &str| self.protocols.iter().any(|p| p == name);
        tachyon_engine::ListenerRules {
            mqtt31: has("3.1"),
            mqtt311: has("3.1.1"),
            mqtt5: has("5"),
            v31_strict_client_id: self.v31_strict_client_id,
        }
    }
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        bind: "127.0.0.1:1883".into(),
        protocols: default_protocols(),
        v31_strict_client_id: false,
    }]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shards {
    /// Number of shards (pinned threads); 0 = one per available core.
    pub count: usize,
    /// Pin shard i to `cores[i % len]` (or to core i when `cores` is empty).
    pub pin_cores: bool,
    pub cores: Vec<usize>,
    /// "block" (sleep in epoll_wait), "spin" (busy-poll, lowest latency, 100% CPU) or
    /// "hybrid" (busy-poll for `spin_us` after the last event, then block).
    pub idle: String,
    /// Busy-poll time after the last event with `idle = "hybrid"`, microseconds.
    pub spin_us: u32,
    /// Messages each cross-shard ring holds.
    pub ring_capacity: usize,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            count: 0,
            pin_cores: true,
            cores: Vec::new(),
            idle: "block".into(),
            spin_us: 200,
            ring_capacity: 65536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_packet_size: u32,
    pub receive_maximum: u16,
    pub max_inflight_messages: u16,
    pub topic_alias_maximum: u16,
    pub max_keep_alive: u16,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// A connected subscriber over its queue limits throttles publishers and may queue up to
    /// this many times the limits meanwhile (backpressure instead of loss).
    pub queue_backpressure_factor: usize,
    /// After this long behind, such a subscriber gets the drop policy instead.
    pub congestion_timeout_ms: u64,
    pub queue_qos0_messages: bool,
    pub max_output_bytes: usize,
    pub max_output_bytes_before_close: usize,
    pub max_topic_levels: usize,
    pub connect_timeout_ms: u64,
    /// Sessions the broker holds (connected or offline); enforced per shard as
    /// max_sessions / shards.
    pub max_sessions: usize,
    pub max_retained: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let e = EngineConfig::default();
        Limits {
            max_packet_size: e.max_packet_size,
            receive_maximum: e.receive_maximum,
            max_inflight_messages: e.inflight_max,
            topic_alias_maximum: e.topic_alias_maximum,
            max_keep_alive: e.keep_alive_max_secs,
            max_queued_messages: e.queued_messages_max,
            max_queued_bytes: e.queued_bytes_max,
            queue_backpressure_factor: e.queue_hard_factor,
            congestion_timeout_ms: e.congestion_timeout_ms,
            queue_qos0_messages: e.queue_qos0,
            max_output_bytes: e.output_bytes_max,
            max_output_bytes_before_close: e.output_close_bytes,
            max_topic_levels: e.topic_levels_max,
            connect_timeout_ms: e.connect_timeout_ms,
            max_sessions: e.sessions_max_per_shard,
            max_retained: e.retained_max,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Ceiling on the Session Expiry Interval v5 clients ask for, seconds.
    pub max_expiry_secs: u32,
    /// Expiry of v3.1.1 persistent sessions (Clean Session 0), seconds; 4294967295 = never.
    pub v311_expiry_secs: u32,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            max_expiry_secs: u32::MAX,
            v311_expiry_secs: u32::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub allow_anonymous: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            allow_anonymous: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Net {
    pub listen_backlog: i32,
    /// SO_RCVBUF / SO_SNDBUF for client sockets; 0 keeps the kernel default (autotuning).
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
    pub shutdown_drain_ms: u64,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            listen_backlog: 1024,
            socket_rcvbuf: 0,
            socket_sndbuf: 0,
            shutdown_drain_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: "info", "debug", or per module, e.g. "info,tachyon_engine=debug".
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// `[admin]`: the admin HTTP API and `/metrics` (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub enabled: bool,
    /// `host:port`; loopback by default. Port 0 picks a free port (logged at start).
    pub bind: String,
    /// The bearer token the API requires. Empty: the token is read from `token_file`, or
    /// generated at start and written there.
    pub token: String,
    /// Empty: `<durability.data_dir>/admin.token`.
    pub token_file: String,
    /// `/metrics` asks for the token too (it is readable without by default, for scrapers).
    pub metrics_require_token: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            bind: "127.0.0.1:18083".into(),
            token: String::new(),
            token_file: String::new(),
            metrics_require_token: false,
        }
    }
}

/// `[sys]`: the broker's `$SYS/broker/...` topics (Mosquitto's names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sys {
    /// Seconds between publications (Mosquitto `sys_interval`, 10); 0 turns them off.
    pub interval_secs: u64,
}

impl Default for Sys {
    fn default() -> Self {
        Sys { interval_secs: 10 }
    }
}

/// `[supervisor]`: how the control plane restarts a dataplane that died.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Supervisor {
    /// First delay before a restart; doubled after each restart that did not stay up for
    /// `stable_after_secs`, up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub stable_after_secs: u64,
    /// A shard whose loop has published nothing for this long, and is not inside its WAL
    /// step, a snapshot or its shutdown, is hung (0 turns the check off). 10 s: fifteen times
    /// the longest loop pass known (a `#` SUBSCRIBE over a million retained messages, 0.63 s
    /// in issue 20's measurement),
    /// beyond any scheduling hiccup, and well inside the 1.5 x keep-alive (typically 30-90 s)
    /// after which clients give up on their own.
    pub hang_timeout_ms: u64,
    /// What a hung shard gets: "restart" (kill the dataplane; it restarts with its WAL, as
    /// after a crash) or "report" (`/ready` false, `/health` names it, an error line; an
    /// operator or an orchestrator decides).
    pub hang_action: String,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            backoff_min_ms: 100,
            backoff_max_ms: 10_000,
            stable_after_secs: 30,
            hang_timeout_ms: 10_000,
            hang_action: "restart".into(),
        }
    }
}

/// `[durability]`: the data directory and what an acknowledgement promises
/// (docs/durability.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Durability {
    /// false: nothing is written; sessions and retained messages live in memory only.
    pub enabled: bool,
    /// Where the WAL lives (`tachyon serve --data-dir` overrides it).
    pub data_dir: String,
    /// "sync": PUBACK/PUBREC (and CONNACK, SUBACK of persistent sessions) only once what
    /// they promise is on disk (msync), group-committed; "none": at once, the kernel writes
    /// the pages back later (survives a crash of the broker, not of the machine).
    pub sync: String,
    /// Group commit: a batch closes this many microseconds after its first record (0: at
    /// the end of the shard's loop pass), or at `group_commit_records`, or when a loop pass
    /// finds nothing to do. Larger values put more into each msync (throughput under heavy
    /// fan-in) at the cost of acknowledgement latency (docs/durability.md).
    pub group_commit_us: u32,
    pub group_commit_records: u32,
    /// Size of each preallocated segment file.
    pub segment_mb: u64,
    /// Write a snapshot and delete older segments after this much log.
    pub snapshot_after_mb: u64,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            enabled: true,
            data_dir: "./data".into(),
            sync: "sync".into(),
            group_commit_us: 0,
            group_commit_records: 4096,
            segment_mb: 64,
            snapshot_after_mb: 256,
        }
    }
}

impl Durability {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.sync != "sync" && self.sync != "none" {
            return Err(invalid(
                "durability.sync",
                format!("{:?}", self.sync),
                "use \"sync\" (acknowledged = on disk) or \"none\" (acknowledged at once; a machine crash can lose messages)",
            ));
        }
        if self.data_dir.is_empty() {
            return Err(invalid(
                "durability.data_dir",
                "\"\"",
                "name a directory, e.g. \"./data\" (or set durability.enabled = false)",
            ));
        }
        if !(1..=4096).contains(&self.segment_mb) {
            return Err(invalid(
                "durability.segment_mb",
                self.segment_mb,
                "use 1 ..= 4096 (MiB)",
            ));
        }
        if self.group_commit_us > 1_000_000 {
            return Err(invalid(
                "durability.group_commit_us",
                self.group_commit_us,
                "use 0 ..= 1000000 microseconds",
            ));
        }
        if self.group_commit_records == 0 {
            return Err(invalid(
                "durability.group_commit_records",
                0,
                "use at least 1",
            ));
        }
        if self.snapshot_after_mb == 0 {
            return Err(invalid(
                "durability.snapshot_after_mb",
                0,
                "use at least 1 (MiB)",
            ));
        }
        Ok(())
    }
}

/// A configuration that cannot be used, with the key, the value and the fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    Read {
        path: String,
        source: std::io::Error,
    },
    Parse {
        origin: String,
        message: String,
    },
    Invalid {
        key: String,
        value: String,
        fix: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(
                    f,
                    "config {path}: cannot read: {source} — check the path given to --config"
                )
            }
            ConfigError::Parse { origin, message } => {
                write!(f, "config {origin}: {}", message.trim_end())
            }
            ConfigError::Invalid { key, value, fix } => {
                write!(f, "config: {key} = {value} is not usable — {fix}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn invalid(key: &str, value: impl std::fmt::Display, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        fix: fix.into(),
    }
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for syntax, unknown keys and wrong types (the message names the
    /// key and line); [`ConfigError::Invalid`] for values out of range.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a file.
    ///
    /// # Errors
    /// As [`Config::parse`], plus [`ConfigError::Read`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default (`configs/dev.toml`).
    pub fn default_dev() -> Config {
        Config::parse(DEFAULT_CONFIG, "embedded default").expect("configs/dev.toml is valid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid(
                "listeners",
                "[]",
                "add at least one [[listeners]] with bind = \"127.0.0.1:1883\"",
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.bind.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    &format!("listeners[{i}].bind"),
                    format!("{:?}", l.bind),
                    "use host:port with a numeric address, e.g. \"127.0.0.1:1883\" or \"[::1]:1883\"",
                ));
            }
            let unknown = l
                .protocols
                .iter()
                .find(|p| !PROTOCOLS.contains(&p.as_str()));
            if l.protocols.is_empty() || unknown.is_some() {
                return Err(invalid(
                    &format!("listeners[{i}].protocols"),
                    format!("{:?}", l.protocols),
                    "list one or more of \"3.1\", \"3.1.1\", \"5\" (leave the key out for all three)",
                ));
            }
        }
        if self.shards.count > tachyon_engine::SHARDS_MAX {
            return Err(invalid(
                "shards.count",
                self.shards.count,
                "use at most 64 shards (0 = one per core)",
            ));
        }
        if !matches!(self.shards.idle.as_str(), "block" | "spin" | "hybrid") {
            return Err(invalid(
                "shards.idle",
                format!("{:?}", self.shards.idle),
                "use \"block\", \"spin\" or \"hybrid\"",
            ));
        }
        if self.shards.spin_us == 0 || self.shards.spin_us > 1_000_000 {
            return Err(invalid(
                "shards.spin_us",
                self.shards.spin_us,
                "use 1 ..= 1000000 microseconds",
            ));
        }
        if self.shards.ring_capacity < 64 {
            return Err(invalid(
                "shards.ring_capacity",
                self.shards.ring_capacity,
                "use at least 64",
            ));
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if let Some(&c) = self.shards.cores.iter().find(|&&c| c >= ncpu) {
            return Err(invalid(
                "shards.cores",
                c,
                &format!("this host has cores 0..{}; list only those", ncpu - 1),
            ));
        }
        let l = &self.limits;
        if !(64..=tachyon_codec_max()).contains(&l.max_packet_size) {
            return Err(invalid(
                "limits.max_packet_size",
                l.max_packet_size,
                "use 64 ..= 268435455 bytes",
            ));
        }
        if l.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", 0, "use 1 ..= 65535"));
        }
        if l.max_inflight_messages == 0 {
            return Err(invalid(
                "limits.max_inflight_messages",
                0,
                "use 1 ..= 65535",
            ));
        }
        if l.max_topic_levels == 0 || l.max_topic_levels > 1024 {
            return Err(invalid(
                "limits.max_topic_levels",
                l.max_topic_levels,
                "use 1 ..= 1024",
            ));
        }
        if l.max_output_bytes_before_close < l.max_output_bytes + l.max_packet_size as usize {
            return Err(invalid(
                "limits.max_output_bytes_before_close",
                l.max_output_bytes_before_close,
                "use at least limits.max_output_bytes + limits.max_packet_size",
            ));
        }
        if l.queue_backpressure_factor == 0 || l.queue_backpressure_factor > 1024 {
            return Err(invalid(
                "limits.queue_backpressure_factor",
                l.queue_backpressure_factor,
                "use 1 ..= 1024 (1 turns backpressure off)",
            ));
        }
        if l.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", 0, "use at least 1"));
        }
        self.durability.validate()?;
        self.dataplane.validate()?;
        self.userspace.validate()?;
        // The sections of the driver in use are checked fully; the others only parse.
        match self.dataplane.driver() {
            Driver::Kernel => {}
            Driver::Tap => self.tap.validate(ncpu)?,
            Driver::Dpdk => self.dpdk.validate(ncpu)?,
        }
        if self.admin.bind.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "admin.bind",
                format!("{:?}", self.admin.bind),
                "use host:port with a numeric address, e.g. \"127.0.0.1:18083\"",
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid(
                "admin.token",
                "(hidden)",
                "use at least 16 characters (e.g. `head -c 24 /dev/urandom | base64`), or leave it empty to have one generated into admin.token_file",
            ));
        }
        if self.sys.interval_secs > 86_400 {
            return Err(invalid(
                "sys.interval_secs",
                self.sys.interval_secs,
                "use 0 (off) ..= 86400 seconds",
            ));
        }
        let sv = &self.supervisor;
        if sv.backoff_min_ms == 0 || sv.backoff_max_ms < sv.backoff_min_ms {
            return Err(invalid(
                "supervisor.backoff_min_ms",
                sv.backoff_min_ms,
                "use at least 1, and at most supervisor.backoff_max_ms",
            ));
        }
        if sv.hang_timeout_ms != 0 && sv.hang_timeout_ms < 2_000 {
            return Err(invalid(
                "supervisor.hang_timeout_ms",
                sv.hang_timeout_ms,
                "use 0 (off) or at least 2000: an idle shard publishes only every 1.25 s",
            ));
        }
        if sv.hang_action != "restart" && sv.hang_action != "report" {
            return Err(invalid(
                "supervisor.hang_action",
                format!("{:?}", sv.hang_action),
                "use \"restart\" or \"report\"",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("{:?}", self.log.level),
                &format!("use a level (error, warn, info, debug, trace) or per-module directives such as \"info,tachyon_engine=debug\" ({e})"),
            ));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return Err(invalid(
                "log.format",
                format!("{:?}", self.log.format),
                "use \"text\" or \"json\"",
            ));
        }
        Ok(())
    }

    /// Where and how the WAL is written; `None` when durability is off.
    pub fn durability_config(&self) -> Option<tachyon_net::durable::DurabilityConfig> {
        let d = &self.durability;
        if !d.enabled {
            return None;
        }
        Some(tachyon_net::durable::DurabilityConfig {
            data_dir: d.data_dir.clone().into(),
            sync: if d.sync == "none" {
                tachyon_wal::SyncPolicy::None
            } else {
                tachyon_wal::SyncPolicy::Sync {
                    max_delay_us: d.group_commit_us,
                    max_records: d.group_commit_records,
                }
            },
            segment_bytes: d.segment_mb << 20,
            snapshot_after_bytes: d.snapshot_after_mb << 20,
        })
    }

    /// Uses `dir` as the data directory (`tachyon serve --data-dir`), durability on.
    pub fn override_data_dir(&mut self, dir: &str) {
        self.durability.enabled = true;
        self.durability.data_dir = dir.to_owned();
    }

    /// Overrides the first listener's port (`tachyon serve -p`).
    pub fn override_port(&mut self, port: u16) {
        if let Some(l) = self.listeners.first_mut() {
            let mut addr: SocketAddr = l.bind.parse().expect("validated");
            addr.set_port(port);
            l.bind = addr.to_string();
        }
    }

    /// Shards: `shards.count` (0 = one per core) for kernel sockets, one for TAP, one per
    /// core-map entry for DPDK.
    pub fn shard_count(&self) -> usize {
        match self.dataplane.driver() {
            Driver::Tap => return 1,
            Driver::Dpdk => return self.dpdk.core_map.len().max(1),
            Driver::Kernel => {}
        }
        if self.shards.count == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(tachyon_engine::SHARDS_MAX)
        } else {
            self.shards.count
        }
    }

    /// Engine settings. `boot_nonce` makes assigned client ids unique across restarts.
    pub fn engine_config(&self, boot_nonce: u64) -> Arc<EngineConfig> {
        let l = &self.limits;
        Arc::new(EngineConfig {
            max_packet_size: l.max_packet_size,
            receive_maximum: l.receive_maximum,
            inflight_max: l.max_inflight_messages,
            topic_alias_maximum: l.topic_alias_maximum,
            keep_alive_max_secs: l.max_keep_alive,
            session_expiry_max_secs: self.sessions.max_expiry_secs,
            session_expiry_v311_secs: self.sessions.v311_expiry_secs,
            queued_messages_max: l.max_queued_messages,
            queued_bytes_max: l.max_queued_bytes,
            queue_hard_factor: l.queue_backpressure_factor,
            congestion_timeout_ms: l.congestion_timeout_ms,
            queue_qos0: l.queue_qos0_messages,
            output_bytes_max: l.max_output_bytes,
            output_close_bytes: l.max_output_bytes_before_close,
            topic_levels_max: l.max_topic_levels,
            allow_anonymous: self.auth.allow_anonymous,
            boot_nonce,
            connect_timeout_ms: l.connect_timeout_ms,
            sessions_max_per_shard: l.max_sessions.div_ceil(self.shard_count()).max(1),
            retained_max: l.max_retained,
            listeners: self.listener_rules(),
            ..EngineConfig::default()
        })
    }

    /// Each driver listener's rules, by the number the driver gives it: the kernel driver's
    /// listeners are `[[listeners]]`; the user-space driver's are `userspace.ports`, each with
    /// the rules of the `[[listeners]]` entry of the same port (all versions when none).
    fn listener_rules(&self) -> Vec<tachyon_engine::ListenerRules> {
        match self.dataplane.driver() {
            Driver::Kernel => self.listeners.iter().map(Listener::rules).collect(),
            Driver::Tap | Driver::Dpdk => self
                .userspace
                .ports
                .iter()
                .map(|&port| {
                    self.listeners
                        .iter()
                        .find(|l| l.bind.parse::<SocketAddr>().is_ok_and(|a| a.port() == port))
                        .map(Listener::rules)
                        .unwrap_or_default()
                })
                .collect(),
        }
    }

    /// Kernel driver settings.
    pub fn kernel_config(&self) -> KernelConfig {
        let n = self.shard_count();
        let cores = if !self.shards.pin_cores {
            Vec::new()
        } else if self.shards.cores.is_empty() {
            let ncpu = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            (0..n).map(|i| i % ncpu).collect()
        } else {
            self.shards.cores.clone()
        };
        KernelConfig {
            listeners: self
                .listeners
                .iter()
                .map(|l| l.bind.parse().expect("validated"))
                .collect(),
            shard_count: n,
            cores,
            idle: match self.shards.idle.as_str() {
                "spin" => IdleStrategy::Spin,
                "hybrid" => IdleStrategy::Hybrid {
                    spin_us: self.shards.spin_us,
                },
                _ => IdleStrategy::Block,
            },
            ring_capacity: self.shards.ring_capacity,
            listen_backlog: self.net.listen_backlog,
            socket_rcvbuf: self.net.socket_rcvbuf,
            socket_sndbuf: self.net.socket_sndbuf,
            shutdown_drain_ms: self.net.shutdown_drain_ms,
        }
    }
}

/// What a new configuration changes, split into what applies live and what needs a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Keys (sections) applied without dropping clients.
    pub live: Vec<&'static str>,
    /// Keys (sections) that only take effect when the broker restarts.
    pub restart: Vec<&'static str>,
}

impl Config {
    /// Compares `self` (running) with `next`. Limits, session expiry ceilings,
    /// `auth.allow_anonymous`, `log.level`, `sys`, the supervisor and the admin token apply
    /// live; listeners, shards, network, durability, drivers, `log.format` and `admin.bind`
    /// need a restart.
    pub fn changes(&self, next: &Config) -> Changes {
        let mut c = Changes::default();
        let mut note = |differs: bool, key: &'static str, live: bool| {
            if differs {
                if live {
                    c.live.push(key);
                } else {
                    c.restart.push(key);
                }
            }
        };
        note(self.limits != next.limits, "limits", true);
        note(self.sessions != next.sessions, "sessions", true);
        note(self.auth != next.auth, "auth", true);
        note(self.log.level != next.log.level, "log.level", true);
        note(self.sys != next.sys, "sys", true);
        note(
            self.admin.token != next.admin.token
                || self.admin.token_file != next.admin.token_file
                || self.admin.metrics_require_token != next.admin.metrics_require_token,
            "admin.token",
            true,
        );
        note(self.listeners != next.listeners, "listeners", false);
        note(self.shards != next.shards, "shards", false);
        note(self.net != next.net, "net", false);
        note(self.durability != next.durability, "durability", false);
        note(self.dataplane != next.dataplane, "dataplane", false);
        note(self.userspace != next.userspace, "userspace", false);
        note(self.tap != next.tap, "tap", false);
        note(self.dpdk != next.dpdk, "dpdk", false);
        note(self.log.format != next.log.format, "log.format", false);
        note(
            self.admin.bind != next.admin.bind || self.admin.enabled != next.admin.enabled,
            "admin.bind",
            false,
        );
        // Read at each use (a restart's backoff, each hang check).
        note(self.supervisor != next.supervisor, "supervisor", true);
        c
    }

    /// The admin token file: `admin.token_file`, or `admin.token` in the data directory.
    pub fn admin_token_path(&self) -> std::path::PathBuf {
        if self.admin.token_file.is_empty() {
            std::path::Path::new(&self.durability.data_dir).join("admin.token")
        } else {
            self.admin.token_file.clone().into()
        }
    }

    /// The cores the shards are pinned to (empty: not pinned). For DPDK the EAL decides
    /// placement itself, so none are listed.
    pub fn shard_cores(&self) -> Vec<usize> {
        let mut cores = match self.driver() {
            Driver::Kernel => self.kernel_config().cores,
            Driver::Tap => self
                .tap_config()
                .ok()
                .and_then(|t| t.core)
                .into_iter()
                .collect(),
            Driver::Dpdk => Vec::new(),
        };
        cores.sort_unstable();
        cores.dedup();
        cores
    }

    /// Which dataplane driver `serve` runs.
    pub fn driver(&self) -> Driver {
        self.dataplane.driver()
    }

    /// Settings of the user-space (smoltcp) stack, for the TAP and DPDK drivers.
    pub fn stack_config(&self) -> tachyon_net::userspace::StackConfig {
        let ports = self.userspace.ports.len();
        self.userspace
            .stack_config(self.shards.ring_capacity, self.net.shutdown_drain_ms, ports)
    }

    /// The TAP driver's settings (validated at load when `dataplane.driver = "tap"`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `[tap]` key at fault.
    pub fn tap_config(&self) -> Result<tachyon_net::userspace::tap::TapConfig, ConfigError> {
        self.tap.tap_config(host_cpus())
    }

    /// The DPDK driver's settings (validated at load when `dataplane.driver = "dpdk"`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `[dpdk]` key at fault.
    pub fn dpdk_config(
        &self,
    ) -> Result<tachyon_net::userspace::dpdk_config::DpdkConfig, ConfigError> {
        self.dpdk.dpdk_config(host_cpus())
    }
}

fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

const fn tachyon_codec_max() -> u32 {
    268_435_455
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_listens_on_loopback() {
        let c = Config::default_dev();
        assert_eq!(c.listeners[0].bind, "127.0.0.1:1883");
        assert!(c.shard_count() >= 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[limits]\nmax_pakcet_size = 10\n", "t").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("max_pakcet_size"), "{s}");
    }

    #[test]
    fn bad_value_names_key_value_and_fix() {
        let e = Config::parse("[limits]\nmax_packet_size = 10\n", "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: limits.max_packet_size = 10 is not usable — use 64 ..= 268435455 bytes"
        );
        let e = Config::parse("[[listeners]]\nbind = \"localhost\"\n", "t").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config: listeners[0].bind = \"localhost\""),
            "{e}"
        );
    }

    #[test]
    fn every_shipped_configuration_is_valid() {
        for (name, text) in [
            ("dev.toml", include_str!("../../configs/dev.toml")),
            (
                "bench-one-shard.toml",
                include_str!("../../configs/bench-one-shard.toml"),
            ),
            ("tap-dev.toml", include_str!("../../configs/tap-dev.toml")),
            (
                "dpdk-vdev.toml",
                include_str!("../../configs/dpdk-vdev.toml"),
            ),
        ] {
            if let Err(e) = Config::parse(text, name) {
                // dpdk-vdev.toml polls on lcore 1: a one-CPU host cannot run it.
                assert!(
                    name == "dpdk-vdev.toml" && host_cpus() < 2,
                    "configs/{name}: {e}"
                );
            }
        }
    }

    #[test]
    fn hybrid_idle_takes_its_spin_time() {
        let c = Config::parse("[shards]\nidle = \"hybrid\"\nspin_us = 50\n", "t").unwrap();
        assert_eq!(c.kernel_config().idle, IdleStrategy::Hybrid { spin_us: 50 });
        let e = Config::parse("[shards]\nidle = \"yield\"\n", "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("use \"block\", \"spin\" or \"hybrid\""),
            "{e}"
        );
        let e = Config::parse("[shards]\nspin_us = 0\n", "t").unwrap_err();
        assert!(e.to_string().contains("shards.spin_us = 0"), "{e}");
    }

    #[test]
    fn durability_defaults_to_sync_in_data_and_names_bad_keys() {
        let c = Config::default_dev();
        let d = c.durability_config().expect("on by default");
        assert_eq!(d.data_dir, std::path::PathBuf::from("./data"));
        assert!(matches!(d.sync, tachyon_wal::SyncPolicy::Sync { .. }));
        let e = Config::parse("[durability]\nsync = \"fsync\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("durability.sync = \"fsync\""), "{e}");
        let e = Config::parse("[durability]\nsegment_mb = 0\n", "t").unwrap_err();
        assert!(e.to_string().contains("durability.segment_mb = 0"), "{e}");
        let c = Config::parse("[durability]\nenabled = false\n", "t").unwrap();
        assert!(c.durability_config().is_none());
        let c = Config::parse("[durability]\nsync = \"none\"\n", "t").unwrap();
        assert_eq!(
            c.durability_config().unwrap().sync,
            tachyon_wal::SyncPolicy::None
        );
    }

    #[test]
    fn changes_split_into_live_and_restart() {
        let a = Config::default_dev();
        let b = Config::parse(
            "[limits]\nmax_packet_size = 2048\n[log]\nlevel = \"debug\"\nformat = \"json\"\n[[listeners]]\nbind = \"127.0.0.1:1884\"\n",
            "t",
        )
        .unwrap();
        let c = a.changes(&b);
        assert_eq!(c.live, vec!["limits", "log.level"]);
        assert_eq!(c.restart, vec!["listeners", "log.format"]);
        assert_eq!(a.changes(&a.clone()), Changes::default());
    }

    #[test]
    fn admin_sys_and_log_keys_are_checked() {
        let e = Config::parse("[admin]\nbind = \"localhost:1\"\n", "t").unwrap_err();
        assert!(
            e.to_string().contains("admin.bind = \"localhost:1\""),
            "{e}"
        );
        let e = Config::parse("[admin]\ntoken = \"short\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("admin.token"), "{e}");
        assert!(
            !e.to_string().contains("short"),
            "the token is not echoed: {e}"
        );
        let e = Config::parse("[log]\nlevel = \"info,=[\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("log.level"), "{e}");
        let e = Config::parse("[sys]\ninterval = 5\n", "t").unwrap_err();
        assert!(e.to_string().contains("interval"), "{e}");
        let c = Config::default_dev();
        assert_eq!(c.admin.bind, "127.0.0.1:18083");
        assert_eq!(c.sys.interval_secs, 10);
        assert_eq!(
            c.admin_token_path(),
            std::path::PathBuf::from("./data/admin.token")
        );
    }

    #[test]
    fn shard_cores_follow_pinning() {
        let c = Config::parse("[shards]\ncount = 2\ncores = [0, 0]\n", "t").unwrap();
        assert_eq!(c.shard_cores(), vec![0]);
        let c = Config::parse("[shards]\ncount = 2\npin_cores = false\n", "t").unwrap();
        assert!(c.shard_cores().is_empty());
    }

    #[test]
    fn port_override_changes_first_listener() {
        let mut c = Config::default_dev();
        c.override_port(1999);
        assert_eq!(c.listeners[0].bind, "127.0.0.1:1999");
    }

    #[test]
    fn listener_protocols_default_to_all_and_are_checked() {
        let c = Config::default_dev();
        assert_eq!(
            c.listeners[0].rules(),
            tachyon_engine::ListenerRules::default()
        );
        let c = Config::parse(
            "[[listeners]]\nbind = \"127.0.0.1:1883\"\nprotocols = [\"3.1.1\", \"5\"]\nv31_strict_client_id = true\n",
            "t",
        )
        .unwrap();
        let r = c.engine_config(0).listener(0);
        assert!(!r.mqtt31 && r.mqtt311 && r.mqtt5 && r.v31_strict_client_id);
        for bad in ["[]", "[\"3\"]", "[\"5.0\", \"3.1.1\"]"] {
            let text = format!("[[listeners]]\nbind = \"127.0.0.1:1883\"\nprotocols = {bad}\n");
            let e = Config::parse(&text, "t").unwrap_err().to_string();
            assert!(e.contains("listeners[0].protocols"), "{e}");
            assert!(e.contains("\"3.1\", \"3.1.1\", \"5\""), "{e}");
        }
    }
}
