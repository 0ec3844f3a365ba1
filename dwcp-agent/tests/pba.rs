//! The predictive block allocator: acquiring and releasing, back pressure, concurrency,
//! configuration errors, and zero-copy sending over real loopback TCP.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use dwcp_agent::pba::{BlockPool, Change, PbaError, PoolConfig, ZeroCopySender};

const KIB: usize = 1 << 10;

fn config(block_size: usize, min_blocks: usize, max_blocks: usize) -> PoolConfig {
    PoolConfig {
        block_size,
        min_blocks,
        max_blocks,
        ..PoolConfig::default()
    }
}

/// xorshift64*: reproducible random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A connected loopback pair: (sending side, receiving side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let client = TcpStream::connect(listener.local_addr().expect("local addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// Reads the stream to its end on a thread.
fn read_all_in_background(mut stream: TcpStream) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        stream.read_to_end(&mut out).expect("read stream");
        out
    })
}

#[test]
fn acquires_every_block_once_then_all_again_after_release() {
    let pool = BlockPool::new(config(64 * KIB, 2, 8)).unwrap();
    assert_eq!(pool.block_size(), 64 * KIB);
    let blocks: Vec<_> = (0..8).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(pool.try_acquire().is_none());
    let mut indices: Vec<u16> = blocks.iter().map(|b| b.buf_index()).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..8).collect::<Vec<u16>>());
    for block in &blocks {
        assert_eq!(block.capacity(), 64 * KIB);
        assert!(block.is_empty());
    }
    let stats = pool.stats();
    assert_eq!((stats.blocks_in_use, stats.peak_in_use), (8, 8));
    assert_eq!(stats.capacity_blocks, 8);
    drop(blocks);
    assert_eq!(pool.stats().blocks_in_use, 0);
    let again: Vec<_> = (0..8).map(|_| pool.try_acquire().unwrap()).collect();
    assert_eq!(again.len(), 8);
    assert_eq!(pool.stats().acquires, 16);
}

