//! Why a link could not be set up, run or torn down.

use thiserror::Error;

use crate::profile::ProfileError;

/// A failure of the emulated link.
#[derive(Debug, Error)]
pub enum WanError {
    /// The profile cannot describe a link.
    #[error("Invalid link profile")]
    Profile(#[from] ProfileError),
    /// Namespaces, links and TUN devices need root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    #[error("Emulating a WAN link needs root: network namespaces, veth pairs and a TUN device")]
    NotRoot,
    /// A setup tool could not be started at all.
    #[error("Cannot run `{program}` (installed by `cargo xtask setup`: iproute2, ethtool)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A setup command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A network namespace could not be entered.
    #[error("Cannot enter network namespace `{netns}`")]
    EnterNetns {
        /// The namespace.
        netns: String,
        /// Why.
        source: std::io::Error,
    },
    /// A kernel setting in a namespace could not be written.
    #[error("Cannot set {setting} in network namespace `{netns}`")]
    Sysctl {
        /// The namespace.
        netns: String,
        /// The `/proc/sys` path.
        setting: String,
        /// Why.
        source: std::io::Error,
    },
    /// The router's TUN device could not be created.
    #[error("Cannot create TUN device `{name}`")]
    Tun {
        /// The device name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The emulator's threads or their wake-up descriptor could not be created.
    #[error("Cannot start the emulator's data path")]
    Engine(#[source] std::io::Error),
}
