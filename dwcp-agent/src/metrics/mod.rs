//! The agent's Prometheus registry and the handles to update it.
//!
//! Names, help texts and label names come from [`names`]; a test checks that what the
//! registry encodes is exactly the set defined there.

pub mod codec;
pub mod names;

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

use names::MetricDef;

/// Labels of per-flow gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// Local `address:port`.
    pub local: String,
    /// Remote `address:port`.
    pub remote: String,
}

/// Labels of per-thread counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabels {
    /// Thread name.
    pub thread: String,
}

/// Labels of per-program counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    /// eBPF program name.
    pub program: String,
}

/// Labels of transfer byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `rx` or `tx`.
    pub direction: String,
}

/// Labels of transfer outcome counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `completed` or `failed`.
    pub outcome: String,
}

/// Labels of the VM count per state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Lifecycle state name.
    pub state: String,
}

/// Labels of the per-VM state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmStateLabels {
    /// VM name.
    pub vm: String,
    /// Lifecycle state name.
    pub state: String,
}

/// Bucket bounds of [`names::VM_START_SECONDS`]: 0.1 s to about 100 s.
pub const VM_START_BUCKETS: [f64; 11] =
    [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// Floating-point counter.
pub type SecondsCounter = Counter<f64, AtomicU64>;
/// Floating-point gauge (seconds or a ratio).
pub type SecondsGauge = Gauge<f64, AtomicU64>;

/// Every metric of the agent, registered.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    /// [`names::PROBE_UP`].
    pub probe_up: Gauge,
    /// [`names::KERNEL_TX_BYTES`].
    pub kernel_tx_bytes: Counter,
    /// [`names::KERNEL_RX_BYTES`].
    pub kernel_rx_bytes: Counter,
    /// [`names::KERNEL_RETRANSMITS`].
    pub kernel_retransmits: Counter,
    /// [`names::KERNEL_FLOWS`].
    pub kernel_flows: Gauge,
    /// [`names::TCP_SRTT`].
    pub tcp_srtt: Family<FlowLabels, SecondsGauge>,
    /// [`names::TCP_CWND`].
    pub tcp_cwnd: Family<FlowLabels, Gauge>,
    /// [`names::AGENT_CPU`].
    pub agent_cpu: Family<ThreadLabels, SecondsCounter>,
    /// [`names::PROBE_RUN_SECONDS`].
    pub probe_run_seconds: Family<ProgramLabels, SecondsCounter>,
    /// [`names::PROBE_RUNS`].
    pub probe_runs: Family<ProgramLabels, Counter>,
    /// [`names::AMST_STREAMS`].
    pub amst_streams: Gauge,
    /// [`names::AMST_PAYLOAD_BYTES`].
    pub amst_payload_bytes: Family<DirectionLabels, Counter>,
    /// [`names::AMST_TRANSFERS`].
    pub amst_transfers: Family<OutcomeLabels, Counter>,
    /// The `dwcp_codec_*` metrics.
    pub codec: codec::CodecMetrics,
    /// [`names::PBA_BLOCKS`].
    pub pba_blocks: Gauge,
    /// [`names::PBA_BLOCKS_IN_USE`].
    pub pba_blocks_in_use: Gauge,
    /// [`names::PBA_OVERHEAD`].
    pub pba_overhead: SecondsGauge,
    /// [`names::PBA_ACQUIRE_WAIT`].
    pub pba_acquire_wait: SecondsCounter,
    /// [`names::VMS`]; every state has a series from the start.
    pub vms: Family<StateLabels, Gauge>,
    /// [`names::VM_STATE`].
    pub vm_state: Family<VmStateLabels, Gauge>,
    /// [`names::VM_START_SECONDS`].
    pub vm_start_seconds: Histogram,
    /// The `dwcp_migration_*` metrics.
    pub migration: MigrationMetrics,
}

/// Labels of per-VM migration gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    /// VM name.
    pub vm: String,
}

