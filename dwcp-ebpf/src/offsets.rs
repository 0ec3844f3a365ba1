//! Tracepoint field offsets, filled in by the agent before loading.

use dwcp_common::TracepointOffsets;

/// Written by the agent through `EbpfLoader::override_global`; all zero (not ready) in
/// the object file.
#[unsafe(no_mangle)]
static OFFSETS: TracepointOffsets = TracepointOffsets {
    len_sk: 0,
    len_family: 0,
    len_protocol: 0,
    len_ret: 0,
    probe_saddr: 0,
    probe_daddr: 0,
    probe_family: 0,
    probe_cwnd: 0,
    probe_srtt: 0,
    probe_skaddr: 0,
    retx_skaddr: 0,
    state_skaddr: 0,
    state_newstate: 0,
    switch_prev_pid: 0,
    runtime_pid: 0,
    runtime_ns: 0,
    ready: 0,
};

/// The offsets, read so that the compiler cannot fold the all-zero initial value.
#[inline(always)]
pub fn get() -> TracepointOffsets {
    // SAFETY: `OFFSETS` is a valid, aligned static; the volatile read only stops the
    // compiler from assuming its initial value (the loader rewrites it).
    unsafe { core::ptr::read_volatile(&raw const OFFSETS) }
}
