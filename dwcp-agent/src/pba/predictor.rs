//! The sizing rule: how many blocks the pool should keep committed, from recent demand.
//!
//! A pure state machine, fed one demand sample per [`BlockPool::adapt`](super::BlockPool::adapt)
//! call (the peak number of blocks in flight since the previous call):
//!
//! ```text
//! average <- alpha * demand + (1 - alpha) * average
//! desired  = clamp(ceil(average * headroom), min_blocks, max_blocks)
//!
//! demand > target                -> Grow:   target = max(desired, clamp(ceil(demand * headroom)))
//!                                   (Hold if that is no higher, at max_blocks)
//! ceil(demand * headroom) < target
//!                                -> calm += 1, calm_peak = max(calm_peak, demand);
//!                                   once calm >= shrink_after_steps:
//!                                   floor = clamp(max(ceil(calm_peak * headroom),
//!                                                     round(average * headroom)))
//!                                   Shrink to floor if below target; calm = calm_peak = 0
//! otherwise (demand needs the whole target)
//!                                -> Hold, calm = calm_peak = 0
//! ```
//!
//! Growth is immediate so a burst never waits for the average to catch up. Shrinking
//! waits until the whole of `shrink_after_steps` windows stayed under the target
//! (hysteresis: a pool whose demand keeps returning to its target, as a burst every few
//! windows does, never shrinks), and then never below what those windows needed at
//! their peak nor below what the average still predicts. So a transfer that sheds
//! streams gives their blocks back after one such stretch, where a rule waiting for
//! demand to halve would keep them as idle overhead.

use super::PoolConfig;

/// What one step did to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Demand exceeded the target; the target went up.
    Grow,
    /// Demand stayed low long enough; the target went down.
    Shrink,
    /// The target is unchanged.
    Hold,
}

/// Result of one [`Predictor::step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictorStep {
    /// The demand sample fed in.
    pub demand: usize,
    /// Moving average after this sample.
    pub average: f64,
    /// Target before the step.
    pub previous_target: usize,
    /// Target after the step.
    pub target: usize,
    /// What happened.
    pub change: Change,
}

/// The sizing state machine; see the module documentation for the rule.
#[derive(Clone, Debug)]
pub struct Predictor {
    min_blocks: usize,
    max_blocks: usize,
    headroom: f64,
    alpha: f64,
    shrink_after_steps: u32,
    average: f64,
    target: usize,
    calm_steps: u32,
    /// Highest demand during the current calm stretch.
    calm_peak: usize,
}

impl Predictor {
    /// Starts with an average of zero and the target at `min_blocks`. The configuration
    /// should be valid ([`PoolConfig::validate`]); out-of-range values are clamped.
    pub fn new(config: &PoolConfig) -> Self {
        let max_blocks = config.max_blocks.max(1);
        let min_blocks = config.min_blocks.clamp(1, max_blocks);
        Self {
            min_blocks,
            max_blocks,
            headroom: config.headroom.max(1.0),
            alpha: config.ewma_alpha.clamp(f64::MIN_POSITIVE, 1.0),
            shrink_after_steps: config.shrink_after_steps.max(1),
            average: 0.0,
            target: min_blocks,
            calm_steps: 0,
            calm_peak: 0,
        }
    }

    /// Current target in blocks.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Current moving average of demand, in blocks.
    pub fn average(&self) -> f64 {
        self.average
    }

    /// Consecutive steps so far whose demand needed less than the target.
    pub fn calm_steps(&self) -> u32 {
        self.calm_steps
    }

