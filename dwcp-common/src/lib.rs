//! Types and constants shared by the kernel-side programs (`dwcp-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF programs write these values into
//! maps and the agent reads the same bytes back. Field order and sizes are part of the
//! contract between the two sides, so change both together. The `user` feature adds
//! `aya::Pod` implementations for the user-space side.
#![no_std]

/// Map and program names, used by both sides so a rename cannot drift.
pub mod names;

/// Largest number of flows (sockets) tracked at once; older flows are evicted (LRU).
pub const MAX_FLOWS: u32 = 16_384;
/// Largest number of threads whose on-CPU time is tracked at once.
pub const MAX_THREADS: u32 = 4_096;
/// Largest number of processes whose sockets and threads are tracked.
pub const MAX_TRACKED_PROCESSES: u32 = 64;
/// Length of a kernel task name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// `AF_INET`, as written in [`FlowStats::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as written in [`FlowStats::family`].
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// Kernel TCP state `TCP_CLOSE`.
pub const TCP_CLOSE: u32 = 7;

/// Per-flow counters, keyed in the kernel by the socket's address (`struct sock *`).
///
/// Counters only grow while the socket lives; user space computes deltas.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Bytes the tracked process handed to `sendmsg` successfully.
    pub tx_bytes: u64,
    /// Bytes the tracked process got back from `recvmsg`.
    pub rx_bytes: u64,
    /// Segments the kernel retransmitted on this socket.
    pub retransmits: u64,
    /// Kernel time (`bpf_ktime_get_ns`) of the last update.
    pub updated_ns: u64,
    /// Smoothed RTT in microseconds from the last `tcp_probe` event, 0 when unknown.
    pub srtt_us: u32,
    /// Congestion window in segments from the last `tcp_probe` event, 0 when unknown.
    pub cwnd: u32,
    /// Process (tgid) that owns the socket.
    pub tgid: u32,
    /// Last TCP state seen (`inet_sock_set_state`), 0 when none was seen.
    pub state: u32,
    /// Address family ([`AF_INET`] or [`AF_INET6`]).
    pub family: u16,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// Explicit padding, always zero.
    pub pad: u16,
    /// Local address: IPv4 in the first four bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Remote address: IPv4 in the first four bytes, or IPv6.
    pub daddr: [u8; 16],
}

/// On-CPU time of one thread, keyed in the kernel by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Nanoseconds of CPU time, summed from the scheduler's own runtime deltas
    /// (`sched_stat_runtime`): the task clock getrusage reports, without steal time.
    pub on_cpu_ns: u64,
    /// Times the thread left a CPU (`sched_switch`).
    pub switches: u64,
    /// Process the thread belongs to.
    pub tgid: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
    /// Thread name at the last switch-out.
    pub comm: [u8; COMM_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `FlowStats` is `repr(C)`, `Copy`, has explicit padding and every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::FlowStats {}
    // SAFETY: as above for `ThreadCpu`.
    unsafe impl aya::Pod for super::ThreadCpu {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowStats>(), 8 * 4 + 4 * 4 + 2 * 4 + 32);
        assert_eq!(size_of::<ThreadCpu>(), 8 * 2 + 4 * 2 + COMM_LEN);
    }
}

/// Byte offsets of the tracepoint fields the programs read.
///
/// The agent fills this from the tracepoints' `format` files in tracefs before loading,
/// so the programs do not depend on one kernel's record layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `sock:sock_send_length` / `sock_recv_length`: `sk`.
    pub len_sk: u32,
    /// `sock:sock_send_length` / `sock_recv_length`: `family`.
    pub len_family: u32,
    /// `sock:sock_send_length` / `sock_recv_length`: `protocol`.
    pub len_protocol: u32,
    /// `sock:sock_send_length` / `sock_recv_length`: `ret`.
    pub len_ret: u32,
    /// `tcp:tcp_probe`: `saddr` (a `sockaddr_in` or `sockaddr_in6`).
    pub probe_saddr: u32,
    /// `tcp:tcp_probe`: `daddr`.
    pub probe_daddr: u32,
    /// `tcp:tcp_probe`: `family`.
    pub probe_family: u32,
    /// `tcp:tcp_probe`: `snd_cwnd`.
    pub probe_cwnd: u32,
    /// `tcp:tcp_probe`: `srtt` (microseconds).
    pub probe_srtt: u32,
    /// `tcp:tcp_probe`: `skaddr`.
    pub probe_skaddr: u32,
    /// `tcp:tcp_retransmit_skb`: `skaddr`.
    pub retx_skaddr: u32,
    /// `sock:inet_sock_set_state`: `skaddr`.
    pub state_skaddr: u32,
    /// `sock:inet_sock_set_state`: `newstate`.
    pub state_newstate: u32,
    /// `sched:sched_switch`: `prev_pid`.
    pub switch_prev_pid: u32,
    /// `sched:sched_stat_runtime`: `pid`.
    pub runtime_pid: u32,
    /// `sched:sched_stat_runtime`: `runtime` (nanoseconds).
    pub runtime_ns: u32,
    /// Set to 1 by the agent once the offsets are filled; programs do nothing while 0.
    pub ready: u32,
}

#[cfg(feature = "user")]
// SAFETY: `TracepointOffsets` is `repr(C)`, `Copy`, all `u32` fields, no padding.
unsafe impl aya::Pod for TracepointOffsets {}
