//! Transfer goodput: a real `dwcp-agent send` against `iperf3 -P N` on loopback.
//!
//! One receiving agent (`dwcp-agent run --receive-dir`) serves the whole run. For each
//! stream count, every round moves the same number of bytes twice: once as a file with
//! `dwcp-agent send` (read from the page cache, written into the receive directory,
//! verified by BLAKE3 on both sides) and once with iperf3 (memory to memory), in
//! alternating order so drift on a noisy machine hits both alike. For `auto` the agent
//! goes first and iperf3 gets the stream count the agent settled on. The verdict
//! compares medians; CPU per GB comes from the kernel (the agents' eBPF probes) and,
//! for iperf3, from its own getrusage figures.

use std::{
    fmt,
    fs::File,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context as _, bail};
use rand::RngCore as _;
use serde::Serialize;

use crate::{
    agent::{self, SendRun},
    iperf::{self, IperfRun},
    plot, results,
    stats::{median, median_some},
};

/// iperf3 refuses more parallel streams than this.
const IPERF_MAX_STREAMS: usize = 128;

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
    /// Where the temporary source file and receive directory go (one filesystem)
    /// [default: the system's temporary directory].
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
}

/// A stream count to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// This many streams on both sides.
    Fixed(usize),
    /// The agent chooses; iperf3 then uses the count the agent reports.
    Auto,
}

impl FromStr for Streams {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=IPERF_MAX_STREAMS).contains(&n) => Ok(Self::Fixed(n)),
                _ => Err(format!(
                    "expected `auto` or a number in 1..={IPERF_MAX_STREAMS}, got {s:?}"
                )),
            },
        }
    }
}

impl fmt::Display for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
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
    rows: Vec<Row>,
    details: Vec<Round>,
}

