//! The poll loop of one user-space shard:
//!
//! ```text
//!   loop { ingress until empty (smoltcp) ; ready sockets -> engine ; mail from other shards ;
//!          timers ; engine output -> socket tx rings ; mail to other shards ; egress + burst TX ;
//!          idle strategy when the pass found nothing }
//! ```
//!
//! Ingress runs to completion before the application and egress after it, so that a request
//! and its reply leave in one segment (smoltcp's `poll` would send a bare ACK first). Sockets
//! are found through their wakers ([`super::ready`]); the loop never scans its sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use tachyon_engine::recycle::Recycler;
use tachyon_engine::{ConnId, Engine};
use tachyon_shard::{Mesh, Port};

use super::buckets::{self, Bucket, BucketDevice};
use super::{ready, Frames, InterfaceConfig, PollIdle, StackConfig};
use crate::durable::ShardLog;
use crate::shutdown::{pin_to_core, PanicGuard, Shutdown};
use crate::sockets::{conn_id, slot_number, SlotAllocator, SocketTable};

/// Frames taken from the device per pass before the application runs.
const INGRESS_BUDGET: usize = 512;
/// Egress rounds per pass at most (each round sends at most one segment per socket, and
/// visits every socket: roughly 5-10 ns per connection).
const EGRESS_ROUNDS: usize = 64;
/// Bytes one egress round is assumed to send per socket (a segment at the usual MSS).
const SEGMENT_BYTES: usize = 1400;
/// Bytes taken from one socket per pass before others get a turn.
const READ_BUDGET_BYTES: usize = 1 << 20;
const MAIL_BUDGET: usize = 4096;
/// As in the kernel driver: while this much mail waits for room in full rings, input waits.
const OVERFLOW_MAX: usize = 65_536;
const INGRESS_CAPACITY: usize = 256 * 1024;
const INGRESS_POOL: usize = 4;
/// A partial packet up to this size is copied in front of the next read; a larger one grows
/// in its connection's own buffer.
const PARTIAL_COPY_MAX: usize = 16 * 1024;
const CLOSE_FLUSH_MS: u64 = 2000;
const CLOSE_LINGER_MS: u64 = 1000;
/// Longest sleep of [`PollIdle::Sleep`] when no timer is due.
const SLEEP_MAX: Duration = Duration::from_millis(10);
/// `pause` instructions per idle pass of [`PollIdle::Pause`].
const PAUSE_SPINS: u32 = 64;

pub(super) struct ShardContext<D> {
    pub shard: usize,
    pub core: Option<usize>,
    pub device: D,
    pub iface: InterfaceConfig,
    pub stack: Arc<StackConfig>,
    pub mesh: Arc<Mesh>,
    pub shutdown: Arc<Shutdown>,
    pub epoch: Instant,
    pub observer: crate::observe::Observer,
}

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the listen pool, waiting for a SYN.
    Listening,
    /// Out of the pool: a SYN arrived, the handshake is under way.
    Accepting,
    /// A connection the engine knows.
    Open,
    /// The engine closed it; its last output is being written.
    Flushing { deadline_ms: u64 },
    /// FIN sent (or the peer's received); the engine has forgotten it. Removed once TCP is
    /// done with it, or at the deadline.
    Lingering { deadline_ms: u64 },
}

struct Conn {
    handle: SocketHandle,
    /// The socket bucket (`buckets`) that holds it.
    bucket: u16,
    phase: Phase,
    /// Index into `StackConfig::ports` of the port it listened on.
    port: usize,
    /// A partial packet waiting for the rest (none on an idle connection).
    rx: Option<Box<BytesMut>>,
}

