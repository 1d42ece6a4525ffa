//! Is each shard of the running dataplane alive? Every shard's loop publishes its block of
//! the stats region at least every 1.25 s (every 250 ms when busy with traffic; an idle loop
//! sleeps up to a second), stamping it with the host's monotonic clock; long operations
//! inside a loop pass (the WAL step, a snapshot) and a shard's shutdown mark themselves while
//! they run. So the
//! control plane tells three cases apart without costing the loop anything:
//!
//! ```text
//!   published within hang_timeout_ms                      ─▶ Live
//!   silent longer, inside a WAL write or sync, a snapshot  ─▶ Busy  (slow disk, large state,
//!   or its shutdown                                                  a drain: reported, never
//!                                                                   killed)
//!   silent longer, in no such operation                    ─▶ Hung  (SIGSTOP, an endless
//!                                                                   loop, a deadlock)
//! ```
//!
//! A congested loop still publishes (every pass ends with the observer), so it stays Live.

use tachyon_stats::{Busy, ShardSnapshot};

/// One shard's state as the hang check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardHealth {
    Live,
    /// In `what` for `for_ms`, and silent for longer than the timeout.
    Busy {
        what: Busy,
        for_ms: u64,
    },
    /// Silent for `silent_ms`, in no long operation.
    Hung {
        silent_ms: u64,
    },
}

/// Judges a shard at `now_mono_ms`. `ready_mono_ms` is when its dataplane reported ready (a
/// shard that has not published since counts from then).
pub fn judge(
    snap: &ShardSnapshot,
    now_mono_ms: u64,
    ready_mono_ms: u64,
    hang_timeout_ms: u64,
) -> ShardHealth {
    let last = snap.progress_mono_ms.max(ready_mono_ms);
    let silent_ms = now_mono_ms.saturating_sub(last);
    if silent_ms <= hang_timeout_ms {
        return ShardHealth::Live;
    }
    match snap.busy {
        Some((what, since)) => ShardHealth::Busy {
            what,
            for_ms: now_mono_ms.saturating_sub(since),
        },
        None => ShardHealth::Hung { silent_ms },
    }
}

impl ShardHealth {
    /// For `/health` and `tachyon ctl`.
    pub fn json(&self, shard: usize) -> serde_json::Value {
        match *self {
            ShardHealth::Live => serde_json::json!({ "shard": shard, "state": "live" }),
            ShardHealth::Busy { what, for_ms } => serde_json::json!({
                "shard": shard, "state": "busy", "busy": what.name(), "busy_ms": for_ms,
            }),
            ShardHealth::Hung { silent_ms } => serde_json::json!({
                "shard": shard, "state": "hung", "silent_ms": silent_ms,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(progress: u64, busy: Option<(Busy, u64)>) -> ShardSnapshot {
        ShardSnapshot {
            progress_mono_ms: progress,
            busy,
            ..ShardSnapshot::default()
        }
    }

    #[test]
    fn recent_progress_is_live() {
        assert_eq!(
            judge(&snap(9_000, None), 10_000, 0, 2_000),
            ShardHealth::Live
        );
    }

    #[test]
    fn silence_without_a_long_operation_is_a_hang() {
        assert_eq!(
            judge(&snap(5_000, None), 10_000, 0, 2_000),
            ShardHealth::Hung { silent_ms: 5_000 }
        );
    }

    #[test]
    fn silence_inside_a_commit_or_snapshot_is_busy() {
        assert_eq!(
            judge(&snap(5_000, Some((Busy::Wal, 6_000))), 10_000, 0, 2_000),
            ShardHealth::Busy {
                what: Busy::Wal,
                for_ms: 4_000
            }
        );
    }

    /// A shard that has not published yet counts from the dataplane's readiness.
    #[test]
    fn not_yet_published_counts_from_ready() {
        assert_eq!(
            judge(&snap(0, None), 10_000, 9_500, 2_000),
            ShardHealth::Live
        );
        assert_eq!(
            judge(&snap(0, None), 12_000, 9_500, 2_000),
            ShardHealth::Hung { silent_ms: 2_500 }
        );
    }
}
