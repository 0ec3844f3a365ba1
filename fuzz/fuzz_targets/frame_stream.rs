//! Arbitrary bytes through `FrameReader::read_header` / `read_payload`, as a receiver
//! reads a data or control connection.
//!
//! Input: one mode byte, then the stream. Mode bits: 0 = give every header valid magic
//! and checksums first (`dwcp_fuzz::fix_stream`), so that frame numbering, lengths and
//! payload handling are reached; 1..=3 = deliver the stream in reads of at most
//! `2^(n-1)` bytes (0: unlimited); 4 = interrupt every other read (`EINTR`); 5 = read
//! payloads into a buffer smaller than the negotiated maximum.
//!
//! Checks: no panic, no endless loop; accepted headers are numbered 1, 2, 3, ..., respect
//! the maximum, and an accepted payload has the announced length and checksum.

#![no_main]

use dwcp_agent::protocol::frame::{FrameReader, payload_check, payload_hash};
use dwcp_fuzz::{Wire, fix_stream};
use libfuzzer_sys::fuzz_target;

/// Largest payload the reader accepts (small, so that inputs stay small).
const MAX_PAYLOAD: u32 = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixed;
    let stream = if mode & 1 != 0 {
        fixed = fix_stream(rest);
        &fixed[..]
    } else {
        rest
    };
    let chunk = match (mode >> 1) & 0b111 {
        0 => usize::MAX,
        n => 1 << (n - 1),
    };
    let wire = Wire::choppy(stream, chunk, mode & (1 << 4) != 0);
    let buf_len = if mode & (1 << 5) != 0 {
        64
    } else {
        MAX_PAYLOAD
    };
    let mut buf = vec![0u8; buf_len as usize];
    let mut reader = FrameReader::new(wire, MAX_PAYLOAD);
    let mut expected_frame = 1u64;
    while let Ok(Some(header)) = reader.read_header() {
        assert_eq!(
            header.frame_no, expected_frame,
            "frame numbers must be consecutive"
        );
        assert!(header.payload_len <= MAX_PAYLOAD);
        expected_frame += 1;
        let Ok(hash) = reader.read_payload(&header, &mut buf) else {
            break;
        };
        let payload = &buf[..header.payload_len as usize];
        assert_eq!(hash, payload_hash(payload));
        assert_eq!(payload_check(&hash), header.payload_check);
    }
});
