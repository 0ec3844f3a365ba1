//! The block frame header: layout, writing, parsing and its own checks.
//!
//! See the crate documentation for the field table.

use thiserror::Error;

/// Magic bytes at the start of every block frame.
pub const MAGIC: [u8; 4] = *b"HDEB";
/// Frame format version written and accepted.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Largest decoded block accepted (bounds what a decoder allocates).
pub const MAX_BLOCK_BYTES: u32 = 64 * 1024 * 1024;
/// Largest inline dictionary accepted.
pub const MAX_DICT_BYTES: u32 = 1024 * 1024;
/// Largest index or history geometry a decoder accepts (pages; 16 GiB of memory).
pub const MAX_SLOTS: u32 = 1 << 22;

/// Flag: the payload is a zstd frame (otherwise stored as is).
pub const FLAG_ZSTD: u8 = 1;
/// Flag: the zstd frame uses the stream's dictionary.
pub const FLAG_USES_DICT: u8 = 2;
/// Flag: the dictionary itself follows the header (the first block after it was
/// trained; later blocks may use it).
pub const FLAG_DICT_INLINE: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_USES_DICT | FLAG_DICT_INLINE;

/// A block frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// zstd level the payload was compressed at (informational; 0 if stored).
    pub zstd_level: i8,
    /// Block number in the stream, from 0.
    pub sequence: u64,
    /// Page index of the block's first byte.
    pub first_page: u64,
    /// Decoded bytes.
    pub data_len: u32,
    /// Encoder's L1 index slots.
    pub index_slots: u32,
    /// Encoder's L2 history slots.
    pub history_slots: u32,
    /// Dictionary id used (0: none).
    pub dict_id: u32,
    /// Inline dictionary bytes after the header.
    pub dict_len: u32,
    /// Payload bytes after the dictionary.
    pub stored_len: u32,
    /// Payload bytes once decompressed.
    pub raw_len: u32,
    /// xxh3-64 of the decoded data.
    pub checksum: u64,
}

/// A header that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("Frame is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// Not an HDE block.
    #[error("Frame does not start with the HDE magic")]
    BadMagic,
    /// Another format version.
    #[error("Frame version {0} is not supported (expected {VERSION})")]
    BadVersion(u8),
    /// The header's CRC32C does not match.
    #[error("Frame header checksum mismatch")]
    BadHeaderChecksum,
    /// Unknown flag bits or an inconsistent flag combination.
    #[error("Frame flags {0:#04x} are invalid")]
    BadFlags(u8),
    /// A length over the limits or inconsistent with the others.
    #[error("Frame field {field} = {value} is out of range")]
    BadLength {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// Header and lengths do not add up to the frame's size.
    #[error("Frame is {actual} bytes but its header announces {expected}")]
    SizeMismatch {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes given.
        actual: usize,
    },
}

