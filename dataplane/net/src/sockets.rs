//! A shard's sockets, in a table indexed by a small slot number: the file descriptor (kernel
//! driver) or a slot the user-space driver allocates lowest-first ([`SlotAllocator`]).
//!
//! The kernel hands out the lowest free descriptor, so the table stays dense: a socket costs
//! one slot, where a hash map would cost its entry divided by the load factor (about 1.9x at
//! the usual fill). With many idle connections that difference is a good part of the memory
//! per connection (docs/benchmarks.md, idle connections).
//!
//! A connection id carries its slot, and the slot keeps the id, so an id whose socket was
//! closed (and whose slot was reused) finds nothing:
//!
//! ```text
//!   bit 63: 0 (ids stay below the epoll tokens of listeners)   bits 57..62: shard
//!   bits 24..56: connection counter of the shard (wraps after 2^33)   bits 0..23: slot (descriptor)
//! ```

use tachyon_engine::ConnId;

const FD_BITS: u32 = 24;
const COUNTER_BITS: u32 = 33;

/// The largest slot (descriptor) a connection id can carry.
pub(crate) const SLOT_MAX: u32 = (1 << FD_BITS) - 1;

/// The id of the `counter`-th connection of `shard`, in slot `slot` (`0..=SLOT_MAX`).
pub(crate) fn conn_id(shard: usize, counter: u64, slot: u32) -> ConnId {
    debug_assert!(slot <= SLOT_MAX && shard < 64);
    let counter = counter & ((1 << COUNTER_BITS) - 1);
    ConnId(((shard as u64) << (FD_BITS + COUNTER_BITS)) | (counter << FD_BITS) | slot as u64)
}

/// The slot an id names.
pub(crate) fn slot_number(id: ConnId) -> u32 {
    (id.0 & ((1 << FD_BITS) - 1)) as u32
}

fn slot_of(id: ConnId) -> usize {
    (id.0 & ((1 << FD_BITS) - 1)) as usize
}

pub(crate) struct SocketTable<T> {
    slots: Vec<Option<(ConnId, T)>>,
    len: usize,
}

impl<T> SocketTable<T> {
    pub fn new() -> Self {
        SocketTable {
            slots: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` under `id`; the slot of its descriptor must be free.
    pub fn insert(&mut self, id: ConnId, value: T) {
        let i = slot_of(id);
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        debug_assert!(self.slots[i].is_none(), "descriptor slot in use");
        if self.slots[i].is_none() {
            self.len += 1;
        }
        self.slots[i] = Some((id, value));
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(slot_of(id)) {
            Some(Some((k, v))) if *k == id => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(slot_of(id)) {
            Some(Some((k, v))) if *k == id => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(slot_of(id))?;
        if !matches!(slot, Some((k, _)) if *k == id) {
            return None;
        }
        self.len -= 1;
        let value = slot.take().map(|(_, v)| v);
        // Give the tail back after a burst of connections has gone.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        value
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|s| s.as_mut().map(|(k, v)| (*k, v)))
    }

    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|(k, _)| *k))
    }
}

/// Hands out slot numbers lowest-first (as the kernel does with descriptors), so that a
/// [`SocketTable`] stays dense.
#[derive(Default)]
pub(crate) struct SlotAllocator {
    /// Freed slots, as a min-heap.
    free: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    next: u32,
}

impl SlotAllocator {
    /// A free slot, or `None` when all `SLOT_MAX + 1` are in use.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(std::cmp::Reverse(s)) = self.free.pop() {
            return Some(s);
        }
        if self.next > SLOT_MAX {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    pub fn give_back(&mut self, slot: u32) {
        self.free.push(std::cmp::Reverse(slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_find_nothing() {
        let mut t = SocketTable::new();
        let a = conn_id(3, 1, 7);
        t.insert(a, "a");
        assert_eq!(t.get(a), Some(&"a"));
        assert_eq!(t.remove(a), Some("a"));
        // Descriptor 7 reused by the next connection: the old id does not see it.
        let b = conn_id(3, 2, 7);
        t.insert(b, "b");
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.ids().collect::<Vec<_>>(), vec![b]);
    }

    #[test]
    fn ids_are_unique_and_below_the_listener_tokens() {
        let a = conn_id(63, (1 << 33) - 1, SLOT_MAX);
        assert!(a.0 < u64::MAX - 1024);
        assert_ne!(conn_id(0, 1, 5), conn_id(1, 1, 5));
        assert_ne!(conn_id(0, 1, 5), conn_id(0, 2, 5));
        assert_eq!(slot_of(conn_id(9, 12345, 4242)), 4242);
    }

    #[test]
    fn the_table_shrinks_when_sockets_go() {
        let mut t = SocketTable::new();
        let ids: Vec<ConnId> = (0..5000).map(|fd| conn_id(0, fd as u64, fd)).collect();
        assert_eq!(slot_number(ids[4321]), 4321);
        for &id in &ids {
            t.insert(id, ());
        }
        for &id in &ids {
            t.remove(id);
        }
        assert!(t.is_empty());
        assert!(t.slots.capacity() < 5000);
    }

    #[test]
    fn slots_are_handed_out_lowest_first() {
        let mut a = SlotAllocator::default();
        assert_eq!((a.take(), a.take(), a.take()), (Some(0), Some(1), Some(2)));
        a.give_back(2);
        a.give_back(0);
        assert_eq!((a.take(), a.take(), a.take()), (Some(0), Some(2), Some(3)));
    }
}