struct Shard<D: Frames> {
    ctx: ShardContext<D>,
    buckets: Vec<Bucket<D::Frame>>,
    /// Listening sockets kept per bucket and port.
    bucket_pool: usize,
    conns: SocketTable<Conn>,
    slots: SlotAllocator,
    engine: Engine,
    log: Option<ShardLog>,
    port: Port,
    ingress: BytesMut,
    ingress_pool: Recycler,
    next_conn: u64,
    /// Connections in `Open` or `Flushing`.
    open: usize,
    /// Sockets in `Accepting`.
    half_open: usize,
    accepting: bool,
    ready: Vec<ConnId>,
    /// Connections with input left unread (budget, or held back by backpressure).
    backlog: Vec<ConnId>,
    closing: Vec<ConnId>,
    /// Something was written into a socket since the last egress.
    egress_due: bool,
    /// Buckets whose sockets were written, closed or read since the last egress (their
    /// stacks have segments to send: data, FIN, reset, window update).
    touched: Vec<u16>,
    /// Egress rounds the next egress needs: one, or more after a large write.
    egress_rounds: usize,
    /// The listen pool lost a socket since it was last filled.
    pool_short: bool,
    /// When egress last ran, ms: it also runs once per millisecond for TCP's timers
    /// (retransmission, keep-alive), without asking smoltcp when they are due (that question
    /// visits every socket).
    egress_ms: u64,
    refused_logged_ms: Option<u64>,
    /// Frames the device had lost at the last check, and when that was (ms).
    drops_seen: (u64, u64),
}

/// Runs shard `ctx.shard` with its engine (holding what recovery restored) and its WAL.
pub(super) fn run_shard<D: Frames>(
    mut ctx: ShardContext<D>,
    engine: Engine,
    log: Option<ShardLog>,
) {
    let _guard = PanicGuard(ctx.shutdown.clone(), ctx.shard);
    if let Some(core) = ctx.core {
        pin_to_core(ctx.shard, core);
    }
    if let Err(e) = ctx.device.on_thread_start(ctx.shard) {
        tracing::error!(shard = ctx.shard, error = %e, "device setup on the shard thread failed; stopping the broker");
        ctx.shutdown.trigger();
        return;
    }
    let now = NetInstant::from_micros(ctx.epoch.elapsed().as_micros() as i64);
    let ports = ctx.stack.ports.len();
    let n = ctx.stack.socket_buckets.max(1);
    let mut buckets = Vec::with_capacity(n);
    for b in 0..n {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(ctx.iface.mac)));
        config.random_seed = seed(ctx.shard) ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut iface = Interface::new(config, &mut ctx.device, now);
        iface.update_ip_addrs(|addrs| {
            let cidr = IpCidr::new(IpAddress::Ipv4(ctx.iface.address), ctx.iface.prefix_len);
            // One address fits: the capacity is at least one.
            let _ = addrs.push(cidr);
        });
        if let Some(gw) = ctx.iface.gateway {
            if let Err(e) = iface.routes_mut().add_default_ipv4_route(gw) {
                tracing::warn!(shard = ctx.shard, gateway = %gw, error = ?e, "cannot add the default route");
            }
        }
        buckets.push(Bucket::new(iface, ports));
    }
    // A claimed listening socket is replaced before the next frame, so a small pool per
    // bucket absorbs a burst of SYNs.
    let bucket_pool = ctx.stack.listen_pool.div_ceil(n).max(2);
    let port = Port::new(ctx.shard, ctx.mesh.clone());
    let mut shard = Shard {
        ctx,
        buckets,
        bucket_pool,
        conns: SocketTable::new(),
        slots: SlotAllocator::default(),
        engine,
        log,
        port,
        ingress: BytesMut::with_capacity(INGRESS_CAPACITY),
        ingress_pool: Recycler::new(INGRESS_CAPACITY, INGRESS_POOL),
        next_conn: 1,
        open: 0,
        half_open: 0,
        accepting: true,
        ready: Vec::new(),
        backlog: Vec::new(),
        closing: Vec::new(),
        egress_due: false,
        touched: Vec::new(),
        egress_rounds: 1,
        pool_short: true,
        egress_ms: 0,
        refused_logged_ms: None,
        drops_seen: (0, 0),
    };
    shard.fill_listen_pool(0);
    shard.run();
}

/// A different TCP initial-sequence seed per shard and start.
fn seed(shard: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 20) ^ ((shard as u64) << 56)
}

