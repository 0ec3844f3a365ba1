//! Why a migration request is refused or a migration failed.

use crate::{amst::AmstError, vm::VmError};

/// Errors of migrating a VM.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The VM operation was refused (unknown VM, wrong state, QEMU error).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The request is malformed.
    #[error("Invalid migration request: {0}")]
    Request(String),
    /// `to` does not name a reachable address.
    #[error("Bad destination {to:?}: {reason}")]
    Destination {
        /// What the client gave.
        to: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The VM has a local disk and the mode cannot move it.
    #[error(
        "VM {0} has a local disk: {1} migration moves RAM and device state only; cold \
         migration moves the disk too (live and warm would need shared storage or block \
         mirroring, and QEMU 7.2's block migration is deprecated)"
    )]
    LocalDisk(String, &'static str),
    /// The VM's disk cannot be offered for a cold migration.
    #[error("Cannot read the disk {path}: {reason}")]
    Disk {
        /// The disk image.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No key to authenticate to the destination.
    #[error("No pre-shared key for the destination: {0}")]
    Psk(String),
    /// The destination agent could not be reached or authenticated.
    #[error("Cannot reach the destination agent at {addr}")]
    Connect {
        /// Destination.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: AmstError,
    },
    /// The destination agent refused to receive the VM.
    #[error("The destination agent refused the VM: {0}")]
    Refused(String),
}
