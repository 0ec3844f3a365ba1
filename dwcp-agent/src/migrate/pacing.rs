//! Keeping QEMU's idea of the link honest during a migration through the agent.
//!
//! QEMU writes its migration stream into the agent's local socket and sizes its last
//! round (the downtime) from the rate at which that socket drains. The agent drains it
//! into blocks that may wait for the link, so unpaced QEMU sees a rate far above the
//! link's, stops the guest too early and the buffered blocks cross the link while the
//! guest is stopped. [`LinkPacer`] turns the rate at which the stream's bytes really
//! left (measured by the AMST sender) into QEMU's `max-bandwidth`, with headroom so that
//! a link that speeds up is found again. QEMU lifts the limit itself for the final
//! stop-and-copy.

use std::time::{Duration, Instant};

/// How often the cap follows the measured rate.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The cap as a multiple of the measured rate: room to find a faster link.
const HEADROOM: f64 = 1.25;
/// Never cap below this (bytes/s): a stall must not throttle QEMU to nothing.
pub const FLOOR: u64 = 16 << 20;

/// Derives QEMU's `max-bandwidth` from the bytes the AMST sender has sent so far.
#[derive(Debug, Default)]
pub struct LinkPacer {
    last: Option<(Instant, u64)>,
}

impl LinkPacer {
    /// Feeds the bytes sent by `now`; returns a new cap in bytes/s once per
    /// [`INTERVAL`].
    pub fn cap(&mut self, now: Instant, sent: u64) -> Option<u64> {
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
        // Truncation is fine: a cap in whole bytes per second.
        Some(((rate * HEADROOM) as u64).max(FLOOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_measured_rate_with_headroom_once_per_interval() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        assert_eq!(
            pacer.cap(t0, 0),
            None,
            "the first call only starts the clock"
        );
        assert_eq!(pacer.cap(t0 + Duration::from_millis(500), 50 << 20), None);
        // 100 MiB in 1 s: cap 125 MiB/s.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(1), 100 << 20),
            Some(125 << 20)
        );
        // 200 MiB in the next 2 s: still 100 MiB/s.
        assert_eq!(
            pacer.cap(t0 + Duration::from_secs(3), 300 << 20),
            Some(125 << 20)
        );
    }

    #[test]
    fn a_stalled_stream_keeps_the_floor() {
        let t0 = Instant::now();
        let mut pacer = LinkPacer::default();
        pacer.cap(t0, 10);
        assert_eq!(pacer.cap(t0 + Duration::from_secs(2), 10), Some(FLOOR));
    }
}