/// Runs the benchmark, prints the table and writes `report.md`, `report.json`,
/// `goodput.svg` and the raw outputs (`raw/`) into a results directory.
pub fn run(options: &Options) -> anyhow::Result<()> {
    if options.rounds == 0 || options.size_mib == 0 || options.streams.is_empty() {
        bail!("--rounds, --size-mib and --streams must be non-empty and positive");
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
    let size = options.size_mib << 20;
    let source = tmp
        .path()
        .join(format!("transfer-{}MiB.bin", options.size_mib));
    let recv_dir = tmp.path().join("recv");
    let psk = tmp.path().join("psk");
    let config = tmp.path().join("agent.toml");
    std::fs::create_dir(&recv_dir)?;
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
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
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
        };
        let peer = |r: &mut Round, n: usize| match iperf::run(n, self.size, &stem("iperf3")) {
            Ok(run) => r.iperf3 = Some(run),
            Err(err) => r.iperf3_error = Some(format!("{err:#}")),
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
    let peer = match (&r.iperf3, &r.iperf3_error) {
        (Some(p), _) => format!(
            "iperf3 {:6.2} Gbit/s (-P {})",
            p.bits_per_second / 1e9,
            p.streams
        ),
        (None, Some(e)) => format!("iperf3 FAILED: {e}"),
        (None, None) => "iperf3 -".into(),
    };
    format!(
        "streams {:>4} round {}/{rounds}: {ours} | {peer}",
        r.streams,
        r.round + 1
    )
}

fn row(spec: &Streams, details: &[Round], goal_percent: f64) -> Row {
    let label = spec.to_string();
    let rounds: Vec<&Round> = details.iter().filter(|r| r.streams == label).collect();
    let ours: Vec<&OursRound> = rounds.iter().filter_map(|r| r.ours.as_ref()).collect();
    let peers: Vec<&IperfRun> = rounds.iter().filter_map(|r| r.iperf3.as_ref()).collect();
    let ours_gbps: Vec<f64> = ours.iter().map(|o| o.gbps()).collect();
    let iperf3_gbps: Vec<f64> = peers.iter().map(|p| p.bits_per_second / 1e9).collect();
    let med = |v: &[f64]| (!v.is_empty()).then(|| median(v));
    let ours_median = med(&ours_gbps);
    let peer_median = med(&iperf3_gbps);
    let ratio = ours_median
        .zip(peer_median)
        .filter(|(_, p)| *p > 0.0)
        .map(|(o, p)| o / p * 100.0);
    let mut iperf3_streams: Vec<usize> = peers.iter().map(|p| p.streams).collect();
    iperf3_streams.sort_unstable();
    iperf3_streams.dedup();
    Row {
        streams: label,
        iperf3_streams,
        ours_median_gbps: ours_median,
        iperf3_median_gbps: peer_median,
        ratio_percent: ratio,
        pass: ratio.map(|r| r >= goal_percent),
        ours_whole_command_median_gbps: med(&ours
            .iter()
            .map(|o| o.process_gbps())
            .collect::<Vec<_>>()),
        sender_cpu_s_per_gb: median_some(
            ours.iter()
                .map(|o| o.run.summary.cpu_seconds.map(|c| c / o.gb())),
        ),
        receiver_cpu_s_per_gb: median_some(
            ours.iter()
                .map(|o| o.receiver_cpu_seconds.map(|c| c / o.gb())),
        ),
        iperf3_client_cpu_s_per_gb: median_some(peers.iter().map(|p| p.client_cpu_per_gb())),
        iperf3_server_cpu_s_per_gb: median_some(peers.iter().map(|p| p.server_cpu_per_gb())),
        retransmits_max: ours.iter().filter_map(|o| o.run.summary.retransmits).max(),
        iperf3_retransmits_max: peers.iter().filter_map(|p| p.retransmits).max(),
        failed_rounds: rounds
            .iter()
            .filter(|r| r.ours.is_none() || r.iperf3.is_none())
            .count(),
        ours_gbps,
        iperf3_gbps,
    }
}

/// Table label of a row: `auto` shows the counts the agent chose.
fn label(row: &Row) -> String {
    if row.streams == "auto" && !row.iperf3_streams.is_empty() {
        let counts: Vec<String> = row.iperf3_streams.iter().map(usize::to_string).collect();
        format!("auto ({})", counts.join(","))
    } else {
        row.streams.clone()
    }
}

fn render(r: &Report) -> String {
    let f2 = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
    let f3 = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
    let mut out = String::new();
    out.push_str(&format!(
        "## Transfer goodput vs iperf3 (loopback)\n\n\
         {} MiB per transfer, {} rounds per stream count (medians), {} KiB blocks; \
         {} CPUs, kernel {}, {}. Load average before {}, after {}.\n\n\
         Agent: {}; source: {}; binary: {}.\n\n",
        r.size_bytes >> 20,
        r.rounds,
        r.block_kib,
        r.cpus,
        r.kernel,
        r.iperf3_version,
        r.load_before,
        r.load_after,
        r.agent_version,
        r.source,
        r.agent_binary
    ));
    out.push_str(
        "| streams | dwcp Gbit/s | iperf3 Gbit/s | dwcp / iperf3 | target | \
         dwcp whole command Gbit/s | dwcp CPU s/GB sender / receiver | \
         iperf3 CPU s/GB client / server | retransmits dwcp / iperf3 |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &r.rows {
        let verdict = match row.pass {
            Some(true) => format!("PASS (≥ {:.0}%)", r.goal_percent),
            Some(false) => format!("FAIL (< {:.0}%)", r.goal_percent),
            None => "n/a".into(),
        };
        let failed = if row.failed_rounds > 0 {
            format!(" ({} failed rounds)", row.failed_rounds)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {}{failed} | {} | {} | {} | {verdict} | {} | {} / {} | {} / {} | {} / {} |\n",
            label(row),
            f2(row.ours_median_gbps),
            f2(row.iperf3_median_gbps),
            row.ratio_percent
                .map_or_else(|| "n/a".into(), |v| format!("{v:.0}%")),
            f2(row.ours_whole_command_median_gbps),
            f3(row.sender_cpu_s_per_gb),
            f3(row.receiver_cpu_s_per_gb),
            f3(row.iperf3_client_cpu_s_per_gb),
            f3(row.iperf3_server_cpu_s_per_gb),
            row.retransmits_max
                .map_or_else(|| "n/a".into(), |v| v.to_string()),
            row.iperf3_retransmits_max
                .map_or_else(|| "n/a".into(), |v| v.to_string()),
        ));
    }
    out.push_str(
        "\n- **dwcp Gbit/s**: `goodput_bps` of `dwcp-agent send --json` (payload over the \
         sender's own transfer clock, as the agent defines it); **whole command**: \
         the same bytes over the `send` process's lifetime (probe loading, handshake, \
         final digest check and rename included).\n\
         - **iperf3 Gbit/s**: `end.sum_received.bits_per_second` of `iperf3 -c ... -P N -n \
         <same bytes> -J`; `auto` uses the stream count the agent reported.\n\
         - **CPU s/GB** (GB = 10^9 bytes): dwcp sender from the summary's kernel-measured \
         `cpu_seconds`, receiver from the difference of the receiving agent's \
         `dwcp_agent_cpu_seconds_total` around the send (includes its final fsync and \
         digest check); iperf3 from its own getrusage percentages.\n\
         - **retransmits**: largest count of a round, from the kernel (the agent's \
         probes; iperf3's `end.sum_sent.retransmits`).\n\
         - Order alternates per round (agent first, then iperf3 first); the target is the \
         agent's median at least the goal percentage of iperf3's.\n",
    );
    out.push_str("\n### Rounds\n\n| streams | round | first | dwcp Gbit/s | iperf3 Gbit/s |\n|---|---|---|---|---|\n");
    for d in &r.details {
        let ours = d.ours.as_ref().map_or_else(
            || format!("failed: {}", d.ours_error.as_deref().unwrap_or("?")),
            |o| format!("{:.2}", o.gbps()),
        );
        let peer = d.iperf3.as_ref().map_or_else(
            || format!("failed: {}", d.iperf3_error.as_deref().unwrap_or("?")),
            |p| format!("{:.2} (-P {})", p.bits_per_second / 1e9, p.streams),
        );
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            d.streams,
            d.round + 1,
            if d.iperf3_first { "iperf3" } else { "dwcp" },
            ours.replace('|', "/").replace('\n', " "),
            peer.replace('|', "/").replace('\n', " ")
        ));
    }
    out.push_str(
        "\n### Commands\n\nReceiving agent (whole run; `agent.toml` is empty):\n\n```sh\n",
    );
    out.push_str(&r.receiver_command);
    out.push_str("\n```\n\nPer round, in the order run:\n\n```sh\n");
    for d in &r.details {
        let ours = d.ours.as_ref().map(|o| o.run.command.clone());
        let peer = d.iperf3.as_ref().map(|p| p.commands.clone());
        let mut lines: Vec<String> = Vec::new();
        if let Some(p) = &peer
            && d.iperf3_first
        {
            lines.extend(p.iter().cloned());
        }
        lines.extend(ours);
        if let Some(p) = &peer
            && !d.iperf3_first
        {
            lines.extend(p.iter().cloned());
        }
        out.push_str(&format!("# streams {} round {}\n", d.streams, d.round + 1));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("```\n");
    out
}

