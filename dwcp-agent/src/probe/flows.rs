//! Reading the per-socket map and merging its per-CPU slots.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use aya::{Ebpf, maps::PerCpuHashMap};
use dwcp_common::{AF_INET6, FlowStats, TCP_CLOSE, names};

use super::{ProbeError, map};

/// One socket of a tracked process, as the kernel measured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Kernel address of the socket: stable while it lives, reused after it closes.
    pub id: u64,
    /// Process that owns the socket.
    pub tgid: u32,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Bytes the process sent on the socket.
    pub tx_bytes: u64,
    /// Bytes the process received from the socket.
    pub rx_bytes: u64,
    /// Segments retransmitted (one per retransmitted packet, GSO packets count once).
    pub retransmits: u64,
    /// Smoothed RTT from the last `tcp_probe`, `None` before the first.
    pub srtt: Option<Duration>,
    /// Congestion window (segments) from the last `tcp_probe`, `None` before the first.
    pub cwnd: Option<u32>,
    /// Whether the kernel reported the socket closed.
    pub closed: bool,
}

pub(super) fn read(ebpf: &Ebpf) -> Result<Vec<Flow>, ProbeError> {
    let map_err = |source| ProbeError::Map {
        map: names::MAP_FLOWS,
        source,
    };
    let flows: PerCpuHashMap<_, u64, FlowStats> =
        PerCpuHashMap::try_from(map(ebpf, names::MAP_FLOWS)?).map_err(map_err)?;
    let mut out = Vec::new();
    for entry in flows.iter() {
        // An entry evicted or deleted between listing and lookup is simply skipped.
        let Ok((id, slots)) = entry else { continue };
        if let Some(flow) = merge(id, &slots) {
            out.push(flow);
        }
    }
    Ok(out)
}

/// Sums the counters of all CPU slots and takes identity, RTT and state from the slots
/// that have them (the most recently updated one for RTT, cwnd and state).
pub(crate) fn merge(id: u64, slots: &[FlowStats]) -> Option<Flow> {
    let ident = slots.iter().find(|s| s.tgid != 0)?;
    let v6_ident = slots.iter().find(|s| s.family == AF_INET6 && s.tgid != 0);
    let ident = v6_ident.unwrap_or(ident);
    let latest_probe = slots
        .iter()
        .filter(|s| s.cwnd != 0)
        .max_by_key(|s| s.updated_ns);
    let latest_state = slots
        .iter()
        .filter(|s| s.state != 0)
        .max_by_key(|s| s.updated_ns);
    Some(Flow {
        id,
        tgid: ident.tgid,
        local: socket_addr(ident.family, &ident.saddr, ident.sport),
        remote: socket_addr(ident.family, &ident.daddr, ident.dport),
        tx_bytes: slots.iter().map(|s| s.tx_bytes).sum(),
        rx_bytes: slots.iter().map(|s| s.rx_bytes).sum(),
        retransmits: slots.iter().map(|s| s.retransmits).sum(),
        srtt: latest_probe.map(|s| Duration::from_micros(u64::from(s.srtt_us))),
        cwnd: latest_probe.map(|s| s.cwnd),
        closed: latest_state.is_some_and(|s| s.state == TCP_CLOSE),
    })
}

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tx: u64, rx: u64, updated_ns: u64) -> FlowStats {
        FlowStats {
            tx_bytes: tx,
            rx_bytes: rx,
            updated_ns,
            tgid: 42,
            family: dwcp_common::AF_INET,
            sport: 1000,
            dport: 9478,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..FlowStats::default()
        }
    }

    #[test]
    fn sums_counters_and_takes_latest_rtt() {
        let mut a = slot(100, 5, 10);
        a.cwnd = 10;
        a.srtt_us = 500;
        let mut b = slot(50, 7, 20);
        b.cwnd = 20;
        b.srtt_us = 900;
        b.retransmits = 3;
        let flow = merge(7, &[a, FlowStats::default(), b]).unwrap();
        assert_eq!(
            (flow.tx_bytes, flow.rx_bytes, flow.retransmits),
            (150, 12, 3)
        );
        assert_eq!(flow.cwnd, Some(20));
        assert_eq!(flow.srtt, Some(Duration::from_micros(900)));
        assert_eq!(flow.local, "127.0.0.1:1000".parse().unwrap());
        assert_eq!(flow.remote, "10.0.0.2:9478".parse().unwrap());
        assert!(!flow.closed);
    }

    #[test]
    fn empty_slots_give_no_flow() {
        assert_eq!(merge(1, &[FlowStats::default(); 4]), None);
    }

    #[test]
    fn close_state_marks_flow_closed() {
        let mut a = slot(1, 1, 5);
        a.state = TCP_CLOSE;
        assert!(merge(1, &[a]).unwrap().closed);
    }
}
