//! A latency histogram with fixed bucket bounds: recording is an index search over 18
//! constants and one increment (no allocation, no float), and the buckets map directly onto
//! a Prometheus histogram.

/// Upper bounds of the buckets, microseconds (the last bucket, `+Inf`, is implicit).
pub const BOUNDS_US: [u64; 17] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    1_000_000,
];
/// Buckets, `+Inf` included.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;
/// Words a histogram takes in the stats region: the buckets, the sum and the count.
pub const WORDS: usize = BUCKETS + 2;

/// Counts per bucket (not cumulative), plus the sum of the recorded values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; BUCKETS],
            sum_us: 0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.wrapping_add(us);
        self.count += 1;
    }

    /// Adds `other`'s counts into this one (summing shards).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us = self.sum_us.wrapping_add(other.sum_us);
        self.count += other.count;
    }

    /// The value under which `q` (0..=1) of the recordings fall, as the upper bound of its
    /// bucket (`u64::MAX` for the `+Inf` bucket); `None` when empty.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_of_their_upper_bound() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 1_000, 1_001, 5_000_000] {
            h.record(v);
        }
        assert_eq!(h.buckets[0], 2, "0 and 1 are <= 1");
        assert_eq!(h.buckets[1], 1, "2");
        assert_eq!(h.buckets[2], 1, "3 is <= 5");
        assert_eq!(h.buckets[9], 1, "1000");
        assert_eq!(h.buckets[10], 1, "1001 is <= 2000");
        assert_eq!(h.buckets[BUCKETS - 1], 1, "+Inf");
        assert_eq!(h.count, 7);
        assert_eq!(h.sum_us, 5_002_007);
        assert_eq!(h.quantile_bound_us(0.5), Some(5));
        assert_eq!(h.quantile_bound_us(1.0), Some(u64::MAX));
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count, 14);
        assert_eq!(m.buckets[0], 4);
    }
}
