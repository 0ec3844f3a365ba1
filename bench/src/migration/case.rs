//! One migration of the benchmark: a source guest running the dirtying workload in host
//! A, a destination QEMU waiting in host B, QEMU's own migration between them over the
//! emulated link, figures from QEMU's `query-migrate` and from the link's counters, and
//! the destination guest's own verdict on its memory afterwards.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dwcp_agent::vm::spec::VmSpec;
use dwcp_wan::WanLink;
use serde::Serialize;
use serde_json::{Value, json};

use super::qemu::{Guest, GuestImage};

/// TCP port of the destination's incoming migration.
const PORT: u16 = 4444;
/// QEMU's default `downtime-limit` in ms, kept for every method.
pub const DOWNTIME_LIMIT_MS: u64 = 300;
/// `max-bandwidth` for every method, bytes/s: far above any link here (QEMU's default
/// of 128 MiB/s would cap them all).
const MAX_BANDWIDTH: u64 = 100 << 30;

/// How QEMU migrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One TCP connection, no compression: what a default QEMU migration does.
    Native,
    /// multifd with 8 channels and zstd compression.
    MultifdZstd,
    /// Through two dwcp agents: `vm migrate --mode live` (8 AMST streams, `--codec auto`).
    Dwcp,
}

impl Method {
    /// Label in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Native => "QEMU native (1 TCP stream)",
            Self::MultifdZstd => "QEMU multifd, 8 channels, zstd",
            Self::Dwcp => "dwcp live (agents, auto codec, 8 AMST streams)",
        }
    }
}

/// The guest every method migrates.
#[derive(Clone, Debug, Serialize)]
pub struct GuestShape {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Memory the workload owns and dirties, MiB.
    pub workload_mib: u64,
    /// Dirtying rate, MiB/s.
    pub rate_mib_s: u64,
}

impl GuestShape {
    /// The guest kernel's command line: the `dirty` workload with this shape.
    pub fn append(&self) -> String {
        format!(
            "console=ttyS0 dwcp.workload=dirty dwcp.mem_mib={} dwcp.rate_mib_s={}",
            self.workload_mib, self.rate_mib_s
        )
    }
}

/// What one migration measured.
#[derive(Debug, Default, Serialize)]
pub struct CaseResult {
    /// Method label.
    pub method: String,
    /// Whether QEMU reported `completed`.
    pub completed: bool,
    /// QEMU's `total-time`, ms.
    pub total_ms: Option<u64>,
    /// From the request to the guest running on the destination, ms (dwcp: what
    /// `vm migrate` took, destination QEMU start included).
    pub end_to_end_ms: Option<u64>,
    /// QEMU's `downtime`, ms.
    pub downtime_ms: Option<u64>,
    /// The guest's: from QEMU's `STOP` event on the source to `RESUME` on the
    /// destination (same host clock), ms.
    pub guest_downtime_ms: Option<u64>,
    /// RAM bytes QEMU transferred (after its own compression).
    pub ram_transferred: Option<u64>,
    /// Pre-copy rounds (`dirty-sync-count`).
    pub rounds: Option<u64>,
    /// Bytes of IP packets from A to B on the link during the migration.
    pub wire_bytes: u64,
    /// The destination guest's first memory check after the migration.
    pub verify: Option<String>,
    /// Seconds since `migrate` and RAM bytes remaining, per poll.
    pub remaining: Vec<(f64, f64)>,
    /// dwcp only: from `vm create` to `vm start` returning with the VM Running, ms.
    pub vm_start_ms: Option<u64>,
    /// Why it did not complete or verify.
    pub error: Option<String>,
}

fn u64_at(info: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(info, |v, k| v.get(k))?.as_u64()
}

