//! CPU time the hypervisor took from this machine while something ran (`steal` in
//! `/proc/stat`). The emulator's delays and rates are only as exact as the CPU time its
//! threads get: on a shared virtual machine a measurement that lost much of it measured
//! the host's contention as much as the link (the benchmark report and the fidelity tests
//! say so).

/// Steal at or above this share of the machine's CPU time during a measurement makes its
/// timing incomparable with quiet ones.
pub const CONTENDED_PERCENT: f64 = 5.0;

/// The all-CPU counters of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is
    /// already inside user and nice).
    total: u64,
    /// Time the hypervisor ran something else while this machine wanted to run.
    steal: u64,
}

impl CpuTimes {
    /// Reads the counters now (`None` where `/proc/stat` is missing or unreadable).
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Reads the `cpu ` line of a `/proc/stat` text.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // Kernels before 2.6.11 have no steal column: nothing to report then.
        let steal = *fields.get(7)?;
        Some(Self {
            total: fields.iter().sum(),
            steal,
        })
    }

    /// Percent of the CPU time from `earlier` to `self` that was stolen (`None` when no
    /// time passed).
    pub fn steal_percent_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 / total as f64 * 100.0)
    }
}

/// Runs `work` and returns what it returned with the percent of CPU time stolen meanwhile
/// (`None` where the kernel does not count steal).
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = CpuTimes::now();
    let out = work();
    let stolen = before.and_then(|b| CpuTimes::now()?.steal_percent_since(&b));
    (out, stolen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 10 50 800 20 0 10 10 5 0\ncpu0 1 2 3 4 5 6 7 8 9 0\nintr 1 2\n";

    #[test]
    fn reads_the_all_cpu_line() {
        let t = CpuTimes::parse(STAT).unwrap();
        assert_eq!((t.total, t.steal), (1000, 10));
    }

    #[test]
    fn steal_is_a_share_of_the_time_that_passed() {
        let before = CpuTimes::parse(STAT).unwrap();
        let after = CpuTimes::parse("cpu  150 10 50 830 20 0 10 30 0 0\n").unwrap();
        assert_eq!(after.steal_percent_since(&before), Some(20.0));
        assert_eq!(before.steal_percent_since(&before), None);
        assert_eq!(before.steal_percent_since(&after), None);
    }

    #[test]
    fn short_or_garbled_lines_are_not_read() {
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse("intr 1 2\n"), None);
    }

    #[test]
    fn this_machine_has_the_counters() {
        let (value, stolen) = measure(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            3
        });
        assert_eq!(value, 3);
        assert!(
            stolen.is_some_and(|s| (0.0..=100.0).contains(&s)),
            "{stolen:?}"
        );
    }
}
