//! The pool: free lists over the arena, blocking acquisition, adaptation and statistics.
//!
//! The hot path (take a block, give it back) is two compare-and-swaps on the warm free
//! list, one add and one subtract on the shared reference count (which doubles as the
//! in-flight count), a load of the waiter count, and a plain per-block counter that only
//! the block's owner writes. Peaks are compared with a load and written only when they
//! move.

use std::{
    fmt, io,
    ptr::NonNull,
    sync::{
        Condvar, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Block, Change, PbaError, PoolConfig, Predictor, PredictorStep,
    arena::Arena,
    free_list::FreeList,
    shared::{self, PoolRef, RefCount},
};

/// A pool of fixed-size blocks carved from one reserved arena. Cloning is cheap and shares
/// the pool.
///
/// [`BlockPool::try_acquire`] and dropping a [`Block`] are lock-free and never touch the
/// heap. Call [`BlockPool::adapt`] periodically (for example every 100 ms) to size the
/// committed memory to recent demand.
#[derive(Clone)]
pub struct BlockPool {
    inner: PoolRef,
}

/// State shared by the pool's handles and its blocks.
pub(crate) struct PoolInner {
    pub(super) arena: Arena,
    config: PoolConfig,
    /// Handles and blocks in flight (see `shared.rs`).
    pub(super) refs: RefCount,
    /// Free blocks whose pages are (probably) committed. Preferred by acquisition.
    warm: FreeList,
    /// Free blocks with no committed pages: never touched, or released by `adapt`.
    cold: FreeList,
    /// Per block, times it was handed out. Written only by the block's current owner
    /// (between taking it from a free list and pushing it back), so a plain load and
    /// store suffice; summed by `stats`.
    handouts: Box<[AtomicU64]>,
    /// Per block, bumped each time its pages are released (see the module documentation).
    generations: Box<[AtomicU32]>,
    /// Bumped after every `adapt` call that released blocks.
    release_epoch: AtomicU64,
    /// Set once someone registered the whole arena through `iovecs`.
    releasing_disabled: AtomicBool,
    peak_in_use: AtomicUsize,
    /// Peak in flight since the previous `adapt`: the predictor's demand sample.
    window_peak: AtomicUsize,
    /// Blocks handed out from the cold list or prefaulted, minus blocks released.
    committed: AtomicUsize,
    target: AtomicUsize,
    acquire_wait_ns: AtomicU64,
    acquire_timeouts: AtomicU64,
    blocks_released: AtomicU64,
    /// Threads inside `acquire` waiting for a block.
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cond: Condvar,
    predictor: Mutex<Predictor>,
}

/// A snapshot of a pool's figures; counters are cumulative since creation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolStats {
    /// Bytes per block.
    pub block_size: usize,
    /// Blocks the arena holds: the most that can be in flight at once (`max_blocks`).
    pub capacity_blocks: usize,
    /// Blocks the predictor wants committed.
    pub target_blocks: usize,
    /// Blocks handed out and not yet dropped (a block being dropped at this instant may
    /// still count).
    pub blocks_in_use: usize,
    /// Most blocks in flight at once since creation.
    pub peak_in_use: usize,
    /// Heap bytes of the pool's bookkeeping (free-list links, per-block counters and
    /// generations): memory beside the arena that grows with `max_blocks`.
    pub metadata_bytes: usize,
    /// Estimate of the arena's committed memory: blocks in use or free but not released,
    /// times the block size. Pages of a block count from the moment it is handed out or
    /// prefaulted, whether written or not; with huge pages the kernel may commit more.
    pub bytes_committed_estimate: usize,
    /// Idle committed memory per byte in use:
    /// `(committed bytes - in-use bytes) / max(in-use bytes, block_size)`. 0 means every
    /// committed byte is in use; with nothing in use it is the number of idle committed
    /// blocks.
    pub memory_overhead_ratio: f64,
    /// Blocks handed out.
    pub acquires: u64,
    /// Time spent waiting in [`BlockPool::acquire`] because no block was free, in
    /// nanoseconds (acquisitions served at once add nothing).
    pub acquire_wait_ns_total: u64,
    /// [`BlockPool::acquire`] calls that timed out.
    pub acquire_timeouts: u64,
    /// Times a free block's pages were given back to the system.
    pub blocks_released_total: u64,
}

