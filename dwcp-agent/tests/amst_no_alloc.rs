//! The AMST data path makes no heap allocation per block, on either side. A transfer
//! allocates a fixed amount (threads, connections, tables sized once); the test runs the
//! same transfer with 64 and with 1024 blocks, sender and receiver in this process, and
//! checks that the extra 960 blocks cost (next to) no extra allocation. The periodic
//! resume record (every 16 MiB) is the only allocation that grows with size, a few per
//! record, far below one per block.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{io::Write as _, os::unix::net::UnixStream, thread};

use common::{
    counting_alloc::{CountingAllocator, count_process, process_allocations},
    receiver::{TestReceiver, psk, random_file},
};
use dwcp_agent::amst::{
    sender::{Hooks, SendOptions, StreamCount, send_file},
    stream::send::send_stream,
};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const BLOCK: usize = 64 << 10;
const FEW: usize = 64;
const MANY: usize = 1024;
/// Allowed extra allocations per extra block: one in eight would already be a leak of
/// the kind this test is for (per-block allocation is at least one per block).
const PER_BLOCK_LIMIT: f64 = 1.0 / 8.0;

fn options() -> SendOptions {
    SendOptions {
        streams: StreamCount::Fixed(4),
        block_size: BLOCK,
        ..SendOptions::default()
    }
}

/// Runs `transfer` with process-wide counting on; returns the allocations it made.
fn counted(transfer: impl FnOnce()) -> u64 {
    let before = process_allocations();
    count_process(true);
    transfer();
    count_process(false);
    process_allocations() - before
}

fn assert_flat(what: &str, few: u64, many: u64) {
    eprintln!("{what}: {FEW} blocks: {few} allocations, {MANY} blocks: {many}");
    let extra = many.saturating_sub(few) as f64;
    let blocks = (MANY - FEW) as f64;
    assert!(
        extra < blocks * PER_BLOCK_LIMIT,
        "{what}: {FEW} blocks made {few} allocations, {MANY} blocks made {many}: \
         {:.2} per extra block",
        extra / blocks
    );
}

#[test]
fn file_transfer_allocates_nothing_per_block() {
    let rx = TestReceiver::start();
    let src = tempfile::tempdir().expect("tempdir");
    let small = random_file(src.path(), "small.bin", FEW * BLOCK);
    let large = random_file(src.path(), "large.bin", MANY * BLOCK);
    let send = |path: &std::path::Path| {
        send_file(path, rx.addr, &psk(), &options(), None, &Hooks::default()).expect("send");
    };
    send(&small); // warm-up: lazily created pools, thread-locals, tracing
    let few = counted(|| send(&small));
    let many = counted(|| send(&large));
    assert_flat("file transfer", few, many);
}

#[test]
fn stream_transfer_allocates_nothing_per_block() {
    let rx = TestReceiver::start();
    let chunk = vec![0x5au8; BLOCK];
    let send = |name: &str, blocks: usize| {
        let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
        let chunk = chunk.clone();
        let feeder = thread::spawn(move || {
            for _ in 0..blocks {
                theirs.write_all(&chunk).expect("feed");
            }
        });
        send_stream(ours, name, rx.addr, &psk(), &options(), &Hooks::default()).expect("send");
        feeder.join().expect("feeder");
    };
    send("warm", FEW);
    let few = counted(|| send("few", FEW));
    let many = counted(|| send("many", MANY));
    assert_flat("stream transfer", few, many);
}

/// The counter does count: a guard against a test that passes because nothing is tracked.
#[test]
fn the_process_counter_counts() {
    let n = counted(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert!(n >= 1);
}
