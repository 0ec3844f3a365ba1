//! Encoding a stream's blocks (`send --codec none|zstd|hde`): the sender encodes each
//! block as it is cut, in stream order; the receiver decodes in delivery order, which is
//! the same order, so HDE's index and history evolve identically on both sides.
//!
//! Each frame says how it is encoded ([`Codec`]): a zstd block that would not shrink
//! goes raw. HDE frames always go through the decoder (its state advances with every
//! block) and carry their own checksum of the decoded data.

use std::time::Duration;

use dwcp_hde::{Decoder, Encoder, HdeConfig};

use super::{auto_codec::AutoEncoder, codec_tally::Decision};
use crate::{amst::AmstError, protocol::frame::Codec, protocol::messages::CodecChoice};

/// Extra room a coded frame may need beyond the block size (HDE's header, page kinds
/// and the inline dictionary on the first block).
pub const CODED_SLACK: usize = 256 << 10;

/// Largest HDE index plus history a receiver keeps for one stream, in pages (4 GiB).
pub const MAX_HDE_PAGES: u64 = 1 << 20;

/// Largest frame payload for blocks of `block_size` bytes under `choice`.
pub fn max_payload(choice: &CodecChoice, block_size: usize) -> usize {
    if choice.is_none() {
        block_size
    } else {
        block_size * 2 + CODED_SLACK
    }
}

