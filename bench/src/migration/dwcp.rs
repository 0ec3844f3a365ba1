//! The dwcp method of the migration benchmark: a receiving agent in host B, a sending
//! agent in host A that runs the guest as a VM it manages, and `dwcp-agent vm migrate
//! --mode live` between them (HDE over AMST streams), as a user would run it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dwcp_wan::{Host, WanLink};
use serde_json::Value;

use super::{
    case::{CaseResult, GuestShape},
    qemu::{GuestImage, wait_serial_file},
};

/// DWCP port of both agents (each in its own namespace).
const PORT: u16 = 9478;

/// An agent running in one host's namespace, killed on drop (with the QEMU it started).
struct Agent {
    child: Child,
    socket: PathBuf,
    state_dir: PathBuf,
}

impl Agent {
    fn start(binary: &Path, host: &Host, dir: &Path, psk: &Path) -> anyhow::Result<Self> {
        let receive = dir.join("incoming");
        fs::create_dir_all(&receive)?;
        let socket = dir.join("agent.sock");
        let log = fs::File::create(dir.join("agent.log"))?;
        let child = host
            .command(binary)
            .arg("run")
            .arg("--no-probes")
            .args(["--listen", &format!("{}:{PORT}", host.addr)])
            .arg("--state-dir")
            .arg(dir)
            .arg("--control-socket")
            .arg(&socket)
            .arg("--receive-dir")
            .arg(&receive)
            .arg("--psk-file")
            .arg(psk)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("Cannot start {}", binary.display()))?;
        let mut agent = Self {
            child,
            socket,
            state_dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent.socket.exists() {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "The agent in {} exited ({status}); see {}/agent.log",
                    host.netns,
                    dir.display()
                );
            }
            if Instant::now() > deadline {
                bail!("The agent in {} opened no control socket", host.netns);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    /// `dwcp-agent vm --socket S ARGS`; its standard output, or an error with both.
    fn vm(&self, binary: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(binary)
            .arg("vm")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .with_context(|| format!("Cannot run {}", binary.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`vm {}` failed: {}{}",
                args.join(" "),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    fn serial(&self, vm: &str) -> PathBuf {
        self.state_dir.join("vms").join(vm).join("serial.log")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent leaves its VMs running by design: kill their QEMU first.
        if let Ok(entries) = fs::read_dir(self.state_dir.join("vms")) {
            for entry in entries.flatten() {
                if let Ok(pid) = fs::read_to_string(entry.path().join("qemu.pid"))
                    && let Ok(pid) = pid.trim().parse::<i32>()
                {
                    // SAFETY: kill(2) on a pid this benchmark's agent started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// Runs one dwcp live migration of the guest from A to B.
pub fn run(
    agent_binary: &Path,
    link: &WanLink,
    image: &GuestImage,
    shape: &GuestShape,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<CaseResult> {
    fs::create_dir_all(dir)?;
    let psk = dir.join("psk");
    fs::write(&psk, rand::random::<[u8; 32]>())?;
    let source = Agent::start(agent_binary, link.a(), &dir.join("source"), &psk)?;
    let destination = Agent::start(agent_binary, link.b(), &dir.join("destination"), &psk)?;
    let vm = "bench";
    let append = shape.append();
    let creating = Instant::now();
    source.vm(
        agent_binary,
        &[
            "create",
            vm,
            "--memory-mib",
            &shape.mem_mib.to_string(),
            "--kernel",
            &image.kernel.display().to_string(),
            "--initrd",
            &image.initrd.display().to_string(),
            "--append",
            &append,
        ],
    )?;
    source.vm(agent_binary, &["start", vm])?;
    let vm_start = creating.elapsed();
    let serial = source.serial(vm);
    wait_serial_file(
        &serial,
        "source",
        "DWCP-GUEST READY",
        0,
        Duration::from_secs(180),
    )?;
    let from = fs::metadata(&serial).map_or(0, |m| m.len() as usize);
    wait_serial_file(
        &serial,
        "source",
        "DWCP-VERIFY ok",
        from,
        Duration::from_secs(60),
    )?;

    let wire_before = link.stats().a_to_b.bytes;
    let began = Instant::now();
    let out = source.vm(
        agent_binary,
        &[
            "migrate",
            vm,
            "--to",
            &format!("{}:{PORT}", link.b().addr),
            "--mode",
            "live",
            "--timeout",
            &timeout.as_secs().to_string(),
            "--json",
        ],
    );
    let end_to_end = began.elapsed();
    let mut result = CaseResult {
        method: super::case::Method::Dwcp.label().to_owned(),
        wire_bytes: link.stats().a_to_b.bytes.saturating_sub(wire_before),
        end_to_end_ms: Some(end_to_end.as_millis() as u64),
        vm_start_ms: Some(vm_start.as_millis() as u64),
        ..CaseResult::default()
    };
    let report: Value = match out {
        Ok(text) => serde_json::from_str(&text).context("`vm migrate --json` printed no JSON")?,
        Err(error) => {
            result.error = Some(format!("{error:#}"));
            return Ok(result);
        }
    };
    result.completed = report["phase"] == "completed";
    result.total_ms = u64_at(&report, &["progress", "total_time_ms"]);
    result.downtime_ms = u64_at(&report, &["progress", "downtime_ms"]);
    result.guest_downtime_ms = u64_at(&report, &["guest_downtime_ms"]);
    result.ram_transferred = u64_at(&report, &["progress", "transferred_bytes"]);
    result.rounds = u64_at(&report, &["progress", "round"]);
    if !result.completed {
        result.error = Some(format!(
            "The migration ended {}: {}",
            report["phase"], report["error"]
        ));
        return Ok(result);
    }
    match wait_serial_file(
        &destination.serial(vm),
        "destination",
        "DWCP-VERIFY",
        0,
        Duration::from_secs(60),
    ) {
        Ok(line) => result.verify = Some(line),
        Err(error) => result.error = Some(format!("{error:#}")),
    }
    Ok(result)
}
