//! `--features count-allocs`: a global allocator that counts heap allocations, for the
//! benchmark that checks the fast path allocates nothing per message (issue 3).
//!
//! `kill -USR1 <pid>` writes the count so far to the file named by `TACHYON_ALLOC_COUNT_FILE`
//! (stderr when unset); `tachyon-bench throughput --broker-pid PID --broker-alloc-file FILE`
//! does this at the start and end of its window and reports allocations per message. The one
//! shared counter costs an atomic add per allocation, so this build is for that measurement
//! only, never for timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Writes the count (see the module docs).
pub fn report() {
    let n = ALLOCATIONS.load(Ordering::Relaxed);
    match std::env::var_os("TACHYON_ALLOC_COUNT_FILE") {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, format!("{n}\n")) {
                eprintln!("tachyon: cannot write {}: {e}", path.to_string_lossy());
            }
        }
        None => eprintln!("tachyon: heap allocations so far: {n}"),
    }
}
