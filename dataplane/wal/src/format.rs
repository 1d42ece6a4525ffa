//! The on-disk format: segment headers and record frames, and the scanner that reads them
//! back. Pure functions over byte slices (no I/O), so recovery is fuzzable.

use crate::Lsn;

pub const MAGIC: &[u8; 8] = b"TACHYWAL";
/// The format version this build writes and reads. Another version stops start-up.
pub const VERSION: u16 = 1;
pub const HEADER_BYTES: usize = 64;
/// Bytes of a record frame before its payload.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Records start at multiples of this.
pub const ALIGN: usize = 8;
const HEADER_CRC_AT: usize = 44;

/// A segment file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub shard: u16,
    /// The lsn of the segment's first record.
    pub first_lsn: Lsn,
    pub segment_bytes: u64,
    pub created_unix_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&self.version.to_le_bytes());
        h[10..12].copy_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
        h[12..14].copy_from_slice(&self.shard.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        h[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        h[32..40].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let crc = crc32c::crc32c(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads a header.
    ///
    /// # Errors
    /// What is wrong with it, in words for the operator.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < HEADER_BYTES {
            return Err(format!("{} bytes: shorter than a segment header", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("not a Tachyon WAL segment (bad magic)".into());
        }
        let crc = u32::from_le_bytes(b[HEADER_CRC_AT..HEADER_CRC_AT + 4].try_into().expect("4"));
        if crc != crc32c::crc32c(&b[..HEADER_CRC_AT]) {
            return Err("segment header checksum mismatch".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().expect("2"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        Ok(SegmentHeader {
            version: u16_at(8),
            shard: u16_at(12),
            first_lsn: u64_at(16),
            segment_bytes: u64_at(24),
            created_unix_ms: u64_at(32),
        })
    }
}

/// Bytes a record with `payload_len` bytes of payload takes, padding included.
pub fn record_bytes(payload_len: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_len).div_ceil(ALIGN) * ALIGN
}

/// Writes a record frame into `out` (exactly `record_bytes(payload.len())` long).
pub fn encode_record(out: &mut [u8], lsn: Lsn, kind: u8, payload: &[u8]) {
    let total = record_bytes(payload.len());
    debug_assert_eq!(out.len(), total);
    out[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[16] = kind;
    out[17..24].fill(0);
    out[24..24 + payload.len()].copy_from_slice(payload);
    out[24 + payload.len()..total].fill(0);
    let crc = crc32c::crc32c(&out[8..24 + payload.len()]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One record found by [`scan`]: its payload is `bytes[payload]` of the scanned slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: std::ops::Range<usize>,
}

/// Where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Zeros (never written) or the end of the segment: everything before is whole.
    Clean { offset: usize },
    /// A record that is not whole and valid: the log is cut here (a write torn by a crash,
    /// or corruption), and everything from `offset` on is ignored.
    Torn { offset: usize, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub records: Vec<RecordRef>,
    pub end: End,
}

/// Reads the records of one segment's body (`bytes` starts after the header) whose lsns run
/// from `first_lsn` on, one more each. Never panics; allocates only for records found.
pub fn scan(bytes: &[u8], first_lsn: Lsn) -> ScanResult {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut expect = first_lsn;
    let end = loop {
        if bytes.len() - at < RECORD_HEADER_BYTES {
            break End::Clean { offset: at };
        }
        let h = &bytes[at..at + RECORD_HEADER_BYTES];
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
        if len == 0 && crc == 0 && h[8..].iter().all(|&b| b == 0) {
            break End::Clean { offset: at };
        }
        let total = match RECORD_HEADER_BYTES.checked_add(len) {
            Some(t) if t <= bytes.len() - at => (t.div_ceil(ALIGN) * ALIGN).min(bytes.len() - at),
            _ => {
                break End::Torn {
                    offset: at,
                    reason: format!("record length {len} runs past the end of the segment"),
                }
            }
        };
        let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8"));
        if crc != crc32c::crc32c(&bytes[at + 8..at + RECORD_HEADER_BYTES + len]) {
            break End::Torn {
                offset: at,
                reason: format!("checksum mismatch in the record that would be lsn {expect}"),
            };
        }
        if lsn != expect {
            // A whole record from an older use of this file (or a bug): not part of this log.
            break End::Torn {
                offset: at,
                reason: format!("lsn {lsn} where {expect} was expected"),
            };
        }
        records.push(RecordRef {
            lsn,
            kind: h[16],
            payload: at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + len,
        });
        expect += 1;
        at += total;
    };
    ScanResult { records, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(records: &[(u8, &[u8])], first: Lsn, size: usize) -> Vec<u8> {
        let mut body = vec![0u8; size];
        let mut at = 0;
        for (i, (kind, p)) in records.iter().enumerate() {
            let n = record_bytes(p.len());
            encode_record(&mut body[at..at + n], first + i as u64, *kind, p);
            at += n;
        }
        body
    }

    #[test]
    fn records_round_trip_and_end_cleanly_at_zeros() {
        let body = build(&[(1, b"hello"), (2, b""), (3, &[9u8; 100])], 7, 4096);
        let r = scan(&body, 7);
        assert_eq!(r.records.len(), 3);
        assert_eq!(&body[r.records[0].payload.clone()], b"hello");
        assert_eq!(r.records[1].payload.len(), 0);
        assert_eq!((r.records[2].lsn, r.records[2].kind), (9, 3));
        let used = record_bytes(5) + record_bytes(0) + record_bytes(100);
        assert_eq!(r.end, End::Clean { offset: used });
        assert_eq!(used % ALIGN, 0);
    }

    #[test]
    fn a_torn_record_cuts_the_log_where_it_starts() {
        let mut body = build(&[(1, b"first"), (1, b"second record")], 1, 1024);
        let second = record_bytes(5);
        body[second + RECORD_HEADER_BYTES + 3] ^= 0xFF; // a bit flip in the second payload
        let r = scan(&body, 1);
        assert_eq!(r.records.len(), 1);
        assert!(
            matches!(r.end, End::Torn { offset, .. } if offset == second),
            "{:?}",
            r.end
        );
    }

    #[test]
    fn a_length_past_the_end_is_torn_not_a_panic() {
        let mut body = build(&[(1, b"x")], 1, 256);
        body[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = scan(&body, 1);
        assert!(r.records.is_empty());
        assert!(matches!(r.end, End::Torn { offset: 0, .. }));
    }

    #[test]
    fn a_stale_record_from_an_older_log_is_not_replayed() {
        // Whole and valid, but its lsn does not follow: the file held an older log.
        let mut body = build(&[(1, b"new")], 10, 512);
        let n = record_bytes(3);
        encode_record(&mut body[n..2 * n], 3, 1, b"old");
        let r = scan(&body, 10);
        assert_eq!(r.records.len(), 1);
        assert!(matches!(r.end, End::Torn { ref reason, .. } if reason.contains("lsn 3")));
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let h = SegmentHeader {
            version: VERSION,
            shard: 3,
            first_lsn: 42,
            segment_bytes: 1 << 20,
            created_unix_ms: 5,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).unwrap_err().contains("checksum"));
        assert!(SegmentHeader::decode(b"TACHYWAL").is_err());
        assert!(SegmentHeader::decode(&[0u8; 64])
            .unwrap_err()
            .contains("magic"));
    }

    proptest::proptest! {
        #[test]
        fn scanning_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), first in 0u64..4) {
            let r = scan(&bytes, first);
            for rec in &r.records {
                proptest::prop_assert!(rec.payload.end <= bytes.len());
            }
        }

        #[test]
        fn every_prefix_of_a_log_scans_to_a_prefix_of_its_records(cut in 0usize..600) {
            let full = build(&[(1, b"alpha"), (2, &[7u8; 77]), (3, b"omega")], 1, 600);
            let mut torn = full.clone();
            torn[cut..].fill(0);
            let all = scan(&full, 1).records;
            let some = scan(&torn, 1).records;
            proptest::prop_assert!(some.len() <= all.len());
            proptest::prop_assert_eq!(&all[..some.len()], &some[..]);
        }
    }
}
