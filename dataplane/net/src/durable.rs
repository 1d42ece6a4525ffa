//! The data directory: recovery before the shards start, then one WAL per shard written from
//! the shard's own loop (no thread, no lock shared with another shard).
//!
//! ```text
//!   start:  lock DIR/LOCK ─▶ open DIR/shard-*/ (cut torn tails) ─▶ replay each into an image
//!           ─▶ merge (highest session generation wins) ─▶ restore into the engines
//!           (sessions on their home shard, retained everywhere, routes everywhere)
//!           ─▶ each shard writes a snapshot, commits, deletes the segments before it
//!   loop:   engine work ─▶ ShardLog::step: records into the WAL; `sync`: commit when the
//!           batch is old or big enough, then tell the engine (held acks go out) ─▶ output
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tachyon_engine::persist::record::kind;
use tachyon_engine::persist::restore::restore_all;
use tachyon_engine::persist::{merge, Image, Record, Replay};
use tachyon_engine::{Engine, EngineConfig};
use tachyon_wal::{Lsn, SyncPolicy, Wal, WalConfig, WalError};

use crate::NetError;

/// `[durability]` of the configuration.
#[derive(Debug, Clone)]
pub struct DurabilityConfig {
    pub data_dir: PathBuf,
    /// `Sync { .. }`: acknowledgements wait for the disk; `None`: at once.
    pub sync: SyncPolicy,
    pub segment_bytes: u64,
    /// Write a snapshot (and delete the segments before it) after this many bytes of log.
    pub snapshot_after_bytes: u64,
}

/// Holds the data directory's lock for the life of the broker.
pub struct DirLock {
    _lock: Flock<File>,
}

/// What the shards start with: one engine (holding the recovered state) and one log per
/// shard, and the data directory's lock (held until dropped).
pub struct Prepared {
    pub engines: Vec<Engine>,
    pub logs: Vec<Option<ShardLog>>,
    pub lock: Option<DirLock>,
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    pub segments: usize,
    pub records: usize,
    pub elapsed: Duration,
}

