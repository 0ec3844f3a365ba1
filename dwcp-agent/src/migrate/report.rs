//! What a migration reports while it runs and once it ended: QEMU's `query-migrate`
//! figures ([`MigrationProgress`]) and the agent's view ([`MigrationReport`]), kept in
//! the VM's record afterwards.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::MigrationMode;

/// Which end of a migration this agent is.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The VM leaves this host.
    Outgoing,
    /// The VM arrives on this host.
    Incoming,
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Talking to the destination agent, its QEMU starting.
    Preparing,
    /// Cold migration with a local disk: the paused guest's disk image goes over AMST.
    CopyingDisk,
    /// QEMU's migration stream flows over AMST.
    Transferring,
    /// The source QEMU completed; the destination takes the VM over.
    Committing,
    /// The VM runs on the destination.
    Completed,
    /// The migration failed; the VM runs on at the source.
    RolledBack,
}

impl Phase {
    /// Whether the migration is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::RolledBack)
    }
}

/// One `query-migrate` answer, in the units the CLI and metrics use.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MigrationProgress {
    /// QEMU's migration status (`setup`, `active`, `completed`, `failed`, ...).
    pub status: String,
    /// Dirty-bitmap syncs so far: the pre-copy round.
    pub round: u64,
    /// RAM bytes QEMU has sent.
    pub transferred_bytes: u64,
    /// RAM bytes still to send in this round.
    pub remaining_bytes: u64,
    /// Guest RAM.
    pub total_bytes: u64,
    /// Bytes the guest dirties per second (dirty pages rate × page size).
    pub dirty_rate_bytes_per_second: u64,
    /// QEMU's estimate of the final pause, while active.
    pub expected_downtime_ms: Option<u64>,
    /// The final pause QEMU measured, once completed.
    pub downtime_ms: Option<u64>,
    /// Migration time so far (or in total, once completed).
    pub total_time_ms: Option<u64>,
    /// QEMU's send rate, Mbit/s.
    pub mbps: f64,
    /// Auto-converge's guest CPU throttle, percent.
    pub cpu_throttle_percent: Option<u64>,
    /// QEMU's error description of a failed migration.
    pub error: Option<String>,
}

impl MigrationProgress {
    /// Reads a `query-migrate` return value (missing fields count as zero or absent).
    pub fn from_query(reply: &Value) -> Self {
        let ram = &reply["ram"];
        let u = |v: &Value| v.as_u64().unwrap_or(0);
        let page_size = ram["page-size"].as_u64().filter(|p| *p > 0).unwrap_or(4096);
        Self {
            status: reply["status"].as_str().unwrap_or("none").to_owned(),
            round: u(&ram["dirty-sync-count"]),
            transferred_bytes: u(&ram["transferred"]),
            remaining_bytes: u(&ram["remaining"]),
            total_bytes: u(&ram["total"]),
            dirty_rate_bytes_per_second: u(&ram["dirty-pages-rate"]).saturating_mul(page_size),
            expected_downtime_ms: reply["expected-downtime"].as_u64(),
            downtime_ms: reply["downtime"].as_u64(),
            total_time_ms: reply["total-time"].as_u64(),
            mbps: ram["mbps"].as_f64().unwrap_or(0.0),
            cpu_throttle_percent: reply["cpu-throttle-percentage"].as_u64(),
            error: reply["error-desc"].as_str().map(str::to_owned),
        }
    }
}

/// A migration as the API shows it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct MigrationReport {
    /// This agent's end.
    pub direction: Direction,
    /// The other agent (`HOST:PORT` for outgoing, the source's address for incoming).
    pub peer: String,
    /// Mode.
    pub mode: MigrationMode,
    /// Stream encoding.
    pub codec: String,
    /// Where it is.
    pub phase: Phase,
    /// Unix time (ms) the request arrived.
    pub started_at_ms: u64,
    /// Unix time (ms) it ended.
    pub finished_at_ms: Option<u64>,
    /// QEMU's latest figures (source side).
    pub progress: Option<MigrationProgress>,
    /// Payload bytes the AMST streams sent (after the codec), the disk copy included.
    pub wire_bytes: u64,
    /// The disk copy of a cold migration with a local disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<super::disk::DiskProgress>,
    /// Whether the agent paused the guest itself (warm: after pre-copy; cold: first).
    pub paused_by_agent: bool,
    /// What the guest saw (source side, completed migrations): from QEMU's last `STOP`
    /// event here to its `RESUME` on the destination, by the two hosts' clocks. QEMU's
    /// own `downtime` ends when the source has written its last byte, before that byte
    /// crossed the link and was loaded.
    #[serde(default)]
    pub guest_downtime_ms: Option<u64>,
    /// Request to end, seconds.
    pub total_seconds: Option<f64>,
    /// Why it failed (with `RolledBack`).
    pub error: Option<String>,
}

impl MigrationReport {
    /// A report of a migration that just began.
    pub fn new(direction: Direction, peer: String, mode: MigrationMode, codec: String) -> Self {
        Self {
            direction,
            peer,
            mode,
            codec,
            phase: Phase::Preparing,
            started_at_ms: crate::vm::store::now_ms(),
            finished_at_ms: None,
            progress: None,
            wire_bytes: 0,
            disk: None,
            paused_by_agent: false,
            guest_downtime_ms: None,
            total_seconds: None,
            error: None,
        }
    }

    /// Marks the end: `phase`, with `error` for a rollback.
    pub fn finish(&mut self, phase: Phase, error: Option<String>) {
        let now = crate::vm::store::now_ms();
        self.phase = phase;
        self.finished_at_ms = Some(now);
        self.total_seconds = Some(now.saturating_sub(self.started_at_ms) as f64 / 1000.0);
        self.error = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qemu_7_2_query_migrate_answer() {
        let active: Value = serde_json::from_str(
            r#"{"expected-downtime": 412, "status": "active", "setup-time": 3,
                "total-time": 1520, "cpu-throttle-percentage": 20,
                "ram": {"total": 268435456, "postcopy-requests": 0, "dirty-sync-count": 3,
                "multifd-bytes": 0, "pages-per-second": 30000, "downtime-bytes": 0,
                "page-size": 4096, "remaining": 8388608, "postcopy-bytes": 0,
                "mbps": 950.5, "transferred": 300000000, "dirty-sync-missed-zero-copy": 0,
                "precopy-bytes": 300000000, "duplicate": 40000, "dirty-pages-rate": 2560,
                "skipped": 0, "normal-bytes": 290000000, "normal": 70800}}"#,
        )
        .unwrap();
        let p = MigrationProgress::from_query(&active);
        assert_eq!(p.status, "active");
        assert_eq!(p.round, 3);
        assert_eq!(p.remaining_bytes, 8 << 20);
        assert_eq!(p.total_bytes, 256 << 20);
        assert_eq!(p.dirty_rate_bytes_per_second, 2560 * 4096);
        assert_eq!(p.expected_downtime_ms, Some(412));
        assert_eq!(p.downtime_ms, None);
        assert_eq!(p.cpu_throttle_percent, Some(20));
        let failed: Value =
            serde_json::from_str(r#"{"status":"failed","error-desc":"Unable to write"}"#).unwrap();
        let p = MigrationProgress::from_query(&failed);
        assert_eq!(p.error.as_deref(), Some("Unable to write"));
        assert_eq!(p.transferred_bytes, 0);
        assert_eq!(
            MigrationProgress::from_query(&serde_json::json!({})).status,
            "none"
        );
    }
}
