//! # tachyon-bench — load generator and ceilings for MQTT brokers
//!
//! Drives any broker on host:port and reports JSON with exact delivery counts and HDR latency
//! histograms (see bench/README.md for each subcommand and field):
//!
//! ```text
//!   throughput  closed loop: fan-in | fan-out | pairs, QoS 0/1/2, inflight window
//!   latency     open loop at a fixed rate, latency from the scheduled send time
//!   relay       a bare MQTT-shaped TCP relay: the machine's forwarding ceiling
//!   pingpong    loopback TCP ping-pong: the machine's latency floor
//!   conns       idle connections: broker RSS per connection, setup rate
//!   jitter      how long a spinning thread loses its core (the floor of any poll-mode shard)
//!   report      runs of scripts/bench-compare.sh -> docs/benchmarks.md tables and charts
//!   dpdk-latency, dpdk-echo   (feature `dpdk`) latency through the broker's DPDK path from a
//!               DPDK + smoltcp client over net_memif, and the bare smoltcp floor
//! ```
//!
//! It links `tachyon-codec` for the wire format; with `dpdk`, also `tachyon-net`'s DPDK device.

mod client;
mod compare;
mod conns;
#[cfg(feature = "dpdk")]
mod dpdk_latency;
mod jitter;
mod load;
mod payload;
mod pingpong;
mod relay;
mod report;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tachyon-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed-loop throughput with exact loss, duplicate, reorder and misroute counts.
    Throughput(run::ThroughputArgs),
    /// Open-loop latency at a fixed offered rate (no coordinated omission).
    Latency(run::LatencyArgs),
    /// A bare TCP relay speaking just enough MQTT to forward PUBLISH frames: the ceiling.
    Relay(relay::RelayArgs),
    /// Loopback TCP ping-pong of N-byte messages: the latency floor.
    Pingpong(pingpong::PingPongArgs),
    /// Idle connections from several loopback sources: broker RSS per connection, setup rate.
    Conns(conns::ConnsArgs),
    /// Medians, ratios, targets and PNG charts from a directory of runs (bench-compare.sh).
    Report(compare::ReportArgs),
    /// How long a spinning thread loses its core (host preemption, interrupts).
    Jitter(jitter::JitterArgs),
    /// Open-loop latency through a broker's DPDK path, from a DPDK + smoltcp client.
    #[cfg(feature = "dpdk")]
    DpdkLatency(dpdk_latency::DpdkLatencyArgs),
    /// A bare smoltcp TCP echo server on a DPDK link: the floor of `dpdk-latency`.
    #[cfg(feature = "dpdk")]
    DpdkEcho(dpdk_latency::DpdkEchoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Throughput(a) => run::throughput(a),
        Command::Latency(a) => run::latency(a),
        Command::Relay(a) => relay::serve(a),
        Command::Pingpong(a) => pingpong::run(a),
        Command::Conns(a) => conns::run(a),
        Command::Report(a) => compare::run(a),
        Command::Jitter(a) => jitter::run(a),
        #[cfg(feature = "dpdk")]
        Command::DpdkLatency(a) => dpdk_latency::latency(a),
        #[cfg(feature = "dpdk")]
        Command::DpdkEcho(a) => dpdk_latency::echo(a),
    };
    if let Err(e) = result {
        eprintln!("tachyon-bench: {e}");
        std::process::exit(1);
    }
}
