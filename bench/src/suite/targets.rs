//! The targets every suite run is judged against, defined once, and the verdict.
//!
//! Each [`Target`] says what is measured, the comparator and threshold, the unit, and
//! where the number comes from: the seed's Phase-0 table or our own goal. A run turns
//! each target into [`MetricResult`]s (one per profile where it applies): the measured
//! value, the peers measured in the same run, and PASS, FAIL or "not measured" with the
//! reason. The run is **Go** iff every required target has at least one result and all
//! its results pass; a "not measured" result is never a pass.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a measured value is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    /// Strictly greater.
    #[serde(rename = ">")]
    Greater,
    /// Greater or equal.
    #[serde(rename = ">=")]
    AtLeast,
    /// Strictly smaller.
    #[serde(rename = "<")]
    Less,
    /// Smaller or equal.
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparator {
    /// Whether `value` meets `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::AtLeast => value >= threshold,
            Self::Less => value < threshold,
            Self::AtMost => value <= threshold,
        }
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Greater => ">",
            Self::AtLeast => "≥",
            Self::Less => "<",
            Self::AtMost => "≤",
        })
    }
}

/// Where a target comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The seed's Phase-0 benchmark table.
    Seed,
    /// Our own, stricter goal.
    Goal,
}

/// One target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Target {
    /// Stable identifier (JSON key, JUnit test name).
    pub id: &'static str,
    /// What is measured, for people.
    pub name: &'static str,
    /// Comparator.
    pub comparator: Comparator,
    /// Threshold, in `unit`.
    pub threshold: f64,
    /// Unit of threshold and value.
    pub unit: &'static str,
    /// Seed or our goal.
    pub source: Source,
    /// Whether the Go/No-Go verdict depends on it.
    pub required: bool,
    /// Exactly how the value is computed.
    pub definition: &'static str,
}

