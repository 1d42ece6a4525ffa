//! Topic tries: the shard's local subscriptions, the routing summary of all shards, and the
//! retained store all use [`trie::Trie`] with different node values.

pub mod trie;

pub use trie::{filter_matches, Trie};
