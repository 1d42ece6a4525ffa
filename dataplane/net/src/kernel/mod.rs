//! The kernel-socket driver: one pinned thread per shard, each with its own `SO_REUSEPORT`
//! listener (so the kernel spreads new connections over the shards) and its own epoll set.
//!
//! ```text
//!   main thread: bind N listeners ─▶ spawn N shard threads ─▶ wait for SIGINT/SIGTERM
//!   shard i:     loop { epoll_wait; accept; read -> engine; rings -> engine; timers;
//!                       writev engine output; close; engine mail -> rings }
//! ```

mod event_loop;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};
use tachyon_engine::EngineConfig;

use crate::durable::DurabilityConfig;
use tachyon_shard::{Mesh, Waker};

pub use crate::error::NetError;
use crate::shutdown::join_shards;
pub use crate::shutdown::Shutdown;
use crate::wake::eventfd_waker;

/// What a shard does when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Block in `epoll_wait` until I/O, mail or a timer (lowest CPU use).
    Block,
    /// Never block: poll epoll with a zero timeout (lowest latency, one core at 100%).
    Spin,
    /// Poll with a zero timeout for this many microseconds after the last event, then block:
    /// traffic that keeps coming finds the shard awake (no wake-up of a halted core), an
    /// idle shard costs nothing.
    Hybrid { spin_us: u32 },
}

/// Settings of the kernel driver.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub listeners: Vec<SocketAddr>,
    pub shard_count: usize,
    /// CPU for each shard; empty means no pinning.
    pub cores: Vec<usize>,
    pub idle: IdleStrategy,
    /// Capacity of each cross-shard ring, in messages.
    pub ring_capacity: usize,
    pub listen_backlog: i32,
    /// Kernel socket buffer sizes (SO_RCVBUF/SO_SNDBUF); 0 keeps the system default.
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
    /// How long shutdown waits for output to drain before closing sockets.
    pub shutdown_drain_ms: u64,
}

/// A socket bound to `addr` but not listening: a port in use fails here, at once, while the
/// kernel completes no handshake on it yet (a SYN gets a reset) until [`start_listening`].
fn bind_listener(addr: SocketAddr) -> Result<OwnedFd, NetError> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let setup = |what| move |source| NetError::Setup { what, source };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(setup("socket()"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(setup("SO_REUSEADDR"))?;
    // One listener per shard on the same address: the kernel balances connections.
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(setup("SO_REUSEPORT"))?;
    let res = match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(setup("IPV6_V6ONLY"))?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))
        }
    };
    res.map_err(|source| NetError::Bind { addr, source })?;
    Ok(fd)
}

/// Lets the kernel complete handshakes on a bound socket (once the shards can serve them).
fn start_listening(fd: &OwnedFd, backlog: i32) -> Result<(), NetError> {
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    listen(fd, backlog).map_err(|source| NetError::Setup {
        what: "listen()",
        source,
    })
}

/// Runs the broker on kernel sockets until `shutdown` is triggered. Binds every listener
/// once per shard before anything else, so that a port in use fails at once; recovers the
/// durable state; only then listens, so that no client completes a TCP handshake that
/// would wait in silence for the recovery (a load balancer's TCP check sees the port closed
/// until the broker can answer).
///
/// # Errors
/// [`NetError`] when a listener cannot be bound or a shard thread cannot start.
pub fn run(
    cfg: KernelConfig,
    engine_cfg: Arc<EngineConfig>,
    durability: Option<&DurabilityConfig>,
    shutdown: Arc<Shutdown>,
    mut hooks: crate::ControlHooks,
) -> Result<(), NetError> {
    let n = cfg.shard_count;
    let mut per_shard_listeners: Vec<Vec<(SocketAddr, OwnedFd)>> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ls = Vec::new();
        for &addr in &cfg.listeners {
            ls.push((addr, bind_listener(addr)?));
        }
        per_shard_listeners.push(ls);
    }
    let mut eventfds = Vec::with_capacity(n);
    let mut wakers: Vec<Arc<dyn Waker>> = Vec::with_capacity(n);
    for _ in 0..n {
        let (waker, fd) = eventfd_waker()?;
        eventfds.push(fd);
        wakers.push(waker);
    }
    let epoch = std::time::Instant::now();
    // The durable state is back in the engines before any connection is served.
    let crate::durable::Prepared {
        engines,
        logs,
        lock: _lock,
    } = crate::durable::prepare(n, &engine_cfg, durability, epoch)?;
    let mesh = Mesh::new(wakers, cfg.ring_capacity);
    shutdown.attach(&mesh);
    for ls in &per_shard_listeners {
        for (_, fd) in ls {
            start_listening(fd, cfg.listen_backlog)?;
        }
    }
    for addr in &cfg.listeners {
        tracing::info!(listener = %addr, shards = n, "listening (SO_REUSEPORT, one listener per shard)");
    }

    let mut handles = Vec::with_capacity(n);
    let states = engines
        .into_iter()
        .zip(logs.into_iter().enumerate().map(|(shard, mut log)| {
            if let Some(l) = log.as_mut() {
                l.watch(hooks.busy_marker(shard));
            }
            log
        }));
    for (shard, ((listeners, efd), (engine, log))) in per_shard_listeners
        .into_iter()
        .zip(eventfds)
        .zip(states)
        .enumerate()
    {
        let core = if cfg.cores.is_empty() {
            None
        } else {
            Some(cfg.cores[shard % cfg.cores.len()])
        };
        let ctx = event_loop::ShardContext {
            shard,
            core,
            listeners,
            wake_fd: efd,
            mesh: mesh.clone(),
            shutdown: shutdown.clone(),
            idle: cfg.idle,
            socket_rcvbuf: cfg.socket_rcvbuf,
            socket_sndbuf: cfg.socket_sndbuf,
            shutdown_drain_ms: cfg.shutdown_drain_ms,
            epoch,
            observer: hooks.observer(shard),
        };
        let h = std::thread::Builder::new()
            .name(format!("tachyon-shard-{shard}"))
            .spawn(move || event_loop::run_shard(ctx, engine, log))
            .map_err(NetError::Thread)?;
        handles.push(h);
    }
    hooks.ready(&mesh);
    join_shards(handles, &shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound listener completes no handshake (the port answers with a reset, as a closed
    /// one does) until `start_listening`: a recovering dataplane is not mistaken for a
    /// serving one.
    #[test]
    fn bound_listener_refuses_until_listening() {
        let fd = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = nix::sys::socket::getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap();
        let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()));
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        start_listening(&fd, 16).unwrap();
        std::net::TcpStream::connect(addr).expect("accepted once listening");
    }

    /// A port in use fails at bind time, before recovery would start.
    #[test]
    fn port_in_use_fails_at_bind() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_listener(taken.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, NetError::Bind { .. }), "{err}");
    }
}
