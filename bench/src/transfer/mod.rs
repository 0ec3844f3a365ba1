//! Transfer goodput: a real `dwcp-agent send` against `iperf3 -P N` on loopback.
//!
//! One receiving agent (`dwcp-agent run --receive-dir`) serves the whole run. For each
//! stream count, every round moves the same number of bytes twice: once as a file with
//! `dwcp-agent send` (read from the page cache, written into the receive directory,
//! verified by BLAKE3 on both sides) and once with iperf3 (memory to memory), in
//! alternating order so drift on a noisy machine hits both alike; right after iperf3,
//! N iperf3 `-F` pairs, one per stream, move the same bytes from the page cache into
//! their own files in the receive directory (the file work dwcp does, around the same
//! TCP). For `auto` the agent
//! goes first and iperf3 gets the stream count the agent settled on. The verdict
//! compares medians; CPU per GB comes from the kernel (the agents' eBPF probes) and,
//! for iperf3, from its own getrusage figures.
//!
//! iperf3 never touches a disk, so by default neither does the agent: the source file is
//! read once before the rounds (it sits in the page cache) and the receive directory is
//! on tmpfs (`/dev/shm`). `--receive-dir` measures a real filesystem instead; the report
//! names the receive directory's filesystem either way.

mod destination;
mod report;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    agent::{self, SendRun},
    host::{agent_version, is_root, loadavg, modified_utc, source_state},
    iperf::{self, IperfRun},
    results,
    suite::plan::{IPERF_MAX_STREAMS, Streams},
    workload::{random_key, write_random},
};
use report::{draw, render, row};

/// Options of `dwcp-bench transfer`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Size of the file sent, in MiB (iperf3 moves the same number of bytes).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Stream counts to compare, comma-separated: numbers (1..=128) or `auto`.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,auto")]
    streams: Vec<Streams>,
    /// Rounds per stream count (the table shows medians).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Block size of the agent's transfer in KiB.
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// Goal: agent goodput as a percentage of iperf3's.
    #[arg(long, default_value_t = 90.0)]
    goal_percent: f64,
    /// The dwcp-agent binary [default: target/release/dwcp-agent of this workspace].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where the temporary source file goes [default: the system's temporary
    /// directory]; it is read once before the rounds so that it sits in the page cache.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Receive into this directory (a temporary directory is made inside it) to measure
    /// a disk [default: tmpfs at /dev/shm, so that only the transport is measured].
    #[arg(long)]
    receive_dir: Option<PathBuf>,
}

/// The agent's side of one round.
#[derive(Debug, Serialize)]
struct OursRound {
    #[serde(flatten)]
    run: SendRun,
    /// CPU seconds the receiving agent's threads used during the send (kernel).
    receiver_cpu_seconds: Option<f64>,
}

impl OursRound {
    fn gbps(&self) -> f64 {
        self.run.summary.goodput_bps / 1e9
    }

    fn process_gbps(&self) -> f64 {
        self.run.summary.bytes as f64 * 8.0 / self.run.process_seconds.max(1e-9) / 1e9
    }

    fn gb(&self) -> f64 {
        self.run.summary.bytes as f64 / 1e9
    }
}

/// One round: both contenders, in the order run.
#[derive(Debug, Serialize)]
struct Round {
    streams: String,
    round: usize,
    iperf3_first: bool,
    ours: Option<OursRound>,
    ours_error: Option<String>,
    iperf3: Option<IperfRun>,
    iperf3_error: Option<String>,
    /// iperf3 file to file (one `-F` pair per stream, see [`iperf::run_file_pairs`]),
    /// right after the plain run.
    iperf3_files: Option<IperfRun>,
    iperf3_files_error: Option<String>,
}

/// One line of the table: medians over the rounds of one stream count.
#[derive(Debug, Serialize)]
struct Row {
    streams: String,
    iperf3_streams: Vec<usize>,
    ours_gbps: Vec<f64>,
    iperf3_gbps: Vec<f64>,
    ours_median_gbps: Option<f64>,
    iperf3_median_gbps: Option<f64>,
    ratio_percent: Option<f64>,
    pass: Option<bool>,
    iperf3_files_gbps: Vec<f64>,
    iperf3_files_median_gbps: Option<f64>,
    /// dwcp's median over `iperf3 -F`'s: the same file work on both sides.
    ratio_files_percent: Option<f64>,
    ours_whole_command_median_gbps: Option<f64>,
    sender_cpu_s_per_gb: Option<f64>,
    receiver_cpu_s_per_gb: Option<f64>,
    iperf3_client_cpu_s_per_gb: Option<f64>,
    iperf3_server_cpu_s_per_gb: Option<f64>,
    retransmits_max: Option<u64>,
    iperf3_retransmits_max: Option<u64>,
    failed_rounds: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    size_bytes: u64,
    rounds: usize,
    block_kib: usize,
    goal_percent: f64,
    cpus: usize,
    kernel: String,
    iperf3_version: String,
    agent_binary: String,
    agent_version: String,
    root: bool,
    /// Commit of the workspace and whether `dwcp-agent/` had uncommitted changes
    /// (for the default binary).
    source: String,
    /// `/proc/loadavg` before and after (others share the machine).
    load_before: String,
    load_after: String,
    receiver_command: String,
    /// Where received files were written, with the filesystem's type.
    receive_dir: String,
    rows: Vec<Row>,
    details: Vec<Round>,
}

