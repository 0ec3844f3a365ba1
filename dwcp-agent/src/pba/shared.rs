//! Lifetime of the pool's shared state: one reference count for handles and blocks.
//!
//! The state lives as long as any [`BlockPool`](super::BlockPool) handle (or zero-copy
//! sender) or any handed-out [`Block`](super::Block) does. Instead of an `Arc` per block
//! plus a separate in-flight counter (two atomic read-modify-writes on take and two on
//! give-back), one 64-bit word counts both: handles in the high 32 bits, blocks in flight
//! in the low 32 bits. Taking a block is one `fetch_add(1)` that also yields the in-flight
//! count; giving it back is one `fetch_sub(1)`, which frees the state when it was the last
//! reference.

use std::{
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering, fence},
};

use super::pool::PoolInner;

/// One handle's share of the reference count.
pub(crate) const HANDLE: u64 = 1 << 32;
/// The low bits: blocks in flight.
pub(crate) const BLOCKS_MASK: u64 = HANDLE - 1;

/// The reference count; [`PoolInner`] holds one, starting at one handle.
pub(crate) struct RefCount(AtomicU64);

impl RefCount {
    /// A count of one handle and no block.
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(HANDLE))
    }

    /// Counts one more block in flight and returns the count including it.
    pub(crate) fn add_block(&self) -> usize {
        // Relaxed, as for `Arc::clone`: the caller already holds a reference, so the
        // state cannot be freed meanwhile. At most 2^14 blocks exist (`MAX_BLOCKS`), so
        // the low half never carries into the handles.
        let before = self.0.fetch_add(1, Ordering::Relaxed);
        ((before & BLOCKS_MASK) + 1) as usize
    }

    /// Blocks in flight at this instant.
    pub(crate) fn blocks(&self) -> usize {
        (self.0.load(Ordering::Relaxed) & BLOCKS_MASK) as usize
    }
}

/// An owning handle to the pool's shared state (one `HANDLE` of the count).
pub(crate) struct PoolRef {
    ptr: NonNull<PoolInner>,
}

// SAFETY: `PoolRef` is a counted shared reference to `PoolInner`, like `Arc<PoolInner>`,
// and `PoolInner` is `Send + Sync` (atomics, a mutex, a condition variable and an arena
// whose blocks are owned through the free lists).
unsafe impl Send for PoolRef {}
// SAFETY: As for `Send`.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    /// Moves `inner` to the heap; its count must be [`RefCount::new`] (one handle).
    pub(crate) fn new(inner: PoolInner) -> Self {
        Self {
            ptr: NonNull::from(Box::leak(Box::new(inner))),
        }
    }

    /// The state's address, for a block to keep (it took its own count).
    pub(crate) fn as_ptr(&self) -> NonNull<PoolInner> {
        self.ptr
    }

    /// Whether both handles share one state.
    pub(crate) fn ptr_eq(&self, other: NonNull<PoolInner>) -> bool {
        self.ptr == other
    }
}

impl Deref for PoolRef {
    type Target = PoolInner;

    fn deref(&self) -> &PoolInner {
        // SAFETY: Our handle share keeps the state alive (see `release`).
        unsafe { self.ptr.as_ref() }
    }
}

impl Clone for PoolRef {
    fn clone(&self) -> Self {
        let before = self.refs().0.fetch_add(HANDLE, Ordering::Relaxed);
        // Like `Arc`: billions of leaked handles would wrap the count; stop instead.
        if before >= u64::MAX / 2 {
            std::process::abort();
        }
        Self { ptr: self.ptr }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        // SAFETY: This handle holds one `HANDLE` share and gives it up here, once.
        unsafe { release(self.ptr, HANDLE) };
    }
}

/// Gives up `share` (a block's 1 or a handle's [`HANDLE`]) of the count; frees the state
/// if that was the last reference.
///
/// # Safety
///
/// The caller holds `share` of the count on `ptr`'s state and does not use `ptr` after
/// the call.
pub(crate) unsafe fn release(ptr: NonNull<PoolInner>, share: u64) {
    // SAFETY: The caller's share keeps the state alive until this decrement.
    let refs = unsafe { &ptr.as_ref().refs };
    // Release, then acquire on the last one, as `Arc` does: every use of the state by
    // other holders happens before it is freed.
    if refs.0.fetch_sub(share, Ordering::Release) == share {
        fence(Ordering::Acquire);
        // SAFETY: The count reached zero: no handle and no block refer to the state any
        // more, and it was allocated by `Box` in `PoolRef::new`.
        drop(unsafe { Box::from_raw(ptr.as_ptr()) });
    }
}

impl PoolRef {
    fn refs(&self) -> &RefCount {
        &self.refs
    }
}
