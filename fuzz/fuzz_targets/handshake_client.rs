//! `handshake::client` reading the fuzz input as everything a server sends (its own
//! messages are discarded): what a client meets when it connects to an impostor.
//!
//! Checks: no panic, and never `Ok`: the input cannot prove the key over the client's
//! fresh nonce, so an `Ok` would mean trusting a server that does not hold the key.

#![no_main]

use std::sync::LazyLock;

use dwcp_agent::protocol::handshake::{self, Psk, Role};
use dwcp_fuzz::Wire;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<Psk> =
    LazyLock::new(|| Psk::new(b"fuzzing-key-the-input-never-sees").expect("key is long enough"));

fuzz_target!(|data: &[u8]| {
    let role = match data.first() {
        Some(b) if b & 1 != 0 => Role::Data {
            session: u64::from(*b),
        },
        _ => Role::Control,
    };
    let mut wire = Wire::new(data.get(1..).unwrap_or_default());
    let result = handshake::client(&mut wire, &KEY, role);
    assert!(
        result.is_err(),
        "trusted a server without the key: {result:?}"
    );
});
