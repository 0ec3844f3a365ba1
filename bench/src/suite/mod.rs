//! `dwcp-bench suite`: the benchmark suite with its targets, report and Go/No-Go verdict.
//!
//! [`plan`] says what a suite runs; [`runner`] runs it over a [`link`] per profile, one
//! [`cases`] at a time, scraping the receiving agent ([`scrape`]); [`evaluate`] judges
//! the cases against the [`targets`] table; [`report`] writes `report.json`, `report.md`
//! and `junit.xml`, and [`plots`] the SVGs. The process fails only on errors (a case
//! that could not run, a missing tool), never on a FAIL or a No-Go.

pub mod cases;
pub mod codec;
pub mod evaluate;
pub mod link;
pub mod migration;
pub mod plan;
pub mod plots;
pub mod report;
pub mod runner;
pub mod scrape;
pub mod targets;

/// CPU time the hypervisor took while a case ran (shared with the WAN emulator's tests).
pub use dwcp_wan::steal;

use std::{
    net::{IpAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{agent, host, iperf, results, workload};
use plan::{Plan, Suite};
use report::{Machine, Report, TargetRow};
use runner::{Remote, Workspace};

/// Transport of the data streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Many TCP streams (AMST).
    Tcp,
    /// RDMA queue pairs (the transport itself is a later issue; this checks for a device).
    Rdma,
}

/// Options of `dwcp-bench suite`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Which suite: quick (a few minutes, CI), full (all profiles, 1..256 streams) or
    /// smoke (loopback, tiny transfers).
    #[arg(long, default_value = "quick")]
    pub suite: Suite,
    /// Link profiles to run instead of the suite's own (repeatable or comma-separated):
    /// `loopback` or an emulated profile's name.
    #[arg(long = "profile", value_delimiter = ',')]
    pub profiles: Vec<String>,
    /// Data transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// Run against a remote receiving agent on HOST (see docs/benchmarks.md for what to
    /// start there); needs --psk-file.
    #[arg(long, value_name = "HOST")]
    pub peer: Option<String>,
    /// The remote agent's data port.
    #[arg(long, default_value_t = 9478)]
    pub peer_data_port: u16,
    /// The remote agent's metrics port (serve it on an address this host reaches).
    #[arg(long, default_value_t = 9477)]
    pub peer_http_port: u16,
    /// The remote `iperf3 -s` port.
    #[arg(long, default_value_t = 5201)]
    pub peer_iperf3_port: u16,
    /// Pre-shared key file (required with --peer: the remote agent's key; otherwise a
    /// random one is made).
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Results directory [default: bench/results/<UTC time>-suite-<suite>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bytes per transfer in MiB, for every profile [default: the suite's].
    #[arg(long)]
    pub size_mib: Option<u64>,
    /// Rounds of every case [default: the suite's].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// TCP congestion control for dwcp's and iperf3's streams (e.g. bbr) [default: the
    /// kernel's].
    #[arg(long)]
    pub congestion: Option<String>,
    /// Block size of the agent's transfers in KiB.
    #[arg(long, default_value_t = 1024)]
    pub block_kib: usize,
    /// Guest-memory corpus for the codec rows (`cargo xtask corpus`) [default:
    /// target/dwcp-cache/corpus of this workspace, or $DWCP_CACHE_DIR/corpus].
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Also run the live-migration rows (QEMU native, multifd+zstd and dwcp migrating a
    /// 1 GiB TCG guest over wan-1g-50ms-0.1pct, ~5 min); the full suite always does.
    #[arg(long)]
    pub migration: bool,
    /// The dwcp-agent binary [default: target/release/dwcp-agent of this workspace].
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Where temporary files go (one filesystem) [default: the system's temporary
    /// directory].
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
}

impl Options {
    /// The plan these options ask for.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut plan = Plan::new(self.suite, &self.profiles);
        if let Some(mib) = self.size_mib {
            plan = plan.with_size_mib(mib);
        }
        if let Some(rounds) = self.rounds {
            plan.rounds = rounds;
        }
        plan.congestion.clone_from(&self.congestion);
        if self.peer.is_some() {
            if !self.profiles.is_empty() {
                bail!("--peer runs over the real link to that host: drop --profile");
            }
            plan.profiles = vec!["remote".into()];
            plan.bytes.truncate(1);
        }
        plan.validate().map_err(anyhow::Error::msg)?;
        Ok(plan)
    }
}

/// Checks the RDMA transport can run here; today it never can past the device check.
#[cfg(feature = "rdma")]
fn check_rdma() -> anyhow::Result<()> {
    let devices = dwcp_agent::amst::rdma::devices().context("RDMA is not available")?;
    bail!(
        "RDMA device(s) found ({}), but the RDMA transport is not implemented yet (a later \
         issue); run with --transport tcp",
        devices.join(", ")
    )
}

/// Without the `rdma` feature there is no way to look for a device.
#[cfg(not(feature = "rdma"))]
fn check_rdma() -> anyhow::Result<()> {
    bail!(
        "This dwcp-bench was built without the `rdma` feature: use `cargo xtask bench \
         --transport rdma`, which builds it"
    )
}

fn remote(options: &Options) -> anyhow::Result<Option<Remote>> {
    let Some(host) = &options.peer else {
        return Ok(None);
    };
    let addr: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => (host.as_str(), options.peer_data_port)
            .to_socket_addrs()
            .with_context(|| format!("Cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?
            .ip(),
    };
    Ok(Some(Remote {
        host: host.clone(),
        addr,
        data_port: options.peer_data_port,
        http_port: options.peer_http_port,
        iperf3_port: options.peer_iperf3_port,
    }))
}

fn tool_version(program: &str, arg: &str, install: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .arg(arg)
        .output()
        .with_context(|| {
            format!("Cannot run {program} (install it: `{install}`, or `cargo xtask setup`)")
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs the suite, writes the report and prints the verdict; fails when something could
/// not run (after writing the report).
pub fn run(options: &Options) -> anyhow::Result<()> {
    if options.transport == Transport::Rdma {
        check_rdma()?;
    }
    let plan = options.plan()?;
    let remote = remote(options)?;
    if remote.is_some() && options.psk_file.is_none() {
        bail!("--peer needs --psk-file (the remote agent's pre-shared key)");
    }
    let started = Instant::now();
    let started_utc = results::now_stamp()?;
    let built =
        agent::require_binary(&options.agent.clone().unwrap_or_else(agent::default_binary))?;
    let iperf3_version = iperf::version()?;
    let socat_version = tool_version("socat", "-V", "apt-get install socat")?;
    let socat_version = socat_version
        .lines()
        .find(|l| l.contains("socat version"))
        .unwrap_or(&socat_version)
        .to_owned();
    let load_before = host::loadavg();
    let root = host::is_root();
    if !root {
        eprintln!(
            "Note: not root, so the agents cannot load their probes: kernel figures will be n/a"
        );
    }
    let dir = match &options.out {
        Some(dir) => dir.clone(),
        None => results::new_dir(&format!("suite-{}", plan.suite))?,
    };
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).with_context(|| format!("Create {}", raw.display()))?;
    let tmp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("dwcp-suite-")
        .tempdir_in(&tmp_parent)
        .with_context(|| format!("Create a temporary directory in {}", tmp_parent.display()))?;
    crate::interrupt::remove_on_signal(tmp.path());
    let agent_bin = tmp.path().join("dwcp-agent");
    std::fs::copy(&built, &agent_bin)
        .with_context(|| format!("Copy {} to {}", built.display(), agent_bin.display()))?;
    let psk = match &options.psk_file {
        Some(p) => p.clone(),
        None => {
            let p = tmp.path().join("psk");
            std::fs::write(&p, workload::random_key())?;
            p
        }
    };
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        "# empty: defaults, so no host configuration is read\n",
    )?;
    let ws = Workspace {
        agent: &agent_bin,
        tmp: tmp.path(),
        psk: &psk,
        config: &config,
        raw: &raw,
        block_kib: options.block_kib,
    };

    let mut links = Vec::new();
    let mut cases = Vec::new();
    let mut commands = Vec::new();
    let mut errors = Vec::new();
    for (profile, &bytes) in plan.profiles.iter().zip(&plan.bytes) {
        let source = tmp.path().join(format!("source-{}MiB.bin", bytes >> 20));
        if !source.exists() {
            eprintln!(
                "Writing {} MiB of random data to {}",
                bytes >> 20,
                source.display()
            );
            workload::write_random(&source, bytes)?;
        }
        eprintln!("== profile {profile}");
        let run = runner::run_profile(&plan, profile, &source, bytes, &ws, remote.as_ref());
        errors.extend(run.errors);
        errors.extend(run.cases.iter().filter_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("{} [{}] round {}: {e}", c.label(), c.profile, c.round + 1))
        }));
        commands.extend(run.commands);
        commands.extend(run.cases.iter().flat_map(|c| c.commands.iter().cloned()));
        links.push(run.link);
        cases.extend(run.cases);
    }

    let mut metrics = evaluate::evaluate(&links, &cases);
    let corpus = options.corpus.clone().unwrap_or_else(codec::default_dir);
    let (codec_rows, codec) = codec::evaluate(&corpus, options.block_kib * 1024);
    metrics.extend(codec_rows);
    let (vm_rows, migration) = if options.migration || options.suite == Suite::Full {
        migration::evaluate(options.agent.clone(), &dir.join("migration"))
    } else {
        (
            migration::not_measured(migration::NOT_ASKED),
            migration::MigrationData::default(),
        )
    };
    metrics.extend(vm_rows);
    let verdict = targets::verdict(&metrics);
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        plan,
        transport: "tcp".into(),
        peer: options.peer.clone(),
        started_utc,
        wall_seconds: started.elapsed().as_secs_f64(),
        machine: Machine {
            hostname: host::hostname(),
            cpu_model: host::cpu_model(),
            cpus: host::cpus(),
            memory_bytes: host::memory_bytes(),
            kernel: host::kernel(),
            load_before,
            load_after: host::loadavg(),
            root,
            iperf3_version,
            socat_version,
        },
        source: format!(
            "{} (agent binary {}, modified {})",
            host::source_state(),
            built.display(),
            host::modified_utc(&built)
        ),
        agent_version: host::agent_version(&agent_bin),
        block_kib: options.block_kib,
        links,
        commands,
        cases,
        targets: targets::ALL.iter().map(TargetRow::from).collect(),
        metrics,
        codec,
        migration,
        verdict,
        errors,
    };
    report::write_all(&report, &dir)?;
    plots::draw(&dir, &report.links, &report.cases)?;
    print_summary(&report, &dir);
    if !report.errors.is_empty() {
        bail!(
            "{} error(s) during the run (report in {}):\n{}",
            report.errors.len(),
            dir.display(),
            report.errors.join("\n")
        );
    }
    Ok(())
}

fn print_summary(report: &Report, dir: &Path) {
    println!("{}", report::markdown::metrics_table(report));
    println!("Verdict: {}", report.verdict);
    for b in &report.verdict.blocking {
        println!("  - {b}");
    }
    println!("Wall time: {:.0} s", report.wall_seconds);
    let contended = report::markdown::contention_warning(report);
    if !contended.is_empty() {
        println!("{}", contended.trim_end().replace("**", ""));
    }
    println!("Report: {}", dir.join("report.md").display());
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn options(args: &[&str]) -> Options {
        Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).options
    }

    #[test]
    fn options_make_the_plan() {
        let plan = options(&[
            "--suite",
            "full",
            "--profile",
            "lan-1g,loopback",
            "--rounds",
            "1",
        ])
        .plan()
        .unwrap();
        assert_eq!(plan.suite, Suite::Full);
        assert_eq!(plan.profiles, ["lan-1g", "loopback"]);
        assert_eq!(plan.rounds, 1);
        let plan = options(&["--congestion", "bbr", "--size-mib", "8"])
            .plan()
            .unwrap();
        assert_eq!(plan.congestion.as_deref(), Some("bbr"));
        assert_eq!(plan.bytes, [8 << 20]);
    }

    #[test]
    fn contradictory_or_empty_options_are_refused() {
        let err = options(&["--peer", "h", "--profile", "lan-1g"])
            .plan()
            .unwrap_err();
        assert!(err.to_string().contains("drop --profile"), "{err}");
        assert!(options(&["--rounds", "0"]).plan().is_err());
        assert!(Cli::try_parse_from(["x", "--suite", "slow"]).is_err());
        assert!(Cli::try_parse_from(["x", "--transport", "udp"]).is_err());
        let plan = options(&["--peer", "10.0.0.2"]).plan().unwrap();
        assert_eq!(plan.profiles, ["remote"]);
    }

    #[test]
    fn rdma_stops_with_a_clear_message() {
        let err = check_rdma().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("No RDMA device found (")
                || text.contains("without the `rdma` feature")
                || text.contains("not implemented yet"),
            "{text}"
        );
    }
}
