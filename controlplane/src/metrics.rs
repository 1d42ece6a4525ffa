//! Prometheus text exposition (format 0.0.4) of the broker's statistics: every word of the
//! stats region summed over the shards (and over earlier dataplane incarnations, so counters
//! never go back), the latency histograms, per-shard connection and queue gauges, and the
//! control plane's own view (dataplane up, restarts, uptime).

use std::fmt::Write;

use tachyon_stats::histogram::BOUNDS_US;
use tachyon_stats::{Counter, Kind, COUNTERS, HISTOGRAMS};

use crate::supervisor::Totals;

/// What the control plane adds to the dataplane's counters.
pub struct Process {
    pub version: &'static str,
    pub rev: &'static str,
    pub uptime_secs: u64,
    pub dataplane_ready: bool,
    pub restarts: u64,
    /// Dataplanes the hang check killed (`supervisor.hang_timeout_ms`).
    pub hangs: u64,
}

pub fn render(t: &Totals, p: &Process) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP tachyon_{name} {help}");
        let _ = writeln!(out, "# TYPE tachyon_{name} {kind}");
    };
    family(
        &mut out,
        "build_info",
        "gauge",
        "Version of the running broker",
    );
    let _ = writeln!(
        out,
        "tachyon_build_info{{version=\"{}\",rev=\"{}\"}} 1",
        p.version, p.rev
    );
    family(
        &mut out,
        "up",
        "gauge",
        "1 when the dataplane is ready and serving clients",
    );
    let _ = writeln!(out, "tachyon_up {}", u8::from(p.dataplane_ready));
    family(
        &mut out,
        "dataplane_restarts_total",
        "counter",
        "Times the control plane restarted a dataplane that died",
    );
    let _ = writeln!(out, "tachyon_dataplane_restarts_total {}", p.restarts);
    family(
        &mut out,
        "dataplane_hangs_total",
        "counter",
        "Times a dataplane shard made no progress for supervisor.hang_timeout_ms and the dataplane was killed",
    );
    let _ = writeln!(out, "tachyon_dataplane_hangs_total {}", p.hangs);
    family(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the control plane started",
    );
    let _ = writeln!(out, "tachyon_uptime_seconds {}", p.uptime_secs);

    let mut last = "";
    for (i, c) in COUNTERS.iter().enumerate() {
        if c.name != last {
            let kind = if c.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            family(&mut out, c.name, kind, c.help);
            last = c.name;
        }
        let v = t.counters.get(i).copied().unwrap_or(0);
        match c.label {
            Some((k, l)) => {
                let _ = writeln!(out, "tachyon_{}{{{k}=\"{l}\"}} {v}", c.name);
            }
            None => {
                let _ = writeln!(out, "tachyon_{} {v}", c.name);
            }
        }
    }
    for (h, (name, help)) in HISTOGRAMS.iter().enumerate() {
        let Some(hist) = t.hists.get(h) else { continue };
        family(&mut out, name, "histogram", help);
        let mut cum = 0;
        for (i, n) in hist.buckets.iter().enumerate() {
            cum += n;
            match BOUNDS_US.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "tachyon_{name}_bucket{{le=\"{b}\"}} {cum}");
                }
                None => {
                    let _ = writeln!(out, "tachyon_{name}_bucket{{le=\"+Inf\"}} {cum}");
                }
            }
        }
        let _ = writeln!(out, "tachyon_{name}_sum {}", hist.sum_us);
        let _ = writeln!(out, "tachyon_{name}_count {}", hist.count);
    }
    for (name, c, help) in [
        (
            "shard_connections",
            Counter::Connections,
            "Open connections per shard",
        ),
        (
            "shard_queued_messages",
            Counter::QueuedMessages,
            "Messages in session queues per shard",
        ),
        (
            "shard_inflight_messages",
            Counter::InflightMessages,
            "Outbound QoS 1/2 messages unacknowledged per shard",
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for (s, snap) in t.shards.iter().enumerate() {
            let _ = writeln!(out, "tachyon_{name}{{shard=\"{s}\"}} {}", snap.get(c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tachyon_stats::{Histogram, ShardSnapshot};

    #[test]
    fn families_have_help_type_and_cumulative_buckets() {
        let mut counters = vec![0; COUNTERS.len()];
        counters[Counter::MsgsInQos1 as usize] = 42;
        let mut h = Histogram::default();
        h.record(3);
        h.record(3000);
        let t = Totals {
            counters: counters.clone(),
            hists: vec![h, Histogram::default()],
            shards: vec![ShardSnapshot {
                heartbeat_unix_ms: 1,
                counters,
                hists: vec![],
                ..ShardSnapshot::default()
            }],
        };
        let text = render(
            &t,
            &Process {
                version: "0.1.0",
                rev: "abc",
                uptime_secs: 5,
                dataplane_ready: true,
                restarts: 2,
                hangs: 1,
            },
        );
        assert!(
            text.contains("tachyon_messages_received_total{qos=\"1\"} 42\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE tachyon_messages_received_total counter")
                .count(),
            1
        );
        assert!(text.contains("tachyon_broker_hop_latency_microseconds_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("tachyon_broker_hop_latency_microseconds_bucket{le=\"5000\"} 2\n"));
        assert!(text.contains("tachyon_broker_hop_latency_microseconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tachyon_broker_hop_latency_microseconds_count 2\n"));
        assert!(text.contains("tachyon_up 1\n"));
        assert!(text.contains("tachyon_dataplane_restarts_total 2\n"));
        assert!(text.contains("tachyon_shard_connections{shard=\"0\"} 0\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} "))
                    || text.contains(&format!("# TYPE {base} ")),
                "{line}"
            );
        }
    }
}
