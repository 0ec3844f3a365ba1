//! `dwcp-bench pba`: the block pool's take/give-back latency against the system allocator,
//! side by side in one run, and the pool's memory overhead over live data.
//!
//! # Latency method
//!
//! One "operation" is a take and a give-back: `try_acquire` + drop for the pool,
//! `Vec::with_capacity(block)` + drop for glibc (which hands back a cached chunk without
//! touching its pages). Two timings, rounds alternating between the subjects so machine
//! noise hits both alike:
//! - **batched** (the verdict): each sample times 64 operations back to back and is
//!   divided by 64, so the clock's cost (two reads, ~35 ns) is amortised to under 1 ns
//!   per operation; percentiles are over batches, so a preemption inside a batch raises
//!   that batch's figure by its share;
//! - **single**: each operation timed on its own; the clock's own cost (two back-to-back
//!   reads, measured in the same run) is printed beside it, not subtracted.
//!
//! # Memory method
//!
//! A steady demand of `--live-blocks` blocks in flight, every byte written, rotated
//! (oldest dropped, a new one taken and filled) with `adapt` every `--live-blocks`
//! rotations, as the agent calls it, until the predictor settled. Then the arena's
//! resident bytes as the kernel reports them (`mincore`), plus the pool's bookkeeping
//! on the heap, against the bytes of live data.

use std::{collections::VecDeque, hint::black_box, time::Instant};

use anyhow::Context as _;
use dwcp_agent::pba::{BlockPool, PoolConfig};

/// Operations per batched sample.
const BATCH: usize = 64;

/// Options of `dwcp-bench pba`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Block size in KiB (a power of two, 64..=16384).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// Operations per round.
    #[arg(long, default_value_t = 640_000)]
    ops: usize,
    /// Rounds per subject (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Target for the pool's p99, in nanoseconds.
    #[arg(long, default_value_t = 100.0)]
    target_ns: f64,
    /// Blocks in flight for the memory measurement.
    #[arg(long, default_value_t = 32)]
    live_blocks: usize,
    /// Target for the memory overhead, in percent of live data.
    #[arg(long, default_value_t = 5.0)]
    target_overhead_pct: f64,
}

/// Percentiles of one subject, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    samples.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(0.0)
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// Times `samples` runs of `per_sample` calls of `op`; each sample is nanoseconds per
/// call.
fn time_batches(samples: usize, per_sample: usize, mut op: impl FnMut()) -> Vec<f64> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        for _ in 0..per_sample {
            op();
        }
        let ns = start.elapsed().as_nanos() as f64;
        out.push(ns / per_sample as f64);
    }
    out
}

/// Latency percentiles of the three subjects for one way of timing.
struct Timing {
    pool: Percentiles,
    system: Percentiles,
    clock: Percentiles,
}

/// Runs the alternating rounds with `per_sample` operations per timed sample.
fn measure(pool: &BlockPool, block: usize, options: &Options, per_sample: usize) -> Timing {
    let samples = (options.ops / per_sample).max(1);
    let (mut pool_samples, mut system_samples, mut clock_samples) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let pool_round = || {
            time_batches(samples, per_sample, || {
                if let Some(b) = pool.try_acquire() {
                    drop(black_box(b));
                }
            })
        };
        let system_round = || {
            time_batches(samples, per_sample, || {
                drop(black_box(Vec::<u8>::with_capacity(block)));
            })
        };
        if round % 2 == 0 {
            pool_samples.extend(pool_round());
            system_samples.extend(system_round());
        } else {
            system_samples.extend(system_round());
            pool_samples.extend(pool_round());
        }
        clock_samples.extend(time_batches(samples, per_sample, || {}));
    }
    Timing {
        pool: percentiles(pool_samples),
        system: percentiles(system_samples),
        clock: percentiles(clock_samples),
    }
}

fn print_timing(title: &str, timing: &Timing) {
    println!("{title}\n\n| subject | p50 | p99 | p99.9 |\n|---|---|---|---|");
    for (name, p) in [
        ("PBA pool (`try_acquire` + drop)", timing.pool),
        (
            "system allocator (`Vec::with_capacity` + drop)",
            timing.system,
        ),
        ("clock alone (empty operation)", timing.clock),
    ] {
        println!("| {name} | {:.1} | {:.1} | {:.1} |", p.p50, p.p99, p.p999);
    }
    println!();
}

/// Figures of the memory measurement.
struct Memory {
    live_bytes: usize,
    resident_bytes: usize,
    metadata_bytes: usize,
    committed_estimate: usize,
    target_blocks: usize,
    headroom: f64,
}

impl Memory {
    /// `(resident + metadata - live) / live`, in percent.
    fn overhead_pct(&self) -> f64 {
        let total = (self.resident_bytes + self.metadata_bytes) as f64;
        (total - self.live_bytes as f64) / (self.live_bytes.max(1) as f64) * 100.0
    }
}

