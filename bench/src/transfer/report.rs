//! The transfer benchmark's table, Markdown report and plot.

use std::path::Path;

use super::{OursRound, Report, Round, Row, Streams};
use crate::{
    iperf::IperfRun,
    plot,
    stats::{median, median_some},
};

/// One table line: medians over the rounds of one stream count.
pub(super) fn row(spec: &Streams, details: &[Round], goal_percent: f64) -> Row {
    let label = spec.to_string();
    let rounds: Vec<&Round> = details.iter().filter(|r| r.streams == label).collect();
    let ours: Vec<&OursRound> = rounds.iter().filter_map(|r| r.ours.as_ref()).collect();
    let peers: Vec<&IperfRun> = rounds.iter().filter_map(|r| r.iperf3.as_ref()).collect();
    let files_gbps: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.iperf3_files.as_ref())
        .map(|p| p.bits_per_second / 1e9)
        .collect();
    let ours_gbps: Vec<f64> = ours.iter().map(|o| o.gbps()).collect();
    let iperf3_gbps: Vec<f64> = peers.iter().map(|p| p.bits_per_second / 1e9).collect();
    let med = |v: &[f64]| (!v.is_empty()).then(|| median(v));
    let ours_median = med(&ours_gbps);
    let peer_median = med(&iperf3_gbps);
    let percent = |peer: Option<f64>| {
        ours_median
            .zip(peer)
            .filter(|(_, p)| *p > 0.0)
            .map(|(o, p)| o / p * 100.0)
    };
    let ratio = percent(peer_median);
    let files_median = med(&files_gbps);
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
        iperf3_files_median_gbps: files_median,
        ratio_files_percent: percent(files_median),
        iperf3_files_gbps: files_gbps,
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

/// The Markdown report.
pub(super) fn render(r: &Report) -> String {
    let f2 = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
    let f3 = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
    let mut out = String::new();
    out.push_str(&format!(
        "## Transfer goodput vs iperf3 (loopback)\n\n\
         {} MiB per transfer, {} rounds per stream count (medians), {} KiB blocks; \
         {} CPUs, kernel {}, {}. Load average before {}, after {}.\n\n\
         Agent: {}; source: {}; binary: {}. Received into {}; source file read from \
         the page cache.\n\n",
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
        r.agent_binary,
        r.receive_dir
    ));
    out.push_str(
        "| streams | dwcp Gbit/s | iperf3 Gbit/s | dwcp / iperf3 | target | \
         iperf3 -F Gbit/s (file to file) | dwcp / iperf3 -F | \
         dwcp whole command Gbit/s | dwcp CPU s/GB sender / receiver | \
         iperf3 CPU s/GB client / server | retransmits dwcp / iperf3 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
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
            "| {}{failed} | {} | {} | {} | {verdict} | {} | {} | {} | {} / {} | {} / {} | {} / {} |\n",
            label(row),
            f2(row.ours_median_gbps),
            f2(row.iperf3_median_gbps),
            row.ratio_percent
                .map_or_else(|| "n/a".into(), |v| format!("{v:.0}%")),
            f2(row.iperf3_files_median_gbps),
            row.ratio_files_percent
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
         - **iperf3 -F**: the same bytes file to file, run right after: N iperf3 pairs at \
         once, one stream each, every client reading the source file from the page cache \
         (`-F`) and every server writing its share into its own file in the receive \
         directory (`-F`), so the peer does the same file work as dwcp. (`-F` with \
         `-P N` would not: its server streams all write the same file from its start.) \
         Rate: all bytes over the longest pair's own seconds.\n\
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
        if let Some(files) = &d.iperf3_files {
            lines.extend(files.commands.iter().cloned());
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

/// The goodput plot.
pub(super) fn draw(r: &Report, path: &Path) -> anyhow::Result<()> {
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
    let files: Vec<f64> = r
        .rows
        .iter()
        .map(|x| x.iperf3_files_median_gbps.unwrap_or(0.0))
        .collect();
    let ours_rounds: Vec<Vec<f64>> = r.rows.iter().map(|x| x.ours_gbps.clone()).collect();
    let peer_rounds: Vec<Vec<f64>> = r.rows.iter().map(|x| x.iperf3_gbps.clone()).collect();
    let files_rounds: Vec<Vec<f64>> = r.rows.iter().map(|x| x.iperf3_files_gbps.clone()).collect();
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
            plot::Line {
                name: "iperf3 file to file (N pairs of -F)",
                medians: &files,
                rounds: &files_rounds,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::{self, SendRun},
        transfer::Options,
    };

    #[test]
    fn stream_specs_parse_and_print() {
        assert_eq!("auto".parse::<Streams>(), Ok(Streams::Auto));
        assert_eq!(" 16".parse::<Streams>(), Ok(Streams::Fixed(16)));
        assert!("0".parse::<Streams>().is_err());
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
                    codec: None,
                    codec_reason: None,
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
                iperf3_files: Some(iperf(8, p / 2.0)),
                iperf3_files_error: None,
            })
            .collect();
        let row = row(&Streams::Auto, &details, 90.0);
        assert_eq!(row.ours_median_gbps, Some(9.0));
        assert_eq!(row.iperf3_median_gbps, Some(10.0));
        assert_eq!(row.pass, Some(true));
        assert_eq!(row.iperf3_files_median_gbps, Some(5.0));
        assert_eq!(row.ratio_files_percent, Some(180.0));
        assert_eq!(row.sender_cpu_s_per_gb, Some(0.5));
        assert_eq!(row.receiver_cpu_s_per_gb, None);
        assert_eq!(row.iperf3_client_cpu_s_per_gb, Some(0.5));
        assert_eq!(row.ours_whole_command_median_gbps, Some(4.5));
        assert_eq!(label(&row), "auto (8)");
        let failing = super::row(&Streams::Fixed(1), &[], 90.0);
        assert_eq!((failing.pass, failing.failed_rounds), (None, 0));
    }
}
