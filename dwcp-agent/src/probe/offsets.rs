//! Builds [`TracepointOffsets`] from the running kernel's tracepoint formats.

use std::path::Path;

use dwcp_common::TracepointOffsets;

use super::{
    ProbeError,
    tracefs::{self, Field},
};

/// Reads every tracepoint format the programs depend on and checks field sizes.
pub fn discover(root: &Path) -> Result<TracepointOffsets, ProbeError> {
    let send = tracefs::format(root, "sock", "sock_send_length")?;
    let recv = tracefs::format(root, "sock", "sock_recv_length")?;
    let probe = tracefs::format(root, "tcp", "tcp_probe")?;
    let retx = tracefs::format(root, "tcp", "tcp_retransmit_skb")?;
    let state = tracefs::format(root, "sock", "inet_sock_set_state")?;
    let switch = tracefs::format(root, "sched", "sched_switch")?;
    let runtime = tracefs::format(root, "sched", "sched_stat_runtime")?;

    let len = |name, size| field(&send, "sock:sock_send_length", name, size);
    let offsets = TracepointOffsets {
        len_sk: len("sk", 8)?,
        len_family: len("family", 2)?,
        len_protocol: len("protocol", 2)?,
        len_ret: len("ret", 4)?,
        probe_saddr: field(&probe, "tcp:tcp_probe", "saddr", 28)?,
        probe_daddr: field(&probe, "tcp:tcp_probe", "daddr", 28)?,
        probe_family: field(&probe, "tcp:tcp_probe", "family", 2)?,
        probe_cwnd: field(&probe, "tcp:tcp_probe", "snd_cwnd", 4)?,
        probe_srtt: field(&probe, "tcp:tcp_probe", "srtt", 4)?,
        probe_skaddr: field(&probe, "tcp:tcp_probe", "skaddr", 8)?,
        retx_skaddr: field(&retx, "tcp:tcp_retransmit_skb", "skaddr", 8)?,
        state_skaddr: field(&state, "sock:inet_sock_set_state", "skaddr", 8)?,
        state_newstate: field(&state, "sock:inet_sock_set_state", "newstate", 4)?,
        switch_prev_pid: field(&switch, "sched:sched_switch", "prev_pid", 4)?,
        runtime_pid: field(&runtime, "sched:sched_stat_runtime", "pid", 4)?,
        runtime_ns: field(&runtime, "sched:sched_stat_runtime", "runtime", 8)?,
        ready: 1,
    };
    // The send and receive programs share offsets: the two records must agree.
    for name in ["sk", "family", "protocol", "ret"] {
        let a = field(&send, "sock:sock_send_length", name, 0)?;
        let b = field(&recv, "sock:sock_recv_length", name, 0)?;
        if a != b {
            return Err(ProbeError::Format {
                tracepoint: "sock:sock_recv_length".into(),
                reason: format!("field {name} at offset {b}, sock_send_length has it at {a}"),
            });
        }
    }
    Ok(offsets)
}

/// Offset of `name`, checking its size unless `size` is 0.
fn field(fields: &[Field], tracepoint: &str, name: &str, size: u32) -> Result<u32, ProbeError> {
    let found = fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ProbeError::Format {
            tracepoint: tracepoint.into(),
            reason: format!("no field {name}"),
        })?;
    if size != 0 && found.size != size {
        return Err(ProbeError::Format {
            tracepoint: tracepoint.into(),
            reason: format!("field {name} has size {}, expected {size}", found.size),
        });
    }
    Ok(found.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mismatch_is_refused() {
        let fields = vec![Field {
            name: "ret".into(),
            offset: 20,
            size: 8,
        }];
        let err = field(&fields, "sock:x", "ret", 4).unwrap_err();
        assert!(err.to_string().contains("size 8, expected 4"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let err = field(&[], "tcp:tcp_probe", "srtt", 4).unwrap_err();
        assert!(err.to_string().contains("no field srtt"), "{err}");
    }
}
