//! `dwcp-bench`: benchmarks that measure dwcp against a baseline in the same run.
//!
//! Each subcommand is one benchmark in its own module, printing a Markdown table and
//! writing JSON next to it under `bench/results/`.

mod agent;
mod hde;
mod hde_baselines;
mod hde_corpus;
mod host;
mod interrupt;
mod iperf;
mod loopback;
mod migration;
mod pba_alloc;
mod plot;
mod probe_overhead;
mod process;
mod results;
mod stats;
mod suite;
mod transfer;
mod workload;

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
    /// PBA block take + give back against the system allocator (p50 / p99 / p99.9).
    Pba(pba_alloc::Options),
    /// Loopback goodput of a real `dwcp-agent send` against `iperf3 -P N` (root for CPU).
    Transfer(transfer::Options),
    /// The benchmark suite: every target, peers side by side, report and Go/No-Go.
    Suite(suite::Options),
    /// Live migration of a real guest over an emulated link: QEMU's methods side by side.
    Migration(migration::Options),
}

/// Runs the subcommand; on failure prints the error chain (no backtrace) and exits 1. A
/// signal stops the processes it started and exits with 128 + the signal ([`interrupt`]).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before any thread starts, so that every thread inherits the blocked signals.
    if let Err(err) = interrupt::install() {
        eprintln!("error: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::ProbeOverhead(options) => probe_overhead::run(&options),
        Command::Transfer(options) => transfer::run(&options),
        Command::Suite(options) => suite::run(&options),
        Command::Hde(options) => hde::run(&options),
        Command::Pba(options) => pba_alloc::run(&options),
        Command::Migration(options) => migration::run(&options),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
