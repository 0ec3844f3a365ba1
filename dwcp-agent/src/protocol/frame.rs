//! Frame header: encoding, decoding and checks.
//!
//! Layout (little-endian, 48 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `DWCF` |
//! | 4 | 1 | [`FrameType`] |
//! | 5 | 1 | flags (0) |
//! | 6 | 1 | [`Codec`] |
//! | 7 | 1 | reserved (0) |
//! | 8 | 8 | frame number on this connection, from 1 |
//! | 16 | 8 | block sequence number |
//! | 24 | 8 | byte offset of the block in the transfer |
//! | 32 | 4 | payload length on the wire |
//! | 36 | 4 | decoded length |
//! | 40 | 4 | payload check: low 32 bits of the payload's XXH3-128 ([`payload_check`]) |
//! | 44 | 4 | CRC32C of bytes 0..44 |
//!
//! The payload check is cut from the same XXH3-128 that goes into the whole-transfer
//! digest (`amst::digest`) for a raw block, so each side hashes a block once: the sender
//! computes the hash, puts its low word in the header and records it for the digest; the
//! receiver recomputes it, compares the low word and records it. (Version 1 used a
//! CRC32C here, a second pass over every byte on each side.)

use std::io::{Read, Write};

use super::ProtocolError;

/// Size of an encoded header.
pub const HEADER_LEN: usize = 48;
const MAGIC: [u8; 4] = *b"DWCF";

/// Kinds of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// A block of transfer payload (data streams, sender to receiver).
    Data = 1,
    /// Acknowledges block `seq` as written (data streams, receiver to sender).
    Ack = 2,
    /// A JSON control message ([`super::messages`]), control connection.
    Control = 3,
}

/// How a payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Raw bytes.
    None = 0,
    /// One HDE frame (`dwcp_hde`), decoded in stream order.
    Hde = 1,
    /// One zstd frame.
    Zstd = 2,
}

/// A decoded, checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Kind.
    pub kind: FrameType,
    /// Payload codec.
    pub codec: Codec,
    /// Frame number on its connection.
    pub frame_no: u64,
    /// Block sequence number (Data, Ack).
    pub seq: u64,
    /// Byte offset of the block (Data).
    pub offset: u64,
    /// Payload bytes following the header.
    pub payload_len: u32,
    /// Length after decoding.
    pub raw_len: u32,
    /// Low 32 bits of the payload's XXH3-128 ([`payload_check`]).
    pub payload_check: u32,
}

/// The XXH3-128 of a payload, little-endian: its low word checks the frame, and for a
/// raw block the whole hash enters the transfer digest.
pub type PayloadHash = [u8; 16];

/// Hashes a payload (XXH3-128, little-endian).
pub fn payload_hash(payload: &[u8]) -> PayloadHash {
    twox_hash::XxHash3_128::oneshot(payload).to_le_bytes()
}

/// The header's payload check for a payload of hash `hash`: its low 32 bits.
pub fn payload_check(hash: &PayloadHash) -> u32 {
    u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]])
}

impl FrameHeader {
    /// Encodes the header, computing its own checksum.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.kind as u8;
        b[6] = self.codec as u8;
        b[8..16].copy_from_slice(&self.frame_no.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.offset.to_le_bytes());
        b[32..36].copy_from_slice(&self.payload_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.raw_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.payload_check.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; `max_payload` bounds the announced payload length.
    pub fn decode(b: &[u8; HEADER_LEN], max_payload: u32) -> Result<Self, ProtocolError> {
        if b[0..4] != MAGIC {
            return Err(ProtocolError::BadMagic { what: "frame" });
        }
        if crc32c::crc32c(&b[..44]) != le_u32(b, 44) {
            return Err(ProtocolError::HeaderChecksum);
        }
        let kind = match b[4] {
            1 => FrameType::Data,
            2 => FrameType::Ack,
            3 => FrameType::Control,
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unknown frame type {other}"
                )));
            }
        };
        if b[5] != 0 || b[7] != 0 {
            return Err(ProtocolError::Malformed("reserved bits set".into()));
        }
        let codec = match b[6] {
            0 => Codec::None,
            1 => Codec::Hde,
            2 => Codec::Zstd,
            other => return Err(ProtocolError::Malformed(format!("unknown codec {other}"))),
        };
        let header = Self {
            kind,
            codec,
            frame_no: le_u64(b, 8),
            seq: le_u64(b, 16),
            offset: le_u64(b, 24),
            payload_len: le_u32(b, 32),
            raw_len: le_u32(b, 36),
            payload_check: le_u32(b, 40),
        };
        if header.payload_len > max_payload {
            return Err(ProtocolError::TooLarge {
                len: u64::from(header.payload_len),
                max: u64::from(max_payload),
            });
        }
        if codec == Codec::None && header.raw_len != header.payload_len {
            return Err(ProtocolError::Malformed(format!(
                "raw length {} differs from payload length {} without a codec",
                header.raw_len, header.payload_len
            )));
        }
        if kind == FrameType::Ack && header.payload_len != 0 {
            return Err(ProtocolError::Malformed(
                "acknowledgement with a payload".into(),
            ));
        }
        Ok(header)
    }
}

