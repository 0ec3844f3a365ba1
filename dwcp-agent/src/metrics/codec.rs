//! The `dwcp_codec_*` metrics: blocks and bytes per stream codec on each side, and the
//! choice of `--codec auto` senders with a bounded reason. The data path counts into
//! [`CodecTally`] atomics; [`CodecMetrics::export`] adds their growth here.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{names, register};
use crate::amst::stream::codec_tally::{
    AutoCodec, CODECS, CodecTally, DecisionReason, TallySnapshot, codec_label,
};

/// Labels of [`names::CODEC_BLOCKS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecBlockLabels {
    /// `rx` or `tx`.
    pub direction: String,
    /// `none`, `zstd` or `hde`.
    pub codec: String,
}

/// Labels of [`names::CODEC_BYTES`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecByteLabels {
    /// `rx` or `tx`.
    pub direction: String,
    /// `none`, `zstd` or `hde`.
    pub codec: String,
    /// `raw` (data bytes) or `encoded` (wire payload bytes).
    pub kind: String,
}

/// Labels of [`names::CODEC_CHOICE`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecLabels {
    /// `none` or `hde`.
    pub codec: String,
}

/// Labels of [`names::CODEC_DECISIONS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `none` or `hde`.
    pub codec: String,
    /// One of [`DecisionReason`]'s labels.
    pub reason: String,
}

/// Which side of a stream a tally counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Blocks the agent's receiver delivered.
    Rx,
    /// Blocks the agent sent (migrations).
    Tx,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
        }
    }
}

/// The registered `dwcp_codec_*` families.
#[derive(Debug)]
pub struct CodecMetrics {
    /// [`names::CODEC_BLOCKS`].
    pub blocks: Family<CodecBlockLabels, Counter>,
    /// [`names::CODEC_BYTES`].
    pub bytes: Family<CodecByteLabels, Counter>,
    /// [`names::CODEC_CHOICE`].
    pub choice: Family<CodecLabels, Gauge>,
    /// [`names::CODEC_DECISIONS`].
    pub decisions: Family<DecisionLabels, Counter>,
    /// What the agent's own senders (migrations) count into; exported as `tx`.
    pub sender: Arc<CodecTally>,
}

impl CodecMetrics {
    /// Registers the families, with every series present from the start (zeros).
    pub(super) fn register(r: &mut Registry) -> Self {
        let this = Self {
            blocks: register(r, names::CODEC_BLOCKS, Family::default()),
            bytes: register(r, names::CODEC_BYTES, Family::default()),
            choice: register(r, names::CODEC_CHOICE, Family::default()),
            decisions: register(r, names::CODEC_DECISIONS, Family::default()),
            sender: Arc::default(),
        };
        let nothing = TallySnapshot::default();
        for direction in [Direction::Rx, Direction::Tx] {
            this.export(direction, &nothing, &nothing);
        }
        for codec in AutoCodec::ALL {
            let _ = this.choice.get_or_create(&choice_labels(codec));
        }
        this
    }

    /// Adds what `now` counts beyond `seen` (both of the same tally) to the `direction`
    /// series; for `tx`, also the decisions and the current choice.
    pub fn export(&self, direction: Direction, now: &TallySnapshot, seen: &TallySnapshot) {
        let side = direction.label();
        for codec in CODECS {
            let (now, seen) = (now.of(codec), seen.of(codec));
            let name = codec_label(codec);
            self.blocks
                .get_or_create(&CodecBlockLabels {
                    direction: side.into(),
                    codec: name.into(),
                })
                .inc_by(now.blocks.saturating_sub(seen.blocks));
            for (kind, now, seen) in [
                ("raw", now.raw_bytes, seen.raw_bytes),
                ("encoded", now.encoded_bytes, seen.encoded_bytes),
            ] {
                self.bytes
                    .get_or_create(&CodecByteLabels {
                        direction: side.into(),
                        codec: name.into(),
                        kind: kind.into(),
                    })
                    .inc_by(now.saturating_sub(seen));
            }
        }
        if direction == Direction::Rx {
            return;
        }
        for codec in AutoCodec::ALL {
            for reason in DecisionReason::ALL {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        codec: codec.label().into(),
                        reason: reason.label().into(),
                    })
                    .inc_by(
                        now.decisions(codec, reason)
                            .saturating_sub(seen.decisions(codec, reason)),
                    );
            }
            if let Some(current) = now.current {
                self.choice
                    .get_or_create(&choice_labels(codec))
                    .set(i64::from(codec == current));
            }
        }
    }
}

fn choice_labels(codec: AutoCodec) -> CodecLabels {
    CodecLabels {
        codec: codec.label().into(),
    }
}
