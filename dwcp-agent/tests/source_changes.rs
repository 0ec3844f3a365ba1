//! A source file that changes under a transfer: a clear error, nothing under the final
//! name, and a later send of the file as it is now arrives bit-exact.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::fs::OpenOptions;

use common::receiver::{TestReceiver, assert_same, psk, random_file};
use dwcp_agent::amst::{
    AmstError,
    sender::{Hooks, SendOptions, StreamCount, send_file},
};

const BLOCK: usize = 256 << 10;

fn options(streams: usize) -> SendOptions {
    SendOptions {
        streams: StreamCount::Fixed(streams),
        block_size: BLOCK,
        ..SendOptions::default()
    }
}

#[test]
fn source_truncated_mid_transfer_is_a_clear_error_and_nothing_is_finalized() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let len = 40 * BLOCK + 1000;
    let src = random_file(src_dir.path(), "shrinks.bin", len);
    // The size is taken when the transfer starts; the file shrinks to half before the
    // first stream reads a block, so the blocks of the second half cannot be read.
    let truncate = |_| {
        OpenOptions::new()
            .write(true)
            .open(&src)
            .expect("open source")
            .set_len((len / 2) as u64)
            .expect("truncate source");
    };
    let hooks = Hooks {
        on_stream: Some(&truncate),
        on_progress: None,
    };
    let err = send_file(&src, rx.addr, &psk(), &options(3), None, &hooks)
        .expect_err("a source that shrank must fail the transfer");
    let text = dwcp_agent::error_chain(&err);
    assert!(
        matches!(err, AmstError::File { .. }) && text.contains("Source shrank"),
        "{text}"
    );
    assert!(
        !rx.path("shrinks.bin").exists(),
        "A failed transfer must not leave a file under the final name"
    );
    // Sending the file as it is now works and is bit-exact.
    send_file(&src, rx.addr, &psk(), &options(3), None, &Hooks::default())
        .expect("send the truncated file");
    assert_same(&src, &rx.path("shrinks.bin"));
}

#[test]
fn source_rewritten_during_the_transfer_is_refused_and_nothing_is_finalized() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let len = 24 * BLOCK;
    let src = random_file(src_dir.path(), "changes.bin", len);
    // Same size, new content, after the sender took the file's size and time: whatever
    // mix of old and new blocks went out, it must not be finalized as the file.
    let rewritten = std::sync::Once::new();
    let rewrite = |_| {
        rewritten.call_once(|| {
            let fresh = random_file(src_dir.path(), "fresh.bin", len);
            std::fs::copy(&fresh, &src).expect("rewrite source");
        });
    };
    let hooks = Hooks {
        on_stream: Some(&rewrite),
        on_progress: None,
    };
    let err = send_file(&src, rx.addr, &psk(), &options(2), None, &hooks)
        .expect_err("a source rewritten during the transfer must fail it");
    let text = dwcp_agent::error_chain(&err);
    assert!(
        text.contains("Source changed during the transfer"),
        "{text}"
    );
    assert!(
        !rx.path("changes.bin").exists(),
        "A failed transfer must not leave a file under the final name"
    );
    send_file(&src, rx.addr, &psk(), &options(2), None, &Hooks::default())
        .expect("send the rewritten file");
    assert_same(&src, &rx.path("changes.bin"));
}
