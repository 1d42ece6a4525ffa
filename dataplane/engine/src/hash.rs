//! Hash maps whose hasher state takes no space.
//!
//! `std`'s `RandomState` is 16 bytes inside every map. Sessions, connections and trie nodes
//! each hold maps that are usually empty, so with many idle clients those bytes add up
//! (docs/benchmarks.md, idle connections). Both builders here are zero-sized:
//!
//! - [`Keyed`]: foldhash (hashbrown's default) under one random seed per process, for keys a
//!   client chooses (client ids, topic levels, its own QoS 2 packet ids), so that nobody can
//!   aim collisions at a table. SipHash, std's default, was a fifth of the shard's time in
//!   QoS 0 fan-in (trie lookups; docs/benchmarks.md).
//! - [`IdHash`]: a multiplicative mix for integer keys the broker chooses itself (connection
//!   ids, session keys, the packet ids it allocates), which are looked up on every message.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use foldhash::fast::FoldHasher;
use foldhash::SharedSeed;

/// foldhash with a per-process random seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keyed;

impl BuildHasher for Keyed {
    type Hasher = FoldHasher<'static>;
    fn build_hasher(&self) -> FoldHasher<'static> {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x7461_6368_796f_6e00_u64));
        FoldHasher::with_seed(seed, SharedSeed::global_random())
    }
}

/// For integer keys the broker assigns; not for anything a client picks.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        // Fold in, then mix so that both the low bits (bucket index) and the top bits
        // (hashbrown's tag) depend on every input bit.
        let h = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

pub type KeyedMap<K, V> = HashMap<K, V, Keyed>;
pub type KeyedSet<T> = HashSet<T, Keyed>;
pub type IdMap<K, V> = HashMap<K, V, IdHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_take_no_space() {
        assert_eq!(std::mem::size_of::<KeyedMap<u64, u64>>(), 32);
        assert_eq!(std::mem::size_of::<IdMap<u64, u64>>(), 32);
    }

    #[test]
    fn keyed_is_stable_within_a_process() {
        assert_eq!(Keyed.hash_one("a/b"), Keyed.hash_one("a/b"));
        assert_ne!(Keyed.hash_one("a/b"), Keyed.hash_one("a/c"));
    }

    #[test]
    fn id_hash_spreads_sequential_ids_over_buckets() {
        // The low 10 bits (a 1024-bucket table) of 1024 consecutive ids: nearly all distinct.
        let buckets: HashSet<u64> = (0..1024u64).map(|i| IdHash.hash_one(i) & 1023).collect();
        assert!(buckets.len() > 600, "{} distinct buckets", buckets.len());
    }
}
