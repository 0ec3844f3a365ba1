//! Per-socket byte, retransmission, cwnd and RTT accounting.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap},
    programs::TracePointContext,
};
use dwcp_common::{AF_INET, AF_INET6, FlowStats, IPPROTO_TCP, MAX_FLOWS, MAX_TRACKED_PROCESSES};

use crate::{current_tgid_if_tracked, offsets};

/// Processes whose traffic is measured (filled by the agent).
#[map]
pub static TRACKED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACKED_PROCESSES, 0);

/// Per-socket counters, keyed by the kernel address of the socket.
///
/// Per-CPU values: classic tracepoint programs run with preemption disabled and never
/// nest on one CPU, so each CPU's slot has a single writer at a time and plain
/// read-modify-write is exact. User space sums the slots.
#[map]
static FLOWS: LruPerCpuHashMap<u64, FlowStats> = LruPerCpuHashMap::with_max_entries(MAX_FLOWS, 0);

/// Number of rate-limit slots for `tcp_probe` (a power of two).
const PROBE_GATE_SLOTS: u32 = 1024;

/// Jiffy of the last `tcp_probe` processed per socket-address slot. `tcp_probe` fires on
/// every incoming segment of every TCP socket on the host; this array (whose lookups the
/// verifier inlines) lets at most one event per socket slot and jiffy reach the costlier
/// hash lookup. Races between CPUs only let an extra event through.
#[map]
static PROBE_GATE: Array<u64> = Array::with_max_entries(PROBE_GATE_SLOTS, 0);

/// Which counter a length event adds to.
#[derive(Clone, Copy)]
pub enum Direction {
    /// `sock_send_length`.
    Tx,
    /// `sock_recv_length`.
    Rx,
}

/// The first fields of the kernel's `struct sock_common`, stable since Linux 2.6.
#[repr(C)]
struct SockCommonHead {
    daddr: [u8; 4],
    rcv_saddr: [u8; 4],
    hash: u32,
    dport_be: u16,
    num: u16,
}

/// Counts a successful send or receive of a tracked process on a TCP socket.
#[inline(always)]
pub fn try_sock_length(ctx: &TracePointContext, dir: Direction) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    let Some(tgid) = current_tgid_if_tracked() else {
        return Ok(());
    };
    // SAFETY: offsets come from the tracepoint's format file; reads go through
    // bpf_probe_read_kernel, which fails cleanly on a bad address.
    let ret: i32 = unsafe { ctx.read_at(off.len_ret as usize) }.map_err(i64::from)?;
    if ret <= 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let protocol: u16 = unsafe { ctx.read_at(off.len_protocol as usize) }.map_err(i64::from)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(off.len_sk as usize) }.map_err(i64::from)?;
    // SAFETY: as above.
    let family: u16 = unsafe { ctx.read_at(off.len_family as usize) }.map_err(i64::from)?;
    let stats = flow_entry(sk, tgid, family)?;
    // SAFETY: `stats` points at this CPU's slot of a map value, valid during this
    // program and written by no one else meanwhile (see `FLOWS`).
    unsafe {
        match dir {
            Direction::Tx => (*stats).tx_bytes += ret as u64,
            Direction::Rx => (*stats).rx_bytes += ret as u64,
        }
    }
    Ok(())
}

/// Returns this CPU's slot of the flow entry of `sk`, creating the entry on first sight
/// and filling the slot's identity (owner, family, addresses) when it is still empty.
#[inline(always)]
fn flow_entry(sk: u64, tgid: u32, family: u16) -> Result<*mut FlowStats, i64> {
    if FLOWS.get_ptr_mut(&sk).is_none() {
        // A concurrent insert on another CPU wins; ours then fails with EEXIST, fine.
        let _ = FLOWS.insert(&sk, &FlowStats::default(), u64::from(BPF_NOEXIST));
    }
    let stats = FLOWS.get_ptr_mut(&sk).ok_or(-1_i64)?;
    // SAFETY: this CPU's slot, valid during the program, single writer (see `FLOWS`).
    let empty = unsafe { (*stats).tgid == 0 };
    if empty {
        let mut ident = FlowStats {
            tgid,
            family,
            ..FlowStats::default()
        };
        if family == AF_INET {
            // SAFETY: `sk` is the `struct sock *` the tracepoint reported; this is a
            // checked kernel read of its first bytes (`struct sock_common`).
            let head: SockCommonHead =
                unsafe { bpf_probe_read_kernel(sk as *const SockCommonHead) }.map_err(i64::from)?;
            ident.daddr[..4].copy_from_slice(&head.daddr);
            ident.saddr[..4].copy_from_slice(&head.rcv_saddr);
            ident.dport = u16::from_be(head.dport_be);
            ident.sport = head.num;
        }
        // SAFETY: as above.
        unsafe {
            (*stats).tgid = ident.tgid;
            (*stats).family = ident.family;
            (*stats).saddr = ident.saddr;
            (*stats).daddr = ident.daddr;
            (*stats).sport = ident.sport;
            (*stats).dport = ident.dport;
        }
    }
    Ok(stats)
}

