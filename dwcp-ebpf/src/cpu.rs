//! CPU time and context switches of the tracked processes' threads.
//!
//! CPU time comes from `sched:sched_stat_runtime`, which reports each runtime delta the
//! scheduler charges to a task (on every tick and switch): the task clock that getrusage
//! and /proc report, without hypervisor steal time. Timing switch-in to switch-out at
//! `sched_switch` with `bpf_ktime_get_ns` would include steal time, which on a busy VM
//! overstates CPU use by 10% or more. `sched_switch` still counts context switches.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::map,
    maps::LruPerCpuHashMap,
    programs::TracePointContext,
};
use dwcp_common::{MAX_THREADS, ThreadCpu};

use crate::{current_tgid_if_tracked, offsets};

/// Per-thread totals. Per-CPU slots: tracepoint programs do not nest on a CPU, so each
/// slot has one writer at a time. User space sums them.
#[map]
static THREADS: LruPerCpuHashMap<u32, ThreadCpu> =
    LruPerCpuHashMap::with_max_entries(MAX_THREADS, 0);

/// This CPU's slot for the current thread `tid` of process `tgid`, created if needed.
/// The name is (re)written when the slot is new or `rename` is set, since reading it
/// costs more than the rest of the update.
#[inline(always)]
fn slot(tid: u32, tgid: u32, rename: bool) -> Option<*mut ThreadCpu> {
    if THREADS.get_ptr_mut(&tid).is_none() {
        let _ = THREADS.insert(&tid, &ThreadCpu::default(), u64::from(BPF_NOEXIST));
    }
    let entry = THREADS.get_ptr_mut(&tid)?;
    // SAFETY: this CPU's slot, valid during the program, single writer (see `THREADS`).
    unsafe {
        if rename || (*entry).tgid == 0 {
            (*entry).tgid = tgid;
            (*entry).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
    }
    Some(entry)
}

/// Adds a runtime delta to the thread it belongs to.
#[inline(always)]
pub fn try_sched_stat_runtime(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    // SAFETY: offsets from the format file, checked kernel reads.
    let pid: i32 = unsafe { ctx.read_at(off.runtime_pid as usize) }.map_err(i64::from)?;
    // SAFETY: as above.
    let runtime: u64 = unsafe { ctx.read_at(off.runtime_ns as usize) }.map_err(i64::from)?;
    let tid = pid as u32;
    let current = bpf_get_current_pid_tgid();
    let entry = if current as u32 == tid {
        // Charged to the running task (the common case): its process is known here.
        let Some(tgid) = current_tgid_if_tracked() else {
            return Ok(());
        };
        slot(tid, tgid, false)
    } else {
        // Charged from another task's context: only threads already known are counted.
        THREADS.get_ptr_mut(&tid)
    };
    if let Some(entry) = entry {
        // SAFETY: this CPU's slot, valid during the program, single writer.
        unsafe { (*entry).on_cpu_ns += runtime };
    }
    Ok(())
}

/// Counts a context switch of an outgoing tracked thread.
#[inline(always)]
pub fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    // The tracepoint runs in the context of the outgoing task.
    let Some(tgid) = current_tgid_if_tracked() else {
        return Ok(());
    };
    // SAFETY: offset from the format file, checked kernel read.
    let prev_pid: i32 = unsafe { ctx.read_at(off.switch_prev_pid as usize) }.map_err(i64::from)?;
    if let Some(entry) = slot(prev_pid as u32, tgid, true) {
        // SAFETY: this CPU's slot, valid during the program, single writer.
        unsafe { (*entry).switches += 1 };
    }
    Ok(())
}