/// What one [`BlockPool::adapt`] call saw and did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adaptation {
    /// Demand sample: the peak number of blocks in flight since the previous call.
    pub demand: usize,
    /// Target before the call.
    pub previous_target: usize,
    /// Target after the call.
    pub target: usize,
    /// What the predictor did.
    pub change: Change,
    /// Blocks committed ahead of use by this call.
    pub blocks_prefaulted: usize,
    /// Free blocks whose pages this call gave back.
    pub blocks_released: usize,
}

impl BlockPool {
    /// Validates `config`, reserves the arena and, with `prefault`, commits `min_blocks`.
    pub fn new(config: PoolConfig) -> Result<Self, PbaError> {
        config.validate()?;
        let blocks = config.max_blocks;
        let arena = Arena::new(config.block_size, blocks, config.huge_pages)?;
        let warm = FreeList::new(blocks);
        let cold = FreeList::new(blocks);
        // `validate` caps `max_blocks` at 2^14, so every index fits in a u32 (and a u16).
        // Pushed from the top so that block 0 is popped first.
        for index in (0..blocks as u32).rev() {
            cold.push(index);
        }
        let predictor = Predictor::new(&config);
        let target = predictor.target();
        let inner = PoolRef::new(PoolInner {
            arena,
            refs: RefCount::new(),
            warm,
            cold,
            handouts: (0..blocks).map(|_| AtomicU64::new(0)).collect(),
            generations: (0..blocks).map(|_| AtomicU32::new(1)).collect(),
            release_epoch: AtomicU64::new(0),
            releasing_disabled: AtomicBool::new(false),
            peak_in_use: AtomicUsize::new(0),
            window_peak: AtomicUsize::new(0),
            committed: AtomicUsize::new(0),
            target: AtomicUsize::new(target),
            acquire_wait_ns: AtomicU64::new(0),
            acquire_timeouts: AtomicU64::new(0),
            blocks_released: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cond: Condvar::new(),
            predictor: Mutex::new(predictor),
            config,
        });
        if inner.config.prefault {
            inner.prefault_to(target);
        }
        Ok(Self { inner })
    }

    /// A free block, or `None` when all are in flight. Lock-free; no heap allocation.
    ///
    /// It may also miss for the moment [`BlockPool::adapt`] takes to move a block
    /// between the free lists; [`BlockPool::acquire`] does not.
    pub fn try_acquire(&self) -> Option<Block> {
        let index = self.inner.take_free()?;
        // `take_free` counted the block in the reference count, which keeps the state
        // alive for it.
        Some(Block::new(self.inner.as_ptr(), index))
    }

