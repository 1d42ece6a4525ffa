//! # tachyon-engine — layer 2: one sans-IO broker shard
//!
//! A shard owns the connections the kernel (or the NIC) gave its core, the sessions attached to
//! them, its local topic trie, a routing summary of the other shards, and a replica of the
//! retained store. It never reads a clock, a socket or an RNG: the driver feeds it
//!
//! ```text
//!   handle_open(now, conn, peer, listener)  handle_bytes(now, conn, rx)  handle_closed(now, conn)
//!   handle_mail(now, from, mail)       handle_tick(now)                handle_shutdown(now)
//! ```
//!
//! and drains what it decided:
//!
//! ```text
//!   poll_dirty() -> conn with output   out_queue(conn) -> chunks to writev
//!   poll_close() -> conn to close      poll_mail() -> (shard, Mail)     poll_deadline()
//! ```
//!
//! Time is a monotonic millisecond count chosen by the driver. See docs/architecture.md for the
//! data flow of one PUBLISH.
#![forbid(unsafe_code)]

pub mod admin;
mod barrier;
mod clients;
mod config;
mod connect;
mod directory;
mod dispatch;
mod engine;
mod hash;
mod lifecycle;
pub mod mail;
pub mod message;
mod out;
pub mod persist;
pub mod protocol;
mod publish;
pub mod recycle;
pub mod session;
mod stats;
mod subscribe;
pub mod topic;
mod violation;

pub use config::{EngineConfig, ListenerRules};
pub use engine::{Engine, SessionKey};
pub use mail::{home_shard, Handover, Mail, SharedTarget};
pub use message::Message;
pub use out::OutQueue;
pub use stats::Stats;
pub use violation::Violation;

/// A connection as the driver names it. Unique within a shard for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Index of a shard, `0..shard_count`.
pub type ShardId = usize;

/// The most shards one broker runs (routing summaries use a 64-bit mask).
pub const SHARDS_MAX: usize = 64;
