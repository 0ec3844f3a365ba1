//! `dwcp-agent vm migrate NAME --to HOST:PORT`: starts the migration on the local agent,
//! follows it with a progress bar (round, sent, remaining, dirty rate, expected
//! downtime) on stderr, and prints a summary (or the JSON report) on stdout.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    api::client::{ApiClient, ClientError},
    migrate::{MigrateRequest, MigrationMode, MigrationReport, Phase},
};

/// `vm migrate` arguments.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// VM name.
    pub name: String,
    /// Destination agent's DWCP address (HOST:PORT).
    #[arg(long)]
    pub to: String,
    /// cold (pause, then move), warm (pre-copy, then pause) or live (downtime <= 300 ms).
    #[arg(long, default_value = "live")]
    pub mode: MigrationMode,
    /// Stream encoding: auto (HDE or raw per block, whichever is faster on the
    /// measured link; the choice is on the agent's /metrics), hde, zstd or none.
    #[arg(long, default_value = "auto", value_parser = crate::amst::sender::CODEC_NAMES)]
    pub codec: String,
    /// Destination's pre-shared key file [default: the agent's transport.psk_file].
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Data streams (1..=256) [default: 8].
    #[arg(long)]
    pub streams: Option<usize>,
    /// Roll back after this many seconds [default: 600].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Print the final report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `vm migrate`.
#[derive(Debug, thiserror::Error)]
pub enum MigrateCliError {
    /// The agent refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent's answer is not a migration report.
    #[error("Unreadable migration report: {0}")]
    Report(String),
    /// The migration ended rolled back.
    #[error("Migration of {vm} rolled back: {reason}")]
    RolledBack {
        /// VM.
        vm: String,
        /// Why.
        reason: String,
    },
}

/// Runs `vm migrate` against the agent at `socket`.
pub fn run(socket: &std::path::Path, args: &MigrateArgs) -> Result<(), MigrateCliError> {
    let client = ApiClient::new(socket);
    let request = MigrateRequest {
        to: args.to.clone(),
        mode: args.mode,
        codec: args.codec.clone(),
        psk_file: args
            .psk_file
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| {
                MigrateCliError::Report(format!("cannot resolve the key file path: {e}"))
            })?,
        streams: args.streams,
        timeout_seconds: args.timeout,
    };
    let body = serde_json::to_string(&request).unwrap_or_default();
    let path = format!("/v1/vms/{}", args.name);
    client.call("POST", &format!("{path}/migrate"), Some(&body))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let report = loop {
        std::thread::sleep(Duration::from_millis(500));
        let value = client.call("GET", &format!("{path}/migration"), None)?;
        let report: MigrationReport =
            serde_json::from_value(value).map_err(|e| MigrateCliError::Report(e.to_string()))?;
        match (&report.progress, &report.disk) {
            (Some(p), _) => {
                bar.set_length(p.total_bytes.max(1));
                bar.set_position(p.total_bytes.saturating_sub(p.remaining_bytes));
            }
            (None, Some(disk)) => {
                bar.set_length(disk.total_bytes.max(1));
                bar.set_position(disk.done_bytes);
            }
            (None, None) => {}
        }
        bar.set_message(progress_line(&report));
        if report.phase.is_final() {
            break report;
        }
    };
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", summary(&args.name, &report));
    }
    match report.phase {
        Phase::Completed => Ok(()),
        _ => Err(MigrateCliError::RolledBack {
            vm: args.name.clone(),
            reason: report.error.unwrap_or_else(|| "no reason recorded".into()),
        }),
    }
}

/// One progress line: phase, round, sent, remaining, dirty rate, expected downtime (or,
/// while a cold migration copies the disk, the disk's bytes done and total).
pub fn progress_line(report: &MigrationReport) -> String {
    let phase = serde_json::to_value(report.phase)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default();
    match (&report.progress, &report.disk) {
        (None, Some(disk)) => format!(
            "{phase} {} {} of {} wire {}",
            disk.file,
            mib(disk.done_bytes),
            mib(disk.total_bytes),
            mib(report.wire_bytes),
        ),
        (None, None) => phase,
        (Some(p), _) => format!(
            "{phase} round {} sent {} remaining {} dirty {}/s expected downtime {} wire {}",
            p.round,
            mib(p.transferred_bytes),
            mib(p.remaining_bytes),
            mib(p.dirty_rate_bytes_per_second),
            p.expected_downtime_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
            mib(report.wire_bytes),
        ),
    }
}

