//! `conns`: idle connections and what they cost the broker. Opens N MQTT connections from
//! several loopback source addresses (127.0.0.2, .3, ... so the 4-tuples never run out of
//! ports), each completing CONNECT/CONNACK, holds them, and reads the broker's resident
//! memory (`VmRSS` of `/proc/<pid>/status`) before and after: bytes per connection, and the
//! connection setup rate.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde_json::json;
use tachyon_codec::{encode, Connect, Packet, Properties, Utf8Str};

use crate::client::protocol_version;
use crate::report::{date_utc, machine};

#[derive(clap::Args, Debug)]
pub struct ConnsArgs {
    /// Broker address (a loopback address: sources are 127.0.0.x).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: Ipv4Addr,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Source addresses to spread them over (127.0.0.2 ..).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=200))]
    pub sources: u8,
    /// The broker's pid, to read its resident memory.
    #[arg(long)]
    pub broker_pid: u32,
    /// MQTT protocol level: 4 (3.1.1) or 5 (5.0).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub version: u8,
    /// Seconds to hold the connections open after the last one is up (RSS is read then).
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Write the JSON report here as well as to stdout.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn rss_kb(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e} (is --broker-pid right?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// One idle MQTT connection from `source`, CONNECT answered with CONNACK.
fn open(source: Ipv4Addr, target: SocketAddrV4, connect_bytes: &[u8]) -> Result<TcpStream, String> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket(): {e}"))?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )
    .map_err(|e| format!("bind {source}: {e}"))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(target)).map_err(|e| format!("connect: {e}"))?;
    let mut stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(connect_bytes)
        .map_err(|e| format!("CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    stream
        .read_exact(&mut ack[..2])
        .map_err(|e| format!("CONNACK: {e}"))?;
    let rest = ack[1] as usize;
    let mut tail = vec![0u8; rest];
    stream
        .read_exact(&mut tail)
        .map_err(|e| format!("CONNACK: {e}"))?;
    if ack[0] != 0x20 || tail.get(1) != Some(&0) {
        return Err(format!("CONNACK refused: {:02x} {tail:02x?}", ack[0]));
    }
    Ok(stream)
}

fn connect_packet(i: usize, version: u8) -> Result<Vec<u8>, String> {
    let c = Connect {
        version: protocol_version(version),
        clean_start: true,
        keep_alive_secs: 0,
        client_id: Utf8Str::from_string(format!("tb-conn-{i}")).ok_or("client id")?,
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    let mut b = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(c)),
        protocol_version(version),
        &mut b,
    )
    .map_err(|e| e.to_string())?;
    Ok(b.to_vec())
}

pub fn run(a: &ConnsArgs) -> Result<(), String> {
    if !a.host.is_loopback() {
        return Err(format!(
            "--host {} is not a loopback address; conns only targets 127.0.0.0/8",
            a.host
        ));
    }
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| e.to_string())?;
    if soft < hard {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    if a.count as u64 + 64 > hard {
        return Err(format!(
            "--count {} needs more than the open-files limit {hard} allows; lower it",
            a.count
        ));
    }
    let target = SocketAddrV4::new(a.host, a.port);
    let before = rss_kb(a.broker_pid)?;
    let start = Instant::now();
    let mut open_conns = Vec::with_capacity(a.count);
    let mut failures = 0usize;
    let mut first_error = None;
    for i in 0..a.count {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % a.sources as usize) as u8);
        match connect_packet(i, a.version).and_then(|p| open(source, target, &p)) {
            Ok(s) => open_conns.push(s),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
        if i % 1000 == 999 {
            eprintln!("conns: {} up, {} failed", open_conns.len(), failures);
        }
    }
    let setup_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(a.hold.max(0.0)));
    let after = rss_kb(a.broker_pid)?;
    let connected = open_conns.len();
    let per_conn = if connected > 0 {
        (after.saturating_sub(before) * 1024) as f64 / connected as f64
    } else {
        0.0
    };
    drop(open_conns);
    let report = json!({
        "kind": "conns",
        "date": date_utc(),
        "machine": machine(),
        "config": { "host": a.host.to_string(), "port": a.port, "count": a.count, "sources": a.sources,
                    "version": a.version, "hold_secs": a.hold },
        "results": {
            "connected": connected,
            "failed": failures,
            "first_error": first_error,
            "setup_secs": setup_secs,
            "setup_per_sec": connected as f64 / setup_secs.max(1e-9),
            "broker_rss_before_kb": before,
            "broker_rss_after_kb": after,
            "broker_rss_per_connection_bytes": per_conn,
        }
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(path) = &a.json {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "conns: {connected} connected ({failures} failed) in {setup_secs:.2} s; broker RSS {before} -> {after} kB = {per_conn:.0} B/connection"
    );
    Ok(())
}
