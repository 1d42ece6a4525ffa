//! The `throughput` and `latency` subcommands: connect everyone, start the shared clock, run the
//! loops of `load.rs` on one thread per connection, and merge their results into one report.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tachyon_codec::QoS;

use crate::client::{protocol_version, Client};
use crate::load::{
    new_histogram, run_publisher, run_subscriber, Clock, Pacing, PublisherPlan, PublisherResult,
    Shared, SubscriberPlan, SubscriberResult,
};
use crate::report::{date_utc, machine, percentiles_us};

/// Options every load subcommand shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Broker host (an address; the tool connects nowhere else).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5 (5.0).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub version: u8,
    /// Subscribers keep persistent sessions (Clean Start 0; v5: Session Expiry 3600 s), so
    /// a broker that logs them does (durability benchmarks).
    #[arg(long)]
    pub persistent: bool,
    /// Payload bytes, at least 20 (publisher id, sequence, send time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(20..=16_000_000))]
    pub payload: u32,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the window, seconds (sent and counted, but not in the rates).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// After the window: the longest wait for outstanding acknowledgements and for messages
    /// still queued in the broker, seconds. Messages not in by then count as lost.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// The broker's pid: it gets SIGUSR1 at the start and the end of the window. A broker
    /// built with `--features count-allocs` then writes its heap allocation count to
    /// `--broker-alloc-file`, and the report gives allocations per message.
    #[arg(long, requires = "broker_alloc_file")]
    pub broker_pid: Option<i32>,
    /// The file the broker writes its count to (its `TACHYON_ALLOC_COUNT_FILE`).
    #[arg(long, requires = "broker_pid")]
    pub broker_alloc_file: Option<std::path::PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// N publishers -> 1 subscriber, one topic.
    FanIn,
    /// 1 publisher -> M subscribers, one topic.
    FanOut,
    /// N publisher/subscriber pairs, a topic each.
    Pairs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "pairs")]
    pub topology: Topology,
    /// Publishers (fan-in, pairs; fan-out uses 1).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Subscribers (fan-out; fan-in uses 1, pairs one per publisher).
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Unacknowledged messages per publisher at QoS 1/2 (1..=65535).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub inflight: u32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Offered rate, messages per second (open loop).
    #[arg(long)]
    pub rate: f64,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Microseconds before each scheduled send that the publisher spins instead of sleeping
    /// (higher: less send lag, more CPU taken from the broker).
    #[arg(long, default_value_t = 30)]
    pub spin_us: u64,
}

fn qos_of(level: u8) -> QoS {
    QoS::from_u8(level).expect("clap limits --qos to 0..=2")
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

struct Layout {
    publishers: Vec<PublisherPlan>,
    subscribers: Vec<(String, SubscriberPlan)>,
}

fn layout(
    topology: Topology,
    publisher_count: usize,
    subscriber_count: usize,
    run: &str,
    make_plan: &dyn Fn(u32, String) -> PublisherPlan,
) -> Layout {
    let shared_topic = format!("tachyon-bench/{run}/t");
    let (publishers, subscribers) = match topology {
        Topology::FanIn => (
            (0..publisher_count as u32)
                .map(|id| make_plan(id, shared_topic.clone()))
                .collect(),
            vec![(
                shared_topic.clone(),
                SubscriberPlan {
                    index: 0,
                    expected: vec![true; publisher_count],
                },
            )],
        ),
        Topology::FanOut => (
            vec![make_plan(0, shared_topic.clone())],
            (0..subscriber_count)
                .map(|i| {
                    let plan = SubscriberPlan {
                        index: i,
                        expected: vec![true],
                    };
                    (shared_topic.clone(), plan)
                })
                .collect(),
        ),
        Topology::Pairs => {
            let topic = |i: usize| format!("tachyon-bench/{run}/p{i}");
            (
                (0..publisher_count)
                    .map(|i| make_plan(i as u32, topic(i)))
                    .collect(),
                (0..publisher_count)
                    .map(|i| {
                        let mut expected = vec![false; publisher_count];
                        expected[i] = true;
                        (topic(i), SubscriberPlan { index: i, expected })
                    })
                    .collect(),
            )
        }
    };
    Layout {
        publishers,
        subscribers,
    }
}

struct Outcome {
    publishers: Vec<PublisherResult>,
    subscribers: Vec<SubscriberResult>,
    elapsed: Duration,
    /// The broker's heap allocations during the window (`--broker-pid`).
    broker_allocations: Option<Result<u64, String>>,
}

/// Signals the broker at the start and end of the window and reads back its allocation count
/// (see `Target::broker_pid`); returns the difference.
fn probe_allocations(clock: &Clock, pid: i32, file: &std::path::Path) -> Result<u64, String> {
    let read_at = |ns: u64| -> Result<u64, String> {
        let due = Duration::from_nanos(ns);
        let now = clock.t0.elapsed();
        if due > now {
            thread::sleep(due - now);
        }
        let _ = std::fs::remove_file(file);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| format!("signalling the broker (pid {pid}): {e}"))?;
        for _ in 0..200 {
            thread::sleep(Duration::from_millis(5));
            if let Ok(text) = std::fs::read_to_string(file) {
                if let Ok(n) = text.trim().parse::<u64>() {
                    return Ok(n);
                }
            }
        }
        Err(format!(
            "the broker wrote no count to {} (is it a --features count-allocs build, with \
             TACHYON_ALLOC_COUNT_FILE set to that file?)",
            file.display()
        ))
    };
    let start = read_at(clock.warm_end_ns)?;
    let end = read_at(clock.end_ns)?;
    Ok(end.saturating_sub(start))
}

