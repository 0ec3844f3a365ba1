//! The sequential forms: [`Encoder`] and [`Decoder`] do every stage on the caller's
//! thread, one block at a time (see [`crate::pipeline`] for the parallel form).

use crate::{
    classify::{Classifier, EncodeError, Plan},
    config::HdeConfig,
    error::DecodeError,
    pack::Packer,
    rebuild::Rebuilder,
    stats::Stats,
    unpack::{Gate, Unpacker, raw_payload},
};

/// Encodes blocks in order on the calling thread.
#[derive(Debug)]
pub struct Encoder {
    classifier: Classifier,
    packer: Packer,
    plan: Plan,
    stats: Stats,
}

impl Encoder {
    /// An encoder for `config` (its `workers` is ignored).
    #[must_use]
    pub fn new(config: &HdeConfig) -> Self {
        Self {
            classifier: Classifier::new(config),
            packer: Packer::new(),
            plan: Plan::default(),
            stats: Stats::default(),
        }
    }

    /// Encodes `data`, whose first byte is the start of page `first_page`, into the frame
    /// `out` (cleared first). Blocks must be decoded in the order they were encoded.
    pub fn encode_block(
        &mut self,
        first_page: u64,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let started = crate::clock::now();
        self.classifier.classify(first_page, data, &mut self.plan)?;
        let classify_nanos = crate::clock::elapsed(started);
        let mut stats = self.packer.pack(&self.plan, data, out)?;
        stats.total_nanos += classify_nanos;
        self.stats += stats;
        Ok(())
    }

    /// Changes the zstd level of the following blocks (the adaptive controller's knob).
    pub fn set_zstd_level(&mut self, level: i32) {
        self.classifier.set_zstd_level(level);
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// Decodes frames in order on the calling thread.
#[derive(Debug)]
pub struct Decoder {
    gate: Gate,
    unpacker: Unpacker,
    rebuilder: Rebuilder,
    raw: Vec<u8>,
    stats: Stats,
}

/// What a decoded frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Block number in the stream.
    pub sequence: u64,
    /// Page index of the block's first byte (its offset is `first_page * 4096`).
    pub first_page: u64,
}

impl Decoder {
    /// A decoder for streams of an encoder with `config` (index and history sizes and
    /// levels must match the encoder's: they decide the geometry both sides evolve).
    #[must_use]
    pub fn new(config: &HdeConfig) -> Self {
        let geometry = (
            config.effective_index_slots(),
            config.effective_history_slots(),
        );
        Self {
            gate: Gate::new(geometry),
            unpacker: Unpacker::new(),
            rebuilder: Rebuilder::new(geometry),
            raw: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Decodes `frame` into `out` (replaced by the block's data).
    pub fn decode_block(
        &mut self,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<BlockInfo, DecodeError> {
        let started = crate::clock::now();
        let admitted = self.gate.admit(frame)?;
        let decompressed = self.unpacker.unpack(&admitted, frame, &mut self.raw)?;
        let raw = raw_payload(&admitted.header, frame, &self.raw, decompressed);
        let mut stats = Stats::default();
        self.rebuilder
            .rebuild(&admitted.header, raw, out, &mut stats)?;
        stats.frame_bytes = frame.len() as u64;
        stats.total_nanos = crate::clock::elapsed(started);
        self.stats += stats;
        Ok(BlockInfo {
            sequence: admitted.header.sequence,
            first_page: admitted.header.first_page,
        })
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }
}
