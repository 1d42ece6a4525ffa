//! The user-space TCP/IP driver: one poll-mode shard per NIC queue, each with its own smoltcp
//! `Interface` and sockets, feeding the same sans-IO engine as the kernel driver. The two
//! drivers differ only in how bytes reach the shard.
//!
//! ```text
//!   frames (TAP fd, or a DPDK port's RX/TX queue pair)
//!     └─▶ smoltcp Interface (ARP, IPv4, TCP) ─▶ socket rx ring ─copy─▶ shard ingress ─▶ engine
//!   engine output chunks ─copy─▶ socket tx ring ─▶ smoltcp ─copy─▶ TX frame (mbuf) ─▶ burst TX
//! ```
//!
//! - [`tap`]: the path over a Linux TAP device; no DPDK needed (development, tests).
//! - `dpdk` (feature `dpdk`): the path over a DPDK port queue, receiving without copying out
//!   of the mbuf and transmitting straight into a fresh mbuf.
//!
//! Where a pass spends its time: smoltcp looks up the socket of each incoming segment by a
//! linear scan, and every egress pass visits every socket. The shard itself never scans: its
//! sockets' wakers mark them ready ([`ready`]). Hence the connection limit per shard
//! (`max_connections`), measured in docs/benchmarks.md.

mod buckets;
mod ready;
mod shard;
pub mod tap;

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod dpdk_config;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tachyon_engine::EngineConfig;
use tachyon_shard::{Mesh, Waker};

use crate::durable::DurabilityConfig;
use crate::shutdown::{join_shards, Shutdown};
use crate::NetError;

/// What a poll-mode shard does after a pass that found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollIdle {
    /// Poll again at once (lowest latency; the core runs at 100%).
    Spin,
    /// Poll again after a short run of `pause` instructions (kinder to a hyperthread sibling).
    Pause,
    /// Wait for a frame, a message from another shard or a timer (development: saves CPU,
    /// adds a wake-up to the latency).
    Sleep,
}

/// Addresses of one user-space interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// IP MTU (the Ethernet frame is 14 bytes longer).
    pub mtu: usize,
}

/// Settings shared by every user-space shard.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// TCP ports the broker listens on, on each interface.
    pub ports: Vec<u16>,
    /// Sockets kept in the LISTEN state per port (smoltcp has no backlog: one listening
    /// socket becomes one connection, so a burst of SYNs needs a pool).
    pub listen_pool: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    /// Sockets one shard holds (connections and its listen pool); beyond it SYNs are reset.
    pub max_connections: usize,
    /// smoltcp interfaces per shard, each with a share of the connections (see `buckets`).
    pub socket_buckets: usize,
    pub idle: PollIdle,
    pub ring_capacity: usize,
    pub shutdown_drain_ms: u64,
}

/// A source and sink of Ethernet frames for one shard: a smoltcp `Device` plus what a poll
/// loop needs around it.
pub trait Frames: smoltcp::phy::Device + Send + 'static {
    /// A received frame the shard holds until its bucket's stack reads it (see `buckets`).
    type Frame: AsRef<[u8]>;
    /// The next received frame, if any.
    fn receive_frame(&mut self) -> Option<Self::Frame>;
    /// Whether ARP arrives here (DPDK: only on queue 0; the others learn from frames).
    fn receives_arp(&self) -> bool {
        true
    }
    /// Runs on the shard's thread before its first poll (DPDK registers the thread there).
    fn on_thread_start(&mut self, _shard: usize) -> Result<(), String> {
        Ok(())
    }
    /// Sends the frames batched since the last call.
    fn flush_tx(&mut self);
    /// Blocks up to `max` or until a frame arrives or the shard is woken ([`PollIdle::Sleep`]).
    fn wait(&mut self, max: Duration);
    /// How other shards wake this one when they send it mail while it sleeps.
    fn waker(&self) -> Arc<dyn Waker>;
    /// Frames lost so far (a full TX ring, no free buffer, an unsupported frame): the shard
    /// warns when this grows, since each loss costs a connection a retransmission timeout.
    fn dropped_frames(&self) -> u64 {
        0
    }
    /// Counters worth a log line at stop (frames dropped for lack of buffers, ...).
    fn report(&self) -> String {
        String::new()
    }
}

/// One shard's device, its addresses and its core.
pub struct ShardDevice<D> {
    pub device: D,
    pub iface: InterfaceConfig,
    pub core: Option<usize>,
}

/// Runs one poll-mode shard per device until `shutdown` is triggered.
///
/// # Errors
/// [`NetError`] when a shard thread cannot start, or a shard panicked.
pub fn run<D: Frames>(
    devices: Vec<ShardDevice<D>>,
    stack: StackConfig,
    engine_cfg: Arc<EngineConfig>,
    durability: Option<&DurabilityConfig>,
    shutdown: Arc<Shutdown>,
    mut hooks: crate::ControlHooks,
) -> Result<(), NetError> {
    let n = devices.len();
    let epoch = std::time::Instant::now();
    // The durable state is back in the engines before any frame is taken.
    let crate::durable::Prepared {
        engines,
        logs,
        lock: _lock,
    } = crate::durable::prepare(n, &engine_cfg, durability, epoch)?;
    let mut states = engines.into_iter().zip(logs);
    let wakers = devices.iter().map(|d| d.device.waker()).collect();
    let mesh = Mesh::new(wakers, stack.ring_capacity);
    shutdown.attach(&mesh);
    let stack = Arc::new(stack);
    let mut handles = Vec::with_capacity(n);
    for (shard, dev) in devices.into_iter().enumerate() {
        tracing::info!(shard, address = %dev.iface.address, ports = ?stack.ports,
            mac = %format_mac(&dev.iface.mac), "user-space TCP/IP (smoltcp) listening");
        let ctx = shard::ShardContext {
            shard,
            core: dev.core,
            device: dev.device,
            iface: dev.iface,
            stack: stack.clone(),
            mesh: mesh.clone(),
            shutdown: shutdown.clone(),
            epoch,
            observer: hooks.observer(shard),
        };
        let (engine, mut log) = states.next().expect("one engine per device");
        if let Some(l) = log.as_mut() {
            l.watch(hooks.busy_marker(shard));
        }
        let h = std::thread::Builder::new()
            .name(format!("tachyon-shard-{shard}"))
            .spawn(move || shard::run_shard(ctx, engine, log))
            .map_err(NetError::Thread)?;
        handles.push(h);
    }
    hooks.ready(&mesh);
    join_shards(handles, &shutdown)
}

/// `02:00:00:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_round_trip() {
        let m = parse_mac("02:00:5e:00:53:0A").unwrap();
        assert_eq!(m, [2, 0, 0x5e, 0, 0x53, 0x0a]);
        assert_eq!(format_mac(&m), "02:00:5e:00:53:0a");
        assert_eq!(parse_mac("02:00:5e:00:53"), None);
        assert_eq!(parse_mac("02:00:5e:00:53:0a:01"), None);
        assert_eq!(parse_mac("2:00:5e:00:53:0a"), None);
        assert_eq!(parse_mac("zz:00:5e:00:53:0a"), None);
    }
}