/// Bandwidth utilization (seed).
pub const UTILIZATION: Target = Target {
    id: "bandwidth_utilization",
    name: "Bandwidth utilization",
    comparator: Comparator::Greater,
    threshold: 70.0,
    unit: "%",
    source: Source::Seed,
    required: true,
    definition: "Goodput of `dwcp-agent send --streams auto` (payload bytes over the \
                 sender's transfer clock) divided by the emulated link's configured rate.",
};
/// Bandwidth utilization on the WAN profile (our goal).
pub const UTILIZATION_GOAL: Target = Target {
    id: "bandwidth_utilization_wan_goal",
    name: "Bandwidth utilization on wan-1g-50ms-0.1pct, --streams auto",
    comparator: Comparator::AtLeast,
    threshold: 95.0,
    unit: "%",
    source: Source::Goal,
    required: true,
    definition: "As bandwidth utilization, on the wan-1g-50ms-0.1pct profile only.",
};
/// Transfer time against one plain stream.
pub const TIME_VS_V1: Target = Target {
    id: "transfer_time_vs_v1",
    name: "Transfer time vs v1 (one stream, no compression)",
    comparator: Comparator::Less,
    threshold: 1.0,
    unit: "×",
    source: Source::Seed,
    required: true,
    definition: "Seconds of `dwcp-agent send --streams auto` divided by the seconds of the \
                 plain single-stream copy (socat, file to file) of the same file over the \
                 same link; below 1 means dwcp is faster.",
};
/// Transfer time against many streams with zstd.
pub const TIME_VS_V2: Target = Target {
    id: "transfer_time_vs_v2",
    name: "Transfer time vs v2 (many streams, zstd only)",
    comparator: Comparator::Less,
    threshold: 1.0,
    unit: "×",
    source: Source::Seed,
    required: true,
    definition: "Seconds of dwcp with HDE divided by the seconds of the same stream count \
                 with zstd only.",
};
/// CPU overhead.
pub const CPU_OVERHEAD: Target = Target {
    id: "cpu_overhead",
    name: "CPU overhead",
    comparator: Comparator::Less,
    threshold: 30.0,
    unit: "% of one CPU",
    source: Source::Seed,
    required: true,
    definition: "CPU-seconds of the busier agent (sender: the summary's kernel-measured \
                 `cpu_seconds`; receiver: growth of `dwcp_agent_cpu_seconds_total` across \
                 the send) per second of transfer, for `--streams auto`. Both are measured \
                 by the agents' eBPF probes (sched_stat_runtime).",
};
/// PBA memory overhead.
pub const PBA_OVERHEAD: Target = Target {
    id: "pba_memory_overhead",
    name: "PBA memory overhead",
    comparator: Comparator::Less,
    threshold: 20.0,
    unit: "%",
    source: Source::Seed,
    required: true,
    definition: "Idle pool memory per byte in flight on the receiving agent during the \
                 `--streams auto` send: Σ(dwcp_pba_blocks − dwcp_pba_blocks_in_use) / \
                 Σ dwcp_pba_blocks_in_use over the per-second samples in which blocks were \
                 in use (blocks held by the pools but idle, per block carrying data).",
};
/// HDE compression ratio.
pub const HDE_RATIO: Target = Target {
    id: "hde_ratio",
    name: "HDE compression ratio",
    comparator: Comparator::Greater,
    threshold: 5.0,
    unit: "×",
    source: Source::Seed,
    required: true,
    definition: "Bytes of guest memory in divided by bytes out of HDE (every level, \
                 zstd-1), over all full memory images of the corpus (`cargo xtask corpus`).",
};
/// HDE's ratio against zstd-1's on full guest-memory images (our goal).
pub const HDE_VS_ZSTD1: Target = Target {
    id: "hde_ratio_vs_zstd1",
    name: "HDE ratio vs zstd-1 on full guest-memory images",
    comparator: Comparator::AtLeast,
    threshold: 1.5,
    unit: "×",
    source: Source::Goal,
    required: true,
    definition: "HDE's ratio (every level, zstd-1) divided by zstd-1 per 1 MiB block's, \
                 both over all full memory images of the corpus (`cargo xtask corpus`).",
};
/// HDE's encode speed per core on full images (our goal).
pub const HDE_ENCODE: Target = Target {
    id: "hde_encode_per_core",
    name: "HDE encode speed per core on full guest-memory images",
    comparator: Comparator::AtLeast,
    threshold: 1000.0,
    unit: "MB/s",
    source: Source::Goal,
    required: true,
    definition: "Image bytes over the encoder thread's CPU seconds, HDE with every level \
                 (zstd-1), over all full memory images of the corpus.",
};
/// HDE's ratio on pre-copy round deltas (our goal).
pub const HDE_ROUND_DELTA: Target = Target {
    id: "hde_round_delta_ratio",
    name: "HDE ratio on pre-copy round deltas",
    comparator: Comparator::AtLeast,
    threshold: 10.0,
    unit: "×",
    source: Source::Goal,
    required: true,
    definition: "Image bytes over encoded bytes of every later round of the corpus, each \
                 encoded after its previous round (the receiver holds that round).",
};
/// Goodput against the TCP ceiling of the same stream count.
pub const VS_IPERF3: Target = Target {
    id: "goodput_vs_iperf3",
    name: "Goodput vs iperf3 -P N (same stream count)",
    comparator: Comparator::AtLeast,
    threshold: 90.0,
    unit: "%",
    source: Source::Goal,
    required: false,
    definition: "Goodput of `dwcp-agent send --streams auto` divided by `iperf3 -P N` \
                 (memory to memory, same bytes) with N the count the agent settled on.",
};

