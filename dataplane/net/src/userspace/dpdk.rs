//! The user-space path over DPDK: each shard owns one RX/TX queue pair of a port and a
//! mempool of its own, polls the queue from its pinned core and runs its own smoltcp stack.
//! RSS spreads TCP flows over the queues, so a connection lives on one shard.
//!
//! Bytes on this path (docs/architecture.md has the costs): the NIC writes a frame into an
//! mbuf (DMA, no CPU copy); smoltcp reads it in place (no copy out of the mbuf) and copies the
//! TCP payload into the socket's receive ring (copy 1); the shard copies it into its ingress
//! buffer (copy 2), where frames are split off as reference-counted slices. Outbound, the
//! engine's encoded chunks are copied into the socket's send ring (copy 1), and smoltcp
//! builds each segment straight in a fresh mbuf (copy 2), sent in a burst after each poll.
//!
//! ARP with several queues: RSS hashes only IP flows, so ARP replies and requests land on
//! queue 0. The shards of the other queues learn their peers' MACs from their frames (the
//! synthetic ARP requests of `buckets`).

use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::Arc;
use std::time::Duration;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant as NetInstant;
use tachyon_engine::EngineConfig;

use crate::durable::DurabilityConfig;
use tachyon_ffi as ffi;
use tachyon_shard::Waker;

use super::dpdk_config::{eal_argv, port_name};
pub use super::dpdk_config::{DpdkConfig, PortConfig, ShardQueue};
use super::{Frames, InterfaceConfig, ShardDevice, StackConfig};
use crate::shutdown::Shutdown;
use crate::NetError;

const BURST: usize = 32;
const ETHERNET_HEADER: usize = 14;
/// Longest nap of the `sleep` idle strategy (DPDK has no descriptor to wait on).
const SLEEP_NAP: Duration = Duration::from_micros(200);

fn dpdk_error(what: &str, rc: i32) -> NetError {
    let errno = if rc < 0 {
        -rc
    } else {
        // SAFETY: reads this thread's rte_errno; no other effect.
        unsafe { ffi::tachyon_errno() }
    };
    NetError::Device(format!(
        "DPDK: {what} failed: {} (errno {errno})",
        ffi::strerror(errno)
    ))
}

fn eal_init(cfg: &DpdkConfig) -> Result<(), NetError> {
    let args = eal_argv(cfg);
    tracing::info!(args = ?args, "starting DPDK EAL");
    // EAL keeps pointers into argv: the strings live for the process.
    let argv: Vec<*mut c_char> = args
        .iter()
        .map(|a| {
            CString::new(a.as_str())
                .map(|c| c.into_raw())
                .unwrap_or(std::ptr::null_mut())
        })
        .collect();
    if argv.iter().any(|p| p.is_null()) {
        return Err(NetError::Device(
            "dpdk.eal_args: an argument contains a NUL byte".into(),
        ));
    }
    let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
    // SAFETY: argc/argv describe NUL-terminated strings that live for the process.
    let rc = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    if rc < 0 {
        let mut e = dpdk_error("rte_eal_init", rc);
        if let NetError::Device(text) = &mut e {
            text.push_str(" — check dpdk.eal_args (without hugepages: --no-huge -m 128), that the lcores exist, and that no other DPDK process uses the same --file-prefix; EAL's own lines above say more");
        }
        return Err(e);
    }
    Ok(())
}

struct PortState {
    id: u16,
    mac: [u8; 6],
}

