//! tracefs at `/sys/kernel/tracing`, where tracepoint programs find their events.
//!
//! It is not mounted by default on this machine kind; mounting needs root.

use std::path::Path;

use anyhow::{Result, ensure};

use super::report::{Outcome, Report, installing};
use crate::{cmd, sys};

/// Mount point of tracefs.
const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// A directory that exists only when tracefs is mounted.
const EVENTS: &str = "/sys/kernel/tracing/events";

/// Mounts tracefs unless it is already mounted.
pub fn ensure(report: &mut Report) {
    report.record("tracefs", mount());
}

/// Mounts tracefs at [`MOUNT_POINT`] if [`EVENTS`] is missing.
fn mount() -> Result<Outcome> {
    if Path::new(EVENTS).exists() {
        return Ok(Outcome::Present);
    }
    if !sys::is_root() {
        return Ok(Outcome::Skipped(format!(
            "root is needed to mount tracefs at {MOUNT_POINT} (the eBPF tests need it)"
        )));
    }
    installing("tracefs", &format!("mounting at {MOUNT_POINT}"));
    let args = ["-t", "tracefs", "nodev", MOUNT_POINT];
    cmd::run(&mut cmd::new("mount", args))?;
    ensure!(
        Path::new(EVENTS).exists(),
        "{EVENTS} still missing after mounting"
    );
    Ok(Outcome::Installed(format!("mounted at {MOUNT_POINT}")))
}
