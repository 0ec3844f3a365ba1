//! Keeping QEMU's idea of the link honest during a migration through the agent.
//!
//! QEMU writes its migration stream into the agent's local socket and sizes its last
//! round (the downtime) from the rate at which that socket drains. The agent drains it
//! into blocks that may wait for the link, so unpaced QEMU sees a rate far above the
//! link's, stops the guest too early, and the buffered blocks cross the link while the
//! guest is stopped. [`LinkPacer`] sets QEMU's `max-bandwidth` from two measurements:
//! the rate at which the stream's bytes really left (counted by the AMST sender) and the
//! backlog, what QEMU has written that has not left yet. Beyond [`BACKLOG_TARGET`] of
//! link time the link is the limit: the cap drops below the rate so the backlog drains
//! within [`DRAIN_TIME`]. Within it the pipe has room, so the cap never drops (QEMU may
//! have sent little because it was busy, e.g. syncing its dirty bitmap between rounds,
//! not because the link was slow) and grows with [`HEADROOM`] when QEMU used it all, so
//! a link that speeds up is found again. QEMU lifts the limit itself for the final
//! stop-and-copy, which then finds the pipe nearly empty.

use std::time::{Duration, Instant};

/// How often the cap follows the measured rate.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The cap as a multiple of the measured rate while the backlog is small.
const HEADROOM: f64 = 1.25;
/// Backlog allowed, as link time (the rate times this).
pub const BACKLOG_TARGET: Duration = Duration::from_millis(100);
/// A larger backlog is drained over this long.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Never cap below this (bytes/s): a stall must not throttle QEMU to nothing.
pub const FLOOR: u64 = 16 << 20;

/// Derives QEMU's `max-bandwidth` from the bytes QEMU wrote and the AMST sender sent.
#[derive(Debug, Default)]
pub struct LinkPacer {
    last: Option<(Instant, u64)>,
    cap: f64,
}

impl LinkPacer {
    /// Feeds the stream bytes `sent` on the data streams and `written` by QEMU by
    /// `now`; returns a new cap in bytes/s once per [`INTERVAL`].
    pub fn cap(&mut self, now: Instant, sent: u64, written: u64) -> Option<u64> {
        let Some((then, before)) = self.last else {
            self.last = Some((now, sent));
            return None;
        };
        let dt = now.saturating_duration_since(then);
        if dt < INTERVAL {
            return None;
        }
        self.last = Some((now, sent));
        let rate = sent.saturating_sub(before) as f64 / dt.as_secs_f64();
        let backlog = written.saturating_sub(sent) as f64;
        let allowed = rate * BACKLOG_TARGET.as_secs_f64();
        self.cap = if backlog <= allowed {
            self.cap.max(rate * HEADROOM)
        } else {
            // Drain the excess, but keep QEMU moving at half the rate at least.
            (rate - (backlog - allowed) / DRAIN_TIME.as_secs_f64()).max(rate / 2.0)
        }
        .max(FLOOR as f64);
        // Truncation is fine: a cap in whole bytes per second.
        Some(self.cap as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn follows_the_rate_with_headroom_while_the_pipe_has_room() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        assert_eq!(
            pacer.cap(t0, 0, 0),
            None,
            "the first call only starts the clock"
        );
        assert_eq!(
            pacer.cap(t0 + Duration::from_millis(500), 50 * MIB, 50 * MIB),
            None
        );
        // 100 MiB in 1 s, 5 MiB behind (under 100 ms of link): cap 125 MiB/s.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(1), 100 * MIB, 105 * MIB),
            Some(125 * MIB)
        );
        // 200 MiB in the next 2 s: still 100 MiB/s.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(3), 300 * MIB, 300 * MIB),
            Some(125 * MIB)
        );
        // QEMU used all of it: 125 MiB/s, nothing waiting: the cap grows.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(4), 425 * MIB, 425 * MIB),
            Some(125 * MIB * 5 / 4)
        );
    }

    #[test]
    fn a_pause_of_qemu_with_the_pipe_empty_keeps_the_cap() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        pacer.cap(t0, 0, 0);
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(1), 100 * MIB, 100 * MIB),
            Some(125 * MIB)
        );
        // 4 s in which QEMU synced its bitmap and sent 10 MiB: the link was not the limit.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(5), 110 * MIB, 110 * MIB),
            Some(125 * MIB)
        );
    }

    #[test]
    fn a_backlog_beyond_the_target_is_drained() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        pacer.cap(t0, 0, 0);
        // 100 MiB/s, 40 MiB behind: 30 MiB over the 10 MiB allowed, drained in 1 s.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(1), 100 * MIB, 140 * MIB),
            Some(70 * MIB)
        );
        // 300 MiB behind: never below half the rate.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(2), 200 * MIB, 500 * MIB),
            Some(50 * MIB)
        );
    }

    #[test]
    fn a_stalled_stream_keeps_the_floor() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        pacer.cap(t0, 10, 10);
        // Nothing left while QEMU wrote 50 MiB: drained down to the floor.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(2), 10, 50 * MIB),
            Some(FLOOR)
        );
    }
}
