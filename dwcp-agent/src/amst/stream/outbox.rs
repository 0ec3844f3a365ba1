//! Blocks of a streamed transfer on their way from the reader to the data streams.
//!
//! A stream source cannot be read twice, so every block stays in its pool block until
//! the receiver acknowledges it: blocks a failed stream still owed come back here and go
//! out again first. The reader is held back while the next block would fall outside the
//! receiver's reorder window (`delivered + window`), which bounds the receiver's memory
//! whatever order the streams deliver in.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::Duration,
};

use crate::pba::Block;

/// One block of the stream, with its place in it.
#[derive(Debug)]
pub struct Outgoing {
    /// Position in the stream, from 0.
    pub seq: u64,
    /// Byte offset of its first byte in the stream.
    pub offset: u64,
    /// The payload as sent (its length is the block's length).
    pub block: Block,
    /// How the payload is encoded, and its length once decoded.
    pub coding: (crate::protocol::frame::Codec, u32),
    /// The payload's XXH3-128, taken once by the reader (for a raw block it is also
    /// the block's entry in the stream digest).
    pub hash: crate::protocol::frame::PayloadHash,
}

/// Shared by the reader and every data stream of one streamed transfer.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    changed: Condvar,
    window: u64,
}

#[derive(Debug, Default)]
struct State {
    fresh: VecDeque<Outgoing>,
    retry: VecDeque<Outgoing>,
    /// Blocks produced so far (the next block's sequence number).
    produced: u64,
    /// Blocks produced and not yet acknowledged.
    outstanding: u64,
    /// Blocks the receiver has delivered in order (from acknowledgements).
    delivered: u64,
    source_done: bool,
    stopped: bool,
    resent: u64,
}

/// Fresh blocks read ahead of the streams: enough to keep every stream busy.
const READ_AHEAD: usize = 2;

impl Outbox {
    /// An outbox for a receiver that reorders at most `window` blocks.
    pub fn new(window: u64) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters and queues: a panicking holder leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reader: waits until one more block may be produced; returns its sequence number,
    /// or `None` once the transfer was stopped.
    pub fn reserve(&self) -> Option<u64> {
        let mut s = self.lock();
        loop {
            if s.stopped {
                return None;
            }
            if s.fresh.len() < READ_AHEAD && s.produced < s.delivered + self.window {
                return Some(s.produced);
            }
            s = self.wait(s);
        }
    }

    /// Reader: queues the block reserved last.
    pub fn push(&self, block: Outgoing) {
        let mut s = self.lock();
        s.produced = block.seq + 1;
        s.outstanding += 1;
        s.fresh.push_back(block);
        self.changed.notify_all();
    }

    /// Reader: the source is exhausted.
    pub fn finish(&self) {
        self.lock().source_done = true;
        self.changed.notify_all();
    }

    /// Stream: the next block to send (a given-back one first), waiting for one;
    /// `None` once everything is acknowledged, the transfer was stopped, or `abandon`
    /// says the asking stream is gone (checked whenever [`Outbox::nudge`] is called).
    pub fn take(&self, abandon: impl Fn() -> bool) -> Option<Outgoing> {
        let mut s = self.lock();
        loop {
            if s.stopped || (s.source_done && s.outstanding == 0) || abandon() {
                return None;
            }
            if let Some(block) = s.retry.pop_front() {
                s.resent += 1;
                return Some(block);
            }
            if let Some(block) = s.fresh.pop_front() {
                self.changed.notify_all();
                return Some(block);
            }
            s = self.wait(s);
        }
    }

    /// Wakes every waiter to re-check its condition.
    pub fn nudge(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Stream: a block was acknowledged; the receiver has delivered `delivered` blocks.
    pub fn ack(&self, delivered: u64) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        s.delivered = s.delivered.max(delivered);
        self.changed.notify_all();
    }

    /// Stream: blocks a failed stream still owed, to be sent again.
    pub fn give_back(&self, blocks: impl IntoIterator<Item = Outgoing>) {
        let mut s = self.lock();
        s.retry.extend(blocks);
        self.changed.notify_all();
    }

    /// Stops everyone (failure); blocks still queued are dropped back to their pool.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stopped = true;
        s.fresh.clear();
        s.retry.clear();
        self.changed.notify_all();
    }

    /// True once the source is exhausted and every block is acknowledged.
    pub fn is_complete(&self) -> bool {
        let s = self.lock();
        s.source_done && s.outstanding == 0
    }

    /// Waits up to `timeout` for completion.
    pub fn wait_complete(&self, timeout: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| {
                !(s.source_done && s.outstanding == 0) && !s.stopped
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.source_done && s.outstanding == 0
    }

    /// Blocks produced so far.
    pub fn produced(&self) -> u64 {
        self.lock().produced
    }

    /// Blocks sent more than once.
    pub fn resent(&self) -> u64 {
        self.lock().resent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pba::{BlockPool, PoolConfig};

    fn pool() -> BlockPool {
        BlockPool::new(PoolConfig {
            block_size: 64 << 10,
            min_blocks: 1,
            max_blocks: 16,
            prefault: false,
            ..PoolConfig::default()
        })
        .unwrap()
    }

    fn block(pool: &BlockPool, seq: u64) -> Outgoing {
        let block = pool.try_acquire().unwrap();
        Outgoing {
            seq,
            offset: seq * 10,
            coding: (crate::protocol::frame::Codec::None, block.len() as u32),
            hash: crate::protocol::frame::payload_hash(&block),
            block,
        }
    }

    #[test]
    fn reader_is_held_at_the_receivers_window_until_delivery_moves() {
        let pool = pool();
        let out = Outbox::new(2);
        for seq in 0..2 {
            assert_eq!(out.reserve(), Some(seq));
            out.push(block(&pool, seq));
            let b = out.take(|| false).unwrap();
            assert_eq!(b.seq, seq);
        }
        // Both acknowledged as received but not delivered: the window is still full.
        out.ack(0);
        out.ack(0);
        let s = out.lock();
        assert!(s.produced >= s.delivered + out.window);
        drop(s);
        out.ack(1);
        assert_eq!(out.reserve(), Some(2));
    }

    #[test]
    fn given_back_blocks_go_first_and_completion_needs_every_ack() {
        let pool = pool();
        let out = Outbox::new(8);
        let mut taken = Vec::new();
        for seq in 0..3 {
            assert_eq!(out.reserve(), Some(seq));
            out.push(block(&pool, seq));
            if seq == 0 {
                taken.push(out.take(|| false).unwrap());
            }
        }
        out.finish();
        out.give_back(taken);
        assert_eq!(out.take(|| false).unwrap().seq, 0, "Given-back block first");
        assert_eq!(out.take(|| false).unwrap().seq, 1);
        assert_eq!(out.resent(), 1);
        assert!(!out.is_complete());
        for _ in 0..3 {
            out.ack(3);
        }
        assert!(out.is_complete());
        assert!(out.take(|| false).is_none());
    }

    #[test]
    fn stop_releases_waiters_and_returns_blocks_to_the_pool() {
        let pool = pool();
        let out = std::sync::Arc::new(Outbox::new(4));
        out.reserve();
        out.push(block(&pool, 0));
        let _ = out.take(|| false);
        let waiter = {
            let out = std::sync::Arc::clone(&out);
            std::thread::spawn(move || out.take(|| false))
        };
        std::thread::sleep(Duration::from_millis(20));
        out.stop();
        assert!(waiter.join().unwrap().is_none());
        assert_eq!(out.reserve(), None);
    }
}
