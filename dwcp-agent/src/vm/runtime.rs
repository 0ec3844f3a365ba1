//! One running QEMU: launching it until QMP answers, and noticing when it ends.

use std::{path::Path, sync::Arc, time::Duration};

use super::{
    accel::Accel,
    process::{QemuProcess, qemu_args, tail_lines},
    qmp::{DEFAULT_TIMEOUT, QmpClient},
    spec::VmSpec,
    store::VmPaths,
};

/// A QEMU process and its QMP session.
#[derive(Debug)]
pub struct Runtime {
    /// The process.
    pub process: Arc<QemuProcess>,
    /// Its monitor.
    pub qmp: Arc<QmpClient>,
    /// The task watching for its end (aborted when the runtime is dropped).
    pub watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

/// How a QEMU process ended, as seen by [`wait_for_exit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReport {
    /// QEMU announced a guest-initiated shutdown (the guest powered off).
    pub guest_shutdown: bool,
    /// Exit status, QEMU's last words and the guest's last serial lines.
    pub reason: String,
}

/// Serial lines quoted in failure reasons.
const SERIAL_LINES_IN_REASON: usize = 3;

/// Launches QEMU for `spec` and waits (up to `timeout`) until its QMP session is up and
/// the guest runs. On failure the process is killed and the error says why.
pub async fn launch(
    qemu: &Path,
    spec: &VmSpec,
    accel: Accel,
    paths: &VmPaths,
    timeout: Duration,
) -> Result<(Arc<QemuProcess>, Arc<QmpClient>), String> {
    launch_with(qemu, spec, accel, paths, timeout, None).await
}

/// Like [`launch`], but with `incoming` (a unix socket path) QEMU waits for an incoming
/// migration there (`-incoming unix:PATH`) and must report status `inmigrate`.
pub async fn launch_with(
    qemu: &Path,
    spec: &VmSpec,
    accel: Accel,
    paths: &VmPaths,
    timeout: Duration,
    incoming: Option<&Path>,
) -> Result<(Arc<QemuProcess>, Arc<QmpClient>), String> {
    let mut args = qemu_args(spec, accel, paths);
    let expected = match incoming {
        Some(socket) => {
            let _ = std::fs::remove_file(socket);
            args.push("-incoming".into());
            args.push(format!("unix:{}", socket.display()));
            "inmigrate"
        }
        None => "running",
    };
    let _ = std::fs::remove_file(&paths.serial);
    let process =
        Arc::new(QemuProcess::spawn(qemu, &args, paths).map_err(|e| crate::error_chain(&e))?);
    let qmp = match connect(&process, paths, timeout).await {
        Ok(qmp) => qmp,
        Err(reason) => {
            process.kill();
            let _ = process.wait_exit(Duration::from_secs(5)).await;
            return Err(reason);
        }
    };
    let status = qmp.query_status().await;
    match status {
        Ok(status) if status == expected => Ok((process, Arc::new(qmp))),
        Ok(status) => {
            process.kill();
            Err(format!("QEMU started but reports status {status:?}"))
        }
        Err(e) => {
            process.kill();
            Err(crate::error_chain(&e))
        }
    }
}

/// Connects to the QMP socket of `process`, retrying while QEMU sets it up.
pub async fn connect(
    process: &QemuProcess,
    paths: &VmPaths,
    timeout: Duration,
) -> Result<QmpClient, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !process.is_alive() {
            return Err(describe_exit(process, paths));
        }
        match QmpClient::connect(&paths.qmp, DEFAULT_TIMEOUT).await {
            Ok(qmp) => return Ok(qmp),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "QMP not reachable within {timeout:?}: {}",
                    crate::error_chain(&e)
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Resolves when QEMU has exited (its QMP session closed or its pid is gone), saying how.
/// A QEMU that closes QMP but keeps running is killed: it can no longer be controlled.
pub async fn wait_for_exit(
    process: Arc<QemuProcess>,
    qmp: Arc<QmpClient>,
    paths: VmPaths,
) -> ExitReport {
    let mut events = qmp.events();
    let mut guest_shutdown = false;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.name == "SHUTDOWN" => {
                    guest_shutdown = event.data["guest"].as_bool().unwrap_or(false);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            () = qmp.closed() => break,
            _ = poll.tick() => if !process.is_alive() { break },
        }
    }
    if !process.wait_exit(Duration::from_secs(5)).await {
        process.kill();
        let _ = process.wait_exit(Duration::from_secs(5)).await;
        return ExitReport {
            guest_shutdown: false,
            reason: format!(
                "QEMU (pid {}) closed its QMP connection while running; killed it",
                process.pid
            ),
        };
    }
    ExitReport {
        guest_shutdown,
        reason: describe_exit(&process, &paths),
    }
}

/// The exit description of `process` plus the guest's last serial lines.
pub fn describe_exit(process: &QemuProcess, paths: &VmPaths) -> String {
    let mut reason = process.exit_description();
    let serial = tail_lines(&paths.serial, SERIAL_LINES_IN_REASON);
    if !serial.is_empty() {
        reason.push_str("; last serial lines: ");
        reason.push_str(&serial.join(" | "));
    }
    reason
}