    /// A free block, waiting up to `timeout` for one to be dropped. This is the back
    /// pressure of the data path: at most `max_blocks` are ever in flight.
    pub fn acquire(&self, timeout: Duration) -> Result<Block, PbaError> {
        if let Some(block) = self.try_acquire() {
            return Ok(block);
        }
        let inner = &*self.inner;
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        // Pairs with the read-modify-write in `wake_waiter`: either the releaser sees us
        // waiting, or our next `try_acquire` sees its block.
        inner.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = inner
            .wait_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = loop {
            if let Some(block) = self.try_acquire() {
                break Ok(block);
            }
            guard = match deadline {
                None => inner
                    .wait_cond
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(PbaError::Timeout {
                            waited: start.elapsed(),
                            capacity: inner.arena.blocks(),
                        });
                    }
                    inner
                        .wait_cond
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        };
        drop(guard);
        inner.waiters.fetch_sub(1, Ordering::SeqCst);
        let waited = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        inner.acquire_wait_ns.fetch_add(waited, Ordering::Relaxed);
        if result.is_err() {
            inner.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.inner.arena.block_size()
    }

    /// Blocks the arena holds (`max_blocks`).
    pub fn capacity(&self) -> usize {
        self.inner.arena.blocks()
    }

    /// The configuration the pool was made with.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Whether `block` comes from this pool.
    pub fn owns(&self, block: &Block) -> bool {
        self.inner.ptr_eq(block.pool_ptr())
    }

    /// Bytes of the arena backed by memory right now, as the kernel reports it
    /// (`mincore`); compare with [`PoolStats::bytes_committed_estimate`]. Makes a system
    /// call and a scratch allocation: not for the data path.
    pub fn resident_bytes(&self) -> io::Result<usize> {
        self.inner.arena.resident_bytes()
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        let inner = &*self.inner;
        let block_size = inner.arena.block_size();
        let in_use = inner.refs.blocks().min(inner.arena.blocks());
        let committed = inner.committed.load(Ordering::Relaxed).max(in_use);
        PoolStats {
            block_size,
            capacity_blocks: inner.arena.blocks(),
            target_blocks: inner.target.load(Ordering::Relaxed),
            blocks_in_use: in_use,
            peak_in_use: inner.peak_in_use.load(Ordering::Relaxed),
            bytes_committed_estimate: committed * block_size,
            memory_overhead_ratio: (committed - in_use) as f64 / in_use.max(1) as f64,
            acquires: inner
                .handouts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .sum(),
            metadata_bytes: inner.metadata_bytes(),
            acquire_wait_ns_total: inner.acquire_wait_ns.load(Ordering::Relaxed),
            acquire_timeouts: inner.acquire_timeouts.load(Ordering::Relaxed),
            blocks_released_total: inner.blocks_released.load(Ordering::Relaxed),
        }
    }

    /// Feeds the demand since the previous call to the [`Predictor`] and moves committed
    /// memory toward its target: prefaults free blocks when the target grew (with
    /// `prefault`), releases free blocks beyond it with `MADV_DONTNEED` when it shrank.
    ///
    /// Cheap when nothing changes (a mutex and a few atomics); costs a system call per
    /// block moved otherwise. Safe to call from any thread.
    pub fn adapt(&self) -> Adaptation {
        let peak = &self.inner.window_peak;
        self.resize(|predictor, now| {
            let demand = peak.swap(now, Ordering::Relaxed).max(now);
            (demand, predictor.step(demand))
        })
    }

    /// Sets the target to the blocks in use right now and gives free blocks beyond it back
    /// at once, forgetting past demand ([`Predictor::settle`]).
    /// For an owner that knows its demand fell for good: a receiver holds one block per
    /// open data connection, so when one closes there is nothing left to predict.
    pub fn settle(&self) -> Adaptation {
        let peak = &self.inner.window_peak;
        self.resize(|predictor, now| {
            peak.store(now, Ordering::Relaxed);
            (now, predictor.settle(now))
        })
    }

    /// Under the predictor's lock, lets `decide` turn the blocks in flight now into a
    /// demand and a step, then moves committed memory to the step's target.
    fn resize(
        &self,
        decide: impl FnOnce(&mut Predictor, usize) -> (usize, PredictorStep),
    ) -> Adaptation {
        let inner = &*self.inner;
        let mut predictor = inner
            .predictor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (demand, step) = decide(&mut predictor, inner.refs.blocks());
        inner.target.store(step.target, Ordering::Relaxed);
        let blocks_prefaulted = if inner.config.prefault {
            inner.prefault_to(step.target)
        } else {
            0
        };
        let blocks_released = inner.release_beyond(step.target);
        Adaptation {
            demand,
            previous_target: step.previous_target,
            target: step.target,
            change: step.change,
            blocks_prefaulted,
            blocks_released,
        }
    }

    /// One iovec per block, in buffer-index order, for registering the whole arena with
    /// io_uring (`register_buffers`).
    ///
    /// Registration pins the pages a block has at that moment; releasing a block would
    /// leave such a registration pointing at pages the block no longer maps. So this call
    /// switches releasing off for the pool's lifetime (the predictor still runs and
    /// prefaults). [`ZeroCopySender`](super::ZeroCopySender) does not need it: it follows
    /// releases itself.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        self.inner.releasing_disabled.store(true, Ordering::SeqCst);
        (0..self.inner.arena.blocks() as u32)
            .map(|index| self.inner.arena.iovec(index))
            .collect()
    }

