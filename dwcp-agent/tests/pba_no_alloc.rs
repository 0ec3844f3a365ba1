//! The data path of the block allocator makes no heap allocation: after warm-up, cycles of
//! acquire -> fill -> zero-copy send over loopback -> drop (and `adapt`) allocate nothing
//! on the sending thread. A counting global allocator (one per test binary, hence this
//! file) counts, per thread, the allocations of threads that switched counting on.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    io::Read as _,
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

use common::counting_alloc::{CountingAllocator, count_this_thread, this_thread_allocations};
use dwcp_agent::pba::{BlockPool, PoolConfig, ZeroCopySender};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const BLOCK: usize = 128 << 10;
const WARM_UP: usize = 32;
const CYCLES: usize = 300;
const HEADER: &[u8] = b"DWCPBLK\0";

/// The byte at `offset` of the stream the sender writes in cycle `cycle`.
fn pattern(cycle: usize, offset: usize) -> u8 {
    (cycle.wrapping_mul(31) ^ offset.wrapping_mul(7) ^ (offset >> 11)) as u8
}

fn block_len(cycle: usize) -> usize {
    BLOCK - (cycle * 4099) % (BLOCK / 2)
}

#[test]
fn send_cycles_allocate_nothing_after_warm_up() {
    let pool = BlockPool::new(PoolConfig {
        block_size: BLOCK,
        min_blocks: 2,
        max_blocks: 8,
        ..PoolConfig::default()
    })
    .expect("pool");
    let mut sender = ZeroCopySender::new(&pool).expect("io_uring zero-copy sender");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");

    // The receiver reads into a buffer allocated up front and checks each cycle's bytes.
    let receiver = thread::spawn(move || {
        let mut buf = vec![0u8; BLOCK + HEADER.len()];
        for cycle in 0..WARM_UP + CYCLES {
            let len = HEADER.len() + block_len(cycle);
            server.read_exact(&mut buf[..len]).expect("read cycle");
            assert_eq!(&buf[..HEADER.len()], HEADER, "cycle {cycle}");
            for (offset, byte) in buf[HEADER.len()..len].iter().enumerate() {
                assert_eq!(
                    *byte,
                    pattern(cycle, offset),
                    "cycle {cycle} offset {offset}"
                );
            }
        }
        let mut rest = [0u8; 1];
        assert_eq!(
            server.read(&mut rest).expect("read end"),
            0,
            "Bytes after the last cycle"
        );
    });

    let fd = client.as_raw_fd();
    let cycle = |cycle: usize, sender: &mut ZeroCopySender| {
        let mut block = if cycle.is_multiple_of(2) {
            pool.try_acquire().expect("a free block")
        } else {
            pool.acquire(Duration::from_secs(10)).expect("a free block")
        };
        let len = block_len(cycle);
        for (offset, byte) in block.as_mut_full()[..len].iter_mut().enumerate() {
            *byte = pattern(cycle, offset);
        }
        block.set_len(len);
        sender
            .send_with_header(fd, HEADER, &block)
            .expect("zero-copy send");
        drop(block);
        pool.adapt();
    };

    for n in 0..WARM_UP {
        cycle(n, &mut sender);
    }
    count_this_thread(true);
    for n in WARM_UP..WARM_UP + CYCLES {
        cycle(n, &mut sender);
    }
    count_this_thread(false);
    let allocations = this_thread_allocations();

    client.shutdown(Shutdown::Write).expect("shutdown");
    receiver.join().expect("receiver");
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations in {CYCLES} send cycles"
    );
    assert_eq!(sender.stats().sends, (WARM_UP + CYCLES) as u64);
}

/// The counter does count: a guard against a test that passes because nothing is tracked.
#[test]
fn the_counting_allocator_counts() {
    count_this_thread(true);
    let v = std::hint::black_box(vec![1u8; 100]);
    count_this_thread(false);
    drop(v);
    assert!(this_thread_allocations() >= 1);
}