/// Engine settings that depend on the durability policy and the time origin `epoch`.
fn engine_settings(
    cfg: &EngineConfig,
    durability: Option<&DurabilityConfig>,
    epoch: Instant,
) -> Arc<EngineConfig> {
    let mut cfg = cfg.clone();
    cfg.unix_epoch_ms = unix_ms().saturating_sub(epoch.elapsed().as_millis() as u64);
    cfg.log_state = durability.is_some();
    // Under `none` too: "durable" is then "in the mapped pages" (every loop pass), so an
    // acknowledgement still waits for the other shards that took the message to have
    // written it, and a crash of the broker loses nothing acknowledged.
    cfg.acks_wait_for_log = durability.is_some();
    Arc::new(cfg)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn wal_err(e: WalError) -> NetError {
    NetError::Durability(e.to_string())
}

fn shard_dir(data: &Path, shard: usize) -> PathBuf {
    data.join(format!("shard-{shard}"))
}

/// Builds the engines of `shard_count` shards with the state recovered from the data
/// directory, and each shard's log. Without durability the engines start empty. `epoch` is
/// the drivers' time origin (engine time 0).
///
/// # Errors
/// [`NetError::Durability`] when the directory cannot be used (locked by another broker,
/// permissions, a WAL of another format version): start-up stops.
pub fn prepare(
    shard_count: usize,
    engine_cfg: &EngineConfig,
    durability: Option<&DurabilityConfig>,
    epoch: Instant,
) -> Result<Prepared, NetError> {
    let engine_cfg = engine_settings(engine_cfg, durability, epoch);
    let mut engines: Vec<Engine> = (0..shard_count)
        .map(|s| Engine::new(s, shard_count, engine_cfg.clone()))
        .collect();
    let Some(d) = durability else {
        return Ok(Prepared {
            engines,
            logs: (0..shard_count).map(|_| None).collect(),
            lock: None,
        });
    };
    let started = Instant::now();
    std::fs::create_dir_all(&d.data_dir).map_err(|e| {
        NetError::Durability(format!(
            "data directory {}: cannot create it: {e} — choose another with --data-dir or durability.data_dir",
            d.data_dir.display()
        ))
    })?;
    let lock_path = d.data_dir.join("LOCK");
    let file = File::create(&lock_path)
        .map_err(|e| NetError::Durability(format!("{}: cannot open: {e}", lock_path.display())))?;
    // A dataplane that was just killed may take a moment to release the lock (its parent
    // restarting it, or a broker started again right after a kill): wait a little.
    let mut file = file;
    let mut waited = Duration::ZERO;
    let lock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, _)) if waited < LOCK_WAIT => {
                if waited.is_zero() {
                    tracing::info!(dir = %d.data_dir.display(), "data directory locked; waiting up to 5 s for its previous user to exit");
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
            Err(_) => {
                return Err(NetError::Durability(format!(
                    "data directory {} is in use by another running broker — stop it, or give this one its own directory with --data-dir",
                    d.data_dir.display()
                )))
            }
        }
    };

    // Every shard directory present, including those of a run with more shards.
    let mut dirs: Vec<(usize, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&d.data_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix("shard-").and_then(|n| n.parse().ok()) {
                dirs.push((n, e.path()));
            }
        }
    }
    for s in 0..shard_count {
        if !dirs.iter().any(|(n, _)| *n == s) {
            dirs.push((s, shard_dir(&d.data_dir, s)));
        }
    }
    dirs.sort();
    let mut wals: Vec<(usize, PathBuf, Wal)> = Vec::new();
    let mut images = Vec::new();
    let mut report = RecoveryReport::default();
    for (n, dir) in dirs {
        let (wal, rec) = Wal::open(WalConfig {
            dir: dir.clone(),
            shard: n as u16,
            segment_bytes: d.segment_bytes,
            sync: d.sync,
        })
        .map_err(wal_err)?;
        if let Some((file, offset, reason)) = &rec.truncated {
            tracing::warn!(shard = n, file = %file.display(), offset, reason = %reason,
                "WAL tail cut at a torn or corrupt record (a crash while writing); the records before it are recovered");
        }
        for f in &rec.discarded {
            tracing::warn!(shard = n, file = %f.display(), "WAL segment after the cut moved aside");
        }
        report.segments += rec.segments;
        report.records += rec.records.len();
        let mut replay = Replay::default();
        let mut undecodable = 0u64;
        for (_, k, payload) in &rec.records {
            match Record::decode(*k, payload) {
                Some(r) => replay.apply(&r),
                None => undecodable += 1,
            }
        }
        if undecodable > 0 {
            tracing::warn!(
                shard = n,
                records = undecodable,
                "WAL records of an unknown kind or shape skipped"
            );
        }
        images.push(replay.finish());
        wals.push((n, dir, wal));
    }
    let image: Image = merge(images);
    let now = epoch.elapsed().as_millis() as u64;
    let restored = restore_all(&mut engines, &image, now);
    if restored.skipped > 0 {
        tracing::warn!(
            sessions = restored.skipped,
            "logged sessions with an invalid client id skipped"
        );
    }
    report.sessions = restored.sessions;
    report.messages = restored.messages;
    report.retained = restored.retained;

    // Each shard starts its log with a snapshot of what it now holds; older segments (and
    // the directories of shards this run does not have) go once every snapshot is durable.
    let mut logs: Vec<Option<ShardLog>> = (0..shard_count).map(|_| None).collect();
    let mut extra = Vec::new();
    for (n, dir, wal) in wals {
        if n >= shard_count {
            extra.push((dir, wal));
            continue;
        }
        let mut log = ShardLog::new(wal, d);
        engines[n].snapshot();
        log.append(&mut engines[n]);
        log.commit(&mut engines[n], now);
        if log.failed {
            return Err(NetError::Durability(format!(
                "shard {n}: cannot write the start-up snapshot into {} (see the error above)",
                dir.display()
            )));
        }
        logs[n] = Some(log);
    }
    for log in logs.iter_mut().flatten() {
        log.reclaim();
    }
    for (dir, wal) in extra {
        drop(wal);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the WAL of a shard this run does not have (its state was moved to the others)");
        }
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        data_dir = %d.data_dir.display(),
        sessions = report.sessions,
        messages = report.messages,
        retained = report.retained,
        segments = report.segments,
        records = report.records,
        elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
        sync = ?d.sync,
        "recovered durable state"
    );
    Ok(Prepared {
        engines,
        logs,
        lock: Some(DirLock { _lock: lock }),
    })
}

