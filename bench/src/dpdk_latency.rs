//! `dpdk-latency` and `dpdk-echo` (feature `dpdk`): latency through the broker's DPDK path,
//! measured by a client that is itself DPDK + smoltcp, so that no kernel stack sits on either
//! side. Both ends spin on their own core; frames cross a `net_memif` shared-memory link.
//!
//! ```text
//!   dpdk-latency --mode mqtt:  publisher ─▶ broker (DPDK shard) ─▶ subscriber   (one process,
//!                              one smoltcp stack, two TCP connections)
//!   dpdk-latency --mode echo:  client ─▶ dpdk-echo (bare smoltcp) ─▶ client      (the floor)
//! ```
//!
//! Open loop at a fixed rate: latency counts from each message's scheduled send time, so a
//! stall delays every later message's numbers instead of hiding them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::json;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use tachyon_codec::{
    decode, encode, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp,
    QoS, ReasonCode, Subscribe, SubscriptionOptions, Utf8Str,
};
use tachyon_net::userspace::dpdk::{self, DpdkQueue};
use tachyon_net::userspace::dpdk_config::{DpdkConfig, PortConfig, ShardQueue};
use tachyon_net::userspace::Frames;

use crate::load::new_histogram;
use crate::payload::{read_stamp, write_stamp, Stamp, STAMP_LEN};
use crate::report::{date_utc, machine, percentiles_us};

const SOCKET_BUFFER: usize = 256 * 1024;
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_secs(1);
const TOPIC: &str = "bench/dpdk";

#[derive(clap::Args, Debug)]
pub struct LinkArgs {
    /// The DPDK device of the link, e.g.
    /// `net_memif0,role=client,id=0,socket-abstract=no,socket=/tmp/tachyon-memif.sock`.
    #[arg(long)]
    pub vdev: String,
    /// This end's address and prefix on the link.
    #[arg(long, default_value = "10.79.0.3/24")]
    pub address: String,
    /// The CPU this end polls on.
    #[arg(long, default_value_t = 0)]
    pub lcore: usize,
    /// EAL arguments, comma-separated (the lcore and the device are added).
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "--no-huge,-m,64,--no-pci,--no-shconf,--no-telemetry,--file-prefix,tachyon-bench"
    )]
    pub eal: String,
}

#[derive(clap::Args, Debug)]
pub struct DpdkLatencyArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// The broker (mqtt) or the echo server (echo) on the link.
    #[arg(long, default_value = "10.79.0.2:1883")]
    pub server: SocketAddr,
    /// "mqtt": publish-to-deliver through the broker; "echo": round trip to `dpdk-echo`.
    #[arg(long, default_value = "mqtt")]
    pub mode: String,
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Payload bytes (at least the 20-byte stamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Idle MQTT connections to open to the server before measuring (mqtt mode). They are
    /// then dropped from this client's stack (the server keeps them), so only the server
    /// pays for them: this measures the cost of connections per shard.
    #[arg(long, default_value_t = 0)]
    pub idle_connections: u32,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct DpdkEchoArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Stops after this long even without SIGTERM (every load loop is bounded).
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

/// One smoltcp stack on one DPDK queue, polled from this thread.
struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: DpdkQueue,
    t0: Instant,
}

