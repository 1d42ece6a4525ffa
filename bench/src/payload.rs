//! The stamp every benchmark payload starts with, and the per-publisher sequence tracker that
//! turns received stamps into exact counts of loss, duplicates and reordering.
//!
//! ```text
//!   payload = publisher id (u32 BE) | sequence (u64 BE) | send time (u64 BE, ns) | padding
//! ```
//!
//! The send time is nanoseconds since the run's shared start `Instant`, so publisher and
//! subscriber threads of one process compare it without clock skew.

/// Bytes of the stamp at the front of every payload.
pub const STAMP_LEN: usize = 20;

/// Sequence numbers above this are treated as corrupt rather than growing the bitmap without
/// bound (2^36 messages is far beyond any run this tool can drive).
const SEQ_LIMIT: u64 = 1 << 36;

/// What a payload says about where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher_id: u32,
    pub seq: u64,
    pub send_ns: u64,
}

/// Writes `stamp` into the first [`STAMP_LEN`] bytes of `payload`; the rest is left as is.
///
/// # Panics
/// If `payload` is shorter than [`STAMP_LEN`]; the CLI refuses such payload sizes.
pub fn write_stamp(payload: &mut [u8], stamp: Stamp) {
    assert!(payload.len() >= STAMP_LEN, "payload holds the stamp");
    payload[0..4].copy_from_slice(&stamp.publisher_id.to_be_bytes());
    payload[4..12].copy_from_slice(&stamp.seq.to_be_bytes());
    payload[12..20].copy_from_slice(&stamp.send_ns.to_be_bytes());
}

/// Reads the stamp back, or `None` if the payload is too short to hold one.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < STAMP_LEN {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    Some(Stamp {
        publisher_id: u32_at(0),
        seq: u64_at(4),
        send_ns: u64_at(12),
    })
}

/// How one received sequence number relates to those seen before from the same publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, and higher than every sequence seen before.
    InOrder,
    /// First time seen, but lower than one seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Beyond [`SEQ_LIMIT`]: not a sequence this tool wrote.
    Corrupt,
}

/// Exact per-publisher accounting at one subscriber: a bitmap of the sequence numbers seen.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    bits: Vec<u64>,
    distinct_count: u64,
    max_seen: Option<u64>,
    pub duplicate_count: u64,
    pub reordered_count: u64,
}

impl SeqTracker {
    /// Records one arrival and classifies it.
    pub fn handle_seq(&mut self, seq: u64) -> Arrival {
        if seq >= SEQ_LIMIT {
            return Arrival::Corrupt;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.bits.len() {
            let len = (word + 1).max(self.bits.len() * 2);
            self.bits.resize(len, 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicate_count += 1;
            return Arrival::Duplicate;
        }
        self.bits[word] |= bit;
        self.distinct_count += 1;
        match self.max_seen {
            Some(max) if seq < max => {
                self.reordered_count += 1;
                Arrival::Reordered
            }
            _ => {
                self.max_seen = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Distinct sequence numbers seen.
    pub fn distinct_count(&self) -> u64 {
        self.distinct_count
    }

    /// Messages the publisher sent (sequences `0..sent_count`) that never arrived.
    pub fn lost_count(&self, sent_count: u64) -> u64 {
        let full_words = (sent_count / 64) as usize;
        let mut seen: u64 = self
            .bits
            .iter()
            .take(full_words)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = sent_count % 64;
        if rest > 0 {
            if let Some(w) = self.bits.get(full_words) {
                seen += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        sent_count - seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_written_read_back_equal() {
        let mut p = vec![0xAAu8; 64];
        let s = Stamp {
            publisher_id: 7,
            seq: 1 << 40,
            send_ns: 123_456_789_012,
        };
        write_stamp(&mut p, s);
        assert_eq!(read_stamp(&p), Some(s));
        assert_eq!(p[STAMP_LEN], 0xAA, "padding untouched");
    }

    #[test]
    fn short_payload_read_none() {
        assert_eq!(read_stamp(&[0u8; STAMP_LEN - 1]), None);
    }

    #[test]
    fn tracker_in_order_run_no_loss() {
        let mut t = SeqTracker::default();
        for s in 0..1000 {
            assert_eq!(t.handle_seq(s), Arrival::InOrder);
        }
        assert_eq!(t.lost_count(1000), 0);
        assert_eq!(t.duplicate_count, 0);
        assert_eq!(t.reordered_count, 0);
    }

    #[test]
    fn tracker_gaps_dups_reorders_counted() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 2, 3, 5, 5, 70, 64] {
            t.handle_seq(s);
        }
        // Seen: 0 1 2 3 5 64 70; sent 0..72 -> 72 - 7 lost.
        assert_eq!(t.distinct_count(), 7);
        assert_eq!(t.duplicate_count, 2);
        assert_eq!(t.reordered_count, 2, "2 after 3, 64 after 70");
        assert_eq!(t.lost_count(72), 65);
        assert_eq!(t.lost_count(6), 1, "only 4 missing below 6");
        assert_eq!(t.lost_count(0), 0);
        assert!(t.contains(64) && !t.contains(4) && !t.contains(1 << 20));
    }

    #[test]
    fn tracker_huge_seq_corrupt() {
        let mut t = SeqTracker::default();
        assert_eq!(t.handle_seq(u64::MAX), Arrival::Corrupt);
        assert_eq!(t.distinct_count(), 0);
    }
}
