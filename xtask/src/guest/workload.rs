//! Building the `guest-workload` crate as a static binary for the guest: target
//! `x86_64-unknown-linux-musl` (Rust's musl target links statically with its own
//! self-contained C runtime, so the binary needs nothing from the guest), profile `guest`
//! (release, stripped, abort on panic; root `Cargo.toml`).

use std::{fs, path::Path};

use anyhow::{Context as _, Result, ensure};

use super::elf;
use crate::{cmd, toolchain::Toolchain};

/// The target the workload is built for.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The cargo profile it is built with.
pub const PROFILE: &str = "guest";
/// The package.
const PACKAGE: &str = "guest-workload";
/// Its binary.
const BINARY: &str = "dwcp-guest-workload";

/// Builds the workload (adding the target to `host` first if it is missing) and returns
/// the binary, checked to be statically linked.
pub fn build(root: &Path, target_dir: &Path, host: &Toolchain) -> Result<Vec<u8>> {
    if !host.missing_targets(&[TARGET])?.is_empty() {
        cmd::run(&mut cmd::new(
            "rustup",
            ["target", "add", "--toolchain", &host.channel, TARGET],
        ))?;
    }
    let mut cargo = cmd::cargo(root, ["build", "--quiet", "-p", PACKAGE, "--bin", BINARY]);
    cargo.args(["--profile", PROFILE, "--target", TARGET]);
    cargo.arg("--target-dir").arg(target_dir);
    cmd::run(&mut cargo)?;
    let path = target_dir.join(TARGET).join(PROFILE).join(BINARY);
    let bytes = fs::read(&path).with_context(|| format!("Cannot read {}", path.display()))?;
    ensure!(
        elf::is_static(&bytes).with_context(|| format!("Cannot inspect {}", path.display()))?,
        "{} asks for a dynamic loader: the guest has none",
        path.display()
    );
    Ok(bytes)
}
