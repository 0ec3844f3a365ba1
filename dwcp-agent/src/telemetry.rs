//! Turns probe readings into metrics: counter deltas, per-flow gauges, per-thread CPU.
//!
//! The kernel maps hold cumulative values per socket and per thread; sockets and threads
//! come and go (and LRU maps may evict them), so this keeps the last value seen of each
//! and adds only the growth to the exported counters.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use crate::{
    amst::{
        receiver::{Receiver, ReceiverStats},
        stream::codec_tally::TallySnapshot,
    },
    metrics::{
        AgentMetrics, DirectionLabels, FlowLabels, OutcomeLabels, ProgramLabels, ThreadLabels,
        codec::Direction,
    },
    probe::{ProbeError, Probes},
};

/// Cumulative kernel-measured figures since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelTotals {
    /// Bytes sent on the agent's TCP sockets.
    pub tx_bytes: u64,
    /// Bytes received on the agent's TCP sockets.
    pub rx_bytes: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// On-CPU time of all the agent's threads.
    pub cpu: Duration,
}

#[derive(Clone, Copy, Default)]
struct FlowSeen {
    tx: u64,
    rx: u64,
    retransmits: u64,
}

/// Probe state plus what is needed to export it as metrics.
pub struct Telemetry {
    probes: Option<Probes>,
    metrics: Arc<AgentMetrics>,
    flows: HashMap<u64, FlowSeen>,
    flow_series: HashSet<FlowLabels>,
    threads: HashMap<u32, Duration>,
    programs: HashMap<String, (Duration, u64)>,
    totals: KernelTotals,
    receiver: Option<(Arc<Receiver>, [u64; 3], Duration)>,
    /// The codec tallies as last exported: the receiver's, the agent's senders'.
    codec_seen: [TallySnapshot; 2],
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("probes", &self.probes.is_some())
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Wraps `probes` (or their absence) and sets `dwcp_probe_up` accordingly.
    pub fn new(probes: Option<Probes>, metrics: Arc<AgentMetrics>) -> Self {
        metrics.probe_up.set(i64::from(probes.is_some()));
        Self {
            probes,
            metrics,
            flows: HashMap::new(),
            flow_series: HashSet::new(),
            threads: HashMap::new(),
            programs: HashMap::new(),
            totals: KernelTotals::default(),
            receiver: None,
            codec_seen: [TallySnapshot::default(); 2],
        }
    }

    /// Exports the counters and block pools of a running DWCP receiver from now on.
    pub fn attach_receiver(&mut self, receiver: Arc<Receiver>) {
        self.receiver = Some((receiver, [0; 3], Duration::ZERO));
    }

    /// Exports the growth of the codec tallies (receiver: rx; the agent's senders: tx).
    fn account_codecs(&mut self) {
        if let Some((receiver, ..)) = &self.receiver {
            let now = receiver.stats().codec.snapshot();
            self.metrics
                .codec
                .export(Direction::Rx, &now, &self.codec_seen[0]);
            self.codec_seen[0] = now;
        }
        let now = self.metrics.codec.sender.snapshot();
        self.metrics
            .codec
            .export(Direction::Tx, &now, &self.codec_seen[1]);
        self.codec_seen[1] = now;
    }

    fn account_receiver(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some((receiver, seen, waited)) = &mut self.receiver else {
            return;
        };
        let pools = receiver.pool_totals();
        let m = &self.metrics;
        m.pba_blocks
            .set(i64::try_from(pools.blocks).unwrap_or(i64::MAX));
        m.pba_blocks_in_use
            .set(i64::try_from(pools.in_use).unwrap_or(i64::MAX));
        m.pba_overhead.set(pools.overhead_ratio);
        m.pba_acquire_wait
            .inc_by(pools.acquire_wait.saturating_sub(*waited).as_secs_f64());
        *waited = pools.acquire_wait;
        let stats: Arc<ReceiverStats> = receiver.stats();
        let now = [
            stats.payload_bytes.load(Relaxed),
            stats.completed.load(Relaxed),
            stats.failed.load(Relaxed),
        ];
        let m = &self.metrics;
        m.amst_streams
            .set(i64::try_from(stats.streams.load(Relaxed)).unwrap_or(i64::MAX));
        m.amst_payload_bytes
            .get_or_create(&DirectionLabels {
                direction: "rx".into(),
            })
            .inc_by(growth(seen[0], now[0]));
        m.amst_transfers
            .get_or_create(&OutcomeLabels {
                outcome: "completed".into(),
            })
            .inc_by(growth(seen[1], now[1]));
        m.amst_transfers
            .get_or_create(&OutcomeLabels {
                outcome: "failed".into(),
            })
            .inc_by(growth(seen[2], now[2]));
        *seen = now;
    }

    /// The loaded probes, if any.
    pub fn probes(&self) -> Option<&Probes> {
        self.probes.as_ref()
    }

