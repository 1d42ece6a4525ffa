//! The loop of one shard on kernel sockets.
//!
//! Reads go into one shard-wide ingress buffer, so an idle connection holds no receive buffer:
//! complete packets are split off it as reference-counted slices (no copy). A trailing partial
//! packet is kept with its connection and copied in front of that connection's next read (a
//! large one is read into its own buffer until complete). Used ingress buffers are recycled
//! once no message holds a slice of them. Writes take the engine's queued chunks and hand up
//! to 64 of them to one `writev`.

use std::io::{IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use nix::errno::Errno;
use nix::libc;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, setsockopt, sockopt, SockFlag};
use tachyon_engine::recycle::Recycler;
use tachyon_engine::{ConnId, Engine};
use tachyon_shard::{Mesh, Port};

use crate::durable::ShardLog;

use super::{IdleStrategy, Shutdown};
use crate::shutdown::{pin_to_core, PanicGuard};
use crate::sockets::{conn_id, SocketTable, SLOT_MAX};

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_LISTENER_BASE: u64 = u64::MAX - 1024;
/// Bytes read from one connection per readiness event before others get a turn.
const READ_BUDGET_BYTES: usize = 1 << 20;
/// Mail taken from the rings per loop iteration.
const MAIL_BUDGET: usize = 4096;
/// Backpressure: while this much mail waits for room in full rings (another shard is
/// behind), this shard stops reading its sockets, so a fast publisher cannot make it buffer
/// without bound; TCP flow control then slows the publisher.
const OVERFLOW_MAX: usize = 65_536;
const INGRESS_CAPACITY: usize = 256 * 1024;
/// Used ingress buffers kept for reuse (see `tachyon_engine::recycle`).
const INGRESS_POOL: usize = 4;
const READ_CHUNK_MIN: usize = 16 * 1024;
/// A partial packet up to this size is copied in front of the next read into the shared
/// buffer; a larger one (a big packet arriving in pieces) is read into its own buffer.
const PARTIAL_COPY_MAX: usize = 16 * 1024;
const IOV_MAX_BATCH: usize = 64;
/// Longest sleep when no timer is due, so a missed wakeup costs at most this much.
const IDLE_TIMEOUT_MS: u64 = 1000;
/// How long a closing connection may take to write its last output (a final DISCONNECT).
const CLOSE_FLUSH_MS: u64 = 2000;
/// After the half-close, how long unread input is drained so that closing does not send a
/// reset (which would discard the final packets still in flight to the peer).
const CLOSE_LINGER_MS: u64 = 1000;

pub(super) struct ShardContext {
    pub shard: usize,
    pub core: Option<usize>,
    pub listeners: Vec<(SocketAddr, OwnedFd)>,
    pub wake_fd: OwnedFd,
    pub mesh: Arc<Mesh>,
    pub shutdown: Arc<Shutdown>,
    pub idle: IdleStrategy,
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
    pub shutdown_drain_ms: u64,
    /// The broker's time origin, shared by all shards: absolute times (message expiry, will
    /// delay) travel between shards and must mean the same on each.
    pub epoch: Instant,
    pub observer: crate::observe::Observer,
}

/// Where a socket is in its life. Closing is graceful: the engine's last output (DISCONNECT,
/// CONNACK refusal) is written, then the write side is shut, then input is drained until the
/// peer closes, so that no reset overtakes the final packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The engine closed the connection; writing what it queued.
    Flushing {
        deadline_ms: u64,
    },
    /// Output written and write side shut; the engine has forgotten the connection.
    Lingering {
        deadline_ms: u64,
    },
}

struct Socket {
    stream: TcpStream,
    /// A partial packet waiting for its remaining bytes; `None` otherwise (an idle
    /// connection holds no receive memory, not even the buffer header).
    rx: Option<Box<BytesMut>>,
    /// Output could not be written completely; wait for EPOLLOUT.
    blocked: bool,
    phase: Phase,
}

