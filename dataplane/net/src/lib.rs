//! # tachyon-net — layer 4: drivers
//!
//! A driver owns sockets (or NIC queues), threads and pinning, and makes no MQTT decisions: it
//! feeds bytes and time to its shard's engine and writes what the engine queued.
//!
//! - [`kernel`]: one pinned thread per shard, each with its own `SO_REUSEPORT` listener and
//!   epoll set, non-blocking sockets, `TCP_NODELAY`, `writev` batches.
//! - [`userspace`]: a poll-mode shard per NIC queue with its own smoltcp TCP/IP stack, over a
//!   TAP device (development, no DPDK) or a DPDK port queue (feature `dpdk`).
//! - [`durable`]: the data directory: recovery at start-up, and each shard's WAL (group
//!   commit, snapshots, segment reclamation, a full disk) in both drivers' loops.
//! - [`observe`]: each shard's block of the shared stats region, and the hooks by which the
//!   dataplane process attaches its control thread.

pub mod durable;
mod error;
pub mod kernel;
pub mod limits;
pub mod observe;
mod shutdown;
mod sockets;
pub mod userspace;
mod wake;

pub use error::NetError;
pub use kernel::{run, IdleStrategy, KernelConfig};
pub use observe::ControlHooks;
pub use shutdown::Shutdown;