/// Connects subscribers first (and waits for their SUBACKs), then publishers, then starts the
/// clock and every thread at once.
fn execute(target: &Target, layout: Layout, qos: QoS) -> Result<Outcome, String> {
    let addr = format!("{}:{}", target.host, target.port);
    let version = protocol_version(target.version);
    let run = run_id();
    let mut sub_clients = Vec::new();
    for (topic, plan) in layout.subscribers {
        let id = format!("tb-{run}-s{}", plan.index);
        let mut c = Client::connect_session(&addr, &id, version, target.persistent)
            .map_err(|e| format!("{addr}: {e}"))?;
        c.subscribe(&topic, qos)
            .map_err(|e| format!("{addr}: {e}"))?;
        sub_clients.push((c, plan));
    }
    let mut pub_clients = Vec::new();
    for plan in layout.publishers {
        let id = format!("tb-{run}-p{}", plan.id);
        let c = Client::connect(&addr, &id, version).map_err(|e| format!("{addr}: {e}"))?;
        pub_clients.push((c, plan));
    }
    let shared = Shared::new(pub_clients.len());
    let clock = Clock::new(
        Instant::now(),
        Duration::from_secs_f64(target.warmup),
        Duration::from_secs_f64(target.duration),
        Duration::from_secs_f64(target.drain),
    );
    let show_progress = target.warmup + target.duration > 5.0;
    let outcome = thread::scope(|s| {
        let shared = &shared;
        let clock = &clock;
        let subs: Vec<_> = sub_clients
            .into_iter()
            .map(|(c, plan)| s.spawn(move || run_subscriber(c, plan, clock, shared)))
            .collect();
        let pubs: Vec<_> = pub_clients
            .into_iter()
            .map(|(c, plan)| s.spawn(move || run_publisher(c, plan, clock, shared)))
            .collect();
        let probe = match (target.broker_pid, target.broker_alloc_file.as_deref()) {
            (Some(pid), Some(file)) => Some(s.spawn(move || probe_allocations(clock, pid, file))),
            _ => None,
        };
        let publishers: Vec<PublisherResult> = if show_progress {
            progress(clock, shared, &pubs);
            pubs.into_iter()
                .map(|h| h.join().expect("publisher thread ends"))
                .collect()
        } else {
            pubs.into_iter()
                .map(|h| h.join().expect("publisher thread ends"))
                .collect()
        };
        let subscribers = subs
            .into_iter()
            .map(|h| h.join().expect("subscriber thread ends"))
            .collect();
        Outcome {
            publishers,
            subscribers,
            elapsed: clock.t0.elapsed(),
            broker_allocations: probe.map(|h| h.join().expect("probe thread ends")),
        }
    });
    Ok(outcome)
}

