//! Per-connection output: encoded packets waiting for the driver to write them.
//!
//! Small packets are encoded into a shard-wide scratch buffer and split off as `Bytes` chunks;
//! large payloads are queued as their own chunk (the receive buffer slice, no copy), so a driver
//! can write a whole batch with one `writev`.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len_bytes: usize,
}

impl OutQueue {
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.len_bytes += b.len();
        self.chunks.push_back(b);
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
        self.chunks.iter()
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, mut n: usize) {
        assert!(n <= self.len_bytes, "consumed more than queued");
        self.len_bytes -= n;
        while n > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("len_bytes counts queued chunks");
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
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
    }
}
