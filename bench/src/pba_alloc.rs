//! `dwcp-bench pba`: latency of taking a block and giving it back, PBA pool against the
//! system allocator, side by side in one run (p50 / p99 / p99.9 per operation).
//!
//! Each operation is timed on its own with the monotonic clock; the clock's own cost (two
//! back-to-back reads) is measured in the same run and shown, not subtracted. Rounds
//! alternate between the two so that machine noise hits both alike.

use std::{hint::black_box, time::Instant};

use anyhow::Context as _;
use dwcp_agent::pba::{BlockPool, PoolConfig};

/// Options of `dwcp-bench pba`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Block size in KiB (a power of two, 64..=16384).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// Operations per round.
    #[arg(long, default_value_t = 200_000)]
    ops: usize,
    /// Rounds per subject (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Target for the pool's p99, in nanoseconds.
    #[arg(long, default_value_t = 100.0)]
    target_ns: f64,
}

/// Percentiles of one subject, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn percentiles(mut samples: Vec<u64>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(0) as f64
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// Times `ops` calls of `op`, one by one.
fn time_each(ops: usize, mut op: impl FnMut()) -> Vec<u64> {
    let mut samples = Vec::with_capacity(ops);
    for _ in 0..ops {
        let start = Instant::now();
        op();
        samples.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    samples
}

/// Runs the comparison and prints a Markdown table.
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
    let (mut pool_samples, mut system_samples, mut clock_samples) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let pool_round = || {
            time_each(options.ops, || {
                if let Some(b) = pool.try_acquire() {
                    drop(black_box(b));
                }
            })
        };
        let system_round = || {
            time_each(options.ops, || {
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
        clock_samples.extend(time_each(options.ops, || {}));
    }
    let (pool_p, system_p, clock_p) = (
        percentiles(pool_samples),
        percentiles(system_samples),
        percentiles(clock_samples),
    );
    println!(
        "## PBA block take + give back vs the system allocator\n\n{} KiB blocks, {} rounds \
         of {} operations each, alternating; nanoseconds per operation, clock cost included.\n",
        options.block_kib, options.rounds, options.ops
    );
    println!("| subject | p50 | p99 | p99.9 |\n|---|---|---|---|");
    for (name, p) in [
        ("PBA pool (`try_acquire` + drop)", pool_p),
        ("system allocator (`Vec::with_capacity` + drop)", system_p),
        ("clock alone (two reads)", clock_p),
    ] {
        println!("| {name} | {:.0} | {:.0} | {:.0} |", p.p50, p.p99, p.p999);
    }
    let verdict = if pool_p.p99 < options.target_ns {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "\nPool p99 {:.0} ns against the < {:.0} ns target: {verdict}; the system allocator's \
         p99 is {:.1}x the pool's.",
        pool_p.p99,
        options.target_ns,
        system_p.p99 / pool_p.p99.max(1.0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let p = percentiles((1..=1000).collect());
        assert_eq!(p.p50, 501.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
    }
}
