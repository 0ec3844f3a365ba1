//! The link a profile's cases run over, and which side of it each program runs on.
//!
//! - `loopback`: both sides on this host's 127.0.0.1, no emulation (no configured rate,
//!   so utilization is not judged).
//! - `remote`: the sender here, the receiving agent and `iperf3 -s` on another host the
//!   user prepared (`--peer HOST`); the rate of a real link is not known to us.
//!
//! The sender side is host A, the receiver side host B: the receiving agent, the iperf3
//! server and the copy's listener run on B, the sending agent and clients on A.

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr},
    process::Command,
};

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
#[derive(Debug)]
pub enum Link {
    /// Both sides on this host's loopback.
    Loopback,
    /// The receiving side is another host, prepared by the user.
    Remote {
        /// Its address.
        addr: IpAddr,
        /// Its name as given.
        host: String,
    },
}

impl Link {
    /// Opens the link of a profile: `loopback`, or an emulated profile by name.
    pub fn open(profile: &str) -> anyhow::Result<Self> {
        match profile {
            super::plan::LOOPBACK => Ok(Self::Loopback),
            other => anyhow::bail!(
                "Unknown profile {other:?}: this build knows only `{}`",
                super::plan::LOOPBACK
            ),
        }
    }

    /// Commands that set the link up, for the report.
    pub fn setup_commands(&self) -> Vec<String> {
        Vec::new()
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
        Command::new(program)
    }

    /// A command running `program` on the receiving side (`None` for a remote host,
    /// whose programs the user starts).
    pub fn receiver_command(&self, program: impl AsRef<OsStr>) -> Option<Command> {
        match self {
            Self::Loopback => Some(Command::new(program)),
            Self::Remote { .. } => None,
        }
    }

    /// The receiving side's address, as the sender reaches it.
    pub fn receiver_ip(&self) -> IpAddr {
        match self {
            Self::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Self::Remote { addr, .. } => *addr,
        }
    }

    /// Runs `f` where the receiving side's addresses are reachable (its network
    /// namespace for an emulated link), for scraping its agent's metrics.
    pub fn in_receiver_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        f()
    }
}
