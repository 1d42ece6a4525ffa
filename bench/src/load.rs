//! The load itself: publisher and subscriber loops shared by `throughput` and `latency`.
//!
//! ```text
//!   publisher threads ──PUBLISH (stamped payload)──▶ broker ──▶ subscriber threads
//!        ▲  PUBACK / PUBREC / PUBCOMP                               │ PUBACK / PUBREC / PUBCOMP
//!        └── window (closed loop) or schedule (open loop)           ▼
//!                                               SeqTracker per publisher, HDR histogram
//! ```
//!
//! One thread per connection with blocking sockets: at the scales this tool runs (a few hundred
//! connections on a few cores) that is cheaper to get right than an event loop, and every loop
//! is bounded by the run's end time plus a fixed drain time.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tachyon_codec::{encode, encode_publish_head, Disconnect, Packet, PacketId, Properties};
use tachyon_codec::{PublishHead, QoS, ReasonCode};

use crate::client::{queue_ack, AckKind, Client};
use crate::payload::{read_stamp, write_stamp, Arrival, SeqTracker, Stamp};

/// Messages encoded per write in the closed loop (also bounded by [`BATCH_SIZE_MAX`]).
const BATCH_COUNT_MAX: usize = 1024;
/// Open loop: most overdue messages sent in one catch-up write.
const CATCH_UP_COUNT_MAX: usize = 64;
/// Bytes buffered before a write in the closed loop.
const BATCH_SIZE_MAX: usize = 64 << 10;
/// A subscriber stops after this much silence once every publisher has finished. Longer than
/// a broker's backpressure may hold a publisher's last messages in its socket (Tachyon's
/// `congestion_timeout_ms` is 2 s): silence shorter than that is not loss.
const QUIET: Duration = Duration::from_millis(3_000);
/// Open loop: Packet Identifiers kept in use at most (the broker is then far behind anyway).
const OPEN_LOOP_INFLIGHT_MAX: usize = 65_000;

/// The run's shared clock: every timestamp is nanoseconds since `t0`.
pub struct Clock {
    pub t0: Instant,
    /// Start of the measurement window (end of warm-up).
    pub warm_end_ns: u64,
    /// End of the measurement window; publishers stop here.
    pub end_ns: u64,
    /// After the end: how long publishers wait for outstanding acknowledgements, and the most
    /// subscribers wait for messages still on their way.
    pub drain: Duration,
}

impl Clock {
    pub fn new(t0: Instant, warmup: Duration, duration: Duration, drain: Duration) -> Clock {
        let warm_end_ns = warmup.as_nanos() as u64;
        Clock {
            t0,
            warm_end_ns,
            end_ns: warm_end_ns + duration.as_nanos() as u64,
            drain,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.warm_end_ns && ns < self.end_ns
    }
}

/// Counters read by the progress line and the subscribers' stop rule.
pub struct Shared {
    pub sent_count: AtomicU64,
    pub delivered_count: AtomicU64,
    pub publishers_done_count: AtomicUsize,
    /// Final messages sent per publisher, valid once `publishers_done_count` reaches its length.
    pub sent_by_publisher: Vec<AtomicU64>,
    /// Sequence numbers each publisher had refused, valid like `sent_by_publisher`.
    pub refused_by_publisher: Vec<Mutex<Vec<u64>>>,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(publisher_count: usize) -> Shared {
        Shared {
            sent_count: AtomicU64::new(0),
            delivered_count: AtomicU64::new(0),
            publishers_done_count: AtomicUsize::new(0),
            sent_by_publisher: (0..publisher_count).map(|_| AtomicU64::new(0)).collect(),
            refused_by_publisher: (0..publisher_count)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            stop: AtomicBool::new(false),
        }
    }

    fn all_publishers_done(&self) -> bool {
        self.publishers_done_count.load(Ordering::Acquire) == self.sent_by_publisher.len()
    }
}

/// How a publisher decides when to send.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Closed loop: as fast as possible with at most this many unacknowledged (QoS 1/2).
    Window(usize),
    /// Open loop: message k is due at `k / rate` seconds after `t0`; the last `spin_ns` of
    /// each wait are spun instead of slept.
    Rate { rate: f64, spin_ns: u64 },
}

pub struct PublisherPlan {
    pub id: u32,
    pub topic: String,
    pub qos: QoS,
    pub payload_size: usize,
    pub pacing: Pacing,
}

