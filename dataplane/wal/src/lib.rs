//! # tachyon-wal — layer 3: the write-ahead log of one shard
//!
//! Records are appended into preallocated segment files mapped with `memmap2` and made
//! durable in batches (`msync`), so that an acknowledgement that promises persistence can
//! wait for the batch that holds its record. The format (docs/wal-format.md):
//!
//! ```text
//!   segment  = header (64 bytes) | record* | zeros to the preallocated size
//!   header   = "TACHYWAL" | version u16 | header_len u16 | shard u16 | 0 u16 | first_lsn u64
//!              | segment_bytes u64 | created_unix_ms u64 | crc32c(bytes 0..44) u32 | zeros
//!   record   = payload_len u32 | crc32c(bytes 8..24+payload_len) u32 | lsn u64 | kind u8
//!              | 7 zero bytes | payload | zeros to a multiple of 8
//! ```
//!
//! This crate knows records as (lsn, kind, bytes); what a kind means is the engine's. The
//! pure scanner ([`scan`]) is what recovery and the fuzz target run: it never panics, never
//! allocates in proportion to a length read from disk, and stops at the first record that is
//! not whole and valid, saying where and why.

mod format;
mod log;

pub use format::{
    scan, End, RecordRef, ScanResult, SegmentHeader, HEADER_BYTES, RECORD_HEADER_BYTES, VERSION,
};
pub use log::{Recovered, SyncPolicy, Wal, WalConfig, WalError};

/// Log sequence number: 1 for the first record a shard ever wrote, +1 per record.
pub type Lsn = u64;