    /// Feeds one demand sample (blocks in flight) and returns what changed.
    pub fn step(&mut self, demand: usize) -> PredictorStep {
        let previous_target = self.target;
        self.average = self.alpha * demand as f64 + (1.0 - self.alpha) * self.average;
        let desired = self.blocks_for(self.average);
        let change = if demand > self.target {
            self.target = desired.max(self.blocks_for(demand as f64));
            self.calm_steps = 0;
            self.calm_peak = 0;
            // At `max_blocks` already, demand beyond it changes nothing.
            if self.target > previous_target {
                Change::Grow
            } else {
                Change::Hold
            }
        } else if self.blocks_for(demand as f64) < self.target {
            self.calm_steps = self.calm_steps.saturating_add(1);
            self.calm_peak = self.calm_peak.max(demand);
            if self.calm_steps < self.shrink_after_steps {
                Change::Hold
            } else {
                let floor = self
                    .blocks_for(self.calm_peak as f64)
                    .max(self.blocks_rounded(self.average));
                self.calm_steps = 0;
                self.calm_peak = 0;
                if floor < self.target {
                    self.target = floor;
                    Change::Shrink
                } else {
                    Change::Hold
                }
            }
        } else {
            self.calm_steps = 0;
            self.calm_peak = 0;
            Change::Hold
        };
        PredictorStep {
            demand,
            average: self.average,
            previous_target,
            target: self.target,
            change,
        }
    }

    /// Forgets past demand: the average becomes `demand` and the target what it needs,
    /// at once in either direction. For an owner that knows its demand changed for good
    /// (a receiver whose data connection closed), where waiting out the hysteresis would
    /// only keep idle blocks.
    pub fn settle(&mut self, demand: usize) -> PredictorStep {
        let previous_target = self.target;
        self.average = demand as f64;
        self.target = self.blocks_for(self.average);
        self.calm_steps = 0;
        self.calm_peak = 0;
        PredictorStep {
            demand,
            average: self.average,
            previous_target,
            target: self.target,
            change: match self.target.cmp(&previous_target) {
                std::cmp::Ordering::Greater => Change::Grow,
                std::cmp::Ordering::Less => Change::Shrink,
                std::cmp::Ordering::Equal => Change::Hold,
            },
        }
    }

    /// `clamp(round(blocks * headroom), min, max)`: what a decaying average still asks
    /// for (its ceiling would stay one block high long after demand settled).
    fn blocks_rounded(&self, blocks: f64) -> usize {
        ((blocks * self.headroom).round() as usize).clamp(self.min_blocks, self.max_blocks)
    }

