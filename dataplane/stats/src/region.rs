//! The memory-mapped file and its layout.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::histogram::{Histogram, BUCKETS, WORDS};
use crate::{Counter, Hist, COUNTERS, HISTOGRAMS};

const MAGIC: u64 = u64::from_le_bytes(*b"TCHSTATS");
/// Bumped whenever the layout changes: a reader refuses a region of another version.
pub const VERSION: u64 = 2;
const HEADER_WORDS: usize = 64;
/// More shards than any broker runs: a header claiming more is not one of ours.
const SHARDS_MAX: usize = 1024;
/// Words before the counters in a block: the heartbeat (Unix ms of the last publication), the
/// same instant on the monotonic clock (what liveness is judged by), and the busy marker.
const BLOCK_PREFIX: usize = 3;
const WORD_HEARTBEAT_UNIX: usize = 0;
const WORD_PROGRESS_MONO: usize = 1;
const WORD_BUSY: usize = 2;
/// The busy marker: the operation in its top 16 bits, its start (monotonic ms) below.
const BUSY_SINCE_MASK: u64 = (1 << 48) - 1;

/// Milliseconds of the host's monotonic clock (`CLOCK_MONOTONIC`): the same in every process
/// of the host, unmoved by changes of the wall clock.
pub fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// A long operation a shard is in, during which its loop does not publish: the control plane
/// tells such a shard (slow, but working) from a hung one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Writing its state into the WAL (a snapshot).
    Snapshot = 1,
    /// Writing the WAL or waiting for it to reach the disk (appending into the mapped
    /// segments, rolling to a new segment, msync, deleting old segments).
    Wal = 2,
    /// Stopping: draining its connections' output, closing its log (`net.shutdown_drain_ms`).
    Shutdown = 3,
}

impl Busy {
    fn from_word(w: u64) -> Option<Busy> {
        match w >> 48 {
            1 => Some(Busy::Snapshot),
            2 => Some(Busy::Wal),
            3 => Some(Busy::Shutdown),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Busy::Snapshot => "snapshot",
            Busy::Wal => "wal",
            Busy::Shutdown => "shutdown",
        }
    }
}

fn block_words() -> usize {
    (BLOCK_PREFIX + COUNTERS.len() + HISTOGRAMS.len() * WORDS).next_multiple_of(8)
}

/// The region could not be created or is not one this build can read.
#[derive(Debug)]
pub enum RegionError {
    Io(PathBuf, std::io::Error),
    Layout(PathBuf, String),
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionError::Io(p, e) => write!(f, "stats region {}: {e}", p.display()),
            RegionError::Layout(p, e) => write!(
                f,
                "stats region {}: {e} — the control plane and the dataplane must be the same build",
                p.display()
            ),
        }
    }
}

impl std::error::Error for RegionError {}

/// A mapped stats region: the dataplane creates it and hands a [`ShardSlot`] to each shard;
/// the control plane opens it read-only.
pub struct Region {
    /// A raw mapping: the words are only ever touched through atomics (never through a
    /// `&[u8]`), in this process and in the other one.
    map: MmapRaw,
    writable: bool,
    shard_count: usize,
}

