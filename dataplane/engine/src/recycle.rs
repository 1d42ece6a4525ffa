//! Reuse of large byte buffers whose contents were handed out as `Bytes` slices.
//!
//! The shard encodes output into one large buffer and splits packets off it; the driver reads
//! input into one and the decoder splits payloads off it. A used-up buffer cannot be written
//! again while any of its slices lives, so it is set aside here; once its last slice is
//! dropped (the output written, the message delivered) it is ours alone again and is taken
//! back instead of allocating a new one. Steady forwarding then allocates no buffers at all.

use bytes::BytesMut;

pub struct Recycler {
    pool: Vec<BytesMut>,
    capacity: usize,
    keep: usize,
}

impl Recycler {
    /// Buffers of `capacity` bytes; at most `keep` set aside (older ones are let go).
    pub fn new(capacity: usize, keep: usize) -> Recycler {
        Recycler {
            pool: Vec::with_capacity(keep),
            capacity,
            keep,
        }
    }

    /// A fresh buffer of `capacity` bytes.
    pub fn fresh(&self) -> BytesMut {
        BytesMut::with_capacity(self.capacity)
    }

    /// Lets go of all but `n` set-aside buffers (after a burst: memory goes back).
    pub fn trim(&mut self, n: usize) {
        if self.pool.len() > n {
            self.pool.drain(..self.pool.len() - n);
        }
    }

    /// Buffers set aside.
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Replaces `buf`, whose contents were all split off (it is empty), by a reclaimed or a new
    /// buffer; `buf` is set aside for later.
    pub fn refill(&mut self, buf: &mut BytesMut) {
        debug_assert!(buf.is_empty(), "only an empty buffer is replaced");
        let reusable = self
            .pool
            .iter_mut()
            .position(|b| b.try_reclaim(self.capacity / 2));
        let next = match reusable {
            Some(i) => self.pool.swap_remove(i),
            None => self.fresh(),
        };
        let old = std::mem::replace(buf, next);
        if self.pool.len() >= self.keep {
            self.pool.remove(0);
        }
        self.pool.push(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_its_slices_are_gone() {
        let mut r = Recycler::new(1024, 2);
        let mut buf = r.fresh();
        buf.extend_from_slice(&[1u8; 1000]);
        let slice = buf.split().freeze();
        let first = slice.as_ptr();
        r.refill(&mut buf); // `slice` still lives: a new buffer
        buf.extend_from_slice(&[2u8; 1000]);
        let other = buf.split().freeze();
        assert_ne!(other.as_ptr(), first);
        drop(slice);
        r.refill(&mut buf); // the first buffer is free again: reclaimed, not allocated
        buf.extend_from_slice(&[3u8; 8]);
        assert_eq!(buf.as_ptr(), first);
        assert!(buf.capacity() >= 1000);
        drop(other);
    }
}
