//! Ad-hoc measurements of the block allocator: acquire latency, and zero-copy send
//! against plain `write` over loopback TCP, side by side in one run.
//!
//! ```text
//! cargo run --release -p dwcp-agent --example pba_send -- [--block-kib 1024] [--gib 4]
//! ```
//!
//! Blocks are filled once with random bytes; each send iteration acquires a block, sends
//! it and drops it, so both paths move the same bytes from the same memory. A receiver
//! thread reads into one buffer and discards. On loopback the kernel copies zero-copy
//! data when it reaches the local receiver, so this measures the cost of the send paths,
//! not the saving on a real NIC.

use std::{
    hint::black_box,
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use dwcp_agent::pba::{BlockPool, PoolConfig, ZeroCopySender};

/// Options.
#[derive(Parser)]
struct Args {
    /// Block size in KiB (power of two, 64 ..= 16384).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// GiB sent per path and round.
    #[arg(long, default_value_t = 4)]
    gib: usize,
    /// Rounds of each path (alternating).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Acquire/drop iterations for the latency figure.
    #[arg(long, default_value_t = 2_000_000)]
    acquires: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = BlockPool::new(PoolConfig {
        block_size: args.block_kib << 10,
        min_blocks: 8,
        max_blocks: 64,
        ..PoolConfig::default()
    })?;
    acquire_latency(&pool, args.acquires)?;

    // Fill every block once.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut all = Vec::new();
    while let Some(mut block) = pool.try_acquire() {
        for word in block.as_mut_full().as_chunks_mut::<8>().0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *word = seed.to_le_bytes();
        }
        let capacity = block.capacity();
        block.set_len(capacity);
        all.push(block);
    }
    drop(all);

    let blocks = (args.gib << 30) / pool.block_size();
    let mut sender = ZeroCopySender::new(&pool).context("Zero-copy sender")?;
    println!(
        "send: {} KiB blocks, {} GiB per round, loopback TCP",
        args.block_kib, args.gib
    );
    for round in 1..=args.rounds {
        let write = send_run(&pool, blocks, |stream, block| {
            let mut stream: &TcpStream = stream;
            stream.write_all(block)?;
            Ok(())
        })?;
        let zc = send_run(&pool, blocks, |stream, block| {
            sender.send(stream.as_raw_fd(), block)?;
            Ok(())
        })?;
        println!(
            "  round {round}: write {:6.2} Gbit/s   io_uring SendZc {:6.2} Gbit/s",
            write, zc
        );
    }
    let stats = sender.stats();
    println!(
        "zero-copy sender: {} sends, {} resubmits, {} of them copied by the kernel, {} registrations",
        stats.sends, stats.resubmits, stats.copied_notifications, stats.registrations
    );
    Ok(())
}

/// Nanoseconds per `try_acquire` + drop, on one thread and on two at once; then the
/// blocking `acquire` when a block is free.
fn acquire_latency(pool: &BlockPool, iterations: usize) -> anyhow::Result<()> {
    let one = time_acquires(pool, iterations)?;
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(pool.acquire(Duration::from_secs(1))?);
    }
    let blocking = start.elapsed().as_nanos() as f64 / iterations as f64;
    let two: Vec<f64> = thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| time_acquires(pool, iterations)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("Thread panicked"))?)
            .collect::<anyhow::Result<_>>()
    })?;
    println!(
        "acquire+drop: try_acquire {one:.1} ns, acquire(timeout) {blocking:.1} ns (1 thread); \
         try_acquire {:.1} / {:.1} ns (2 threads at once)",
        two[0], two[1]
    );
    Ok(())
}

fn time_acquires(pool: &BlockPool, iterations: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..iterations {
        let block = pool.try_acquire().context("Pool exhausted")?;
        black_box(&block);
        drop(block);
    }
    Ok(start.elapsed().as_nanos() as f64 / iterations as f64)
}

/// Sends `blocks` blocks through `send` to a reading thread; returns Gbit/s.
fn send_run(
    pool: &BlockPool,
    blocks: usize,
    mut send: impl FnMut(&TcpStream, &dwcp_agent::pba::Block) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    let reader = thread::spawn(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 4 << 20];
        let mut total = 0u64;
        loop {
            let n = server.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..blocks {
        let mut block = pool.acquire(Duration::from_secs(10))?;
        let capacity = block.capacity();
        block.set_len(capacity);
        send(&client, &block)?;
        sent += block.len() as u64;
    }
    client.shutdown(Shutdown::Write)?;
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("Reader panicked"))??;
    let elapsed = start.elapsed().as_secs_f64();
    anyhow::ensure!(received == sent, "Received {received} of {sent} bytes");
    Ok(sent as f64 * 8.0 / elapsed / 1e9)
}