/// Holds `live` blocks in flight, all bytes written, rotating and adapting until the
/// predictor settled; then reads what the arena really has resident.
fn measure_memory(block: usize, live: usize) -> anyhow::Result<Memory> {
    let config = PoolConfig {
        block_size: block,
        max_blocks: (live * 4).max(64),
        ..PoolConfig::default()
    };
    let headroom = config.headroom;
    let pool = BlockPool::new(config).context("Cannot create the block pool")?;
    let take = || -> anyhow::Result<_> {
        let mut b = pool
            .try_acquire()
            .context("The pool ran out of blocks below its maximum")?;
        b.as_mut_full().fill(0xA5);
        let full = b.capacity();
        b.set_len(full);
        Ok(b)
    };
    let mut in_flight = VecDeque::with_capacity(live);
    for _ in 0..live {
        in_flight.push_back(take()?);
    }
    // Enough adapt calls for the predictor's average to converge and any shrink
    // hysteresis to run out (default: 10 calm steps).
    for _ in 0..40 {
        for _ in 0..live {
            drop(in_flight.pop_front());
            in_flight.push_back(take()?);
        }
        pool.adapt();
    }
    let stats = pool.stats();
    let resident = pool
        .resident_bytes()
        .context("Cannot read the arena's resident pages")?;
    let live_bytes = in_flight.iter().map(|b| b.len()).sum();
    Ok(Memory {
        live_bytes,
        resident_bytes: resident,
        metadata_bytes: stats.metadata_bytes,
        committed_estimate: stats.bytes_committed_estimate,
        target_blocks: stats.target_blocks,
        headroom,
    })
}

/// Runs the comparison and the memory measurement and prints Markdown.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let block = options.block_kib * 1024;
    let pool = BlockPool::new(PoolConfig {
        block_size: block,
        min_blocks: 4,
        max_blocks: 64,
        prefault: true,
        ..PoolConfig::default()
    })
    .context("Cannot create the block pool")?;
    let batched = measure(&pool, block, options, BATCH);
    let single = measure(&pool, block, options, 1);
    println!(
        "## PBA block take + give back vs the system allocator\n\n{} KiB blocks, {} rounds \
         of {} operations per subject, alternating; nanoseconds per operation (one take \
         and one give-back).\n",
        options.block_kib, options.rounds, options.ops
    );
    print_timing(
        &format!(
            "Batched: each sample times {BATCH} operations back to back and is divided by \
             {BATCH} (the clock's cost is amortised into the figures, see its row)."
        ),
        &batched,
    );
    print_timing(
        "Single: each operation timed on its own; the clock's cost is included in every \
         figure, not subtracted (see its row).",
        &single,
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "Pool p99 {:.1} ns per operation (batched) against the < {:.0} ns target: {}; \
         single-op p99 {:.1} ns of which the clock alone takes about {:.1} ns (its p50). The \
         system allocator's batched p99 is {:.1}x the pool's.\n",
        batched.pool.p99,
        options.target_ns,
        verdict(batched.pool.p99 < options.target_ns),
        single.pool.p99,
        single.clock.p50,
        batched.system.p99 / batched.pool.p99.max(0.1),
    );

    let memory = measure_memory(block, options.live_blocks)?;
    let mib = |bytes: usize| bytes as f64 / f64::from(1u32 << 20);
    println!(
        "## PBA memory overhead over live data\n\n{} blocks of {} KiB in flight, every byte \
         written, rotated with `adapt` after every {} rotations (40 times), default pool \
         settings (headroom {}); arena resident from `mincore`.\n",
        options.live_blocks, options.block_kib, options.live_blocks, memory.headroom
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| live data (blocks in flight × filled bytes) | {:.2} MiB |",
        mib(memory.live_bytes)
    );
    println!(
        "| arena resident (kernel, `mincore`) | {:.2} MiB |",
        mib(memory.resident_bytes)
    );
    println!(
        "| arena committed (pool's own estimate) | {:.2} MiB |",
        mib(memory.committed_estimate)
    );
    println!("| predictor target | {} blocks |", memory.target_blocks);
    println!(
        "| bookkeeping on the heap | {} bytes |",
        memory.metadata_bytes
    );
    let overhead = memory.overhead_pct();
    println!(
        "\nOverhead (resident + bookkeeping − live) / live = {overhead:.2}% against the \
         < {:.0}% target: {}.",
        options.target_overhead_pct,
        verdict(overhead < options.target_overhead_pct)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let p = percentiles((1..=1000).map(f64::from).collect());
        assert_eq!(p.p50, 501.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
    }

    #[test]
    fn batches_report_time_per_call() {
        let mut calls = 0;
        let samples = time_batches(3, 10, || calls += 1);
        assert_eq!(calls, 30);
        assert_eq!(samples.len(), 3);
    }

    #[test]
    fn overhead_counts_resident_and_bookkeeping_beyond_live() {
        let m = Memory {
            live_bytes: 100,
            resident_bytes: 104,
            metadata_bytes: 1,
            committed_estimate: 104,
            target_blocks: 1,
            headroom: 1.0,
        };
        assert_eq!(m.overhead_pct(), 5.0);
    }
}
