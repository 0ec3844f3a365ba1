//! A counting global allocator for the no-allocation tests: the system allocator, plus
//! counts of the calls made by threads that switched counting on (per thread) or by any
//! thread while process-wide counting is on. A test binary installs it with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

/// The system allocator, counting allocations.
pub struct CountingAllocator;

thread_local! {
    /// Const-initialized and without destructor: using them never allocates.
    static THREAD_COUNTING: Cell<bool> = const { Cell::new(false) };
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

static PROCESS_COUNTING: AtomicBool = AtomicBool::new(false);
static PROCESS_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Starts or stops counting this thread's allocations.
pub fn count_this_thread(on: bool) {
    THREAD_COUNTING.set(on);
}

/// Allocations counted on this thread so far.
pub fn this_thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.get()
}

/// Starts or stops counting every thread's allocations.
pub fn count_process(on: bool) {
    PROCESS_COUNTING.store(on, Ordering::SeqCst);
}

/// Allocations counted process-wide so far.
pub fn process_allocations() -> u64 {
    PROCESS_ALLOCATIONS.load(Ordering::SeqCst)
}

fn note_allocation() {
    if THREAD_COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
    if PROCESS_COUNTING.load(Ordering::Relaxed) {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: Every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; counting touches only const thread-locals and atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: The caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: As for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: As for `alloc`: `ptr` and `layout` come from this allocator, which is
        // `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: As for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
