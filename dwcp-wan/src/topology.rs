//! The three namespaces of one link and their wiring:
//!
//! ```text
//!  netns A                 netns R (router)                         netns B
//!  wan0 10.201.0.2/30 ==== to-a 10.201.0.1    to-b 10.201.0.5 ==== wan0 10.201.0.6/30
//!                            |  ip rule iif to-a|to-b lookup 100  |
//!                            +--> table 100: default dev wan-tun -+
//!                                     wan-tun (TUN, read by the emulator;
//!                                     what it writes back is routed by the main table)
//! ```
//!
//! Offloads are off and the MTU is 1500 on every veth so packets are wire-sized; R
//! forwards IPv4 with reverse-path filtering off (packets come back in on `wan-tun`);
//! IPv6 is off everywhere so only the traffic under test crosses the link.

use std::net::Ipv4Addr;

use crate::error::WanError;
use crate::netns;

/// The router's TUN device.
pub const TUN_NAME: &str = "wan-tun";
/// The host-side interface in A and in B.
pub const HOST_IFACE: &str = "wan0";
/// The routing table the router sends forwarded packets through.
const TUN_TABLE: &str = "100";

/// Host A's address (its /30 is [`A_NET`]).
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Host B's address (its /30 is [`B_NET`]).
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 6);
const R_TO_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const R_TO_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 5);
/// A's subnet: its first address (a /30).
pub const A_NET: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
/// B's subnet: its first address (a /30).
pub const B_NET: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 4);
/// The prefix length of both subnets.
pub const PREFIX_LEN: u32 = 30;

/// The namespaces of one link; deleting them (on drop) removes every interface in them.
pub struct Namespaces {
    /// Host A's namespace.
    pub a: String,
    /// The router's namespace.
    pub r: String,
    /// Host B's namespace.
    pub b: String,
    created: Vec<String>,
}

impl Namespaces {
    /// Creates the three namespaces of instance `instance` of this process.
    pub fn create(instance: u64) -> Result<Namespaces, WanError> {
        let pid = std::process::id();
        let mut namespaces = Namespaces {
            a: netns::name(pid, instance, 'a'),
            r: netns::name(pid, instance, 'r'),
            b: netns::name(pid, instance, 'b'),
            created: Vec::new(),
        };
        for name in [
            namespaces.a.clone(),
            namespaces.r.clone(),
            namespaces.b.clone(),
        ] {
            netns::create(&name)?;
            namespaces.created.push(name);
        }
        Ok(namespaces)
    }

    /// Deletes the namespaces; the first failure is returned after trying them all.
    pub fn delete(&mut self) -> Result<(), WanError> {
        let mut first = Ok(());
        for name in self.created.drain(..) {
            if let Err(error) = netns::delete(&name)
                && first.is_ok()
            {
                first = Err(error);
            }
        }
        first
    }

    /// Wires A, R and B together (everything but the TUN device's routes).
    pub fn wire(&self) -> Result<(), WanError> {
        let (a, r, b) = (self.a.as_str(), self.r.as_str(), self.b.as_str());
        for name in [a, r, b] {
            sysctls(
                name,
                &[
                    ("net/ipv6/conf/all/disable_ipv6", "1"),
                    ("net/ipv6/conf/default/disable_ipv6", "1"),
                ],
            )?;
            netns::ip(name, &["link", "set", "lo", "up"])?;
        }
        sysctls(
            r,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv4/conf/all/send_redirects", "0"),
                ("net/ipv4/conf/default/send_redirects", "0"),
            ],
        )?;
        for (host, router_iface, router_addr, host_addr) in
            [(a, "to-a", R_TO_A, A_ADDR), (b, "to-b", R_TO_B, B_ADDR)]
        {
            netns::ip(
                r,
                &[
                    "link",
                    "add",
                    router_iface,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    HOST_IFACE,
                    "netns",
                    host,
                ],
            )?;
            for (name, iface, addr) in [
                (r, router_iface, router_addr),
                (host, HOST_IFACE, host_addr),
            ] {
                let cidr = format!("{addr}/{PREFIX_LEN}");
                netns::ip(name, &["addr", "add", &cidr, "dev", iface])?;
                netns::ip(name, &["link", "set", iface, "mtu", "1500", "up"])?;
                netns::exec(
                    name,
                    "ethtool",
                    &["-K", iface, "tso", "off", "gso", "off", "gro", "off"],
                )?;
            }
            netns::ip(
                host,
                &["route", "add", "default", "via", &router_addr.to_string()],
            )?;
            netns::ip(
                r,
                &["rule", "add", "iif", router_iface, "lookup", TUN_TABLE],
            )?;
        }
        Ok(())
    }

    /// Brings the router's TUN device up and routes forwarded packets through it.
    pub fn route_through_tun(&self) -> Result<(), WanError> {
        let r = self.r.as_str();
        netns::ip(
            r,
            &[
                "link",
                "set",
                TUN_NAME,
                "mtu",
                "1500",
                "txqueuelen",
                "10000",
                "up",
            ],
        )?;
        sysctls(r, &[(&format!("net/ipv4/conf/{TUN_NAME}/rp_filter"), "0")])?;
        netns::ip(
            r,
            &[
                "route", "add", "default", "dev", TUN_NAME, "table", TUN_TABLE,
            ],
        )
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Err(error) = self.delete() {
            eprintln!("dwcp-wan: tearing down: {error}");
        }
    }
}

/// Writes `/proc/sys` settings from a thread inside `netns` (they are per namespace).
fn sysctls(netns: &str, settings: &[(&str, &str)]) -> Result<(), WanError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                netns::enter(netns)?;
                for (setting, value) in settings {
                    let path = format!("/proc/sys/{setting}");
                    std::fs::write(&path, value).map_err(|source| WanError::Sysctl {
                        netns: netns.to_owned(),
                        setting: path,
                        source,
                    })?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Whether `addr` is in the /30 starting at `net`.
pub fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - PREFIX_LEN);
    u32::from(addr) & mask == u32::from(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_hold_their_hosts_and_not_each_other() {
        assert!(in_subnet(A_ADDR, A_NET) && in_subnet(R_TO_A, A_NET));
        assert!(in_subnet(B_ADDR, B_NET) && in_subnet(R_TO_B, B_NET));
        assert!(!in_subnet(A_ADDR, B_NET) && !in_subnet(B_ADDR, A_NET));
    }
}
