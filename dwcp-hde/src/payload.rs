//! The raw payload of a block (before zstd): page kinds and the four sections.
//!
//! `kinds[n] | refs (u32 LE per duplicate) | deltas (u16 LE length + delta per delta page)
//! | literals (4096 bytes per literal page, then the partial tail)`, where `n` is the
//! number of full pages. [`Sections::split`] checks that the sections add up exactly.

use thiserror::Error;

use crate::page::PAGE_SIZE;

/// Kind byte: a zero page (L0).
pub const KIND_ZERO: u8 = 0;
/// Kind byte: a literal page.
pub const KIND_LITERAL: u8 = 1;
/// Kind byte: a duplicate of an index slot (L1).
pub const KIND_DUPLICATE: u8 = 2;
/// Kind byte: an XOR delta against the held version (L2).
pub const KIND_DELTA: u8 = 3;
/// Kind byte: the same as the held version (L2).
pub const KIND_UNCHANGED: u8 = 4;

/// A payload whose sections do not add up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Payload shorter than its sections need.
    #[error("Payload is truncated in its {0} section")]
    Truncated(&'static str),
    /// Bytes left over after the literals.
    #[error("Payload has {0} bytes after its last section")]
    Trailing(usize),
    /// A kind byte that is not one of the five.
    #[error("Page {page} has unknown kind {kind}")]
    BadKind {
        /// Page number in the block.
        page: usize,
        /// The byte.
        kind: u8,
    },
    /// A delta longer than a page.
    #[error("Delta number {delta} of the block is {len} bytes, longer than a page")]
    BadDeltaLength {
        /// Delta number in the block.
        delta: usize,
        /// Its length.
        len: usize,
    },
}

/// The sections of a payload, borrowed.
#[derive(Debug)]
pub struct Sections<'a> {
    /// One kind byte per full page.
    pub kinds: &'a [u8],
    /// Slot numbers of the duplicates.
    pub refs: &'a [u8],
    /// Length-prefixed deltas.
    pub deltas: &'a [u8],
    /// Literal pages, then the tail.
    pub literals: &'a [u8],
}

impl<'a> Sections<'a> {
    /// Splits `raw` for a block of `pages` full pages and `tail` extra bytes.
    pub fn split(raw: &'a [u8], pages: usize, tail: usize) -> Result<Self, PayloadError> {
        let kinds = raw.get(..pages).ok_or(PayloadError::Truncated("kinds"))?;
        let mut counts = [0usize; 5];
        for (page, &kind) in kinds.iter().enumerate() {
            *counts
                .get_mut(usize::from(kind))
                .ok_or(PayloadError::BadKind { page, kind })? += 1;
        }
        let rest = &raw[pages..];
        let refs_len = counts[usize::from(KIND_DUPLICATE)] * 4;
        let refs = rest
            .get(..refs_len)
            .ok_or(PayloadError::Truncated("refs"))?;
        let rest = &rest[refs_len..];
        let mut deltas_len = 0usize;
        for delta in 0..counts[usize::from(KIND_DELTA)] {
            let len_bytes = rest
                .get(deltas_len..deltas_len + 2)
                .ok_or(PayloadError::Truncated("deltas"))?;
            let len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
            if len > PAGE_SIZE {
                return Err(PayloadError::BadDeltaLength { delta, len });
            }
            deltas_len += 2 + len;
        }
        let deltas = rest
            .get(..deltas_len)
            .ok_or(PayloadError::Truncated("deltas"))?;
        let rest = &rest[deltas_len..];
        let literals_len = counts[usize::from(KIND_LITERAL)] * PAGE_SIZE + tail;
        let literals = rest
            .get(..literals_len)
            .ok_or(PayloadError::Truncated("literals"))?;
        if rest.len() > literals_len {
            return Err(PayloadError::Trailing(rest.len() - literals_len));
        }
        Ok(Self {
            kinds,
            refs,
            deltas,
            literals,
        })
    }
}
