//! `cargo xtask bench`: builds `dwcp-agent` and `dwcp-bench` in release (with the `rdma`
//! feature for `--transport rdma`) and runs the benchmark suite, which writes
//! `bench/results/<UTC time>/report.md`, `report.json`, `junit.xml` and the plots. It
//! prints the verdict and the report's path. `--corpus` makes the guest-memory corpus
//! first (opt-in: several minutes); the codec rows use it whenever it exists.
//!
//! Exit status: success for both Go and No-Go; failure only when something could not
//! run (a build, a missing tool, a crashed case). So CI can run it without failing on a
//! noisy number.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::{cmd, sys};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// quick (a few minutes, runs in CI), full (every profile, 1..256 streams) or smoke
    /// (loopback, tiny transfers).
    #[arg(long, default_value = "quick", value_parser = ["quick", "full", "smoke"])]
    pub suite: String,
    /// Link profile(s) instead of the suite's own (repeatable): `loopback`, `lan-1g`,
    /// `metro-1g-5ms`, `wan-1g-50ms-0.1pct`, `intercontinental-500m-150ms-0.5pct`.
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// Data transport: tcp, or rdma (builds with the `rdma` feature; stops with a clear
    /// message when there is no RDMA device).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "rdma"])]
    pub transport: String,
    /// Make (or reuse) the guest-memory corpus first (`cargo xtask corpus`), so the
    /// codec rows are measured. Opt-in: it boots three 1 GiB TCG guests, several minutes
    /// on two cores. Without it the rows use an existing corpus, or say how to make one.
    #[arg(long)]
    pub corpus: bool,
    /// Run against a remote agent on HOST (see docs/benchmarks.md).
    #[arg(long, value_name = "HOST")]
    pub peer: Option<String>,
    /// The remote agent's pre-shared key file (with --peer).
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// More `dwcp-bench suite` options, after `--` (e.g. `-- --size-mib 64 --rounds 2`).
    #[arg(last = true, value_name = "SUITE_ARGS")]
    pub extra: Vec<String>,
}

impl Options {
    /// The quick suite with defaults (what `cargo xtask test` runs).
    pub fn quick() -> Self {
        Self {
            suite: "quick".into(),
            profiles: Vec::new(),
            transport: "tcp".into(),
            corpus: false,
            peer: None,
            psk_file: None,
            extra: Vec::new(),
        }
    }
}

/// Builds, runs the suite, prints the verdict and where the report is.
pub fn run(opts: &Options) -> Result<()> {
    let root = sys::workspace_root()?;
    if opts.corpus {
        crate::corpus::run(&crate::corpus::Options::default())?;
    }
    let mut build = cmd::cargo(
        &root,
        ["build", "--release", "-p", "dwcp-agent", "-p", "bench"],
    );
    if opts.transport == "rdma" {
        build.args(["--features", "bench/rdma"]);
    }
    cmd::run(&mut build).context("Building dwcp-agent and dwcp-bench failed")?;
    let out = root.join("bench/results").join(stamp()?);
    let bench = sys::target_dir(&root).join("release/dwcp-bench");
    let mut suite = cmd::new(&bench, ["suite", "--suite", opts.suite.as_str()]);
    suite.arg("--transport").arg(&opts.transport);
    suite.arg("--out").arg(&out);
    // The codec rows read the corpus where `cargo xtask corpus` writes it.
    suite.arg("--corpus").arg(crate::corpus::corpus_dir(&root));
    suite
        .arg("--agent")
        .arg(sys::target_dir(&root).join("release/dwcp-agent"));
    for profile in &opts.profiles {
        suite.arg("--profile").arg(profile);
    }
    if let Some(peer) = &opts.peer {
        suite.arg("--peer").arg(peer);
    }
    if let Some(psk) = &opts.psk_file {
        suite.arg("--psk-file").arg(psk);
    }
    suite.args(&opts.extra);
    suite.current_dir(&root);
    let result = cmd::run(&mut suite);
    report_location(&out);
    result.context("The benchmark suite could not run completely (see the errors above)")
}

/// Prints where the report is, if it was written.
fn report_location(out: &Path) {
    let report = out.join("report.md");
    if report.is_file() {
        println!("bench: report in {}", report.display());
    } else {
        println!(
            "bench: no report was written ({} is missing)",
            report.display()
        );
    }
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
fn stamp() -> Result<String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("Clock before 1970")?
        .as_secs();
    Ok(utc(secs))
}

/// `secs` after the Unix epoch as `YYYYMMDDTHHMMSSZ`.
fn utc(secs: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_dates() {
        assert_eq!(utc(0), "19700101T000000Z");
        assert_eq!(utc(951_782_400), "20000229T000000Z");
        assert_eq!(utc(1_795_000_000), "20261118T110640Z");
    }

    #[test]
    fn options_parse_and_refuse_unknown_values() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let cli = Cli::parse_from([
            "x",
            "--suite",
            "full",
            "--profile",
            "lan-1g",
            "--",
            "--rounds",
            "2",
        ]);
        assert_eq!(cli.options.suite, "full");
        assert_eq!(cli.options.profiles, ["lan-1g"]);
        assert_eq!(cli.options.extra, ["--rounds", "2"]);
        assert!(Cli::try_parse_from(["x", "--suite", "slow"]).is_err());
        assert!(Cli::try_parse_from(["x", "--transport", "udp"]).is_err());
        let quick = Options::quick();
        assert_eq!(
            (quick.suite.as_str(), quick.transport.as_str()),
            ("quick", "tcp")
        );
    }
}
