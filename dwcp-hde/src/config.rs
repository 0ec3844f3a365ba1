//! What an encoder does: levels, zstd level, index and history sizes, workers.

use serde::{Deserialize, Serialize};

use crate::page::PAGE_SIZE;

/// The levels an encoder uses; each can be switched on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Levels {
    /// L0: zero pages sent as a kind byte.
    pub zero: bool,
    /// L1: duplicates of recent unique pages sent as a slot number.
    pub dedup: bool,
    /// L2: pages the receiver holds sent as "unchanged" or as an XOR delta.
    pub delta: bool,
    /// L3: the block's payload compressed with zstd (dictionary from the first pages).
    pub zstd: bool,
}

impl Levels {
    /// Every level.
    pub const ALL: Self = Self {
        zero: true,
        dedup: true,
        delta: true,
        zstd: true,
    };
    /// No level: pages are stored as they are (framing and checksum only).
    pub const NONE: Self = Self {
        zero: false,
        dedup: false,
        delta: false,
        zstd: false,
    };

    /// The cumulative sets L0, L0+L1, L0+L1+L2, all, with their short names.
    #[must_use]
    pub fn cumulative() -> [(&'static str, Self); 4] {
        let l0 = Self {
            zero: true,
            ..Self::NONE
        };
        let l1 = Self { dedup: true, ..l0 };
        let l2 = Self { delta: true, ..l1 };
        [
            ("L0", l0),
            ("L0+L1", l1),
            ("L0+L1+L2", l2),
            ("L0+L1+L2+L3", Self::ALL),
        ]
    }

    /// Short form such as `L0+L1+L3`, or `none`.
    #[must_use]
    pub fn name(self) -> String {
        let names: Vec<&str> = [
            (self.zero, "L0"),
            (self.dedup, "L1"),
            (self.delta, "L2"),
            (self.zstd, "L3"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("+")
        }
    }
}

/// Configuration of an encoder (and the geometry its decoder must share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HdeConfig {
    /// Which levels the encoder uses.
    pub levels: Levels,
    /// zstd level for L3 (1..=19; 1 and 3 are the useful ones on fast links).
    pub zstd_level: i32,
    /// Worker threads of a pipeline (at least 1).
    pub workers: usize,
    /// Pages in the L1 content index (memory: this many pages on each side).
    pub index_slots: u32,
    /// Pages in the L2 previous-version cache (memory: this many pages on each side).
    pub history_slots: u32,
    /// Literal pages sampled to train the zstd dictionary (0: no dictionary, the
    /// default). A dictionary pays for small inputs; on the 1 MiB blocks of a transfer
    /// each block is its own context, and on every corpus image measured the dictionary
    /// cost ratio (it travels inline once) and a third of the encode speed, so it is off
    /// unless asked for (`dwcp-agent hde stats --dict-pages`).
    pub dict_sample_pages: u32,
    /// Size of the trained dictionary in bytes.
    pub dict_bytes: u32,
    /// Blocks a pipeline holds in flight (bounds its memory).
    pub in_flight: usize,
}

impl Default for HdeConfig {
    fn default() -> Self {
        Self {
            levels: Levels::ALL,
            zstd_level: 1,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            index_slots: 16_384,
            history_slots: 65_536,
            dict_sample_pages: 0,
            dict_bytes: 32 * 1024,
            in_flight: 0,
        }
    }
}

impl HdeConfig {
    /// Index slots actually used (0 when L1 is off).
    #[must_use]
    pub fn effective_index_slots(&self) -> u32 {
        if self.levels.dedup {
            self.index_slots
        } else {
            0
        }
    }

    /// History slots actually used (0 when L2 is off).
    #[must_use]
    pub fn effective_history_slots(&self) -> u32 {
        if self.levels.delta {
            self.history_slots
        } else {
            0
        }
    }

    /// Blocks in flight in a pipeline (default: four per worker).
    #[must_use]
    pub fn effective_in_flight(&self) -> usize {
        if self.in_flight == 0 {
            self.workers.max(1) * 4
        } else {
            self.in_flight
        }
    }

    /// History slots to hold `bytes` of pages (for whole-image rounds).
    #[must_use]
    pub fn slots_for(bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(PAGE_SIZE as u64)).unwrap_or(u32::MAX)
    }
}