#[test]
fn exhausted_pool_times_out_then_wakes_on_release() {
    let pool = BlockPool::new(config(64 * KIB, 1, 2)).unwrap();
    let mut held: Vec<_> = (0..2).map(|_| pool.try_acquire().unwrap()).collect();

    let started = Instant::now();
    let err = pool.acquire(Duration::from_millis(50)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(
        matches!(err, PbaError::Timeout { capacity: 2, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("No free block within") && message.ends_with("all 2 blocks are in use"),
        "{message}"
    );
    assert_eq!(pool.stats().acquire_timeouts, 1);

    // A block dropped on another thread wakes the waiter.
    let block = held.pop().unwrap();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(block);
    });
    let got = pool.acquire(Duration::from_secs(10)).unwrap();
    releaser.join().unwrap();
    assert_eq!(got.capacity(), 64 * KIB);
    let stats = pool.stats();
    assert!(stats.acquire_wait_ns_total >= 60_000_000, "{stats:?}");
    assert_eq!(stats.acquire_timeouts, 1);
}

#[test]
fn concurrent_threads_never_share_a_block() {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 1000;
    // Fewer blocks than threads want at once, and an adapting thread releasing memory
    // meanwhile: every path of the free lists races.
    let pool = BlockPool::new(PoolConfig {
        block_size: 64 * KIB,
        min_blocks: 1,
        max_blocks: 6,
        headroom: 1.0,
        ewma_alpha: 1.0,
        shrink_after_steps: 1,
        huge_pages: false,
        prefault: true,
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let adapter = {
        let pool = pool.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut shrinks = 0;
            while !stop.load(Ordering::Relaxed) {
                if pool.adapt().change == Change::Shrink {
                    shrinks += 1;
                }
                thread::yield_now();
            }
            shrinks
        })
    };
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|id| {
            let pool = pool.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    let mut block = pool.acquire(Duration::from_secs(30)).unwrap();
                    let stamp = (id << 32 | round).to_le_bytes();
                    let full = block.as_mut_full();
                    for word in full.as_chunks_mut::<8>().0 {
                        *word = stamp;
                    }
                    block.set_len(block.capacity());
                    if round % 8 == 0 {
                        thread::yield_now();
                    }
                    for (at, word) in block.as_chunks::<8>().0.iter().enumerate() {
                        assert_eq!(
                            *word, stamp,
                            "Thread {id} round {round}: word {at} overwritten by another holder"
                        );
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked");
    }
    stop.store(true, Ordering::Relaxed);
    let shrinks = adapter.join().unwrap();
    let stats = pool.stats();
    assert_eq!(stats.blocks_in_use, 0);
    assert_eq!(stats.acquires, THREADS * ROUNDS);
    assert!(stats.peak_in_use <= 6);
    // Not guaranteed by scheduling, but with four threads cycling, demand does dip.
    println!(
        "shrinks: {shrinks}, released: {}",
        stats.blocks_released_total
    );
}

/// Blocks taken on some threads and dropped on others (as the data path does: a reader
/// fills, a stream thread sends and drops), through a pool much smaller than the demand
/// so that `acquire` parks and every release races a waiter. An ownership flag per block
/// index catches a block handed out twice; at the end every block is back.
#[test]
fn blocks_crossing_threads_are_never_handed_out_twice_and_all_come_back() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 3;
    const PER_PRODUCER: usize = 5_000;
    const BLOCKS: usize = 5;
    let pool = BlockPool::new(config(64 * KIB, 1, BLOCKS)).unwrap();
    let owned: Arc<Vec<AtomicBool>> =
        Arc::new((0..BLOCKS).map(|_| AtomicBool::new(false)).collect());
    let (tx, rx) = std::sync::mpsc::sync_channel::<dwcp_agent::pba::Block>(2);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = Arc::clone(&rx);
            let owned = Arc::clone(&owned);
            thread::spawn(move || {
                let mut seen = 0usize;
                loop {
                    let next = rx.lock().expect("receiver lock").recv();
                    let Ok(block) = next else { return seen };
                    let index = usize::from(block.buf_index());
                    assert_eq!(block[0], block[block.len() - 1], "Block {index} torn");
                    assert!(
                        owned[index].swap(false, Ordering::AcqRel),
                        "Block {index} not owned"
                    );
                    drop(block);
                    seen += 1;
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let (pool, tx, owned) = (pool.clone(), tx.clone(), Arc::clone(&owned));
            thread::spawn(move || {
                for round in 0..PER_PRODUCER {
                    let mut block = pool.acquire(Duration::from_secs(30)).expect("a block");
                    let index = usize::from(block.buf_index());
                    assert!(
                        !owned[index].swap(true, Ordering::AcqRel),
                        "Block {index} handed out twice"
                    );
                    let stamp = (id * 31 + round) as u8;
                    block.as_mut_full()[..4096].fill(stamp);
                    block.set_len(4096);
                    tx.send(block).expect("consumers alive");
                }
            })
        })
        .collect();
    drop(tx);
    for producer in producers {
        producer.join().expect("producer panicked");
    }
    let consumed: usize = consumers
        .into_iter()
        .map(|c| c.join().expect("consumer panicked"))
        .sum();
    assert_eq!(consumed, PRODUCERS * PER_PRODUCER);
    let stats = pool.stats();
    assert_eq!(stats.blocks_in_use, 0);
    assert_eq!(stats.acquires, (PRODUCERS * PER_PRODUCER) as u64);
    assert!(stats.peak_in_use <= BLOCKS);
    // All back: every block can be taken again, each once.
    let held: Vec<_> = (0..BLOCKS)
        .map(|_| pool.try_acquire().expect("all blocks free"))
        .collect();
    assert!(pool.try_acquire().is_none());
    let mut all: Vec<u16> = held.iter().map(|b| b.buf_index()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..BLOCKS as u16).collect::<Vec<_>>());
}

/// A block keeps its pool's memory alive after the last pool handle is gone.
#[test]
fn a_block_outlives_its_pool_handles() {
    let pool = BlockPool::new(config(64 * KIB, 1, 2)).unwrap();
    let mut block = pool.try_acquire().unwrap();
    let other = pool.clone();
    drop(pool);
    drop(other);
    block.as_mut_full().fill(0x5A);
    block.set_len(64 * KIB);
    let moved = thread::spawn(move || {
        assert!(block.iter().all(|b| *b == 0x5A));
        drop(block);
    });
    moved
        .join()
        .expect("dropping the last reference on another thread");
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let cases = [
        (
            config(3 * 64 * KIB, 1, 4),
            "Invalid pool setting block_size: 196608 is not a power of two",
        ),
        (
            config(4 * KIB, 1, 4),
            "Invalid pool setting block_size: 4096 is outside 65536..=16777216 (64 KiB to 16 MiB)",
        ),
        (
            config(32 << 20, 1, 4),
            "Invalid pool setting block_size: 33554432 is outside 65536..=16777216 (64 KiB to 16 MiB)",
        ),
        (
            config(64 * KIB, 5, 4),
            "Invalid pool setting min_blocks: 5 is outside 1..=max_blocks (4)",
        ),
        (
            config(64 * KIB, 1, 20_000),
            "Invalid pool setting max_blocks: 20000 is outside 1..=16384",
        ),
        (
            PoolConfig {
                headroom: f64::INFINITY,
                ..config(64 * KIB, 1, 4)
            },
            "Invalid pool setting headroom: inf is not a finite number of at least 1.0",
        ),
        (
            PoolConfig {
                ewma_alpha: 1.5,
                ..config(64 * KIB, 1, 4)
            },
            "Invalid pool setting ewma_alpha: 1.5 is outside (0, 1]",
        ),
    ];
    for (config, expected) in cases {
        let err = BlockPool::new(config).unwrap_err();
        assert!(matches!(err, PbaError::InvalidConfig { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn adapt_tracks_demand_with_hysteresis() {
    let pool = BlockPool::new(PoolConfig {
        block_size: 64 * KIB,
        min_blocks: 2,
        max_blocks: 64,
        headroom: 1.5,
        ewma_alpha: 0.5,
        shrink_after_steps: 3,
        huge_pages: false,
        prefault: true,
    })
    .unwrap();
    assert_eq!(pool.stats().target_blocks, 2);
    let burst: Vec<_> = (0..20).map(|_| pool.try_acquire().unwrap()).collect();
    let grow = pool.adapt();
    assert_eq!(grow.change, Change::Grow);
    assert_eq!(grow.target, 30);
    // Prefaulted up to the target, ahead of demand.
    assert_eq!(grow.blocks_prefaulted, 10);
    assert_eq!(pool.stats().bytes_committed_estimate, 30 * 64 * KIB);
    drop(burst);
    let mut steps = Vec::new();
    for _ in 0..6 {
        steps.push(pool.adapt());
    }
    // The burst's window, then two calm steps that hold, then the shrink.
    let changes: Vec<_> = steps.iter().map(|s| s.change).collect();
    assert_eq!(
        changes[..4],
        [Change::Hold, Change::Hold, Change::Hold, Change::Shrink]
    );
    let shrink = steps[3];
    assert!(shrink.target < 30 && shrink.blocks_released == 30 - shrink.target);
    let stats = pool.stats();
    assert_eq!(
        stats.bytes_committed_estimate,
        stats.target_blocks * 64 * KIB
    );
    assert!(stats.blocks_released_total >= 30 - shrink.target as u64);
}

/// A few hundred blocks of random lengths and contents, some after a header, all bytes
/// arriving in order.
#[test]
fn zero_copy_sends_arrive_bit_exact() {
    let pool = BlockPool::new(config(256 * KIB, 2, 8)).unwrap();
    let mut sender = ZeroCopySender::new(&pool).expect("io_uring zero-copy sender");
    let (client, server) = tcp_pair();
    let receiver = read_all_in_background(server);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut expected = Vec::new();
    for i in 0..300 {
        let mut block = pool.acquire(Duration::from_secs(5)).unwrap();
        let len = match i % 5 {
            0 => block.capacity(),
            1 => 1,
            2 => 0,
            _ => 1 + rng.below(block.capacity()),
        };
        rng.fill(&mut block.as_mut_full()[..len]);
        block.set_len(len);
        if i % 3 == 0 {
            let header = (i as u64).to_be_bytes();
            sender
                .send_with_header(client.as_raw_fd(), &header, &block)
                .unwrap();
            expected.extend_from_slice(&header);
        } else {
            sender.send(client.as_raw_fd(), &block).unwrap();
        }
        expected.extend_from_slice(&block);
    }
    client.shutdown(Shutdown::Write).unwrap();
    let received = receiver.join().unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(
        received == expected,
        "Received bytes differ from those sent"
    );
    let stats = sender.stats();
    assert_eq!(stats.sends, 300);
    assert_eq!(stats.bytes, expected.len() as u64);
    assert!(
        stats.registrations >= 1 && stats.registrations <= 8,
        "{stats:?}"
    );
}

/// A non-blocking socket and a slow reader: the sender must wait for room, not fail.
#[test]
fn zero_copy_send_waits_for_a_slow_reader_on_a_nonblocking_socket() {
    let pool = BlockPool::new(config(1 << 20, 1, 2)).unwrap();
    let mut sender = ZeroCopySender::new(&pool).unwrap();
    let (client, mut server) = tcp_pair();
    client.set_nonblocking(true).unwrap();
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * KIB];
        loop {
            let n = server.read(&mut buf).unwrap();
            if n == 0 {
                break out;
            }
            out.extend_from_slice(&buf[..n]);
            thread::sleep(Duration::from_millis(1));
        }
    });
    let mut rng = Rng(7);
    let mut expected = Vec::new();
    for _ in 0..12 {
        let mut block = pool.try_acquire().unwrap();
        rng.fill(block.as_mut_full());
        block.set_len(block.capacity());
        sender
            .send_with_header(client.as_raw_fd(), b"hdr:", &block)
            .unwrap();
        expected.extend_from_slice(b"hdr:");
        expected.extend_from_slice(&block);
    }
    client.shutdown(Shutdown::Write).unwrap();
    let received = reader.join().unwrap();
    assert!(
        received == expected,
        "Received bytes differ from those sent"
    );
}

#[test]
fn sending_to_a_closed_peer_is_an_error_not_a_panic() {
    let pool = BlockPool::new(config(1 << 20, 1, 2)).unwrap();
    let mut sender = ZeroCopySender::new(&pool).unwrap();
    let (client, server) = tcp_pair();
    drop(server);
    let mut block = pool.try_acquire().unwrap();
    block.set_len(block.capacity());
    let mut outcome = Ok(());
    for _ in 0..50 {
        outcome = sender.send_with_header(client.as_raw_fd(), b"x", &block);
        if outcome.is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let err = outcome.expect_err("Sending to a closed peer kept succeeding");
    let source = err.socket_error().expect("a socket error");
    assert!(
        matches!(
            source.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("Send failed after "), "{err}");
    assert!(!err.is_zero_copy_unavailable());
    // The sender stays usable for other sockets.
    let (client, server) = tcp_pair();
    let receiver = read_all_in_background(server);
    block.as_mut_full()[..3].copy_from_slice(b"abc");
    block.set_len(3);
    sender.send(client.as_raw_fd(), &block).unwrap();
    drop(client);
    assert_eq!(receiver.join().unwrap(), b"abc");
}

/// A peer that stops reading fills the socket buffers and blocks the send; shutting the
/// socket down from another thread ends it with an error.
#[test]
fn a_send_stuck_on_a_stalled_peer_ends_on_shutdown() {
    let pool = BlockPool::new(config(1 << 20, 1, 2)).unwrap();
    let mut sender = ZeroCopySender::new(&pool).unwrap();
    let (client, server) = tcp_pair();
    let closer = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            client.shutdown(Shutdown::Both).unwrap();
        })
    };
    let mut block = pool.try_acquire().unwrap();
    block.set_len(block.capacity());
    let started = Instant::now();
    let mut outcome = Ok(());
    for _ in 0..200 {
        outcome = sender.send(client.as_raw_fd(), &block);
        if outcome.is_err() {
            break;
        }
    }
    closer.join().unwrap();
    let err = outcome.expect_err("The stalled send never failed");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        err.socket_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::BrokenPipe),
        "{err:?}"
    );
    assert!(
        sender.stats().abandoned_notifications >= 1,
        "{:?}",
        sender.stats()
    );
    // Closing both ends frees the data the kernel held; its notification arrives late and
    // must not be taken for one of the next send's.
    drop((client, server));
    thread::sleep(Duration::from_millis(50));
    let (client, server) = tcp_pair();
    let receiver = read_all_in_background(server);
    let mut expected = Vec::new();
    for fill in 0..4u8 {
        block.as_mut_full().fill(fill);
        sender.send(client.as_raw_fd(), &block).unwrap();
        expected.extend_from_slice(&block);
    }
    drop(client);
    assert!(receiver.join().unwrap() == expected);
    println!("{:?}", sender.stats());
}

