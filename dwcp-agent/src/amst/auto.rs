//! Choosing the number of streams from what the link does (`--streams auto`).
//!
//! Start with a few streams; while adding streams raises goodput by a meaningful margin,
//! double them; when an addition does not pay, go back to the best count seen and
//! settle. When settled, a jump in the kernel-measured retransmission rate (streams
//! fighting over a bottleneck queue) sheds a quarter of them. A pure state machine:
//! the sender feeds it one sample per interval and applies the decision.

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
}

/// The controller.
#[derive(Clone, Debug)]
pub struct AutoStreams {
    current: usize,
    max: usize,
    best: (usize, f64),
    settled: bool,
    baseline_retx: Option<f64>,
}

/// Relative goodput gain that justifies more streams.
const GAIN: f64 = 1.05;

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
        }
    }

    /// Streams currently wanted.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Feeds one interval's figures measured with [`Self::current`] streams.
    pub fn observe(&mut self, sample: Sample) -> Decision {
        if !self.settled {
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
        }
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
            goodput_bps: 1e9,
            retransmits_per_mib: Some(5.0),
        };
        assert_eq!(a.observe(storm), Decision::Set(6));
        assert_eq!(a.observe(storm), Decision::Hold);
    }
}
