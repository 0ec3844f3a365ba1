//! One QEMU guest of the migration benchmark: launched inside a host's network namespace
//! with the product's own command line (`dwcp_agent::vm::process::qemu_args`), driven
//! over the product's QMP client, its serial console read from a file, killed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dwcp_agent::vm::{
    accel::Accel,
    process::{QEMU_BINARY, qemu_args},
    qmp::QmpClient,
    spec::VmSpec,
    store::VmPaths,
};
use dwcp_wan::Host;

/// Serial console markers of a guest kernel that crashed.
/// (Not "BUG: soft lockup": a TCG guest on a busy host prints that and lives on.)
const KERNEL_CRASH: [&str; 6] = [
    "BUG: kernel NULL pointer",
    "BUG: unable to handle",
    "Oops: ",
    "invalid opcode: ",
    "general protection fault",
    "Kernel panic",
];

/// A running QEMU and its QMP session.
pub struct Guest {
    child: Child,
    /// Its QMP session.
    pub qmp: QmpClient,
    serial: PathBuf,
    /// Which side it is (for messages).
    role: &'static str,
}

/// The test guest's files, from `cargo xtask guest`.
pub struct GuestImage {
    /// Kernel.
    pub kernel: PathBuf,
    /// Initramfs with the workload.
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The guest `cargo xtask guest` built under the workspace's cache.
    pub fn built() -> anyhow::Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dwcp-cache/guest");
        let image = Self {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
        };
        if !image.kernel.is_file() || !image.initrd.is_file() {
            bail!(
                "No test guest in {}: run `cargo xtask guest` first",
                dir.display()
            );
        }
        Ok(image)
    }
}

impl Guest {
    /// Starts QEMU in `host`'s namespace with files under `dir`; `incoming` adds
    /// `-incoming VALUE` (a destination).
    pub async fn launch(
        role: &'static str,
        host: &Host,
        dir: &Path,
        spec: &VmSpec,
        incoming: Option<&str>,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
        let paths = VmPaths {
            dir: dir.to_path_buf(),
            record: dir.join("vm.json"),
            qmp: dir.join("qmp.sock"),
            serial: dir.join("serial.log"),
            pidfile: dir.join("qemu.pid"),
            qemu_log: dir.join("qemu.log"),
        };
        let mut args = qemu_args(spec, Accel::Tcg, &paths);
        if let Some(incoming) = incoming {
            args.extend(["-incoming".to_owned(), incoming.to_owned()]);
        }
        let log = fs::File::create(&paths.qemu_log)
            .with_context(|| format!("Cannot create {}", paths.qemu_log.display()))?;
        let child = host
            .command(QEMU_BINARY)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("Cannot start qemu-system-x86_64 (cargo xtask setup installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !paths.qmp.exists() {
            if Instant::now() > deadline {
                bail!(
                    "The {role} QEMU never opened its QMP socket; see {}",
                    paths.qemu_log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut guest = Self {
            child,
            qmp: QmpClient::connect(&paths.qmp, Duration::from_secs(30))
                .await
                .with_context(|| format!("QMP of the {role} QEMU"))?,
            serial: paths.serial,
            role,
        };
        if let Some(status) = guest.child.try_wait()? {
            bail!("The {role} QEMU exited at start ({status})");
        }
        Ok(guest)
    }

    /// Bytes of serial output so far.
    pub fn serial_len(&self) -> usize {
        fs::read(&self.serial).map_or(0, |s| s.len())
    }

    /// Waits for a serial line containing `needle` after byte `from`; returns that line.
    /// A `DWCP-VERIFY FAIL` line, a kernel oops or QEMU's exit on the way is an error.
    pub async fn wait_serial(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = find_serial(&self.serial, self.role, needle, from)? {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("The {} QEMU exited ({status}) before {needle:?}", self.role);
            }
            if Instant::now() > deadline {
                bail!(
                    "The {} guest printed no {needle:?} within {timeout:?}",
                    self.role
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The first line after byte `from` of the serial log at `path` that contains `needle`;
/// a `DWCP-VERIFY FAIL` line or a kernel oops before it is an error.
fn find_serial(
    path: &Path,
    role: &str,
    needle: &str,
    from: usize,
) -> anyhow::Result<Option<String>> {
    let text = fs::read(path).unwrap_or_default();
    let tail = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
    for line in tail.lines() {
        if line.contains("DWCP-VERIFY FAIL") {
            bail!("The {role} guest found its memory corrupt: {line}");
        }
        if KERNEL_CRASH.iter().any(|m| line.contains(m)) {
            bail!("The {role} guest's kernel crashed: {}", line.trim());
        }
        if line.contains(needle) {
            return Ok(Some(line.trim().to_owned()));
        }
    }
    Ok(None)
}

/// Like [`Guest::wait_serial`] for a guest this benchmark did not start (blocking).
pub fn wait_serial_file(
    path: &Path,
    role: &str,
    needle: &str,
    from: usize,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = find_serial(path, role, needle, from)? {
            return Ok(line);
        }
        if Instant::now() > deadline {
            bail!("The {role} guest printed no {needle:?} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
