//! The decoder's sequential stage: rebuilds the pages of a block from its raw payload,
//! evolving the L1 index and L2 history exactly as the encoder did, then checks the
//! block's checksum.

use xxhash_rust::xxh3::xxh3_64;

use crate::{
    clock::elapsed,
    delta,
    error::DecodeError,
    frame::Header,
    history::History,
    index::DecoderIndex,
    page::PAGE_SIZE,
    payload::{KIND_DELTA, KIND_DUPLICATE, KIND_LITERAL, KIND_UNCHANGED, KIND_ZERO, Sections},
    stats::Stats,
};

/// The decoder's page state.
#[derive(Debug)]
pub struct Rebuilder {
    index: DecoderIndex,
    history: History,
    poisoned: bool,
}

impl Rebuilder {
    /// A rebuilder of `geometry` (index slots, history slots).
    #[must_use]
    pub fn new(geometry: (u32, u32)) -> Self {
        Self {
            index: DecoderIndex::new(geometry.0),
            history: History::new(geometry.1),
            poisoned: false,
        }
    }

    /// Decodes the block of `header` from `raw` into `out` (resized to the block).
    /// Any error poisons the rebuilder (see [`DecodeError`]).
    pub fn rebuild(
        &mut self,
        header: &Header,
        raw: &[u8],
        out: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> Result<(), DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        let started = crate::clock::now();
        let data_len = header.data_len as usize;
        let pages = data_len / PAGE_SIZE;
        let sections = Sections::split(raw, pages, data_len % PAGE_SIZE)?;
        self.poisoned = true;
        out.clear();
        out.resize(data_len, 0);
        let mut refs = sections.refs.as_chunks::<4>().0.iter();
        let mut deltas = sections.deltas;
        let mut literals = sections.literals.chunks(PAGE_SIZE);
        for (i, &kind) in sections.kinds.iter().enumerate() {
            let index = header.first_page + i as u64;
            let page = &mut out[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
            match kind {
                KIND_ZERO => stats.zero.pages += 1,
                KIND_LITERAL => {
                    page.copy_from_slice(literals.next().ok_or(DecodeError::Poisoned)?);
                    stats.literal.pages += 1;
                }
                KIND_DUPLICATE => {
                    let r = refs.next().ok_or(DecodeError::Poisoned)?;
                    let slot = u32::from_le_bytes(*r);
                    let held = self
                        .index
                        .get(slot)
                        .ok_or(DecodeError::BadSlot { page: index, slot })?;
                    page.copy_from_slice(held);
                    stats.duplicate.pages += 1;
                }
                KIND_UNCHANGED | KIND_DELTA => {
                    let held = self.history.get(index).ok_or(DecodeError::NotHeld(index))?;
                    page.copy_from_slice(held);
                    if kind == KIND_DELTA {
                        let len = usize::from(u16::from_le_bytes([deltas[0], deltas[1]]));
                        let (d, rest) = deltas[2..].split_at(len);
                        delta::apply(d, page).map_err(|source| DecodeError::Delta {
                            page: index,
                            source,
                        })?;
                        deltas = rest;
                        stats.delta.pages += 1;
                    } else {
                        stats.unchanged.pages += 1;
                    }
                }
                _ => return Err(DecodeError::Poisoned),
            }
            if matches!(kind, KIND_LITERAL | KIND_DELTA) {
                self.index.insert(page);
            }
        }
        for (i, &kind) in sections.kinds.iter().enumerate() {
            let index = header.first_page + i as u64;
            match kind {
                KIND_UNCHANGED => {}
                KIND_ZERO => self.history.record_zero(index),
                _ => self
                    .history
                    .record(index, &out[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]),
            }
        }
        let tail = literals.next().unwrap_or(&[]);
        out[pages * PAGE_SIZE..].copy_from_slice(tail);
        if xxh3_64(out) != header.checksum {
            return Err(DecodeError::Checksum(header.sequence));
        }
        self.poisoned = false;
        stats.blocks += 1;
        stats.data_bytes += data_len as u64;
        stats.total_nanos += elapsed(started);
        Ok(())
    }
}
