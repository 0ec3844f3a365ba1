//! cargo-fuzz, which builds and runs the fuzz targets in `fuzz/` (`cargo xtask fuzz`, and
//! the fuzz step of `cargo xtask test`) with the eBPF nightly installed before it.

use std::path::Path;

use anyhow::{Result, ensure};

use super::report::{Outcome, Report, installing};
use crate::{cmd, toolchain::Toolchain};

/// Name of the setup item.
const ITEM: &str = "cargo-fuzz";

/// Makes sure `cargo fuzz` works, installing cargo-fuzz with the `host` toolchain.
pub fn ensure(report: &mut Report, root: &Path, host: &Toolchain) {
    report.record(ITEM, install(root, host));
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works.
fn install(root: &Path, host: &Toolchain) -> Result<Outcome> {
    let works = || cmd::probe(&mut cmd::cargo(root, ["fuzz", "--version"])).is_some();
    if works() {
        return Ok(Outcome::Present);
    }
    installing(ITEM, "installing with cargo install");
    let plus = host.plus();
    let args = [plus.as_str(), "install", "cargo-fuzz", "--locked"];
    cmd::run(&mut cmd::cargo(root, args))?;
    ensure!(
        works(),
        "`cargo fuzz --version` still fails after installing"
    );
    Ok(Outcome::Installed(
        "installed with cargo install".to_owned(),
    ))
}
