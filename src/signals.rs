//! Signals are blocked in every thread and taken synchronously by one thread with
//! `sigwait`, so no handler runs in an async-signal context.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// What the dataplane process waits for: SIGINT/SIGTERM stop it; SIGUSR1 (passed on by the
/// control plane) reports the allocation count in a `count-allocs` build and is ignored
/// otherwise (its default action would end the process).
pub fn dataplane_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGUSR1);
    set
}

/// What the control plane waits for: SIGINT/SIGTERM stop the broker, SIGHUP reloads the
/// configuration, SIGUSR1 is passed on to the dataplane, SIGUSR2 is its own wake-up (the
/// supervisor ended).
pub fn control_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

pub fn block(set: &SigSet) -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(set), None)
}

/// The next signal of `set` (`None` if waiting failed).
pub fn wait(set: &SigSet) -> Option<Signal> {
    set.wait().ok()
}
