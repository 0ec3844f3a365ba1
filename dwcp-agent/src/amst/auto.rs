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
//! [`AutoStreams`] is a pure state machine: the sender feeds it one sample per interval
//! and applies the decision. [`Sampler`] turns the sender's running byte count and the
//! probes' per-flow figures ([`KernelFigures`]) into those samples, one per
//! [`SAMPLE_INTERVAL`]; `AutoControl` runs sampler and controller once per interval
//! for the file and the stream sender alike.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::probe::Probes;

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

/// Streams a `--streams auto` transfer starts with (file and stream senders alike).
pub const INITIAL_STREAMS: usize = 4;

/// How often the controller gets a sample: long enough for TCP to settle after a change
/// of stream count, short enough that a transfer of a few seconds still adapts.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The kernel's figures for one transfer's flows at one instant (from the eBPF probes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelFigures {
    /// Retransmitted segments so far, summed over the flows (closed ones included).
    pub retransmits: Option<u64>,
    /// Mean smoothed RTT of the open flows.
    pub mean_srtt: Option<Duration>,
    /// Mean congestion window of the open flows, in segments.
    pub mean_cwnd: Option<f64>,
}

impl KernelFigures {
    /// Reads this process's flows to `peer`; all `None` without probes or when reading
    /// the probes' maps fails (the controller then decides on goodput alone).
    pub fn read(probes: Option<&Probes>, peer: SocketAddr) -> Self {
        let Some(flows) = probes.and_then(|p| p.flows().ok()) else {
            return Self::default();
        };
        let to_peer = || flows.iter().filter(|f| f.remote == peer);
        let open = || to_peer().filter(|f| !f.closed);
        let rtts: Vec<Duration> = open().filter_map(|f| f.srtt).collect();
        let cwnds: Vec<f64> = open().filter_map(|f| f.cwnd).map(f64::from).collect();
        Self {
            retransmits: Some(to_peer().map(|f| f.retransmits).sum()),
            mean_srtt: u32::try_from(rtts.len())
                .ok()
                .filter(|&n| n > 0)
                .map(|n| rtts.iter().sum::<Duration>() / n),
            mean_cwnd: (!cwnds.is_empty()).then(|| cwnds.iter().sum::<f64>() / cwnds.len() as f64),
        }
    }
}

/// Cuts a transfer's running figures into one [`Sample`] per interval.
#[derive(Clone, Debug)]
pub struct Sampler {
    interval: Duration,
    last_at: Instant,
    last_bytes: u64,
    last_retransmits: Option<u64>,
}

impl Sampler {
    /// Starts the first interval at `now`, with `kernel` as the starting figures.
    pub fn new(interval: Duration, now: Instant, kernel: &KernelFigures) -> Self {
        Self {
            interval,
            last_at: now,
            last_bytes: 0,
            last_retransmits: kernel.retransmits,
        }
    }

    /// Whether an interval has passed since the last sample at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_at) >= self.interval
    }

    /// The sample for the interval ending at `now`, when one is due: goodput from the
    /// payload bytes sent so far (`sent_bytes`), retransmissions per MiB sent from the
    /// growth of the kernel's count, RTT and window as the kernel has them now.
    pub fn sample(
        &mut self,
        now: Instant,
        sent_bytes: u64,
        kernel: &KernelFigures,
    ) -> Option<Sample> {
        if !self.due(now) {
            return None;
        }
        let secs = now.saturating_duration_since(self.last_at).as_secs_f64();
        let bytes = sent_bytes.saturating_sub(self.last_bytes);
        let mib = bytes as f64 / f64::from(1u32 << 20);
        let sample = Sample {
            goodput_bps: bytes as f64 * 8.0 / secs.max(1e-9),
            retransmits_per_mib: kernel
                .retransmits
                .zip(self.last_retransmits)
                .map(|(now, before)| now.saturating_sub(before) as f64 / mib.max(1e-9)),
            mean_srtt: kernel.mean_srtt,
            mean_cwnd: kernel.mean_cwnd,
        };
        self.last_at = now;
        self.last_bytes = sent_bytes;
        self.last_retransmits = kernel.retransmits;
        Some(sample)
    }
}

