//! The link a profile's cases run over, and which side of it each program runs on.
//!
//! - an emulated profile (`wan-1g-50ms-0.1pct`, ... or a TOML profile file): a
//!   [`dwcp_wan::WanLink`] between network namespaces A and B, with the profile's rate,
//!   queue, delay, jitter and loss applied in between; torn down when dropped;
//! - `loopback`: both sides on this host's 127.0.0.1, no emulation (no configured rate,
//!   so utilization is not judged);
//! - `remote`: the sender here, the receiving agent and `iperf3 -s` on another host the
//!   user prepared (`--peer HOST`); the rate of a real link is not known to us.
//!
//! The sender side is host A, the receiver side host B: the receiving agent, the iperf3
//! server and the copy's listener run on B, the sending agent and clients on A.

use std::{
    ffi::OsStr,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
};

use anyhow::Context as _;
use dwcp_wan::{LinkProfile, WanLink};
use serde::{Deserialize, Serialize};

/// What the report records of a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Profile name (`loopback`, an emulated profile, or `remote:<host>`).
    pub name: String,
    /// Configured rate in bits per second (`None`: not emulated, unknown).
    pub rate_bps: Option<u64>,
    /// Configured round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Configured loss probability (0..1).
    pub loss: Option<f64>,
    /// How the link is made.
    pub kind: String,
}

/// A link between the sending side (A) and the receiving side (B).
pub enum Link {
    /// Both sides on this host's loopback.
    Loopback,
    /// An emulated link between two network namespaces.
    Emulated(Box<WanLink>),
    /// The receiving side is another host, prepared by the user.
    Remote {
        /// Its address.
        addr: IpAddr,
        /// Its name as given.
        host: String,
    },
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.info().name)
    }
}

impl Link {
    /// Opens the link of a profile: `loopback`, a built-in emulated profile's name, or a
    /// TOML profile file.
    pub fn open(profile: &str) -> anyhow::Result<Self> {
        if profile == super::plan::LOOPBACK {
            return Ok(Self::Loopback);
        }
        let emulated = match LinkProfile::builtin(profile) {
            Some(p) => p,
            None if Path::new(profile).is_file() => LinkProfile::from_toml_file(profile)
                .with_context(|| format!("Read the link profile {profile}"))?,
            None => {
                let known: Vec<String> = LinkProfile::builtins()
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                anyhow::bail!(
                    "Unknown profile {profile:?}: expected `{}`, one of {} or a TOML profile file",
                    super::plan::LOOPBACK,
                    known.join(", ")
                );
            }
        };
        let link = WanLink::start(&emulated)
            .with_context(|| format!("Start the emulated link {}", emulated.name))?;
        Ok(Self::Emulated(Box::new(link)))
    }

    /// Commands that set the link up, for the report.
    pub fn setup_commands(&self) -> Vec<String> {
        match self {
            Self::Emulated(link) => vec![format!(
                "# emulated link {}: namespaces {} (A, {}), {} (router), {} (B, {}) \
                 (dwcp_wan::WanLink::start)",
                link.profile().summary(),
                link.a().netns,
                link.a().addr,
                link.router_netns(),
                link.b().netns,
                link.b().addr
            )],
            _ => Vec::new(),
        }
    }

    /// What the report says about the link.
    pub fn info(&self) -> LinkInfo {
        match self {
            Self::Loopback => LinkInfo {
                name: super::plan::LOOPBACK.into(),
                rate_bps: None,
                rtt_ms: None,
                loss: None,
                kind: "loopback, no emulation".into(),
            },
            Self::Emulated(link) => {
                let p = link.profile();
                LinkInfo {
                    name: p.name.clone(),
                    rate_bps: Some(p.rate_bps),
                    rtt_ms: Some(p.rtt.as_secs_f64() * 1e3),
                    loss: Some(p.loss),
                    kind: format!("emulated (dwcp-wan): {}", p.summary()),
                }
            }
            Self::Remote { host, .. } => LinkInfo {
                name: format!("remote:{host}"),
                rate_bps: None,
                rtt_ms: None,
                loss: None,
                kind: "a real link to a remote host (rate unknown)".into(),
            },
        }
    }

    /// A command running `program` on the sending side.
    pub fn sender_command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Self::Emulated(link) => link.a().command(program),
            _ => Command::new(program),
        }
    }

    /// A command running `program` on the receiving side (`None` for a remote host,
    /// whose programs the user starts).
    pub fn receiver_command(&self, program: impl AsRef<OsStr>) -> Option<Command> {
        match self {
            Self::Loopback => Some(Command::new(program)),
            Self::Emulated(link) => Some(link.b().command(program)),
            Self::Remote { .. } => None,
        }
    }

    /// The receiving side's address, as the sender reaches it.
    pub fn receiver_ip(&self) -> IpAddr {
        match self {
            Self::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Self::Emulated(link) => IpAddr::V4(link.b().addr),
            Self::Remote { addr, .. } => *addr,
        }
    }

    /// Runs `f` where the receiving side's addresses are reachable (its network
    /// namespace for an emulated link), for scraping its agent's metrics.
    pub fn in_receiver_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self {
            Self::Emulated(link) => link.b().run_in(f),
            _ => f(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_profiles_are_refused_with_the_known_names() {
        let err = Link::open("wan-10g").unwrap_err().to_string();
        assert!(err.starts_with("Unknown profile \"wan-10g\""), "{err}");
        for name in ["loopback", "lan-1g", "wan-1g-50ms-0.1pct"] {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn loopback_runs_both_sides_here() {
        let link = Link::open("loopback").unwrap();
        assert_eq!(link.receiver_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(link.info().rate_bps, None);
        assert_eq!(link.sender_command("iperf3").get_program(), "iperf3");
        assert_eq!(link.in_receiver_ns(|| 5), 5);
        assert!(link.setup_commands().is_empty());
    }
}