/// One line per second on stderr until the publishers finish.
fn progress<T>(clock: &Clock, shared: &Shared, pubs: &[thread::ScopedJoinHandle<'_, T>]) {
    let mut last = (0u64, 0u64);
    let mut tick = 1u64;
    while !pubs.iter().all(|h| h.is_finished()) {
        let due = Duration::from_secs(tick);
        let now = clock.t0.elapsed();
        if now < due {
            thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let sent = shared.sent_count.load(Ordering::Relaxed);
        let delivered = shared.delivered_count.load(Ordering::Relaxed);
        // The line covers the second that just ended.
        let interval_start_ns = (due - Duration::from_secs(1)).as_nanos() as u64;
        let phase = if interval_start_ns < clock.warm_end_ns {
            "warm-up"
        } else if interval_start_ns < clock.end_ns {
            "measure"
        } else {
            "drain"
        };
        eprintln!(
            "[{tick:>4}s {phase}] sent {:>10} msg/s  delivered {:>10} msg/s",
            sent - last.0,
            delivered - last.1
        );
        last = (sent, delivered);
        tick += 1;
    }
}

/// Sums subscriber and publisher results into the common report fields.
fn totals(outcome: &Outcome, target: &Target) -> Value {
    let window = target.duration;
    let mut latency = new_histogram();
    let mut lag = new_histogram();
    let mut ack = new_histogram();
    let mut errors: Vec<String> = Vec::new();
    let (mut received, mut delivered, mut lost, mut dup, mut reord, mut misr, mut corrupt) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sent_in_window_delivered = 0u64;
    let mut drain_limit_count = 0u64;
    for s in &outcome.subscribers {
        received += s.received_count;
        delivered += s.delivered_in_window_count;
        sent_in_window_delivered += s.sent_in_window_delivered_count;
        drain_limit_count += u64::from(s.stop_reason == "drain_limit");
        lost += s.lost_count;
        dup += s.duplicate_count;
        reord += s.reordered_count;
        misr += s.misrouted_count;
        corrupt += s.corrupt_count;
        latency.add(&s.latency_ns).expect("histograms share bounds");
        errors.extend(s.error.clone());
    }
    let (mut sent, mut sent_in_window, mut acked, mut unacked, mut refused) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for p in &outcome.publishers {
        sent += p.sent_count;
        sent_in_window += p.sent_in_window_count;
        acked += p.acked_count;
        unacked += p.unacked_count;
        refused += p.refused_count;
        if let Some(h) = &p.lag_ns {
            lag.add(h).expect("histograms share bounds");
        }
        if let Some(h) = &p.ack_ns {
            ack.add(h).expect("histograms share bounds");
        }
        errors.extend(p.error.clone());
    }
    if let Some(Err(e)) = &outcome.broker_allocations {
        errors.push(e.clone());
    }
    let expected: u64 = outcome
        .subscribers
        .iter()
        .map(|s| {
            (s.received_count + s.lost_count)
                .saturating_sub(s.duplicate_count + s.misrouted_count + s.corrupt_count)
        })
        .sum();
    let per_publisher: Vec<Value> = outcome
        .publishers
        .iter()
        .map(|p| {
            json!({ "id": p.id, "sent": p.sent_count, "sent_in_window": p.sent_in_window_count,
                    "acked": p.acked_count, "unacked": p.unacked_count })
        })
        .collect();
    let per_subscriber: Vec<Value> = outcome
        .subscribers
        .iter()
        .map(|s| {
            json!({ "index": s.index, "received": s.received_count,
                    "delivered_in_window": s.delivered_in_window_count,
                    "sent_in_window_delivered": s.sent_in_window_delivered_count,
                    "stop_reason": s.stop_reason, "lost": s.lost_count,
                    "duplicates": s.duplicate_count, "reordered": s.reordered_count,
                    "misrouted": s.misrouted_count })
        })
        .collect();
    let mut v = json!({
        "window_secs": window,
        "elapsed_secs": outcome.elapsed.as_secs_f64(),
        "sent": sent,
        "sent_in_window": sent_in_window,
        "sent_msgs_per_sec": sent_in_window as f64 / window,
        "delivered_in_window": delivered,
        "delivered_msgs_per_sec": delivered as f64 / window,
        "sent_in_window_delivered": sent_in_window_delivered,
        "subscribers_at_drain_limit": drain_limit_count,
        "expected_deliveries": expected,
        "received": received,
        "lost": lost,
        "duplicates": dup,
        "reordered": reord,
        "misrouted": misr,
        "corrupt": corrupt,
        "acked": acked,
        "unacked": unacked,
        "refused": refused,
        "latency_us": percentiles_us(&latency),
        "errors": errors,
        "per_publisher": per_publisher,
        "per_subscriber": per_subscriber,
    });
    if !lag.is_empty() {
        v["send_lag_us"] = percentiles_us(&lag);
    }
    if !ack.is_empty() {
        v["ack_latency_us"] = percentiles_us(&ack);
    }
    if let Some(Ok(n)) = &outcome.broker_allocations {
        v["broker_allocations_in_window"] = json!(n);
        v["broker_allocations_per_message_sent"] = json!(*n as f64 / sent_in_window.max(1) as f64);
        v["broker_allocations_per_message_delivered"] = json!(*n as f64 / delivered.max(1) as f64);
    }
    if drain_limit_count > 0 {
        eprintln!(
            "warning: {drain_limit_count} subscriber(s) stopped at the drain limit; their \"lost\" \
             includes messages still queued in the broker (raise --drain to tell them apart)"
        );
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    v
}

fn emit(report: Value, json_path: Option<&std::path::Path>) -> Result<(), String> {
    let text = serde_json::to_string_pretty(&report).expect("JSON values serialize");
    println!("{text}");
    if let Some(path) = json_path {
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn target_json(t: &Target) -> Value {
    json!({
        "host": t.host, "port": t.port, "version": t.version, "payload_bytes": t.payload,
        "duration_secs": t.duration, "warmup_secs": t.warmup, "drain_secs": t.drain,
        "persistent_subscribers": t.persistent,
    })
}

/// `throughput`: closed loop, as fast as the window allows.
///
/// # Errors
/// Connection or subscription failures before the run starts, or an unwritable JSON file.
pub fn throughput(args: &ThroughputArgs) -> Result<(), String> {
    let qos = qos_of(args.qos);
    let (publishers, subscribers) = match args.topology {
        Topology::FanIn => (args.publishers.max(1), 1),
        Topology::FanOut => (1, args.subscribers.max(1)),
        Topology::Pairs => (args.publishers.max(1), args.publishers.max(1)),
    };
    let payload_size = args.target.payload as usize;
    let window = args.inflight as usize;
    let make_plan = |id: u32, topic: String| PublisherPlan {
        id,
        topic,
        qos,
        payload_size,
        pacing: Pacing::Window(window),
    };
    let run = run_id();
    let plan = layout(
        args.topology,
        publishers as usize,
        subscribers as usize,
        &run,
        &make_plan,
    );
    let outcome = execute(&args.target, plan, qos)?;
    let mut config = target_json(&args.target);
    config["topology"] = json!(format!("{:?}", args.topology));
    config["publishers"] = json!(publishers);
    config["subscribers"] = json!(subscribers);
    config["qos"] = json!(args.qos);
    config["inflight"] = json!(args.inflight);
    let results = totals(&outcome, &args.target);
    eprintln!(
        "throughput {:?} qos{} {}B: sent {:.0} msg/s, delivered {:.0} msg/s, lost {} dup {} \
         reordered {} misrouted {} refused {}, latency p50 {} µs p99 {} µs, ack p50 {} µs p99 {} µs",
        args.topology,
        args.qos,
        args.target.payload,
        results["sent_msgs_per_sec"].as_f64().unwrap_or(0.0),
        results["delivered_msgs_per_sec"].as_f64().unwrap_or(0.0),
        results["lost"],
        results["duplicates"],
        results["reordered"],
        results["misrouted"],
        results["refused"],
        results["latency_us"]["p50"],
        results["latency_us"]["p99"],
        results["ack_latency_us"]["p50"],
        results["ack_latency_us"]["p99"],
    );
    let report = json!({
        "kind": "throughput",
        "date": date_utc(),
        "machine": machine(),
        "config": config,
        "results": results,
    });
    emit(report, args.target.json.as_deref())
}

/// `latency`: open loop at a fixed rate, latency from the scheduled send time.
///
/// # Errors
/// As [`throughput`], and a rate that is not positive.
pub fn latency(args: &LatencyArgs) -> Result<(), String> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(format!("--rate {}: need a positive rate", args.rate));
    }
    let qos = qos_of(args.qos);
    let payload_size = args.target.payload as usize;
    let rate = args.rate;
    let spin_ns = args.spin_us * 1000;
    let make_plan = |id: u32, topic: String| PublisherPlan {
        id,
        topic,
        qos,
        payload_size,
        pacing: Pacing::Rate { rate, spin_ns },
    };
    let run = run_id();
    let plan = layout(Topology::Pairs, 1, 1, &run, &make_plan);
    let outcome = execute(&args.target, plan, qos)?;
    let mut config = target_json(&args.target);
    config["rate_msgs_per_sec"] = json!(args.rate);
    config["spin_us"] = json!(args.spin_us);
    config["qos"] = json!(args.qos);
    let mut results = totals(&outcome, &args.target);
    results["scheduled_in_window"] = json!((args.rate * args.target.duration).round() as u64);
    let lag_p99 = results["send_lag_us"]["p99"].as_f64().unwrap_or(0.0);
    eprintln!(
        "latency qos{} {} msg/s {}B: p50 {} µs p99 {} µs p99.9 {} µs max {} µs; send lag p99 {} \
         µs max {} µs; ack p50 {} µs p99 {} µs; lost {}",
        args.qos,
        args.rate,
        args.target.payload,
        results["latency_us"]["p50"],
        results["latency_us"]["p99"],
        results["latency_us"]["p99_9"],
        results["latency_us"]["max"],
        results["send_lag_us"]["p99"],
        results["send_lag_us"]["max"],
        results["ack_latency_us"]["p50"],
        results["ack_latency_us"]["p99"],
        results["lost"],
    );
    if lag_p99 > 100.0 {
        eprintln!("warning: the generator fell behind its schedule (send lag p99 {lag_p99} µs)");
    }
    let report = json!({
        "kind": "latency",
        "date": date_utc(),
        "machine": machine(),
        "config": config,
        "results": results,
    });
    emit(report, args.target.json.as_deref())
}
