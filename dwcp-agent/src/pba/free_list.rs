//! A lock-free stack of block indices (Treiber stack over an index array), the pool's free
//! lists.
//!
//! The head is one 64-bit word: the top index in the low 16 bits and a tag in the high
//! 48 bits that every successful push and pop bumps. A thread that read the head, was
//! preempted while the top block was popped and pushed back, and then tries its
//! compare-and-swap sees a different tag and retries, so the ABA problem cannot link a
//! stale `next`. The tag would have to wrap (2^48 operations during one preemption) to
//! fool it.
//!
//! A pop and a push are each one load, one compare-and-swap and one access to the
//! per-index `next` array: no allocation, no lock, no counter.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// Index bits of the head word.
const INDEX_MASK: u64 = 0xFFFF;
/// "No block": the empty stack's top and the last block's `next`.
const NIL: u16 = u16::MAX;
/// Added to the head word on every change: the tag lives above the index bits.
const TAG_STEP: u64 = 1 << 16;

/// A lock-free LIFO of indices below `capacity` (at most 65 535). Each index may be in
/// the stack at most once: pushing an index twice is a bug of the caller (the pool hands
/// out an index only after popping it, so only the block's owner pushes it back).
pub(crate) struct FreeList {
    /// Tag (high 48 bits) and top index (low 16 bits, `NIL` when empty).
    head: AtomicU64,
    /// For each index in the stack, the index below it.
    next: Box<[AtomicU16]>,
}

impl FreeList {
    /// An empty stack for indices `0..capacity`.
    ///
    /// # Panics
    ///
    /// If `capacity` exceeds 65 535 (the pool validates at most 2^14 blocks).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            capacity < usize::from(NIL),
            "Free list capacity {capacity} does not fit 16-bit indices"
        );
        Self {
            head: AtomicU64::new(u64::from(NIL)),
            next: (0..capacity).map(|_| AtomicU16::new(NIL)).collect(),
        }
    }

    /// Pushes `index`, which the caller owns (it is not in the stack).
    ///
    /// The successful compare-and-swap is sequentially consistent: a caller that then
    /// loads a waiter count with `SeqCst` either sees a waiter that registered, or that
    /// waiter's next [`FreeList::pop`] sees this push.
    pub(crate) fn push(&self, index: u32) {
        debug_assert!(
            (index as usize) < self.next.len(),
            "Index {index} out of range"
        );
        // Indices are below `capacity` < 2^16 (checked in `new`, owned by the caller).
        let index = index as u16;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Only this thread touches `next[index]` until the CAS publishes it (the
            // caller owns `index`); the release half of the CAS orders it before the push.
            self.next[usize::from(index)].store(top(head), Ordering::Relaxed);
            let new = (head & !INDEX_MASK).wrapping_add(TAG_STEP) | u64::from(index);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// Pops the most recently pushed index, or `None` when the stack is empty.
    pub(crate) fn pop(&self) -> Option<u32> {
        // SeqCst: the waiter's side of the pairing described on `push`.
        let mut head = self.head.load(Ordering::SeqCst);
        loop {
            let index = top(head);
            if index == NIL {
                return None;
            }
            // May be stale if `index` was popped meanwhile: then the tag moved and the CAS
            // below fails. The acquire load of `head` ordered the pusher's store before.
            let below = self.next[usize::from(index)].load(Ordering::Relaxed);
            let new = (head & !INDEX_MASK).wrapping_add(TAG_STEP) | u64::from(below);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(u32::from(index)),
                Err(current) => head = current,
            }
        }
    }

    /// Whether the stack is empty at this instant.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        top(self.head.load(Ordering::SeqCst)) == NIL
    }

    /// Heap bytes of the `next` array (for the pool's metadata figure).
    pub(crate) fn metadata_bytes(&self) -> usize {
        size_of_val(&*self.next)
    }
}

/// The top index of a head word.
fn top(head: u64) -> u16 {
    // Masked to 16 bits, so the conversion is exact.
    (head & INDEX_MASK) as u16
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize},
        thread,
    };

    use super::*;

    #[test]
    fn pops_in_lifo_order_then_none() {
        let list = FreeList::new(4);
        assert!(list.is_empty());
        assert_eq!(list.pop(), None);
        for i in 0..4 {
            list.push(i);
        }
        assert_eq!(
            (0..5).map(|_| list.pop()).collect::<Vec<_>>(),
            [Some(3), Some(2), Some(1), Some(0), None]
        );
        list.push(2);
        assert_eq!(list.pop(), Some(2));
        assert!(list.is_empty());
    }

    #[test]
    fn tag_moves_on_every_change() {
        let list = FreeList::new(2);
        let before = list.head.load(Ordering::Relaxed);
        list.push(1);
        assert_eq!(list.pop(), Some(1));
        let after = list.head.load(Ordering::Relaxed);
        // Same top (empty), different word: a stale CAS from before would fail.
        assert_eq!(top(before), top(after));
        assert_ne!(before, after);
    }

    #[test]
    #[should_panic(expected = "does not fit 16-bit indices")]
    fn refuses_more_indices_than_16_bits_hold() {
        FreeList::new(usize::from(NIL));
    }

    /// Threads pop and push as fast as they can; an ownership flag per index catches any
    /// index handed to two threads at once, and every index is back at the end.
    #[test]
    fn concurrent_pops_never_share_an_index() {
        const INDICES: usize = 8;
        const THREADS: usize = 6;
        const ROUNDS: usize = 50_000;
        let list = FreeList::new(INDICES);
        for i in 0..INDICES as u32 {
            list.push(i);
        }
        let owned: Vec<AtomicBool> = (0..INDICES).map(|_| AtomicBool::new(false)).collect();
        let taken = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let mut held = Vec::with_capacity(2);
                    for round in 0..ROUNDS {
                        // Hold one or two at a time so the stack's order keeps changing.
                        for _ in 0..=(round % 2) {
                            if let Some(i) = list.pop() {
                                assert!(
                                    !owned[i as usize].swap(true, Ordering::AcqRel),
                                    "Index {i} handed out twice"
                                );
                                taken.fetch_add(1, Ordering::Relaxed);
                                held.push(i);
                            }
                        }
                        for i in held.drain(..) {
                            owned[i as usize].store(false, Ordering::Release);
                            list.push(i);
                        }
                    }
                });
            }
        });
        assert!(taken.load(Ordering::Relaxed) > ROUNDS);
        let mut back: Vec<u32> = std::iter::from_fn(|| list.pop()).collect();
        back.sort_unstable();
        assert_eq!(back, (0..INDICES as u32).collect::<Vec<_>>());
    }
}