/// Counts a retransmitted segment of a tracked socket.
#[inline(always)]
pub fn try_retransmit(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    // SAFETY: offset from the format file, checked kernel read.
    let sk: u64 = unsafe { ctx.read_at(off.retx_skaddr as usize) }.map_err(i64::from)?;
    let Some(stats) = FLOWS.get_ptr_mut(&sk) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot, valid during the program, single writer (see `FLOWS`).
    unsafe {
        (*stats).retransmits += 1;
        (*stats).updated_ns = bpf_ktime_get_ns();
    }
    Ok(())
}

/// `sockaddr_in` / `sockaddr_in6` as `tcp_probe` records them.
#[repr(C)]
struct SockAddr {
    family: u16,
    port_be: u16,
    /// IPv4 address, or IPv6 flow info.
    v4_or_flowinfo: [u8; 4],
    v6: [u8; 16],
}

/// Records cwnd, smoothed RTT and (for IPv6) the addresses of a tracked socket.
#[inline(always)]
pub fn try_tcp_probe(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    // SAFETY: offset from the format file, checked kernel read.
    let sk: u64 = unsafe { ctx.read_at(off.probe_skaddr as usize) }.map_err(i64::from)?;
    if !pass_gate(sk) {
        return Ok(());
    }
    let Some(stats) = FLOWS.get_ptr_mut(&sk) else {
        return Ok(());
    };
    // SAFETY: as above.
    let cwnd: u32 = unsafe { ctx.read_at(off.probe_cwnd as usize) }.map_err(i64::from)?;
    // SAFETY: as above.
    let srtt: u32 = unsafe { ctx.read_at(off.probe_srtt as usize) }.map_err(i64::from)?;
    // SAFETY: as above.
    let family: u16 = unsafe { ctx.read_at(off.probe_family as usize) }.map_err(i64::from)?;
    // SAFETY: this CPU's slot, valid during the program, single writer (see `FLOWS`).
    unsafe {
        (*stats).cwnd = cwnd;
        (*stats).srtt_us = srtt;
        (*stats).updated_ns = bpf_ktime_get_ns();
    }
    if family == AF_INET6 {
        // SAFETY: offsets from the format file, checked kernel reads.
        let local: SockAddr =
            unsafe { ctx.read_at(off.probe_saddr as usize) }.map_err(i64::from)?;
        // SAFETY: as above.
        let remote: SockAddr =
            unsafe { ctx.read_at(off.probe_daddr as usize) }.map_err(i64::from)?;
        // SAFETY: this CPU's slot, valid during the program, single writer.
        unsafe {
            (*stats).family = AF_INET6;
            (*stats).saddr = local.v6;
            (*stats).daddr = remote.v6;
            (*stats).sport = u16::from_be(local.port_be);
            (*stats).dport = u16::from_be(remote.port_be);
        }
        let _ = (local.family, remote.v4_or_flowinfo);
    }
    Ok(())
}

/// True for the first `tcp_probe` event of the socket's slot in the current jiffy.
#[inline(always)]
fn pass_gate(sk: u64) -> bool {
    // Socket structures are cache-line aligned; skip the always-equal low bits.
    let slot = ((sk >> 6) as u32) & (PROBE_GATE_SLOTS - 1);
    let Some(last) = PROBE_GATE.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: a helper without arguments or preconditions.
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: `last` points into an array map element, valid during the program; a racy
    // update from another CPU only lets one more event through.
    unsafe {
        if *last == now {
            return false;
        }
        *last = now;
    }
    true
}

/// Records the TCP state of a tracked socket (user space hides closed flows).
#[inline(always)]
pub fn try_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets::get();
    if off.ready == 0 {
        return Ok(());
    }
    // SAFETY: offset from the format file, checked kernel read.
    let sk: u64 = unsafe { ctx.read_at(off.state_skaddr as usize) }.map_err(i64::from)?;
    let Some(stats) = FLOWS.get_ptr_mut(&sk) else {
        return Ok(());
    };
    // SAFETY: as above.
    let state: i32 = unsafe { ctx.read_at(off.state_newstate as usize) }.map_err(i64::from)?;
    // SAFETY: this CPU's slot, valid during the program, single writer.
    unsafe {
        (*stats).state = state as u32;
        (*stats).updated_ns = bpf_ktime_get_ns();
    }
    Ok(())
}
