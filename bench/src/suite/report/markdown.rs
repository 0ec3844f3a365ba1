//! `report.md`: the verdict, the machine, the targets table with values and peers, every
//! case, the plots and every command run.

use std::fmt::Write as _;

use super::Report;
use crate::suite::{
    plots, steal,
    targets::{MetricResult, Status},
};

/// A table cell: no pipes or line breaks.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"))
}

fn target_text(r: &Report, m: &MetricResult) -> (String, String, String) {
    match r.targets.iter().find(|t| t.id == m.target) {
        Some(t) => (
            t.name.clone(),
            format!("{} {} {}", t.comparator, t.threshold, t.unit),
            format!(
                "{}{}",
                match t.source {
                    crate::suite::targets::Source::Seed => "seed",
                    crate::suite::targets::Source::Goal => "our goal",
                },
                if t.required { "" } else { ", informational" }
            ),
        ),
        None => (m.target.clone(), "?".into(), "?".into()),
    }
}

fn unit_of(r: &Report, m: &MetricResult) -> String {
    r.targets
        .iter()
        .find(|t| t.id == m.target)
        .map(|t| t.unit.clone())
        .unwrap_or_default()
}

/// The metrics table (also what the docs copy).
pub fn metrics_table(r: &Report) -> String {
    let mut out = String::from(
        "| metric | profile | target | source | measured | peers in the same run | result |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in &r.metrics {
        let (name, target, source) = target_text(r, m);
        let unit = unit_of(r, m);
        let value = m
            .value
            .map_or_else(|| "—".into(), |v| format!("{v:.2} {unit}"));
        let peers = if m.peers.is_empty() {
            "—".into()
        } else {
            m.peers
                .iter()
                .map(|p| format!("{}: {:.2}", p.peer, p.value))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let result = match &m.status {
            Status::Pass => "**PASS**".into(),
            Status::Fail => "**FAIL**".into(),
            other => other.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&name),
            cell(m.profile.as_deref().unwrap_or("all")),
            cell(&target),
            source,
            cell(&value),
            cell(&peers),
            cell(&result)
        );
    }
    out
}