/// One shard's WAL, driven from the shard's loop.
pub struct ShardLog {
    wal: Wal,
    /// Group commit bounds (`sync`), or none (`none`).
    batch: Option<(Duration, u32)>,
    /// Engine records appended so far (the engine's log position they reach).
    appended: u64,
    /// When the open batch got its first record.
    batch_since: Option<Instant>,
    snapshot_after_bytes: u64,
    /// Log bytes after which the next snapshot is written: the configured amount, or twice
    /// the last snapshot if that is larger (a large state is not rewritten continuously).
    next_snapshot_at: u64,
    bytes_since_snapshot: u64,
    /// Lsn of the last snapshot's beginning: segments before it go once it is durable.
    snapshot_lsn: Option<Lsn>,
    failed: bool,
    last_retry: Option<Instant>,
    /// Commits, and their total and longest time (for the stop line and benchmarks).
    pub commits: u64,
    pub commit_ns: u64,
    pub commit_max_ns: u64,
    pub snapshots: u64,
    pub snapshot_max_us: u64,
    /// Tells the control plane's hang check when a commit or a snapshot holds the loop.
    busy: Option<tachyon_stats::BusyMarker>,
    /// Commit durations, for `/metrics`.
    pub commit_latency: tachyon_stats::Histogram,
    /// Bytes appended (records with their framing).
    pub bytes_appended: u64,
}

