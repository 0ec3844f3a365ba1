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

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use case::{CaseResult, GuestShape, Method};
use dwcp_wan::{LinkProfile, WanLink};
use serde::Serialize;

use crate::{host, plot, results};

/// Options of `dwcp-bench migration`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Emulated link profile.
    #[arg(long, default_value = "wan-1g-50ms-0.1pct")]
    profile: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 1024)]
    mem_mib: u64,
    /// Memory the guest's workload owns and dirties, MiB.
    #[arg(long, default_value_t = 512)]
    workload_mib: u64,
    /// The workload's dirtying rate, MiB/s.
    #[arg(long, default_value_t = 16)]
    rate_mib_s: u64,
    /// Methods to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["native", "multifd-zstd", "dwcp"])]
    methods: Vec<Method>,
    /// A migration still running after this many seconds is cancelled and reported as
    /// not converging.
    #[arg(long, default_value_t = 240)]
    timeout_s: u64,
    /// The dwcp-agent binary for the dwcp method [default: target/release/dwcp-agent].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Results directory [default: bench/results/<UTC time>-migration].
    #[arg(long)]
    out: Option<PathBuf>,
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
        "| method | completed | total s (QEMU) | end to end s | downtime ms | rounds | RAM sent MB | on the wire MB | guest after | error |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |\n",
            c.method,
            if c.completed { "yes" } else { "no" },
            opt(c.total_ms, 1000.0, 1),
            opt(c.end_to_end_ms, 1000.0, 1),
            opt(c.downtime_ms, 1.0, 0),
            opt(c.rounds, 1.0, 0),
            opt(c.ram_transferred, 1e6, 1),
            c.wire_bytes as f64 / 1e6,
            c.verify.as_deref().unwrap_or("—"),
            c.error.as_deref().unwrap_or(""),
        ));
    }
    out
}

/// Runs every method once over a fresh link and writes `report.md`, `report.json` and
/// `remaining.svg`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let image = qemu::GuestImage::built()?;
    let profile = LinkProfile::builtin(&options.profile)
        .with_context(|| format!("Unknown profile {:?}", options.profile))?;
    let shape = GuestShape {
        mem_mib: options.mem_mib,
        workload_mib: options.workload_mib,
        rate_mib_s: options.rate_mib_s,
    };
    let out = match &options.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => results::new_dir("migration")?,
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
    let report = Report {
        profile: profile.summary(),
        guest: &shape,
        downtime_limit_ms: case::DOWNTIME_LIMIT_MS,
        machine: format!("{} CPUs, {}", host::cpus(), host::cpu_model()),
        load_before,
        load_after: host::loadavg(),
        source: host::source_state(),
        cases: &cases,
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
         Command: `cargo run --release -p bench -- migration --profile {} --mem-mib {} \
         --workload-mib {} --rate-mib-s {}`. Source: {}. Load average before {}, after {}.\n\n{}\n\
         ![RAM left to send](remaining.svg)\n",
        options.profile,
        shape.mem_mib,
        shape.workload_mib,
        shape.rate_mib_s,
        case::DOWNTIME_LIMIT_MS,
        options.profile,
        shape.mem_mib,
        shape.workload_mib,
        shape.rate_mib_s,
        report.source,
        report.load_before,
        report.load_after,
        table(&cases)
    );
    std::fs::write(out.join("report.md"), &md)?;
    println!("{}", table(&cases));
    println!("Report: {}", out.join("report.md").display());
    Ok(())
}