/// A block whose pages the pool released maps fresh pages; the sender must register
/// those, not keep sending the pages it pinned before.
#[test]
fn sender_follows_released_blocks() {
    let pool = BlockPool::new(PoolConfig {
        block_size: 64 * KIB,
        min_blocks: 1,
        max_blocks: 4,
        headroom: 1.0,
        ewma_alpha: 1.0,
        shrink_after_steps: 1,
        huge_pages: false,
        prefault: false,
    })
    .unwrap();
    let mut sender = ZeroCopySender::new(&pool).unwrap();
    let (client, server) = tcp_pair();
    let receiver = read_all_in_background(server);
    let mut expected = Vec::new();
    let mut send_all = |fill: u8, sender: &mut ZeroCopySender| {
        let mut blocks: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
        for (i, block) in blocks.iter_mut().enumerate() {
            block.as_mut_full().fill(fill + i as u8);
            block.set_len(block.capacity());
            sender.send(client.as_raw_fd(), block).unwrap();
            expected.extend_from_slice(block);
        }
        pool.adapt();
    };
    send_all(1, &mut sender);
    assert_eq!(sender.registered_blocks(), 4);
    // Demand drops: the next calls shrink to one block and release the other three.
    let released: usize = (0..3).map(|_| pool.adapt().blocks_released).sum();
    assert_eq!(released, 3);
    sender.sync_registrations().unwrap();
    assert_eq!(sender.registered_blocks(), 1);
    assert_eq!(sender.stats().unregistrations, 3);
    // The same blocks, refilled: what arrives must be the new contents.
    send_all(0x10, &mut sender);
    assert_eq!(sender.stats().registrations, 4 + 3);
    drop(client);
    let received = receiver.join().unwrap();
    assert!(received == expected, "Received stale block contents");
}

#[test]
fn a_block_of_another_pool_is_refused() {
    let pool = BlockPool::new(config(64 * KIB, 1, 2)).unwrap();
    let other = BlockPool::new(config(64 * KIB, 1, 2)).unwrap();
    let mut sender = ZeroCopySender::new(&pool).unwrap();
    let (client, _server) = tcp_pair();
    let mut block = other.try_acquire().unwrap();
    block.write_all(b"data").unwrap();
    let err = sender.send(client.as_raw_fd(), &block).unwrap_err();
    assert!(matches!(err, PbaError::ForeignBlock { .. }), "{err:?}");
    assert_eq!(sender.stats().sends, 0);
}