/// How long start-up waits for the data directory's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long a shard waits before trying a failed WAL again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl ShardLog {
    fn new(wal: Wal, d: &DurabilityConfig) -> ShardLog {
        let batch = match d.sync {
            SyncPolicy::Sync {
                max_delay_us,
                max_records,
            } => Some((
                Duration::from_micros(max_delay_us.into()),
                max_records.max(1),
            )),
            SyncPolicy::None => None,
        };
        ShardLog {
            wal,
            batch,
            appended: 0,
            batch_since: None,
            snapshot_after_bytes: d.snapshot_after_bytes.max(1),
            next_snapshot_at: d.snapshot_after_bytes.max(1),
            bytes_since_snapshot: 0,
            snapshot_lsn: None,
            failed: false,
            last_retry: None,
            commits: 0,
            commit_ns: 0,
            commit_max_ns: 0,
            snapshots: 0,
            snapshot_max_us: 0,
            busy: None,
            commit_latency: Default::default(),
            bytes_appended: 0,
        }
    }

    /// After the engine's work of a loop pass and before its output is written: moves the
    /// engine's records into the WAL and, under `sync`, commits a batch that is old or big
    /// enough, or any batch when the pass found nothing to do (`idle`: no more is coming
    /// now, waiting would only add latency); then the engine releases what waited for it.
    pub fn step(&mut self, engine: &mut Engine, now: u64, idle: bool) {
        if self.failed && self.last_retry.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return;
        }
        // Everything below may wait for the disk (page faults in the mapping, a segment roll,
        // msync, unlinks): a slow disk is not a hung shard.
        self.busy(tachyon_stats::Busy::Wal);
        self.step_inner(engine, now, idle);
        self.done();
    }

    fn step_inner(&mut self, engine: &mut Engine, now: u64, idle: bool) {
        // What a commit releases can log more (a deferred QoS 2 message is routed once its
        // "received" record is durable): a few rounds, so that it does not wait for the
        // next loop pass (which may sleep).
        for _ in 0..4 {
            self.append(engine);
            match self.batch {
                None => {
                    // Nothing to wait for: the records are in the mapped pages (they survive
                    // a crash of the broker; the kernel writes them to disk when it chooses).
                    if !self.failed {
                        let _ = self.wal.commit();
                    }
                    engine.handle_durable(now, self.appended);
                }
                Some((delay, records)) => {
                    if self.wal.pending() > 0 {
                        let since = *self.batch_since.get_or_insert_with(Instant::now);
                        if idle || self.wal.pending() >= records || since.elapsed() >= delay {
                            self.commit(engine, now);
                        }
                    }
                }
            }
            if self.failed || !engine.log_pending() || self.batch_since.is_some() {
                break;
            }
        }
        if self.snapshot_lsn.is_some() && self.wal.durable_lsn() + 1 >= self.wal.next_lsn() {
            self.reclaim();
        }
        if self.bytes_since_snapshot >= self.next_snapshot_at && !self.failed {
            self.snapshot(engine);
        }
    }

    /// Marks WAL steps and snapshots in the stats region while they run (a slow disk or a
    /// large snapshot is told apart from a hung shard; see `supervisor.hang_timeout_ms`).
    pub fn watch(&mut self, busy: Option<tachyon_stats::BusyMarker>) {
        self.busy = busy;
    }

    fn busy(&self, what: tachyon_stats::Busy) {
        if let Some(b) = &self.busy {
            b.begin(what);
        }
    }

    fn done(&self) {
        if let Some(b) = &self.busy {
            b.end();
        }
    }

    /// How long the loop may block before the open batch must be committed.
    pub fn wait_hint(&self) -> Option<Duration> {
        let (delay, _) = self.batch?;
        let since = self.batch_since?;
        Some(delay.saturating_sub(since.elapsed()))
    }

    /// Writes and commits everything the engine logged, whatever the batch bounds (before
    /// the connections close at shutdown, so that the acknowledgements waiting for it and
    /// the DISCONNECT go out).
    pub fn commit_now(&mut self, engine: &mut Engine, now: u64) {
        self.busy(tachyon_stats::Busy::Wal);
        self.append(engine);
        self.commit(engine, now);
        self.done();
    }

    /// At shutdown: everything the engine logged is written and committed.
    pub fn finish(&mut self, engine: &mut Engine, now: u64) {
        self.commit_now(engine, now);
        tracing::info!(
            commits = self.commits,
            commit_mean_us = self.commit_ns as f64 / self.commits.max(1) as f64 / 1e3,
            commit_max_us = self.commit_max_ns as f64 / 1e3,
            snapshots = self.snapshots,
            snapshot_max_us = self.snapshot_max_us,
            segments = self.wal.segment_count(),
            "WAL closed"
        );
    }

    fn append(&mut self, engine: &mut Engine) {
        let wal = &mut self.wal;
        let mut bytes = 0u64;
        let mut snapshot_lsn = None;
        let (n, res) = engine.drain_log(|k, payload| {
            let lsn = wal.append(k, payload)?;
            bytes += payload.len() as u64 + 24;
            if k == kind::SNAPSHOT_BEGIN {
                snapshot_lsn = Some(lsn);
            }
            Ok::<(), WalError>(())
        });
        self.appended += n;
        self.bytes_since_snapshot += bytes;
        self.bytes_appended += bytes;
        if snapshot_lsn.is_some() {
            self.snapshot_lsn = snapshot_lsn;
        }
        match res {
            Ok(()) => {
                if self.failed {
                    tracing::warn!("WAL writable again: QoS 1/2 publishes are accepted again");
                    self.failed = false;
                    engine.set_log_failed(false);
                }
            }
            Err(e) => self.fail(engine, &e),
        }
    }

    fn fail(&mut self, engine: &mut Engine, e: &WalError) {
        self.last_retry = Some(Instant::now());
        if !self.failed {
            tracing::error!(shard = engine.shard(), error = %e,
                "cannot write the WAL: QoS 1/2 publishes are refused until it can be written again (acknowledged messages are safe; QoS 0 and existing sessions go on); retrying every second");
            self.failed = true;
            engine.set_log_failed(true);
        }
    }

    fn commit(&mut self, engine: &mut Engine, now: u64) {
        self.batch_since = None;
        if self.failed {
            return;
        }
        let t = Instant::now();
        match self.wal.commit() {
            Ok(_) => {
                let ns = t.elapsed().as_nanos() as u64;
                self.commits += 1;
                self.commit_ns += ns;
                self.commit_max_ns = self.commit_max_ns.max(ns);
                self.commit_latency.record(ns / 1000);
                engine.handle_durable(now, self.appended);
            }
            Err(e) => self.fail(engine, &e),
        }
    }

    /// Deletes the segments before the last snapshot once it is durable.
    fn reclaim(&mut self) {
        let Some(lsn) = self.snapshot_lsn else {
            return;
        };
        if self.wal.durable_lsn() < lsn {
            return;
        }
        self.snapshot_lsn = None;
        if let Err(e) = self.wal.remove_before(lsn) {
            tracing::warn!(error = %e, "cannot delete old WAL segments");
        }
    }

    /// The engine writes its state as records; the next steps append and commit them.
    fn snapshot(&mut self, engine: &mut Engine) {
        let t = Instant::now();
        self.busy(tachyon_stats::Busy::Snapshot);
        engine.snapshot();
        let us = t.elapsed().as_micros() as u64;
        self.snapshots += 1;
        self.snapshot_max_us = self.snapshot_max_us.max(us);
        self.bytes_since_snapshot = 0;
        tracing::debug!(
            shard = engine.shard(),
            us,
            segments = self.wal.segment_count(),
            "snapshot written into the WAL"
        );
        self.append(engine);
        // Back in the WAL step that called it.
        self.busy(tachyon_stats::Busy::Wal);
        // The snapshot's own bytes do not count towards the next one.
        self.next_snapshot_at = self
            .snapshot_after_bytes
            .max(self.bytes_since_snapshot.saturating_mul(2));
        self.bytes_since_snapshot = 0;
    }
}

