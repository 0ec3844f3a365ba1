//! What happens to one packet in one direction, decided when it arrives: it waits for the
//! link (serialisation at the rate behind the packets already queued, i.e. a token bucket
//! one packet deep), is tail-dropped if the bytes waiting would pass the queue limit, may
//! be lost at random, and is then due after the one-way delay plus jitter. Due times never
//! go backwards, so jitter does not reorder a direction.
//!
//! Pure arithmetic on a virtual clock: no threads, no I/O, so it is tested exactly.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::profile::LinkProfile;

const PS_PER_NS: u64 = 1_000;
const PS_PER_S: u128 = 1_000_000_000_000;

/// The fate of one arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it on at this time (ns on the emulator's clock).
    Deliver {
        /// When it leaves the far end of the link.
        due_ns: u64,
    },
    /// Dropped: the queue was full.
    QueueFull,
    /// Lost on the link (it used its share of the rate first).
    Lost,
}

/// One direction's link state.
pub struct Shaper {
    rate_bps: u64,
    queue_limit_bytes: u64,
    delay_ns: u64,
    jitter_ns: u64,
    loss: f64,
    rng: SmallRng,
    /// When (ps) the link finishes sending everything admitted so far.
    link_free_ps: u64,
    /// The latest due time handed out, so that the next is not earlier.
    last_due_ns: u64,
    /// The most bytes ever waiting for the link (including the packet being admitted).
    peak_queue_bytes: u64,
}

impl Shaper {
    /// A direction of `profile`, with its own random stream derived from `seed`.
    pub fn new(profile: &LinkProfile, seed: u64) -> Shaper {
        Shaper {
            rate_bps: profile.rate_bps,
            queue_limit_bytes: profile.queue_bytes(),
            delay_ns: profile.one_way_delay().as_nanos() as u64,
            jitter_ns: profile.jitter.as_nanos() as u64,
            loss: profile.loss,
            rng: SmallRng::seed_from_u64(seed),
            link_free_ps: 0,
            last_due_ns: 0,
            peak_queue_bytes: 0,
        }
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now_ns`.
    pub fn admit(&mut self, now_ns: u64, len: usize) -> Verdict {
        let now_ps = now_ns * PS_PER_NS;
        let waiting = self.bytes_waiting(now_ps);
        let after = waiting + len as u64;
        if after > self.queue_limit_bytes {
            return Verdict::QueueFull;
        }
        self.peak_queue_bytes = self.peak_queue_bytes.max(after);
        let send_ps = (len as u128 * 8 * PS_PER_S / u128::from(self.rate_bps)) as u64;
        self.link_free_ps = self.link_free_ps.max(now_ps) + send_ps;
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return Verdict::Lost;
        }
        let sent_ns = self.link_free_ps.div_ceil(PS_PER_NS);
        let mut due_ns = sent_ns + self.delay_ns;
        if self.jitter_ns > 0 {
            let offset = self.rng.random_range(0..=2 * self.jitter_ns);
            // The profile keeps jitter <= delay, so this never goes below `sent_ns`.
            due_ns = due_ns + offset - self.jitter_ns;
        }
        due_ns = due_ns.max(self.last_due_ns);
        self.last_due_ns = due_ns;
        Verdict::Deliver { due_ns }
    }

    /// Bytes still waiting to be sent at `now_ps` (rounded down).
    fn bytes_waiting(&self, now_ps: u64) -> u64 {
        let backlog_ps = self.link_free_ps.saturating_sub(now_ps);
        (u128::from(backlog_ps) * u128::from(self.rate_bps) / (8 * PS_PER_S)) as u64
    }

    /// The most bytes that ever waited for the link.
    pub fn peak_queue_bytes(&self) -> u64 {
        self.peak_queue_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::QueueLimit;

    fn profile(rate_bps: u64, rtt_ms: u64) -> LinkProfile {
        LinkProfile::new("t", rate_bps, Duration::from_millis(rtt_ms))
    }

    #[test]
    fn an_idle_link_adds_serialisation_and_half_the_rtt() {
        let mut shaper = Shaper::new(&profile(1_000_000_000, 10), 1);
        // 1500 bytes at 1 Gbit/s take 12 µs; one-way delay 5 ms.
        assert_eq!(
            shaper.admit(1_000_000, 1500),
            Verdict::Deliver {
                due_ns: 1_000_000 + 12_000 + 5_000_000
            }
        );
    }

    #[test]
    fn back_to_back_packets_leave_at_the_rate() {
        let mut shaper = Shaper::new(&profile(100_000_000, 0), 1);
        // 1000 packets of 1250 bytes (100 µs each at 100 Mbit/s) all arriving at once.
        let mut last = 0;
        for i in 1..=50u64 {
            let Verdict::Deliver { due_ns } = shaper.admit(0, 1250) else {
                panic!("dropped")
            };
            assert_eq!(due_ns, i * 100_000);
            last = due_ns;
        }
        assert_eq!(last, 5_000_000);
    }

    #[test]
    fn the_queue_tail_drops_at_its_limit_and_drains_at_the_rate() {
        let link = LinkProfile {
            queue: QueueLimit::Bytes(15_000),
            ..profile(100_000_000, 0)
        };
        let mut shaper = Shaper::new(&link, 1);
        let admitted = (0..20)
            .filter(|_| matches!(shaper.admit(0, 1500), Verdict::Deliver { .. }))
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(shaper.peak_queue_bytes(), 15_000);
        // 1500 bytes drain in 120 µs at 100 Mbit/s: room for exactly one more then.
        assert_eq!(shaper.admit(119_000, 1500), Verdict::QueueFull);
        assert!(matches!(
            shaper.admit(120_000, 1500),
            Verdict::Deliver { .. }
        ));
        assert_eq!(shaper.admit(120_000, 1500), Verdict::QueueFull);
    }

    #[test]
    fn loss_follows_the_probability_and_the_seed() {
        let lossy = LinkProfile {
            loss: 0.01,
            ..profile(1_000_000_000, 0)
        };
        let run = |seed| {
            let mut shaper = Shaper::new(&lossy, seed);
            (0..200_000u64)
                .filter(|i| shaper.admit(i * 100_000, 100) == Verdict::Lost)
                .count()
        };
        let lost = run(5);
        // Binomial(200000, 0.01): mean 2000, sigma ~44.5; 4 sigma = 178.
        assert!((1822..=2178).contains(&lost), "{lost}");
        assert_eq!(run(5), lost, "the same seed loses the same packets");
        assert_ne!(run(6), lost);
    }

    #[test]
    fn jitter_spreads_delays_without_reordering() {
        let jittery = LinkProfile {
            jitter: Duration::from_millis(2),
            ..profile(1_000_000_000, 20)
        };
        let mut shaper = Shaper::new(&jittery, 3);
        let mut last = 0;
        let (mut min, mut max) = (u64::MAX, 0);
        for i in 0..10_000u64 {
            let now = i * 1_000_000;
            let Verdict::Deliver { due_ns } = shaper.admit(now, 100) else {
                panic!("dropped")
            };
            assert!(due_ns >= last, "reordered");
            last = due_ns;
            let delay = due_ns - now;
            min = min.min(delay);
            max = max.max(delay);
        }
        // Delay 10 ms ± 2 ms (the lower edge rises a little where order is kept).
        assert!((8_000_000..8_200_000).contains(&min), "{min}");
        assert!(max > 11_800_000 && max <= 12_001_000, "{max}");
    }
}
