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
//! demand < target / 2            -> calm += 1; once calm >= shrink_after_steps and
//!                                   desired < target: Shrink to desired, calm = 0
//! otherwise                      -> Hold, calm = 0
//! ```
//!
//! Growth is immediate so a burst never waits for the average to catch up; shrinking
//! waits for a sustained lull (hysteresis), so a pool whose demand oscillates does not
//! commit and release the same memory over and over.

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

    /// Consecutive steps so far with demand below half the target.
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
            // At `max_blocks` already, demand beyond it changes nothing.
            if self.target > previous_target {
                Change::Grow
            } else {
                Change::Hold
            }
        } else if demand.saturating_mul(2) < self.target {
            self.calm_steps = self.calm_steps.saturating_add(1);
            if self.calm_steps >= self.shrink_after_steps && desired < self.target {
                self.target = desired;
                self.calm_steps = 0;
                Change::Shrink
            } else {
                Change::Hold
            }
        } else {
            self.calm_steps = 0;
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
    fn shrinks_only_after_sustained_low_demand() {
        let mut p = predictor(3);
        for _ in 0..10 {
            p.step(20);
        }
        assert_eq!(p.target(), 30);
        // Below 30 / 2 = 15, but only twice: hold.
        assert_eq!(p.step(4).change, Change::Hold);
        assert_eq!(p.step(4).change, Change::Hold);
        assert_eq!(p.calm_steps(), 2);
        // A sample back at half the target resets the count.
        assert_eq!(p.step(15).change, Change::Hold);
        assert_eq!(p.calm_steps(), 0);
        assert_eq!(p.target(), 30);
        // Three calm steps in a row: shrink to the average's target.
        assert_eq!(p.step(4).change, Change::Hold);
        assert_eq!(p.step(4).change, Change::Hold);
        let step = p.step(4);
        assert_eq!(step.change, Change::Shrink);
        assert_eq!(step.target, (step.average * 1.5).ceil() as usize);
        assert!(step.target < 30);
        assert_eq!(p.calm_steps(), 0);
    }

    #[test]
    fn settles_and_never_goes_below_min() {
        let mut p = predictor(2);
        p.step(50);
        for _ in 0..200 {
            p.step(4);
        }
        // Steady demand 4: the target comes down to between ceil(4 * 1.5) = 6 and 2 * 4
        // (below that, 4 is no longer under half the target and nothing shrinks further).
        assert!((6..=8).contains(&p.target()), "{}", p.target());
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
