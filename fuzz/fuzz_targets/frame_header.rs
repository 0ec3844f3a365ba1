//! `FrameHeader::decode` on any 48 bytes.
//!
//! Input: 48 header bytes, then optionally one flags byte (bit 0: give the header valid
//! magic and checksum first, so that the checks behind them are reached) and a
//! little-endian `max_payload` (default 1 MiB). Shorter inputs are ignored.
//!
//! Checks: no panic; an accepted header re-encodes to exactly the input bytes (every byte
//! is either checked or carried), respects `max_payload`, has `raw_len == payload_len`
//! when it carries no codec, and no Ack payload.

#![no_main]

use dwcp_agent::protocol::frame::{Codec, FrameHeader, FrameType, HEADER_LEN};
use dwcp_fuzz::fix_header;
use libfuzzer_sys::fuzz_target;

const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let mut bytes = *head;
    let (fix, max_payload) = match rest {
        [] => (false, DEFAULT_MAX_PAYLOAD),
        [flags, tail @ ..] => (
            flags & 1 != 0,
            tail.first_chunk::<4>()
                .map_or(DEFAULT_MAX_PAYLOAD, |b| u32::from_le_bytes(*b)),
        ),
    };
    if fix {
        fix_header(&mut bytes);
    }
    if let Ok(header) = FrameHeader::decode(&bytes, max_payload) {
        assert_eq!(
            header.encode(),
            bytes,
            "accepted header does not round-trip"
        );
        assert!(header.payload_len <= max_payload);
        if header.codec == Codec::None {
            assert_eq!(header.raw_len, header.payload_len);
        }
        assert!(header.kind != FrameType::Ack || header.payload_len == 0);
    }
});
