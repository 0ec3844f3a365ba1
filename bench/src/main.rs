//! `dwcp-bench`: benchmarks that measure dwcp against a baseline in the same run.
//!
//! Each subcommand is one benchmark in its own module, printing a Markdown table and
//! writing JSON next to it under `bench/results/`.

mod agent;
mod hde;
mod iperf;
mod loopback;
mod plot;
mod probe_overhead;
mod process;
mod results;
mod stats;
mod transfer;

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
    /// HDE vs zstd-1, zstd-3, an XBZRLE model and `zstd --long` on a real image.
    Hde(hde::Options),
    /// Loopback goodput of a real `dwcp-agent send` against `iperf3 -P N` (root for CPU).
    Transfer(transfer::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::ProbeOverhead(options) => probe_overhead::run(&options),
        Command::Transfer(options) => transfer::run(&options),
        Command::Hde(options) => hde::run(&options),
    }
}