/// Which guest-memory images the codec rows were measured on.
fn codec_section(r: &Report) -> String {
    let mut out = String::from("\n## Codec data\n\n");
    let Some(dir) = &r.codec.corpus else {
        out.push_str("No guest-memory corpus: run `cargo xtask corpus`.\n");
        return out;
    };
    let _ = writeln!(
        out,
        "Corpus `{}` (quick mode of `dwcp-bench hde --corpus`, one core per codec): {}.\n",
        dir.display(),
        r.codec.images.join(", ")
    );
    for line in &r.codec.summary {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// What the VM rows were measured on.
fn migration_section(r: &Report) -> String {
    let mut out = String::from("\n## VM data\n\n");
    let Some(command) = &r.migration.command else {
        let _ = writeln!(out, "Not run: {}.", super::super::migration::NOT_ASKED);
        return out;
    };
    let _ = writeln!(
        out,
        "`{command}` inside the suite; its own report, QEMU and agent logs and serial \
         consoles: `{}`.\n",
        r.migration
            .dir
            .as_deref()
            .map_or_else(|| "—".into(), |d| d.display().to_string())
    );
    for line in &r.migration.summary {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// A warning naming the cases during which the hypervisor took much of the machine's CPU
/// time (empty when there were none).
pub fn contention_warning(r: &Report) -> String {
    let contended: Vec<String> = r
        .cases
        .iter()
        .filter_map(|c| {
            let p = c.steal_percent.filter(|p| *p >= steal::CONTENDED_PERCENT)?;
            Some(format!("{} round {} ({p:.0}%)", c.label(), c.round + 1))
        })
        .collect();
    if contended.is_empty() {
        return String::new();
    }
    format!(
        "**The machine was contended:** the hypervisor took {:.0}% or more of its CPU time \
         during {} of {} cases: {}. Their figures measure the host's load as much as the \
         contenders; compare only cases run on a quiet machine.\n\n",
        steal::CONTENDED_PERCENT,
        contended.len(),
        r.cases.len(),
        cell(&contended.join(", "))
    )
}

/// Renders the whole report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let verdict = if r.verdict.go { "GO" } else { "NO-GO" };
    let _ = writeln!(
        out,
        "# dwcp benchmark suite `{}`: {verdict}\n",
        r.plan.suite
    );
    let _ = writeln!(out, "**Verdict: {}**\n", r.verdict);
    if !r.verdict.blocking.is_empty() {
        out.push_str("Blocking:\n\n");
        for b in &r.verdict.blocking {
            let _ = writeln!(out, "- {b}");
        }
        out.push('\n');
    }
    if !r.errors.is_empty() {
        let _ = writeln!(out, "**{} error(s)** (the run fails):\n", r.errors.len());
        for e in &r.errors {
            let _ = writeln!(out, "- {}", cell(e));
        }
        out.push('\n');
    }
    out.push_str(&contention_warning(r));
    let m = &r.machine;
    let _ = writeln!(
        out,
        "## Run\n\n- Started {} UTC, {:.0} s wall; suite `{}`, transport {}{}\n\
         - Machine: {} ({}, {} CPUs, {} MiB), kernel {}, root: {}\n\
         - Load average before {}, after {}\n\
         - Source {}; {}; {} KiB blocks\n- Peers: {}; {}\n",
        r.started_utc,
        r.wall_seconds,
        r.plan.suite,
        r.transport,
        r.peer
            .as_deref()
            .map_or(String::new(), |p| format!(", remote peer {p}")),
        m.hostname,
        m.cpu_model,
        m.cpus,
        m.memory_bytes.map_or(0, |b| b >> 20),
        m.kernel,
        m.root,
        m.load_before,
        m.load_after,
        r.source,
        r.agent_version,
        r.block_kib,
        m.iperf3_version,
        m.socat_version,
    );
    out.push_str(
        "| link | kind | rate | RTT | loss | bytes per transfer |\n|---|---|---|---|---|---|\n",
    );
    for (i, l) in r.links.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} MiB |",
            cell(&l.name),
            cell(&l.kind),
            l.rate_bps
                .map_or_else(|| "—".into(), |b| format!("{:.0} Mbit/s", b as f64 / 1e6)),
            l.rtt_ms.map_or_else(|| "—".into(), |v| format!("{v} ms")),
            l.loss
                .map_or_else(|| "—".into(), |v| format!("{}%", v * 100.0)),
            r.plan.bytes.get(i).map_or(0, |b| b >> 20),
        );
    }
    out.push_str("\n## Targets\n\n");
    out.push_str(&metrics_table(r));
    out.push_str("\nA \"not measured\" row never counts as a pass. Definitions:\n\n");
    for t in &r.targets {
        let _ = writeln!(out, "- **{}** (`{}`): {}", t.name, t.id, t.definition);
    }
    out.push_str(&codec_section(r));
    out.push_str(&migration_section(r));
    out.push_str(
        "\n## Cases\n\n| profile | case | round | streams | seconds | Gbit/s | CPU s sender / receiver | retransmits | PBA idle % | CPU stolen % | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in &r.cases {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            cell(&c.profile),
            cell(&c.label()),
            c.round + 1,
            c.streams.map_or_else(|| "n/a".into(), |s| s.to_string()),
            if c.capped {
                format!("{} (capped, extrapolated)", opt(c.seconds, 1))
            } else {
                opt(c.seconds, 2)
            },
            opt(c.goodput_bps.map(|b| b / 1e9), 3),
            opt(c.sender_cpu_seconds, 3),
            opt(c.receiver_cpu_seconds, 3),
            c.retransmits
                .map_or_else(|| "n/a".into(), |v| v.to_string()),
            opt(c.pba_overhead_percent, 1),
            opt(c.steal_percent, 1),
            cell(c.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str(
        "\ndwcp seconds are the sender's transfer clock (`dwcp-agent send --json`); iperf3's \
         are its receiver's (run by time with `-t`: the transfer's bytes over its rate); the copy's run from starting the sender to the receiver's exit. \
         A case still running at the plan's cap is stopped and measured by what it moved \
         (dwcp: the receiver's payload bytes, or the bytes its kernel received when not one \
         block completed; the copy: the received file's size); its \
         seconds are then the full transfer's, extrapolated from that rate. \
         CPU for dwcp is kernel-measured (eBPF), for iperf3 its own getrusage figures. \
         CPU stolen is the share of this machine's CPU time the hypervisor gave to others \
         while the case ran (`steal` in `/proc/stat`).\n\n## Plots\n\n",
    );
    for l in &r.links {
        let _ = writeln!(
            out,
            "![goodput vs streams, {0}]({1})\n\n![link utilization over time, {0}]({2})\n",
            l.name,
            plots::goodput_file(&l.name),
            plots::utilization_file(&l.name)
        );
    }
    out.push_str("## Commands\n\nIn the order run:\n\n```sh\n");
    for c in &r.commands {
        out.push_str(c);
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::sample;

    #[test]
    fn every_table_row_has_the_headers_column_count() {
        let text = render(&sample::report());
        let mut header_cols = None;
        for line in text.lines() {
            if !line.starts_with('|') {
                header_cols = None;
                continue;
            }
            // Count unescaped pipes.
            let cols = line.replace("\\|", "").matches('|').count();
            match header_cols {
                None => header_cols = Some(cols),
                Some(n) => assert_eq!(cols, n, "{line}"),
            }
        }
    }

    #[test]
    fn shows_verdict_values_peers_and_reasons() {
        let text = render(&sample::report());
        assert!(text.starts_with("# dwcp benchmark suite `quick`: NO-GO"));
        assert!(
            text.contains("| 95.00 % | iperf3 -P 8: 97.00 | **PASS** |"),
            "{text}"
        );
        assert!(text.contains("**FAIL**"));
        assert!(text.contains("not measured: HDE is not built"));
        assert!(text.contains("socat <failed> & \"exited\""));
        assert!(text.contains("dwcp-agent run --receive-dir /tmp/x"));
        assert!(text.contains("goodput-wan-1g-50ms-0.1pct.svg"));
    }

    #[test]
    fn names_the_cases_run_on_a_contended_machine() {
        let mut r = sample::report();
        assert_eq!(contention_warning(&r), "");
        assert!(!render(&r).contains("contended"));
        r.cases[0].steal_percent = Some(1.0);
        r.cases[1].steal_percent = Some(37.4);
        let warning = contention_warning(&r);
        assert!(warning.contains("during 1 of"), "{warning}");
        assert!(
            warning.contains(&format!("{} round 1 (37%)", r.cases[1].label())),
            "{warning}"
        );
        assert!(render(&r).contains(&warning));
    }

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
