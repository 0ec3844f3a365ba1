//! `cargo xtask test`: the full check CI runs, in order, stopping at the first failure:
//! setup, the test guest (`cargo xtask guest`, a no-op when up to date; the VM tests
//! boot it), `cargo fmt --check`, clippy on the host crates, clippy on the eBPF crate (with
//! the pinned nightly, for `bpfel-unknown-none`), the tests with nextest's `ci` profile
//! (`.config/nextest.toml`; JUnit report in `target/nextest/ci/junit.xml`), then a bounded
//! run of every fuzz target (`cargo xtask fuzz`, [`fuzz::DEFAULT_SECONDS`] each unless
//! `--fuzz-seconds` says otherwise), then the quick benchmark suite (`cargo xtask bench
//! --suite quick`, `--no-bench` skips it): it fails the run only when something could not
//! run, never on a FAIL or a No-Go; its report stays in `bench/results/`.
//!
//! The privileged tests (eBPF, network namespaces) need root; run as another user, this
//! says so loudly before and after the run.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{bench, cmd, fuzz, guest, setup, sys, toolchain::Toolchain};

/// The one crate that is built for the eBPF target instead of the host.
const EBPF_CRATE: &str = "dwcp-ebpf";

/// What the warning for non-root runs says.
const NOT_ROOT: &str = "not running as root: the privileged tests (eBPF programs, network \
                        namespaces) cannot do their job; run `cargo xtask test` as root";

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Do not run `cargo xtask setup` first.
    #[arg(long)]
    pub no_setup: bool,
    /// Run only the tests matching this nextest filterset, e.g. `test(/privileged::/)`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Seconds of fuzzing per fuzz target after the tests; 0 skips fuzzing.
    #[arg(long, value_name = "N", default_value_t = fuzz::DEFAULT_SECONDS)]
    pub fuzz_seconds: u64,
    /// The cargo-fuzz project (default: `fuzz/` at the workspace root).
    #[arg(long, value_name = "DIR")]
    pub fuzz_dir: Option<PathBuf>,
    /// Do not run the quick benchmark suite at the end.
    #[arg(long)]
    pub no_bench: bool,
    /// Extra arguments for `cargo nextest run` (after `--`).
    #[arg(last = true, value_name = "NEXTEST_ARGS")]
    pub nextest_args: Vec<String>,
}

/// Runs setup (unless disabled) and every check; fails at the first failing step.
pub fn run(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        setup::run(&setup::Options::default())?;
    }
    if !sys::is_root() {
        sys::warn_loudly(NOT_ROOT);
    }
    let result = run_steps(opts);
    if !sys::is_root() {
        sys::warn_loudly(NOT_ROOT);
    }
    result
}

/// Runs the checks one after the other.
fn run_steps(opts: &Options) -> Result<()> {
    let root = sys::workspace_root()?;
    let ebpf = Toolchain::ebpf(&root)?;
    println!("==> guest");
    guest::run(&guest::Options::default()).context("Step `guest` failed")?;
    for (name, mut command) in steps(&root, &ebpf, opts) {
        println!("==> {name}");
        cmd::run(&mut command).with_context(|| format!("Step `{name}` failed"))?;
    }
    println!("==> fuzz");
    fuzz::Project::new(&root, opts.fuzz_dir.as_deref())
        .and_then(|project| project.fuzz(None, opts.fuzz_seconds))
        .context("Step `fuzz` failed")?;
    if opts.no_bench {
        println!("==> bench (skipped: --no-bench)");
    } else {
        println!("==> bench");
        bench::run(&bench::Options::quick()).context("Step `bench` failed")?;
    }
    println!("test: all steps passed");
    Ok(())
}

/// The checks, each with a short name.
fn steps(root: &Path, ebpf: &Toolchain, opts: &Options) -> Vec<(&'static str, Command)> {
    let fmt = cmd::cargo(root, ["fmt", "--all", "--", "--check"]);
    let mut clippy = cmd::cargo(root, ["clippy", "--workspace", "--exclude", EBPF_CRATE]);
    clippy.args(["--all-targets", "--", "-D", "warnings"]);
    let plus = ebpf.plus();
    let mut clippy_ebpf = cmd::cargo(root, [plus.as_str(), "clippy", "-p", EBPF_CRATE]);
    clippy_ebpf.args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"]);
    clippy_ebpf.args(["--", "-D", "warnings"]);
    let mut nextest = cmd::cargo(root, ["nextest", "run", "--workspace"]);
    nextest.args(["--exclude", EBPF_CRATE]);
    nextest.args(["--profile", "ci"]);
    if let Some(filter) = &opts.filter {
        nextest.args(["-E", filter]);
    }
    nextest.args(&opts.nextest_args);
    vec![
        ("fmt", fmt),
        ("clippy", clippy),
        ("clippy (eBPF)", clippy_ebpf),
        ("nextest", nextest),
    ]
}
