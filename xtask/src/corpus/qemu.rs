//! One guest under QEMU for the corpus: started with a QMP socket and a serial log in a
//! scratch folder, waited for until the workload says READY, and killed by [`Guest`]'s
//! `Drop` whatever happens.
//!
//! The accelerator is TCG: on this machine kind KVM hangs Linux guests right after
//! decompression (see `shared/toolchain.md`), and TCG boots the test guest in seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::qmp::Qmp;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The accelerator used (see the module documentation).
pub const ACCEL: &str = "tcg";
/// How long a guest may take from start to READY under TCG.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// What to boot.
pub struct BootSpec<'a> {
    /// `vmlinuz` and `initrd.gz` are here.
    pub guest_dir: &'a Path,
    /// Guest RAM, MiB.
    pub mem_mib: u32,
    /// `dwcp.workload`.
    pub workload: &'a str,
    /// `dwcp.mem_mib`.
    pub workload_mib: u32,
    /// `dwcp.rate_mib_s`.
    pub rate_mib_s: u32,
    /// Scratch folder for the QMP socket and the serial log.
    pub scratch: &'a Path,
}

/// A running guest; dropping it kills QEMU and waits for it.
pub struct Guest {
    child: Child,
    serial: PathBuf,
    /// The QMP session.
    pub qmp: Qmp,
}

impl Guest {
    /// Starts QEMU and waits until the guest's workload is READY.
    pub fn boot(spec: &BootSpec<'_>) -> Result<Self> {
        fs::create_dir_all(spec.scratch)
            .with_context(|| format!("Cannot create {}", spec.scratch.display()))?;
        let socket = spec.scratch.join(format!("{}.qmp", spec.workload));
        let serial = spec.scratch.join(format!("{}.serial.log", spec.workload));
        fs::remove_file(&socket).ok();
        fs::write(&serial, b"").with_context(|| format!("Cannot write {}", serial.display()))?;
        let append = format!(
            "console=ttyS0 quiet dwcp.workload={} dwcp.mem_mib={} dwcp.rate_mib_s={}",
            spec.workload, spec.workload_mib, spec.rate_mib_s
        );
        let mut cmd = Command::new(QEMU);
        cmd.args(["-accel", ACCEL, "-m"])
            .arg(spec.mem_mib.to_string())
            .args([
                "-smp",
                "1",
                "-display",
                "none",
                "-vga",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(spec.guest_dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(spec.guest_dir.join("initrd.gz"))
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().with_context(|| {
            format!("Cannot start {QEMU} (install it with `cargo xtask setup`)")
        })?;
        let mut guard = Started { child: Some(child) };
        let qmp = Qmp::connect(&socket, Duration::from_secs(30))?;
        let child = guard
            .child
            .take()
            .context("The QEMU child is set until here")?;
        let guest = Self { child, serial, qmp };
        guest.wait_ready()?;
        Ok(guest)
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits for the `DWCP-GUEST READY` line; fails on `DWCP-GUEST ERROR`, on QEMU
    /// exiting, or after [`READY_TIMEOUT`].
    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let console = self.console();
            if console.contains("DWCP-GUEST READY") {
                return Ok(());
            }
            if let Some(line) = console.lines().find(|l| l.contains("DWCP-GUEST ERROR")) {
                bail!("The guest's workload did not start: {}", line.trim());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "The guest was not READY after {READY_TIMEOUT:?}; console ends with:\n{}",
                    tail(&console)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The workload's `FAIL` lines so far (a capture of a failing workload is no corpus).
    pub fn failures(&self) -> Vec<String> {
        self.console()
            .lines()
            .filter(|l| {
                (l.starts_with("DWCP-VERIFY") || l.starts_with("DWCP-COMPRESS"))
                    && l.contains("FAIL")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Killing is the teardown: the corpus is written by QMP, nothing in the guest
        // needs a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills QEMU if the handshake fails before a [`Guest`] owns the child.
struct Started {
    child: Option<Child>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a console, for error messages.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `qemu-system-x86_64 --version`'s first line.
pub fn version() -> Result<String> {
    let out = Command::new(QEMU)
        .arg("--version")
        .output()
        .with_context(|| format!("Cannot run {QEMU} (install it with `cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!("{QEMU} --version failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}
