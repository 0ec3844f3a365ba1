//! Per-codec counters of a stream endpoint, for `/metrics`: blocks and bytes (before
//! and after encoding) per frame codec, and `--codec auto`'s decisions with a bounded
//! reason. Plain atomics, so the data path never touches the metrics registry; the
//! agent's telemetry exports their growth (`dwcp_codec_*`).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::protocol::frame::Codec;

/// The frame codecs, in label order.
pub const CODECS: [Codec; 3] = [Codec::None, Codec::Zstd, Codec::Hde];

/// The label of a frame codec (`none`, `zstd`, `hde`).
#[must_use]
pub fn codec_label(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "none",
        Codec::Zstd => "zstd",
        Codec::Hde => "hde",
    }
}

fn codec_index(codec: Codec) -> usize {
    match codec {
        Codec::None => 0,
        Codec::Zstd => 1,
        Codec::Hde => 2,
    }
}

/// What `--codec auto` can choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AutoCodec {
    /// Raw blocks.
    None,
    /// HDE.
    Hde,
}

impl AutoCodec {
    /// Every choice, in label order.
    pub const ALL: [Self; 2] = [Self::None, Self::Hde];

    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hde => "hde",
        }
    }
}

/// Why `--codec auto` chose what it chose: a small fixed set, fit for a metric label
/// (the full sentence goes to the log and the summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// HDE chosen: the link limits the transfer, HDE multiplies what it carries.
    LinkBound,
    /// HDE chosen but the codec's CPU limits the transfer (still faster than raw), or
    /// raw chosen because the codec is slower than the link.
    CpuBound,
    /// Raw chosen: the data does not compress enough to gain anything.
    Incompressible,
    /// Raw chosen: no block was HDE-encoded yet, so there is nothing to compare.
    Unmeasured,
}

impl DecisionReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 4] = [
        Self::LinkBound,
        Self::CpuBound,
        Self::Incompressible,
        Self::Unmeasured,
    ];

    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::LinkBound => "link_bound",
            Self::CpuBound => "cpu_bound",
            Self::Incompressible => "incompressible",
            Self::Unmeasured => "unmeasured",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::LinkBound => 0,
            Self::CpuBound => 1,
            Self::Incompressible => 2,
            Self::Unmeasured => 3,
        }
    }
}

/// One decision of `--codec auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What was chosen.
    pub codec: AutoCodec,
    /// Why, as a label.
    pub reason: DecisionReason,
}

/// Blocks and bytes of one codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecCounts {
    /// Blocks.
    pub blocks: u64,
    /// Bytes before encoding (after decoding).
    pub raw_bytes: u64,
    /// Bytes on the wire (frame payloads).
    pub encoded_bytes: u64,
}

/// A copy of every counter of a [`CodecTally`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TallySnapshot {
    /// Per codec, indexed like [`CODECS`].
    pub codecs: [CodecCounts; 3],
    /// Decisions, indexed like [`AutoCodec::ALL`] then [`DecisionReason::ALL`].
    pub decisions: [[u64; 4]; 2],
    /// The latest decision, if any.
    pub current: Option<AutoCodec>,
}

impl TallySnapshot {
    /// The counts of `codec`.
    #[must_use]
    pub fn of(&self, codec: Codec) -> CodecCounts {
        self.codecs[codec_index(codec)]
    }

    /// How many decisions chose `codec` for `reason`.
    #[must_use]
    pub fn decisions(&self, codec: AutoCodec, reason: DecisionReason) -> u64 {
        self.decisions[auto_index(codec)][reason.index()]
    }
}

fn auto_index(codec: AutoCodec) -> usize {
    match codec {
        AutoCodec::None => 0,
        AutoCodec::Hde => 1,
    }
}

/// Counters shared by the threads of one side (every stream the receiver takes, or
/// every stream the agent sends).
#[derive(Debug, Default)]
pub struct CodecTally {
    blocks: [AtomicU64; 3],
    raw_bytes: [AtomicU64; 3],
    encoded_bytes: [AtomicU64; 3],
    decisions: [[AtomicU64; 4]; 2],
    /// 0: no decision yet; 1 + index of the latest choice.
    current: AtomicU8,
}

impl CodecTally {
    /// Counts one block sent or received with `codec`: `raw` bytes of data carried in
    /// `encoded` bytes of frame payload.
    pub fn record_block(&self, codec: Codec, raw: u64, encoded: u64) {
        let i = codec_index(codec);
        self.blocks[i].fetch_add(1, Relaxed);
        self.raw_bytes[i].fetch_add(raw, Relaxed);
        self.encoded_bytes[i].fetch_add(encoded, Relaxed);
    }

    /// Counts a decision of `--codec auto` and makes it the current choice.
    pub fn record_decision(&self, decision: Decision) {
        let c = auto_index(decision.codec);
        self.decisions[c][decision.reason.index()].fetch_add(1, Relaxed);
        // Two indexes only: the cast cannot truncate.
        self.current.store(1 + c as u8, Relaxed);
    }

    /// Every counter now.
    #[must_use]
    pub fn snapshot(&self) -> TallySnapshot {
        let mut s = TallySnapshot::default();
        for (i, counts) in s.codecs.iter_mut().enumerate() {
            *counts = CodecCounts {
                blocks: self.blocks[i].load(Relaxed),
                raw_bytes: self.raw_bytes[i].load(Relaxed),
                encoded_bytes: self.encoded_bytes[i].load(Relaxed),
            };
        }
        for (row, counters) in s.decisions.iter_mut().zip(&self.decisions) {
            for (value, counter) in row.iter_mut().zip(counters) {
                *value = counter.load(Relaxed);
            }
        }
        s.current = match self.current.load(Relaxed) {
            0 => None,
            n => AutoCodec::ALL.get(usize::from(n - 1)).copied(),
        };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_decisions_add_up_per_label() {
        let tally = CodecTally::default();
        assert_eq!(tally.snapshot(), TallySnapshot::default());
        tally.record_block(Codec::Hde, 1000, 100);
        tally.record_block(Codec::Hde, 1000, 300);
        tally.record_block(Codec::None, 50, 50);
        tally.record_decision(Decision {
            codec: AutoCodec::Hde,
            reason: DecisionReason::LinkBound,
        });
        tally.record_decision(Decision {
            codec: AutoCodec::None,
            reason: DecisionReason::Incompressible,
        });
        let s = tally.snapshot();
        assert_eq!(
            s.of(Codec::Hde),
            CodecCounts {
                blocks: 2,
                raw_bytes: 2000,
                encoded_bytes: 400
            }
        );
        assert_eq!(s.of(Codec::None).blocks, 1);
        assert_eq!(s.of(Codec::Zstd), CodecCounts::default());
        assert_eq!(s.decisions(AutoCodec::Hde, DecisionReason::LinkBound), 1);
        assert_eq!(
            s.decisions(AutoCodec::None, DecisionReason::Incompressible),
            1
        );
        assert_eq!(s.decisions(AutoCodec::Hde, DecisionReason::CpuBound), 0);
        assert_eq!(s.current, Some(AutoCodec::None));
    }
}
