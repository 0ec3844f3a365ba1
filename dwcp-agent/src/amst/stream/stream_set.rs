//! The data streams of one streamed transfer as numbered slots: growing opens streams in
//! the free slots below the wanted count (all connections at once), shedding is the
//! streams at or above the wanted count noticing it and finishing their in-flight blocks.
//!
//! Slot `i` runs stream `i`, so "streams at or above `n` stop" sheds exactly the newest
//! ones and growing back refills the lowest free slots.
//!
//! Also here: [`reorder_window`], which sizes the receiver's reorder window for the most
//! streams a transfer may use.

use std::thread::JoinHandle;

use super::receive;
use crate::amst::{AmstError, connect::Connection};

/// The stream threads of one transfer, by slot.
#[derive(Debug, Default)]
pub(super) struct StreamSet {
    slots: Vec<Option<JoinHandle<()>>>,
    opened: usize,
}

impl StreamSet {
    /// Slots below `n` with no running stream (never used, shed or failed).
    pub(super) fn free_below(&self, n: usize) -> Vec<usize> {
        (0..n)
            .filter(|&i| {
                self.slots
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_none_or(JoinHandle::is_finished)
            })
            .collect()
    }

    /// Opens streams in the free slots below `n`: `connect(k)` opens `k` connections (at
    /// once), `start(slot, connection)` runs one on its own thread. Returns how many
    /// started. Stops at the first failure, with the streams started so far running.
    pub(super) fn grow_to(
        &mut self,
        n: usize,
        connect: impl FnOnce(usize) -> Vec<Result<Connection, AmstError>>,
        mut start: impl FnMut(usize, Connection) -> Result<JoinHandle<()>, AmstError>,
    ) -> Result<usize, AmstError> {
        let free = self.free_below(n);
        if free.is_empty() {
            return Ok(0);
        }
        let connected = connect(free.len());
        let mut started = 0;
        for (slot, conn) in free.into_iter().zip(connected) {
            let handle = start(slot, conn?)?;
            if self.slots.len() <= slot {
                self.slots.resize_with(slot + 1, || None);
            }
            if let Some(old) = self.slots[slot].replace(handle) {
                // Finished (checked by `free_below`): this only reaps the thread.
                let _ = old.join();
            }
            self.opened += 1;
            started += 1;
        }
        Ok(started)
    }

    /// Streams running now.
    pub(super) fn alive(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Streams opened over the transfer, counting a slot's successive streams apart.
    pub(super) fn opened(&self) -> usize {
        self.opened
    }

    /// Waits for every stream thread to end.
    pub(super) fn join(self) {
        for handle in self.slots.into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

/// The reorder window to ask for: two windows per stream for `streams` streams, at
/// least 8 blocks, at most what a receiver grants ([`receive::MAX_WINDOW`] blocks and
/// [`receive::MAX_REORDER_BYTES`]).
pub(super) fn reorder_window(streams: usize, window: usize, block_size: usize) -> u64 {
    let by_memory = receive::MAX_REORDER_BYTES / (block_size.max(1) as u64);
    let wanted = (streams as u64)
        .saturating_mul(window as u64)
        .saturating_mul(2);
    // MAX_WINDOW (1024) is above 8, so the clamp's bounds are ordered.
    wanted.clamp(8, receive::MAX_WINDOW).min(by_memory.max(1))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        thread,
    };

    use super::*;

    /// A stream thread that runs until `stop` is set.
    fn parked(stop: &Arc<AtomicBool>) -> JoinHandle<()> {
        let stop = Arc::clone(stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                thread::park_timeout(std::time::Duration::from_millis(5));
            }
        })
    }

    #[test]
    fn grows_into_free_slots_and_reuses_finished_ones() {
        let mut set = StreamSet::default();
        let first = Arc::new(AtomicBool::new(false));
        let asked = std::cell::Cell::new(0);
        let mut slots_started = Vec::new();
        // Slots are filled by hand here; `grow_to` with real connections is exercised by
        // the stream transfer tests (tests/stream_transfer.rs).
        for slot in set.free_below(3) {
            slots_started.push(slot);
            set.slots.push(Some(parked(&first)));
            set.opened += 1;
        }
        assert_eq!(slots_started, [0, 1, 2]);
        assert_eq!(set.alive(), 3);
        assert!(set.free_below(3).is_empty());
        assert_eq!(set.free_below(5), [3, 4]);
        // Shed: the streams end; their slots become free again.
        first.store(true, Ordering::Release);
        while set.alive() > 0 {
            thread::yield_now();
        }
        assert_eq!(set.free_below(2), [0, 1]);
        // Growing with a failing connection reports the error and starts nothing.
        let err = set
            .grow_to(
                2,
                |k| {
                    asked.set(k);
                    (0..k)
                        .map(|_| Err(AmstError::Invalid("refused".into())))
                        .collect()
                },
                |_, _| unreachable!("nothing connected"),
            )
            .unwrap_err();
        assert_eq!(asked.get(), 2);
        assert!(matches!(err, AmstError::Invalid(_)));
        assert_eq!(set.opened(), 3);
        set.join();
    }

    #[test]
    fn reorder_window_covers_the_streams_within_what_a_receiver_grants() {
        // Two windows per stream.
        assert_eq!(reorder_window(4, 4, 1 << 20), 32);
        // Never below 8 blocks.
        assert_eq!(reorder_window(1, 1, 1 << 20), 8);
        // `auto` up to 256 streams: the receiver's block limit.
        assert_eq!(reorder_window(256, 4, 64 << 10), receive::MAX_WINDOW);
        // Large blocks: the receiver's memory limit (1 GiB / 16 MiB = 64 blocks).
        assert_eq!(reorder_window(256, 4, 16 << 20), 64);
    }
}
