//! One block handed out by the pool.

use std::{
    fmt, io,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

use super::pool::PoolInner;

/// A block of the pool, owned exclusively until dropped, when it goes back to the pool.
///
/// It dereferences to its filled bytes, `[0, len)`. Fill it through
/// [`Block::as_mut_full`] and [`Block::set_len`], or through [`io::Write`], which appends
/// after the filled bytes. A new block has length 0; its bytes beyond that hold whatever
/// the previous user left, or zeros.
pub struct Block {
    /// The pool's state, kept alive by this block's share of its reference count.
    pool: NonNull<PoolInner>,
    index: u32,
    len: usize,
}

// SAFETY: A block is an exclusive owner of its bytes (taken out of the free lists) plus a
// counted reference to the pool's state, which is `Send + Sync`; giving the block back
// from another thread is what the lock-free free list is for.
unsafe impl Send for Block {}
// SAFETY: Shared access only reads the block's bytes (`Deref`) and the pool's immutable
// arena geometry; mutation needs `&mut Block`.
unsafe impl Sync for Block {}

impl Block {
    /// Wraps block `index`, which the caller took out of the pool's free lists after
    /// counting it in `pool`'s reference count (the block gives that share up on drop).
    pub(super) fn new(pool: NonNull<PoolInner>, index: u32) -> Self {
        Self {
            pool,
            index,
            len: 0,
        }
    }

    /// Bytes the block can hold (the pool's block size).
    pub fn capacity(&self) -> usize {
        self.inner().arena.block_size()
    }

    /// The pool's state.
    fn inner(&self) -> &PoolInner {
        // SAFETY: This block's share of the reference count keeps the state alive while
        // the block exists.
        unsafe { self.pool.as_ref() }
    }

    /// Sets how many bytes, from the start, are filled.
    ///
    /// # Panics
    ///
    /// If `len` exceeds [`Block::capacity`].
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "Block length {len} exceeds its capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// The whole block, filled or not, for writing into; follow with [`Block::set_len`].
    pub fn as_mut_full(&mut self) -> &mut [u8] {
        let capacity = self.capacity();
        // SAFETY: The pointer is valid for `capacity` bytes while the arena lives, which
        // our share of the pool's reference count guarantees. The memory is initialized (anonymous mappings read as
        // zeros). This block left the free lists when it was acquired, so nobody else
        // accesses it until we drop it, and `&mut self` makes this borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), capacity) }
    }

    /// Its io_uring fixed-buffer index (equal to its index in the pool).
    pub fn buf_index(&self) -> u16 {
        // Pools hold at most `MAX_BLOCKS` = 2^14 blocks, validated at creation.
        self.index as u16
    }

    /// Start of the block's memory.
    pub(super) fn ptr(&self) -> *mut u8 {
        self.inner().arena.block_ptr(self.index)
    }

    /// The state of the pool this block comes from.
    pub(super) fn pool_ptr(&self) -> NonNull<PoolInner> {
        self.pool
    }

    /// Index in the pool.
    pub(super) fn index(&self) -> u32 {
        self.index
    }
}

impl Deref for Block {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: As in `as_mut_full`: valid, initialized memory owned by this block;
        // `len <= capacity` is kept by `set_len` and `write`. A shared borrow of `self`
        // allows only shared access.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_mut_full()[..len]
    }
}

impl io::Write for Block {
    /// Appends after the filled bytes; writes 0 bytes once the block is full (so
    /// `write_all` reports [`io::ErrorKind::WriteZero`]).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let start = self.len;
        let n = data.len().min(self.capacity() - start);
        self.as_mut_full()[start..start + n].copy_from_slice(&data[..n]);
        self.len = start + n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: `self.pool` is the state the block came from, the block is dropped once,
        // and nothing uses the pointer afterwards.
        unsafe { PoolInner::give_back(self.pool, self.index) };
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pba::{BlockPool, ZeroCopySender};

    #[test]
    fn blocks_pools_and_senders_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Block>();
        send_sync::<BlockPool>();
        send::<ZeroCopySender>();
    }
}
