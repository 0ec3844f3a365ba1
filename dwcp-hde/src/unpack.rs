//! The decoder's first steps: the sequential header check (order, geometry,
//! dictionary) and the parallel zstd decompression of the payload.

use std::sync::Arc;

use crate::{
    dict::Dictionary,
    error::DecodeError,
    frame::{FLAG_DICT_INLINE, FLAG_ZSTD, HEADER_LEN, Header},
};

/// Sequential checks done in frame order before a block can be decompressed.
#[derive(Debug)]
pub struct Gate {
    geometry: (u32, u32),
    next_sequence: u64,
    dict: Option<Arc<Dictionary>>,
}

/// A frame that passed the gate: its header and the dictionary it needs.
#[derive(Debug)]
pub struct Admitted {
    /// The header.
    pub header: Header,
    /// Dictionary to decompress with.
    pub dict: Option<Arc<Dictionary>>,
}

impl Gate {
    /// A gate for a decoder of `geometry` (index slots, history slots).
    #[must_use]
    pub fn new(geometry: (u32, u32)) -> Self {
        Self {
            geometry,
            next_sequence: 0,
            dict: None,
        }
    }

    /// Checks `frame`'s header against the stream so far and takes its inline
    /// dictionary; on success the next frame must have the following sequence number.
    pub fn admit(&mut self, frame: &[u8]) -> Result<Admitted, DecodeError> {
        let header = Header::parse(frame)?;
        if header.sequence != self.next_sequence {
            return Err(DecodeError::OutOfOrder {
                expected: self.next_sequence,
                got: header.sequence,
            });
        }
        if (header.index_slots, header.history_slots) != self.geometry {
            return Err(DecodeError::GeometryMismatch {
                index: header.index_slots,
                history: header.history_slots,
                our_index: self.geometry.0,
                our_history: self.geometry.1,
            });
        }
        if header.flags & FLAG_DICT_INLINE != 0 {
            let bytes = frame[HEADER_LEN..HEADER_LEN + header.dict_len as usize].to_vec();
            // Refuse a dictionary zstd cannot load now, not at every later block.
            zstd::bulk::Decompressor::with_dictionary(&bytes)
                .map_err(DecodeError::BadDictionary)?;
            self.dict = Some(Arc::new(Dictionary {
                id: header.dict_id,
                bytes,
            }));
        }
        let dict = match header.dict_id {
            0 => None,
            id => match &self.dict {
                Some(dict) if dict.id == id => Some(Arc::clone(dict)),
                _ => return Err(DecodeError::UnknownDictionary(id)),
            },
        };
        self.next_sequence += 1;
        Ok(Admitted { header, dict })
    }
}

/// A worker's zstd context.
pub struct Unpacker {
    decompressor: Option<(zstd::bulk::Decompressor<'static>, u32)>,
}

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacker").finish_non_exhaustive()
    }
}

impl Default for Unpacker {
    fn default() -> Self {
        Self::new()
    }
}

impl Unpacker {
    /// An unpacker (its zstd context is created on first use).
    #[must_use]
    pub fn new() -> Self {
        Self { decompressor: None }
    }

    /// The raw payload of an admitted frame: decompressed into `raw` when compressed
    /// (returns `true`), left in the frame otherwise (returns `false`).
    pub fn unpack(
        &mut self,
        admitted: &Admitted,
        frame: &[u8],
        raw: &mut Vec<u8>,
    ) -> Result<bool, DecodeError> {
        let h = &admitted.header;
        if h.flags & FLAG_ZSTD == 0 {
            return Ok(false);
        }
        let stored = &frame[HEADER_LEN + h.dict_len as usize..];
        let dict_id = admitted.dict.as_ref().map_or(0, |d| d.id);
        let dict: &[u8] = admitted.dict.as_ref().map_or(&[], |d| &d.bytes);
        let decompressor = match &mut self.decompressor {
            Some((d, id)) if *id == dict_id => d,
            slot => {
                let fresh = zstd::bulk::Decompressor::with_dictionary(dict)
                    .map_err(DecodeError::BadDictionary)?;
                &mut slot.insert((fresh, dict_id)).0
            }
        };
        raw.clear();
        raw.reserve(h.raw_len as usize);
        let n = decompressor
            .decompress_to_buffer(stored, raw)
            .map_err(DecodeError::Decompress)?;
        if n != h.raw_len as usize {
            return Err(DecodeError::RawLength {
                expected: h.raw_len,
                actual: n,
            });
        }
        Ok(true)
    }
}

/// The raw payload of `frame`: `raw` if it was decompressed, else the stored bytes.
#[must_use]
pub fn raw_payload<'a>(
    header: &Header,
    frame: &'a [u8],
    raw: &'a [u8],
    decompressed: bool,
) -> &'a [u8] {
    if decompressed {
        raw
    } else {
        &frame[HEADER_LEN + header.dict_len as usize..]
    }
}
