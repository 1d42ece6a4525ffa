//! Recovery reads whatever is on disk: arbitrary bytes as a segment (header + body) must
//! never panic nor allocate in proportion to a length read from them, every record found
//! must lie inside the input, and decoding and replaying the records (the engine's image)
//! must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon_engine::persist::{Image, Record};
use tachyon_wal::{scan, SegmentHeader, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let first_lsn = match SegmentHeader::decode(data) {
        Ok(h) => h.first_lsn,
        Err(_) => 1,
    };
    let body = if data.len() > HEADER_BYTES { &data[HEADER_BYTES..] } else { data };
    let r = scan(body, first_lsn);
    let mut image = Image::default();
    for (i, rec) in r.records.iter().enumerate() {
        assert!(rec.payload.end <= body.len());
        assert_eq!(rec.lsn, first_lsn + i as u64);
        if let Some(record) = Record::decode(rec.kind, &body[rec.payload.clone()]) {
            image.apply(&record);
        }
    }
    // Records decoded from the input also decode when they are the whole payload.
    let _ = Record::decode(data.first().copied().unwrap_or(0), data.get(1..).unwrap_or(&[]));
});
