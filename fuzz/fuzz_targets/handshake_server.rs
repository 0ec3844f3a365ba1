//! `handshake::server` reading the fuzz input as everything a client sends (its replies
//! are discarded).
//!
//! Checks: no panic, and never `Ok`: the input cannot hold a valid proof of a key it does
//! not know (the server's nonce is fresh), so an `Ok` would be authentication without
//! the key.

#![no_main]

use std::sync::LazyLock;

use dwcp_agent::protocol::handshake::{self, Psk};
use dwcp_fuzz::Wire;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<Psk> =
    LazyLock::new(|| Psk::new(b"fuzzing-key-the-input-never-sees").expect("key is long enough"));

fuzz_target!(|data: &[u8]| {
    let mut wire = Wire::new(data);
    // Every session is known, so that only the key stands between the input and `Ok`.
    let result = handshake::server(&mut wire, &KEY, |_| true);
    assert!(result.is_err(), "authenticated without the key: {result:?}");
});
