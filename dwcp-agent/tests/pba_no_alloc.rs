//! The data path of the block allocator makes no heap allocation: after warm-up, cycles of
//! acquire -> fill -> zero-copy send over loopback -> drop (and `adapt`) allocate nothing
//! on the sending thread. A counting global allocator (one per test binary, hence this
//! file) counts, per thread, the allocations of threads that switched counting on.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::Read as _,
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

use dwcp_agent::pba::{BlockPool, PoolConfig, ZeroCopySender};

/// The system allocator, counting the calls of threads whose `COUNTING` flag is set.
struct CountingAllocator;

thread_local! {
    /// Const-initialized and without destructor: using them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: Every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; counting touches only const thread-locals.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: The caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: As for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: As for `alloc`: `ptr` and `layout` come from this allocator, which is
        // `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: As for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

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
    COUNTING.set(true);
    for n in WARM_UP..WARM_UP + CYCLES {
        cycle(n, &mut sender);
    }
    COUNTING.set(false);
    let allocations = ALLOCATIONS.get();

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
    COUNTING.set(true);
    let v = std::hint::black_box(vec![1u8; 100]);
    COUNTING.set(false);
    drop(v);
    assert!(ALLOCATIONS.get() >= 1);
}
