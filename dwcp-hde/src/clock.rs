//! CPU time of the calling thread: what the per-level timings and the "MB/s per core"
//! figures are measured in, so they stay meaningful on a machine shared with other work
//! (wall time would count the time the thread waited for a core).

/// A point in the calling thread's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuInstant(u64);

/// The calling thread's CPU time now.
#[must_use]
pub fn now() -> CpuInstant {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported by
    // every Linux kernel this runs on. On failure `ts` stays zero (timings read 0).
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    CpuInstant(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// CPU nanoseconds the calling thread used since `start` (taken on the same thread).
#[must_use]
pub fn elapsed(start: CpuInstant) -> u64 {
    now().0.saturating_sub(start.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work() {
        let start = now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(elapsed(start) > 0, "{x}");
    }
}
