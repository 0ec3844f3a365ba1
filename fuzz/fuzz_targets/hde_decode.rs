//! `dwcp_hde::Decoder` on a stream of frames (format: `dwcp_hde::fuzz_input`).
//!
//! Checks: no panic; every accepted frame decodes to exactly its announced length, and a
//! decoder that refused a frame in a way that changed its state refuses every later one.

#![no_main]

use dwcp_hde::{Decoder, frame::Header, fuzz_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mode, frames) = fuzz_input::split(data);
    let mut decoder = Decoder::new(&fuzz_input::config(mode));
    let mut out = Vec::new();
    // Once a frame failed after the decoder's state changed, nothing may be accepted.
    let mut poisoned = false;
    for frame in frames {
        match decoder.decode_block(&frame, &mut out) {
            Ok(info) => {
                assert!(!poisoned, "a poisoned decoder accepted a frame");
                let header = Header::parse(&frame).expect("an accepted frame has a valid header");
                assert_eq!(out.len(), header.data_len as usize);
                assert_eq!(info.first_page, header.first_page);
            }
            Err(err) => {
                assert!(!err.to_string().is_empty());
                poisoned |= !err.is_clean();
            }
        }
    }
});
