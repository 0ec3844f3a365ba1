//! Helpers of the VM tests: the test guest, the CLI, a VM-capable agent, serial logs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The test guest built by `cargo xtask guest`: (kernel, initrd).
pub fn guest() -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("DWCP_CACHE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dwcp-cache"),
        PathBuf::from,
    );
    let dir = cache.join("guest");
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.gz");
    assert!(
        kernel.is_file() && initrd.is_file(),
        "No test guest in {}: run `cargo xtask guest`",
        dir.display()
    );
    (
        std::path::absolute(kernel).expect("absolute"),
        std::path::absolute(initrd).expect("absolute"),
    )
}

/// What one CLI call printed and how it ended.
pub struct CliOutput {
    /// Exit status 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// The JSON it printed; fails the test if the call failed.
    pub fn json(&self) -> Value {
        assert!(self.ok, "CLI failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("CLI printed no JSON ({e}): {}", self.stdout))
    }
}

/// Runs `dwcp-agent vm --socket <socket> <args>`.
pub fn cli(socket: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(super::agent_bin())
        .arg("vm")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run dwcp-agent vm");
    CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A VM-capable agent on `state_dir`, with its control socket next to it.
pub fn start_agent(state_dir: &Path) -> super::Agent {
    let socket = state_dir.join("agent.sock");
    let listen = format!("127.0.0.1:{}", super::free_port());
    let mut agent = super::Agent::start(
        &[
            "--no-probes",
            "--listen",
            &listen,
            "--state-dir",
            state_dir.to_str().expect("utf-8"),
            "--control-socket",
            socket.to_str().expect("utf-8"),
        ],
        |_| {},
    );
    agent.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "No control socket: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// Kills every QEMU whose pidfile is under a state directory when dropped, so a failing
/// test leaves no VM behind.
pub struct QemuReaper(pub PathBuf);

impl Drop for QemuReaper {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.0.join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            if let Some(pid) = pid_of(&vm.path()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The live QEMU pid from a VM directory's pidfile.
pub fn pid_of(vm_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(vm_dir.join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    exe.to_string_lossy().contains("qemu").then_some(pid)
}

/// The guest's serial console log so far.
pub fn serial(state_dir: &Path, vm: &str) -> String {
    std::fs::read_to_string(state_dir.join("vms").join(vm).join("serial.log")).unwrap_or_default()
}

/// Guest boot under TCG on a loaded 2-core machine can take long: generous bound.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Waits until the guest's serial log holds `needle`; returns the wait.
pub fn wait_serial(state_dir: &Path, vm: &str, needle: &str, timeout: Duration) -> Duration {
    let begun = Instant::now();
    loop {
        let text = serial(state_dir, vm);
        if text.contains(needle) {
            return begun.elapsed();
        }
        assert!(
            begun.elapsed() < timeout,
            "No {needle:?} on {vm}'s serial console within {timeout:?}; it says:\n{}",
            text.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The latest heartbeat time (guest seconds since boot, `t=12.34`) printed so far.
pub fn last_heartbeat(state_dir: &Path, vm: &str) -> Option<f64> {
    serial(state_dir, vm)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DWCP-GUEST HEARTBEAT t="))
        .filter_map(|t| t.trim().parse::<f64>().ok())
        .reduce(f64::max)
}

/// Waits until the heartbeat time moves past `after`.
pub fn wait_heartbeat_after(state_dir: &Path, vm: &str, after: Option<f64>) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(beat) = last_heartbeat(state_dir, vm).filter(|b| after.is_none_or(|a| *b > a)) {
            return beat;
        }
        assert!(
            Instant::now() < deadline,
            "Heartbeats did not continue past {after:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `vm create` with the test guest.
pub fn create(socket: &Path, name: &str) -> Value {
    let (kernel, initrd) = guest();
    cli(
        socket,
        &[
            "create",
            name,
            "--memory-mib",
            "256",
            "--kernel",
            kernel.to_str().expect("utf-8"),
            "--initrd",
            initrd.to_str().expect("utf-8"),
            "--append",
            "console=ttyS0 dwcp.workload=idle",
        ],
    )
    .json()
}

/// `vm status NAME` as JSON.
pub fn state_of(socket: &Path, name: &str) -> Value {
    cli(socket, &["status", name]).json()
}
