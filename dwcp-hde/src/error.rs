//! Why a frame could not be decoded.

use thiserror::Error;

use crate::{delta::DeltaError, frame::HeaderError, payload::PayloadError};

/// A frame the decoder refused. After any error but the first four variants (which are
/// detected before the decoder's state changes) the decoder is poisoned: its index and
/// history may no longer match the encoder's, so it refuses every later frame.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The header is malformed.
    #[error("Bad block header")]
    Header(#[from] HeaderError),
    /// Frames must be decoded in the order they were encoded.
    #[error("Block {got} arrived where block {expected} was expected")]
    OutOfOrder {
        /// Next sequence number the decoder expects.
        expected: u64,
        /// The frame's.
        got: u64,
    },
    /// The encoder's index or history geometry differs from this decoder's.
    #[error(
        "Encoder uses {index} index and {history} history slots, this decoder {our_index} and {our_history}"
    )]
    GeometryMismatch {
        /// Frame's index slots.
        index: u32,
        /// Frame's history slots.
        history: u32,
        /// Decoder's index slots.
        our_index: u32,
        /// Decoder's history slots.
        our_history: u32,
    },
    /// A dictionary id the decoder has not received.
    #[error("Block uses dictionary {0}, which this decoder has not received")]
    UnknownDictionary(u32),
    /// The decoder was poisoned by an earlier failure.
    #[error("Decoder is unusable after an earlier block failed")]
    Poisoned,
    /// zstd refused the inline dictionary.
    #[error("Inline dictionary is not a valid zstd dictionary")]
    BadDictionary(#[source] std::io::Error),
    /// The zstd payload is corrupt.
    #[error("Block payload does not decompress")]
    Decompress(#[source] std::io::Error),
    /// The payload decompressed to another length than announced.
    #[error("Payload decompressed to {actual} bytes, header announces {expected}")]
    RawLength {
        /// Announced.
        expected: u32,
        /// Got.
        actual: usize,
    },
    /// The payload's sections are inconsistent.
    #[error("Bad block payload")]
    Payload(#[from] PayloadError),
    /// A duplicate refers to an index slot the decoder has not filled.
    #[error("Page {page} refers to index slot {slot}, which the decoder does not hold")]
    BadSlot {
        /// Page index.
        page: u64,
        /// Slot number.
        slot: u32,
    },
    /// An unchanged page or a delta for a page whose previous version is not held.
    #[error("Page {0} refers to a previous version the decoder does not hold")]
    NotHeld(u64),
    /// A delta that does not apply.
    #[error("Delta of page {page} does not apply")]
    Delta {
        /// Page index.
        page: u64,
        /// Why.
        #[source]
        source: DeltaError,
    },
    /// The decoded data does not match the block's checksum.
    #[error("Block {0} decoded to data that does not match its checksum")]
    Checksum(u64),
    /// A pipeline worker stopped.
    #[error("Decoder pipeline stopped")]
    PipelineStopped,
}

impl DecodeError {
    /// Whether this error leaves the decoder's state unchanged (the frame was refused
    /// before any page was decoded).
    #[must_use]
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Self::Header(_)
                | Self::OutOfOrder { .. }
                | Self::GeometryMismatch { .. }
                | Self::UnknownDictionary(_)
                | Self::Poisoned
                | Self::BadDictionary(_)
                | Self::Decompress(_)
                | Self::RawLength { .. }
                | Self::Payload(_)
        )
    }
}
