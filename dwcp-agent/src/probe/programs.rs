//! The probes' own cost, from the kernel's BPF run-time statistics.

use std::time::Duration;

use aya::Ebpf;

/// Cumulative cost of one program since it was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRunStats {
    /// Program name.
    pub name: String,
    /// Kernel id of the program.
    pub id: u32,
    /// Total time the kernel spent running it (0 while statistics are disabled).
    pub run_time: Duration,
    /// Number of runs counted while statistics were enabled.
    pub run_count: u64,
}

impl ProgramRunStats {
    /// Mean run time per event, `None` before the first counted run.
    pub fn per_run(&self) -> Option<Duration> {
        let per_run = self
            .run_time
            .as_nanos()
            .checked_div(u128::from(self.run_count))?;
        Some(Duration::from_nanos(
            u64::try_from(per_run).unwrap_or(u64::MAX),
        ))
    }
}

pub(super) fn read(ebpf: &Ebpf) -> Vec<ProgramRunStats> {
    ebpf.programs()
        .filter_map(|(name, prog)| {
            let info = prog.info().ok()?;
            Some(ProgramRunStats {
                name: name.to_owned(),
                id: info.id(),
                run_time: info.run_time(),
                run_count: info.run_count(),
            })
        })
        .collect()
}