fn draw(r: &Report, path: &Path) -> anyhow::Result<()> {
    let labels: Vec<String> = r.rows.iter().map(label).collect();
    let ours: Vec<f64> = r
        .rows
        .iter()
        .map(|x| x.ours_median_gbps.unwrap_or(0.0))
        .collect();
    let peer: Vec<f64> = r
        .rows
        .iter()
        .map(|x| x.iperf3_median_gbps.unwrap_or(0.0))
        .collect();
    let ours_rounds: Vec<Vec<f64>> = r.rows.iter().map(|x| x.ours_gbps.clone()).collect();
    let peer_rounds: Vec<Vec<f64>> = r.rows.iter().map(|x| x.iperf3_gbps.clone()).collect();
    plot::categories_svg(
        path,
        &format!("Loopback goodput, {} MiB per transfer", r.size_bytes >> 20),
        "streams",
        "Gbit/s",
        &labels,
        &[
            plot::Line {
                name: "dwcp-agent send",
                medians: &ours,
                rounds: &ours_rounds,
            },
            plot::Line {
                name: "iperf3 -P N",
                medians: &peer,
                rounds: &peer_rounds,
            },
        ],
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// 32 random hex characters.
fn random_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `size` random bytes to `path` and flushes them to disk (so their write-back
/// does not land in the first round).
fn write_random(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = File::create(path).with_context(|| format!("Create {}", path.display()))?;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("Sync {}", path.display()))?;
    Ok(())
}

/// When the file was last modified, as a UTC stamp.
fn modified_utc(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(|| "unknown".into(), |d| results::utc_stamp(d.as_secs()))
}

/// `<commit>` of the workspace, `+ uncommitted dwcp-agent changes` when there are some.
fn source_state() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--", "dwcp-agent"]) {
            Some(changes) if !changes.is_empty() => {
                format!("{commit} + uncommitted dwcp-agent changes")
            }
            _ => commit,
        },
        None => "unknown (no git)".into(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn agent_version(agent: &Path) -> String {
    std::process::Command::new(agent)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_specs_parse_and_print() {
        assert_eq!("auto".parse::<Streams>(), Ok(Streams::Auto));
        assert_eq!(" 16".parse::<Streams>(), Ok(Streams::Fixed(16)));
        assert!("0".parse::<Streams>().is_err());
        assert!("129".parse::<Streams>().is_err(), "iperf3's limit");
        assert_eq!(Streams::Fixed(4).to_string(), "4");
    }

    #[test]
    fn default_stream_list_is_split() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let cli = Cli::parse_from(["x"]);
        assert_eq!(
            cli.options.streams,
            [
                Streams::Fixed(1),
                Streams::Fixed(4),
                Streams::Fixed(16),
                Streams::Auto
            ]
        );
        let cli = Cli::parse_from(["x", "--streams", "2,auto"]);
        assert_eq!(cli.options.streams, [Streams::Fixed(2), Streams::Auto]);
    }

    fn iperf(streams: usize, gbps: f64) -> IperfRun {
        IperfRun {
            streams,
            bits_per_second: gbps * 1e9,
            bytes: 1_000_000_000,
            seconds: 1.0,
            retransmits: None,
            client_cpu_percent: Some(50.0),
            server_cpu_percent: None,
            commands: [String::new(), String::new()],
        }
    }

    fn ours(streams: usize, gbps: f64) -> OursRound {
        OursRound {
            run: SendRun {
                summary: agent::SendSummary {
                    bytes: 1_000_000_000,
                    seconds: 8.0 / gbps,
                    goodput_bps: gbps * 1e9,
                    streams,
                    kernel_tx_bytes: None,
                    retransmits: Some(0),
                    cpu_seconds: Some(0.5),
                    digest: String::new(),
                    resumed_blocks: 0,
                    resent_blocks: 0,
                    failed_streams: 0,
                    zerocopy_sends: 0,
                    zerocopy_copied: 0,
                },
                process_seconds: 16.0 / gbps,
                command: "dwcp-agent send".into(),
            },
            receiver_cpu_seconds: None,
        }
    }

    #[test]
    fn rows_take_medians_and_judge_the_ratio() {
        let details: Vec<Round> = [(9.0, 10.0), (8.0, 10.0), (10.0, 12.0)]
            .iter()
            .enumerate()
            .map(|(i, &(o, p))| Round {
                streams: "auto".into(),
                round: i,
                iperf3_first: false,
                ours: Some(ours(8, o)),
                ours_error: None,
                iperf3: Some(iperf(8, p)),
                iperf3_error: None,
            })
            .collect();
        let row = row(&Streams::Auto, &details, 90.0);
        assert_eq!(row.ours_median_gbps, Some(9.0));
        assert_eq!(row.iperf3_median_gbps, Some(10.0));
        assert_eq!(row.pass, Some(true));
        assert_eq!(row.sender_cpu_s_per_gb, Some(0.5));
        assert_eq!(row.receiver_cpu_s_per_gb, None);
        assert_eq!(row.iperf3_client_cpu_s_per_gb, Some(0.5));
        assert_eq!(row.ours_whole_command_median_gbps, Some(4.5));
        assert_eq!(label(&row), "auto (8)");
        let failing = super::row(&Streams::Fixed(1), &[], 90.0);
        assert_eq!((failing.pass, failing.failed_rounds), (None, 0));
    }
}
