//! `cargo xtask`: everything a person would otherwise do by hand on this project.
//!
//! Each subcommand lives in its own module with its own options:
//! - `setup`: install what building and testing need (idempotent; a second run is a no-op);
//! - `test`: the full check CI runs (setup, the guest, fmt, clippy for host and eBPF,
//!   nextest, a bounded fuzz run);
//! - `guest`: build the small Linux guest (kernel, initramfs, self-checking workload) the
//!   VM tests and benchmarks boot;
//! - `corpus`: capture real guest-memory images (and QEMU's migration stream) under
//!   workloads, the data HDE is measured on;
//! - `fuzz`: run the cargo-fuzz targets in `fuzz/` for a bounded time each;
//! - `run`: build the agent in release and run it in the foreground (the main job);
//! - `install`: install the agent binary, its systemd unit and a default config;
//! - `bench`: build in release and run the benchmark suite (report and Go/No-Go).

mod bench;
mod cmd;
mod corpus;
mod fuzz;
mod guest;
mod install;
mod run;
mod setup;
mod sys;
mod test;
mod toolchain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project chores for dwcp"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, one module each.
#[derive(Debug, Subcommand)]
enum Command {
    /// Install packages, toolchains and bpf-linker this project needs (idempotent).
    Setup(setup::Options),
    /// Run setup, the guest build, fmt, clippy (host and eBPF), the test suite and the fuzz
    /// targets, as CI does.
    Test(test::Options),
    /// Build the test guest (Debian kernel + busybox initramfs + workload) if it changed.
    Guest(guest::Options),
    /// Capture guest-memory images under workloads (cached; the HDE benchmark's data).
    Corpus(corpus::Options),
    /// Run every fuzz target (or one) for a bounded time; a crash fails with its reproducer.
    Fuzz(fuzz::Options),
    /// Build the agent in release and run it in the foreground.
    Run(run::Options),
    /// Install the agent binary, its systemd unit and a default config.
    Install(install::Options),
    /// Build in release and run the benchmark suite: report, plots and Go/No-Go.
    Bench(bench::Options),
}

/// Runs the subcommand; on failure prints the error chain (without a backtrace, even
/// under `RUST_BACKTRACE`) and exits with status 1.
fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Guest(opts) => guest::run(&opts),
        Command::Corpus(opts) => corpus::run(&opts),
        Command::Fuzz(opts) => fuzz::run(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Install(opts) => install::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
