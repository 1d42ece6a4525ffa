//! # tachyon-net — layer 4: drivers
//!
//! A driver owns sockets (or NIC queues), threads and pinning, and makes no MQTT decisions: it
//! feeds bytes and time to its shard's engine and writes what the engine queued.
//!
//! - [`kernel`]: one pinned thread per shard, each with its own `SO_REUSEPORT` listener and
//!   epoll set, non-blocking sockets, `TCP_NODELAY`, `writev` batches.
//! - smoltcp over DPDK or TAP comes with the kernel-bypass dataplane (issue 4).

pub mod kernel;
pub mod limits;

pub use kernel::{run, IdleStrategy, KernelConfig, NetError, Shutdown};