impl Stack {
    fn start(link: &LinkArgs) -> Result<(Stack, dpdk::Ports), String> {
        let (address, prefix) = link
            .address
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)))
            .ok_or_else(|| format!("--address {:?}: use a.b.c.d/len", link.address))?;
        let eal: Vec<String> = link
            .eal
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let cfg = DpdkConfig {
            eal_args: eal,
            ports: vec![PortConfig::with_defaults(&link.vdev, address, prefix)],
            shards: vec![ShardQueue {
                lcore: link.lcore,
                port: 0,
                queue: 0,
            }],
        };
        let (mut devices, ports) = dpdk::start(&cfg).map_err(|e| e.to_string())?;
        let d = devices.pop().ok_or("no DPDK device")?;
        let mut dev = d.device;
        let t0 = Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(d.iface.mac)));
        config.random_seed = t0.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let mut iface = Interface::new(config, &mut dev, NetInstant::from_micros(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address), prefix));
        });
        Ok((
            Stack {
                iface,
                sockets: SocketSet::new(Vec::new()),
                dev,
                t0,
            },
            ports,
        ))
    }

    fn now(&self) -> NetInstant {
        NetInstant::from_micros(self.t0.elapsed().as_micros() as i64)
    }

    fn socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s
    }

    fn socket_small() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 2048]),
            tcp::SocketBuffer::new(vec![0; 2048]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s
    }

    fn ingress(&mut self) {
        let ts = self.now();
        while self
            .iface
            .poll_ingress_single(ts, &mut self.dev, &mut self.sockets)
            != PollIngressSingleResult::None
        {}
    }

    fn egress(&mut self) {
        let ts = self.now();
        for _ in 0..64 {
            if self.iface.poll_egress(ts, &mut self.dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        self.dev.flush_tx();
    }

    fn poll(&mut self) {
        self.ingress();
        self.egress();
    }

    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn connect(&mut self, server: SocketAddr, local_port: u16) -> Result<SocketHandle, String> {
        let h = self.sockets.add(Self::socket());
        let IpAddrV4(ip) = IpAddrV4::of(server)?;
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(ip), server.port()), local_port)
            .map_err(|e| format!("connect to {server}: {e:?}"))?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !self.tcp(h).may_send() {
            if Instant::now() > deadline || self.tcp(h).state() == tcp::State::Closed {
                return Err(format!("no TCP connection to {server} within {SETUP_TIMEOUT:?} (is the server up on the link?)"));
            }
            self.poll();
        }
        Ok(h)
    }

    /// Writes all of `bytes` (polling while the send buffer is full).
    fn write(&mut self, h: SocketHandle, mut bytes: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !bytes.is_empty() {
            let n = self
                .tcp(h)
                .send_slice(bytes)
                .map_err(|e| format!("send: {e:?}"))?;
            bytes = &bytes[n..];
            if !bytes.is_empty() {
                if Instant::now() > deadline {
                    return Err("send buffer stayed full".into());
                }
                self.poll();
            }
        }
        Ok(())
    }

    /// Appends what `h` has received to `rx`.
    fn read(&mut self, h: SocketHandle, rx: &mut BytesMut) -> Result<(), String> {
        let s = self.tcp(h);
        while s.can_recv() {
            s.recv(|d| {
                rx.extend_from_slice(d);
                (d.len(), ())
            })
            .map_err(|e| format!("recv: {e:?}"))?;
        }
        if !s.may_recv() && !s.can_recv() && s.state() != tcp::State::Established {
            return Err("the server closed the connection".into());
        }
        Ok(())
    }

    /// Waits for the next MQTT packet on `h`.
    fn expect(&mut self, h: SocketHandle, rx: &mut BytesMut) -> Result<Packet, String> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            if let Some(p) =
                decode(rx, Some(ProtocolVersion::V311), 1 << 20).map_err(|e| e.to_string())?
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                return Err("no reply from the broker".into());
            }
            self.poll();
            self.read(h, rx)?;
        }
    }
}

struct IpAddrV4(std::net::Ipv4Addr);

impl IpAddrV4 {
    fn of(a: SocketAddr) -> Result<IpAddrV4, String> {
        match a {
            SocketAddr::V4(v4) => Ok(IpAddrV4(*v4.ip())),
            SocketAddr::V6(_) => Err(format!("{a}: the DPDK path is IPv4 only")),
        }
    }
}

fn encoded(p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, ProtocolVersion::V311, &mut out).expect("the bench's packets encode");
    out.to_vec()
}

fn mqtt_connect(
    stack: &mut Stack,
    h: SocketHandle,
    id: &str,
    rx: &mut BytesMut,
) -> Result<(), String> {
    let c = Connect {
        version: ProtocolVersion::V311,
        clean_start: true,
        keep_alive_secs: 0,
        client_id: Utf8Str::from_string(id.to_owned()).expect("valid id"),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    stack.write(h, &encoded(&Packet::Connect(Box::new(c))))?;
    match stack.expect(h, rx)? {
        Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS => Ok(()),
        other => Err(format!("expected a successful CONNACK, got {other:?}")),
    }
}

/// Opens `count` MQTT connections (CONNECT, CONNACK) in batches, then forgets them on this
/// side without closing: the server holds them as idle connections.
fn open_idle(stack: &mut Stack, server: SocketAddr, count: u32) -> Result<(), String> {
    const BATCH: u32 = 64;
    // Ports of this run only (a previous run's idle connections may still be open).
    let first_port = 30000 + (std::process::id() % 8) as u16 * 4000;
    let mut opened = 0;
    while opened < count {
        let n = BATCH.min(count - opened);
        let mut hs = Vec::new();
        for i in 0..n {
            let h = stack.sockets.add(Stack::socket_small());
            let IpAddrV4(ip) = IpAddrV4::of(server)?;
            let port = first_port + ((opened + i) % 4000) as u16;
            let cx = stack.iface.context();
            stack
                .sockets
                .get_mut::<tcp::Socket>(h)
                .connect(cx, (IpAddress::Ipv4(ip), server.port()), port)
                .map_err(|e| format!("idle connect: {e:?}"))?;
            hs.push(h);
        }
        for (i, &h) in hs.iter().enumerate() {
            let deadline = Instant::now() + SETUP_TIMEOUT;
            while !stack.tcp(h).may_send() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "idle connection {} not established (server limit?)",
                        opened as usize + i
                    ));
                }
                stack.poll();
            }
            let mut rx = BytesMut::new();
            mqtt_connect(stack, h, &format!("idle-{}", opened as usize + i), &mut rx)?;
        }
        // Let the last ACKs go out, then forget the sockets.
        stack.poll();
        for h in hs {
            stack.sockets.remove(h);
        }
        opened += n;
    }
    eprintln!("{count} idle connections open on the server");
    Ok(())
}

