//! Which block goes next, on whichever stream asks: new blocks in order, blocks given
//! back by failed streams first. Tracks acknowledgements to know when the transfer is
//! complete.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
};

/// Shared between all stream workers of one transfer.
#[derive(Debug)]
pub struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    total: u64,
    next_new: u64,
    retry: VecDeque<u64>,
    /// Acknowledged or already held by the receiver.
    done: Vec<bool>,
    remaining: u64,
    resent: u64,
    stopped: bool,
}

impl Scheduler {
    /// A transfer of `total` blocks of which the receiver already holds `have`
    /// (inclusive ranges; out-of-range entries are ignored).
    pub fn new(total: u64, have: &[(u64, u64)]) -> Self {
        let len = usize::try_from(total).unwrap_or(usize::MAX);
        let mut done = vec![false; len];
        for &(start, end) in have {
            for seq in start..=end.min(total.saturating_sub(1)) {
                if let Some(slot) = done.get_mut(usize::try_from(seq).unwrap_or(usize::MAX)) {
                    *slot = true;
                }
            }
        }
        let remaining = done.iter().filter(|d| !**d).count() as u64;
        Self {
            state: Mutex::new(State {
                total,
                next_new: 0,
                retry: VecDeque::new(),
                done,
                remaining,
                resent: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only plain counters live behind this lock; a panicking holder leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next block to send, waiting while every block is handed out but some are not
    /// yet acknowledged (one may come back from a failed stream). `None` once all are
    /// acknowledged or the transfer was stopped.
    pub fn next(&self) -> Option<u64> {
        let mut s = self.lock();
        loop {
            if s.stopped || s.remaining == 0 {
                return None;
            }
            while let Some(seq) = s.retry.pop_front() {
                if !s.is_done(seq) {
                    s.resent += 1;
                    return Some(seq);
                }
            }
            while s.next_new < s.total {
                let seq = s.next_new;
                s.next_new += 1;
                if !s.is_done(seq) {
                    return Some(seq);
                }
            }
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Records an acknowledgement; duplicates are ignored.
    pub fn ack(&self, seq: u64) {
        let mut s = self.lock();
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| s.done.get_mut(i)) else {
            return;
        };
        if !*slot {
            *slot = true;
            s.remaining -= 1;
            if s.remaining == 0 {
                self.changed.notify_all();
            }
        }
    }

    /// Returns unacknowledged blocks of a failed stream for resending elsewhere.
    pub fn give_back(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut s = self.lock();
        s.retry.extend(seqs);
        self.changed.notify_all();
    }

    /// Stops the transfer: [`Self::next`] returns `None` everywhere.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// Whether every block is acknowledged.
    pub fn is_complete(&self) -> bool {
        self.lock().remaining == 0
    }

    /// Waits up to `timeout` for completion; returns whether the transfer is complete.
    pub fn wait_complete(&self, timeout: std::time::Duration) -> bool {
        let s = self.lock();
        if s.remaining == 0 {
            return true;
        }
        let (s, _) = self
            .changed
            .wait_timeout(s, timeout)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.remaining == 0
    }

    /// Blocks not yet acknowledged.
    pub fn remaining(&self) -> u64 {
        self.lock().remaining
    }

    /// Blocks handed out again after a failure.
    pub fn resent(&self) -> u64 {
        self.lock().resent
    }
}

impl State {
    fn is_done(&self, seq: u64) -> bool {
        usize::try_from(seq)
            .ok()
            .and_then(|i| self.done.get(i))
            .copied()
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn hands_out_in_order_skipping_held_blocks() {
        let s = Scheduler::new(6, &[(1, 2)]);
        assert_eq!(s.remaining(), 4);
        assert_eq!(
            [s.next(), s.next(), s.next(), s.next()],
            [Some(0), Some(3), Some(4), Some(5)]
        );
        for seq in [0, 3, 4, 5, 5] {
            s.ack(seq);
        }
        assert!(s.is_complete());
        assert_eq!(s.next(), None);
    }

    #[test]
    fn given_back_blocks_come_first_and_count_as_resent() {
        let s = Scheduler::new(4, &[]);
        let (a, b) = (s.next(), s.next());
        assert_eq!((a, b), (Some(0), Some(1)));
        s.ack(0);
        s.give_back([1, 0]);
        assert_eq!(s.next(), Some(1));
        assert_eq!(s.next(), Some(2));
        assert_eq!(s.resent(), 1);
    }

    #[test]
    fn waiting_worker_wakes_for_returned_block_or_completion() {
        let s = Arc::new(Scheduler::new(1, &[]));
        assert_eq!(s.next(), Some(0));
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.next())
        };
        s.give_back([0]);
        assert_eq!(waiter.join().unwrap(), Some(0));
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.next())
        };
        s.ack(0);
        assert_eq!(waiter.join().unwrap(), None);
    }
}
