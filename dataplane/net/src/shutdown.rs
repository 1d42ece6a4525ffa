//! Stopping the broker: a flag every shard checks, and a guard that turns a shard's panic
//! into a stop of the whole broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tachyon_shard::Mesh;

/// Shutdown request shared by the main thread and the shards.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    mesh: std::sync::OnceLock<Arc<Mesh>>,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Asks every shard to stop: stop accepting, DISCONNECT v5 clients with 0x8B, flush, exit.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(m) = self.mesh.get() {
            m.wake_all();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Lets [`Shutdown::trigger`] wake the shards of `mesh` (a driver calls it once).
    pub(crate) fn attach(&self, mesh: &Arc<Mesh>) {
        let _ = self.mesh.set(mesh.clone());
        if self.is_triggered() {
            mesh.wake_all();
        }
    }
}

/// Stops the whole broker if a shard thread unwinds: a broker with a dead shard would leave
/// claims, barriers and rings towards it waiting forever.
pub(crate) struct PanicGuard(pub Arc<Shutdown>, pub usize);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                shard = self.1,
                "shard panicked (a bug); stopping the broker"
            );
            self.0.trigger();
        }
    }
}

/// Pins the calling thread to `core`; a failure is logged and the shard runs unpinned.
pub(crate) fn pin_to_core(shard: usize, core: usize) {
    let mut set = nix::sched::CpuSet::new();
    let res = set
        .set(core)
        .and_then(|_| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    match res {
        Ok(()) => tracing::info!(shard, core, "shard pinned"),
        Err(e) => {
            tracing::warn!(shard, core, error = %e, "could not pin shard to core; running unpinned (check shards.cores)")
        }
    }
}

/// Waits for every shard thread. A panicking shard is a bug: the others are stopped too
/// rather than run half a broker.
pub(crate) fn join_shards(
    handles: Vec<std::thread::JoinHandle<()>>,
    shutdown: &Shutdown,
) -> Result<(), crate::NetError> {
    let mut result = Ok(());
    for (shard, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            shutdown.trigger();
            result = Err(crate::NetError::ShardPanicked { shard });
        }
    }
    result
}
