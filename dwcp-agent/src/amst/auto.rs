//! Choosing the number of streams from what the link does (`--streams auto`).
//!
//! Start with a few streams; while adding streams raises goodput by a meaningful margin,
//! double them; when an addition does not pay, go back to the best count seen and
//! settle. The kernel's per-flow figures (eBPF, `tcp_probe` and `tcp_retransmit_skb`)
//! stop growth early and shed streams:
//! - **queueing**: the flows' mean smoothed RTT above twice the lowest seen in this
//!   transfer means the streams are filling a bottleneck queue: more streams only add
//!   delay, so growth stops (and a settled count sheds a quarter);
//! - **starved windows**: a mean congestion window under 4 segments means the link's
//!   bandwidth-delay product is split over too many streams (each one then recovers
//!   from a loss only by timeout): halve the count;
//! - **retransmissions**: once settled, a jump in retransmissions per MiB (streams
//!   fighting over the queue) sheds a quarter.
//!
//! A pure state machine: the sender feeds it one sample per interval and applies the
//! decision.

use std::time::Duration;

/// What to do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep the current count.
    Hold,
    /// Change to this many streams.
    Set(usize),
}

/// One measurement interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Payload bits per second over the interval.
    pub goodput_bps: f64,
    /// Retransmitted segments per MiB sent over the interval (kernel-measured), if known.
    pub retransmits_per_mib: Option<f64>,
    /// Mean smoothed RTT of the transfer's open flows (kernel-measured), if known.
    pub mean_srtt: Option<Duration>,
    /// Mean congestion window of the transfer's open flows, in segments, if known.
    pub mean_cwnd: Option<f64>,
}

impl Sample {
    /// A sample with goodput only (no kernel figures).
    pub fn goodput(goodput_bps: f64) -> Self {
        Self {
            goodput_bps,
            retransmits_per_mib: None,
            mean_srtt: None,
            mean_cwnd: None,
        }
    }
}

/// The controller.
#[derive(Clone, Debug)]
pub struct AutoStreams {
    current: usize,
    max: usize,
    best: (usize, f64),
    settled: bool,
    baseline_retx: Option<f64>,
    min_srtt: Option<Duration>,
}

/// Relative goodput gain that justifies more streams.
const GAIN: f64 = 1.05;
/// Mean RTT over the lowest RTT seen that means a queue is building.
const QUEUEING_RTT_RATIO: f64 = 2.0;
/// Mean congestion window (segments) below which streams starve each other.
const STARVED_CWND: f64 = 4.0;

impl AutoStreams {
    /// Starts with `initial` streams, never exceeding `max`.
    pub fn new(initial: usize, max: usize) -> Self {
        let max = max.max(1);
        let current = initial.clamp(1, max);
        Self {
            current,
            max,
            best: (current, 0.0),
            settled: false,
            baseline_retx: None,
            min_srtt: None,
        }
    }

    /// Streams currently wanted.
    pub fn current(&self) -> usize {
        self.current
    }

    /// True when the mean RTT says a bottleneck queue is filling.
    fn queueing(&mut self, sample: &Sample) -> bool {
        let Some(srtt) = sample.mean_srtt.filter(|d| !d.is_zero()) else {
            return false;
        };
        let min = *self.min_srtt.get_or_insert(srtt);
        self.min_srtt = Some(min.min(srtt));
        srtt.as_secs_f64() > min.as_secs_f64() * QUEUEING_RTT_RATIO
    }

