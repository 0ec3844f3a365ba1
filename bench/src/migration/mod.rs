//! `dwcp-bench migration`: QEMU's own live migration methods, side by side over the same
//! emulated link in one run: total time, downtime (QEMU's figures), bytes on the wire
//! (the link's counters) and the destination guest's own memory check.
//!
//! The guest is the project's test guest (`cargo xtask guest`) under TCG, running the
//! `dirty` workload; `max-bandwidth` is raised far above the link for every method and
//! the downtime limit stays at QEMU's default of 300 ms.

mod case;
mod dwcp;
mod qemu;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
pub use case::{CaseResult, GuestShape, Method};
use dwcp_wan::{LinkProfile, WanLink};
use serde::Serialize;

use crate::{host, plot, results};

/// Options of `dwcp-bench migration`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Emulated link profile.
    #[arg(long, default_value = PROFILE)]
    profile: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = MEM_MIB)]
    mem_mib: u64,
    /// Memory the guest's workload owns and dirties, MiB.
    #[arg(long, default_value_t = WORKLOAD_MIB)]
    workload_mib: u64,
    /// The workload's dirtying rate, MiB/s.
    #[arg(long, default_value_t = RATE_MIB_S)]
    rate_mib_s: u64,
    /// Methods to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["native", "multifd-zstd", "dwcp"])]
    methods: Vec<Method>,
    /// A migration still running after this many seconds is cancelled and reported as
    /// not converging.
    #[arg(long, default_value_t = TIMEOUT_S)]
    timeout_s: u64,
    /// The dwcp-agent binary for the dwcp method [default: target/release/dwcp-agent].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Results directory [default: bench/results/<UTC time>-migration].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The link: a 1 Gbit/s WAN with 50 ms RTT and 0.1% loss.
pub const PROFILE: &str = "wan-1g-50ms-0.1pct";
/// The guest: 1 GiB.
const MEM_MIB: u64 = 1024;
/// Half of it owned by the workload.
const WORKLOAD_MIB: u64 = 512;
/// Dirtied at this rate.
const RATE_MIB_S: u64 = 16;
/// Per migration.
const TIMEOUT_S: u64 = 240;

impl Options {
    /// The defaults (every method, the guest and link), with the agent binary
    /// and the results directory given.
    pub fn defaults(agent: Option<PathBuf>, out: PathBuf) -> Self {
        Self {
            profile: PROFILE.to_owned(),
            mem_mib: MEM_MIB,
            workload_mib: WORKLOAD_MIB,
            rate_mib_s: RATE_MIB_S,
            methods: vec![Method::Native, Method::MultifdZstd, Method::Dwcp],
            timeout_s: TIMEOUT_S,
            agent,
            out: Some(out),
        }
    }

    /// The per-migration time limit, ms.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_s * 1000
    }

    /// The command that repeats these options' measurement on its own.
    pub fn command(&self) -> String {
        format!(
            "cargo run --release -p bench -- migration --profile {} --mem-mib {} \
             --workload-mib {} --rate-mib-s {}",
            self.profile, self.mem_mib, self.workload_mib, self.rate_mib_s
        )
    }
}

/// Every method's result over one link profile, with the machine's load around them.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// The link profile's summary.
    pub profile: String,
    /// The guest.
    pub guest: GuestShape,
    /// One result per method, in order.
    pub cases: Vec<CaseResult>,
    /// Load average before the first method.
    pub load_before: String,
    /// Load average after the last.
    pub load_after: String,
}

#[derive(Serialize)]
struct Report<'a> {
    profile: String,
    guest: &'a GuestShape,
    downtime_limit_ms: u64,
    machine: String,
    load_before: String,
    load_after: String,
    source: String,
    cases: &'a [CaseResult],
}

fn opt(v: Option<u64>, scale: f64, digits: usize) -> String {
    v.map_or_else(
        || "—".to_owned(),
        |v| format!("{:.digits$}", v as f64 / scale),
    )
}

fn table(cases: &[CaseResult]) -> String {
    let mut out = String::from(
        "| method | completed | total s (QEMU) | end to end s | downtime ms (QEMU) | guest downtime ms | rounds | RAM sent MB | on the wire MB | guest after | VM start s | error |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |\n",
            c.method,
            if c.completed { "yes" } else { "no" },
            opt(c.total_ms, 1000.0, 1),
            opt(c.end_to_end_ms, 1000.0, 1),
            opt(c.downtime_ms, 1.0, 0),
            opt(c.guest_downtime_ms, 1.0, 0),
            opt(c.rounds, 1.0, 0),
            opt(c.ram_transferred, 1e6, 1),
            c.wire_bytes as f64 / 1e6,
            c.verify.as_deref().unwrap_or("—"),
            opt(c.vm_start_ms, 1000.0, 2),
            c.error.as_deref().unwrap_or(""),
        ));
    }
    out
}

