//! The emulator's clock: `CLOCK_MONOTONIC` in nanoseconds, and sleeping until an absolute
//! time on it with the smallest timer slack the kernel allows.

/// Nanoseconds on `CLOCK_MONOTONIC` (the clock `std::time::Instant` uses on Linux).
pub fn now_ns() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    (time.tv_sec as u64) * 1_000_000_000 + time.tv_nsec as u64
}

/// Sleeps until `deadline_ns` on `CLOCK_MONOTONIC` (returns at once if it has passed).
pub fn sleep_until(deadline_ns: u64) {
    let deadline = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `deadline` is a valid timespec; with TIMER_ABSTIME the remainder pointer
        // is not used and may be null.
        let result = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &deadline,
                std::ptr::null_mut(),
            )
        };
        if result != libc::EINTR {
            return;
        }
    }
}

/// Makes this thread's timed sleeps wake as close to their deadline as the kernel can
/// (the default slack is 50 µs, a quarter of a LAN's round trip).
pub fn minimise_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// The real-time priority of the data-path threads (low among real-time priorities, so
/// kernel threads that use higher ones still preempt them).
const DATA_PATH_PRIORITY: libc::c_int = 10;

/// Puts this thread in the `SCHED_FIFO` class so that packets are read and delivered on
/// time even when the machine's cores are busy with other work (the data path only ever
/// blocks or sleeps, never spins, and the kernel's real-time throttling still applies).
/// Returns whether the kernel allowed it.
pub fn raise_to_realtime() -> bool {
    let param = libc::sched_param {
        sched_priority: DATA_PATH_PRIORITY,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 means the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_until_a_deadline_does_not_return_early() {
        minimise_timer_slack();
        let deadline = now_ns() + 2_000_000;
        sleep_until(deadline);
        assert!(now_ns() >= deadline);
        let before = now_ns();
        sleep_until(before - 1);
        assert!(now_ns() >= before);
    }
}
