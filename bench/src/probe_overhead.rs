//! Probe overhead: what attaching the eBPF probes costs a loopback TCP transfer.
//!
//! Rounds alternate detached and attached in an A-B-B-A pattern (so drift on a noisy
//! machine hits both sides alike); the probes track this process, so every send and
//! receive runs the full program path (the worst case for the agent). The verdict
//! compares medians; the kernel's own run-time statistics give the cost per event.

use std::time::Duration;

use anyhow::Context as _;
use dwcp_agent::probe::Probes;
use serde::Serialize;

use crate::{loopback, results, stats::median};

/// Options of `dwcp-bench probe-overhead`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Number of A-B-B-A blocks (4 rounds each).
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Overhead goal in percent of throughput.
    #[arg(long, default_value_t = 2.0)]
    goal_percent: f64,
}

#[derive(Debug, Serialize)]
struct ProgramCost {
    program: String,
    runs: u64,
    ns_per_run: f64,
    cpu_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    seconds_per_round: u64,
    detached_bps: Vec<f64>,
    attached_bps: Vec<f64>,
    detached_median_gbps: f64,
    attached_median_gbps: f64,
    overhead_percent: f64,
    goal_percent: f64,
    pass: bool,
    programs: Vec<ProgramCost>,
    probe_cpu_share_percent: f64,
}

/// Runs the benchmark, prints the table and writes `report.md` and `report.json`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let round = Duration::from_secs(options.seconds);
    let mut detached = Vec::new();
    let mut attached = Vec::new();
    let mut costs: Vec<ProgramCost> = Vec::new();
    for block in 0..options.blocks {
        for with_probes in [false, true, true, false] {
            let bps = if with_probes {
                let probes = Probes::load(&[std::process::id()])
                    .context("Loading the probes failed (run as root after `cargo xtask setup`)")?;
                let bps = loopback::throughput(round)?;
                accumulate(&mut costs, &probes);
                bps
            } else {
                loopback::throughput(round)?
            };
            eprintln!(
                "block {}/{} probes {:8}: {:6.2} Gbit/s",
                block + 1,
                options.blocks,
                if with_probes { "attached" } else { "detached" },
                bps * 8.0 / 1e9
            );
            if with_probes {
                &mut attached
            } else {
                &mut detached
            }
            .push(bps);
        }
    }
    let detached_median = median(&detached);
    let attached_median = median(&attached);
    let overhead = (1.0 - attached_median / detached_median) * 100.0;
    for cost in &mut costs {
        cost.ns_per_run = if cost.runs == 0 {
            0.0
        } else {
            cost.cpu_seconds * 1e9 / cost.runs as f64
        };
    }
    let attached_wall = round.as_secs_f64() * attached.len() as f64;
    let probe_cpu: f64 = costs.iter().map(|c| c.cpu_seconds).sum();
    let report = Report {
        seconds_per_round: options.seconds,
        detached_bps: detached,
        attached_bps: attached,
        detached_median_gbps: detached_median * 8.0 / 1e9,
        attached_median_gbps: attached_median * 8.0 / 1e9,
        overhead_percent: overhead,
        goal_percent: options.goal_percent,
        pass: overhead < options.goal_percent,
        programs: costs,
        probe_cpu_share_percent: probe_cpu / attached_wall * 100.0,
    };
    let markdown = render(&report);
    println!("{markdown}");
    let dir = results::new_dir("probe-overhead")?;
    std::fs::write(dir.join("report.md"), &markdown)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("Report written to {}", dir.display());
    Ok(())
}

/// Adds the run statistics of one attached round (the probes are fresh each round).
fn accumulate(costs: &mut Vec<ProgramCost>, probes: &Probes) {
    for prog in probes.programs() {
        let cost = match costs.iter_mut().find(|c| c.program == prog.name) {
            Some(cost) => cost,
            None => {
                costs.push(ProgramCost {
                    program: prog.name.clone(),
                    runs: 0,
                    ns_per_run: 0.0,
                    cpu_seconds: 0.0,
                });
                let last = costs.len() - 1;
                &mut costs[last]
            }
        };
        cost.runs += prog.run_count;
        cost.cpu_seconds += prog.run_time.as_secs_f64();
    }
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    out.push_str("## Probe overhead (loopback TCP, one stream, probes tracking the sender)\n\n");
    out.push_str("| | Gbit/s (median) | rounds |\n|---|---|---|\n");
    out.push_str(&format!(
        "| probes detached | {:.2} | {} |\n",
        r.detached_median_gbps,
        r.detached_bps.len()
    ));
    out.push_str(&format!(
        "| probes attached | {:.2} | {} |\n",
        r.attached_median_gbps,
        r.attached_bps.len()
    ));
    out.push_str(&format!(
        "\nThroughput cost: **{:.2}%** (goal < {:.1}%): **{}**. Probe CPU: {:.2}% of one core while attached.\n\n",
        r.overhead_percent,
        r.goal_percent,
        if r.pass { "PASS" } else { "FAIL" },
        r.probe_cpu_share_percent
    ));
    out.push_str("| program | runs | ns per run | kernel CPU s |\n|---|---|---|---|\n");
    for c in &r.programs {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.4} |\n",
            c.program, c.runs, c.ns_per_run, c.cpu_seconds
        ));
    }
    out
}
