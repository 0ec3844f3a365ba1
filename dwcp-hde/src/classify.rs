//! The encoder's sequential stage: decides each page's kind and evolves the L1 index
//! and L2 history exactly as the decoder will. Cheap work only (zero test, hash, page
//! compare and copy); deltas and zstd are left to [`crate::pack`], which may run on
//! other threads.

use std::sync::Arc;

use crate::{
    clock::elapsed,
    config::HdeConfig,
    dict::{DictTrainer, Dictionary},
    frame::MAX_BLOCK_BYTES,
    history::History,
    index::EncoderIndex,
    page::{PAGE_SIZE, is_zero},
    payload::{KIND_DUPLICATE, KIND_LITERAL, KIND_UNCHANGED, KIND_ZERO},
    stats::Stats,
};

/// Internal kind: a literal page whose held version is in `bases`; the packer turns it
/// into a delta or a literal.
pub const KIND_CANDIDATE: u8 = 0xff;
/// Internal kind before the zero pass decides.
const KIND_UNDECIDED: u8 = 0xfe;

/// A block that cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// Larger than a frame can describe.
    #[error("Block of {0} bytes exceeds the {MAX_BLOCK_BYTES}-byte limit")]
    TooLarge(usize),
    /// Its page range runs past the page index space.
    #[error("Block at page {0} runs past the last page index")]
    PageOverflow(u64),
    /// A pipeline worker stopped.
    #[error("Encoder pipeline stopped")]
    PipelineStopped,
}

/// What the classifier decided for one block; reusable buffers.
#[derive(Debug, Default)]
pub struct Plan {
    /// Block number.
    pub sequence: u64,
    /// Page index of the first page.
    pub first_page: u64,
    /// One kind per full page (`KIND_*`, or [`KIND_CANDIDATE`]).
    pub kinds: Vec<u8>,
    /// Slot numbers of duplicates, u32 LE.
    pub refs: Vec<u8>,
    /// Held versions of the candidates, in order.
    pub bases: Vec<u8>,
    /// Whether to compress with zstd, and at which level.
    pub zstd_level: Option<i32>,
    /// Dictionary to compress with, if any.
    pub dict: Option<Arc<Dictionary>>,
    /// Whether this block carries the dictionary inline.
    pub dict_inline: bool,
    /// Index and history geometry (for the header).
    pub geometry: (u32, u32),
    /// Counters of this stage.
    pub stats: Stats,
}

/// The encoder's sequential state.
#[derive(Debug)]
pub struct Classifier {
    config: HdeConfig,
    index: EncoderIndex,
    history: History,
    trainer: DictTrainer,
    dict: Option<Arc<Dictionary>>,
    dict_sent: bool,
    sequence: u64,
}

impl Classifier {
    /// A classifier for `config`.
    #[must_use]
    pub fn new(config: &HdeConfig) -> Self {
        let zstd = config.levels.zstd;
        Self {
            index: EncoderIndex::new(config.effective_index_slots()),
            history: History::new(config.effective_history_slots()),
            trainer: DictTrainer::new(
                if zstd { config.dict_sample_pages } else { 0 },
                config.dict_bytes,
            ),
            dict: None,
            dict_sent: false,
            sequence: 0,
            config: config.clone(),
        }
    }

    /// Changes the zstd level of the following blocks.
    pub fn set_zstd_level(&mut self, level: i32) {
        self.config.zstd_level = level;
    }

    /// Classifies `data` (starting at page `first_page`) into `plan`.
    pub fn classify(
        &mut self,
        first_page: u64,
        data: &[u8],
        plan: &mut Plan,
    ) -> Result<(), EncodeError> {
        if data.len() > MAX_BLOCK_BYTES as usize {
            return Err(EncodeError::TooLarge(data.len()));
        }
        let pages = data.len() / PAGE_SIZE;
        first_page
            .checked_add(data.len() as u64)
            .ok_or(EncodeError::PageOverflow(first_page))?;
        let levels = self.config.levels;
        let dict_before = self.dict.clone();
        plan.sequence = self.sequence;
        self.sequence += 1;
        plan.first_page = first_page;
        plan.kinds.clear();
        plan.kinds.resize(pages, KIND_UNDECIDED);
        plan.refs.clear();
        plan.bases.clear();
        plan.stats = Stats::default();
        plan.geometry = (
            self.config.effective_index_slots(),
            self.config.effective_history_slots(),
        );
        let page_at = |i: usize| &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];

        if levels.zero {
            let started = crate::clock::now();
            for (i, kind) in plan.kinds.iter_mut().enumerate() {
                if is_zero(page_at(i)) {
                    *kind = KIND_ZERO;
                    plan.stats.zero.pages += 1;
                }
            }
            plan.stats.zero.nanos = elapsed(started);
        }
        if levels.delta {
            let started = crate::clock::now();
            for (i, kind) in plan.kinds.iter_mut().enumerate() {
                if *kind == KIND_UNDECIDED
                    && self.history.get(first_page + i as u64) == Some(page_at(i))
                {
                    *kind = KIND_UNCHANGED;
                    plan.stats.unchanged.pages += 1;
                }
            }
            plan.stats.unchanged.nanos = elapsed(started);
        }
        if levels.dedup {
            let started = crate::clock::now();
            for (i, kind) in plan.kinds.iter_mut().enumerate() {
                if *kind != KIND_UNDECIDED {
                    continue;
                }
                let page = page_at(i);
                match self.index.find(page) {
                    (Some(slot), _) => {
                        *kind = KIND_DUPLICATE;
                        plan.refs.extend_from_slice(&slot.to_le_bytes());
                        plan.stats.duplicate.pages += 1;
                    }
                    (None, hash) => self.index.insert(page, hash),
                }
            }
            plan.stats.duplicate.nanos = elapsed(started);
        }
        let started = crate::clock::now();
        for (i, kind) in plan.kinds.iter_mut().enumerate() {
            let page = page_at(i);
            let index = first_page + i as u64;
            if *kind == KIND_UNDECIDED {
                *kind = match self.history.get(index) {
                    Some(held) => {
                        plan.bases.extend_from_slice(held);
                        KIND_CANDIDATE
                    }
                    None => {
                        self.trainer.add(page);
                        KIND_LITERAL
                    }
                };
            }
        }
        // Recorded after every lookup: a block sees the history as it was before it.
        if levels.delta {
            for (i, &kind) in plan.kinds.iter().enumerate() {
                match kind {
                    KIND_UNCHANGED => {}
                    KIND_ZERO => self.history.record_zero(first_page + i as u64),
                    _ => self.history.record(first_page + i as u64, page_at(i)),
                }
            }
            plan.stats.delta.nanos = elapsed(started);
        }
        if let Some((dict, nanos)) = self.trainer.train_if_ready() {
            self.dict = dict;
            plan.stats.dict_train_nanos = nanos;
        }
        plan.zstd_level = levels.zstd.then_some(self.config.zstd_level);
        // A dictionary trained on this block's pages applies from the next block; the
        // first block that uses it carries it inline.
        plan.dict = dict_before;
        plan.dict_inline = plan.dict.is_some() && !self.dict_sent;
        self.dict_sent |= plan.dict.is_some();
        Ok(())
    }
}
