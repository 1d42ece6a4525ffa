//! # tachyon-controlplane — layer 6: the control-plane process
//!
//! `tachyon serve` runs the control plane; it spawns and supervises the dataplane process
//! (the same binary, `tachyon dataplane`) and talks to it over a Unix-domain socket pair.
//!
//! ```text
//!   control plane                                   dataplane process
//!   ─────────────                                   ─────────────────
//!   config ─▶ supervisor ══ channel (framed JSON) ══▶ agent ──admin inbox──▶ shards
//!   admin HTTP API ─┘  ▲                                                   │
//!   /metrics, $SYS ◀───┴──── stats region (mmap, lock-free per shard) ◀────┘
//! ```
//!
//! - [`config`]: one TOML file, parsed strictly (unknown keys are errors), validated with
//!   messages that name the key, the value and the fix; what a reload changes.
//! - [`supervisor`]: spawn, handshake, restart with backoff, requests, reload, totals, and
//!   the hang check ([`liveness`]: every shard's progress, read from the stats region).
//! - [`channel`]: the control channel's frames and messages (versioned).
//! - [`agent`]: the dataplane's end of the channel; asks the shards, merges their answers.
//! - [`http`], [`api`]: the admin API (bearer token) and `/metrics` ([`metrics`]).
//! - [`sys`]: the `$SYS/broker/...` topics.

pub mod agent;
pub mod api;
pub mod channel;
pub mod config;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod supervisor;
pub mod sys;
pub mod userspace;

pub use config::{Config, ConfigError};
pub use userspace::Driver;
