//! `dwcp-bench`: benchmarks that measure dwcp against a baseline in the same run.
//!
//! Each subcommand is one benchmark in its own module, printing a Markdown table and
//! writing JSON next to it under `bench/results/`.

mod loopback;
mod probe_overhead;
mod results;

use clap::{Parser, Subcommand};

/// dwcp benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Loopback TCP throughput with the eBPF probes attached vs detached (needs root).
    ProbeOverhead(probe_overhead::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::ProbeOverhead(options) => probe_overhead::run(&options),
    }
}
