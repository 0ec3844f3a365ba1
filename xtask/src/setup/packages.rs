//! Debian packages the tests and benchmarks use, installed with apt-get when missing.
//!
//! Presence is checked with `dpkg-query`; `apt-get update` runs only when something is
//! missing. Installing needs root: without it the packages are skipped with a warning.

use anyhow::{Result, anyhow};

use super::report::{Outcome, Report, installing};
use crate::{cmd, sys};

/// A Debian package and whether setup fails without it.
#[derive(Debug)]
struct Package {
    /// Debian package name.
    name: &'static str,
    /// Whether failing to install it fails setup (otherwise it is only a warning).
    required: bool,
}

/// A package setup fails without.
const fn required(name: &'static str) -> Package {
    Package {
        name,
        required: true,
    }
}

/// A package setup only warns about when it cannot install it.
const fn optional(name: &'static str) -> Package {
    Package {
        name,
        required: false,
    }
}

/// The packages, each with the tests that use it.
const PACKAGES: &[Package] = &[
    // `iperf3`: the reference TCP throughput (loopback, netns) that the transfer tests
    // and the macro benchmarks compare the agent's streams against.
    required("iperf3"),
    // `nft`: loss and reject rules (numgen random) of the WAN-emulation tests, since
    // this kernel has no netem.
    required("nftables"),
    // `ip` and `tc`: network namespaces, veth pairs and tbf rate limits of the
    // privileged network tests.
    required("iproute2"),
    // `ethtool`: turning offloads off on the test veth pairs so tbf shapes real packets.
    required("ethtool"),
    // `socat`: plain TCP peers and relays in the transport and migration-stream tests,
    // and the plain single-stream copy the benchmark suite compares against.
    required("socat"),
    // `prometheus` and `promtool`: the observability tests run a real Prometheus that
    // scrapes a real agent and evaluates every dashboard query and rule, and check the
    // configuration and rule files with `promtool`.
    required("prometheus"),
    // `qemu-system-x86_64`: the agent's VMs and the test guest (`cargo xtask guest`) in
    // the VM tests and migration benchmarks; `qemu-img` (qemu-utils) makes disk images.
    required("qemu-system-x86"),
    required("qemu-utils"),
    // `cpio`: reads back the guest's initramfs in the cpio writer's tests.
    required("cpio"),
    // `libibverbs-dev`, `librdmacm-dev`, `libclang-dev`: building the agent with the
    // `rdma` feature (rdma-sys binds ibverbs through bindgen), which `cargo xtask bench
    // --transport rdma` and clippy with `--features rdma` do.
    required("libibverbs-dev"),
    required("librdmacm-dev"),
    required("libclang-dev"),
    // `zstd`: the `zstd --long` / `--patch-from` command line `dwcp-bench hde` compares
    // the HDE codec against.
    required("zstd"),
    // `nc`: quick manual port checks when debugging those tests.
    optional("netcat-openbsd"),
];

/// Checks every package and installs the missing ones.
pub fn ensure(report: &mut Report) {
    let missing: Vec<&Package> = PACKAGES
        .iter()
        .filter(|p| {
            let present = is_installed(p.name);
            if present {
                report.record(p.name, Ok(Outcome::Present));
            }
            !present
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    if !sys::is_root() {
        let why = "root is needed to install Debian packages (run `cargo xtask setup` as root)";
        for p in missing {
            report.record(p.name, Ok(Outcome::Skipped(why.to_owned())));
        }
        return;
    }
    for p in &missing {
        installing(p.name, "installing with apt-get");
    }
    let (required, optional): (Vec<_>, Vec<_>) = missing.into_iter().partition(|p| p.required);
    let update = apt(&["update"]).err().map(|e| format!("{e:#}"));
    for group in [required, optional] {
        let failure = match (&update, group.is_empty()) {
            (_, true) => continue,
            (Some(err), false) => Some(err.clone()),
            (None, false) => {
                let mut args = vec!["install", "-y", "--no-install-recommends"];
                args.extend(group.iter().map(|p| p.name));
                apt(&args).err().map(|e| format!("{e:#}"))
            }
        };
        for p in group {
            report.record(p.name, outcome(p, failure.as_deref()));
        }
    }
}

/// The outcome for `package` after an install attempt that failed with `failure`, if any.
fn outcome(package: &Package, failure: Option<&str>) -> Result<Outcome> {
    if is_installed(package.name) {
        return Ok(Outcome::Installed("installed with apt-get".to_owned()));
    }
    let why = failure.unwrap_or("apt-get succeeded but dpkg does not list it as installed");
    if package.required {
        Err(anyhow!("{why}"))
    } else {
        Ok(Outcome::Skipped(format!(
            "optional package not installed: {why}"
        )))
    }
}

/// Whether dpkg lists `name` as installed.
fn is_installed(name: &str) -> bool {
    cmd::probe(&mut cmd::new("dpkg-query", ["-W", "-f=${Status}", name])).is_some_and(|s| {
        let words: Vec<&str> = s.split_whitespace().collect();
        words.get(1..3) == Some(&["ok", "installed"][..])
    })
}

/// Runs `apt-get <args>` non-interactively.
fn apt(args: &[&str]) -> Result<()> {
    let mut apt = cmd::new("apt-get", args);
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    cmd::run(&mut apt)
}
