//! The report of a suite run and its three renderings: `report.json` (the whole
//! [`Report`], schema [`SCHEMA_VERSION`]), `report.md` (people) and `junit.xml` (CI).

pub mod junit;
pub mod markdown;

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{
    cases::CaseResult,
    codec::CodecData,
    link::LinkInfo,
    migration::MigrationData,
    plan::Plan,
    targets::{Comparator, MetricResult, Source, Target, Verdict},
};

/// Version of the JSON layout; bump it when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The machine a run was made on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Total memory.
    pub memory_bytes: Option<u64>,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// `/proc/loadavg` after the run.
    pub load_after: String,
    /// Whether the run was root (the agents' probes, hence the kernel figures, need it).
    pub root: bool,
    /// `iperf3 --version`.
    pub iperf3_version: String,
    /// `socat -V`'s version line.
    pub socat_version: String,
}

/// A target as the report carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRow {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
    /// Comparator.
    pub comparator: Comparator,
    /// Threshold.
    pub threshold: f64,
    /// Unit.
    pub unit: String,
    /// Seed or goal.
    pub source: Source,
    /// Whether the verdict depends on it.
    pub required: bool,
    /// How the value is computed.
    pub definition: String,
}

impl From<&Target> for TargetRow {
    fn from(t: &Target) -> Self {
        Self {
            id: t.id.into(),
            name: t.name.into(),
            comparator: t.comparator,
            threshold: t.threshold,
            unit: t.unit.into(),
            source: t.source,
            required: t.required,
            definition: t.definition.into(),
        }
    }
}

/// Everything a suite run found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What ran.
    pub plan: Plan,
    /// `tcp` or `rdma`.
    pub transport: String,
    /// The remote host, for `--peer`.
    pub peer: Option<String>,
    /// UTC start, `YYYYMMDDTHHMMSSZ`.
    pub started_utc: String,
    /// Wall time of the whole run.
    pub wall_seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// Commit of the source tree.
    pub source: String,
    /// `dwcp-agent --version`.
    pub agent_version: String,
    /// `--block-kib` of every send.
    pub block_kib: usize,
    /// The links, one per profile.
    pub links: Vec<LinkInfo>,
    /// Every command run, in order (set-up and cases).
    pub commands: Vec<String>,
    /// Every case, in order.
    pub cases: Vec<CaseResult>,
    /// The targets table.
    pub targets: Vec<TargetRow>,
    /// Every target judged.
    pub metrics: Vec<MetricResult>,
    /// The data of the codec rows (the guest-memory corpus).
    #[serde(default)]
    pub codec: CodecData,
    /// The data of the VM rows (the migration benchmark).
    #[serde(default)]
    pub migration: MigrationData,
    /// Go / No-Go.
    pub verdict: Verdict,
    /// Errors (failed cases, failed set-up); a run with errors fails.
    pub errors: Vec<String>,
}

/// Writes `report.json`, `report.md` and `junit.xml` into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("Write {}", path.display()))
    };
    write("report.json", serde_json::to_string_pretty(report)?)?;
    write("report.md", markdown::render(report))?;
    write("junit.xml", junit::render(report))?;
    Ok(())
}

/// Reads a `report.json` back, refusing other schema versions.
#[cfg(test)]
pub fn read_json(text: &str) -> anyhow::Result<Report> {
    let report: Report = serde_json::from_str(text).context("Not a suite report")?;
    if report.schema_version != SCHEMA_VERSION {
        anyhow::bail!(
            "Report schema version {} (this reader knows {SCHEMA_VERSION})",
            report.schema_version
        );
    }
    Ok(report)
}

#[cfg(test)]
pub(crate) mod sample {
    //! A small but complete report for the writers' tests.

    use super::*;
    use crate::suite::{
        cases::Kind,
        plan::{GOAL_PROFILE, Suite},
        targets::{self, PeerValue},
    };

    /// A report with a passing, a failing and a not-measured metric and a failed case.
    pub fn report() -> Report {
        let link = LinkInfo {
            name: GOAL_PROFILE.into(),
            rate_bps: Some(1_000_000_000),
            rtt_ms: Some(50.0),
            loss: Some(0.001),
            kind: "emulated".into(),
        };
        let ok = CaseResult {
            profile: GOAL_PROFILE.into(),
            kind: Some(Kind::Dwcp),
            requested: "auto".into(),
            streams: Some(8),
            bytes: 1 << 20,
            seconds: Some(0.5),
            goodput_bps: Some(9.5e8),
            rx_series: vec![(1.0, 9e8), (2.0, 9.6e8)],
            commands: vec!["dwcp-agent send f --to 10.0.0.2:9478 --json".into()],
            ..CaseResult::default()
        };
        let failed = CaseResult {
            kind: Some(Kind::Copy),
            requested: "1".into(),
            error: Some("socat <failed> & \"exited\"".into()),
            ..ok.clone()
        };
        let metrics = vec![
            MetricResult::measured(
                &targets::UTILIZATION,
                Some(GOAL_PROFILE),
                95.0,
                vec![PeerValue {
                    peer: "iperf3 -P 8".into(),
                    value: 97.0,
                }],
            ),
            MetricResult::measured(&targets::CPU_OVERHEAD, Some(GOAL_PROFILE), 45.0, vec![]),
            MetricResult::not_measured(&targets::HDE_RATIO, None, "HDE is not built"),
        ];
        let verdict = targets::verdict(&metrics);
        Report {
            schema_version: SCHEMA_VERSION,
            plan: Plan::new(Suite::Quick, &[]),
            transport: "tcp".into(),
            peer: None,
            started_utc: "20261121T090000Z".into(),
            wall_seconds: 123.4,
            machine: Machine {
                hostname: "h".into(),
                cpus: 2,
                ..Machine::default()
            },
            source: "abc1234".into(),
            agent_version: "dwcp-agent 0.1.0".into(),
            block_kib: 1024,
            links: vec![link],
            commands: vec!["dwcp-agent run --receive-dir /tmp/x".into()],
            cases: vec![ok, failed],
            targets: targets::ALL.iter().map(TargetRow::from).collect(),
            metrics,
            codec: CodecData {
                corpus: Some("target/dwcp-cache/corpus".into()),
                images: vec![
                    "table-r0.raw".into(),
                    "table-r1.raw after table-r0.raw".into(),
                ],
                summary: vec!["full images (1 images, 1024 MiB): HDE ratio 6.00".into()],
            },
            migration: MigrationData {
                command: Some("cargo run --release -p bench -- migration".into()),
                summary: vec!["dwcp live: completed, total 15.0 s".into()],
                dir: Some("bench/results/x/migration".into()),
            },
            verdict,
            errors: vec!["copy round 1: socat failed".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_checks_its_version() {
        let report = sample::report();
        let text = serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(read_json(&text).unwrap(), report);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["metrics"][2]["status"]["status"], "not_measured");
        assert_eq!(value["metrics"][0]["status"]["status"], "pass");
        assert_eq!(value["targets"][0]["comparator"], ">");
        let old = text.replace("\"schema_version\": 1", "\"schema_version\": 0");
        assert!(
            read_json(&old)
                .unwrap_err()
                .to_string()
                .contains("version 0")
        );
        assert!(read_json("{\"schema_version\": 1}").is_err());
    }

    #[test]
    fn writes_the_three_files() {
        let dir = tempfile::tempdir().unwrap();
        write_all(&sample::report(), dir.path()).unwrap();
        for name in ["report.json", "report.md", "junit.xml"] {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
    }
}
