//! The bench binary's global allocator: `std::alloc::System`, counting as it goes.
//!
//! Two process-wide counters, both relaxed atomics: heap allocations made (an
//! `alloc`, `alloc_zeroed` or `realloc` each: a `realloc` may move the block, and
//! is what a growing `Vec` pays for) and heap bytes live (allocated minus freed).
//! They feed the figures that are about the heap: `*.allocs_per_call` (how many
//! allocations a call costs) and `l3.bytes_per_actor` (what an idle actor holds),
//! which the process's resident size cannot give: freed memory is reused without
//! the resident size moving, so it measures what the allocator keeps, not what
//! the actors hold.
//!
//! Counting costs two uncontended atomic adds per allocation, a few nanoseconds;
//! every figure of the bench pays it, the baselines as much as Remora. Both
//! processes of a remote workload count (the server is this binary too), each its
//! own allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

#[global_allocator]
static COUNTING: Counting = Counting;

/// `alloc`, `alloc_zeroed` and `realloc` calls that succeeded.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Allocated minus freed; never below zero, as every block freed was counted when
/// it was allocated (before, in the counter's order: the block was handed over since).
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// [`System`], counting allocations and live bytes.
struct Counting;

// SAFETY: every method hands its arguments to `System` unchanged, so each keeps
// `System`'s contract; the counters are atomics, touched by no one else.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract, passed on.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            counted(layout.size());
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            counted(layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from this allocator, that is from `System`, with
        // `layout`: our caller's contract.
        unsafe { System.dealloc(block, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, and `new_size` is our caller's, valid for it.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // Wrapping: a shrink adds the two's complement of what it frees.
            LIVE_BYTES.fetch_add(
                (new_size as u64).wrapping_sub(layout.size() as u64),
                Ordering::Relaxed,
            );
        }
        moved
    }
}

fn counted(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

/// Heap allocations this process has made since it started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Heap bytes this process holds now.
pub fn live_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Runs `work`; its output, and how many allocations this process made meanwhile
/// (by every thread: a workload's tasks run on all the runtime's workers).
pub async fn counting<T>(work: impl Future<Output = T>) -> (T, u64) {
    let before = allocations();
    let out = work.await;
    (out, allocations() - before)
}
