//! Recovery reads whatever is on disk: arbitrary bytes as a segment (header + body) must
//! never panic nor allocate in proportion to a length read from them, every record found
//! must lie inside the input, and decoding and replaying the records (the engine's image)
//! must not panic either.
//!
//! The same bytes are also read as a record stream without checksums (kind u8, length u16,
//! payload), so that replay, merge and the engines' restore see many more shapes than valid
//! CRCs would let through; the engines must then write snapshots they can read back.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tachyon_engine::persist::restore::restore_all;
use tachyon_engine::persist::{merge, Image, Record, Replay};
use tachyon_engine::{Engine, EngineConfig};
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

    let mut replay = Replay::default();
    let mut at = 0;
    while at + 3 <= data.len() {
        let kind = data[at];
        let n = u16::from_le_bytes([data[at + 1], data[at + 2]]) as usize;
        at += 3;
        let end = (at + n).min(data.len());
        if let Some(record) = Record::decode(kind, &data[at..end]) {
            replay.apply(&record);
        }
        at = end;
    }
    let merged = merge(vec![image, replay.finish()]);
    let cfg = Arc::new(EngineConfig {
        log_state: true,
        acks_wait_for_log: true,
        unix_epoch_ms: 1_700_000_000_000,
        ..EngineConfig::default()
    });
    let mut engines: Vec<Engine> = (0..2).map(|i| Engine::new(i, 2, cfg.clone())).collect();
    restore_all(&mut engines, &merged, 0);
    for e in &mut engines {
        e.snapshot();
        let (_, res) = e.drain_log(|k, p| {
            assert!(Record::decode(k, p).is_some(), "a snapshot record that does not decode: kind {k}");
            Ok::<(), ()>(())
        });
        assert!(res.is_ok());
    }
});
