//! The arena: one anonymous mapping carved into equal blocks.
//!
//! The mapping is reserved at the pool's maximum size with `MAP_NORESERVE`, so it costs
//! address space, not memory, until pages are written. Blocks are addressed by index; the
//! arena hands out raw pointers and leaves ownership of each block to the pool's free
//! lists.

use std::io;

use memmap2::{Advice, MmapMut, MmapOptions};

use super::PbaError;

/// One anonymous mapping of `blocks * block_size` bytes.
pub(crate) struct Arena {
    /// Keeps the mapping alive; never dereferenced after creation (all access goes through
    /// `base`, so no reference to the whole mapping aliases a block in use).
    _map: MmapMut,
    base: *mut u8,
    block_size: usize,
    blocks: usize,
}

// SAFETY: `Arena` is a pointer to memory it owns (the mapping lives as long as the arena)
// plus sizes. It gives out raw pointers only; which thread may write which block is
// decided by the pool's free lists, whose users uphold the contracts of `block_ptr`,
// `release` and `populate`.
unsafe impl Send for Arena {}
// SAFETY: Shared access reads only the immutable `base` and sizes; see `Send` above.
unsafe impl Sync for Arena {}

impl Arena {
    /// Reserves the mapping; asks for transparent huge pages when `huge_pages` is set.
    pub(crate) fn new(
        block_size: usize,
        blocks: usize,
        huge_pages: bool,
    ) -> Result<Self, PbaError> {
        let bytes = block_size * blocks;
        let mut map = MmapOptions::new()
            .len(bytes)
            .no_reserve_swap()
            .map_anon()
            .map_err(|source| PbaError::Reserve { bytes, source })?;
        if huge_pages && let Err(err) = map.advise(Advice::HugePage) {
            tracing::info!(
                error = %err,
                "Transparent huge pages refused for the block arena; using base pages"
            );
        }
        let base = map.as_mut_ptr();
        Ok(Self {
            _map: map,
            base,
            block_size,
            blocks,
        })
    }

    /// Bytes per block.
    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of blocks.
    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Start of block `index`. The pointer is valid for `block_size` bytes while the arena
    /// lives; the caller must own the block (hold it out of the free lists) to write it.
    ///
    /// # Panics
    ///
    /// If `index` is out of range (a bug of the pool).
    pub(crate) fn block_ptr(&self, index: u32) -> *mut u8 {
        let index = index as usize;
        assert!(index < self.blocks, "Block index {index} out of range");
        // SAFETY: `index < blocks`, so the offset stays inside the mapping of
        // `blocks * block_size` bytes, which was allocated in one piece.
        unsafe { self.base.add(index * self.block_size) }
    }

    /// The iovec of block `index`, for io_uring buffer registration.
    pub(crate) fn iovec(&self, index: u32) -> libc::iovec {
        libc::iovec {
            iov_base: self.block_ptr(index).cast(),
            iov_len: self.block_size,
        }
    }

    /// Gives the pages of block `index` back to the system (`MADV_DONTNEED`). The block
    /// stays usable and reads as zeros afterwards.
    ///
    /// # Safety
    ///
    /// No reference into the block may exist and nobody may access it during the call:
    /// the caller owns the block (it is in no free list and no `Block` holds it).
    pub(crate) unsafe fn release(&self, index: u32) -> io::Result<()> {
        let ptr = self.block_ptr(index);
        // SAFETY: `ptr .. ptr + block_size` lies inside our mapping and is page aligned
        // (block sizes are powers of two of at least 64 KiB, the mapping is page aligned).
        // Nothing references the block (caller's contract), so discarding its contents
        // cannot change memory under a live reference.
        let rc = unsafe { libc::madvise(ptr.cast(), self.block_size, libc::MADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Commits the pages of block `index` ahead of use (`MADV_POPULATE_WRITE`, or writing
    /// one byte per page where the kernel lacks it). Contents may become zero.
    ///
    /// # Safety
    ///
    /// As for [`Arena::release`]: the caller owns the block.
    pub(crate) unsafe fn populate(&self, index: u32) {
        let ptr = self.block_ptr(index);
        // SAFETY: The range is inside our mapping and page aligned (see `release`).
        // Populating for write faults pages in without changing what they read.
        let rc = unsafe { libc::madvise(ptr.cast(), self.block_size, libc::MADV_POPULATE_WRITE) };
        if rc != 0 {
            // Kernels before 5.14: touch every page. The block is ours (caller's
            // contract), so writing it races with nobody.
            let page = page_size();
            for offset in (0..self.block_size).step_by(page) {
                // SAFETY: `offset < block_size`, so the write stays inside the block, which
                // the caller owns; a volatile write keeps the touch from being optimized
                // away.
                unsafe { ptr.add(offset).write_volatile(0) };
            }
        }
    }
}

impl Arena {
    /// Bytes of the arena backed by memory right now (`mincore`): what the pool really
    /// costs, whatever its own bookkeeping estimates. One system call and a scratch
    /// vector of one byte per page, so not for the data path.
    pub(crate) fn resident_bytes(&self) -> io::Result<usize> {
        let page = page_size();
        let len = self.block_size * self.blocks;
        let mut pages = vec![0u8; len.div_ceil(page)];
        // SAFETY: `base .. base + len` is exactly our mapping (page aligned, alive while
        // `self` is), and `pages` holds one byte per page of it, as `mincore` requires.
        // `mincore` only writes into `pages`.
        let rc = unsafe { libc::mincore(self.base.cast(), len, pages.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pages.iter().filter(|b| **b & 1 == 1).count() * page)
    }
}

fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_of_range(ptr: *const u8, len: usize) -> usize {
        let page = page_size();
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: `ptr .. ptr + len` is a mapped range of the test's arena and `vec` has one
        // byte per page of it, as mincore requires.
        let rc = unsafe { libc::mincore(ptr.cast_mut().cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count() * page
    }

    #[test]
    fn populate_commits_and_release_gives_back() {
        let arena = Arena::new(1 << 20, 4, false).unwrap();
        let ptr = arena.block_ptr(1);
        assert_eq!(rss_of_range(ptr, 1 << 20), 0);
        // SAFETY: The test owns every block of its arena; nothing references block 1.
        unsafe { arena.populate(1) };
        assert_eq!(rss_of_range(ptr, 1 << 20), 1 << 20);
        // SAFETY: Block 1 is written only here, with no reference alive.
        unsafe { ptr.add(100).write(7) };
        // SAFETY: As above.
        unsafe { arena.release(1) }.unwrap();
        assert_eq!(rss_of_range(ptr, 1 << 20), 0);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
        // SAFETY: The test owns block 2; nothing references it.
        unsafe { arena.populate(2) };
        assert_eq!(arena.resident_bytes().unwrap(), 1 << 20);
        // SAFETY: Reading a released block maps the zero page: it reads as zero.
        assert_eq!(unsafe { ptr.add(100).read() }, 0);
        assert_eq!(arena.iovec(3).iov_len, 1 << 20);
    }
}
