//! Recovery reads whatever is on disk: arbitrary bytes as a segment (header + body) must
//! never panic nor allocate in proportion to a length read from them, and every record found
//! must lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon_wal::{scan, SegmentHeader, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let first_lsn = match SegmentHeader::decode(data) {
        Ok(h) => h.first_lsn,
        Err(_) => 1,
    };
    let body = if data.len() > HEADER_BYTES { &data[HEADER_BYTES..] } else { data };
    let r = scan(body, first_lsn);
    for (i, rec) in r.records.iter().enumerate() {
        assert!(rec.payload.end <= body.len());
        assert_eq!(rec.lsn, first_lsn + i as u64);
    }
});