/// `tachyon inspect-data`: what a data directory holds, read without changing it: per
/// shard log, then the state recovery would bring back (sessions, their subscriptions and
/// messages, retained messages). `client` limits the sessions shown; `messages` lists each
/// held message.
///
/// # Errors
/// A log that cannot be read, with what to do about it.
pub fn inspect(
    data_dir: &Path,
    client: Option<&str>,
    messages: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let mut dirs: Vec<(usize, PathBuf)> = std::fs::read_dir(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_string_lossy()
                .strip_prefix("shard-")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    dirs.sort();
    let mut images = Vec::new();
    let w = |out: &mut dyn std::io::Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    for (n, dir) in dirs {
        let rec = Wal::read_only(&dir).map_err(|e| e.to_string())?;
        let mut replay = Replay::default();
        let mut bad = 0;
        for (_, k, p) in &rec.records {
            match Record::decode(*k, p) {
                Some(r) => replay.apply(&r),
                None => bad += 1,
            }
        }
        let first = rec.records.first().map_or(0, |r| r.0);
        let last = rec.records.last().map_or(0, |r| r.0);
        w(
            out,
            format!(
                "shard-{n}: {} segments, records {first}..={last} ({} unreadable), {} snapshots, cut: {}",
                rec.segments,
                bad,
                replay.snapshots,
                rec.truncated
                    .as_ref()
                    .map_or("none".into(), |(f, o, r)| format!("{}@{o}: {r}", f.display()))
            ),
        );
        let img = replay.finish();
        for (c, s) in &img.sessions {
            if client.is_none_or(|x| x == c) {
                w(
                    out,
                    format!(
                        "  {c}: gen {} expiry {} subs {} messages {} qos2-in {}",
                        s.gen,
                        s.expiry_secs,
                        s.subs.len(),
                        s.deliveries.len(),
                        s.qos2_incoming.len()
                    ),
                );
            }
        }
        images.push(img);
    }
    let img = merge(images);
    w(
        out,
        format!(
            "recovered: {} sessions, {} retained messages",
            img.sessions.len(),
            img.retained.len()
        ),
    );
    for (c, s) in &img.sessions {
        if client.is_some_and(|x| x != c) {
            continue;
        }
        w(
            out,
            format!(
                "session {c}: gen {} v5 {} expiry {} subscriptions {:?}",
                s.gen,
                s.v5,
                s.expiry_secs,
                s.subs.keys().collect::<Vec<_>>()
            ),
        );
        w(
            out,
            format!(
                "  messages {} (inflight {}), inbound QoS 2 ids {:?}, will {}",
                s.deliveries.len(),
                s.by_packet_id.len(),
                s.qos2_incoming.keys().collect::<Vec<_>>(),
                s.will.is_some()
            ),
        );
        if messages {
            for (id, d) in &s.deliveries {
                let (topic, payload) = d
                    .entry
                    .decode_publish()
                    .map(|p| {
                        (
                            p.topic.as_str().to_owned(),
                            String::from_utf8_lossy(&p.payload[..p.payload.len().min(60)])
                                .into_owned(),
                        )
                    })
                    .unwrap_or_default();
                w(
                    out,
                    format!(
                        "    #{id} qos {} packet id {:?}{} receipt {} {topic} {payload:?}",
                        d.entry.qos,
                        d.packet_id,
                        if d.released { " released" } else { "" },
                        d.entry.receipt
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WAL step marks the shard busy while it runs and leaves it unmarked with fresh
    /// progress after (the hang check's view of a working shard); a stopping shard stays
    /// marked as such through its last commits.
    #[test]
    fn wal_step_marks_the_shard_for_the_hang_check() {
        let dir = std::env::temp_dir().join(format!("tachyon-durable-busy-{}", std::process::id()));
        let d = DurabilityConfig {
            data_dir: dir.join("data"),
            sync: SyncPolicy::Sync {
                max_delay_us: 0,
                max_records: 16,
            },
            segment_bytes: 1 << 20,
            snapshot_after_bytes: 1 << 30,
        };
        let Prepared {
            mut engines,
            mut logs,
            lock: _lock,
        } = prepare(1, &EngineConfig::default(), Some(&d), Instant::now()).unwrap();
        let region = tachyon_stats::Region::create(&dir.join("stats"), 1).unwrap();
        let mut log = logs.remove(0).expect("durability on");
        log.watch(Some(region.slot(0).busy_marker()));
        assert_eq!(region.read(0).progress_mono_ms, 0);
        log.step(&mut engines[0], 1, true);
        let s = region.read(0);
        assert_eq!(s.busy, None, "unmarked after the step");
        assert!(s.progress_mono_ms > 0, "the step counts as progress");
        region
            .slot(0)
            .busy_marker()
            .begin(tachyon_stats::Busy::Shutdown);
        log.commit_now(&mut engines[0], 2);
        assert!(matches!(
            region.read(0).busy,
            Some((tachyon_stats::Busy::Shutdown, _))
        ));
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