/// The `auto` controller of one transfer, its sampler, and where its kernel figures come
/// from: what both senders run once per interval.
pub(crate) struct AutoControl<'a> {
    auto: &'a mut AutoStreams,
    sampler: Sampler,
    probes: Option<&'a Probes>,
    peer: SocketAddr,
}

impl<'a> AutoControl<'a> {
    /// Starts sampling the flows to `peer` now.
    pub(crate) fn new(
        auto: &'a mut AutoStreams,
        probes: Option<&'a Probes>,
        peer: SocketAddr,
    ) -> Self {
        let sampler = Sampler::new(
            SAMPLE_INTERVAL,
            Instant::now(),
            &KernelFigures::read(probes, peer),
        );
        Self {
            auto,
            sampler,
            probes,
            peer,
        }
    }

    /// Once per interval: samples with `sent_bytes` payload bytes sent so far, asks the
    /// controller, and returns the new count if it changed.
    pub(crate) fn tick(&mut self, sent_bytes: u64) -> Option<usize> {
        let now = Instant::now();
        if !self.sampler.due(now) {
            return None;
        }
        let kernel = KernelFigures::read(self.probes, self.peer);
        let sample = self.sampler.sample(now, sent_bytes, &kernel)?;
        let Decision::Set(n) = self.auto.observe(sample) else {
            return None;
        };
        tracing::debug!(
            streams = n,
            goodput_bps = sample.goodput_bps,
            srtt = ?sample.mean_srtt,
            cwnd = ?sample.mean_cwnd,
            "Auto stream count"
        );
        Some(n)
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
    fn sampler_cuts_intervals_into_goodput_and_retransmit_rates() {
        let t0 = Instant::now();
        let kernel = |retx| KernelFigures {
            retransmits: Some(retx),
            mean_srtt: Some(Duration::from_millis(20)),
            mean_cwnd: Some(30.0),
        };
        let mut sampler = Sampler::new(Duration::from_secs(1), t0, &kernel(100));
        // Not yet an interval: nothing.
        assert!(!sampler.due(t0 + Duration::from_millis(999)));
        assert_eq!(
            sampler.sample(t0 + Duration::from_millis(999), 1 << 20, &kernel(100)),
            None
        );
        // 2 s, 250 MiB, 50 retransmits more: 1048.576 Mbit/s and 0.2 per MiB.
        let first = sampler
            .sample(t0 + Duration::from_secs(2), 250 << 20, &kernel(150))
            .unwrap();
        assert_eq!(first.goodput_bps, (250u64 << 20) as f64 * 8.0 / 2.0);
        assert_eq!(first.retransmits_per_mib, Some(0.2));
        assert_eq!(first.mean_srtt, Some(Duration::from_millis(20)));
        assert_eq!(first.mean_cwnd, Some(30.0));
        // The next interval counts from there: 1 s, 10 MiB, no retransmit.
        let second = sampler
            .sample(t0 + Duration::from_secs(3), 260 << 20, &kernel(150))
            .unwrap();
        assert_eq!(second.goodput_bps, (10u64 << 20) as f64 * 8.0);
        assert_eq!(second.retransmits_per_mib, Some(0.0));
    }

    #[test]
    fn sampler_without_probes_gives_goodput_only() {
        let t0 = Instant::now();
        let none = KernelFigures::default();
        assert_eq!(
            KernelFigures::read(None, "127.0.0.1:1".parse().unwrap()),
            none
        );
        let mut sampler = Sampler::new(Duration::from_secs(1), t0, &none);
        let sample = sampler
            .sample(t0 + Duration::from_secs(1), 1 << 20, &none)
            .unwrap();
        assert_eq!(sample, Sample::goodput(f64::from(8u32 << 20)));
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
