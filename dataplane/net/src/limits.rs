//! Process resource limits the broker needs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the open-files soft limit to the hard limit. Returns the limit now in force.
/// Each connection needs one descriptor; a shard also holds a listener, an epoll and an
/// eventfd.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard)
}
