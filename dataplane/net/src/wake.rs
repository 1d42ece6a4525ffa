//! Waking a shard that sleeps in a system call (epoll, poll): an eventfd it watches.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};
use tachyon_shard::Waker;

use crate::NetError;

struct EventFdWaker(EventFd);

impl Waker for EventFdWaker {
    fn wake(&self) {
        // A full counter (EAGAIN) still means "wake up"; nothing else can fail here.
        let _ = self.0.write(1);
    }
}

/// A waker and the descriptor that becomes readable when it is woken (non-blocking; read it
/// to reset).
pub(crate) fn eventfd_waker() -> Result<(Arc<dyn Waker>, OwnedFd), NetError> {
    let efd =
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(|source| {
            NetError::Setup {
                what: "eventfd()",
                source,
            }
        })?;
    let fd = efd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| NetError::Setup {
            what: "dup(eventfd)",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    Ok((Arc::new(EventFdWaker(efd)), fd))
}

/// Resets a woken eventfd.
pub(crate) fn drain(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8];
    // Non-blocking: one read resets the counter; EAGAIN means already drained.
    let _ = nix::unistd::read(fd.as_raw_fd(), &mut buf);
}