impl Header {
    /// Appends the 64-byte header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.flags);
        out.push(self.zstd_level as u8);
        out.push(0);
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.first_page.to_le_bytes());
        for v in [
            self.data_len,
            self.index_slots,
            self.history_slots,
            self.dict_id,
            self.dict_len,
            self.stored_len,
            self.raw_len,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.checksum.to_le_bytes());
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parses and checks the header at the start of `frame`, and that `frame` is exactly
    /// header + dictionary + payload long.
    pub fn parse(frame: &[u8]) -> Result<Self, HeaderError> {
        let h = frame
            .get(..HEADER_LEN)
            .ok_or(HeaderError::Truncated(frame.len()))?;
        if h[..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(HeaderError::BadVersion(h[4]));
        }
        if crc32c::crc32c(&h[..60]) != u32_at(h, 60) {
            return Err(HeaderError::BadHeaderChecksum);
        }
        let header = Self {
            flags: h[5],
            zstd_level: h[6] as i8,
            sequence: u64_at(h, 8),
            first_page: u64_at(h, 16),
            data_len: u32_at(h, 24),
            index_slots: u32_at(h, 28),
            history_slots: u32_at(h, 32),
            dict_id: u32_at(h, 36),
            dict_len: u32_at(h, 40),
            stored_len: u32_at(h, 44),
            raw_len: u32_at(h, 48),
            checksum: u64_at(h, 52),
        };
        header.check(frame.len())?;
        Ok(header)
    }

    fn check(&self, frame_len: usize) -> Result<(), HeaderError> {
        let f = self.flags;
        let zstd = f & FLAG_ZSTD != 0;
        let uses = f & FLAG_USES_DICT != 0;
        let inline = f & FLAG_DICT_INLINE != 0;
        if f & !KNOWN_FLAGS != 0 || (uses && !zstd) || ((uses || inline) != (self.dict_id != 0)) {
            return Err(HeaderError::BadFlags(f));
        }
        let bad = |field, value: u32| HeaderError::BadLength {
            field,
            value: u64::from(value),
        };
        if self.data_len > MAX_BLOCK_BYTES {
            return Err(bad("data_len", self.data_len));
        }
        if self.index_slots > MAX_SLOTS {
            return Err(bad("index_slots", self.index_slots));
        }
        if self.history_slots > MAX_SLOTS {
            return Err(bad("history_slots", self.history_slots));
        }
        if self.dict_len > MAX_DICT_BYTES || (self.dict_len != 0) != inline {
            return Err(bad("dict_len", self.dict_len));
        }
        // A payload never exceeds kinds + full literal pages + refs; be generous but finite.
        let max_raw = self
            .data_len
            .saturating_add(self.data_len / 64)
            .saturating_add(64);
        if self.raw_len > max_raw {
            return Err(bad("raw_len", self.raw_len));
        }
        if self.stored_len > max_raw || (!zstd && self.stored_len != self.raw_len) {
            return Err(bad("stored_len", self.stored_len));
        }
        if self
            .first_page
            .checked_add(u64::from(self.data_len))
            .is_none()
        {
            return Err(HeaderError::BadLength {
                field: "first_page",
                value: self.first_page,
            });
        }
        let expected = HEADER_LEN as u64 + u64::from(self.dict_len) + u64::from(self.stored_len);
        if expected != frame_len as u64 {
            return Err(HeaderError::SizeMismatch {
                expected,
                actual: frame_len,
            });
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: FLAG_ZSTD,
            zstd_level: 3,
            sequence: 7,
            first_page: 256,
            data_len: 8192,
            index_slots: 16,
            history_slots: 32,
            dict_id: 0,
            dict_len: 0,
            stored_len: 5,
            raw_len: 10,
            checksum: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_and_checks_its_crc() {
        let mut frame = Vec::new();
        sample().write(&mut frame);
        assert_eq!(frame.len(), HEADER_LEN);
        frame.extend_from_slice(&[0; 5]);
        assert_eq!(Header::parse(&frame), Ok(sample()));
        frame[20] ^= 1;
        assert_eq!(Header::parse(&frame), Err(HeaderError::BadHeaderChecksum));
        assert_eq!(Header::parse(&frame[..10]), Err(HeaderError::Truncated(10)));
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        let build = |h: Header, extra: usize| {
            let mut frame = Vec::new();
            h.write(&mut frame);
            frame.resize(frame.len() + extra, 0);
            Header::parse(&frame)
        };
        assert!(matches!(
            build(sample(), 4),
            Err(HeaderError::SizeMismatch { .. })
        ));
        let stored_raw = Header {
            flags: 0,
            ..sample()
        };
        assert!(matches!(
            build(stored_raw, 5),
            Err(HeaderError::BadLength {
                field: "stored_len",
                ..
            })
        ));
        let dict_without_id = Header {
            flags: FLAG_ZSTD | FLAG_USES_DICT,
            ..sample()
        };
        assert_eq!(build(dict_without_id, 5), Err(HeaderError::BadFlags(3)));
        let huge = Header {
            data_len: MAX_BLOCK_BYTES + 1,
            ..sample()
        };
        assert!(matches!(
            build(huge, 5),
            Err(HeaderError::BadLength {
                field: "data_len",
                ..
            })
        ));
        let unknown = Header {
            flags: 0x80 | FLAG_ZSTD,
            ..sample()
        };
        assert_eq!(build(unknown, 5), Err(HeaderError::BadFlags(0x81)));
    }
}