/// Runs one migration; failures of the migration itself are recorded in the result,
/// failures to set it up are errors.
pub async fn run(
    method: Method,
    link: &WanLink,
    image: &GuestImage,
    shape: &GuestShape,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<CaseResult> {
    let spec = |name: &str| VmSpec {
        memory_mib: shape.mem_mib,
        kernel: Some(image.kernel.clone()),
        initrd: Some(image.initrd.clone()),
        append: Some(shape.append()),
        ..VmSpec::named(name)
    };
    if method == Method::Dwcp {
        bail!("The dwcp method runs through agents (migration::dwcp), not here");
    }
    let mut source =
        Guest::launch("source", link.a(), &dir.join("source"), &spec("src"), None).await?;
    source
        .wait_serial("DWCP-GUEST READY", 0, Duration::from_secs(180))
        .await?;
    // Let the workload fill its memory and dirty it for a while, as a VM in service.
    source
        .wait_serial(
            "DWCP-VERIFY ok",
            source.serial_len(),
            Duration::from_secs(60),
        )
        .await?;
    let uri = format!("tcp:{}:{PORT}", link.b().addr);
    let incoming = match method {
        Method::MultifdZstd => "defer".to_owned(),
        Method::Native | Method::Dwcp => uri.clone(),
    };
    let mut destination = Guest::launch(
        "destination",
        link.b(),
        &dir.join("destination"),
        &spec("dst"),
        Some(&incoming),
    )
    .await?;
    if method == Method::MultifdZstd {
        for guest in [&source, &destination] {
            guest
                .qmp
                .execute(
                    "migrate-set-capabilities",
                    Some(json!({"capabilities": [{"capability": "multifd", "state": true}]})),
                )
                .await?;
            guest
                .qmp
                .migrate_set_parameters(
                    json!({"multifd-channels": 8, "multifd-compression": "zstd"}),
                )
                .await
                .context("This QEMU cannot do multifd with zstd")?;
        }
        destination
            .qmp
            .execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await?;
    }
    source
        .qmp
        .migrate_set_parameters(json!({
            "max-bandwidth": MAX_BANDWIDTH,
            "downtime-limit": DOWNTIME_LIMIT_MS,
        }))
        .await?;

    let wire_before = link.stats().a_to_b.bytes;
    let started = Instant::now();
    source.qmp.migrate(&uri).await?;
    let mut result = CaseResult {
        method: method.label().to_owned(),
        ..CaseResult::default()
    };
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let info = source.qmp.query_migrate().await?;
        let status = info["status"].as_str().unwrap_or("unknown").to_owned();
        if let Some(remaining) = u64_at(&info, &["ram", "remaining"]) {
            result
                .remaining
                .push((started.elapsed().as_secs_f64(), remaining as f64));
        }
        match status.as_str() {
            "completed" => {
                result.completed = true;
                result.total_ms = u64_at(&info, &["total-time"]);
                result.downtime_ms = u64_at(&info, &["downtime"]);
                result.ram_transferred = u64_at(&info, &["ram", "transferred"]);
                result.rounds = u64_at(&info, &["ram", "dirty-sync-count"]);
                break;
            }
            "failed" | "cancelled" => {
                let why = info["error-desc"].as_str().unwrap_or("no reason given");
                result.error = Some(format!("QEMU reports the migration {status}: {why}"));
                break;
            }
            _ if started.elapsed() > timeout => {
                result.rounds = u64_at(&info, &["ram", "dirty-sync-count"]);
                let _ = source.qmp.execute("migrate_cancel", None).await;
                result.error = Some(format!(
                    "Did not converge within {} s ({} rounds)",
                    timeout.as_secs(),
                    result.rounds.unwrap_or(0)
                ));
                break;
            }
            _ => {}
        }
    }
    result.wire_bytes = link.stats().a_to_b.bytes.saturating_sub(wire_before);
    if result.completed {
        match destination
            .wait_serial("DWCP-VERIFY", 0, Duration::from_secs(60))
            .await
        {
            // `wait_serial` fails on a `DWCP-VERIFY FAIL` line, so this one says ok.
            Ok(line) => result.verify = Some(line),
            Err(error) => result.error = Some(format!("{error:#}")),
        }
        // The guest printed its check, so it has resumed: both events are in.
        let at =
            |guest: &Guest, event: &str| guest.qmp.last_event(event).and_then(|e| e.timestamp_us);
        result.guest_downtime_ms = at(&source, "STOP")
            .zip(at(&destination, "RESUME"))
            .and_then(|(stop, resume)| resume.checked_sub(stop))
            .map(|us| us / 1000);
    }
    Ok(result)
}
