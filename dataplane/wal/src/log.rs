//! One shard's log on disk: a directory of segment files named by their first lsn, the last
//! one active. Appends copy a framed record into the active segment's mapping; `commit`
//! makes everything appended so far durable (`msync`) under [`SyncPolicy::Sync`].
//!
//! Segments are preallocated with `posix_fallocate`, so that a full disk shows up as an error
//! when a segment is created, never as a fault when the mapping is written.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::format::{encode_record, record_bytes, scan, End, SegmentHeader, HEADER_BYTES, VERSION};
use crate::Lsn;

/// When acknowledgements that promise persistence may be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Group commit: the records of a batch reach the disk (`msync`) before the
    /// acknowledgements of that batch are released. The driver closes a batch after
    /// `max_delay_us` or `max_records`, whichever comes first.
    Sync { max_delay_us: u32, max_records: u32 },
    /// Acknowledge at once; the kernel writes the pages back when it chooses. A crash of the
    /// machine (not only of the broker) can lose acknowledged messages.
    None,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    /// The shard's own directory (e.g. `data/wal/shard-0`).
    pub dir: PathBuf,
    pub shard: u16,
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    pub sync: SyncPolicy,
}

/// An error of the log, with what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalError {
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A segment written by another format version: start-up stops.
    Version {
        path: PathBuf,
        found: u16,
    },
    /// A segment whose header is damaged.
    Header {
        path: PathBuf,
        reason: String,
    },
    RecordTooLarge {
        bytes: usize,
        max: usize,
    },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { what, path, source } => {
                let hint = match source.raw_os_error() {
                    Some(28) => " — the disk is full: free space or move the data directory",
                    Some(13) | Some(1) => " — permission denied: check the owner of the data directory",
                    _ => "",
                };
                write!(f, "WAL {}: {what} failed: {source}{hint}", path.display())
            }
            WalError::Version { path, found } => write!(
                f,
                "WAL {}: format version {found}, this build reads version {VERSION} — run the Tachyon version that wrote it (or move the data directory aside to start empty)",
                path.display()
            ),
            WalError::Header { path, reason } => write!(
                f,
                "WAL {}: {reason} — the file is not a usable segment; move it aside and restart (its records are lost)",
                path.display()
            ),
            WalError::RecordTooLarge { bytes, max } => write!(
                f,
                "WAL record of {bytes} bytes does not fit a segment ({max} bytes of records): raise the segment size"
            ),
        }
    }
}

impl std::error::Error for WalError {}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What start-up found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every whole record, in lsn order: (lsn, kind, payload).
    pub records: Vec<(Lsn, u8, Vec<u8>)>,
    /// Where the log was cut (a torn or corrupt record), if it was.
    pub truncated: Option<(PathBuf, usize, String)>,
    /// Segments after a cut, moved aside (renamed `*.wal.discarded`).
    pub discarded: Vec<PathBuf>,
    pub segments: usize,
    pub elapsed: Duration,
}

struct Active {
    map: MmapMut,
    path: PathBuf,
    /// Next free byte of the mapping.
    write_at: usize,
    /// Bytes up to here are durable.
    synced_at: usize,
}

/// The write-ahead log of one shard.
pub struct Wal {
    cfg: WalConfig,
    /// (first lsn, path) of every segment, oldest first; the last is active.
    segments: Vec<(Lsn, PathBuf)>,
    active: Active,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    /// Records appended since the last commit.
    pending: u32,
}

fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn map_file(path: &Path) -> Result<MmapMut, WalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    // SAFETY: the file is this shard's own segment; nothing else maps or truncates it while
    // the broker runs (one process per data directory).
    unsafe { MmapMut::map_mut(&file) }.map_err(io("mmap", path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync of the directory", dir))
}

impl Wal {
    /// Opens (or creates) the log in `cfg.dir`, reads every segment and returns the records
    /// to replay. A torn or corrupt tail is cut (zeroed) where it starts and reported;
    /// segments after it are moved aside.
    ///
    /// # Errors
    /// [`WalError`] for I/O errors, a damaged header, or a segment of another format version.
    /// Reads a shard's log without changing anything (inspection): the whole records in
    /// order, and where the log would be cut.
    ///
    /// # Errors
    /// A directory or segment that cannot be read, or a segment header that is not usable.
    pub fn read_only(dir: &Path) -> Result<Recovered, WalError> {
        let t0 = Instant::now();
        let mut found: Vec<(Lsn, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
            let entry = entry.map_err(io("list", dir))?;
            let name = entry.file_name();
            if let Some(lsn) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|s| s.parse::<Lsn>().ok())
            {
                found.push((lsn, entry.path()));
            }
        }
        found.sort();
        let mut rec = Recovered {
            segments: found.len(),
            ..Recovered::default()
        };
        let mut next_lsn: Option<Lsn> = None;
        for (_, path) in found {
            let bytes = std::fs::read(&path).map_err(io("read", &path))?;
            let header = SegmentHeader::decode(&bytes).map_err(|reason| WalError::Header {
                path: path.clone(),
                reason,
            })?;
            if next_lsn.is_some_and(|n| n != header.first_lsn) {
                rec.discarded.push(path);
                break;
            }
            let result = scan(&bytes[HEADER_BYTES..], header.first_lsn);
            for r in &result.records {
                let range = HEADER_BYTES + r.payload.start..HEADER_BYTES + r.payload.end;
                rec.records.push((r.lsn, r.kind, bytes[range].to_vec()));
            }
            next_lsn = Some(header.first_lsn + result.records.len() as u64);
            if let End::Torn { offset, reason } = result.end {
                rec.truncated = Some((path, HEADER_BYTES + offset, reason));
                break;
            }
        }
        rec.elapsed = t0.elapsed();
        Ok(rec)
    }

    pub fn open(cfg: WalConfig) -> Result<(Wal, Recovered), WalError> {
        let t0 = Instant::now();
        std::fs::create_dir_all(&cfg.dir).map_err(io("create the directory", &cfg.dir))?;
        let mut found: Vec<(Lsn, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&cfg.dir).map_err(io("list", &cfg.dir))? {
            let entry = entry.map_err(io("list", &cfg.dir))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.ends_with(".wal.new")) {
                // A segment whose creation a crash interrupted: it holds no record.
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                continue;
            }
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
                continue;
            };
            if let Ok(lsn) = stem.parse::<Lsn>() {
                found.push((lsn, path));
            }
        }
        found.sort();
        let mut rec = Recovered {
            segments: found.len(),
            ..Recovered::default()
        };
        let mut segments = Vec::new();
        let mut next_lsn: Lsn = 1;
        let mut last: Option<(MmapMut, PathBuf, usize)> = None;
        let mut cut = false;
        for (first, path) in found {
            if cut || (!segments.is_empty() && first != next_lsn) {
                // After a cut (or a gap), nothing can be trusted to follow on.
                let aside = path.with_extension("wal.discarded");
                std::fs::rename(&path, &aside).map_err(io("rename", &path))?;
                rec.discarded.push(aside);
                cut = true;
                continue;
            }
            let mut map = map_file(&path)?;
            let header = SegmentHeader::decode(&map).map_err(|reason| WalError::Header {
                path: path.clone(),
                reason,
            })?;
            if header.version != VERSION {
                return Err(WalError::Version {
                    path,
                    found: header.version,
                });
            }
            let result = scan(&map[HEADER_BYTES..], header.first_lsn);
            for r in &result.records {
                let range = HEADER_BYTES + r.payload.start..HEADER_BYTES + r.payload.end;
                rec.records.push((r.lsn, r.kind, map[range].to_vec()));
            }
            next_lsn = header.first_lsn + result.records.len() as u64;
            let end = match result.end {
                End::Clean { offset } => HEADER_BYTES + offset,
                End::Torn { offset, reason } => {
                    let at = HEADER_BYTES + offset;
                    // Zero the tail so that the next append starts on clean ground.
                    map[at..].fill(0);
                    map.flush().map_err(io("msync", &path))?;
                    rec.truncated = Some((path.clone(), at, reason));
                    cut = true;
                    at
                }
            };
            segments.push((header.first_lsn, path.clone()));
            last = Some((map, path, end));
        }
        let active = match last {
            Some((map, path, end)) => Active {
                map,
                path,
                write_at: end,
                synced_at: end,
            },
            None => {
                let (active, first) = Self::create_segment(&cfg, next_lsn)?;
                segments.push((first, active.path.clone()));
                active
            }
        };
        let wal = Wal {
            cfg,
            segments,
            active,
            next_lsn,
            durable_lsn: next_lsn - 1,
            pending: 0,
        };
        rec.elapsed = t0.elapsed();
        Ok((wal, rec))
    }

    fn create_segment(cfg: &WalConfig, first_lsn: Lsn) -> Result<(Active, Lsn), WalError> {
        // Built under a temporary name and renamed once its header is on disk: a crash in
        // between leaves a `.wal.new` file that the next start deletes, never a segment
        // without a header (which would stop the start-up).
        let path = segment_path(&cfg.dir, first_lsn);
        let tmp = path.with_extension("wal.new");
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("create a segment", &tmp))?;
        // Real blocks now: a full disk fails here, not as SIGBUS on a write to the mapping.
        // SAFETY: a valid descriptor; posix_fallocate returns an error number, not -1.
        let rc = unsafe {
            nix::libc::posix_fallocate(file.as_raw_fd(), 0, cfg.segment_bytes as nix::libc::off_t)
        };
        if rc != 0 {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("preallocate", &path)(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
        // SAFETY: as in `map_file`.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io("mmap", &tmp))?;
        let header = SegmentHeader {
            version: VERSION,
            shard: cfg.shard,
            first_lsn,
            segment_bytes: cfg.segment_bytes,
            created_unix_ms: unix_ms(),
        };
        map[..HEADER_BYTES].copy_from_slice(&header.encode());
        map.flush_range(0, HEADER_BYTES)
            .map_err(io("msync", &tmp))?;
        // The mapping follows the file through the rename.
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        sync_dir(&cfg.dir)?;
        Ok((
            Active {
                map,
                path,
                write_at: HEADER_BYTES,
                synced_at: HEADER_BYTES,
            },
            first_lsn,
        ))
    }

    /// Appends a record; returns its lsn. It is durable after the next [`Wal::commit`].
    ///
    /// # Errors
    /// [`WalError::RecordTooLarge`], or an I/O error creating the next segment (disk full).
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, WalError> {
        let n = record_bytes(payload.len());
        let room = self.cfg.segment_bytes as usize - HEADER_BYTES;
        if n > room {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len(),
                max: room,
            });
        }
        if self.active.write_at + n > self.active.map.len() {
            self.roll()?;
        }
        let at = self.active.write_at;
        let lsn = self.next_lsn;
        encode_record(&mut self.active.map[at..at + n], lsn, kind, payload);
        self.active.write_at += n;
        self.next_lsn += 1;
        self.pending += 1;
        Ok(lsn)
    }

    /// The active segment is full: make it durable and start the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        self.sync_active()?;
        let (active, first) = Self::create_segment(&self.cfg, self.next_lsn)?;
        self.segments.push((first, active.path.clone()));
        self.active = active;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        let a = &mut self.active;
        if a.synced_at < a.write_at {
            // msync works on whole pages; memmap2 aligns the range down to one.
            a.map
                .flush_range(a.synced_at, a.write_at - a.synced_at)
                .map_err(io("msync", &a.path))?;
            a.synced_at = a.write_at;
        }
        Ok(())
    }

    /// Closes the batch: under `Sync`, everything appended is on disk when this returns.
    /// Returns the durable lsn.
    ///
    /// # Errors
    /// An I/O error from `msync` (the records of the batch are then not durable).
    pub fn commit(&mut self) -> Result<Lsn, WalError> {
        if let SyncPolicy::Sync { .. } = self.cfg.sync {
            self.sync_active()?;
        }
        self.durable_lsn = self.next_lsn - 1;
        self.pending = 0;
        Ok(self.durable_lsn)
    }

    /// Records appended since the last commit (the driver closes a batch at
    /// `SyncPolicy::Sync::max_records`).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub fn policy(&self) -> SyncPolicy {
        self.cfg.sync
    }

    /// Deletes the segments that hold only records before `lsn` (a snapshot covers them).
    /// The active segment stays. Returns how many were deleted.
    ///
    /// # Errors
    /// An I/O error deleting a file.
    pub fn remove_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= lsn {
            let (_, path) = self.segments.remove(0);
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.cfg.dir)?;
        }
        Ok(removed)
    }

    /// Segment files in use.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, segment_bytes: u64) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            shard: 0,
            segment_bytes,
            sync: SyncPolicy::Sync {
                max_delay_us: 100,
                max_records: 64,
            },
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tachyon-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn appended_records_come_back_after_reopening() {
        let d = tempdir("reopen");
        {
            let (mut wal, rec) = Wal::open(cfg(&d, 1 << 16)).unwrap();
            assert!(rec.records.is_empty() && rec.truncated.is_none());
            assert_eq!(wal.append(1, b"one").unwrap(), 1);
            assert_eq!(wal.append(2, b"two").unwrap(), 2);
            assert_eq!(wal.commit().unwrap(), 2);
        }
        let (mut wal, rec) = Wal::open(cfg(&d, 1 << 16)).unwrap();
        let got: Vec<_> = rec
            .records
            .iter()
            .map(|(l, k, p)| (*l, *k, p.clone()))
            .collect();
        assert_eq!(got, vec![(1, 1, b"one".to_vec()), (2, 2, b"two".to_vec())]);
        assert_eq!(wal.append(1, b"three").unwrap(), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A crash while a segment was being created (found by the SIGKILL test: a file of
    /// zeros under the segment's name stopped the start-up) leaves only a `.wal.new` file,
    /// which the next open deletes.
    #[test]
    fn a_segment_whose_creation_was_interrupted_is_ignored() {
        let d = tempdir("interrupted");
        {
            let (mut wal, _) = Wal::open(cfg(&d, 4096)).unwrap();
            wal.append(1, b"kept").unwrap();
            wal.commit().unwrap();
        }
        let leftover = d.join(format!("{:020}.wal.new", 2));
        std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
        let (mut wal, rec) = Wal::open(cfg(&d, 4096)).unwrap();
        assert_eq!(rec.records.len(), 1);
        assert!(rec.truncated.is_none());
        assert!(!leftover.exists());
        // Rolling into the next segment works (its creation is not blocked by the leftover).
        for i in 0..300u32 {
            wal.append(7, &i.to_le_bytes().repeat(8)).unwrap();
        }
        wal.commit().unwrap();
        assert!(wal.segment_count() > 1);
        assert!(std::fs::read_dir(&d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".new")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn segments_roll_and_old_ones_can_be_removed() {
        let d = tempdir("roll");
        let (mut wal, _) = Wal::open(cfg(&d, 4096)).unwrap();
        for i in 0..200u32 {
            wal.append(7, &i.to_le_bytes().repeat(8)).unwrap();
        }
        wal.commit().unwrap();
        let segments = wal.segment_count();
        assert!(segments >= 3, "{segments}");
        drop(wal);
        let (mut wal, rec) = Wal::open(cfg(&d, 4096)).unwrap();
        assert_eq!(rec.records.len(), 200);
        assert!(rec
            .records
            .iter()
            .enumerate()
            .all(|(i, r)| r.0 == i as u64 + 1));
        let removed = wal.remove_before(150).unwrap();
        assert!(removed > 0 && wal.segment_count() == segments - removed);
        drop(wal);
        let (_, rec) = Wal::open(cfg(&d, 4096)).unwrap();
        assert!(rec.records.first().unwrap().0 <= 150 && rec.records.last().unwrap().0 == 200);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_garbled_tail_is_cut_reported_and_written_over() {
        let d = tempdir("torn");
        {
            let (mut wal, _) = Wal::open(cfg(&d, 1 << 16)).unwrap();
            for i in 0..10u8 {
                wal.append(1, &[i; 40]).unwrap();
            }
            wal.commit().unwrap();
        }
        // Garble the 8th record's payload on disk.
        let path = segment_path(&d, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = HEADER_BYTES + 7 * record_bytes(40) + 30;
        bytes[at] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, rec) = Wal::open(cfg(&d, 1 << 16)).unwrap();
        assert_eq!(rec.records.len(), 7);
        let (p, offset, reason) = rec.truncated.clone().unwrap();
        assert_eq!(p, path);
        assert_eq!(offset, HEADER_BYTES + 7 * record_bytes(40));
        assert!(reason.contains("checksum"), "{reason}");
        // The log goes on from the cut.
        assert_eq!(wal.append(1, b"after").unwrap(), 8);
        wal.commit().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(cfg(&d, 1 << 16)).unwrap();
        assert_eq!(rec.records.len(), 8);
        assert!(rec.truncated.is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn another_format_version_stops_start_up_with_advice() {
        let d = tempdir("version");
        drop(Wal::open(cfg(&d, 4096)).unwrap());
        let path = segment_path(&d, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut h = SegmentHeader::decode(&bytes).unwrap();
        h.version = 9;
        bytes[..HEADER_BYTES].copy_from_slice(&h.encode());
        std::fs::write(&path, &bytes).unwrap();
        let e = Wal::open(cfg(&d, 4096)).err().unwrap().to_string();
        assert!(
            e.contains("format version 9, this build reads version 1"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_record_larger_than_a_segment_is_refused() {
        let d = tempdir("large");
        let (mut wal, _) = Wal::open(cfg(&d, 4096)).unwrap();
        let e = wal.append(1, &[0; 5000]).unwrap_err();
        assert!(matches!(e, WalError::RecordTooLarge { .. }));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