/// Bucket bounds of [`names::MIGRATION_DOWNTIME_SECONDS`]: 10 ms to 10 s.
pub const MIGRATION_DOWNTIME_BUCKETS: [f64; 10] =
    [0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Bucket bounds of [`names::MIGRATION_SECONDS`]: 1 s to 10 min.
pub const MIGRATION_SECONDS_BUCKETS: [f64; 10] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The migration metrics (see [`crate::migrate`]).
#[derive(Debug)]
pub struct MigrationMetrics {
    /// [`names::MIGRATION_ROUND`].
    pub round: Family<VmLabels, Gauge>,
    /// [`names::MIGRATION_REMAINING_BYTES`].
    pub remaining_bytes: Family<VmLabels, Gauge>,
    /// [`names::MIGRATION_TRANSFERRED_BYTES`].
    pub transferred_bytes: Family<VmLabels, Gauge>,
    /// [`names::MIGRATION_WIRE_BYTES`].
    pub wire_bytes: Family<VmLabels, Gauge>,
    /// [`names::MIGRATION_DIRTY_RATE`].
    pub dirty_rate: Family<VmLabels, Gauge>,
    /// [`names::MIGRATION_EXPECTED_DOWNTIME`].
    pub expected_downtime: Family<VmLabels, SecondsGauge>,
    /// [`names::MIGRATIONS`].
    pub finished: Family<OutcomeLabels, Counter>,
    /// [`names::MIGRATION_DOWNTIME_SECONDS`].
    pub downtime_seconds: Histogram,
    /// [`names::MIGRATION_SECONDS`].
    pub seconds: Histogram,
}

impl MigrationMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            round: register(r, names::MIGRATION_ROUND, Family::default()),
            remaining_bytes: register(r, names::MIGRATION_REMAINING_BYTES, Family::default()),
            transferred_bytes: register(r, names::MIGRATION_TRANSFERRED_BYTES, Family::default()),
            wire_bytes: register(r, names::MIGRATION_WIRE_BYTES, Family::default()),
            dirty_rate: register(r, names::MIGRATION_DIRTY_RATE, Family::default()),
            expected_downtime: register(r, names::MIGRATION_EXPECTED_DOWNTIME, Family::default()),
            finished: register(r, names::MIGRATIONS, Family::default()),
            downtime_seconds: register(
                r,
                names::MIGRATION_DOWNTIME_SECONDS,
                Histogram::new(MIGRATION_DOWNTIME_BUCKETS),
            ),
            seconds: register(
                r,
                names::MIGRATION_SECONDS,
                Histogram::new(MIGRATION_SECONDS_BUCKETS),
            ),
        }
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Creates and registers every metric in [`names::ALL`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        let r = &mut registry;
        let probe_up = register(r, names::PROBE_UP, Gauge::default());
        let kernel_tx_bytes = register(r, names::KERNEL_TX_BYTES, Counter::default());
        let kernel_rx_bytes = register(r, names::KERNEL_RX_BYTES, Counter::default());
        let kernel_retransmits = register(r, names::KERNEL_RETRANSMITS, Counter::default());
        let kernel_flows = register(r, names::KERNEL_FLOWS, Gauge::default());
        let tcp_srtt = register(r, names::TCP_SRTT, Family::default());
        let tcp_cwnd = register(r, names::TCP_CWND, Family::default());
        let agent_cpu = register(r, names::AGENT_CPU, Family::default());
        let probe_run_seconds = register(r, names::PROBE_RUN_SECONDS, Family::default());
        let probe_runs = register(r, names::PROBE_RUNS, Family::default());
        let amst_streams = register(r, names::AMST_STREAMS, Gauge::default());
        let amst_payload_bytes = register(r, names::AMST_PAYLOAD_BYTES, Family::default());
        let amst_transfers = register(r, names::AMST_TRANSFERS, Family::default());
        // Every series exists from the start, so queries see zeros rather than nothing.
        let _ = amst_payload_bytes.get_or_create(&DirectionLabels {
            direction: "rx".into(),
        });
        for outcome in ["completed", "failed"] {
            let _ = amst_transfers.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        let codec = codec::CodecMetrics::register(r);
        let pba_blocks = register(r, names::PBA_BLOCKS, Gauge::default());
        let pba_blocks_in_use = register(r, names::PBA_BLOCKS_IN_USE, Gauge::default());
        let pba_overhead = register(r, names::PBA_OVERHEAD, SecondsGauge::default());
        let pba_acquire_wait = register(r, names::PBA_ACQUIRE_WAIT, SecondsCounter::default());
        let vms = register(r, names::VMS, Family::<StateLabels, Gauge>::default());
        for state in crate::vm::VmState::NAMES {
            let _ = vms.get_or_create(&StateLabels {
                state: state.into(),
            });
        }
        let vm_state = register(r, names::VM_STATE, Family::default());
        let vm_start_seconds =
            register(r, names::VM_START_SECONDS, Histogram::new(VM_START_BUCKETS));
        let migration = MigrationMetrics::register(r);
        let _ = register(r, names::BUILD_INFO, build_info);
        Self {
            registry,
            probe_up,
            kernel_tx_bytes,
            kernel_rx_bytes,
            kernel_retransmits,
            kernel_flows,
            tcp_srtt,
            tcp_cwnd,
            agent_cpu,
            probe_run_seconds,
            probe_runs,
            amst_streams,
            amst_payload_bytes,
            amst_transfers,
            codec,
            pba_blocks,
            pba_blocks_in_use,
            pba_overhead,
            pba_acquire_wait,
            vms,
            vm_state,
            vm_start_seconds,
            migration,
        }
    }

    /// Drops every state series of VM `vm` (it was deleted).
    pub fn vm_state_remove(&self, vm: &str) {
        for state in crate::vm::VmState::NAMES {
            let _ = self.vm_state.remove(&VmStateLabels {
                vm: vm.into(),
                state: state.into(),
            });
        }
    }

    /// Prometheus text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registers `metric` under `def` and hands back a handle to it.
fn register<M: Metric + Clone>(registry: &mut Registry, def: MetricDef, metric: M) -> M {
    registry.register(def.registry_name(), def.help, metric.clone());
    metric
}

/// Content type of [`AgentMetrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// Labelled families print nothing until they have a series, so every one is given
    /// a series here before comparing.
    #[test]
    fn registry_exports_exactly_the_defined_metrics() {
        let metrics = AgentMetrics::new();
        metrics
            .agent_cpu
            .get_or_create(&ThreadLabels { thread: "t".into() })
            .inc_by(1.5);
        metrics
            .tcp_srtt
            .get_or_create(&FlowLabels {
                local: "a".into(),
                remote: "b".into(),
            })
            .set(0.1);
        metrics
            .tcp_cwnd
            .get_or_create(&FlowLabels {
                local: "a".into(),
                remote: "b".into(),
            })
            .set(10);
        let program = ProgramLabels {
            program: "p".into(),
        };
        metrics.probe_runs.get_or_create(&program).inc();
        metrics
            .probe_run_seconds
            .get_or_create(&program)
            .inc_by(0.5);
        metrics
            .vm_state
            .get_or_create(&VmStateLabels {
                vm: "v".into(),
                state: "running".into(),
            })
            .set(1);
        let vm = VmLabels { vm: "v".into() };
        let m = &metrics.migration;
        for family in [
            &m.round,
            &m.remaining_bytes,
            &m.transferred_bytes,
            &m.wire_bytes,
            &m.dirty_rate,
        ] {
            family.get_or_create(&vm).set(1);
        }
        m.expected_downtime.get_or_create(&vm).set(0.1);
        m.finished
            .get_or_create(&OutcomeLabels {
                outcome: "completed".into(),
            })
            .inc();
        let text = metrics.encode();
        assert!(text.contains("dwcp_vms{state=\"failed\"} 0"), "{text}");
        assert!(text.contains("dwcp_vm_start_seconds_count 0"), "{text}");
        let mut helped: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        helped.sort_unstable();
        let mut defined: Vec<&str> = names::ALL.iter().map(MetricDef::registry_name).collect();
        defined.sort_unstable();
        assert_eq!(helped, defined);
        assert!(
            text.contains("dwcp_agent_cpu_seconds_total{thread=\"t\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("dwcp_tcp_srtt_seconds{local=\"a\",remote=\"b\"} 0.1"),
            "{text}"
        );
        assert!(text.contains("dwcp_build_info{version="), "{text}");
    }

    /// The codec series exist (at zero) from the start, and a tally's growth shows up
    /// on its side only; the choice gauge follows the latest decision.
    #[test]
    fn codec_series_follow_the_tallies() {
        use crate::{
            amst::stream::codec_tally::{
                AutoCodec, CodecTally, Decision, DecisionReason, TallySnapshot,
            },
            protocol::frame::Codec,
        };
        let metrics = AgentMetrics::new();
        let text = metrics.encode();
        for series in [
            "dwcp_codec_blocks_total{direction=\"rx\",codec=\"hde\"} 0",
            "dwcp_codec_bytes_total{direction=\"tx\",codec=\"zstd\",kind=\"encoded\"} 0",
            "dwcp_codec_choice{codec=\"none\"} 0",
            "dwcp_codec_decisions_total{codec=\"hde\",reason=\"link_bound\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        let rx = CodecTally::default();
        rx.record_block(Codec::Hde, 4096, 100);
        let seen = rx.snapshot();
        metrics
            .codec
            .export(codec::Direction::Rx, &seen, &TallySnapshot::default());
        rx.record_block(Codec::Hde, 4096, 60);
        rx.record_block(Codec::None, 10, 10);
        metrics
            .codec
            .export(codec::Direction::Rx, &rx.snapshot(), &seen);
        let tx = &metrics.codec.sender;
        tx.record_decision(Decision {
            codec: AutoCodec::Hde,
            reason: DecisionReason::CpuBound,
        });
        metrics.codec.export(
            codec::Direction::Tx,
            &tx.snapshot(),
            &TallySnapshot::default(),
        );
        let text = metrics.encode();
        for series in [
            "dwcp_codec_blocks_total{direction=\"rx\",codec=\"hde\"} 2",
            "dwcp_codec_blocks_total{direction=\"rx\",codec=\"none\"} 1",
            "dwcp_codec_blocks_total{direction=\"tx\",codec=\"hde\"} 0",
            "dwcp_codec_bytes_total{direction=\"rx\",codec=\"hde\",kind=\"raw\"} 8192",
            "dwcp_codec_bytes_total{direction=\"rx\",codec=\"hde\",kind=\"encoded\"} 160",
            "dwcp_codec_choice{codec=\"hde\"} 1",
            "dwcp_codec_choice{codec=\"none\"} 0",
            "dwcp_codec_decisions_total{codec=\"hde\",reason=\"cpu_bound\"} 1",
            "dwcp_codec_decisions_total{codec=\"none\",reason=\"cpu_bound\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }
}
