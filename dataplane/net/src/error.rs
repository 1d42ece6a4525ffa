//! Errors of the drivers: each says what failed and what to do about it.

use std::net::SocketAddr;

/// An operating error of a driver, with what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    Bind {
        addr: SocketAddr,
        source: nix::Error,
    },
    Setup {
        what: &'static str,
        source: nix::Error,
    },
    Thread(std::io::Error),
    ShardPanicked {
        shard: usize,
    },
    /// A user-space device (TAP, DPDK) cannot be set up; the text says what to do.
    Device(String),
    /// The data directory or its WAL cannot be used; the text says what to do.
    Durability(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Bind { addr, source } => match source {
                nix::Error::EADDRINUSE => write!(
                    f,
                    "listener {addr}: address already in use — another broker (mosquitto?) may be running; stop it or choose another port with -p or listeners[].bind"
                ),
                nix::Error::EACCES => write!(
                    f,
                    "listener {addr}: permission denied — ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port >= 1024"
                ),
                nix::Error::EADDRNOTAVAIL => write!(
                    f,
                    "listener {addr}: address not available on this host — bind to an address of a local interface (e.g. 127.0.0.1 or 0.0.0.0)"
                ),
                e => write!(f, "listener {addr}: cannot bind: {e}"),
            },
            NetError::Setup { what, source } => write!(f, "driver setup: {what} failed: {source}"),
            NetError::Thread(e) => write!(f, "cannot start a shard thread: {e}"),
            NetError::Device(text) | NetError::Durability(text) => f.write_str(text),
            NetError::ShardPanicked { shard } => {
                write!(f, "shard {shard} stopped with a panic (a bug: please report it with the log)")
            }
        }
    }
}

impl std::error::Error for NetError {}