fn setup_port(
    index: usize,
    p: &PortConfig,
    cfg: &DpdkConfig,
) -> Result<(PortState, Vec<*mut ffi::rte_mempool>), NetError> {
    let name = CString::new(port_name(&p.device))
        .map_err(|_| NetError::Device("dpdk port device contains a NUL byte".into()))?;
    let mut id = 0u16;
    // SAFETY: a NUL-terminated name and a valid out-pointer.
    let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut id) };
    if rc != 0 {
        return Err(NetError::Device(format!(
            "DPDK: dpdk.ports[{index}].device {:?}: no such port after EAL start — for a NIC, bind it to vfio-pci (scripts/host-check); for a vdev, check the driver name (net_tap, net_memif)",
            p.device
        )));
    }
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: `id` is a valid port; `info` is a valid out-pointer.
    let rc = unsafe { ffi::rte_eth_dev_info_get(id, &mut info) };
    if rc != 0 {
        return Err(dpdk_error("rte_eth_dev_info_get", rc));
    }
    if p.rx_queues > info.max_rx_queues || p.rx_queues > info.max_tx_queues {
        return Err(NetError::Device(format!(
            "dpdk.ports[{index}].rx_queues = {}: port {} has at most {} RX and {} TX queues — lower rx_queues (and the core map)",
            p.rx_queues, p.device, info.max_rx_queues, info.max_tx_queues
        )));
    }
    let mut conf = ffi::rte_eth_conf::default();
    if p.rx_queues > 1 {
        conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
        // SAFETY: a pure function of constants.
        let wanted = unsafe { ffi::tachyon_rss_hf_ip_tcp() };
        conf.rx_adv_conf.rss_conf.rss_hf = wanted & info.flow_type_rss_offloads;
    }
    // SAFETY: valid port id and configuration.
    let rc = unsafe { ffi::rte_eth_dev_configure(id, p.rx_queues, p.rx_queues, &conf) };
    if rc != 0 {
        return Err(dpdk_error("rte_eth_dev_configure", rc));
    }
    if p.mtu != 1500 {
        // SAFETY: valid port id.
        let rc = unsafe { ffi::rte_eth_dev_set_mtu(id, p.mtu as u16) };
        if rc != 0 {
            return Err(dpdk_error(
                &format!("setting MTU {} on {}", p.mtu, p.device),
                rc,
            ));
        }
    }
    // SAFETY: valid port id.
    let socket = unsafe { ffi::rte_eth_dev_socket_id(id) };
    let socket = if socket < 0 { 0 } else { socket };
    let mut pools = Vec::new();
    for q in 0..p.rx_queues {
        // One mempool per queue: the shard that polls it shares its buffers with nobody.
        let shard = cfg
            .shards
            .iter()
            .position(|s| s.port == index && s.queue == q)
            .unwrap_or(0);
        let pool_name = CString::new(format!("tachyon_p{index}q{q}")).expect("no NUL");
        // SAFETY: valid name; sizes validated by the configuration.
        let pool = unsafe {
            ffi::rte_pktmbuf_pool_create(
                pool_name.as_ptr(),
                p.mempool_mbufs,
                p.mempool_cache,
                0,
                ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        if pool.is_null() {
            let mut e = dpdk_error(
                &format!(
                    "creating the mempool of shard {shard} ({} mbufs)",
                    p.mempool_mbufs
                ),
                0,
            );
            if let NetError::Device(text) = &mut e {
                text.push_str(" — give EAL more memory (-m in dpdk.eal_args: about 32 MB per 4095 mbufs without hugepages) or lower mempool_mbufs");
            }
            return Err(e);
        }
        // SAFETY: valid port, queue index below the configured count, live mempool.
        let rc = unsafe {
            ffi::rte_eth_rx_queue_setup(
                id,
                q,
                p.rx_descriptors,
                socket as u32,
                std::ptr::null(),
                pool,
            )
        };
        if rc != 0 {
            return Err(dpdk_error(
                &format!("RX queue {q} setup ({} descriptors)", p.rx_descriptors),
                rc,
            ));
        }
        // SAFETY: as above.
        let rc = unsafe {
            ffi::rte_eth_tx_queue_setup(id, q, p.tx_descriptors, socket as u32, std::ptr::null())
        };
        if rc != 0 {
            return Err(dpdk_error(
                &format!("TX queue {q} setup ({} descriptors)", p.tx_descriptors),
                rc,
            ));
        }
        pools.push(pool);
    }
    // SAFETY: configured port.
    let rc = unsafe { ffi::rte_eth_dev_start(id) };
    if rc != 0 {
        return Err(dpdk_error("rte_eth_dev_start", rc));
    }
    if let Some(mac) = p.mac {
        let mut want = ffi::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port and address.
        let rc = unsafe { ffi::rte_eth_dev_default_mac_addr_set(id, &mut want) };
        if rc != 0 {
            return Err(dpdk_error(
                &format!("setting MAC {} on {} (for an SR-IOV VF, set it on the PF: ip link set PF vf N mac ...)", super::format_mac(&mac), p.device),
                rc,
            ));
        }
    }
    let mut addr = ffi::rte_ether_addr::default();
    // SAFETY: valid port and out-pointer.
    unsafe { ffi::rte_eth_macaddr_get(id, &mut addr) };
    let mut link = ffi::rte_eth_link::default();
    // SAFETY: valid port and out-pointer.
    unsafe { ffi::rte_eth_link_get_nowait(id, &mut link) };
    tracing::info!(port = index, device = %p.device, port_id = id, queues = p.rx_queues,
        mac = %super::format_mac(&addr.addr_bytes), link_up = link.link_status() != 0,
        "DPDK port started");
    Ok((
        PortState {
            id,
            mac: addr.addr_bytes,
        },
        pools,
    ))
}

/// Started DPDK ports, stopped (with EAL) by [`Ports::stop`].
pub struct Ports {
    ids: Vec<u16>,
}

impl Ports {
    /// Stops and closes the ports, then releases EAL. Call after every user of the devices
    /// has stopped.
    pub fn stop(self) {
        for &id in &self.ids {
            // SAFETY: started ports; nothing polls them any more.
            unsafe {
                ffi::rte_eth_dev_stop(id);
                ffi::rte_eth_dev_close(id);
            }
        }
        // SAFETY: every DPDK resource user has stopped.
        unsafe { ffi::rte_eal_cleanup() };
    }
}

/// Starts EAL and the ports of `cfg`: one device per core-map entry, with its addresses and
/// lcore. The broker runs shards on them; a tool (the bench client) may poll one itself.
///
/// # Errors
/// [`NetError::Device`] when EAL or a port cannot be set up (the text says what to do).
pub fn start(cfg: &DpdkConfig) -> Result<(Vec<ShardDevice<DpdkQueue>>, Ports), NetError> {
    eal_init(cfg)?;
    let mut ports = Vec::new();
    let mut pools = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let (state, qpools) = setup_port(i, p, cfg)?;
        ports.push(state);
        pools.push(qpools);
    }
    let mut devices = Vec::new();
    for s in &cfg.shards {
        let p = &cfg.ports[s.port];
        let st = &ports[s.port];
        let device = DpdkQueue::new(st.id, s.queue, pools[s.port][s.queue as usize], p.mtu);
        devices.push(ShardDevice {
            device,
            iface: InterfaceConfig {
                mac: st.mac,
                address: p.address,
                prefix_len: p.prefix_len,
                gateway: p.gateway,
                mtu: p.mtu,
            },
            core: Some(s.lcore),
        });
    }
    Ok((
        devices,
        Ports {
            ids: ports.iter().map(|p| p.id).collect(),
        },
    ))
}

