//! The QEMU process of one VM: its command line, launching it so that it outlives the
//! agent, and finding it again after an agent restart.
//!
//! QEMU runs in its own process group (a Ctrl-C or a signal to the agent's group does not
//! reach it) and nothing ties its life to the agent's: stopping the agent leaves the VM
//! running. Its pidfile and QMP socket live in the VM's directory; [`QemuProcess::attach`]
//! uses them to re-adopt it, after checking the pid really is that VM's QEMU.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use super::{
    accel::Accel,
    spec::{Network, VmSpec},
    store::VmPaths,
};

/// Errors of launching or finding QEMU.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be executed.
    #[error("Cannot run {binary} (install qemu-system-x86: cargo xtask setup)")]
    Spawn {
        /// QEMU binary.
        binary: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The VM's log file could not be created.
    #[error("Cannot create {path}")]
    Log {
        /// File.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No QEMU to attach to.
    #[error("No running QEMU for this VM: {0}")]
    NotRunning(String),
}

/// Default QEMU binary.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// The page QEMU's TCG guests get on top of their size, so that migration stays exact.
///
/// QEMU before 9.0 (Debian 12 ships 7.2) syncs the migration dirty bitmap of a RAM block
/// whose size is a multiple of 64 pages through a word-at-a-time fast path that forgets
/// to re-arm TCG's TLB dirty tracking: stores through already-dirty TLB entries are then
/// never marked again and pre-copy loses them, so a busy guest resumes with stale pages
/// and its kernel crashes. Upstream fixed it in 9.0 ("physmem: Fix migration dirty
/// bitmap coherency with TCG memory access"). One extra 4 KiB page makes the block
/// unaligned, which sends QEMU down its per-page path that does re-arm the TLB. KVM
/// tracks dirty pages in the kernel and needs nothing.
pub const TCG_MIGRATION_PAGE_KIB: u64 = 4;

/// The value for `-m`: the spec's size, plus [`TCG_MIGRATION_PAGE_KIB`] under TCG.
pub fn memory_arg(memory_mib: u64, accel: Accel) -> String {
    match accel {
        Accel::Kvm => memory_mib.to_string(),
        Accel::Tcg => format!("{}k", memory_mib * 1024 + TCG_MIGRATION_PAGE_KIB),
    }
}

/// QEMU's arguments for `spec` under `accel`, with files in `paths`.
pub fn qemu_args(spec: &VmSpec, accel: Accel, paths: &VmPaths) -> Vec<String> {
    let mut args: Vec<String> = [
        "-name",
        &format!("guest={},process=qemu-{}", spec.name, spec.name),
        "-accel",
        accel.as_str(),
        "-m",
        &memory_arg(spec.memory_mib, accel),
        "-smp",
        &spec.vcpus.to_string(),
        // No default devices (monitor on stdio, VGA, floppy): everything is explicit.
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-qmp",
        &format!("unix:{},server=on,wait=off", paths.qmp.display()),
        "-serial",
        &format!("file:{}", paths.serial.display()),
        "-pidfile",
        &paths.pidfile.display().to_string(),
        "-nic",
        match spec.network {
            Network::None => "none",
            Network::User => "user,model=virtio-net-pci",
        },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if let Some(disk) = &spec.disk {
        args.push("-drive".into());
        let format = if disk.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        args.push(format!("file={},if=virtio,format={format}", disk.display()));
    }
    if let Some(kernel) = &spec.kernel {
        args.push("-kernel".into());
        args.push(kernel.display().to_string());
    }
    if let Some(initrd) = &spec.initrd {
        args.push("-initrd".into());
        args.push(initrd.display().to_string());
    }
    if let Some(append) = &spec.append {
        args.push("-append".into());
        args.push(append.clone());
    }
    args
}

/// A QEMU process the agent launched or re-attached to.
#[derive(Debug)]
pub struct QemuProcess {
    /// Its pid.
    pub pid: u32,
    /// Set when this agent launched it: the handle gives the exit status.
    child: Mutex<Option<Child>>,
    /// Where QEMU's stderr goes.
    log: PathBuf,
}

impl QemuProcess {
    /// Launches `binary` with `args`, in its own process group, output to `paths.qemu_log`.
    /// Stale sockets and pidfiles of an earlier run are removed first.
    pub fn spawn(binary: &Path, args: &[String], paths: &VmPaths) -> Result<Self, ProcessError> {
        for stale in [&paths.qmp, &paths.pidfile] {
            let _ = std::fs::remove_file(stale);
        }
        let log = std::fs::File::create(&paths.qemu_log).map_err(|source| ProcessError::Log {
            path: paths.qemu_log.display().to_string(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Log {
            path: paths.qemu_log.display().to_string(),
            source,
        })?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        Ok(Self {
            pid: child.id(),
            child: Mutex::new(Some(child)),
            log: paths.qemu_log.clone(),
        })
    }

    /// Finds the running QEMU of the VM at `paths` by its pidfile, checking that the pid
    /// is a QEMU whose command line names this VM's QMP socket.
    pub fn attach(paths: &VmPaths) -> Result<Self, ProcessError> {
        let text = std::fs::read_to_string(&paths.pidfile).map_err(|e| {
            ProcessError::NotRunning(format!("no pidfile {} ({e})", paths.pidfile.display()))
        })?;
        let pid: u32 = text.trim().parse().map_err(|_| {
            ProcessError::NotRunning(format!(
                "pidfile {} holds {:?}",
                paths.pidfile.display(),
                text.trim()
            ))
        })?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|_| ProcessError::NotRunning(format!("process {pid} is gone")))?;
        let is_qemu = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let qmp = paths.qmp.display().to_string();
        let ours = String::from_utf8_lossy(&cmdline).contains(&qmp);
        if !is_qemu || !ours {
            return Err(ProcessError::NotRunning(format!(
                "pid {pid} is {} and not this VM's QEMU",
                exe.display()
            )));
        }
        let process = Self {
            pid,
            child: Mutex::new(None),
            log: paths.qemu_log.clone(),
        };
        if !process.is_alive() {
            return Err(ProcessError::NotRunning(format!(
                "process {pid} has exited"
            )));
        }
        Ok(process)
    }

    /// Whether the process still runs (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        if let Some(child) = lock(&self.child).as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Field 3, after the parenthesised command name, is the state letter.
        match stat.rsplit_once(')') {
            Some((_, rest)) => !rest.trim_start().starts_with(['Z', 'X']),
            None => false,
        }
    }

    /// How the process ended, for a failure reason: the exit status if this agent
    /// launched it, plus the last line QEMU printed.
    pub fn exit_description(&self) -> String {
        let status = match lock(&self.child).as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => format!("QEMU (pid {}) exited: {status}", self.pid),
            Some(_) => format!("QEMU (pid {}) stopped answering", self.pid),
            None => format!(
                "QEMU (pid {}) exited (status unknown: an earlier agent started it)",
                self.pid
            ),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match log.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => format!("{status}; QEMU said: {}", last.trim()),
            None => status,
        }
    }

    /// Sends SIGKILL (and reaps the process if this agent launched it; a SIGKILLed
    /// process exits at once, so the wait is short).
    pub fn kill(&self) {
        if let Some(child) = lock(&self.child).as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill has no memory-safety preconditions; `pid` was checked to be
            // this VM's QEMU when it was attached.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last `n` lines of a text file (the guest's serial console), best effort.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_follows_the_spec() {
        let paths = VmPaths {
            dir: "/s/vms/a".into(),
            record: "/s/vms/a/vm.json".into(),
            qmp: "/s/vms/a/qmp.sock".into(),
            serial: "/s/vms/a/serial.log".into(),
            pidfile: "/s/vms/a/qemu.pid".into(),
            qemu_log: "/s/vms/a/qemu.log".into(),
        };
        let mut spec = VmSpec::named("a");
        spec.vcpus = 2;
        spec.memory_mib = 512;
        spec.kernel = Some("/k".into());
        spec.append = Some("console=ttyS0 x=1".into());
        let args = qemu_args(&spec, Accel::Tcg, &paths).join(" ");
        for part in [
            "-accel tcg",
            "-m 524292k",
            "-smp 2",
            "-qmp unix:/s/vms/a/qmp.sock,server=on,wait=off",
            "-serial file:/s/vms/a/serial.log",
            "-pidfile /s/vms/a/qemu.pid",
            "-nic none",
            "-kernel /k",
            "-append console=ttyS0 x=1",
        ] {
            assert!(args.contains(part), "{part} missing in {args}");
        }
        assert!(!args.contains("-drive"));
        spec.disk = Some("/d.img".into());
        spec.network = Network::User;
        let args = qemu_args(&spec, Accel::Kvm, &paths).join(" ");
        assert!(args.contains("-m 512 "), "{args}");
        assert!(args.contains("-drive file=/d.img,if=virtio,format=raw"));
        assert!(args.contains("-nic user"));
        assert!(args.contains("-accel kvm"));
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "a\r\nb\n\nc\nd\n").unwrap();
        assert_eq!(tail_lines(file.path(), 2), ["c", "d"]);
        assert!(tail_lines(Path::new("/nonexistent"), 3).is_empty());
    }
}