impl Region {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned and its length a multiple of 8 (checked at
        // creation and open) and lives as long as `self`; AtomicU64 has the size and
        // alignment of u64, and every access to the words is atomic. A read-only mapping is
        // only loaded from (`slot` refuses it).
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().cast::<AtomicU64>(),
                self.map.len() / 8,
            )
        }
    }

    /// Creates the region for `shard_count` shards at `path`: written under a temporary name
    /// and renamed, so a reader that still maps the previous dataplane's region keeps a
    /// valid mapping (of the old file).
    ///
    /// # Errors
    /// [`RegionError::Io`] when the file cannot be written or mapped.
    pub fn create(path: &Path, shard_count: usize) -> Result<Arc<Region>, RegionError> {
        let io = |e| RegionError::Io(path.to_path_buf(), e);
        let tmp = path.with_extension("new");
        let words = HEADER_WORDS + shard_count * block_words();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.set_len((words * 8) as u64).map_err(io)?;
        let map = MmapRaw::map_raw(&file).map_err(io)?;
        let region = Region {
            map,
            writable: true,
            shard_count,
        };
        let w = region.words();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for (i, v) in [
            VERSION,
            shard_count as u64,
            COUNTERS.len() as u64,
            HISTOGRAMS.len() as u64,
            block_words() as u64,
            std::process::id() as u64,
            started,
        ]
        .into_iter()
        .enumerate()
        {
            w[1 + i].store(v, Ordering::Relaxed);
        }
        // The magic last: a reader that finds it finds the rest.
        w[0].store(MAGIC, Ordering::Release);
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(Arc::new(region))
    }

    /// Maps an existing region read-only.
    ///
    /// # Errors
    /// [`RegionError::Io`] when it cannot be opened, [`RegionError::Layout`] when it was
    /// written by a build with another layout.
    pub fn open(path: &Path) -> Result<Region, RegionError> {
        let io = |e| RegionError::Io(path.to_path_buf(), e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        if len < HEADER_WORDS * 8 || !len.is_multiple_of(8) {
            return Err(RegionError::Layout(
                path.into(),
                format!("{len} bytes is not a region"),
            ));
        }
        let map = MmapOptions::new().map_raw_read_only(&file).map_err(io)?;
        let mut region = Region {
            map,
            writable: false,
            shard_count: 0,
        };
        let w = region.words();
        let h = |i: usize| w[i].load(Ordering::Acquire);
        if h(0) != MAGIC || h(1) != VERSION {
            return Err(RegionError::Layout(
                path.into(),
                format!(
                    "magic {:#x} version {} (expected version {VERSION})",
                    h(0),
                    h(1)
                ),
            ));
        }
        let shards = h(2) as usize;
        let needed = shards
            .checked_mul(block_words())
            .and_then(|w| w.checked_add(HEADER_WORDS))
            .and_then(|w| w.checked_mul(8));
        if h(3) as usize != COUNTERS.len()
            || h(4) as usize != HISTOGRAMS.len()
            || h(5) as usize != block_words()
            || shards > SHARDS_MAX
            || needed.is_none_or(|n| len < n)
        {
            return Err(RegionError::Layout(path.into(), "layout differs".into()));
        }
        region.shard_count = shards;
        Ok(region)
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Pid of the dataplane that created the region.
    pub fn pid(&self) -> u32 {
        self.words()[6].load(Ordering::Relaxed) as u32
    }

    /// Unix time in milliseconds when the dataplane created the region.
    pub fn started_unix_ms(&self) -> u64 {
        self.words()[7].load(Ordering::Relaxed)
    }

    fn block(&self, shard: usize) -> &[AtomicU64] {
        let start = HEADER_WORDS + shard * block_words();
        &self.words()[start..start + block_words()]
    }

    /// The writer of shard `shard`'s block.
    ///
    /// # Panics
    /// If `shard` is not below the shard count, or the region was opened read-only.
    pub fn slot(self: &Arc<Region>, shard: usize) -> ShardSlot {
        assert!(shard < self.shard_count, "shard within the region");
        assert!(self.writable, "a writable region");
        ShardSlot {
            region: self.clone(),
            shard,
        }
    }

    /// What shard `shard` last published.
    pub fn read(&self, shard: usize) -> ShardSnapshot {
        let b = self.block(shard);
        let counters = (0..COUNTERS.len())
            .map(|i| b[BLOCK_PREFIX + i].load(Ordering::Relaxed))
            .collect();
        let hists = (0..HISTOGRAMS.len())
            .map(|h| {
                let base = BLOCK_PREFIX + COUNTERS.len() + h * WORDS;
                let mut out = Histogram::default();
                for (i, slot) in out.buckets.iter_mut().enumerate() {
                    *slot = b[base + i].load(Ordering::Relaxed);
                }
                out.sum_us = b[base + BUCKETS].load(Ordering::Relaxed);
                out.count = b[base + BUCKETS + 1].load(Ordering::Relaxed);
                out
            })
            .collect();
        let busy = b[WORD_BUSY].load(Ordering::Acquire);
        ShardSnapshot {
            heartbeat_unix_ms: b[WORD_HEARTBEAT_UNIX].load(Ordering::Relaxed),
            progress_mono_ms: b[WORD_PROGRESS_MONO].load(Ordering::Acquire),
            busy: Busy::from_word(busy).map(|what| (what, busy & BUSY_SINCE_MASK)),
            counters,
            hists,
        }
    }
}

/// One shard's block, written only by that shard.
pub struct ShardSlot {
    region: Arc<Region>,
    shard: usize,
}

impl ShardSlot {
    fn block(&self) -> &[AtomicU64] {
        self.region.block(self.shard)
    }

    pub fn set(&self, c: Counter, v: u64) {
        self.block()[BLOCK_PREFIX + c as usize].store(v, Ordering::Relaxed);
    }

    pub fn set_histogram(&self, h: Hist, v: &Histogram) {
        let b = self.block();
        let base = BLOCK_PREFIX + COUNTERS.len() + h as usize * WORDS;
        for (i, &n) in v.buckets.iter().enumerate() {
            b[base + i].store(n, Ordering::Relaxed);
        }
        b[base + BUCKETS].store(v.sum_us, Ordering::Relaxed);
        b[base + BUCKETS + 1].store(v.count, Ordering::Relaxed);
    }

    /// Marks the block as published at `unix_ms` and `mono_ms` ([`monotonic_ms`]), after its
    /// words: the shard's loop made progress.
    pub fn heartbeat(&self, unix_ms: u64, mono_ms: u64) {
        let b = self.block();
        b[WORD_HEARTBEAT_UNIX].store(unix_ms, Ordering::Release);
        b[WORD_PROGRESS_MONO].store(mono_ms, Ordering::Release);
    }

    /// The handle with which the shard's long operations mark themselves.
    pub fn busy_marker(&self) -> BusyMarker {
        BusyMarker {
            region: self.region.clone(),
            shard: self.shard,
        }
    }
}

/// Marks a shard as inside a long operation (two relaxed stores and a clock read; used
/// around WAL commits and snapshots, never per message).
#[derive(Clone)]
pub struct BusyMarker {
    region: Arc<Region>,
    shard: usize,
}

impl BusyMarker {
    /// The shard enters `what`. `Shutdown` stays until the process ends: the operations of
    /// a stopping shard do not replace it. (Only the shard writes its word: no race.)
    pub fn begin(&self, what: Busy) {
        let word = &self.region.block(self.shard)[WORD_BUSY];
        if Busy::from_word(word.load(Ordering::Relaxed)) == Some(Busy::Shutdown) {
            return;
        }
        word.store(
            ((what as u64) << 48) | (monotonic_ms() & BUSY_SINCE_MASK),
            Ordering::Release,
        );
    }

    /// The operation ended; it counts as progress.
    pub fn end(&self) {
        let b = self.region.block(self.shard);
        if Busy::from_word(b[WORD_BUSY].load(Ordering::Relaxed)) != Some(Busy::Shutdown) {
            b[WORD_BUSY].store(0, Ordering::Release);
        }
        b[WORD_PROGRESS_MONO].store(monotonic_ms(), Ordering::Release);
    }
}

/// A copy of one shard's block.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub heartbeat_unix_ms: u64,
    /// When the shard last made progress ([`monotonic_ms`]); 0 before its first pass.
    pub progress_mono_ms: u64,
    /// The long operation the shard is in, and since when ([`monotonic_ms`]).
    pub busy: Option<(Busy, u64)>,
    /// Indexed by [`Counter`].
    pub counters: Vec<u64>,
    /// Indexed by [`Hist`].
    pub hists: Vec<Histogram>,
}