/// Runs one poll-mode shard per entry of the core map until `shutdown` is triggered.
///
/// # Errors
/// [`NetError::Device`] when EAL or a port cannot be set up (the text says what to do).
pub fn run(
    cfg: DpdkConfig,
    stack: StackConfig,
    engine_cfg: Arc<EngineConfig>,
    durability: Option<&DurabilityConfig>,
    shutdown: Arc<Shutdown>,
    hooks: crate::ControlHooks,
) -> Result<(), NetError> {
    let (devices, ports) = start(&cfg)?;
    let result = super::run(devices, stack, engine_cfg, durability, shutdown, hooks);
    ports.stop();
    result
}

struct NoWake;

impl Waker for NoWake {
    fn wake(&self) {
        // A polling shard sees its rings on its next pass; a napping one within SLEEP_NAP.
    }
}

/// Frames built by smoltcp, waiting for the next burst.
struct TxBatch {
    port: u16,
    queue: u16,
    pool: *mut ffi::rte_mempool,
    mbufs: [*mut ffi::rte_mbuf; BURST],
    count: usize,
    /// Where smoltcp writes a frame when no mbuf is free (the frame is then dropped).
    scratch: Vec<u8>,
    sent: u64,
    dropped: u64,
    alloc_failed: u64,
}

