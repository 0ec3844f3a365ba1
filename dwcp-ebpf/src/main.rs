//! Kernel-side programs of the dwcp agent.
//!
//! All programs are classic tracepoints (this kernel family has no kprobes). Each one is a
//! thin wrapper around a `try_` function returning `Result`, so that the control flow the
//! verifier sees stays simple and errors (a failed read) end the program quietly.
//!
//! What is measured, and only for processes listed in `TRACKED_TGIDS`:
//! - bytes handed to / taken from the sockets (`sock_send_length`, `sock_recv_length`),
//!   per socket in `FLOWS`;
//! - retransmissions, cwnd and smoothed RTT of those sockets (`tcp_retransmit_skb`,
//!   `tcp_probe`), which fire in softirq context and so are matched by socket address;
//! - CPU time (`sched_stat_runtime`) and context switches (`sched_switch`) of every
//!   thread of those processes, in `THREADS`.
#![no_std]
#![no_main]
#![expect(
    missing_docs,
    reason = "the #[tracepoint] macro generates undocumented wrapper functions"
)]

mod cpu;
mod flows;
mod offsets;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

/// `sock:sock_send_length`: bytes sent by a tracked process.
#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    ignore(flows::try_sock_length(&ctx, flows::Direction::Tx))
}

/// `sock:sock_recv_length`: bytes received by a tracked process.
#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    ignore(flows::try_sock_length(&ctx, flows::Direction::Rx))
}

/// `tcp:tcp_retransmit_skb`: a segment of a tracked socket was retransmitted.
#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    ignore(flows::try_retransmit(&ctx))
}

/// `tcp:tcp_probe`: cwnd and smoothed RTT of a tracked socket.
#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    ignore(flows::try_tcp_probe(&ctx))
}

/// `sock:inet_sock_set_state`: TCP state changes of tracked sockets.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    ignore(flows::try_set_state(&ctx))
}

/// `sched:sched_switch`: context switches of the tracked processes' threads.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    ignore(cpu::try_sched_switch(&ctx))
}

/// `sched:sched_stat_runtime`: CPU time of the tracked processes' threads.
#[tracepoint]
pub fn sched_stat_runtime(ctx: TracePointContext) -> u32 {
    ignore(cpu::try_sched_stat_runtime(&ctx))
}

/// Tracepoint programs' return value is ignored by the kernel; errors only end the run.
#[inline(always)]
fn ignore(result: Result<(), i64>) -> u32 {
    match result {
        Ok(()) | Err(_) => 0,
    }
}

/// Whether the current task belongs to a tracked process.
#[inline(always)]
fn current_tgid_if_tracked() -> Option<u32> {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is a plain `u8` copied out immediately; map values of a
    // preallocated hash map stay valid for the duration of the program.
    unsafe { flows::TRACKED_TGIDS.get(&tgid) }.map(|_| tgid)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The tracepoints used need a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
