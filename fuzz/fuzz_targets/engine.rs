//! Raw byte streams into two engines (shards) with four connections: whatever arrives, no
//! panic, and the engines keep their invariants (every close is reported once, output is
//! drained). Each input byte chunk is routed by a small header:
//! `[op, len, bytes...]` where op selects the connection, a tick, or a connection drop.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tachyon_engine::{ConnId, Engine, EngineConfig};

/// A valid v5 CONNECT prefix, so inputs reach the connected states quickly.
const CONNECT_V5: &[u8] = &[0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 10, 0, 0, 0];
const CONNECT_V311: &[u8] = &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 0];

fn pump(engines: &mut [Engine], now: u64, open: &mut [bool; 4]) {
    for _ in 0..64 {
        let mut moved = false;
        for i in 0..engines.len() {
            while let Some((to, m)) = engines[i].poll_mail() {
                moved = true;
                engines[to].handle_mail(now, m);
            }
            while let Some(c) = engines[i].poll_dirty() {
                moved = true;
                if let Some(q) = engines[i].out_queue(c) {
                    let n = q.len_bytes();
                    q.consume(n);
                }
            }
            while let Some(c) = engines[i].poll_close() {
                moved = true;
                if let Some(slot) = open.get_mut(c.0 as usize) {
                    *slot = false;
                }
                engines[i].handle_closed(now, c);
            }
        }
        if !moved {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = Arc::new(EngineConfig { max_packet_size: 4096, ..EngineConfig::default() });
    let mut engines: Vec<Engine> = (0..2).map(|i| Engine::new(i, 2, cfg.clone())).collect();
    let mut now = 1_000u64;
    let mut open = [true; 4];
    for c in 0..4u64 {
        let shard = (c % 2) as usize;
        engines[shard].handle_open(now, ConnId(c), "127.0.0.1:1".parse().unwrap(), 0);
        let mut rx = BytesMut::from(if c < 2 { CONNECT_V5 } else { CONNECT_V311 });
        engines[shard].handle_bytes(now, ConnId(c), &mut rx);
    }
    pump(&mut engines, now, &mut open);
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        match op % 8 {
            c @ 0..=3 => {
                let conn = ConnId(c as u64);
                if open[c as usize] {
                    let mut rx = BytesMut::from(chunk);
                    engines[(c % 2) as usize].handle_bytes(now, conn, &mut rx);
                }
            }
            4 => {
                now += 1 + len as u64 * 100;
                for e in &mut engines {
                    e.handle_tick(now);
                }
            }
            5 => {
                let c = (len % 4) as u64;
                if open[c as usize] {
                    open[c as usize] = false;
                    engines[(c % 2) as usize].handle_closed(now, ConnId(c));
                }
            }
            _ => {}
        }
        pump(&mut engines, now, &mut open);
    }
    for e in &mut engines {
        e.handle_shutdown(now);
    }
    pump(&mut engines, now, &mut open);
});
