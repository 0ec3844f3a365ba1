//! `cargo xtask setup`: install everything building and testing need, idempotently.
//!
//! Every item is checked first and installed only when missing, so a second run is a
//! quick no-op printing one `ok: already present` line per item. The items, in order:
//! Debian packages (root only), the host toolchain (with the musl target for the guest's
//! workload) and cargo-nextest, the eBPF nightly
//! with `rust-src`, cargo-fuzz (run with that nightly), bpf-linker linked against that
//! nightly's libLLVM, and a mounted tracefs (root only). Missing root is a warning, a
//! failed item an error.

mod bpf_linker;
mod fuzz;
mod packages;
mod report;
mod rust;
mod tracefs;

use anyhow::Result;

use crate::{
    guest, sys,
    toolchain::{self, Toolchain},
};
use report::Report;

/// The component the eBPF nightly needs beyond those of its `rust-toolchain.toml`:
/// `cargo xtask test` lints the eBPF crate with that nightly's clippy.
const EBPF_CLIPPY: &str = "clippy";

/// Options of `cargo xtask setup` (none yet: every item is checked every time).
#[derive(Debug, Default, clap::Args)]
pub struct Options {}

/// Checks every item, installs the missing ones and prints a summary; fails if a
/// required item could not be installed.
pub fn run(_opts: &Options) -> Result<()> {
    let root = sys::workspace_root()?;
    // The musl target builds the guest's static workload binary (`cargo xtask guest`).
    let host = Toolchain::host(&root)?.with_target(guest::WORKLOAD_TARGET);
    let ebpf = Toolchain::ebpf(&root)?.with_component(EBPF_CLIPPY);
    let triple = toolchain::host_triple()?;
    println!("==> setup");
    if !sys::is_root() {
        sys::warn("not running as root: missing Debian packages or tracefs will be skipped");
    }
    let mut report = Report::default();
    packages::ensure(&mut report);
    rust::ensure_toolchain(&mut report, &host, &triple);
    rust::ensure_nextest(&mut report, &root, &host);
    rust::ensure_toolchain(&mut report, &ebpf, &triple);
    fuzz::ensure(&mut report, &root, &host);
    bpf_linker::ensure(&mut report, &host, &ebpf);
    tracefs::ensure(&mut report);
    let cargo_bin = sys::cargo_bin()?;
    if !sys::on_path(&cargo_bin) {
        sys::warn(format!(
            "{} is not on PATH: add it, or cargo-nextest, cargo-fuzz and bpf-linker will not \
             be found",
            cargo_bin.display()
        ));
    }
    report.finish()
}