    /// Shared state, for the zero-copy sender.
    pub(super) fn inner(&self) -> &PoolInner {
        &self.inner
    }
}

impl PoolInner {
    /// Takes a free block, warm first, and counts it in flight.
    fn take_free(&self) -> Option<u32> {
        let index = match self.warm.pop() {
            Some(index) => index,
            None => {
                let index = self.cold.pop()?;
                self.committed.fetch_add(1, Ordering::Relaxed);
                index
            }
        };
        // A block being given back is pushed before its count is dropped (the count
        // keeps the state alive during the push), so at that instant the count may
        // include it twice: clamp, as no more than the capacity can be out.
        let in_use = self.refs.add_block().min(self.arena.blocks());
        let handouts = &self.handouts[index as usize];
        // We own block `index` now; the previous owner's store happened before its push,
        // which our pop synchronized with. No read-modify-write needed.
        handouts.store(handouts.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // Read first: in steady state the peaks do not move, and a load is cheaper than
        // a read-modify-write on a shared cache line.
        if in_use > self.window_peak.load(Ordering::Relaxed) {
            self.window_peak.fetch_max(in_use, Ordering::Relaxed);
            if in_use > self.peak_in_use.load(Ordering::Relaxed) {
                self.peak_in_use.fetch_max(in_use, Ordering::Relaxed);
            }
        }
        Some(index)
    }

    /// Takes block `index` back from a dropped [`Block`] and gives up the block's share
    /// of the reference count (which may free the state).
    ///
    /// # Safety
    ///
    /// `ptr` is the state the block came from, the block is being dropped (its owner
    /// gives `index` back exactly once), and the caller does not use `ptr` afterwards.
    pub(super) unsafe fn give_back(ptr: NonNull<Self>, index: u32) {
        {
            // SAFETY: The block's share of the count keeps the state alive until the
            // `release` below.
            let inner = unsafe { ptr.as_ref() };
            inner.warm.push(index);
            inner.wake_waiter();
        }
        // SAFETY: The block held one share (taken in `take_free`) and gives it up once;
        // `inner` is out of scope.
        unsafe { shared::release(ptr, 1) };
    }

    fn wake_waiter(&self) {
        // The push before this was a sequentially consistent read-modify-write of the
        // free list's head, and a waiter increments `waiters` (SeqCst) before its next
        // `try_acquire` loads that head (SeqCst). In the single total order of these
        // operations either our load comes after the waiter's increment and sees it, or
        // the waiter's load of the head comes after our push and sees the block. So no
        // wake-up is lost, and the common case costs a plain load.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .wait_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.wait_cond.notify_one();
        }
    }

    /// Commits cold blocks until `target` are committed or none is cold. Returns how many.
    fn prefault_to(&self, target: usize) -> usize {
        let mut done = 0;
        while self.committed.load(Ordering::Relaxed) < target {
            let Some(index) = self.cold.pop() else { break };
            // SAFETY: `index` came out of a free list, so we own the block: no `Block`
            // holds it and nobody else can take it until we push it back.
            unsafe { self.arena.populate(index) };
            self.committed.fetch_add(1, Ordering::Relaxed);
            self.warm.push(index);
            self.wake_waiter();
            done += 1;
        }
        done
    }

