//! Choosing the accelerator: KVM only when it really boots a Linux guest, else TCG.
//!
//! `/dev/kvm` may exist and QEMU may start with it while a Linux guest still hangs right
//! after decompression (nested KVM on some hosts). So the probe boots the VM's own kernel
//! under `-accel kvm` with no initrd and waits for the kernel's `Linux version` banner on
//! the serial console; without it within [`PROBE_TIMEOUT`], KVM is not used. The answer
//! is cached for the life of the agent process.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A QEMU accelerator.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's binary translator.
    Tcg,
}

impl Accel {
    /// The value for `-accel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The accelerator to use and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    /// Accelerator.
    pub accel: Accel,
    /// One sentence on how it was decided.
    pub reason: String,
}

/// How long a KVM probe boot may take to print the kernel banner.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(6);
/// The serial line that proves the kernel runs.
pub const PROBE_BANNER: &str = "Linux version";

/// Decides once per agent process, on the first VM that has a kernel to probe with.
#[derive(Debug)]
pub struct AccelDetector {
    qemu: PathBuf,
    work_dir: PathBuf,
    cached: tokio::sync::OnceCell<AccelChoice>,
}

impl AccelDetector {
    /// A detector running `qemu` for probes, writing probe logs into `work_dir`.
    pub fn new(qemu: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            qemu,
            work_dir,
            cached: tokio::sync::OnceCell::new(),
        }
    }

    /// The cached decision, if one was made.
    pub fn decided(&self) -> Option<&AccelChoice> {
        self.cached.get()
    }

    /// The accelerator for a VM booting `kernel` (probing KVM with it the first time).
    pub async fn choose(&self, kernel: Option<&Path>) -> AccelChoice {
        if let Some(choice) = self.cached.get() {
            return choice.clone();
        }
        if let Err(reason) = kvm_device_usable() {
            return self
                .cached
                .get_or_init(|| async move { tcg(reason) })
                .await
                .clone();
        }
        let Some(kernel) = kernel else {
            // Not cached: a later VM with a kernel can still settle it.
            return tcg("KVM not probed yet (this VM has no kernel to probe with)".into());
        };
        let (qemu, dir, kernel) = (self.qemu.clone(), self.work_dir.clone(), kernel.to_owned());
        self.cached
            .get_or_init(|| async move {
                let choice = tokio::task::spawn_blocking(move || probe_kvm(&qemu, &dir, &kernel))
                    .await
                    .unwrap_or_else(|e| tcg(format!("KVM probe crashed: {e}")));
                tracing::info!(accel = choice.accel.as_str(), reason = %choice.reason, "Accelerator chosen");
                choice
            })
            .await
            .clone()
    }
}

fn tcg(reason: String) -> AccelChoice {
    AccelChoice {
        accel: Accel::Tcg,
        reason,
    }
}

/// Whether `/dev/kvm` opens read-write.
fn kvm_device_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable ({e})"))
}

/// Boots `kernel` under KVM and watches the serial log for [`PROBE_BANNER`].
fn probe_kvm(qemu: &Path, dir: &Path, kernel: &Path) -> AccelChoice {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return tcg(format!(
            "KVM probe impossible: cannot create {}: {e}",
            dir.display()
        ));
    }
    let serial = dir.join(format!("kvm-probe-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&serial);
    let started = Instant::now();
    let child = Command::new(qemu)
        .args(["-accel", "kvm", "-m", "128", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return tcg(format!("KVM probe could not run {}: {e}", qemu.display())),
    };
    let outcome = loop {
        let text = std::fs::read_to_string(&serial).unwrap_or_default();
        if text.contains(PROBE_BANNER) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            break Err(format!(
                "QEMU with -accel kvm exited ({status}): {}",
                stderr.trim()
            ));
        }
        if started.elapsed() > PROBE_TIMEOUT {
            break Err(format!(
                "a Linux kernel under KVM printed no {PROBE_BANNER:?} within {PROBE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&serial);
    match outcome {
        Ok(took) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!("KVM probe boot printed the kernel banner in {took:.1?}"),
        },
        Err(why) => tcg(format!("KVM unusable: {why}; using TCG")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod privileged {
        use super::*;

        /// The test guest's kernel (`cargo xtask guest`).
        fn guest_kernel() -> PathBuf {
            let cache = std::env::var_os("DWCP_CACHE_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dwcp-cache"),
                PathBuf::from,
            );
            let kernel = cache.join("guest/vmlinuz");
            assert!(
                kernel.is_file(),
                "No {}: run `cargo xtask guest`",
                kernel.display()
            );
            kernel
        }

        /// Whatever this host allows, the probe answers with a reason; KVM only with the
        /// kernel banner seen, and no probe QEMU is left behind.
        #[test]
        fn the_probe_boots_the_kernel_under_kvm_or_says_why_not() {
            let dir = tempfile::tempdir().unwrap();
            let choice = probe_kvm(Path::new("qemu-system-x86_64"), dir.path(), &guest_kernel());
            match choice.accel {
                Accel::Kvm => assert!(choice.reason.contains("kernel banner"), "{choice:?}"),
                Accel::Tcg => assert!(choice.reason.starts_with("KVM unusable: "), "{choice:?}"),
            }
            if kvm_device_usable().is_err() {
                assert_eq!(choice.accel, Accel::Tcg);
                assert!(choice.reason.contains("-accel kvm exited"), "{choice:?}");
            }
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "probe log left"
            );
        }

        #[tokio::test]
        async fn the_decision_is_cached_per_detector() {
            let dir = tempfile::tempdir().unwrap();
            let detector = AccelDetector::new("qemu-system-x86_64".into(), dir.path().into());
            let without_kernel = detector.choose(None).await;
            assert_eq!(without_kernel.accel, Accel::Tcg);
            let first = detector.choose(Some(&guest_kernel())).await;
            assert_eq!(detector.decided(), Some(&first));
            let again = detector
                .choose(Some(Path::new("/nonexistent/kernel")))
                .await;
            assert_eq!(again, first);
        }

        #[test]
        fn a_missing_qemu_binary_means_tcg_with_the_reason() {
            let dir = tempfile::tempdir().unwrap();
            let choice = probe_kvm(Path::new("/nonexistent/qemu"), dir.path(), &guest_kernel());
            assert_eq!(choice.accel, Accel::Tcg);
            assert!(choice.reason.contains("/nonexistent/qemu"), "{choice:?}");
        }
    }
}
