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
//! Counting costs an uncontended atomic add or two per allocation, a few
//! nanoseconds, paid by every figure of the bench alike, the baselines' as much as
//! Remora's. Uncontended: each thread counts in a shard of its own (one cache line,
//! picked the first time the thread allocates), so that an allocation on one
//! worker and its release on the other do not pass a cache line between the cores;
//! a reading sums the shards. Both processes of a remote workload count (the
//! server is this binary too), each its own allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[global_allocator]
static COUNTING: Counting = Counting;

/// More than the threads that allocate often (the runtime's workers, the main
/// thread); threads beyond share shards, still counted exactly.
const SHARDS: usize = 16;

/// One thread's counts (or a few threads'), alone on its cache line.
#[repr(align(128))]
struct Shard {
    /// `alloc`, `alloc_zeroed` and `realloc` calls that succeeded.
    allocations: AtomicU64,
    /// Bytes allocated minus bytes freed here, wrapping: a block freed on another
    /// thread than the one that allocated it makes one shard's count "negative".
    /// The sum over the shards is the bytes live.
    live_bytes: AtomicU64,
}

static COUNTS: [Shard; SHARDS] = [const {
    Shard {
        allocations: AtomicU64::new(0),
        live_bytes: AtomicU64::new(0),
    }
}; SHARDS];

/// Hands threads their shards, in turn.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's shard.
fn shard() -> &'static Shard {
    thread_local! {
        // Const-initialised and without a destructor: reading it never allocates
        // and works until the thread is gone, as an allocator needs.
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let index = MINE.with(|mine| {
        if mine.get() == usize::MAX {
            mine.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        mine.get()
    });
    &COUNTS[index]
}

/// [`System`], counting allocations and live bytes.
struct Counting;

// SAFETY: every method hands its arguments to `System` unchanged, so each keeps
// `System`'s contract; the counts are atomics, touched by no one else.
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
        shard()
            .live_bytes
            .fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, and `new_size` is our caller's, valid for it.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            let shard = shard();
            shard.allocations.fetch_add(1, Ordering::Relaxed);
            // Wrapping: a shrink adds the two's complement of what it frees.
            shard.live_bytes.fetch_add(
                (new_size as u64).wrapping_sub(layout.size() as u64),
                Ordering::Relaxed,
            );
        }
        moved
    }
}

fn counted(size: usize) {
    let shard = shard();
    shard.allocations.fetch_add(1, Ordering::Relaxed);
    shard.live_bytes.fetch_add(size as u64, Ordering::Relaxed);
}

/// The sum of one count over the shards.
fn total(count: impl Fn(&Shard) -> &AtomicU64) -> u64 {
    COUNTS.iter().fold(0, |sum, shard| {
        sum.wrapping_add(count(shard).load(Ordering::Relaxed))
    })
}

/// Heap allocations this process has made since it started.
pub fn allocations() -> u64 {
    total(|shard| &shard.allocations)
}

/// Heap bytes this process holds now.
pub fn live_bytes() -> u64 {
    total(|shard| &shard.live_bytes)
}

/// Runs `work`; its output, and how many allocations this process made meanwhile
/// (by every thread: a workload's tasks run on all the runtime's workers).
pub async fn counting<T>(work: impl Future<Output = T>) -> (T, u64) {
    let before = allocations();
    let out = work.await;
    (out, allocations() - before)
}