    /// Gives back the pages of warm blocks while more than `target` are committed.
    /// Returns how many blocks were released.
    fn release_beyond(&self, target: usize) -> usize {
        if self.releasing_disabled.load(Ordering::SeqCst) {
            return 0;
        }
        // Each pass releases a block and lowers `committed`, so the loop ends by itself;
        // the budget only guards against a bug there.
        let mut budget = self.arena.blocks();
        let mut done = 0;
        while budget > 0 && self.committed.load(Ordering::Relaxed) > target {
            budget -= 1;
            let Some(index) = self.warm.pop() else { break };
            // SAFETY: `index` came out of a free list, so we own the block: no `Block`
            // holds it and no reference into it exists.
            let released = unsafe { self.arena.release(index) };
            if let Err(err) = released {
                tracing::warn!(error = %err, index, "Releasing a free block's memory failed");
                self.warm.push(index);
                self.wake_waiter();
                break;
            }
            // After the release, so a reader that sees the new generation also sees the
            // pages gone (see `ZeroCopySender`). Only `adapt`, under the predictor's lock,
            // writes generations; 0 is skipped, it means "not registered" to a sender.
            let generation = &self.generations[index as usize];
            let next = generation.load(Ordering::Relaxed).wrapping_add(1).max(1);
            generation.store(next, Ordering::Release);
            self.committed.fetch_sub(1, Ordering::Relaxed);
            self.cold.push(index);
            self.wake_waiter();
            done += 1;
        }
        if done > 0 {
            self.blocks_released
                .fetch_add(done as u64, Ordering::Relaxed);
            self.release_epoch.fetch_add(1, Ordering::Release);
        }
        done
    }

    /// Heap bytes of the bookkeeping beside the arena.
    fn metadata_bytes(&self) -> usize {
        self.warm.metadata_bytes()
            + self.cold.metadata_bytes()
            + size_of_val(&*self.handouts)
            + size_of_val(&*self.generations)
            + size_of::<Self>()
    }

    /// Generation of block `index`: changes whenever its pages are released.
    pub(super) fn generation(&self, index: u32) -> u32 {
        self.generations[index as usize].load(Ordering::Acquire)
    }

    /// Changes after every `adapt` call that released blocks.
    pub(super) fn release_epoch(&self) -> u64 {
        self.release_epoch.load(Ordering::Acquire)
    }
}

