//! Per-connection output: encoded packets waiting for the driver to write them.
//!
//! Small packets are encoded into a shard-wide scratch buffer and split off as `Bytes` chunks;
//! large payloads are queued as their own chunk (the receive buffer slice, no copy), so a driver
//! can write a whole batch with one `writev`.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;

/// The first chunk is kept outside the deque: a connection that never has more than one
/// packet waiting (an idle client: CONNACK, PINGRESP) then never allocates one, which is
/// 176 bytes per idle connection (docs/benchmarks.md). Invariant: `rest` is empty when `head`
/// is `None`.
#[derive(Debug, Default)]
pub struct OutQueue {
    head: Option<Bytes>,
    /// Boxed on first use, and kept: a busy connection allocates it once. The box halves
    /// what an idle connection pays for the deque header.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Bytes>>>,
    len_bytes: usize,
}

impl OutQueue {
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.len_bytes += b.len();
        if self.head.is_none() {
            self.head = Some(b);
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(b);
        }
    }

    /// Bytes waiting.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// The chunks in order, for building an iovec array.
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, mut n: usize) {
        assert!(n <= self.len_bytes, "consumed more than queued");
        self.len_bytes -= n;
        while n > 0 {
            let front = self.head.as_mut().expect("len_bytes counts queued chunks");
            if front.len() <= n {
                n -= front.len();
                self.head = self.rest.as_mut().and_then(|r| r.pop_front());
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    pub fn clear(&mut self) {
        self.head = None;
        if let Some(r) = self.rest.as_mut() {
            r.clear();
        }
        self.len_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_across_chunks() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        q.consume(4);
        assert_eq!(q.len_bytes(), 3);
        assert_eq!(q.chunks().next().unwrap().as_ref(), b"efg");
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.chunks().count(), 0);
    }

    #[test]
    fn order_is_kept_across_head_and_rest() {
        let mut q = OutQueue::default();
        for s in [&b"a"[..], b"bc", b"def"] {
            q.push(Bytes::copy_from_slice(s));
        }
        q.consume(1);
        q.push(Bytes::from_static(b"g"));
        let all: Vec<u8> = q.chunks().flat_map(|c| c.to_vec()).collect();
        assert_eq!(all, b"bcdefg");
        q.consume(6);
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"h"));
        assert_eq!(q.chunks().next().unwrap().as_ref(), b"h");
    }
}