impl ShardSnapshot {
    pub fn get(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_what_each_shard_wrote() {
        let dir = std::env::temp_dir().join(format!("tachyon-stats-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats");
        let region = Region::create(&path, 2).unwrap();
        let (a, b) = (region.slot(0), region.slot(1));
        a.set(Counter::MsgsInQos1, 7);
        b.set(Counter::MsgsInQos1, 5);
        let mut h = Histogram::default();
        h.record(42);
        b.set_histogram(Hist::WalCommit, &h);
        b.heartbeat(99, 1234);
        let marker = a.busy_marker();
        marker.begin(Busy::Snapshot);
        let r = Region::open(&path).unwrap();
        assert_eq!(r.shard_count(), 2);
        assert_eq!(r.pid(), std::process::id());
        assert_eq!(r.read(0).get(Counter::MsgsInQos1), 7);
        let s1 = r.read(1);
        assert_eq!(s1.get(Counter::MsgsInQos1), 5);
        assert_eq!(s1.hists[Hist::WalCommit as usize], h);
        assert_eq!(s1.heartbeat_unix_ms, 99);
        assert_eq!(s1.progress_mono_ms, 1234);
        assert_eq!(s1.busy, None);
        let s0 = r.read(0);
        assert!(
            matches!(s0.busy, Some((Busy::Snapshot, since)) if since > 0 && since <= monotonic_ms())
        );
        marker.end();
        let s0 = r.read(0);
        assert_eq!(s0.busy, None);
        assert!(s0.progress_mono_ms > 0);
        // A stopping shard stays marked whatever it does next.
        marker.begin(Busy::Shutdown);
        marker.begin(Busy::Wal);
        marker.end();
        assert!(matches!(r.read(0).busy, Some((Busy::Shutdown, _))));
        // A new region replaces the file; the old mapping stays readable.
        let _fresh = Region::create(&path, 1).unwrap();
        assert_eq!(r.read(0).get(Counter::MsgsInQos1), 7);
        assert_eq!(Region::open(&path).unwrap().shard_count(), 1);
        std::fs::write(dir.join("junk"), [0u8; 4096]).unwrap();
        assert!(matches!(
            Region::open(&dir.join("junk")),
            Err(RegionError::Layout(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_counter_has_a_distinct_name_and_label() {
        let mut seen = std::collections::HashSet::new();
        for c in COUNTERS {
            assert!(seen.insert((c.name, c.label)), "{} repeated", c.name);
            assert!(c
                .name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
        }
    }
}
