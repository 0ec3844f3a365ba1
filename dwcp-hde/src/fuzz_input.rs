//! The input format of the `hde_decode` fuzz target (`fuzz/fuzz_targets/hde_decode.rs`),
//! kept here so that its seeds are written by the real encoder on the stable toolchain
//! (`cargo test -p dwcp-hde --test fuzz_seeds -- --ignored`).
//!
//! Input: one mode byte (bit 0: give every frame a valid header CRC, so that mutated
//! headers reach the checks behind it; bits 1 to 4: levels L0 to L3 of the decoder's
//! configuration, which decide its geometry), then frames, each a u32 LE length and that many
//! bytes (the last one cut short if the input ends). The frames are decoded in order by
//! one decoder built from [`config`].

use crate::{
    config::{HdeConfig, Levels},
    frame::HEADER_LEN,
};

/// The configuration of the fuzzed decoder for `mode` (and of the encoder that writes
/// the seeds): small rings so that references to slots and pages not held are easy to
/// reach.
#[must_use]
pub fn config(mode: u8) -> HdeConfig {
    HdeConfig {
        levels: Levels {
            zero: mode & 2 != 0,
            dedup: mode & 4 != 0,
            delta: mode & 8 != 0,
            zstd: mode & 16 != 0,
        },
        index_slots: 16,
        history_slots: 32,
        dict_sample_pages: 8,
        dict_bytes: 1024,
        workers: 1,
        ..HdeConfig::default()
    }
}

/// The mode bits (1 to 4) that select `levels`.
#[must_use]
pub fn mode_of(levels: Levels) -> u8 {
    u8::from(levels.zero) << 1
        | u8::from(levels.dedup) << 2
        | u8::from(levels.delta) << 3
        | u8::from(levels.zstd) << 4
}

/// Splits a fuzz input into its mode byte and frames (repairing header CRCs if the mode
/// says so).
#[must_use]
pub fn split(input: &[u8]) -> (u8, Vec<Vec<u8>>) {
    let Some((&mode, mut rest)) = input.split_first() else {
        return (0, Vec::new());
    };
    let mut frames = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        let mut frame = frame.to_vec();
        if mode & 1 != 0 && frame.len() >= HEADER_LEN {
            let crc = crc32c::crc32c(&frame[..HEADER_LEN - 4]);
            frame[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        }
        frames.push(frame);
        rest = tail;
    }
    (mode, frames)
}

/// Joins frames into a fuzz input with the given mode byte.
#[must_use]
pub fn join(mode: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for frame in frames {
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}