#[derive(Debug)]
pub struct PublisherResult {
    pub id: u32,
    pub sent_count: u64,
    pub sent_in_window_count: u64,
    /// Messages whose flow completed (PUBACK, or PUBCOMP for QoS 2); 0 for QoS 0.
    pub acked_count: u64,
    /// Messages still without their final acknowledgement after the drain.
    pub unacked_count: u64,
    /// PUBACK/PUBREC/PUBCOMP with a failure Reason Code.
    pub refused_count: u64,
    /// Sequence numbers the broker refused with a failed PUBACK or PUBREC.
    pub refused_seqs: Vec<u64>,
    /// Open loop only: how late each send was against its schedule, in ns.
    pub lag_ns: Option<Histogram<u64>>,
    /// QoS 1/2: from sending a PUBLISH (its scheduled time, open loop) to its PUBACK or
    /// PUBREC, for messages sent in the window.
    pub ack_ns: Option<Histogram<u64>>,
    pub error: Option<String>,
}

/// Packet Identifiers in use by one publisher, and the sequence number each carries.
struct Inflight {
    used: Vec<bool>,
    seq: Vec<u64>,
    /// When each identifier's PUBLISH was sent (clock ns), for the acknowledgement latency.
    sent_ns: Vec<u64>,
    count: usize,
    cursor: u16,
}

impl Inflight {
    fn new() -> Inflight {
        Inflight {
            used: vec![false; 1 << 16],
            seq: vec![0; 1 << 16],
            sent_ns: vec![0; 1 << 16],
            count: 0,
            cursor: 0,
        }
    }

    /// # Panics
    /// If all 65,535 identifiers are in use; callers keep `count` below that.
    fn take(&mut self, seq: u64) -> PacketId {
        assert!(self.count < 65_535, "a Packet Identifier is free");
        loop {
            self.cursor = if self.cursor == u16::MAX {
                1
            } else {
                self.cursor + 1
            };
            if !self.used[self.cursor as usize] {
                self.used[self.cursor as usize] = true;
                self.seq[self.cursor as usize] = seq;
                self.count += 1;
                return PacketId::new(self.cursor).expect("cursor skips 0");
            }
        }
    }

    fn set_sent(&mut self, id: PacketId, ns: u64) {
        self.sent_ns[id.get() as usize] = ns;
    }

    fn sent(&self, id: PacketId) -> Option<u64> {
        self.used[id.get() as usize].then(|| self.sent_ns[id.get() as usize])
    }