impl TxBatch {
    fn flush(&mut self) {
        let mut done = 0;
        // A full TX ring frees descriptors as the NIC sends: a few retries, then drop (TCP
        // retransmits).
        for _ in 0..4 {
            if done == self.count {
                break;
            }
            // SAFETY: mbufs[done..count] are ours; the PMD takes those it returns as sent.
            let n = unsafe {
                ffi::tachyon_tx_burst(
                    self.port,
                    self.queue,
                    self.mbufs.as_mut_ptr().add(done),
                    (self.count - done) as u16,
                )
            };
            done += n as usize;
        }
        for &m in &self.mbufs[done..self.count] {
            // SAFETY: not taken by the PMD, still ours.
            unsafe { ffi::tachyon_pktmbuf_free(m) };
        }
        self.sent += done as u64;
        self.dropped += (self.count - done) as u64;
        self.count = 0;
    }
}

/// One shard's RX/TX queue pair as a smoltcp device.
pub struct DpdkQueue {
    port: u16,
    queue: u16,
    mtu: usize,
    rx: [*mut ffi::rte_mbuf; BURST],
    rx_count: usize,
    rx_next: usize,
    tx: TxBatch,
    rx_frames: u64,
    rx_dropped: u64,
}

// SAFETY: the raw pointers are mbufs and a mempool that only this queue's shard thread uses
// after the device is moved there.
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    fn new(port: u16, queue: u16, pool: *mut ffi::rte_mempool, mtu: usize) -> DpdkQueue {
        DpdkQueue {
            port,
            queue,
            mtu,
            rx: [std::ptr::null_mut(); BURST],
            rx_count: 0,
            rx_next: 0,
            tx: TxBatch {
                port,
                queue,
                pool,
                mbufs: [std::ptr::null_mut(); BURST],
                count: 0,
                scratch: vec![0; mtu + ETHERNET_HEADER],
                sent: 0,
                dropped: 0,
                alloc_failed: 0,
            },
            rx_frames: 0,
            rx_dropped: 0,
        }
    }

    /// The next received single-segment mbuf (chained ones are dropped and counted).
    fn next_mbuf(&mut self) -> Option<*mut ffi::rte_mbuf> {
        loop {
            if self.rx_next == self.rx_count {
                // SAFETY: room for BURST mbuf pointers.
                let n = unsafe {
                    ffi::tachyon_rx_burst(self.port, self.queue, self.rx.as_mut_ptr(), BURST as u16)
                };
                self.rx_count = n as usize;
                self.rx_next = 0;
                if n == 0 {
                    return None;
                }
            }
            let m = self.rx[self.rx_next];
            self.rx_next += 1;
            // SAFETY: a received mbuf.
            if unsafe { ffi::tachyon_pktmbuf_nb_segs(m) } != 1 {
                // Jumbo frames in chained mbufs are not supported (MTU <= mbuf size).
                self.rx_dropped += 1;
                // SAFETY: ours; dropped.
                unsafe { ffi::tachyon_pktmbuf_free(m) };
                continue;
            }
            self.rx_frames += 1;
            return Some(m);
        }
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        self.tx.flush();
        for &m in &self.rx[self.rx_next..self.rx_count] {
            // SAFETY: received and not yet handed out.
            unsafe { ffi::tachyon_pktmbuf_free(m) };
        }
    }
}