struct Shard {
    ctx: ShardContext,
    epoll: Epoll,
    engine: Engine,
    log: Option<ShardLog>,
    port: Port,
    socks: SocketTable<Socket>,
    ingress: BytesMut,
    /// Used ingress buffers whose payload slices may still be held (messages in queues).
    ingress_pool: Recycler,
    next_conn: u64,
    start: Instant,
    /// Connections whose read budget ran out before EAGAIN (edge-triggered: revisit them).
    backlog: Vec<ConnId>,
    /// When epoll last reported something (for `IdleStrategy::Hybrid`).
    last_event: Instant,
    /// The backlog being worked through (swapped with `backlog`, so neither reallocates).
    backlog_work: Vec<ConnId>,
    /// Kept open so that EMFILE can be answered by accepting and closing (see `accept_all`).
    reserve_fd: Option<OwnedFd>,
    listening: bool,
    /// Sockets in a closing phase, checked for their deadlines.
    closing: Vec<ConnId>,
    /// Listeners are out of the epoll set until then (descriptor exhaustion).
    listen_paused_until: Option<u64>,
    /// Connections refused for lack of descriptors since the last log line.
    refused: u64,
    refused_logged_ms: Option<u64>,
}

/// Runs shard `ctx.shard` with its engine (holding what recovery restored) and its WAL
/// (`None` without durability).
pub(super) fn run_shard(ctx: ShardContext, engine: Engine, log: Option<ShardLog>) {
    let _guard = PanicGuard(ctx.shutdown.clone(), ctx.shard);
    if let Some(core) = ctx.core {
        pin_to_core(ctx.shard, core);
    }
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(shard = ctx.shard, error = %e, "epoll_create failed; shard not started");
            ctx.shutdown.trigger();
            return;
        }
    };
    let mut setup_ok = epoll
        .add(
            ctx.wake_fd.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
        )
        .is_ok();
    for (i, (_, fd)) in ctx.listeners.iter().enumerate() {
        setup_ok &= epoll
            .add(
                fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER_BASE + i as u64),
            )
            .is_ok();
    }
    if !setup_ok {
        tracing::error!(shard = ctx.shard, "epoll_ctl failed; shard not started");
        ctx.shutdown.trigger();
        return;
    }
    let port = Port::new(ctx.shard, ctx.mesh.clone());
    let reserve_fd = open_reserve();
    let epoch = ctx.epoch;
    let mut shard = Shard {
        ctx,
        epoll,
        engine,
        log,
        port,
        socks: SocketTable::new(),
        ingress: BytesMut::with_capacity(INGRESS_CAPACITY),
        ingress_pool: Recycler::new(INGRESS_CAPACITY, INGRESS_POOL),
        next_conn: 1,
        start: epoch,
        backlog: Vec::new(),
        last_event: Instant::now(),
        backlog_work: Vec::new(),
        reserve_fd,
        listening: true,
        closing: Vec::new(),
        listen_paused_until: None,
        refused: 0,
        refused_logged_ms: None,
    };
    shard.run();
}

fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl Shard {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 1024];
        let mut drain_deadline: Option<u64> = None;
        loop {
            // Decide how long we may block.
            let now = self.now();
            let busy = !self.backlog.is_empty() || self.port.has_overflow();
            let mut timeout_ms = match self.engine.poll_deadline() {
                Some(t) => t.saturating_sub(now).min(IDLE_TIMEOUT_MS),
                None => IDLE_TIMEOUT_MS,
            };
            if !self.closing.is_empty() || self.listen_paused_until.is_some() {
                timeout_ms = timeout_ms.min(50);
            }
            if self.engine.congested() {
                timeout_ms = timeout_ms.min(1);
            }
            if let Some(w) = self.log.as_ref().and_then(ShardLog::wait_hint) {
                // An open group-commit batch closes on time.
                timeout_ms = timeout_ms.min(w.as_millis() as u64);
            }
            let spinning = match self.ctx.idle {
                IdleStrategy::Spin => true,
                IdleStrategy::Block => false,
                IdleStrategy::Hybrid { spin_us } => {
                    self.last_event.elapsed() < std::time::Duration::from_micros(spin_us.into())
                }
            };
            if busy || spinning || drain_deadline.is_some() {
                timeout_ms = if drain_deadline.is_some() {
                    timeout_ms.min(10)
                } else {
                    0
                };
            }
            let parked = timeout_ms > 0 && self.ctx.mesh.park(self.ctx.shard);
            if timeout_ms > 0 && !parked {
                timeout_ms = 0;
            }
            let n = match self
                .epoll
                .wait(&mut events, EpollTimeout::from(timeout_ms as u16))
            {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!(shard = self.ctx.shard, error = %e, "epoll_wait failed; stopping shard");
                    break;
                }
            };
            if parked {
                self.ctx.mesh.unpark(self.ctx.shard);
            }
            if n > 0 && matches!(self.ctx.idle, IdleStrategy::Hybrid { .. }) {
                self.last_event = Instant::now();
            }
            let now = self.now();
            self.engine
                .set_clock_us(crate::observe::clock_us(self.ctx.epoch));
            for ev in &events[..n] {
                let token = ev.data();
                if token == TOKEN_WAKE {
                    self.drain_wake_fd();
                } else if token >= TOKEN_LISTENER_BASE {
                    self.accept_all(now, (token - TOKEN_LISTENER_BASE) as usize);
                } else {
                    let id = ConnId(token);
                    let flags = ev.events();
                    if flags.intersects(EpollFlags::EPOLLOUT) {
                        if let Some(s) = self.socks.get_mut(id) {
                            s.blocked = false;
                        }
                        self.flush(now, id);
                    }
                    if flags.intersects(
                        EpollFlags::EPOLLIN
                            | EpollFlags::EPOLLRDHUP
                            | EpollFlags::EPOLLHUP
                            | EpollFlags::EPOLLERR,
                    ) {
                        if self.hold_back(id) {
                            // Edge-triggered: remember it, read once the pressure is gone.
                            self.backlog.push(id);
                        } else {
                            // Only data: a short read means the socket is drained (a later
                            // arrival raises a new edge). A peer that closed is read to EOF.
                            let closed = flags.intersects(
                                EpollFlags::EPOLLRDHUP
                                    | EpollFlags::EPOLLHUP
                                    | EpollFlags::EPOLLERR,
                            );
                            self.read_some(now, id, !closed);
                        }
                    }
                }
            }
            let mut backlog = std::mem::take(&mut self.backlog_work);
            std::mem::swap(&mut backlog, &mut self.backlog);
            backlog.sort_unstable();
            backlog.dedup();
            for &id in &backlog {
                if self.hold_back(id) {
                    self.backlog.push(id);
                } else {
                    self.read(now, id);
                }
            }
            backlog.clear();
            self.backlog_work = backlog;
            // A congested shard (a connected subscriber behind) takes no mail from the others
            // either: their rings fill, and they stop reading their publishers in turn.
            if !self.engine.congested() {
                self.engine
                    .set_clock_us(crate::observe::clock_us(self.ctx.epoch));
                self.port.drain(&mut self.engine, now, MAIL_BUDGET);
            }
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
                drain_deadline = Some(now + self.ctx.shutdown_drain_ms);
            }
            // Records into the WAL before output is written (acks that wait for them are
            // released by the commit).
            if let Some(log) = &mut self.log {
                // Mail goes out before a commit that may take a while (other shards need not
                // wait for this one's disk), and again after it (acknowledgements it released).
                self.port.flush(&mut self.engine);
                // A pass that found nothing commits what is pending at once.
                let idle = n == 0 && self.backlog.is_empty();
                log.step(&mut self.engine, now, idle);
            }
            self.flush_all(now);
            self.expire_closing(now);
            if self.listening {
                self.resume_listening(now);
            }
            self.port.flush(&mut self.engine);
            if let Some(deadline) = drain_deadline {
                if self.socks.is_empty() || now >= deadline {
                    break;
                }
            }
        }
        let now = self.now();
        let ids: Vec<ConnId> = self.socks.ids().collect();
        for id in ids {
            self.drop_socket(now, id);
        }
        if let Some(log) = &mut self.log {
            log.finish(&mut self.engine, now);
        }
        tracing::info!(shard = self.ctx.shard, stats = ?self.engine.stats(), "shard stopped");
    }

    /// Backpressure: input from `id` waits while the rings to other shards overflow, or
    /// while a connected subscriber on this shard is behind and `id` is a publisher.
    fn hold_back(&self, id: ConnId) -> bool {
        self.port.overflow_len() > OVERFLOW_MAX
            || (self.engine.congested() && self.engine.throttled(id))
    }

    fn drain_wake_fd(&mut self) {
        crate::wake::drain(&self.ctx.wake_fd);
    }

    fn pause_listening(&mut self, now: u64) {
        for (_, fd) in &self.ctx.listeners {
            let _ = self.epoll.delete(fd.as_fd());
        }
        self.listen_paused_until = Some(now + 100);
    }

    fn resume_listening(&mut self, now: u64) {
        match self.listen_paused_until {
            Some(t) if now >= t => {}
            _ => return,
        }
        self.listen_paused_until = None;
        if self.reserve_fd.is_none() {
            self.reserve_fd = open_reserve();
        }
        for (i, (_, fd)) in self.ctx.listeners.iter().enumerate() {
            let ev = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER_BASE + i as u64);
            let _ = self.epoll.add(fd.as_fd(), ev);
        }
    }

    fn stop_listening(&mut self) {
        if !self.listening {
            return;
        }
        self.listening = false;
        for (_, fd) in &self.ctx.listeners {
            let _ = self.epoll.delete(fd.as_fd());
        }
        self.ctx.listeners.clear();
    }

    fn accept_all(&mut self, now: u64, index: usize) {
        let Some((_, lfd)) = self.ctx.listeners.get(index) else {
            return;
        };
        let lraw = lfd.as_raw_fd();
        loop {
            match accept4(lraw, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(raw) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    self.adopt(now, fd, index as u16);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE)) => {
                    // Out of descriptors: refuse cleanly instead of spinning on a listener
                    // that stays readable. Free the reserve, accept, close, take it back.
                    // One log line per second at most, with the count refused meanwhile.
                    self.refused += 1;
                    if self.refused_logged_ms.is_none_or(|t| now >= t + 1000) {
                        tracing::warn!(shard = self.ctx.shard, error = %e, connections = self.socks.len(),
                            refused = self.refused,
                            "out of file descriptors; refusing new connections (raise `ulimit -n` or lower load)");
                        self.refused = 0;
                        self.refused_logged_ms = Some(now);
                    }
                    self.reserve_fd = None;
                    if let Ok(raw) = accept4(lraw, SockFlag::SOCK_CLOEXEC) {
                        // SAFETY: as above; dropped at once, which closes it.
                        drop(unsafe { OwnedFd::from_raw_fd(raw) });
                    }
                    self.reserve_fd = open_reserve();
                    if self.reserve_fd.is_none() {
                        // Another shard took the freed descriptor: stop watching the listeners
                        // for a moment rather than spin on a listener that stays readable.
                        self.pause_listening(now);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(shard = self.ctx.shard, error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Takes a new connection of listener `listener` (its index in `KernelConfig::listeners`).
    fn adopt(&mut self, now: u64, fd: OwnedFd, listener: u16) {
        let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
        if self.ctx.socket_rcvbuf > 0 {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &self.ctx.socket_rcvbuf);
        }
        if self.ctx.socket_sndbuf > 0 {
            let _ = setsockopt(&fd, sockopt::SndBuf, &self.ctx.socket_sndbuf);
        }
        let stream = TcpStream::from(fd);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let fd_num = stream.as_raw_fd();
        if fd_num < 0 || fd_num as u32 > SLOT_MAX {
            tracing::warn!(shard = self.ctx.shard, peer = %peer, fd = fd_num,
                "descriptor above what a connection id holds (2^24); connection refused; keep the open-files limit (ulimit -n, LimitNOFILE) below 16,777,216");
            return;
        }
        let id = conn_id(self.ctx.shard, self.next_conn, fd_num as u32);
        self.next_conn += 1;
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(stream.as_fd(), EpollEvent::new(flags, id.0)) {
            tracing::warn!(shard = self.ctx.shard, peer = %peer, error = %e, "epoll_ctl(ADD) failed; dropping connection");
            return;
        }
        self.socks.insert(
            id,
            Socket {
                stream,
                rx: None,
                blocked: false,
                phase: Phase::Open,
            },
        );
        self.engine.handle_open(now, id, peer, listener);
    }

    /// Reads until EAGAIN (or the budget).
    fn read(&mut self, now: u64, id: ConnId) {
        self.read_some(now, id, false);
    }

    /// Reads; with `short_stops`, a read that does not fill the space offered ends it (saves
    /// the read that would only return EAGAIN: one syscall per wake-up of a quiet client).
    fn read_some(&mut self, now: u64, id: ConnId, short_stops: bool) {
        if self.socks.get(id).is_some_and(|s| s.phase != Phase::Open) {
            self.discard_input(now, id);
            return;
        }
        let mut budget = READ_BUDGET_BYTES;
        self.engine
            .set_clock_us(crate::observe::clock_us(self.ctx.epoch));
        loop {
            let Some(sock) = self.socks.get_mut(id) else {
                return;
            };
            let fd = sock.stream.as_raw_fd();
            // A large packet in progress is read into its connection's own buffer (it is not
            // copied again on every read). A small remainder is copied in front of the shared
            // buffer instead, so that a streaming publisher costs no allocation per read.
            let own = sock
                .rx
                .as_ref()
                .is_some_and(|rx| rx.len() > PARTIAL_COPY_MAX);
            let mut offered = 0;
            let res = if own {
                let rx = sock.rx.as_deref_mut().expect("checked above");
                read_into(fd, rx, READ_CHUNK_MIN, &mut offered)
            } else {
                let carried = sock.rx.as_ref().map_or(0, |rx| rx.len());
                if self.ingress.capacity() < READ_CHUNK_MIN + carried {
                    // Empty here: consumed, or moved to its connection, after each read.
                    self.ingress_pool.refill(&mut self.ingress);
                }
                if let Some(rx) = sock.rx.as_deref_mut() {
                    self.ingress.extend_from_slice(rx);
                    rx.clear();
                }
                let res = read_into(fd, &mut self.ingress, INGRESS_CAPACITY, &mut offered);
                if !matches!(res, Ok(n) if n > 0) && carried > 0 {
                    // Nothing new arrived: the remainder goes back to its connection.
                    if let Some(rx) = sock.rx.as_deref_mut() {
                        rx.extend_from_slice(&self.ingress);
                    }
                    self.ingress.clear();
                }
                res
            };
            match res {
                Ok(0) => {
                    self.lost(now, id);
                    return;
                }
                Ok(n) => {
                    if own {
                        let mut rx = sock.rx.take().expect("checked above");
                        self.engine.handle_bytes(now, id, &mut rx);
                        if let Some(sock) = self.socks.get_mut(id) {
                            // Keep the buffer only while a partial packet waits in it.
                            if !rx.is_empty() {
                                sock.rx = Some(rx);
                            }
                        }
                    } else {
                        self.engine.handle_bytes(now, id, &mut self.ingress);
                        if !self.ingress.is_empty() {
                            // Keep the partial packet with its connection (in the buffer it
                            // already has, emptied above, when it streams).
                            if let Some(sock) = self.socks.get_mut(id) {
                                match sock.rx.as_deref_mut() {
                                    Some(rx) => rx.extend_from_slice(&self.ingress),
                                    None => {
                                        sock.rx = Some(Box::new(BytesMut::from(&self.ingress[..])))
                                    }
                                }
                            }
                            self.ingress.clear();
                        }
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.backlog.push(id);
                        return;
                    }
                    if short_stops && n < offered {
                        self.release_empty_rx(id);
                        return;
                    }
                }
                Err(Errno::EAGAIN) => {
                    self.release_empty_rx(id);
                    return;
                }
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.lost(now, id);
                    return;
                }
            }
        }
    }

    /// Caught up: an idle connection holds no receive buffer.
    fn release_empty_rx(&mut self, id: ConnId) {
        if let Some(sock) = self.socks.get_mut(id) {
            if sock.rx.as_ref().is_some_and(|rx| rx.is_empty()) {
                sock.rx = None;
            }
        }
    }

    /// The peer went away (EOF or an error): tell the engine, release the socket.
    fn lost(&mut self, now: u64, id: ConnId) {
        self.drop_socket(now, id);
    }

    /// Releases the socket at once and tells the engine (idempotent on the engine side).
    fn drop_socket(&mut self, now: u64, id: ConnId) {
        if let Some(sock) = self.socks.remove(id) {
            let _ = self.epoll.delete(sock.stream.as_fd());
            if matches!(sock.phase, Phase::Lingering { .. }) {
                return;
            }
        }
        self.engine.handle_closed(now, id);
    }

    fn flush_all(&mut self, now: u64) {
        while let Some(id) = self.engine.poll_dirty() {
            self.flush(now, id);
        }
        while let Some(id) = self.engine.poll_close() {
            match self.socks.get_mut(id) {
                Some(sock) if sock.phase == Phase::Open => {
                    sock.phase = Phase::Flushing {
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

    /// Writes as much queued output of `id` as the socket takes; a closing socket whose output
    /// is all written moves on to the half-close.
    fn flush(&mut self, now: u64, id: ConnId) {
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        if sock.blocked || matches!(sock.phase, Phase::Lingering { .. }) {
            return;
        }
        let Some(out) = self.engine.out_queue(id) else {
            return;
        };
        let mut failed = false;
        while !out.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV_MAX_BATCH];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(out.chunks()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match (&sock.stream).write_vectored(&iov[..count]) {
                Ok(n) => out.consume(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sock.blocked = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let drained = out.is_empty();
        if failed {
            self.drop_socket(now, id);
        } else if drained && matches!(sock.phase, Phase::Flushing { .. }) {
            self.half_close(now, id);
        }
    }

    /// All output is written: shut the write side (the peer sees a clean FIN after the last
    /// packet), forget the connection in the engine, and drain input until the peer closes.
    fn half_close(&mut self, now: u64, id: ConnId) {
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        let _ = sock.stream.shutdown(std::net::Shutdown::Write);
        sock.phase = Phase::Lingering {
            deadline_ms: now + CLOSE_LINGER_MS,
        };
        self.engine.handle_closed(now, id);
        self.discard_input(now, id);
    }

    /// Reads and drops input of a closing socket; EOF ends it.
    fn discard_input(&mut self, now: u64, id: ConnId) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(sock) = self.socks.get(id) else {
                return;
            };
            match nix::unistd::read(sock.stream.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.drop_socket(now, id);
                    return;
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.drop_socket(now, id);
                    return;
                }
            }
        }
    }

    /// Closing sockets past their deadline are dropped (a peer that neither reads nor closes).
    fn expire_closing(&mut self, now: u64) {
        if self.closing.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.closing);
        for id in ids {
            let expired = match self.socks.get(id).map(|s| s.phase) {
                Some(Phase::Flushing { deadline_ms }) | Some(Phase::Lingering { deadline_ms }) => {
                    now >= deadline_ms
                }
                _ => continue,
            };
            if expired {
                self.drop_socket(now, id);
            } else {
                self.closing.push(id);
            }
        }
    }
}

/// `read(2)` into the spare capacity of `buf`, growing it by `grow` when little is left.
fn read_into(
    fd: RawFd,
    buf: &mut BytesMut,
    grow: usize,
    offered: &mut usize,
) -> Result<usize, Errno> {
    if buf.capacity() - buf.len() < READ_CHUNK_MIN {
        buf.reserve(grow.max(READ_CHUNK_MIN));
    }
    let spare = buf.spare_capacity_mut();
    *offered = spare.len();
    // SAFETY: the kernel writes at most `spare.len()` bytes into memory owned by `buf`.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    let n = n as usize;
    // SAFETY: the first `n` spare bytes were just initialised by read(2).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
