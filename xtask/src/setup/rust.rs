//! The pinned Rust toolchains (with their components) and cargo-nextest.

use std::path::Path;

use anyhow::{Result, ensure};

use super::report::{Outcome, Report, installing};
use crate::{cmd, toolchain::Toolchain};

/// Makes sure `toolchain` and its components are installed for the `host` triple.
pub fn ensure_toolchain(report: &mut Report, toolchain: &Toolchain, host: &str) {
    let item = format!("toolchain {}", toolchain.channel);
    let result = install_toolchain(&item, toolchain, host);
    report.record(&item, result);
}

/// Installs `toolchain` (or just its missing components and targets) unless all is there.
fn install_toolchain(item: &str, toolchain: &Toolchain, host: &str) -> Result<Outcome> {
    let outcome = install_components(item, toolchain, host)?;
    let targets = toolchain.missing_targets(&toolchain.targets)?;
    if targets.is_empty() {
        return Ok(outcome);
    }
    let what = format!("targets {}", targets.join(", "));
    installing(item, &format!("adding {what}"));
    let mut args = vec!["target", "add", "--toolchain", toolchain.channel.as_str()];
    args.extend(targets.iter().map(String::as_str));
    cmd::run(&mut cmd::new("rustup", args))?;
    let still = toolchain.missing_targets(&toolchain.targets)?;
    ensure!(
        still.is_empty(),
        "Still missing targets: {}",
        still.join(", ")
    );
    Ok(match outcome {
        Outcome::Installed(done) => Outcome::Installed(format!("{done}; added {what}")),
        _ => Outcome::Installed(format!("added {what}")),
    })
}

/// Installs `toolchain` (or just its missing components) unless all is there.
fn install_components(item: &str, toolchain: &Toolchain, host: &str) -> Result<Outcome> {
    let channel = toolchain.channel.as_str();
    let done = if toolchain.is_installed(host) {
        let missing = toolchain.missing_components(host)?;
        if missing.is_empty() {
            return Ok(Outcome::Present);
        }
        let what = format!("components {}", missing.join(", "));
        installing(item, &format!("adding {what}"));
        let mut args = vec!["component", "add", "--toolchain", channel];
        args.extend(missing.iter().map(String::as_str));
        cmd::run(&mut cmd::new("rustup", args))?;
        format!("added {what}")
    } else {
        installing(item, "installing with rustup");
        let components = toolchain.components.join(",");
        let mut args = vec!["toolchain", "install", channel, "--profile"];
        args.push(&toolchain.profile);
        if !components.is_empty() {
            args.extend(["-c", &components]);
        }
        cmd::run(&mut cmd::new("rustup", args))?;
        format!("installed with components {components}")
    };
    let missing = toolchain.missing_components(host)?;
    ensure!(
        missing.is_empty(),
        "Still missing components: {}",
        missing.join(", ")
    );
    Ok(Outcome::Installed(done))
}

/// Makes sure `cargo nextest` works, installing cargo-nextest with the `host` toolchain.
pub fn ensure_nextest(report: &mut Report, root: &Path, host: &Toolchain) {
    let result = install_nextest(root, host);
    report.record("cargo-nextest", result);
}

/// Installs cargo-nextest unless `cargo nextest --version` already works.
fn install_nextest(root: &Path, host: &Toolchain) -> Result<Outcome> {
    let works = || cmd::probe(&mut cmd::cargo(root, ["nextest", "--version"])).is_some();
    if works() {
        return Ok(Outcome::Present);
    }
    installing("cargo-nextest", "installing with cargo install");
    let plus = host.plus();
    let args = [plus.as_str(), "install", "cargo-nextest", "--locked"];
    cmd::run(&mut cmd::cargo(root, args))?;
    ensure!(
        works(),
        "`cargo nextest --version` still fails after installing"
    );
    Ok(Outcome::Installed(
        "installed with cargo install".to_owned(),
    ))
}
