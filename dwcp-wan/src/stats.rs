//! What the emulator did to the packets of each direction: counters the data-path threads
//! bump with relaxed atomics, a per-second series of bytes delivered, and the snapshot
//! types callers read.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one direction did, as of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets delivered to the far end.
    pub packets: u64,
    /// Bytes delivered (IP packets, headers included: what the rate counts).
    pub bytes: u64,
    /// Packets lost at random (the profile's loss).
    pub dropped_loss: u64,
    /// Packets tail-dropped because the queue was full.
    pub dropped_queue: u64,
    /// The most bytes that waited for the link at once (never above the queue limit).
    pub peak_queue_bytes: u64,
    /// Bytes delivered in each whole second since the link started (index 0 is the first).
    pub bytes_per_second: Vec<u64>,
}

impl DirectionStats {
    /// Packets that arrived at the emulator in this direction (delivered, lost or dropped;
    /// those still in flight are not counted yet).
    pub fn packets_seen(&self) -> u64 {
        self.packets + self.dropped_loss + self.dropped_queue
    }
}

/// Both directions, as of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets from host A to host B.
    pub a_to_b: DirectionStats,
    /// Packets from host B to host A.
    pub b_to_a: DirectionStats,
    /// Packets the router's TUN device handed over that were not IPv4 or not addressed
    /// to either side (they are dropped; normally zero).
    pub unroutable: u64,
}

/// The live counters of one direction.
#[derive(Default)]
pub(crate) struct DirectionCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_loss: AtomicU64,
    pub dropped_queue: AtomicU64,
    pub peak_queue_bytes: AtomicU64,
    pub bytes_per_second: Mutex<Vec<u64>>,
}

impl DirectionCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished second's bytes (and zeros for any idle seconds before it).
    pub fn close_second(&self, second: usize, bytes: u64) {
        let mut series = self
            .bytes_per_second
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if series.len() <= second {
            series.resize(second, 0);
            series.push(bytes);
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped_loss: self.dropped_loss.load(Ordering::Relaxed),
            dropped_queue: self.dropped_queue.load(Ordering::Relaxed),
            peak_queue_bytes: self.peak_queue_bytes.load(Ordering::Relaxed),
            bytes_per_second: self
                .bytes_per_second
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
        }
    }
}

/// The live counters of the link.
#[derive(Default)]
pub(crate) struct LinkCounters {
    pub a_to_b: DirectionCounters,
    pub b_to_a: DirectionCounters,
    pub unroutable: AtomicU64,
}

impl LinkCounters {
    /// A copy of all counters.
    pub fn snapshot(&self) -> LinkStats {
        LinkStats {
            a_to_b: self.a_to_b.snapshot(),
            b_to_a: self.b_to_a.snapshot(),
            unroutable: self.unroutable.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_fill_idle_gaps_with_zeros() {
        let counters = DirectionCounters::default();
        counters.close_second(0, 10);
        counters.close_second(3, 40);
        counters.close_second(3, 99);
        assert_eq!(counters.snapshot().bytes_per_second, [10, 0, 0, 40]);
    }
}
