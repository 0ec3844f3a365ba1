//! Settings of a block pool and their validation.

use super::PbaError;

/// Smallest block size accepted: 64 KiB.
pub const MIN_BLOCK_SIZE: usize = 64 << 10;
/// Largest block size accepted: 16 MiB.
pub const MAX_BLOCK_SIZE: usize = 16 << 20;
/// Most blocks one pool may hold: the io_uring limit on registered buffers
/// (`IORING_MAX_REG_BUFFERS`), so that every block has a fixed-buffer index.
pub const MAX_BLOCKS: usize = 1 << 14;

/// Settings of a [`BlockPool`](super::BlockPool).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Bytes per block: a power of two in [`MIN_BLOCK_SIZE`]`..=`[`MAX_BLOCK_SIZE`].
    pub block_size: usize,
    /// Blocks the pool keeps committed however low demand gets (at least 1).
    pub min_blocks: usize,
    /// Blocks the pool can hand out at once, and the size its arena reserves
    /// (at most [`MAX_BLOCKS`]). Acquiring more waits or fails: this is the memory bound.
    pub max_blocks: usize,
    /// Target = `ceil(average demand * headroom)`; at least 1.0. Every block of headroom
    /// stays committed and idle at steady demand, so it is memory overhead; demand is
    /// already the peak in flight per `adapt` window and growth is immediate, so the
    /// default is 1.0.
    pub headroom: f64,
    /// Weight of the newest demand sample in the moving average, in `(0, 1]`.
    pub ewma_alpha: f64,
    /// Calls of [`adapt`](super::BlockPool::adapt) in a row whose demand (with
    /// headroom) needed less than the target before the target shrinks (at least 1).
    pub shrink_after_steps: u32,
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`); refusal is logged, not an error.
    pub huge_pages: bool,
    /// Commit pages ahead of use: `min_blocks` at creation, and up to the target whenever
    /// it grows, so the data path does not take page faults.
    pub prefault: bool,
}

impl Default for PoolConfig {
    /// 1 MiB blocks, 4 to 256 of them (256 MiB reserved), headroom 1.0, alpha 0.2,
    /// shrinking after 10 calm steps, huge pages and prefaulting on.
    fn default() -> Self {
        Self {
            block_size: 1 << 20,
            min_blocks: 4,
            max_blocks: 256,
            headroom: 1.0,
            ewma_alpha: 0.2,
            shrink_after_steps: 10,
            huge_pages: true,
            prefault: true,
        }
    }
}

impl PoolConfig {
    /// Checks every value; the error names the field and says what is wrong.
    pub fn validate(&self) -> Result<(), PbaError> {
        let invalid = |field, reason: String| Err(PbaError::InvalidConfig { field, reason });
        if !self.block_size.is_power_of_two() {
            return invalid(
                "block_size",
                format!("{} is not a power of two", self.block_size),
            );
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return invalid(
                "block_size",
                format!(
                    "{} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE} (64 KiB to 16 MiB)",
                    self.block_size
                ),
            );
        }
        if self.max_blocks == 0 || self.max_blocks > MAX_BLOCKS {
            return invalid(
                "max_blocks",
                format!("{} is outside 1..={MAX_BLOCKS}", self.max_blocks),
            );
        }
        if self.min_blocks == 0 || self.min_blocks > self.max_blocks {
            return invalid(
                "min_blocks",
                format!(
                    "{} is outside 1..=max_blocks ({})",
                    self.min_blocks, self.max_blocks
                ),
            );
        }
        if self.block_size.checked_mul(self.max_blocks).is_none() {
            return invalid(
                "max_blocks",
                format!(
                    "{} blocks of {} bytes overflow the address space",
                    self.max_blocks, self.block_size
                ),
            );
        }
        if !self.headroom.is_finite() || self.headroom < 1.0 {
            return invalid(
                "headroom",
                format!("{} is not a finite number of at least 1.0", self.headroom),
            );
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return invalid(
                "ewma_alpha",
                format!("{} is outside (0, 1]", self.ewma_alpha),
            );
        }
        if self.shrink_after_steps == 0 {
            return invalid("shrink_after_steps", "0 is not at least 1".to_owned());
        }
        Ok(())
    }

    /// Bytes the arena reserves: `block_size * max_blocks` (valid configurations only).
    pub fn arena_bytes(&self) -> usize {
        self.block_size.saturating_mul(self.max_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(config: &PoolConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn default_is_valid() {
        PoolConfig::default().validate().unwrap();
    }

    #[test]
    fn each_bad_value_is_named() {
        let base = PoolConfig::default();
        let cases: [(PoolConfig, &str); 10] = [
            (
                PoolConfig {
                    block_size: 100_000,
                    ..base.clone()
                },
                "Invalid pool setting block_size: 100000 is not a power of two",
            ),
            (
                PoolConfig {
                    block_size: 32 << 10,
                    ..base.clone()
                },
                "Invalid pool setting block_size: 32768 is outside 65536..=16777216",
            ),
            (
                PoolConfig {
                    block_size: 32 << 20,
                    ..base.clone()
                },
                "Invalid pool setting block_size: 33554432 is outside",
            ),
            (
                PoolConfig {
                    max_blocks: 0,
                    ..base.clone()
                },
                "Invalid pool setting max_blocks: 0 is outside 1..=16384",
            ),
            (
                PoolConfig {
                    max_blocks: MAX_BLOCKS + 1,
                    ..base.clone()
                },
                "Invalid pool setting max_blocks: 16385 is outside",
            ),
            (
                PoolConfig {
                    min_blocks: 300,
                    ..base.clone()
                },
                "Invalid pool setting min_blocks: 300 is outside 1..=max_blocks (256)",
            ),
            (
                PoolConfig {
                    headroom: 0.5,
                    ..base.clone()
                },
                "Invalid pool setting headroom: 0.5 is not a finite number of at least 1.0",
            ),
            (
                PoolConfig {
                    ewma_alpha: 0.0,
                    ..base.clone()
                },
                "Invalid pool setting ewma_alpha: 0 is outside (0, 1]",
            ),
            (
                PoolConfig {
                    ewma_alpha: f64::NAN,
                    ..base.clone()
                },
                "Invalid pool setting ewma_alpha: NaN is outside (0, 1]",
            ),
            (
                PoolConfig {
                    shrink_after_steps: 0,
                    ..base.clone()
                },
                "Invalid pool setting shrink_after_steps: 0 is not at least 1",
            ),
        ];
        for (config, expected) in cases {
            let got = message(&config);
            assert!(got.starts_with(expected), "{got:?} !~ {expected:?}");
        }
    }

    #[test]
    fn limits_are_accepted() {
        for block_size in [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE] {
            PoolConfig {
                block_size,
                min_blocks: 1,
                max_blocks: 1,
                ..PoolConfig::default()
            }
            .validate()
            .unwrap();
        }
    }
}