fn le_u32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads frames from one connection, enforcing consecutive frame numbers.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    next_frame: u64,
    max_payload: u32,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a connection whose first frame will be number 1.
    pub fn new(inner: R, max_payload: u32) -> Self {
        Self {
            inner,
            next_frame: 1,
            max_payload,
        }
    }

    /// Reads the next header; `Ok(None)` on a clean end of stream between frames.
    pub fn read_header(&mut self) -> Result<Option<FrameHeader>, ProtocolError> {
        let mut buf = [0u8; HEADER_LEN];
        if !read_exact_or_eof(&mut self.inner, &mut buf)? {
            return Ok(None);
        }
        let header = FrameHeader::decode(&buf, self.max_payload)?;
        if header.frame_no != self.next_frame {
            return Err(ProtocolError::Replay {
                got: header.frame_no,
                expected: self.next_frame,
            });
        }
        self.next_frame += 1;
        Ok(Some(header))
    }

    /// Reads the payload announced by `header` into `buf`, checks it and returns its
    /// hash (for a raw block, the one the transfer digest takes).
    pub fn read_payload(
        &mut self,
        header: &FrameHeader,
        buf: &mut [u8],
    ) -> Result<PayloadHash, ProtocolError> {
        let len = header.payload_len as usize;
        let max = buf.len() as u64;
        let dst = buf.get_mut(..len).ok_or(ProtocolError::TooLarge {
            len: u64::from(header.payload_len),
            max,
        })?;
        read_exact(&mut self.inner, dst)?;
        let hash = payload_hash(dst);
        if payload_check(&hash) != header.payload_check {
            return Err(ProtocolError::PayloadChecksum { seq: header.seq });
        }
        Ok(hash)
    }

    /// The underlying connection.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Writes frames on one connection, numbering them.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    next_frame: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Wraps a connection; the first frame will be number 1.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            next_frame: 1,
        }
    }

    /// Builds the next header for a payload (numbering it) without writing anything.
    pub fn next_header(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        payload: &[u8],
    ) -> FrameHeader {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.next_coded_header(kind, seq, offset, (Codec::None, len), payload)
    }

    /// Builds the next header for a payload encoded with `codec` that decodes to
    /// `raw_len` bytes.
    pub fn next_coded_header(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        (codec, raw_len): (Codec, u32),
        payload: &[u8],
    ) -> FrameHeader {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.next_hashed_header(
            kind,
            seq,
            offset,
            (codec, raw_len),
            (len, &payload_hash(payload)),
        )
    }

    /// Builds the next header for a payload of `len` bytes whose hash the caller already
    /// computed (and records for the digest), without touching the payload.
    pub fn next_hashed_header(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        (codec, raw_len): (Codec, u32),
        (len, hash): (u32, &PayloadHash),
    ) -> FrameHeader {
        let header = FrameHeader {
            kind,
            codec,
            frame_no: self.next_frame,
            seq,
            offset,
            payload_len: len,
            raw_len,
            payload_check: payload_check(hash),
        };
        self.next_frame += 1;
        header
    }

    /// Writes one frame (header and payload) with a single vectored write loop.
    pub fn write_frame(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        let header = self.next_header(kind, seq, offset, payload).encode();
        write_all_vectored(&mut self.inner, &header, payload)?;
        Ok(())
    }

    /// Writes one frame (payload encoded with `coding.0`, `coding.1` bytes once
    /// decoded) whose payload hash the caller already computed.
    pub fn write_hashed_frame(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        (coding, payload): ((Codec, u32), &[u8]),
        hash: &PayloadHash,
    ) -> Result<(), ProtocolError> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let header = self
            .next_hashed_header(kind, seq, offset, coding, (len, hash))
            .encode();
        write_all_vectored(&mut self.inner, &header, payload)?;
        Ok(())
    }

    /// Writes one frame whose payload is encoded with `codec` and decodes to `raw_len`
    /// bytes.
    pub fn write_coded_frame(
        &mut self,
        kind: FrameType,
        seq: u64,
        offset: u64,
        coding: (Codec, u32),
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        let header = self
            .next_coded_header(kind, seq, offset, coding, payload)
            .encode();
        write_all_vectored(&mut self.inner, &header, payload)?;
        Ok(())
    }

    /// Flushes the connection.
    pub fn flush(&mut self) -> Result<(), ProtocolError> {
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying connection.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying connection, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Writes `a` then `b` with as few syscalls as possible.
fn write_all_vectored<W: Write>(w: &mut W, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        let bufs = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
        let n = match w.write_vectored(&bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// Fills `buf`; `Ok(false)` if the stream ended before the first byte.
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, ProtocolError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ProtocolError::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Fills `buf` completely; a premature end is [`ProtocolError::Closed`].
pub fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtocolError> {
    if buf.is_empty() || read_exact_or_eof(r, buf)? {
        Ok(())
    } else {
        Err(ProtocolError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> FrameHeader {
        FrameHeader {
            kind: FrameType::Data,
            codec: Codec::None,
            frame_no: 7,
            seq: 42,
            offset: 42 << 20,
            payload_len: 5,
            raw_len: 5,
            payload_check: payload_check(&payload_hash(b"hello")),
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(FrameHeader::decode(&h.encode(), 1 << 20).unwrap(), h);
    }

    #[test]
    fn corrupted_header_is_refused() {
        let mut b = sample().encode();
        b[20] ^= 1;
        assert!(matches!(
            FrameHeader::decode(&b, 1 << 20),
            Err(ProtocolError::HeaderChecksum)
        ));
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut h = sample();
        h.payload_len = 1 << 30;
        h.raw_len = 1 << 30;
        assert!(matches!(
            FrameHeader::decode(&h.encode(), 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn reader_refuses_replayed_frame_number() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_frame(FrameType::Data, 1, 0, b"a").unwrap();
        let first = w.get_mut().clone();
        let mut wire = first.clone();
        wire.extend_from_slice(&first);
        let mut r = FrameReader::new(&wire[..], 1024);
        let h = r.read_header().unwrap().unwrap();
        r.read_payload(&h, &mut [0u8; 16]).unwrap();
        let err = r.read_header().unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::Replay {
                    got: 1,
                    expected: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn reader_refuses_corrupted_payload_and_truncation() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_frame(FrameType::Data, 9, 0, b"payload").unwrap();
        let mut wire = w.get_mut().clone();
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        let mut r = FrameReader::new(&wire[..], 1024);
        let h = r.read_header().unwrap().unwrap();
        let err = r.read_payload(&h, &mut [0u8; 16]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::PayloadChecksum { seq: 9 }),
            "{err}"
        );
        let truncated = &w.get_mut()[..HEADER_LEN + 3];
        let mut r = FrameReader::new(truncated, 1024);
        let h = r.read_header().unwrap().unwrap();
        assert!(matches!(
            r.read_payload(&h, &mut [0u8; 16]),
            Err(ProtocolError::Closed)
        ));
        let mut r = FrameReader::new(&w.get_mut()[..10], 1024);
        assert!(matches!(r.read_header(), Err(ProtocolError::Closed)));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let mut b = [0u8; HEADER_LEN];
            b.copy_from_slice(&bytes);
            let _ = FrameHeader::decode(&b, 1 << 24);
        }

        #[test]
        fn decode_never_panics_with_valid_magic_and_crc(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let mut b = [0u8; HEADER_LEN];
            b.copy_from_slice(&bytes);
            b[0..4].copy_from_slice(&MAGIC);
            let crc = crc32c::crc32c(&b[..44]);
            b[44..48].copy_from_slice(&crc.to_le_bytes());
            let _ = FrameHeader::decode(&b, 1 << 24);
        }

        #[test]
        fn reader_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = FrameReader::new(&wire[..], 64);
            let mut buf = [0u8; 64];
            while let Ok(Some(h)) = r.read_header() {
                if r.read_payload(&h, &mut buf).is_err() { break; }
            }
        }

        #[test]
        fn any_header_round_trips(frame_no in 1u64.., seq in any::<u64>(), offset in any::<u64>(), len in 0u32..1024, check in any::<u32>()) {
            let h = FrameHeader { kind: FrameType::Data, codec: Codec::None, frame_no, seq, offset, payload_len: len, raw_len: len, payload_check: check };
            prop_assert_eq!(FrameHeader::decode(&h.encode(), 1024).unwrap(), h);
        }
    }
}