    /// Totals accumulated by [`Self::refresh`] so far.
    pub fn totals(&self) -> KernelTotals {
        self.totals
    }

    /// Reads the maps and updates the metrics. Does nothing without probes.
    pub fn refresh(&mut self) -> Result<(), ProbeError> {
        self.account_receiver();
        self.account_codecs();
        let Some(probes) = &self.probes else {
            return Ok(());
        };
        let flows = probes.flows()?;
        let threads = probes.threads()?;
        let programs = probes.programs();
        self.account_flows(&flows);
        self.account_threads(&threads);
        self.account_programs(&programs);
        Ok(())
    }

    fn account_flows(&mut self, flows: &[crate::probe::Flow]) {
        let m = &self.metrics;
        let mut live_ids = HashSet::new();
        let mut live_series = HashSet::new();
        for flow in flows {
            live_ids.insert(flow.id);
            let seen = self.flows.entry(flow.id).or_default();
            let tx = growth(seen.tx, flow.tx_bytes);
            let rx = growth(seen.rx, flow.rx_bytes);
            let retx = growth(seen.retransmits, flow.retransmits);
            *seen = FlowSeen {
                tx: flow.tx_bytes,
                rx: flow.rx_bytes,
                retransmits: flow.retransmits,
            };
            m.kernel_tx_bytes.inc_by(tx);
            m.kernel_rx_bytes.inc_by(rx);
            m.kernel_retransmits.inc_by(retx);
            self.totals.tx_bytes += tx;
            self.totals.rx_bytes += rx;
            self.totals.retransmits += retx;
            if flow.closed {
                continue;
            }
            let labels = FlowLabels {
                local: flow.local.to_string(),
                remote: flow.remote.to_string(),
            };
            if let (Some(srtt), Some(cwnd)) = (flow.srtt, flow.cwnd) {
                m.tcp_srtt.get_or_create(&labels).set(srtt.as_secs_f64());
                m.tcp_cwnd.get_or_create(&labels).set(i64::from(cwnd));
            }
            live_series.insert(labels);
        }
        self.flows.retain(|id, _| live_ids.contains(id));
        for gone in self.flow_series.difference(&live_series) {
            m.tcp_srtt.remove(gone);
            m.tcp_cwnd.remove(gone);
        }
        m.kernel_flows
            .set(i64::try_from(live_series.len()).unwrap_or(i64::MAX));
        self.flow_series = live_series;
    }

    fn account_threads(&mut self, threads: &[crate::probe::ThreadSample]) {
        let mut live = HashSet::new();
        for thread in threads {
            live.insert(thread.tid);
            let seen = self.threads.entry(thread.tid).or_default();
            let ran = if thread.on_cpu >= *seen {
                thread.on_cpu - *seen
            } else {
                thread.on_cpu
            };
            *seen = thread.on_cpu;
            self.totals.cpu += ran;
            self.metrics
                .agent_cpu
                .get_or_create(&ThreadLabels {
                    thread: thread.name.clone(),
                })
                .inc_by(ran.as_secs_f64());
        }
        self.threads.retain(|tid, _| live.contains(tid));
    }

    fn account_programs(&mut self, programs: &[crate::probe::ProgramRunStats]) {
        for prog in programs {
            let seen = self.programs.entry(prog.name.clone()).or_default();
            let time = prog.run_time.saturating_sub(seen.0);
            let runs = growth(seen.1, prog.run_count);
            *seen = (prog.run_time, prog.run_count);
            let labels = ProgramLabels {
                program: prog.name.clone(),
            };
            self.metrics
                .probe_run_seconds
                .get_or_create(&labels)
                .inc_by(time.as_secs_f64());
            self.metrics.probe_runs.get_or_create(&labels).inc_by(runs);
        }
    }

    /// Detaches and unloads the probes; `dwcp_probe_up` drops to 0.
    pub fn unload(&mut self) {
        if self.probes.take().is_some() {
            tracing::info!("eBPF probes detached and unloaded");
        }
        self.metrics.probe_up.set(0);
    }
}

/// Growth of a cumulative kernel counter; a smaller value means the entry was recreated
/// (socket or thread id reused after eviction), so all of it is new.
fn growth(previous: u64, current: u64) -> u64 {
    current.checked_sub(previous).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_handles_reset() {
        assert_eq!(growth(10, 15), 5);
        assert_eq!(growth(10, 10), 0);
        assert_eq!(growth(10, 3), 3);
    }

    #[test]
    fn without_probes_refresh_is_a_no_op_and_probe_up_is_zero() {
        let metrics = Arc::new(AgentMetrics::new());
        let mut telemetry = Telemetry::new(None, Arc::clone(&metrics));
        telemetry.refresh().unwrap();
        assert!(metrics.encode().contains("dwcp_probe_up 0"));
        assert_eq!(telemetry.totals(), KernelTotals::default());
    }
}
