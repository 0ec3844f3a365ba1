//! Reading per-thread CPU time and context switches.

use std::time::Duration;

use aya::{Ebpf, maps::PerCpuHashMap};
use dwcp_common::{ThreadCpu, names};

use super::{ProbeError, map};

/// CPU use of one thread of a tracked process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSample {
    /// Thread id.
    pub tid: u32,
    /// Process the thread belongs to.
    pub tgid: u32,
    /// Thread name (`comm`).
    pub name: String,
    /// CPU time (task clock) since the probes were attached, up to the last scheduler
    /// tick or switch.
    pub on_cpu: Duration,
    /// Context switches away from the CPU.
    pub switches: u64,
}

pub(super) fn read(ebpf: &Ebpf) -> Result<Vec<ThreadSample>, ProbeError> {
    let threads: PerCpuHashMap<_, u32, ThreadCpu> =
        PerCpuHashMap::try_from(map(ebpf, names::MAP_THREADS)?).map_err(|source| {
            ProbeError::Map {
                map: names::MAP_THREADS,
                source,
            }
        })?;
    Ok(threads
        .iter()
        .filter_map(Result::ok)
        .filter_map(|(tid, slots)| merge(tid, &slots))
        .collect())
}

/// Sums the per-CPU slots; identity comes from any slot that has one.
pub(crate) fn merge(tid: u32, slots: &[ThreadCpu]) -> Option<ThreadSample> {
    let ident = slots.iter().find(|s| s.tgid != 0)?;
    let name_len = ident
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ident.comm.len());
    Some(ThreadSample {
        tid,
        tgid: ident.tgid,
        name: String::from_utf8_lossy(&ident.comm[..name_len]).into_owned(),
        on_cpu: Duration::from_nanos(slots.iter().map(|s| s.on_cpu_ns).sum()),
        switches: slots.iter().map(|s| s.switches).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(on_cpu_ns: u64, switches: u64) -> ThreadCpu {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"worker");
        ThreadCpu {
            on_cpu_ns,
            switches,
            tgid: 9,
            pad: 0,
            comm,
        }
    }

    #[test]
    fn sums_slots_and_names_thread() {
        let s = merge(5, &[slot(100, 1), ThreadCpu::default(), slot(50, 2)]).unwrap();
        assert_eq!(s.on_cpu, Duration::from_nanos(150));
        assert_eq!(s.switches, 3);
        assert_eq!(s.name, "worker");
        assert_eq!(s.tgid, 9);
    }

    #[test]
    fn no_tracked_slot_gives_nothing() {
        assert_eq!(merge(5, &[ThreadCpu::default()]), None);
    }
}