/// Validates a codec a peer asks for (bounds the receiver's memory).
pub fn validate(choice: &CodecChoice) -> Result<(), String> {
    match choice {
        CodecChoice::None => Ok(()),
        CodecChoice::Zstd { level } if (1..=19).contains(level) => Ok(()),
        CodecChoice::Zstd { level } => Err(format!("zstd level {level} outside 1..=19")),
        CodecChoice::Hde { config } => {
            let pages = u64::from(config.effective_index_slots())
                + u64::from(config.effective_history_slots());
            if pages > MAX_HDE_PAGES {
                Err(format!(
                    "HDE index and history of {pages} pages (at most {MAX_HDE_PAGES})"
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// The sender's encoder.
pub enum BlockEncoder {
    /// Raw blocks.
    None,
    /// zstd at a level.
    Zstd(zstd::bulk::Compressor<'static>),
    /// HDE.
    Hde(Box<Encoder>),
    /// HDE or raw per block, as measured fastest (`--codec auto`).
    Auto(Box<AutoEncoder>),
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Zstd(_) => "Zstd",
            Self::Hde(_) => "Hde",
            Self::Auto(_) => "Auto",
        })
    }
}

impl BlockEncoder {
    /// An encoder for `choice`.
    pub fn new(choice: &CodecChoice) -> Result<Self, AmstError> {
        Ok(match choice {
            CodecChoice::None => Self::None,
            CodecChoice::Zstd { level } => Self::Zstd(
                zstd::bulk::Compressor::new(*level)
                    .map_err(|e| AmstError::Invalid(format!("zstd level {level}: {e}")))?,
            ),
            CodecChoice::Hde { config } => Self::Hde(Box::new(Encoder::new(config))),
        })
    }

    /// The `--codec auto` encoder for a stream announced as `choice`, which must be HDE
    /// (the receiver then decodes HDE frames and takes raw ones).
    pub fn auto(choice: &CodecChoice) -> Result<Self, AmstError> {
        match choice {
            CodecChoice::Hde { config } => Ok(Self::Auto(Box::new(AutoEncoder::new(config)))),
            other => Err(AmstError::Invalid(format!(
                "--codec auto announces HDE, not {other:?}"
            ))),
        }
    }

    /// True for raw blocks (no encoding step at all).
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Tells an auto encoder how the transfer goes (see [`AutoEncoder::observe`]);
    /// returns its decision when it made one.
    pub fn observe(&mut self, wire_bytes: u64, waited: Duration) -> Option<Decision> {
        match self {
            Self::Auto(auto) => auto.observe(wire_bytes, waited),
            _ => None,
        }
    }

    /// The codec for the summary and why it was used.
    pub fn report(&self) -> (String, String) {
        match self {
            Self::None => ("none".into(), "asked for".into()),
            Self::Zstd(_) => ("zstd".into(), "asked for".into()),
            Self::Hde(_) => ("hde".into(), "asked for".into()),
            Self::Auto(auto) => match auto.choice() {
                Some(choice) => (format!("auto: {}", choice.option), choice.reason.clone()),
                None => (
                    "auto: hde".into(),
                    "the transfer ended before the first decision (sample blocks are HDE)".into(),
                ),
            },
        }
    }

    /// Encodes `raw` (starting at stream byte `offset`) into `out`; returns the codec
    /// the frame must carry.
    pub fn encode(
        &mut self,
        raw: &[u8],
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<Codec, AmstError> {
        out.clear();
        match self {
            Self::None => {
                out.extend_from_slice(raw);
                Ok(Codec::None)
            }
            Self::Zstd(compressor) => {
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                compressor
                    .compress_to_buffer(raw, out)
                    .map_err(|e| AmstError::Invalid(format!("zstd failed: {e}")))?;
                if out.len() >= raw.len() {
                    out.clear();
                    out.extend_from_slice(raw);
                    Ok(Codec::None)
                } else {
                    Ok(Codec::Zstd)
                }
            }
            Self::Hde(encoder) => {
                encoder
                    .encode_block(offset / dwcp_hde::PAGE_SIZE as u64, raw, out)
                    .map_err(|e| AmstError::Invalid(format!("HDE encoding failed: {e}")))?;
                Ok(Codec::Hde)
            }
            Self::Auto(auto) => auto.encode(raw, offset, out),
        }
    }
}

/// The receiver's decoder.
pub enum BlockDecoder {
    /// Raw blocks only.
    None,
    /// zstd.
    Zstd(zstd::bulk::Decompressor<'static>),
    /// HDE.
    Hde(Box<Decoder>),
}

impl std::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Zstd(_) => "Zstd",
            Self::Hde(_) => "Hde",
        })
    }
}

impl BlockDecoder {
    /// A decoder for a stream announced with `choice` (validated first).
    pub fn new(choice: &CodecChoice) -> Result<Self, String> {
        validate(choice)?;
        Ok(match choice {
            CodecChoice::None => Self::None,
            CodecChoice::Zstd { .. } => {
                Self::Zstd(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?)
            }
            CodecChoice::Hde { config } => Self::Hde(Box::new(Decoder::new(&HdeConfig {
                workers: 1,
                ..config.clone()
            }))),
        })
    }

    /// Decodes one frame's payload (encoded with `codec`, `raw_len` bytes once decoded)
    /// and returns the block's bytes: a raw payload as it is (no copy), anything else
    /// decoded into `out`. Refuses a codec the stream did not announce.
    pub fn decode<'a>(
        &mut self,
        codec: Codec,
        payload: &'a [u8],
        raw_len: u32,
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], String> {
        out.clear();
        let decoded: &[u8] = match (codec, self) {
            (Codec::None, _) => payload,
            (Codec::Zstd, Self::Zstd(decompressor)) => {
                out.reserve(raw_len as usize);
                decompressor
                    .decompress_to_buffer(payload, out)
                    .map_err(|e| format!("Corrupt zstd block: {e}"))?;
                out
            }
            (Codec::Hde, Self::Hde(decoder)) => {
                decoder
                    .decode_block(payload, out)
                    .map_err(|e| format!("Corrupt HDE block: {e}"))?;
                out
            }
            (codec, this) => {
                return Err(format!(
                    "Block encoded with {codec:?} in a stream announced as {this:?}"
                ));
            }
        };
        if decoded.len() != raw_len as usize {
            return Err(format!(
                "Block decoded to {} bytes, its header says {raw_len}",
                decoded.len()
            ));
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(choice: &CodecChoice, blocks: &[Vec<u8>]) {
        let mut enc = BlockEncoder::new(choice).unwrap();
        let mut dec = BlockDecoder::new(choice).unwrap();
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        let mut offset = 0u64;
        for raw in blocks {
            let codec = enc.encode(raw, offset, &mut wire).unwrap();
            let got = dec
                .decode(codec, &wire, raw.len() as u32, &mut back)
                .unwrap();
            assert_eq!(got, &raw[..]);
            offset += raw.len() as u64;
        }
    }

    fn blocks() -> Vec<Vec<u8>> {
        let text: Vec<u8> = b"guest memory page "
            .iter()
            .cycle()
            .take(1 << 16)
            .copied()
            .collect();
        let random: Vec<u8> = (0..65_536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        vec![vec![0; 1 << 16], text.clone(), random, text, vec![7; 5000]]
    }

    #[test]
    fn every_codec_round_trips_in_order() {
        round_trip(&CodecChoice::None, &blocks());
        round_trip(&CodecChoice::Zstd { level: 1 }, &blocks());
        let config = HdeConfig {
            workers: 1,
            ..HdeConfig::default()
        };
        round_trip(&CodecChoice::Hde { config }, &blocks());
    }

    #[test]
    fn a_codec_the_stream_did_not_announce_is_refused() {
        let mut dec = BlockDecoder::new(&CodecChoice::None).unwrap();
        let err = dec
            .decode(Codec::Zstd, b"x", 1, &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("announced"), "{err}");
    }

    #[test]
    fn corrupt_or_mislabelled_blocks_are_refused() {
        let choice = CodecChoice::Zstd { level: 1 };
        let mut enc = BlockEncoder::new(&choice).unwrap();
        let raw = vec![1u8; 10_000];
        let mut wire = Vec::new();
        assert_eq!(enc.encode(&raw, 0, &mut wire).unwrap(), Codec::Zstd);
        let mut dec = BlockDecoder::new(&choice).unwrap();
        let mut out = Vec::new();
        let err = dec
            .decode(Codec::Zstd, &wire, 10_001, &mut out)
            .unwrap_err();
        assert!(err.contains("header says"), "{err}");
        // A header that announces less than the block holds is refused too.
        assert!(dec.decode(Codec::Zstd, &wire, 9_999, &mut out).is_err());
        wire.truncate(wire.len() / 2);
        assert!(dec.decode(Codec::Zstd, &wire, 10_000, &mut out).is_err());
    }

    #[test]
    fn oversized_hde_memory_is_refused() {
        let config = HdeConfig {
            index_slots: 1 << 20,
            history_slots: 1 << 20,
            ..HdeConfig::default()
        };
        let err = BlockDecoder::new(&CodecChoice::Hde { config }).unwrap_err();
        assert!(err.contains("pages"), "{err}");
    }
}
