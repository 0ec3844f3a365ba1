//! Names of the eBPF programs and maps, as compiled into the object and looked up by the agent.

/// Hash map `u32 tgid -> u8`: processes whose sockets and threads are measured.
pub const MAP_TRACKED: &str = "TRACKED_TGIDS";
/// LRU map `u64 socket address -> FlowStats`.
pub const MAP_FLOWS: &str = "FLOWS";
/// LRU map `u32 tid -> ThreadCpu`.
pub const MAP_THREADS: &str = "THREADS";

/// Program on `sock:sock_send_length`.
pub const PROG_SEND: &str = "sock_send_length";
/// Program on `sock:sock_recv_length`.
pub const PROG_RECV: &str = "sock_recv_length";
/// Program on `tcp:tcp_retransmit_skb`.
pub const PROG_RETRANSMIT: &str = "tcp_retransmit_skb";
/// Program on `tcp:tcp_probe`.
pub const PROG_TCP_PROBE: &str = "tcp_probe";
/// Program on `sock:inet_sock_set_state`.
pub const PROG_SET_STATE: &str = "inet_sock_set_state";
/// Program on `sched:sched_switch`.
pub const PROG_SCHED_SWITCH: &str = "sched_switch";
/// Program on `sched:sched_stat_runtime`.
pub const PROG_SCHED_RUNTIME: &str = "sched_stat_runtime";

/// Every program with its tracepoint category and name, in attach order.
pub const TRACEPOINTS: [(&str, &str, &str); 7] = [
    (PROG_SEND, "sock", "sock_send_length"),
    (PROG_RECV, "sock", "sock_recv_length"),
    (PROG_RETRANSMIT, "tcp", "tcp_retransmit_skb"),
    (PROG_TCP_PROBE, "tcp", "tcp_probe"),
    (PROG_SET_STATE, "sock", "inet_sock_set_state"),
    (PROG_SCHED_SWITCH, "sched", "sched_switch"),
    (PROG_SCHED_RUNTIME, "sched", "sched_stat_runtime"),
];

/// Global (`.rodata`) holding the [`crate::TracepointOffsets`].
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