    /// Feeds one interval's figures measured with [`Self::current`] streams.
    pub fn observe(&mut self, sample: Sample) -> Decision {
        let queueing = self.queueing(&sample);
        if sample.mean_cwnd.is_some_and(|c| c < STARVED_CWND) && self.current > 1 {
            self.settled = true;
            self.best = ((self.current / 2).max(1), sample.goodput_bps);
            return self.set(self.best.0);
        }
        if !self.settled {
            if queueing && self.best.1 > 0.0 {
                self.settled = true;
                return if self.current == self.best.0 {
                    Decision::Hold
                } else {
                    self.set(self.best.0)
                };
            }
            if sample.goodput_bps > self.best.1 * GAIN || self.best.1 == 0.0 {
                self.best = (self.current, sample.goodput_bps);
                if self.current < self.max {
                    return self.set((self.current * 2).min(self.max));
                }
            }
            self.settled = true;
            self.baseline_retx = sample.retransmits_per_mib;
            return if self.current == self.best.0 {
                Decision::Hold
            } else {
                self.set(self.best.0)
            };
        }
        if queueing && self.current > 1 {
            return self.set((self.current * 3 / 4).max(1));
        }
        match (self.baseline_retx, sample.retransmits_per_mib) {
            (Some(base), Some(now)) if now > (base * 2.0).max(1.0) && self.current > 1 => {
                self.baseline_retx = Some(now);
                self.set((self.current * 3 / 4).max(1))
            }
            (None, now) => {
                self.baseline_retx = now;
                Decision::Hold
            }
            _ => Decision::Hold,
        }
    }

    fn set(&mut self, n: usize) -> Decision {
        self.current = n;
        Decision::Set(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gbps: f64) -> Sample {
        Sample {
            goodput_bps: gbps * 1e9,
            retransmits_per_mib: Some(0.0),
            mean_srtt: Some(Duration::from_millis(50)),
            mean_cwnd: Some(100.0),
        }
    }

    #[test]
    fn a_building_queue_stops_growth_at_the_best_count() {
        let mut a = AutoStreams::new(4, 256);
        assert_eq!(a.observe(s(1.0)), Decision::Set(8));
        // Goodput still grows, but the RTT has tripled: the extra streams only queue.
        let queued = Sample {
            mean_srtt: Some(Duration::from_millis(150)),
            ..s(1.2)
        };
        assert_eq!(a.observe(queued), Decision::Set(4));
        assert_eq!(a.observe(s(1.0)), Decision::Hold);
    }

    #[test]
    fn settled_streams_shed_when_the_queue_builds() {
        let mut a = AutoStreams::new(8, 8);
        assert_eq!(a.observe(s(1.0)), Decision::Hold);
        let queued = Sample {
            mean_srtt: Some(Duration::from_millis(120)),
            ..s(1.0)
        };
        assert_eq!(a.observe(queued), Decision::Set(6));
    }

    #[test]
    fn starved_congestion_windows_halve_the_count() {
        let mut a = AutoStreams::new(64, 256);
        let starved = Sample {
            mean_cwnd: Some(2.5),
            ..s(0.9)
        };
        assert_eq!(a.observe(starved), Decision::Set(32));
        assert_eq!(a.observe(s(0.9)), Decision::Hold, "Settled after shedding");
    }

    #[test]
    fn without_kernel_figures_goodput_alone_decides() {
        let mut a = AutoStreams::new(4, 16);
        assert_eq!(a.observe(Sample::goodput(1e9)), Decision::Set(8));
        assert_eq!(a.observe(Sample::goodput(1.01e9)), Decision::Set(4));
    }

    #[test]
    fn grows_while_it_pays_then_returns_to_best() {
        let mut a = AutoStreams::new(4, 256);
        assert_eq!(a.observe(s(1.0)), Decision::Set(8));
        assert_eq!(a.observe(s(2.0)), Decision::Set(16));
        assert_eq!(a.observe(s(2.05)), Decision::Set(8));
        assert_eq!(a.current(), 8);
        assert_eq!(a.observe(s(2.0)), Decision::Hold);
    }

    #[test]
    fn respects_max_and_settles_there() {
        let mut a = AutoStreams::new(4, 6);
        assert_eq!(a.observe(s(1.0)), Decision::Set(6));
        assert_eq!(a.observe(s(2.0)), Decision::Hold);
        assert_eq!(a.current(), 6);
    }

    #[test]
    fn sheds_when_retransmissions_jump_after_settling() {
        let mut a = AutoStreams::new(8, 8);
        assert_eq!(a.observe(s(1.0)), Decision::Hold);
        let storm = Sample {
            retransmits_per_mib: Some(5.0),
            ..s(1.0)
        };
        assert_eq!(a.observe(storm), Decision::Set(6));
        assert_eq!(a.observe(storm), Decision::Hold);
    }
}