/// A received frame: one single-segment mbuf, returned to its pool when dropped.
pub struct DpdkRx(*mut ffi::rte_mbuf);

impl AsRef<[u8]> for DpdkRx {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a received single-segment mbuf (see `next_mbuf`), alive until this drops.
        unsafe {
            std::slice::from_raw_parts(
                ffi::tachyon_pktmbuf_mtod(self.0) as *const u8,
                ffi::tachyon_pktmbuf_data_len(self.0) as usize,
            )
        }
    }
}

impl Drop for DpdkRx {
    fn drop(&mut self) {
        // SAFETY: ours since rx_burst; nothing refers to it any more.
        unsafe { ffi::tachyon_pktmbuf_free(self.0) };
    }
}

impl RxToken for DpdkRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.as_ref())
    }
}

pub struct DpdkTx<'a>(&'a mut TxBatch);

impl TxToken for DpdkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let b = self.0;
        // SAFETY: a live mempool.
        let m = unsafe { ffi::tachyon_pktmbuf_alloc(b.pool) };
        let data = if m.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: a fresh mbuf; append returns null if `len` does not fit.
            unsafe { ffi::tachyon_pktmbuf_append(m, len as u16) as *mut u8 }
        };
        if data.is_null() {
            if !m.is_null() {
                // SAFETY: ours, unused.
                unsafe { ffi::tachyon_pktmbuf_free(m) };
            }
            b.alloc_failed += 1;
            let n = len.min(b.scratch.len());
            return f(&mut b.scratch[..n]);
        }
        // SAFETY: `len` bytes appended to the mbuf are ours to fill.
        let r = f(unsafe { std::slice::from_raw_parts_mut(data, len) });
        b.mbufs[b.count] = m;
        b.count += 1;
        if b.count == BURST {
            b.flush();
        }
        r
    }
}

impl Device for DpdkQueue {
    type RxToken<'a> = DpdkRx;
    type TxToken<'a> = DpdkTx<'a>;

    fn receive(&mut self, _: NetInstant) -> Option<(DpdkRx, DpdkTx<'_>)> {
        let m = self.next_mbuf()?;
        Some((DpdkRx(m), DpdkTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: NetInstant) -> Option<DpdkTx<'_>> {
        Some(DpdkTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + ETHERNET_HEADER;
        caps.max_burst_size = Some(BURST);
        caps
    }
}

impl Frames for DpdkQueue {
    type Frame = DpdkRx;

    fn receive_frame(&mut self) -> Option<DpdkRx> {
        self.next_mbuf().map(DpdkRx)
    }

    fn receives_arp(&self) -> bool {
        self.queue == 0
    }

    fn on_thread_start(&mut self, shard: usize) -> Result<(), String> {
        // A registered thread gets an lcore id, hence the mempool's per-lcore cache.
        // SAFETY: called once on a thread EAL did not create.
        if unsafe { ffi::rte_thread_register() } != 0 {
            let errno = unsafe { ffi::tachyon_errno() };
            return Err(format!(
                "shard {shard}: rte_thread_register failed: {}",
                ffi::strerror(errno)
            ));
        }
        Ok(())
    }

    fn flush_tx(&mut self) {
        if self.tx.count > 0 {
            self.tx.flush();
        }
    }

    fn wait(&mut self, max: Duration) {
        std::thread::sleep(max.min(SLEEP_NAP));
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(NoWake)
    }

    fn dropped_frames(&self) -> u64 {
        self.rx_dropped + self.tx.dropped + self.tx.alloc_failed
    }

    fn report(&self) -> String {
        format!(
            "dpdk port {} queue {}: {} frames received, {} dropped (chained); {} sent, {} dropped (TX ring full), {} without an mbuf",
            self.port, self.queue, self.rx_frames, self.rx_dropped, self.tx.sent, self.tx.dropped, self.tx.alloc_failed
        )
    }
}