/// A PUBLISH frame for `TOPIC` with a `size`-byte payload; returns it and the offset of the
/// payload (the stamp is patched in per message; QoS 1 packet ids are patched too).
fn publish_template(size: usize, qos: u8) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    body.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    body.extend_from_slice(TOPIC.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&[0, 1]);
    }
    let payload_at_body = body.len();
    body.resize(body.len() + size, 0x5A);
    let mut frame = vec![0x30 | (qos << 1)];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        frame.push(b);
        if len == 0 {
            break;
        }
    }
    let header = frame.len();
    frame.extend_from_slice(&body);
    (frame, header + payload_at_body)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: i32) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_stop_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// `dpdk-latency`.
pub fn latency(args: &DpdkLatencyArgs) -> Result<(), String> {
    if args.size < STAMP_LEN {
        return Err(format!("--size must be at least {STAMP_LEN} (the stamp)"));
    }
    if args.rate == 0 || args.qos > 1 {
        return Err("--rate must be > 0 and --qos 0 or 1".into());
    }
    let echo = match args.mode.as_str() {
        "mqtt" => false,
        "echo" => true,
        m => return Err(format!("--mode {m:?}: use mqtt or echo")),
    };
    catch_stop_signals();
    let (mut stack, ports) = Stack::start(&args.link)?;
    let result = measure(&mut stack, args, echo);
    drop(stack);
    ports.stop();
    let report = result?;
    let text = serde_json::to_string_pretty(&report).expect("JSON values serialize");
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn measure(
    stack: &mut Stack,
    args: &DpdkLatencyArgs,
    echo: bool,
) -> Result<serde_json::Value, String> {
    let mut sub_rx = BytesMut::with_capacity(SOCKET_BUFFER);
    let mut pub_rx = BytesMut::with_capacity(SOCKET_BUFFER);
    // Fresh local ports per run: a previous run's connections may still be open on the
    // server side (same 4-tuple) if that run was killed.
    let base = 20000 + (std::process::id() % 2000) as u16 * 4;
    if args.idle_connections > 4000 {
        return Err("--idle-connections: at most 4000".into());
    }
    if !echo && args.idle_connections > 0 {
        open_idle(stack, args.server, args.idle_connections)?;
    }
    let (publisher, subscriber) = if echo {
        let h = stack.connect(args.server, base)?;
        (h, h)
    } else {
        let s = stack.connect(args.server, base + 1)?;
        mqtt_connect(stack, s, "dpdk-bench-sub", &mut sub_rx)?;
        let sub = Subscribe {
            packet_id: PacketId::new(1).expect("non-zero"),
            properties: Properties::default(),
            filters: vec![(
                Utf8Str::from_string(TOPIC.to_owned()).expect("valid"),
                SubscriptionOptions {
                    qos: if args.qos == 1 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    },
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        };
        stack.write(s, &encoded(&Packet::Subscribe(sub)))?;
        match stack.expect(s, &mut sub_rx)? {
            Packet::SubAck(_) => {}
            other => return Err(format!("expected SUBACK, got {other:?}")),
        }
        let p = stack.connect(args.server, base + 2)?;
        mqtt_connect(stack, p, "dpdk-bench-pub", &mut pub_rx)?;
        (p, s)
    };
    let (mut frame, payload_at) = if echo {
        (vec![0x5A; args.size], 0)
    } else {
        publish_template(args.size, args.qos)
    };
    let interval_ns = 1_000_000_000 / args.rate;
    let warm_ns = (args.warmup * 1e9) as u64;
    let end_ns = warm_ns + (args.duration * 1e9) as u64;
    let total = end_ns / interval_ns;
    let mut hist = new_histogram();
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut send_lag_max = 0u64;
    let mut echo_buf = BytesMut::new();
    let mut acks = BytesMut::new();
    let mut next_id: u16 = 1;
    let t0 = Instant::now();
    let ns = |t0: Instant| t0.elapsed().as_nanos() as u64;
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Err("stopped by a signal".into());
        }
        let now = ns(t0);
        while sent < total && sent * interval_ns <= now {
            let scheduled = sent * interval_ns;
            send_lag_max = send_lag_max.max(now - scheduled);
            write_stamp(
                &mut frame[payload_at..],
                Stamp {
                    publisher_id: 0,
                    seq: sent,
                    send_ns: scheduled,
                },
            );
            if !echo && args.qos == 1 {
                frame[payload_at - 2..payload_at].copy_from_slice(&next_id.to_be_bytes());
                next_id = next_id.checked_add(1).unwrap_or(1);
            }
            stack.write(publisher, &frame)?;
            sent += 1;
        }
        stack.ingress();
        let now = ns(t0);
        if echo {
            stack.read(subscriber, &mut echo_buf)?;
            while echo_buf.len() >= args.size {
                let m = echo_buf.split_to(args.size);
                if let Some(st) = read_stamp(&m) {
                    received += 1;
                    if st.send_ns >= warm_ns {
                        hist.saturating_record(now.saturating_sub(st.send_ns).max(1));
                    }
                }
            }
        } else {
            stack.read(subscriber, &mut sub_rx)?;
            while let Some(p) = decode(&mut sub_rx, Some(ProtocolVersion::V311), 1 << 20)
                .map_err(|e| e.to_string())?
            {
                if let Packet::Publish(p) = p {
                    if let Some(st) = read_stamp(&p.payload) {
                        received += 1;
                        if st.send_ns >= warm_ns {
                            hist.saturating_record(now.saturating_sub(st.send_ns).max(1));
                        }
                    }
                    if let Some(id) = p.packet_id {
                        encode(
                            &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)),
                            ProtocolVersion::V311,
                            &mut acks,
                        )
                        .expect("encodes");
                    }
                }
            }
            if !acks.is_empty() {
                let a = acks.split();
                stack.write(subscriber, &a)?;
            }
            stack.read(publisher, &mut pub_rx)?;
            pub_rx.clear(); // PUBACKs to the publisher: not measured
        }
        stack.egress();
        if (sent == total && received >= total) || ns(t0) > end_ns + DRAIN.as_nanos() as u64 {
            break;
        }
    }
    // Leave cleanly: DISCONNECT (mqtt), FIN, and a moment for the server to see them.
    for h in [publisher, subscriber] {
        if !echo {
            let _ = stack.write(
                h,
                &encoded(&Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                })),
            );
        }
        stack.tcp(h).close();
    }
    let close_end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < close_end {
        stack.poll();
    }
    let measured = hist.len();
    eprintln!(
        "dpdk-latency {} qos{} {} msg/s {}B: p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs max {:.1} µs ({} of {} received)",
        args.mode, args.qos, args.rate, args.size,
        hist.value_at_quantile(0.5) as f64 / 1e3, hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3, hist.max() as f64 / 1e3, received, sent
    );
    Ok(json!({
        "kind": "dpdk-latency",
        "date": date_utc(),
        "machine": machine(),
        "config": { "mode": args.mode, "server": args.server.to_string(), "vdev": args.link.vdev,
                    "rate": args.rate, "size_bytes": args.size, "qos": args.qos,
                    "idle_connections": args.idle_connections,
                    "duration_secs": args.duration, "warmup_secs": args.warmup,
                    "client": "DPDK + smoltcp, spinning on its lcore" },
        "results": {
            "sent": sent, "received": received, "lost": sent.saturating_sub(received),
            "measured": measured,
            "send_lag_max_us": send_lag_max as f64 / 1e3,
            "latency_us": percentiles_us(&hist),
        },
    }))
}