    /// `clamp(ceil(blocks * headroom), min, max)`.
    fn blocks_for(&self, blocks: f64) -> usize {
        let wanted = (blocks * self.headroom).ceil();
        // Float to integer casts saturate; NaN becomes 0 and is clamped up.
        (wanted as usize).clamp(self.min_blocks, self.max_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predictor(shrink_after_steps: u32) -> Predictor {
        Predictor::new(&PoolConfig {
            min_blocks: 2,
            max_blocks: 100,
            headroom: 1.5,
            ewma_alpha: 0.5,
            shrink_after_steps,
            ..PoolConfig::default()
        })
    }

    #[test]
    fn starts_at_min() {
        let p = predictor(3);
        assert_eq!(p.target(), 2);
        assert_eq!(p.average(), 0.0);
    }

    #[test]
    fn grows_at_once_when_demand_exceeds_target() {
        let mut p = predictor(3);
        let step = p.step(10);
        assert_eq!(step.change, Change::Grow);
        assert_eq!(step.previous_target, 2);
        // ceil(10 * 1.5) = 15, above the average's ceil(5 * 1.5) = 8.
        assert_eq!(step.target, 15);
        assert_eq!(step.average, 5.0);
        // Demand at or under the target holds it.
        assert_eq!(p.step(15).change, Change::Hold);
        assert_eq!(p.target(), 15);
        // One block more grows again.
        let step = p.step(16);
        assert_eq!(step.change, Change::Grow);
        assert_eq!(step.target, 24);
    }

    #[test]
    fn growth_is_clamped_to_max() {
        let mut p = predictor(3);
        assert_eq!(p.step(1000).target, 100);
        assert_eq!(p.step(1000).change, Change::Hold);
    }

    #[test]
    fn settling_forgets_the_peak_and_the_average() {
        let mut p = predictor(3);
        for _ in 0..10 {
            p.step(20);
        }
        let step = p.settle(3);
        assert_eq!((step.previous_target, step.target), (30, 5));
        assert_eq!(step.change, Change::Shrink);
        assert_eq!(p.average(), 3.0);
        // Below `min_blocks`, and back up.
        assert_eq!(p.settle(0).target, 2);
        assert_eq!(p.settle(10).change, Change::Grow);
        assert_eq!(p.settle(10).change, Change::Hold);
        // What follows starts from the settled state: one low sample does not shrink.
        assert_eq!(p.step(1).change, Change::Hold);
    }

    #[test]
    fn shrinks_only_after_sustained_low_demand() {
        let mut p = predictor(3);
        for _ in 0..10 {
            p.step(20);
        }
        assert_eq!(p.target(), 30);
        // Needing less than the target (ceil(12 * 1.5) = 18), but only twice: hold.
        assert_eq!(p.step(4).change, Change::Hold);
        assert_eq!(p.step(12).change, Change::Hold);
        assert_eq!(p.calm_steps(), 2);
        // A sample that needs the whole target (ceil(20 * 1.5) = 30) resets the count.
        assert_eq!(p.step(20).change, Change::Hold);
        assert_eq!(p.calm_steps(), 0);
        assert_eq!(p.target(), 30);
        // Three calm steps in a row: shrink, to no less than the stretch's peak needs.
        assert_eq!(p.step(4).change, Change::Hold);
        assert_eq!(p.step(12).change, Change::Hold);
        let step = p.step(4);
        assert_eq!(step.change, Change::Shrink);
        // ceil(12 * 1.5) = 18 against the decaying average's round(avg * 1.5).
        let by_average = (step.average * 1.5).round() as usize;
        assert_eq!(step.target, 18.max(by_average));
        assert!(step.target < 30);
        assert_eq!(p.calm_steps(), 0);
    }

    #[test]
    fn shed_streams_give_their_blocks_back_after_one_calm_stretch() {
        // Headroom 1.0 as in the receiver: a transfer on 8 streams drops to 5.
        let mut p = Predictor::new(&PoolConfig {
            min_blocks: 1,
            max_blocks: 256,
            headroom: 1.0,
            ewma_alpha: 0.2,
            shrink_after_steps: 10,
            ..PoolConfig::default()
        });
        for _ in 0..30 {
            p.step(8);
        }
        assert_eq!(p.target(), 8);
        let changes: Vec<Change> = (0..10).map(|_| p.step(5).change).collect();
        assert_eq!(changes.last(), Some(&Change::Shrink));
        assert!(changes[..9].iter().all(|c| *c == Change::Hold));
        // The average (5.3 after ten steps) rounds to 5: exactly what is in flight.
        assert_eq!(p.target(), 5);
    }

    #[test]
    fn settles_and_never_goes_below_min() {
        let mut p = predictor(2);
        p.step(50);
        for _ in 0..200 {
            p.step(4);
        }
        // Steady demand 4: the target comes down to ceil(4 * 1.5) = 6.
        assert_eq!(p.target(), 6);
        for _ in 0..200 {
            p.step(0);
        }
        assert_eq!(p.target(), 2);
    }

    #[test]
    fn oscillating_demand_does_not_flap() {
        let mut p = predictor(4);
        p.step(40);
        let target = p.target();
        let mut changes = 0;
        // Bursts every third step: never four calm steps in a row.
        for i in 0..300 {
            let demand = if i % 3 == 0 { 40 } else { 2 };
            if p.step(demand).change != Change::Hold {
                changes += 1;
            }
        }
        assert_eq!(changes, 0);
        assert_eq!(p.target(), target);
    }
}
