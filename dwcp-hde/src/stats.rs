//! Counters per level: pages, input bytes, output bytes, time.

use std::ops::AddAssign;

use serde::Serialize;

/// What one level did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LevelStats {
    /// Pages this level coded.
    pub pages: u64,
    /// Bytes those pages (or, for zstd, the payloads) held.
    pub input_bytes: u64,
    /// Bytes they became in the payload (for zstd, in the frame).
    pub output_bytes: u64,
    /// CPU time spent in this level, in nanoseconds (all pages looked at, not just those
    /// coded).
    pub nanos: u64,
}

impl AddAssign for LevelStats {
    fn add_assign(&mut self, o: Self) {
        self.pages += o.pages;
        self.input_bytes += o.input_bytes;
        self.output_bytes += o.output_bytes;
        self.nanos += o.nanos;
    }
}

/// Encoder or decoder counters, summed over blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Blocks coded.
    pub blocks: u64,
    /// Decoded bytes (the data).
    pub data_bytes: u64,
    /// Encoded bytes (frames, headers included).
    pub frame_bytes: u64,
    /// L0: zero pages.
    pub zero: LevelStats,
    /// L1: duplicates of indexed pages.
    pub duplicate: LevelStats,
    /// L2: pages equal to the version the receiver holds.
    pub unchanged: LevelStats,
    /// L2: pages sent as XOR deltas.
    pub delta: LevelStats,
    /// Pages (and partial tail bytes) sent as they are.
    pub literal: LevelStats,
    /// L3: payloads through zstd (input: raw payload; output: stored payload).
    pub zstd: LevelStats,
    /// Blocks whose zstd output was not smaller, stored raw instead.
    pub incompressible_blocks: u64,
    /// CPU nanoseconds spent training the dictionary.
    pub dict_train_nanos: u64,
    /// CPU nanoseconds of the whole encode or decode (all stages, summed over threads).
    pub total_nanos: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.blocks += o.blocks;
        self.data_bytes += o.data_bytes;
        self.frame_bytes += o.frame_bytes;
        self.zero += o.zero;
        self.duplicate += o.duplicate;
        self.unchanged += o.unchanged;
        self.delta += o.delta;
        self.literal += o.literal;
        self.zstd += o.zstd;
        self.incompressible_blocks += o.incompressible_blocks;
        self.dict_train_nanos += o.dict_train_nanos;
        self.total_nanos += o.total_nanos;
    }
}

impl Stats {
    /// Data bytes per frame byte (1.0 when nothing was coded).
    #[must_use]
    pub fn ratio(&self) -> f64 {
        if self.frame_bytes == 0 {
            1.0
        } else {
            self.data_bytes as f64 / self.frame_bytes as f64
        }
    }

    /// Data bytes per CPU second (one core), in MB/s (10^6).
    #[must_use]
    pub fn mb_per_core_second(&self) -> f64 {
        if self.total_nanos == 0 {
            0.0
        } else {
            self.data_bytes as f64 * 1e3 / self.total_nanos as f64
        }
    }
}