/// The targets table, in report order.
/// Small-VM live migration time (seed).
pub const MIGRATION_TIME: Target = Target {
    id: "vm_migration_time",
    name: "Live migration time of a small VM",
    comparator: Comparator::Less,
    threshold: 30.0,
    unit: "s",
    source: Source::Seed,
    required: true,
    definition: "QEMU's total-time of `dwcp-agent vm migrate --mode live` of a 1 GiB TCG \
                 guest dirtying 512 MiB at 16 MiB/s, over wan-1g-50ms-0.1pct \
                 (`dwcp-bench migration`); the destination guest must report its memory \
                 intact.",
};
/// Live migration downtime (seed).
pub const MIGRATION_DOWNTIME_SEED: Target = Target {
    id: "vm_migration_downtime_seed",
    name: "Live migration downtime (seed)",
    comparator: Comparator::Less,
    threshold: 5000.0,
    unit: "ms",
    source: Source::Seed,
    required: true,
    definition: "QEMU's own downtime figure of the same dwcp live migration.",
};
/// Live migration downtime against QEMU's default limit (our goal).
pub const MIGRATION_DOWNTIME: Target = Target {
    id: "vm_migration_downtime",
    name: "Live migration downtime within QEMU's default limit",
    comparator: Comparator::AtMost,
    threshold: 300.0,
    unit: "ms",
    source: Source::Goal,
    required: true,
    definition: "As the seed's downtime row, against QEMU's default downtime-limit of \
                 300 ms.",
};
/// Live migration time against QEMU's own (our goal).
pub const MIGRATION_SPEEDUP: Target = Target {
    id: "vm_migration_speedup_vs_qemu",
    name: "Live migration time, QEMU native over dwcp",
    comparator: Comparator::AtLeast,
    threshold: 3.0,
    unit: "×",
    source: Source::Goal,
    required: true,
    definition: "QEMU's total-time of its own single-stream migration of the same guest \
                 over the same link in the same run, divided by dwcp's. A native migration \
                 that does not complete within the time limit counts as the limit (a lower \
                 bound on the speed-up).",
};
/// VM start time (seed).
pub const VM_START: Target = Target {
    id: "vm_start_time",
    name: "VM start time",
    comparator: Comparator::Less,
    threshold: 5.0,
    unit: "s",
    source: Source::Seed,
    required: true,
    definition: "From `dwcp-agent vm create` to `vm start` returning with the VM Running \
                 (QEMU launched, answering QMP, guest executing), for the migration \
                 benchmark's 1 GiB guest.",
};

pub const ALL: &[Target] = &[
    UTILIZATION,
    UTILIZATION_GOAL,
    TIME_VS_V1,
    TIME_VS_V2,
    CPU_OVERHEAD,
    PBA_OVERHEAD,
    HDE_RATIO,
    HDE_VS_ZSTD1,
    HDE_ENCODE,
    HDE_ROUND_DELTA,
    MIGRATION_TIME,
    MIGRATION_DOWNTIME_SEED,
    MIGRATION_DOWNTIME,
    MIGRATION_SPEEDUP,
    VM_START,
    VS_IPERF3,
];

/// Outcome of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Status {
    /// Measured and meets the target.
    Pass,
    /// Measured and misses the target.
    Fail,
    /// Not measured, with the reason.
    NotMeasured(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => f.write_str("PASS"),
            Self::Fail => f.write_str("FAIL"),
            Self::NotMeasured(why) => write!(f, "not measured: {why}"),
        }
    }
}

/// A peer's figure measured in the same run, shown next to the value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerValue {
    /// Which peer (e.g. `iperf3 -P 4`).
    pub peer: String,
    /// Its figure in the metric's unit.
    pub value: f64,
}

/// One target judged on one profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The target's identifier.
    pub target: String,
    /// The profile it was measured on (`None`: over the whole run).
    pub profile: Option<String>,
    /// The measured value (`None` when not measured).
    pub value: Option<f64>,
    /// Peers measured in the same run, in the same unit.
    pub peers: Vec<PeerValue>,
    /// PASS, FAIL or not measured.
    pub status: Status,
}

impl MetricResult {
    /// Judges `value` against `target`.
    pub fn measured(
        target: &Target,
        profile: Option<&str>,
        value: f64,
        peers: Vec<PeerValue>,
    ) -> Self {
        let status = if target.comparator.holds(value, target.threshold) {
            Status::Pass
        } else {
            Status::Fail
        };
        Self {
            target: target.id.into(),
            profile: profile.map(str::to_owned),
            value: Some(value),
            peers,
            status,
        }
    }

