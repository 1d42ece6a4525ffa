//! Readiness without scanning: every smoltcp socket of a shard holds a waker that carries its
//! connection id. smoltcp wakes it when the socket receives data, frees send space or
//! changes state; waking pushes the id onto this thread's ready list, which the shard drains
//! after ingress. A pass then touches only the sockets that have something to do.
//!
//! The waker is an integer in a `RawWaker` (no allocation, no reference count): cloning it,
//! which smoltcp does when it stores a registration, is a copy. Each shard is one thread, so
//! the list is thread-local and needs no lock.

use std::cell::RefCell;
use std::task::{RawWaker, RawWakerVTable, Waker};

use tachyon_engine::ConnId;

thread_local! {
    static READY: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    READY.with(|r| r.borrow_mut().push(data as u64));
}

fn drop(_: *const ()) {}

/// The waker of connection `id`: waking it marks `id` ready on the calling thread.
pub(super) fn waker(id: ConnId) -> Waker {
    // SAFETY: the vtable functions never dereference `data`; it only carries the id (ids fit
    // in a pointer on the 64-bit targets this crate supports).
    unsafe { Waker::from_raw(RawWaker::new(id.0 as *const (), &VTABLE)) }
}

/// Moves the ids woken since the last call to the end of `into`, as they came.
pub(super) fn append(into: &mut Vec<ConnId>) {
    READY.with(|r| {
        let mut r = r.borrow_mut();
        into.extend(r.drain(..).map(ConnId));
    });
}

/// Moves the ids woken since the last call into `into`, then sorts it and drops duplicates.
pub(super) fn take(into: &mut Vec<ConnId>) {
    append(into);
    into.sort_unstable();
    into.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waking_marks_the_id_ready_once() {
        let w = waker(ConnId(42));
        let w2 = w.clone();
        assert!(w.will_wake(&w2));
        w.wake_by_ref();
        w2.wake();
        waker(ConnId(7)).wake();
        let mut ids = Vec::new();
        take(&mut ids);
        assert_eq!(ids, vec![ConnId(7), ConnId(42)]);
        ids.clear();
        take(&mut ids);
        assert!(ids.is_empty());
    }
}