/// Runs every method once over a fresh link and writes `report.md`, `report.json` and
/// `remaining.svg`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let out = match &options.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => results::new_dir("migration")?,
    };
    let measured = measure(options, &out)?;
    write(options, &measured, &out)?;
    println!("{}", table(&measured.cases));
    println!("Report: {}", out.join("report.md").display());
    Ok(())
}

/// Runs every method of `options` once, each over a fresh link; QEMU and agent logs and
/// serial consoles go under `out`.
pub fn measure(options: &Options, out: &Path) -> anyhow::Result<Measured> {
    let image = qemu::GuestImage::built()?;
    let profile = LinkProfile::builtin(&options.profile)
        .with_context(|| format!("Unknown profile {:?}", options.profile))?;
    let shape = GuestShape {
        mem_mib: options.mem_mib,
        workload_mib: options.workload_mib,
        rate_mib_s: options.rate_mib_s,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load_before = host::loadavg();
    let mut cases = Vec::new();
    for method in &options.methods {
        eprintln!("[{}] {} ...", options.profile, method.label());
        // A fresh link per method: no queue or counter carries over.
        let link = WanLink::start(&profile)?;
        // QEMU logs and serial consoles stay next to the report.
        let work = out.join(format!("{method:?}").to_lowercase());
        let timeout = Duration::from_secs(options.timeout_s);
        let result = if *method == Method::Dwcp {
            let agent = crate::agent::require_binary(
                &options
                    .agent
                    .clone()
                    .unwrap_or_else(crate::agent::default_binary),
            )?;
            dwcp::run(&agent, &link, &image, &shape, &work, timeout)?
        } else {
            runtime.block_on(case::run(*method, &link, &image, &shape, &work, timeout))?
        };
        eprintln!(
            "[{}] {}: completed {}, total {} s, downtime {} ms, wire {:.1} MB {}",
            options.profile,
            method.label(),
            result.completed,
            opt(result.total_ms, 1000.0, 1),
            opt(result.downtime_ms, 1.0, 0),
            result.wire_bytes as f64 / 1e6,
            result.error.as_deref().unwrap_or("")
        );
        cases.push(result);
        link.stop()?;
    }
    Ok(Measured {
        profile: profile.summary(),
        guest: shape,
        cases,
        load_before,
        load_after: host::loadavg(),
    })
}

/// Writes `report.json`, `remaining.svg` and `report.md` of `measured` into `out`.
pub fn write(options: &Options, measured: &Measured, out: &Path) -> anyhow::Result<()> {
    let (cases, shape) = (&measured.cases, &measured.guest);
    let report = Report {
        profile: measured.profile.clone(),
        guest: shape,
        downtime_limit_ms: case::DOWNTIME_LIMIT_MS,
        machine: format!("{} CPUs, {}", host::cpus(), host::cpu_model()),
        load_before: measured.load_before.clone(),
        load_after: measured.load_after.clone(),
        source: host::source_state(),
        cases,
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let series: Vec<(String, Vec<(f64, f64)>)> = cases
        .iter()
        .map(|c| {
            (
                c.method.clone(),
                c.remaining.iter().map(|&(t, b)| (t, b / 1e6)).collect(),
            )
        })
        .collect();
    let lines: Vec<plot::Series<'_>> = series
        .iter()
        .map(|(name, points)| plot::Series { name, points })
        .collect();
    plot::series_svg(
        &out.join("remaining.svg"),
        &format!("RAM left to send, {}", options.profile),
        ("seconds since migrate", "MB remaining"),
        &lines,
        None,
    )?;
    let md = format!(
        "# Live migration, QEMU methods side by side on `{}`\n\n\
         Guest: {} MiB RAM, TCG, `dirty` workload on {} MiB at {} MiB/s; downtime limit {} ms; \
         max-bandwidth raised for every method.\n\
         Command: `{}`. Source: {}. Load average before {}, after {}.\n\n{}\n\
         ![RAM left to send](remaining.svg)\n",
        options.profile,
        shape.mem_mib,
        shape.workload_mib,
        shape.rate_mib_s,
        case::DOWNTIME_LIMIT_MS,
        options.command(),
        report.source,
        report.load_before,
        report.load_after,
        table(cases)
    );
    std::fs::write(out.join("report.md"), &md)?;
    Ok(())
}
