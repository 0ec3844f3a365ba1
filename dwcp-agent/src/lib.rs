//! The dwcp host agent.
//!
//! Modules by capability: [`probe`] loads the kernel programs and reads their maps,
//! [`telemetry`] turns readings into [`metrics`], [`http`] serves them, [`daemon`] runs
//! the service, [`config`] holds its settings, [`notify`] talks to systemd, [`vm`] runs
//! QEMU VMs and [`api`] serves their local control API.
//! See ARCHITECTURE.md at the repository root for the whole picture.

pub mod amst;
pub mod api;
pub mod config;
pub mod daemon;
pub mod hde_cli;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod pba;
pub mod probe;
pub mod protocol;
pub mod telemetry;
pub mod transfer_cli;
pub mod vm;
pub mod vm_cli;
pub mod vm_migrate_cli;

/// Formats an error with all its sources: `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