/// `dpdk-echo`: a bare smoltcp TCP echo server on a DPDK link (the floor of `dpdk-latency`).
pub fn echo(args: &DpdkEchoArgs) -> Result<(), String> {
    catch_stop_signals();
    let (mut stack, ports) = Stack::start(&args.link)?;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let mut s = Stack::socket();
        s.listen(args.port).map_err(|e| format!("listen: {e:?}"))?;
        handles.push(stack.sockets.add(s));
    }
    eprintln!(
        "dpdk-echo listening on {} port {}",
        args.link.address, args.port
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut buf = vec![0u8; SOCKET_BUFFER];
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        stack.ingress();
        for &h in &handles {
            let s = stack.tcp(h);
            if s.can_recv() && s.can_send() {
                let room = s.send_capacity() - s.send_queue();
                let n = s
                    .recv_slice(&mut buf[..room.min(SOCKET_BUFFER)])
                    .unwrap_or(0);
                let _ = s.send_slice(&buf[..n]);
            }
            if !s.is_open() || s.state() == tcp::State::CloseWait {
                s.abort();
            }
            if s.state() == tcp::State::Closed {
                let _ = s.listen(args.port);
            }
        }
        stack.egress();
    }
    drop(stack);
    ports.stop();
    Ok(())
}