/// The final summary: outcome, total time, downtime from QEMU, bytes on the wire (the
/// disk copy included), and the disk copied by a cold migration.
pub fn summary(vm: &str, report: &MigrationReport) -> String {
    let outcome = match report.phase {
        Phase::Completed => format!("{vm} migrated to {}", report.peer),
        _ => format!(
            "{vm} stays on this host (rolled back): {}",
            report.error.as_deref().unwrap_or("no reason recorded")
        ),
    };
    let p = report.progress.clone().unwrap_or_default();
    // The ratio compares QEMU's RAM stream with its own wire bytes, not the disk's.
    let disk_bytes = report.disk.as_ref().map_or(0, |d| d.done_bytes);
    let state_wire = report.wire_bytes.saturating_sub(disk_bytes);
    let disk = report.disk.as_ref().map_or_else(String::new, |d| {
        format!(
            "\ndisk {} copied: {} of {}",
            d.file,
            mib(d.done_bytes),
            mib(d.total_bytes)
        )
    });
    format!(
        "{outcome}\nmode {} codec {}, total {:.2} s, downtime {} (QEMU), {} (guest: stop here \
         to resume there), rounds {}\nRAM sent {} by QEMU, {} on the wire ({:.2}x){disk}",
        report.mode.as_str(),
        report.codec,
        report.total_seconds.unwrap_or(0.0),
        ms(p.downtime_ms),
        ms(report.guest_downtime_ms),
        p.round,
        mib(p.transferred_bytes),
        mib(report.wire_bytes),
        p.transferred_bytes as f64 / state_wire.max(1) as f64,
    )
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |ms| format!("{ms} ms"))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{Direction, MigrationProgress};

    #[test]
    fn summary_names_time_downtime_and_wire_bytes() {
        let mut report = MigrationReport::new(
            Direction::Outgoing,
            "10.0.0.2:9478".into(),
            MigrationMode::Live,
            "hde".into(),
        );
        report.wire_bytes = 64 << 20;
        report.progress = Some(MigrationProgress {
            status: "completed".into(),
            round: 4,
            transferred_bytes: 256 << 20,
            downtime_ms: Some(42),
            ..MigrationProgress::default()
        });
        report.guest_downtime_ms = Some(97);
        report.finish(Phase::Completed, None);
        let text = summary("vm1", &report);
        assert!(text.starts_with("vm1 migrated to 10.0.0.2:9478"), "{text}");
        assert!(
            text.contains(
                "downtime 42 ms (QEMU), 97 ms (guest: stop here to resume there), rounds 4"
            ),
            "{text}"
        );
        assert!(
            text.contains("RAM sent 256.0 MiB by QEMU, 64.0 MiB on the wire (4.00x)"),
            "{text}"
        );
        report.finish(Phase::RolledBack, Some("Destination gone".into()));
        assert!(summary("vm1", &report).contains("rolled back): Destination gone"));
        assert!(progress_line(&report).starts_with("rolled back round 4"));
    }

    #[test]
    fn a_cold_migration_shows_its_disk_copy() {
        let mut report = MigrationReport::new(
            Direction::Outgoing,
            "10.0.0.2:9478".into(),
            MigrationMode::Cold,
            "hde".into(),
        );
        report.phase = Phase::CopyingDisk;
        report.wire_bytes = 16 << 20;
        report.disk = Some(crate::migrate::disk::DiskProgress {
            file: "root.raw".into(),
            done_bytes: 16 << 20,
            total_bytes: 64 << 20,
        });
        assert_eq!(
            progress_line(&report),
            "copying disk root.raw 16.0 MiB of 64.0 MiB wire 16.0 MiB"
        );
        report.disk = Some(crate::migrate::disk::DiskProgress {
            file: "root.raw".into(),
            done_bytes: 64 << 20,
            total_bytes: 64 << 20,
        });
        report.wire_bytes = 96 << 20;
        report.progress = Some(MigrationProgress {
            transferred_bytes: 64 << 20,
            ..MigrationProgress::default()
        });
        report.finish(Phase::Completed, None);
        let text = summary("vm1", &report);
        assert!(
            text.contains("RAM sent 64.0 MiB by QEMU, 96.0 MiB on the wire (2.00x)"),
            "{text}"
        );
        assert!(
            text.ends_with("\ndisk root.raw copied: 64.0 MiB of 64.0 MiB"),
            "{text}"
        );
    }
}
