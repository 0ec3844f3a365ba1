//! Every metric the agent exports, defined once.
//!
//! Registration, the `dwcp-agent metrics` listing, the docs and the dashboard checks all
//! read [`ALL`]; nothing else spells a metric name.

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter; the name ends in `_total`.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution: exported as `<name>_bucket`, `<name>_count` and `<name>_sum`.
    Histogram,
}

impl Kind {
    /// The name Prometheus uses in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// Full exported name (counters include `_total`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names, empty for a single series.
    pub labels: &'static [&'static str],
}

impl MetricDef {
    /// The name to hand to `prometheus_client`, which appends `_total` to counters itself.
    pub fn registry_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge | Kind::Histogram => self.name,
        }
    }
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_count` and `_sum`
/// series map to the histogram; other names map to themselves.
pub fn metric_of_series(series: &str) -> &str {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = series.strip_suffix(suffix)
            && ALL
                .iter()
                .any(|d| d.kind == Kind::Histogram && d.name == base)
        {
            return base;
        }
    }
    series
}

/// 1 when the eBPF probes are loaded and attached, 0 otherwise.
pub const PROBE_UP: MetricDef = MetricDef {
    name: "dwcp_probe_up",
    help: "Whether the eBPF probes are loaded and attached (1) or not (0)",
    kind: Kind::Gauge,
    labels: &[],
};
/// Bytes the agent's processes handed to TCP sockets, counted in the kernel.
pub const KERNEL_TX_BYTES: MetricDef = MetricDef {
    name: "dwcp_kernel_tx_bytes_total",
    help: "Bytes sent on the agent's TCP sockets, counted by eBPF at sock_send_length",
    kind: Kind::Counter,
    labels: &[],
};
/// Bytes the agent's processes read from TCP sockets, counted in the kernel.
pub const KERNEL_RX_BYTES: MetricDef = MetricDef {
    name: "dwcp_kernel_rx_bytes_total",
    help: "Bytes received on the agent's TCP sockets, counted by eBPF at sock_recv_length",
    kind: Kind::Counter,
    labels: &[],
};
/// Retransmitted segments of the agent's sockets.
pub const KERNEL_RETRANSMITS: MetricDef = MetricDef {
    name: "dwcp_kernel_retransmits_total",
    help: "TCP retransmissions on the agent's sockets, counted by eBPF at tcp_retransmit_skb",
    kind: Kind::Counter,
    labels: &[],
};
/// Open TCP flows of the agent seen by the probes.
pub const KERNEL_FLOWS: MetricDef = MetricDef {
    name: "dwcp_kernel_flows",
    help: "Open TCP sockets of the agent that carried data, as seen by eBPF",
    kind: Kind::Gauge,
    labels: &[],
};
/// Smoothed RTT per flow.
pub const TCP_SRTT: MetricDef = MetricDef {
    name: "dwcp_tcp_srtt_seconds",
    help: "Smoothed round-trip time of each open agent flow, from tcp_probe",
    kind: Kind::Gauge,
    labels: &["local", "remote"],
};
/// Congestion window per flow.
pub const TCP_CWND: MetricDef = MetricDef {
    name: "dwcp_tcp_cwnd_segments",
    help: "Congestion window of each open agent flow in segments, from tcp_probe",
    kind: Kind::Gauge,
    labels: &["local", "remote"],
};
/// On-CPU time per agent thread name.
pub const AGENT_CPU: MetricDef = MetricDef {
    name: "dwcp_agent_cpu_seconds_total",
    help: "On-CPU time of the agent's threads by thread name, measured by eBPF at sched_switch",
    kind: Kind::Counter,
    labels: &["thread"],
};
/// Kernel time spent running each probe.
pub const PROBE_RUN_SECONDS: MetricDef = MetricDef {
    name: "dwcp_probe_run_seconds_total",
    help: "Time the kernel spent running each eBPF program (BPF run-time statistics)",
    kind: Kind::Counter,
    labels: &["program"],
};
/// Runs of each probe.
pub const PROBE_RUNS: MetricDef = MetricDef {
    name: "dwcp_probe_runs_total",
    help: "Number of runs of each eBPF program (BPF run-time statistics)",
    kind: Kind::Counter,
    labels: &["program"],
};
/// Data streams open on this agent.
pub const AMST_STREAMS: MetricDef = MetricDef {
    name: "dwcp_amst_streams",
    help: "DWCP data streams open on this agent",
    kind: Kind::Gauge,
    labels: &[],
};
/// Transfer payload bytes.
pub const AMST_PAYLOAD_BYTES: MetricDef = MetricDef {
    name: "dwcp_amst_payload_bytes_total",
    help: "Transfer payload bytes written (rx) by this agent's DWCP receiver",
    kind: Kind::Counter,
    labels: &["direction"],
};
/// Transfers by outcome.
pub const AMST_TRANSFERS: MetricDef = MetricDef {
    name: "dwcp_amst_transfers_total",
    help: "Transfers received, by outcome (completed: verified and in place; failed)",
    kind: Kind::Counter,
    labels: &["outcome"],
};
/// Stream blocks per codec.
pub const CODEC_BLOCKS: MetricDef = MetricDef {
    name: "dwcp_codec_blocks_total",
    help: "Stream blocks sent (tx, migrations) or delivered (rx) by this agent, by frame codec",
    kind: Kind::Counter,
    labels: &["direction", "codec"],
};
/// Stream bytes per codec, before and after encoding.
pub const CODEC_BYTES: MetricDef = MetricDef {
    name: "dwcp_codec_bytes_total",
    help: "Bytes of those stream blocks by frame codec: data bytes (kind=raw) and wire payload bytes (kind=encoded)",
    kind: Kind::Counter,
    labels: &["direction", "codec", "kind"],
};
/// The current `auto` codec choice.
pub const CODEC_CHOICE: MetricDef = MetricDef {
    name: "dwcp_codec_choice",
    help: "Latest codec choice of this agent's auto-codec senders: 1 on the chosen codec, 0 on the other",
    kind: Kind::Gauge,
    labels: &["codec"],
};
/// `auto` codec decisions.
pub const CODEC_DECISIONS: MetricDef = MetricDef {
    name: "dwcp_codec_decisions_total",
    help: "Decisions of this agent's auto-codec senders, by codec chosen and reason (link_bound, cpu_bound, incompressible, unmeasured)",
    kind: Kind::Counter,
    labels: &["codec", "reason"],
};
/// Blocks committed in the block pools.
pub const PBA_BLOCKS: MetricDef = MetricDef {
    name: "dwcp_pba_blocks",
    help: "Blocks the agent's block pools keep committed (their predicted demand)",
    kind: Kind::Gauge,
    labels: &[],
};
/// Blocks lent out.
pub const PBA_BLOCKS_IN_USE: MetricDef = MetricDef {
    name: "dwcp_pba_blocks_in_use",
    help: "Blocks of the agent's block pools in use now",
    kind: Kind::Gauge,
    labels: &[],
};
/// Idle memory of the pools.
pub const PBA_OVERHEAD: MetricDef = MetricDef {
    name: "dwcp_pba_memory_overhead_ratio",
    help: "Committed pool bytes not in use per byte in use (idle memory the pools keep)",
    kind: Kind::Gauge,
    labels: &[],
};
/// Waiting for blocks.
pub const PBA_ACQUIRE_WAIT: MetricDef = MetricDef {
    name: "dwcp_pba_acquire_wait_seconds_total",
    help: "Time spent waiting for a free block (back-pressure from the pools)",
    kind: Kind::Counter,
    labels: &[],
};
/// VMs per lifecycle state.
pub const VMS: MetricDef = MetricDef {
    name: "dwcp_vms",
    help: "VMs managed by this agent in each lifecycle state",
    kind: Kind::Gauge,
    labels: &["state"],
};
/// Each VM's state, one series per state.
pub const VM_STATE: MetricDef = MetricDef {
    name: "dwcp_vm_state",
    help: "Lifecycle state of each VM: 1 on the series of its current state, 0 on the others",
    kind: Kind::Gauge,
    labels: &["vm", "state"],
};
/// How long starts take.
pub const VM_START_SECONDS: MetricDef = MetricDef {
    name: "dwcp_vm_start_seconds",
    help: "Time from a VM start request until QEMU runs the guest and answers QMP",
    kind: Kind::Histogram,
    labels: &[],
};
/// Pre-copy round of each migration in progress.
pub const MIGRATION_ROUND: MetricDef = MetricDef {
    name: "dwcp_migration_round",
    help: "Pre-copy round (QEMU dirty-bitmap syncs) of each outgoing migration in progress",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// RAM still to send.
pub const MIGRATION_REMAINING_BYTES: MetricDef = MetricDef {
    name: "dwcp_migration_remaining_bytes",
    help: "Guest RAM bytes QEMU still has to send in the current round of each outgoing migration",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// RAM sent so far.
pub const MIGRATION_TRANSFERRED_BYTES: MetricDef = MetricDef {
    name: "dwcp_migration_transferred_bytes",
    help: "Guest RAM bytes QEMU has sent so far in each outgoing migration",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// Bytes on the wire after the codec.
pub const MIGRATION_WIRE_BYTES: MetricDef = MetricDef {
    name: "dwcp_migration_wire_bytes",
    help: "Payload bytes the AMST streams sent (after HDE or zstd) for each outgoing migration",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// Guest dirty rate.
pub const MIGRATION_DIRTY_RATE: MetricDef = MetricDef {
    name: "dwcp_migration_dirty_rate_bytes_per_second",
    help: "Bytes per second the guest dirties, as QEMU measures it during each outgoing migration",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// QEMU's downtime estimate.
pub const MIGRATION_EXPECTED_DOWNTIME: MetricDef = MetricDef {
    name: "dwcp_migration_expected_downtime_seconds",
    help: "QEMU's estimate of the final pause if it stopped the guest now, per outgoing migration",
    kind: Kind::Gauge,
    labels: &["vm"],
};
/// Finished migrations.
pub const MIGRATIONS: MetricDef = MetricDef {
    name: "dwcp_migrations_total",
    help: "Outgoing migrations that ended, by outcome (completed or rolled_back)",
    kind: Kind::Counter,
    labels: &["outcome"],
};
/// Final pause of completed migrations.
pub const MIGRATION_DOWNTIME_SECONDS: MetricDef = MetricDef {
    name: "dwcp_migration_downtime_seconds",
    help: "Guest pause of completed outgoing migrations, as QEMU measured it",
    kind: Kind::Histogram,
    labels: &[],
};
/// Total time of completed migrations.
pub const MIGRATION_SECONDS: MetricDef = MetricDef {
    name: "dwcp_migration_seconds",
    help: "Time from the migrate request until the destination runs the VM, for completed migrations",
    kind: Kind::Histogram,
    labels: &[],
};
/// Build information.
pub const BUILD_INFO: MetricDef = MetricDef {
    name: "dwcp_build_info",
    help: "Always 1; labels carry the agent version",
    kind: Kind::Gauge,
    labels: &["version"],
};

/// Every metric the agent exports.
pub const ALL: &[MetricDef] = &[
    PROBE_UP,
    KERNEL_TX_BYTES,
    KERNEL_RX_BYTES,
    KERNEL_RETRANSMITS,
    KERNEL_FLOWS,
    TCP_SRTT,
    TCP_CWND,
    AGENT_CPU,
    PROBE_RUN_SECONDS,
    PROBE_RUNS,
    AMST_STREAMS,
    AMST_PAYLOAD_BYTES,
    AMST_TRANSFERS,
    CODEC_BLOCKS,
    CODEC_BYTES,
    CODEC_CHOICE,
    CODEC_DECISIONS,
    PBA_BLOCKS,
    PBA_BLOCKS_IN_USE,
    PBA_OVERHEAD,
    PBA_ACQUIRE_WAIT,
    VMS,
    VM_STATE,
    VM_START_SECONDS,
    MIGRATION_ROUND,
    MIGRATION_REMAINING_BYTES,
    MIGRATION_TRANSFERRED_BYTES,
    MIGRATION_WIRE_BYTES,
    MIGRATION_DIRTY_RATE,
    MIGRATION_EXPECTED_DOWNTIME,
    MIGRATIONS,
    MIGRATION_DOWNTIME_SECONDS,
    MIGRATION_SECONDS,
    BUILD_INFO,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_kind() {
        let mut seen = std::collections::HashSet::new();
        for def in ALL {
            assert!(seen.insert(def.name), "{} defined twice", def.name);
            assert!(def.name.starts_with("dwcp_"), "{}", def.name);
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}",
                def.name
            );
            assert!(
                def.help.chars().next().is_some_and(char::is_uppercase),
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn histogram_series_map_to_their_metric() {
        assert_eq!(
            metric_of_series("dwcp_vm_start_seconds_bucket"),
            "dwcp_vm_start_seconds"
        );
        assert_eq!(
            metric_of_series("dwcp_vm_start_seconds_sum"),
            "dwcp_vm_start_seconds"
        );
        assert_eq!(metric_of_series("dwcp_vms"), "dwcp_vms");
        assert_eq!(metric_of_series("dwcp_x_count"), "dwcp_x_count");
    }
}
