//! `pingpong`: the machine's latency floor. A loopback TCP echo server and a client in one
//! process; the client sends N bytes, waits for the same N bytes back, and records the round
//! trip in an HDR histogram. No MQTT, no broker: what any broker's latency is compared against.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::new_histogram;
use crate::report::{date_utc, machine, percentiles_us};

#[derive(clap::Args, Debug, Clone)]
pub struct PingPongArgs {
    /// Loopback port for the echo server (127.0.0.1 only).
    #[arg(long, default_value_t = 21887)]
    pub port: u16,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_000_000))]
    pub size: u32,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn echo(mut stream: TcpStream, size: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; size];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Runs server and client over loopback for warm-up plus duration and prints the report.
///
/// # Errors
/// The port cannot be bound, or the loopback connection fails.
pub fn run(args: &PingPongArgs) -> Result<(), String> {
    let addr = format!("127.0.0.1:{}", args.port);
    let size = args.size as usize;
    let listener = TcpListener::bind(&addr).map_err(|e| format!("{addr}: {e}"))?;
    let server = thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let _ = echo(stream, size);
        }
    });
    let mut stream = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut out = vec![0x5Au8; size];
    let mut back = vec![0u8; size];
    let mut rtt = new_histogram();
    let t0 = Instant::now();
    let warm_end = Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut count_in_window = 0u64;
    let mut next_progress = Duration::from_secs(1);
    let show_progress = args.warmup + args.duration > 5.0;
    loop {
        let start = t0.elapsed();
        if start >= end {
            break;
        }
        out[0] = out[0].wrapping_add(1);
        stream.write_all(&out).map_err(|e| e.to_string())?;
        stream.read_exact(&mut back).map_err(|e| e.to_string())?;
        assert_eq!(back[0], out[0], "the echo returns what was sent, in order");
        let done = t0.elapsed();
        if start >= warm_end {
            rtt.saturating_record(((done - start).as_nanos() as u64).max(1));
            count_in_window += 1;
        }
        if show_progress && done >= next_progress {
            eprintln!(
                "[{:>4}s] {} round trips",
                next_progress.as_secs(),
                rtt.len()
            );
            next_progress += Duration::from_secs(1);
        }
    }
    drop(stream);
    let _ = server.join();
    let report = json!({
        "kind": "pingpong",
        "date": date_utc(),
        "machine": machine(),
        "config": { "port": args.port, "size_bytes": args.size,
                    "duration_secs": args.duration, "warmup_secs": args.warmup },
        "results": {
            "round_trips": count_in_window,
            "round_trips_per_sec": count_in_window as f64 / args.duration,
            "rtt_us": percentiles_us(&rtt),
        },
    });
    eprintln!(
        "pingpong {}B: rtt p50 {} µs p99 {} µs p99.9 {} µs max {} µs",
        args.size,
        report["results"]["rtt_us"]["p50"],
        report["results"]["rtt_us"]["p99"],
        report["results"]["rtt_us"]["p99_9"],
        report["results"]["rtt_us"]["max"]
    );
    let text = serde_json::to_string_pretty(&report).expect("JSON values serialize");
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