/// Runs the benchmark, prints the table and writes `report.md`, `report.json`,
/// `goodput.svg` and the raw outputs (`raw/`) into a results directory.
pub fn run(options: &Options) -> anyhow::Result<()> {
    if options.rounds == 0 || options.size_mib == 0 || options.streams.is_empty() {
        bail!("--rounds, --size-mib and --streams must be non-empty and positive");
    }
    if let Some(n) = options.streams.iter().find_map(|s| match s {
        Streams::Fixed(n) if *n > IPERF_MAX_STREAMS => Some(n),
        _ => None,
    }) {
        bail!("--streams {n}: iperf3 runs at most {IPERF_MAX_STREAMS} streams");
    }
    let built =
        agent::require_binary(&options.agent.clone().unwrap_or_else(agent::default_binary))?;
    let iperf3_version = iperf::version()?;
    let load_before = loadavg();
    let source_tree = if options.agent.is_some() {
        "a binary given with --agent".to_owned()
    } else {
        source_state()
    };
    let root = is_root();
    if !root {
        eprintln!(
            "Note: not root, so the agents cannot load their probes: CPU figures will be n/a"
        );
    }
    let dir = results::new_dir("transfer")?;
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).with_context(|| format!("Create {}", raw.display()))?;

    let tmp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("dwcp-transfer-")
        .tempdir_in(&tmp_parent)
        .with_context(|| format!("Create a temporary directory in {}", tmp_parent.display()))?;
    crate::interrupt::remove_on_signal(tmp.path());
    let size = options.size_mib << 20;
    let source = tmp
        .path()
        .join(format!("transfer-{}MiB.bin", options.size_mib));
    let receive = destination::ReceiveDir::create(options.receive_dir.as_deref())?;
    let recv_dir = receive.path().to_owned();
    let psk = tmp.path().join("psk");
    let config = tmp.path().join("agent.toml");
    // One binary for the whole run, even if someone rebuilds the workspace meanwhile.
    let agent_bin = tmp.path().join("dwcp-agent");
    std::fs::copy(&built, &agent_bin)
        .with_context(|| format!("Copy {} to {}", built.display(), agent_bin.display()))?;
    std::fs::write(&psk, random_key())?;
    std::fs::write(
        &config,
        "# empty: defaults, so no host configuration is read\n",
    )?;
    eprintln!(
        "Writing {} MiB of random data to {}",
        options.size_mib,
        source.display()
    );
    write_random(&source, size)?;
    destination::warm_page_cache(&source)?;

    let receiver = agent::Receiver::start(
        &agent_bin,
        &agent::ReceiverFiles {
            config: &config,
            dir: &recv_dir,
            psk: &psk,
            log_stem: &raw.join("receiver"),
        },
    )?;
    let receiver_command = receiver.command().to_owned();
    let target = recv_dir.join(source.file_name().unwrap_or_default());
    let ctx = RoundContext {
        agent: &agent_bin,
        source: &source,
        target: &target,
        recv_dir: &recv_dir,
        psk: &psk,
        to: receiver.data_addr,
        block_kib: options.block_kib,
        size,
        raw: &raw,
        receiver: &receiver,
    };
    let mut details = Vec::new();
    for &spec in &options.streams {
        for round in 0..options.rounds {
            let r = ctx.round(spec, round);
            eprintln!("{}", progress_line(&r, options.rounds));
            details.push(r);
        }
    }
    receiver.stop()?;

    let rows: Vec<Row> = options
        .streams
        .iter()
        .map(|spec| row(spec, &details, options.goal_percent))
        .collect();
    let report = Report {
        size_bytes: size,
        rounds: options.rounds,
        block_kib: options.block_kib,
        goal_percent: options.goal_percent,
        cpus: crate::host::cpus(),
        kernel: crate::host::kernel(),
        iperf3_version,
        agent_version: agent_version(&agent_bin),
        agent_binary: format!(
            "{} (modified {}), run as a copy at {}",
            built.display(),
            modified_utc(&built),
            agent_bin.display()
        ),
        root,
        source: source_tree,
        load_before,
        load_after: loadavg(),
        receiver_command,
        receive_dir: receive.describe(),
        rows,
        details,
    };
    let markdown = render(&report);
    println!("{markdown}");
    std::fs::write(dir.join("report.md"), &markdown)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    draw(&report, &dir.join("goodput.svg"))?;
    eprintln!("Report written to {}", dir.display());
    Ok(())
}