    /// A result saying why `target` was not measured.
    pub fn not_measured(target: &Target, profile: Option<&str>, why: impl Into<String>) -> Self {
        Self {
            target: target.id.into(),
            profile: profile.map(str::to_owned),
            value: None,
            peers: Vec::new(),
            status: Status::NotMeasured(why.into()),
        }
    }
}

/// The overall decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Go (true) or No-Go.
    pub go: bool,
    /// Required targets that did not pass, with why.
    pub blocking: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.go {
            f.write_str("GO: every required target passed")
        } else {
            write!(
                f,
                "NO-GO: {} required result(s) did not pass",
                self.blocking.len()
            )
        }
    }
}

/// Go iff every required target has results and all of them pass.
pub fn verdict(results: &[MetricResult]) -> Verdict {
    let mut blocking = Vec::new();
    for target in ALL.iter().filter(|t| t.required) {
        let mine: Vec<&MetricResult> = results.iter().filter(|r| r.target == target.id).collect();
        if mine.is_empty() {
            blocking.push(format!("{}: no result", target.id));
        }
        for r in mine {
            if r.status != Status::Pass {
                let place = r
                    .profile
                    .as_deref()
                    .map_or(String::new(), |p| format!(" on {p}"));
                blocking.push(format!("{}{place}: {}", target.id, r.status));
            }
        }
    }
    Verdict {
        go: blocking.is_empty(),
        blocking,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_passing() -> Vec<MetricResult> {
        ALL.iter()
            .map(|t| {
                let value = match t.comparator {
                    Comparator::Less | Comparator::AtMost => t.threshold - 0.5,
                    Comparator::Greater | Comparator::AtLeast => t.threshold + 1.0,
                };
                MetricResult::measured(t, Some("p"), value, Vec::new())
            })
            .collect()
    }

    #[test]
    fn comparators_hold_at_their_edges() {
        assert!(Comparator::AtLeast.holds(95.0, 95.0));
        assert!(!Comparator::Greater.holds(70.0, 70.0));
        assert!(!Comparator::Less.holds(1.0, 1.0));
        assert!(Comparator::Less.holds(0.99, 1.0));
        assert!(Comparator::AtMost.holds(300.0, 300.0));
        assert!(!Comparator::AtMost.holds(300.1, 300.0));
    }

    #[test]
    fn go_when_every_required_target_passes() {
        let results = all_passing();
        assert!(results.iter().all(|r| r.status == Status::Pass));
        assert_eq!(
            verdict(&results),
            Verdict {
                go: true,
                blocking: vec![]
            }
        );
    }

    #[test]
    fn one_failure_is_no_go() {
        let mut results = all_passing();
        results.push(MetricResult::measured(
            &CPU_OVERHEAD,
            Some("q"),
            45.0,
            vec![],
        ));
        let v = verdict(&results);
        assert!(!v.go);
        assert_eq!(v.blocking, ["cpu_overhead on q: FAIL"]);
    }

    #[test]
    fn not_measured_is_not_a_pass() {
        let mut results = all_passing();
        results.retain(|r| r.target != HDE_RATIO.id);
        results.push(MetricResult::not_measured(
            &HDE_RATIO,
            None,
            "HDE is not built",
        ));
        let v = verdict(&results);
        assert!(!v.go);
        assert!(v.blocking[0].contains("not measured: HDE is not built"));
    }

    #[test]
    fn a_missing_required_target_is_no_go_but_informational_ones_do_not_count() {
        let mut results = all_passing();
        results.retain(|r| r.target != PBA_OVERHEAD.id);
        assert_eq!(
            verdict(&results).blocking,
            ["pba_memory_overhead: no result"]
        );
        let mut results = all_passing();
        results.retain(|r| r.target != VS_IPERF3.id);
        results.push(MetricResult::measured(&VS_IPERF3, None, 10.0, vec![]));
        assert!(verdict(&results).go, "informational target failing");
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = ALL.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
    }
}