fn peer_of(socket: &tcp::Socket) -> SocketAddr {
    match socket.remote_endpoint() {
        Some(ep) => {
            let ip = match ep.addr {
                IpAddress::Ipv4(a) => IpAddr::V4(a),
            };
            SocketAddr::new(ip, ep.port)
        }
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

impl<D: Frames> Shard<D> {
    fn clock(&self) -> (u64, NetInstant) {
        let e = self.ctx.epoch.elapsed();
        (
            e.as_millis() as u64,
            NetInstant::from_micros(e.as_micros() as i64),
        )
    }

    fn run(&mut self) {
        let mut drain_deadline: Option<u64> = None;
        loop {
            let (now, ts) = self.clock();
            self.engine.set_clock_us(ts.total_micros() as u64);
            // 1. Ingress until the device is empty (bounded): frames to their buckets, then
            // each bucket's stack.
            let frames = self.ingress(now, ts);
            // 2. Sockets that smoltcp marked ready, then those left with unread input.
            ready::take(&mut self.ready);
            let mut ready = std::mem::take(&mut self.ready);
            let worked = !ready.is_empty() || !self.backlog.is_empty();
            for &id in &ready {
                self.service(now, id);
            }
            ready.clear();
            self.ready = ready;
            if !self.backlog.is_empty() {
                let backlog = std::mem::take(&mut self.backlog);
                for id in backlog {
                    self.read(now, id);
                }
            }
            // 3. Mail, timers, shutdown.
            let mail = if self.engine.congested() {
                0
            } else {
                self.port.drain(&mut self.engine, now, MAIL_BUDGET)
            };
            self.port.serve_admin(&mut self.engine, now);
            self.engine.handle_tick(now);
            self.ctx
                .observer
                .step(now, &mut self.engine, self.log.as_ref());
            if drain_deadline.is_none() && self.ctx.shutdown.is_triggered() {
                self.ctx.observer.shutting_down();
                self.stop_listening();
                if let Some(log) = &mut self.log {
                    log.commit_now(&mut self.engine, now);
                }
                self.engine.handle_shutdown(now);
                drain_deadline = Some(now + self.ctx.stack.shutdown_drain_ms);
            }
            // Records into the WAL before output goes to the sockets.
            if let Some(log) = &mut self.log {
                // Mail goes out before a commit that may take a while (other shards need not
                // wait for this one's disk), and again after it (acknowledgements it released).
                self.port.flush(&mut self.engine);
                // A pass that found nothing commits what is pending at once.
                let idle = frames == 0 && !worked && mail == 0 && self.backlog.is_empty();
                log.step(&mut self.engine, now, idle);
            }
            // 4. Engine output into the sockets; closes; mail out.
            self.flush_all(now);
            self.expire_closing(now);
            if self.accepting && self.pool_short {
                self.fill_listen_pool(now);
            }
            self.port.flush(&mut self.engine);
            // 5. Egress when a socket woke (data, a state change, send space while output
            // waits) or was written, and every millisecond for TCP's timers; only buckets that
            // had traffic, except on the millisecond. Frames that woke nobody (pure ACKs)
            // need no egress; ARP and resets were answered during ingress.
            if worked || self.egress_due || now != self.egress_ms {
                self.egress(now, ts);
            }
            if let Some(deadline) = drain_deadline {
                if self.open == 0 || now >= deadline {
                    break;
                }
            }
            // 6. Idle.
            if frames == 0 && !worked && mail == 0 && self.backlog.is_empty() {
                self.idle(now, ts);
            }
        }
        // Whatever is still open is reset (the resets go out before the sockets are dropped).
        self.abort_all();
        let (now, ts) = self.clock();
        self.egress(now, ts);
        let ids: Vec<ConnId> = self.conns.ids().collect();
        for id in ids {
            self.remove(now, id);
        }
        if let Some(log) = &mut self.log {
            log.finish(&mut self.engine, now);
        }
        tracing::info!(shard = self.ctx.shard, stats = ?self.engine.stats(),
            device = %self.ctx.device.report(), "shard stopped");
    }

    fn idle(&mut self, now: u64, ts: NetInstant) {
        match self.ctx.stack.idle {
            PollIdle::Spin => {}
            PollIdle::Pause => {
                for _ in 0..PAUSE_SPINS {
                    std::hint::spin_loop();
                }
            }
            PollIdle::Sleep => {
                let mut max = SLEEP_MAX;
                // Sleeping is for development: here the walk over every socket is affordable.
                for b in &mut self.buckets {
                    match b.iface.poll_at(ts, &b.sockets) {
                        Some(t) if t <= ts => max = Duration::ZERO,
                        Some(t) => max = max.min(Duration::from_micros((t - ts).total_micros())),
                        None => {}
                    }
                }
                if let Some(t) = self.engine.poll_deadline() {
                    max = max.min(Duration::from_millis(t.saturating_sub(now)));
                }
                if !self.closing.is_empty() {
                    max = max.min(Duration::from_millis(1));
                }
                if let Some(w) = self.log.as_ref().and_then(ShardLog::wait_hint) {
                    max = max.min(w);
                }
                if !max.is_zero() && self.ctx.mesh.park(self.ctx.shard) {
                    self.ctx.device.wait(max);
                    self.ctx.mesh.unpark(self.ctx.shard);
                }
            }
        }
    }

    /// Reads frames off the device into their buckets' queues, then lets each bucket's stack
    /// process them. Returns the number of device frames.
    fn ingress(&mut self, now: u64, ts: NetInstant) -> usize {
        let n = self.buckets.len();
        let arp_native = self.ctx.device.receives_arp();
        let mut frames = 0;
        while frames < INGRESS_BUDGET {
            let Some(frame) = self.ctx.device.receive_frame() else {
                break;
            };
            let b = buckets::bucket_of(frame.as_ref(), n);
            self.buckets[b].push(frame, !(arp_native && b == 0), now);
            frames += 1;
        }
        for i in 0..n {
            if self.buckets[i].rx.is_empty() {
                continue;
            }
            self.buckets[i].dirty = true;
            loop {
                let b = &mut self.buckets[i];
                let mut dev = BucketDevice {
                    rx: &mut b.rx,
                    dev: &mut self.ctx.device,
                };
                match b.iface.poll_ingress_single(ts, &mut dev, &mut b.sockets) {
                    PollIngressSingleResult::None => break,
                    PollIngressSingleResult::SocketStateChanged => self.claim_listeners(now),
                    PollIngressSingleResult::PacketProcessed => {}
                }
            }
        }
        frames
    }

    /// Once every 10 s at most: a warning if the device lost frames since the last one.
    fn check_drops(&mut self, now: u64) {
        let (seen, at) = self.drops_seen;
        if now < at + 10_000 {
            return;
        }
        let dropped = self.ctx.device.dropped_frames();
        if dropped > seen {
            tracing::warn!(shard = self.ctx.shard, lost = dropped - seen, total = dropped,
                device = %self.ctx.device.report(),
                "frames lost by the device (each costs its connection a retransmission timeout, 1 s at least): raise dpdk.ports[].tx_descriptors and mempool_mbufs, or spread the load over more shards");
        }
        self.drops_seen = (dropped, now);
    }

    fn egress(&mut self, now: u64, ts: NetInstant) {
        for b in self.touched.drain(..) {
            self.buckets[b as usize].dirty = true;
        }
        let all = now != self.egress_ms;
        if all {
            self.check_drops(now);
        }
        // Every round visits every socket of its bucket, so run as many as the largest write
        // needs, not one more to find out that nothing is left (what is left goes out on the
        // next pass).
        let rounds = self.egress_rounds.min(EGRESS_ROUNDS);
        for b in &mut self.buckets {
            if !(all || b.dirty) {
                continue;
            }
            b.dirty = false;
            let mut dev = BucketDevice {
                rx: &mut b.rx,
                dev: &mut self.ctx.device,
            };
            for _ in 0..rounds {
                match b.iface.poll_egress(ts, &mut dev, &mut b.sockets) {
                    PollResult::None => break,
                    PollResult::SocketStateChanged => {}
                }
            }
        }
        self.ctx.device.flush_tx();
        self.egress_due = false;
        self.egress_rounds = 1;
        self.egress_ms = now;
    }

    /// Keeps `listen_pool` sockets listening on every port while connections are below the
    /// limit. A SYN beyond the pool (or the limit) is answered with a reset by smoltcp.
    fn fill_listen_pool(&mut self, now: u64) {
        // Cleared here, set again wherever a listening socket leaves the pool (and stays set
        // while the connection limit keeps the pool short).
        self.pool_short = false;
        let stack = self.ctx.stack.clone();
        for bucket in 0..self.buckets.len() {
            for (index, &port) in stack.ports.iter().enumerate() {
                while self.buckets[bucket].listening[index] < self.bucket_pool {
                    if !self.add_listener(now, &stack, bucket, index, port) {
                        return;
                    }
                }
            }
        }
    }

    /// Adds one listening socket to `bucket` for port `ports[index]`; false when the
    /// connection limit or the slots are exhausted (or listening fails).
    fn add_listener(
        &mut self,
        now: u64,
        stack: &StackConfig,
        bucket: usize,
        index: usize,
        port: u16,
    ) -> bool {
        let listening: usize = self
            .buckets
            .iter()
            .map(|b| b.listening.iter().sum::<usize>())
            .sum();
        let total = self.open + self.half_open + listening;
        if total >= stack.max_connections {
            self.pool_short = true;
            if self.buckets[bucket].listening[index] == 0
                && self.refused_logged_ms.is_none_or(|t| now >= t + 10_000)
            {
                tracing::warn!(shard = self.ctx.shard, connections = self.open,
                    max = stack.max_connections,
                    "connection limit of the shard reached; new connections are reset (raise userspace.max_connections_per_shard or add shards)");
                self.refused_logged_ms = Some(now);
            }
            return false;
        }
        let Some(slot) = self.slots.take() else {
            self.pool_short = true;
            return false;
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; stack.socket_rx_buffer]),
            tcp::SocketBuffer::new(vec![0; stack.socket_tx_buffer]),
        );
        // Low latency: no Nagle, no delayed ACK; congestion control on.
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        if let Err(e) = socket.listen(port) {
            tracing::error!(shard = self.ctx.shard, port, error = ?e, "cannot listen");
            self.slots.give_back(slot);
            return false;
        }
        let id = conn_id(self.ctx.shard, self.next_conn, slot);
        self.next_conn += 1;
        socket.register_recv_waker(&ready::waker(id));
        let b = &mut self.buckets[bucket];
        let handle = b.sockets.add(socket);
        b.listening[index] += 1;
        self.conns.insert(
            id,
            Conn {
                handle,
                bucket: bucket as u16,
                phase: Phase::Listening,
                port: index,
                rx: None,
            },
        );
        true
    }

    /// A SYN took a listening socket: replace it at once, before the next frame, so that a
    /// burst of SYNs finds the pool full (smoltcp has no backlog; a SYN that finds no
    /// listening socket is reset).
    fn claim_listeners(&mut self, now: u64) {
        // smoltcp reports every processed frame as a possible state change: look only at the
        // sockets woken by this one (sorting waits for the end of ingress).
        let start = self.ready.len();
        ready::append(&mut self.ready);
        let mut claimed = false;
        for &id in &self.ready[start..] {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let b = &mut self.buckets[conn.bucket as usize];
            if conn.phase == Phase::Listening
                && b.sockets.get::<tcp::Socket>(conn.handle).state() != tcp::State::Listen
            {
                conn.phase = Phase::Accepting;
                b.listening[conn.port] -= 1;
                self.half_open += 1;
                self.pool_short = true;
                claimed = true;
            }
        }
        if claimed && self.accepting {
            self.fill_listen_pool(now);
        }
    }

    fn stop_listening(&mut self) {
        self.accepting = false;
        let ids: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| matches!(c.phase, Phase::Listening | Phase::Accepting))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            self.remove(0, id);
        }
    }

    /// Handles what smoltcp woke `id` for, then registers its wakers again.
    fn service(&mut self, now: u64, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return; // a stale wake of a removed socket
        };
        // Whatever it was woken for (data read: a window update; a state change) may have
        // something for its stack to send.
        self.touched.push(conn.bucket);
        let Bucket {
            sockets, listening, ..
        } = &mut self.buckets[conn.bucket as usize];
        let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
        match conn.phase {
            Phase::Listening | Phase::Accepting => match socket.state() {
                tcp::State::Listen => {
                    if conn.phase == Phase::Accepting {
                        // The handshake was reset and smoltcp listens again: back in the pool.
                        conn.phase = Phase::Listening;
                        self.half_open -= 1;
                        listening[conn.port] += 1;
                    }
                }
                tcp::State::SynReceived => {
                    if conn.phase == Phase::Listening {
                        conn.phase = Phase::Accepting;
                        listening[conn.port] -= 1;
                        self.half_open += 1;
                        self.pool_short = true;
                    }
                }
                tcp::State::Closed => {
                    // A half-open connection was reset: listen again.
                    let port = self.ctx.stack.ports[conn.port];
                    if socket.listen(port).is_err() {
                        self.remove(now, id);
                        return;
                    }
                    if conn.phase == Phase::Accepting {
                        conn.phase = Phase::Listening;
                        self.half_open -= 1;
                        listening[conn.port] += 1;
                    }
                }
                _ => {
                    // Established (or already half-closed by a fast peer): a connection.
                    if conn.phase == Phase::Listening {
                        listening[conn.port] -= 1;
                    } else {
                        self.half_open -= 1;
                    }
                    self.pool_short = true; // and room under the limit changed
                    conn.phase = Phase::Open;
                    let peer = peer_of(socket);
                    self.open += 1;
                    // The engine's listener number is the index in `StackConfig::ports`.
                    self.engine.handle_open(now, id, peer, conn.port as u16);
                    self.read(now, id);
                }
            },
            Phase::Open => {
                self.read(now, id);
                self.flush(now, id);
            }
            Phase::Flushing { .. } => {
                self.discard_input(now, id);
                self.flush(now, id);
            }
            Phase::Lingering { .. } => self.discard_input(now, id),
        }
        self.rearm(id);
    }

    /// Registers the wakers of `id` again (a wake consumes them).
    fn rearm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        let socket = self.buckets[conn.bucket as usize]
            .sockets
            .get_mut::<tcp::Socket>(conn.handle);
        let waker = ready::waker(id);
        socket.register_recv_waker(&waker);
        // Send space matters only while output waits for it.
        let waiting =
            matches!(conn.phase, Phase::Open | Phase::Flushing { .. }) && socket.send_queue() > 0;
        if waiting {
            socket.register_send_waker(&waker);
        }
    }

    fn hold_back(&self, id: ConnId) -> bool {
        self.port.overflow_len() > OVERFLOW_MAX
            || (self.engine.congested() && self.engine.throttled(id))
    }

    /// Moves received bytes of `id` to the engine; notices the peer's FIN or reset.
    fn read(&mut self, now: u64, id: ConnId) {
        if self.hold_back(id) {
            self.backlog.push(id);
            return;
        }
        let mut budget = READ_BUDGET_BYTES;
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            if conn.phase != Phase::Open {
                return;
            }
            self.touched.push(conn.bucket); // reading may open the window: an update to send
            let socket = self.buckets[conn.bucket as usize]
                .sockets
                .get_mut::<tcp::Socket>(conn.handle);
            if !socket.can_recv() {
                if !socket.may_recv() {
                    // FIN received and everything read, or the connection was reset.
                    self.peer_closed(now, id);
                }
                return;
            }
            let own = conn
                .rx
                .as_ref()
                .is_some_and(|rx| rx.len() > PARTIAL_COPY_MAX);
            let taken = if own {
                let rx = conn.rx.as_deref_mut().expect("checked above");
                take_all(socket, rx)
            } else {
                let carried = conn.rx.as_ref().map_or(0, |rx| rx.len());
                if self.ingress.capacity() < socket.recv_queue() + carried {
                    // Empty here: consumed, or moved to its connection, after each read.
                    self.ingress_pool.refill(&mut self.ingress);
                }
                if let Some(rx) = conn.rx.as_deref_mut() {
                    self.ingress.extend_from_slice(rx);
                    rx.clear();
                }
                take_all(socket, &mut self.ingress)
            };
            if own {
                let mut rx = conn.rx.take().expect("checked above");
                self.engine.handle_bytes(now, id, &mut rx);
                if let Some(conn) = self.conns.get_mut(id) {
                    if !rx.is_empty() {
                        conn.rx = Some(rx);
                    }
                }
            } else {
                self.engine.handle_bytes(now, id, &mut self.ingress);
                if !self.ingress.is_empty() {
                    if let Some(conn) = self.conns.get_mut(id) {
                        match conn.rx.as_deref_mut() {
                            Some(rx) => rx.extend_from_slice(&self.ingress),
                            None => conn.rx = Some(Box::new(BytesMut::from(&self.ingress[..]))),
                        }
                    }
                    self.ingress.clear();
                }
                if let Some(conn) = self.conns.get_mut(id) {
                    if conn.rx.as_ref().is_some_and(|rx| rx.is_empty()) {
                        conn.rx = None;
                    }
                }
            }
            budget = budget.saturating_sub(taken);
            if budget == 0 || self.hold_back(id) {
                self.backlog.push(id);
                return;
            }
        }
    }

    /// The peer finished sending (FIN) or reset: the engine forgets the connection; our FIN
    /// follows what is still queued in the socket.
    fn peer_closed(&mut self, now: u64, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let socket = self.buckets[conn.bucket as usize]
            .sockets
            .get_mut::<tcp::Socket>(conn.handle);
        socket.close();
        conn.phase = Phase::Lingering {
            deadline_ms: now + CLOSE_LINGER_MS,
        };
        self.open -= 1;
        self.closing.push(id);
        self.egress_due = true;
        self.touched.push(conn.bucket);
        self.engine.handle_closed(now, id);
    }

    /// Drops input of a closing socket; notices when TCP is done with it.
    fn discard_input(&mut self, now: u64, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let socket = self.buckets[conn.bucket as usize]
            .sockets
            .get_mut::<tcp::Socket>(conn.handle);
        while socket.can_recv() {
            let _ = socket.recv(|b| (b.len(), ()));
        }
        if matches!(conn.phase, Phase::Lingering { .. })
            && matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
        {
            self.remove(now, id);
        }
    }

    fn flush_all(&mut self, now: u64) {
        while let Some(id) = self.engine.poll_dirty() {
            self.flush(now, id);
        }
        while let Some(id) = self.engine.poll_close() {
            match self.conns.get_mut(id) {
                Some(conn) if conn.phase == Phase::Open => {
                    conn.phase = Phase::Flushing {
                        deadline_ms: now + CLOSE_FLUSH_MS,
                    };
                    self.closing.push(id);
                    self.flush(now, id);
                }
                Some(_) => {}
                None => self.engine.handle_closed(now, id),
            }
        }
    }

    /// Copies queued output of `id` into its socket's send ring, as far as it has room.
    fn flush(&mut self, now: u64, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Open | Phase::Flushing { .. }) {
            return;
        }
        let socket = self.buckets[conn.bucket as usize]
            .sockets
            .get_mut::<tcp::Socket>(conn.handle);
        let Some(out) = self.engine.out_queue(id) else {
            return;
        };
        let mut failed = false;
        let mut wrote = false;
        while !out.is_empty() {
            let Some(chunk) = out.chunks().next() else {
                break;
            };
            match socket.send_slice(chunk) {
                Ok(n) => {
                    let short = n < chunk.len();
                    wrote |= n > 0;
                    out.consume(n);
                    if short {
                        socket.register_send_waker(&ready::waker(id));
                        break;
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let drained = out.is_empty();
        self.egress_due |= wrote;
        if wrote {
            self.touched.push(conn.bucket);
            let rounds = socket.send_queue().div_ceil(SEGMENT_BYTES).max(1);
            self.egress_rounds = self.egress_rounds.max(rounds);
        }
        if failed {
            // The socket cannot send any more (reset): the connection is gone.
            if conn.phase == Phase::Open {
                self.open -= 1;
                conn.phase = Phase::Lingering { deadline_ms: now };
                self.closing.push(id);
                self.engine.handle_closed(now, id);
            }
        } else if drained && matches!(conn.phase, Phase::Flushing { .. }) {
            // Everything queued: FIN after it, and the engine forgets the connection.
            socket.close();
            conn.phase = Phase::Lingering {
                deadline_ms: now + CLOSE_LINGER_MS,
            };
            self.open -= 1;
            self.egress_due = true;
            self.touched.push(conn.bucket);
            self.engine.handle_closed(now, id);
        }
    }

    /// Closing sockets past their deadline are aborted (a peer that neither reads nor
    /// closes) and removed on the next pass, after the reset went out.
    fn expire_closing(&mut self, now: u64) {
        if self.closing.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.closing);
        for id in ids {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let socket = self.buckets[conn.bucket as usize]
                .sockets
                .get_mut::<tcp::Socket>(conn.handle);
            match conn.phase {
                Phase::Lingering { .. }
                    if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) =>
                {
                    self.remove(now, id);
                }
                Phase::Flushing { deadline_ms } if now >= deadline_ms => {
                    socket.abort();
                    conn.phase = Phase::Lingering { deadline_ms: now };
                    self.open -= 1;
                    self.egress_due = true;
                    self.touched.push(conn.bucket);
                    self.engine.handle_closed(now, id);
                    self.closing.push(id);
                }
                Phase::Lingering { deadline_ms } if now >= deadline_ms => {
                    if socket.is_open() {
                        socket.abort();
                        self.egress_due = true;
                        self.touched.push(conn.bucket);
                        self.closing.push(id);
                    } else {
                        self.remove(now, id);
                    }
                }
                Phase::Flushing { .. } | Phase::Lingering { .. } => self.closing.push(id),
                Phase::Open | Phase::Listening | Phase::Accepting => {}
            }
        }
    }

    /// Forgets a socket; an `Open` or `Flushing` one is closed in the engine first.
    fn remove(&mut self, now: u64, id: ConnId) {
        let Some(conn) = self.conns.remove(id) else {
            return;
        };
        // Whatever goes, the pool may be refilled (a slot and room under the limit freed).
        self.pool_short = true;
        match conn.phase {
            Phase::Listening => self.buckets[conn.bucket as usize].listening[conn.port] -= 1,
            Phase::Accepting => self.half_open -= 1,
            Phase::Open | Phase::Flushing { .. } => {
                self.open -= 1;
                self.engine.handle_closed(now, id);
            }
            Phase::Lingering { .. } => {}
        }
        self.buckets[conn.bucket as usize]
            .sockets
            .remove(conn.handle);
        self.slots.give_back(slot_number(id));
    }

    fn abort_all(&mut self) {
        for b in &mut self.buckets {
            b.dirty = true;
        }
        for (_, conn) in self.conns.iter_mut() {
            self.buckets[conn.bucket as usize]
                .sockets
                .get_mut::<tcp::Socket>(conn.handle)
                .abort();
        }
    }
}

/// Copies everything `socket` has received to the end of `buf` (the two halves of its ring
/// when the data wraps). Returns the byte count.
fn take_all(socket: &mut tcp::Socket, buf: &mut BytesMut) -> usize {
    let mut total = 0;
    while socket.can_recv() {
        let n = socket
            .recv(|data| {
                buf.extend_from_slice(data);
                (data.len(), data.len())
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}