impl fmt::Debug for BlockPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockPool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_blocks: usize, max_blocks: usize) -> PoolConfig {
        PoolConfig {
            block_size: 64 << 10,
            min_blocks,
            max_blocks,
            headroom: 1.0,
            ewma_alpha: 1.0,
            shrink_after_steps: 2,
            huge_pages: false,
            prefault: true,
        }
    }

    #[test]
    fn prefaults_min_blocks_at_creation() {
        let pool = BlockPool::new(config(3, 8)).unwrap();
        let stats = pool.stats();
        assert_eq!(stats.target_blocks, 3);
        assert_eq!(stats.bytes_committed_estimate, 3 * (64 << 10));
        assert_eq!(stats.blocks_in_use, 0);
        assert_eq!(stats.memory_overhead_ratio, 3.0);
    }

    #[test]
    fn adapt_grows_then_releases_after_hysteresis() {
        let pool = BlockPool::new(config(1, 16)).unwrap();
        let blocks: Vec<_> = (0..10).map(|_| pool.try_acquire().unwrap()).collect();
        let step = pool.adapt();
        assert_eq!(step.change, Change::Grow);
        assert_eq!((step.demand, step.target), (10, 10));
        assert_eq!(pool.stats().memory_overhead_ratio, 0.0);
        drop(blocks);
        // The blocks were in flight during this window: demand 10 once more.
        let first = pool.adapt();
        assert_eq!((first.demand, first.change), (10, Change::Hold));
        // Demand 0 (the peak restarts at the in-flight count each call): one calm step
        // holds, the second shrinks.
        let calm = pool.adapt();
        assert_eq!(
            (calm.demand, calm.change, calm.blocks_released),
            (0, Change::Hold, 0)
        );
        assert_eq!(pool.stats().bytes_committed_estimate, 10 * (64 << 10));
        let second = pool.adapt();
        assert_eq!(second.change, Change::Shrink);
        assert_eq!(second.target, 1);
        assert_eq!(second.blocks_released, 9);
        let stats = pool.stats();
        assert_eq!(stats.bytes_committed_estimate, 64 << 10);
        assert_eq!(stats.blocks_released_total, 9);
        assert_eq!(pool.inner.release_epoch(), 1);
        // Released blocks are still handed out, and read as zeros.
        let again: Vec<_> = (0..16).map(|_| pool.try_acquire().unwrap()).collect();
        assert!(pool.try_acquire().is_none());
        drop(again);
    }

    #[test]
    fn settle_gives_idle_blocks_back_at_once() {
        let pool = BlockPool::new(config(1, 16)).unwrap();
        let mut blocks: Vec<_> = (0..10).map(|_| pool.try_acquire().unwrap()).collect();
        assert_eq!(pool.adapt().target, 10);
        blocks.truncate(4);
        let step = pool.settle();
        assert_eq!((step.demand, step.target), (4, 4));
        assert_eq!((step.change, step.blocks_released), (Change::Shrink, 6));
        let stats = pool.stats();
        assert_eq!(stats.bytes_committed_estimate, 4 * (64 << 10));
        assert_eq!(stats.memory_overhead_ratio, 0.0);
        // The next window does not see the old peak of 10.
        assert_eq!(pool.adapt().change, Change::Hold);
        assert_eq!(pool.stats().target_blocks, 4);
        drop(blocks);
        assert_eq!(pool.settle().target, 1);
    }

    #[test]
    fn released_block_reads_zero_and_changes_generation() {
        let pool = BlockPool::new(config(1, 2)).unwrap();
        let mut a = pool.try_acquire().unwrap();
        let mut b = pool.try_acquire().unwrap();
        a.as_mut_full().fill(0xAB);
        b.as_mut_full().fill(0xCD);
        let (ia, ib) = (a.index(), b.index());
        let (ga, gb) = (pool.inner.generation(ia), pool.inner.generation(ib));
        assert_eq!(pool.adapt().target, 2);
        drop((a, b));
        assert_eq!(pool.adapt().change, Change::Hold);
        assert_eq!(pool.adapt().change, Change::Hold);
        assert_eq!(pool.adapt().blocks_released, 1);
        // One of the two was released; the other stays committed as the one target block.
        let changed = [(ia, ga), (ib, gb)]
            .iter()
            .filter(|(i, g)| pool.inner.generation(*i) != *g)
            .count();
        assert_eq!(changed, 1);
        let mut seen_zero = false;
        let blocks: Vec<_> = (0..2).map(|_| pool.try_acquire().unwrap()).collect();
        for mut block in blocks {
            let full = block.as_mut_full();
            if full.iter().all(|b| *b == 0) {
                seen_zero = true;
            } else {
                assert!(full.iter().all(|b| *b == 0xAB) || full.iter().all(|b| *b == 0xCD));
            }
        }
        assert!(seen_zero);
    }

    #[test]
    fn iovecs_switch_releasing_off() {
        let pool = BlockPool::new(config(1, 4)).unwrap();
        let iovecs = pool.iovecs();
        assert_eq!(iovecs.len(), 4);
        assert_eq!(
            iovecs[1].iov_base as usize - iovecs[0].iov_base as usize,
            64 << 10
        );
        let blocks: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
        pool.adapt();
        drop(blocks);
        for _ in 0..5 {
            assert_eq!(pool.adapt().blocks_released, 0);
        }
        assert_eq!(pool.stats().bytes_committed_estimate, 4 * (64 << 10));
    }

    #[test]
    fn write_appends_until_full() {
        use std::io::Write as _;
        let pool = BlockPool::new(config(1, 1)).unwrap();
        let mut block = pool.try_acquire().unwrap();
        assert!(block.is_empty());
        block.write_all(b"hello ").unwrap();
        block.write_all(b"world").unwrap();
        assert_eq!(&block[..], b"hello world");
        let big = vec![1u8; 64 << 10];
        let err = block.write_all(&big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(block.len(), 64 << 10);
        block.set_len(5);
        assert_eq!(&block[..], b"hello");
    }

    #[test]
    #[should_panic(expected = "Block length 65537 exceeds its capacity 65536")]
    fn set_len_beyond_capacity_panics() {
        let pool = BlockPool::new(config(1, 1)).unwrap();
        pool.try_acquire().unwrap().set_len((64 << 10) + 1);
    }
}
