//! L3's zstd dictionary: trained by the encoder on the first literal pages it sees,
//! shipped inline in the first block that uses it, then referenced by id.

use std::sync::Arc;

use crate::page::PAGE_SIZE;

/// A trained dictionary.
#[derive(Debug)]
pub struct Dictionary {
    /// Id in frames (never 0).
    pub id: u32,
    /// zstd dictionary bytes.
    pub bytes: Vec<u8>,
}

/// Collects sample pages and trains once enough are in.
#[derive(Debug)]
pub struct DictTrainer {
    want_pages: u32,
    dict_bytes: usize,
    samples: Vec<u8>,
    done: bool,
}

impl DictTrainer {
    /// A trainer that trains on `want_pages` pages (0: never) into `dict_bytes` bytes.
    #[must_use]
    pub fn new(want_pages: u32, dict_bytes: u32) -> Self {
        Self {
            want_pages,
            dict_bytes: dict_bytes as usize,
            samples: Vec::new(),
            done: want_pages == 0,
        }
    }

    /// Whether it still wants samples.
    #[must_use]
    pub fn wants(&self) -> bool {
        !self.done && self.samples.len() < self.want_pages as usize * PAGE_SIZE
    }

    /// Adds one page.
    pub fn add(&mut self, page: &[u8]) {
        if self.wants() {
            self.samples.extend_from_slice(page);
        }
    }

    /// Trains once all samples are in: the dictionary (if zstd could build one) and the
    /// nanoseconds it took. Trains at most once.
    pub fn train_if_ready(&mut self) -> Option<(Option<Arc<Dictionary>>, u64)> {
        if self.done || self.wants() {
            return None;
        }
        self.done = true;
        let started = crate::clock::now();
        let sizes = vec![PAGE_SIZE; self.samples.len() / PAGE_SIZE];
        let trained = zstd::dict::from_continuous(&self.samples, &sizes, self.dict_bytes);
        self.samples = Vec::new();
        let nanos = crate::clock::elapsed(started);
        Some((
            trained
                .ok()
                .map(|bytes| Arc::new(Dictionary { id: 1, bytes })),
            nanos,
        ))
    }
}
