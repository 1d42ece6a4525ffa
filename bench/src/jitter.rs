//! `jitter`: how long a spinning thread loses its core. A poll-mode shard can be no better
//! than this: every gap here is a gap in its polling (host preemption, interrupts, SMIs, a
//! noisy neighbour). On a host tuned with isolcpus/nohz_full the gaps are a few µs; on a
//! shared VM they reach milliseconds. `scripts/host-check` runs it on every core.

use std::time::{Duration, Instant};

use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct JitterArgs {
    /// The core to spin on (none: wherever the scheduler puts the thread).
    #[arg(long)]
    pub core: Option<usize>,
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
}

/// Gap thresholds reported, microseconds.
const THRESHOLDS_US: [u64; 4] = [10, 100, 1000, 10_000];

pub fn run(args: &JitterArgs) -> Result<(), String> {
    if let Some(core) = args.core {
        let mut set = nix::sched::CpuSet::new();
        set.set(core).map_err(|e| format!("--core {core}: {e}"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(|e| format!("cannot pin to core {core}: {e}"))?;
    }
    let end = Duration::from_secs_f64(args.duration);
    let t0 = Instant::now();
    let mut prev = t0.elapsed();
    let mut counts = [0u64; THRESHOLDS_US.len()];
    let mut max = Duration::ZERO;
    let mut lost = Duration::ZERO;
    loop {
        let now = t0.elapsed();
        let gap = now - prev;
        prev = now;
        if gap > Duration::from_micros(THRESHOLDS_US[0]) {
            lost += gap;
            for (c, &t) in counts.iter_mut().zip(&THRESHOLDS_US) {
                if gap > Duration::from_micros(t) {
                    *c += 1;
                }
            }
        }
        max = max.max(gap);
        if now >= end {
            break;
        }
    }
    let report = json!({
        "kind": "jitter",
        "core": args.core,
        "duration_secs": args.duration,
        "gaps_over_10us": counts[0],
        "gaps_over_100us": counts[1],
        "gaps_over_1ms": counts[2],
        "gaps_over_10ms": counts[3],
        "max_gap_us": max.as_secs_f64() * 1e6,
        "time_lost_percent": 100.0 * lost.as_secs_f64() / args.duration,
    });
    println!("{report}");
    Ok(())
}