    /// Frees `id`; returns the sequence number it carried, or `None` if it was not in use.
    fn release(&mut self, id: PacketId) -> Option<u64> {
        let slot = &mut self.used[id.get() as usize];
        if *slot {
            *slot = false;
            self.count -= 1;
            Some(self.seq[id.get() as usize])
        } else {
            None
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Runs one publisher to the end of the window and through the drain, then records its final
/// count in `shared` (also on error, so subscribers never wait for it).
pub fn run_publisher(
    mut client: Client,
    plan: PublisherPlan,
    clock: &Clock,
    shared: &Shared,
) -> PublisherResult {
    let mut result = PublisherResult {
        id: plan.id,
        sent_count: 0,
        sent_in_window_count: 0,
        acked_count: 0,
        unacked_count: 0,
        refused_count: 0,
        refused_seqs: Vec::new(),
        lag_ns: match plan.pacing {
            Pacing::Rate { .. } => Some(new_histogram()),
            Pacing::Window(_) => None,
        },
        ack_ns: (plan.qos != QoS::AtMostOnce).then(new_histogram),
        error: None,
    };
    if let Err(e) = publish_loop(&mut client, &plan, clock, shared, &mut result) {
        result.error = Some(format!("publisher {}: {e}", plan.id));
    }
    *shared.refused_by_publisher[plan.id as usize]
        .lock()
        .expect("no thread panics holding it") = result.refused_seqs.clone();
    shared.sent_by_publisher[plan.id as usize].store(result.sent_count, Ordering::Release);
    shared.publishers_done_count.fetch_add(1, Ordering::AcqRel);
    result
}

fn push_publish(
    out: &mut BytesMut,
    plan: &PublisherPlan,
    payload: &mut [u8],
    packet_id: Option<PacketId>,
    stamp: Stamp,
    client: &Client,
) {
    write_stamp(payload, stamp);
    let head = PublishHead {
        dup: false,
        qos: plan.qos,
        retain: false,
        topic: plan.topic.as_bytes(),
        packet_id,
        properties: None,
        message_expiry_interval: None,
        topic_alias: None,
        subscription_identifiers: &[],
    };
    encode_publish_head(&head, payload.len(), client.version, out);
    out.extend_from_slice(payload);
}

/// Handles every buffered acknowledgement; queues PUBREL for each PUBREC.
fn handle_acks(
    client: &mut Client,
    inflight: &mut Inflight,
    out: &mut BytesMut,
    result: &mut PublisherResult,
    clock: &Clock,
) -> io::Result<()> {
    let version = client.version;
    let record_ack = |inflight: &Inflight, id: PacketId, result: &mut PublisherResult| {
        if let (Some(sent), Some(h)) = (inflight.sent(id), result.ack_ns.as_mut()) {
            if clock.in_window(sent) {
                h.saturating_record(clock.now_ns().saturating_sub(sent).max(1));
            }
        }
    };
    while let Some(packet) = client.next_packet()? {
        let (id, reason, at_pubcomp) = match packet {
            Packet::PubAck(r) => {
                if r.reason.0 < 0x80 {
                    record_ack(inflight, r.packet_id, result);
                }
                (r.packet_id, r.reason, false)
            }
            Packet::PubRec(r) if r.reason.0 < 0x80 => {
                // PUBREC is the acknowledgement that promises the message (QoS 2).
                record_ack(inflight, r.packet_id, result);
                queue_ack(out, AckKind::PubRel, r.packet_id, version);
                continue;
            }
            // v5 [MQTT-4.3.3-4]: a failed PUBREC ends the flow without PUBREL.
            Packet::PubRec(r) => (r.packet_id, r.reason, false),
            Packet::PubComp(r) => (r.packet_id, r.reason, true),
            _ => continue,
        };
        let Some(seq) = inflight.release(id) else {
            continue;
        };
        if reason.0 < 0x80 {
            result.acked_count += 1;
        } else {
            result.refused_count += 1;
            // Refused at PUBACK/PUBREC (e.g. Quota exceeded): subscribers must not expect it.
            // A failed PUBCOMP concerns the Packet Identifier of a message already accepted.
            if !at_pubcomp {
                result.refused_seqs.push(seq);
            }
        }
    }
    Ok(())
}

/// Sleeps, then spins for the last `spin_ns`, until `clock` reads at least `due_ns`.
///
/// Spinning the whole gap would take a core from the broker on small machines; sleeping the
/// whole gap would make every send late by the wake-up latency. The thread's timer slack is set
/// to 1 ns in open-loop runs so sleeps end close to when they were asked to.
fn wait_until(clock: &Clock, due_ns: u64, spin_ns: u64) {
    loop {
        let now = clock.now_ns();
        if now >= due_ns {
            return;
        }
        let left = due_ns - now;
        if left > spin_ns {
            std::thread::sleep(Duration::from_nanos(left - spin_ns));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn publish_loop(
    client: &mut Client,
    plan: &PublisherPlan,
    clock: &Clock,
    shared: &Shared,
    result: &mut PublisherResult,
) -> io::Result<()> {
    let acked = plan.qos != QoS::AtMostOnce;
    let mut inflight = Inflight::new();
    let mut payload = vec![0u8; plan.payload_size];
    let mut out = BytesMut::with_capacity(BATCH_SIZE_MAX + plan.payload_size + 64);
    let mut seq: u64 = 0;
    if let Pacing::Rate { .. } = plan.pacing {
        // Best effort: without it sleeps overshoot by the default 50 µs slack.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
    let window = match plan.pacing {
        Pacing::Window(w) => w,
        Pacing::Rate { .. } => OPEN_LOOP_INFLIGHT_MAX,
    };
    loop {
        let now = clock.now_ns();
        if now >= clock.end_ns || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let mut batch_count: u64 = 0;
        match plan.pacing {
            Pacing::Window(_) => {
                while (batch_count as usize) < BATCH_COUNT_MAX
                    && out.len() < BATCH_SIZE_MAX
                    && (!acked || inflight.count < window)
                {
                    let id = acked.then(|| inflight.take(seq));
                    let send_ns = clock.now_ns();
                    if let Some(id) = id {
                        inflight.set_sent(id, send_ns);
                    }
                    let stamp = Stamp {
                        publisher_id: plan.id,
                        seq,
                        send_ns,
                    };
                    push_publish(&mut out, plan, &mut payload, id, stamp, client);
                    seq += 1;
                    batch_count += 1;
                    if clock.in_window(send_ns) {
                        result.sent_in_window_count += 1;
                    }
                }
            }
            Pacing::Rate { rate, spin_ns } => {
                let due = |k: u64| (k as f64 * 1e9 / rate) as u64;
                if due(seq) >= clock.end_ns {
                    break;
                }
                wait_until(clock, due(seq), spin_ns);
                let now = clock.now_ns();
                // Everything already due goes out in one write: a late generator catches up
                // instead of silently lowering the offered rate.
                while (batch_count as usize) < CATCH_UP_COUNT_MAX
                    && due(seq) <= now
                    && due(seq) < clock.end_ns
                    && (!acked || inflight.count < window)
                {
                    let id = acked.then(|| inflight.take(seq));
                    if let Some(id) = id {
                        inflight.set_sent(id, due(seq));
                    }
                    let stamp = Stamp {
                        publisher_id: plan.id,
                        seq,
                        send_ns: due(seq),
                    };
                    push_publish(&mut out, plan, &mut payload, id, stamp, client);
                    if clock.in_window(stamp.send_ns) {
                        result.sent_in_window_count += 1;
                        if let Some(h) = result.lag_ns.as_mut() {
                            h.saturating_record((now - stamp.send_ns).max(1));
                        }
                    }
                    seq += 1;
                    batch_count += 1;
                }
            }
        }
        if !out.is_empty() {
            client.stream.write_all(&out)?;
            out.clear();
            result.sent_count = seq;
            shared.sent_count.fetch_add(batch_count, Ordering::Relaxed);
        }
        if acked {
            if inflight.count >= window {
                client.read_blocking()?;
            } else {
                client.read_nowait()?;
            }
            handle_acks(client, &mut inflight, &mut out, result, clock)?;
            if !out.is_empty() {
                client.stream.write_all(&out)?;
                out.clear();
            }
        }
    }
    result.sent_count = seq;
    // Drain: complete the flows already started (QoS 2 PUBREL included), bounded in time.
    let drain_end = Instant::now() + clock.drain;
    while acked && inflight.count > 0 && Instant::now() < drain_end {
        client.read_blocking()?;
        handle_acks(client, &mut inflight, &mut out, result, clock)?;
        if !out.is_empty() {
            client.stream.write_all(&out)?;
            out.clear();
        }
    }
    result.unacked_count = inflight.count as u64;
    let disconnect = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties::default(),
    };
    let mut bye = BytesMut::new();
    if encode(&Packet::Disconnect(disconnect), client.version, &mut bye).is_ok() {
        let _ = client.stream.write_all(&bye);
    }
    Ok(())
}

pub struct SubscriberPlan {
    pub index: usize,
    /// Indexed by publisher id: whether this subscriber should receive that publisher.
    pub expected: Vec<bool>,
}

#[derive(Debug)]
pub struct SubscriberResult {
    pub index: usize,
    /// Every PUBLISH received, duplicates and misrouted ones included.
    pub received_count: u64,
    /// First arrivals (from expected publishers) that arrived inside the measurement window.
    pub delivered_in_window_count: u64,
    /// Messages sent inside the measurement window that arrived, whenever they arrived.
    pub sent_in_window_delivered_count: u64,
    /// Why the subscriber stopped: `complete`, `quiet`, `drain_limit` or `error`.
    pub stop_reason: &'static str,
    pub lost_count: u64,
    pub duplicate_count: u64,
    pub reordered_count: u64,
    pub misrouted_count: u64,
    /// Payloads without a readable stamp.
    pub corrupt_count: u64,
    /// End-to-end latency in ns of messages sent inside the window (first arrivals).
    pub latency_ns: Histogram<u64>,
    pub error: Option<String>,
}

/// Receives until every publisher is done and either everything expected arrived or the
/// connection stayed quiet for a while; never past the end plus [`DRAIN`].
pub fn run_subscriber(
    mut client: Client,
    plan: SubscriberPlan,
    clock: &Clock,
    shared: &Shared,
) -> SubscriberResult {
    let mut trackers: Vec<SeqTracker> = vec![SeqTracker::default(); plan.expected.len()];
    let mut result = SubscriberResult {
        index: plan.index,
        received_count: 0,
        delivered_in_window_count: 0,
        sent_in_window_delivered_count: 0,
        stop_reason: "error",
        lost_count: 0,
        duplicate_count: 0,
        reordered_count: 0,
        misrouted_count: 0,
        corrupt_count: 0,
        latency_ns: new_histogram(),
        error: None,
    };
    match subscribe_loop(
        &mut client,
        &plan,
        clock,
        shared,
        &mut trackers,
        &mut result,
    ) {
        Ok(reason) => result.stop_reason = reason,
        Err(e) => result.error = Some(format!("subscriber {}: {e}", plan.index)),
    }
    for (id, tracker) in trackers.iter().enumerate() {
        if plan.expected[id] {
            let sent = shared.sent_by_publisher[id].load(Ordering::Acquire);
            let refused = shared.refused_by_publisher[id]
                .lock()
                .expect("no thread panics holding it");
            let refused_missing = refused.iter().filter(|&&s| !tracker.contains(s)).count();
            result.lost_count += tracker.lost_count(sent) - refused_missing as u64;
            result.duplicate_count += tracker.duplicate_count;
            result.reordered_count += tracker.reordered_count;
        }
    }
    result
}

fn subscribe_loop(
    client: &mut Client,
    plan: &SubscriberPlan,
    clock: &Clock,
    shared: &Shared,
    trackers: &mut [SeqTracker],
    result: &mut SubscriberResult,
) -> io::Result<&'static str> {
    let version = client.version;
    let mut out = BytesMut::with_capacity(16 << 10);
    let hard_end_ns = clock.end_ns + clock.drain.as_nanos() as u64;
    let mut last_data_ns = 0u64;
    loop {
        let n = client.read_blocking()?;
        let now = clock.now_ns();
        let mut delivered: u64 = 0;
        while let Some(packet) = client.next_packet()? {
            match packet {
                Packet::Publish(p) => {
                    result.received_count += 1;
                    if let Some(id) = p.packet_id {
                        let kind = if p.qos == QoS::AtLeastOnce {
                            AckKind::PubAck
                        } else {
                            AckKind::PubRec
                        };
                        queue_ack(&mut out, kind, id, version);
                    }
                    let Some(stamp) = read_stamp(&p.payload) else {
                        result.corrupt_count += 1;
                        continue;
                    };
                    let id = stamp.publisher_id as usize;
                    if !plan.expected.get(id).copied().unwrap_or(false) {
                        result.misrouted_count += 1;
                        continue;
                    }
                    match trackers[id].handle_seq(stamp.seq) {
                        Arrival::Duplicate => {}
                        Arrival::Corrupt => result.corrupt_count += 1,
                        Arrival::InOrder | Arrival::Reordered => {
                            delivered += 1;
                            if clock.in_window(now) {
                                result.delivered_in_window_count += 1;
                            }
                            if clock.in_window(stamp.send_ns) {
                                result.sent_in_window_delivered_count += 1;
                                let latency = now.saturating_sub(stamp.send_ns).max(1);
                                result.latency_ns.saturating_record(latency);
                            }
                        }
                    }
                }
                Packet::PubRel(r) => queue_ack(&mut out, AckKind::PubComp, r.packet_id, version),
                _ => {}
            }
        }
        if !out.is_empty() {
            client.stream.write_all(&out)?;
            out.clear();
        }
        shared
            .delivered_count
            .fetch_add(delivered, Ordering::Relaxed);
        if n > 0 {
            last_data_ns = now;
        }
        if now >= hard_end_ns || shared.stop.load(Ordering::Relaxed) {
            return Ok("drain_limit");
        }
        if shared.all_publishers_done() {
            let complete = plan.expected.iter().enumerate().all(|(id, &want)| {
                !want
                    || trackers[id].distinct_count()
                        >= shared.sent_by_publisher[id].load(Ordering::Acquire)
            });
            let quiet = now.saturating_sub(last_data_ns) > QUIET.as_nanos() as u64;
            if complete {
                return Ok("complete");
            }
            if quiet && now >= clock.end_ns {
                return Ok("quiet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_full_range_taken_released_reused() {
        let mut f = Inflight::new();
        let ids: Vec<u16> = (0..65_535).map(|s| f.take(s).get()).collect();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[65_534], 65_535);
        assert_eq!(f.count, 65_535);
        let seven = PacketId::new(7).expect("non-zero");
        assert_eq!(f.release(seven), Some(6));
        assert_eq!(f.release(seven), None, "second release ignored");
        assert_eq!(f.take(99).get(), 7, "the only free identifier, 0 skipped");
        assert_eq!(f.release(seven), Some(99));
    }

    #[test]
    fn clock_window_excludes_warmup_and_end() {
        let c = Clock::new(
            Instant::now(),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        assert!(!c.in_window(999_999_999));
        assert!(c.in_window(1_000_000_000));
        assert!(!c.in_window(3_000_000_000));
    }
}