/// Everything a round needs.
struct RoundContext<'a> {
    agent: &'a Path,
    source: &'a Path,
    target: &'a Path,
    recv_dir: &'a Path,
    psk: &'a Path,
    to: SocketAddr,
    block_kib: usize,
    size: u64,
    raw: &'a Path,
    receiver: &'a agent::Receiver,
}

impl RoundContext<'_> {
    fn round(&self, spec: Streams, round: usize) -> Round {
        // Alternate who goes first; `auto` needs the agent's count before iperf3 runs.
        let iperf3_first = matches!(spec, Streams::Fixed(_)) && round % 2 == 1;
        let stem = |what: &str| {
            self.raw
                .join(format!("streams-{spec}-round-{round}-{what}"))
        };
        let mut r = Round {
            streams: spec.to_string(),
            round,
            iperf3_first,
            ours: None,
            ours_error: None,
            iperf3: None,
            iperf3_error: None,
            iperf3_files: None,
            iperf3_files_error: None,
        };
        let peer = |r: &mut Round, n: usize| {
            match iperf::run(n, self.size, &stem("iperf3")) {
                Ok(run) => r.iperf3 = Some(run),
                Err(err) => r.iperf3_error = Some(format!("{err:#}")),
            }
            let files = iperf::run_file_pairs(
                n,
                self.size,
                (self.source, self.recv_dir),
                &stem("iperf3-files"),
            );
            let cleaned = self.clean_receive_dir();
            match files.and_then(|run| cleaned.map(|()| run)) {
                Ok(run) => r.iperf3_files = Some(run),
                Err(err) => r.iperf3_files_error = Some(format!("{err:#}")),
            }
        };
        if let (true, Streams::Fixed(n)) = (iperf3_first, spec) {
            peer(&mut r, n);
        }
        match self.ours(spec, &stem("dwcp")) {
            Ok(ours) => r.ours = Some(ours),
            Err(err) => r.ours_error = Some(format!("{err:#}")),
        }
        if !iperf3_first {
            let n = match (spec, &r.ours) {
                (Streams::Fixed(n), _) => Some(n),
                (Streams::Auto, Some(ours)) => {
                    Some(ours.run.summary.streams.clamp(1, IPERF_MAX_STREAMS))
                }
                (Streams::Auto, None) => None,
            };
            match n {
                Some(n) => peer(&mut r, n),
                None => {
                    r.iperf3_error =
                        Some("not run: the agent's auto stream count is unknown".into())
                }
            }
        }
        r
    }

    fn ours(&self, spec: Streams, stem: &Path) -> anyhow::Result<OursRound> {
        self.clean_receive_dir()?;
        let before = self.receiver.cpu_seconds()?;
        let run = agent::send(
            self.agent,
            self.source,
            self.to,
            self.psk,
            &spec.to_string(),
            self.block_kib,
            stem,
        )?;
        let after = self.receiver.cpu_seconds()?;
        let received = std::fs::metadata(self.target)
            .with_context(|| format!("No received file at {}", self.target.display()))?
            .len();
        if received != self.size || run.summary.bytes != self.size {
            bail!(
                "Size mismatch: source {} bytes, received file {received}, summary {} \
                 (resumed blocks {})",
                self.size,
                run.summary.bytes,
                run.summary.resumed_blocks
            );
        }
        self.clean_receive_dir()?;
        Ok(OursRound {
            run,
            receiver_cpu_seconds: before.zip(after).map(|(b, a)| a - b),
        })
    }

    /// Removes received files (and any partial-transfer state) but keeps the directory.
    fn clean_receive_dir(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(self.recv_dir)? {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("Remove {}", path.display()))?;
        }
        Ok(())
    }
}

fn progress_line(r: &Round, rounds: usize) -> String {
    let ours = match (&r.ours, &r.ours_error) {
        (Some(o), _) => format!(
            "dwcp {:6.2} Gbit/s ({} streams)",
            o.gbps(),
            o.run.summary.streams
        ),
        (None, Some(e)) => format!("dwcp FAILED: {e}"),
        (None, None) => "dwcp -".into(),
    };
    let peer = |run: &Option<IperfRun>, error: &Option<String>, name: &str| match (run, error) {
        (Some(p), _) => format!(
            "{name} {:6.2} Gbit/s (-P {})",
            p.bits_per_second / 1e9,
            p.streams
        ),
        (None, Some(e)) => format!("{name} FAILED: {e}"),
        (None, None) => format!("{name} -"),
    };
    format!(
        "streams {:>4} round {}/{rounds}: {ours} | {} | {}",
        peer(&r.iperf3, &r.iperf3_error, "iperf3"),
        peer(&r.iperf3_files, &r.iperf3_files_error, "iperf3 -F"),
        r.streams,
        r.round + 1
    )
}
