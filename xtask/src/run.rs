//! `cargo xtask run`: the main job. Sets up the machine, builds the agent in release,
//! starts it as a receiving agent, and demonstrates a transfer on an embedded default: a
//! 512 MiB memory-like image (zero pages, repeated pages, pages that differ a little,
//! noise) sent agent to agent with `--streams auto`, then again as an HDE-coded stream.
//! The agent then keeps running in the foreground (metrics on :9477) until Ctrl-C.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup, sys};

/// Where the agent serves its metrics by default.
const METRICS_URL: &str = "http://127.0.0.1:9477/metrics";
/// The demo's data port.
const DEMO_LISTEN: &str = "127.0.0.1:9478";
/// Size of the demo image.
const DEMO_MIB: usize = 512;

/// Options of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Do not run `cargo xtask setup` first.
    #[arg(long)]
    pub no_setup: bool,
    /// Skip the transfer demo: only run the agent.
    #[arg(long)]
    pub no_demo: bool,
    /// Arguments for `dwcp-agent run` (after `--`).
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub agent_args: Vec<String>,
}

/// The running agent, stopped (SIGTERM, then waited for) when dropped.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let _ = unsafe { libc::kill(self.0.id().cast_signed(), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Builds the agent, runs the demo against it, then waits for it (Ctrl-C stops it).
pub fn run(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        setup::run(&setup::Options::default())?;
    }
    let root = sys::workspace_root()?;
    cmd::run(&mut cmd::cargo(
        &root,
        ["build", "--release", "-p", "dwcp-agent"],
    ))?;
    let agent = sys::target_dir(&root).join("release").join("dwcp-agent");
    let demo_dir = sys::target_dir(&root).join("dwcp-demo");
    let incoming = demo_dir.join("incoming");
    std::fs::create_dir_all(&incoming)
        .with_context(|| format!("Cannot create {}", incoming.display()))?;
    let psk = demo_dir.join("psk");
    std::fs::write(&psk, b"dwcp demo key: local loopback only")
        .with_context(|| format!("Cannot write {}", psk.display()))?;

    let mut command = cmd::new(&agent, ["run"]);
    if !opts.no_demo {
        command.args(["--listen", DEMO_LISTEN]);
        command.arg("--receive-dir").arg(&incoming);
        command.arg("--psk-file").arg(&psk);
    }
    command.args(&opts.agent_args);
    println!("$ {}", cmd::display(&command));
    let mut child = AgentProcess(
        command
            .spawn()
            .with_context(|| format!("Cannot start {}", agent.display()))?,
    );
    if !opts.no_demo {
        demo(&agent, &opts.agent_args, &demo_dir, &psk, &mut child)?;
    }
    println!(
        "metrics: {METRICS_URL} (unless --http-addr or the config's http.addr moves them); \
         the agent runs in the foreground, Ctrl-C stops it"
    );
    let status = child.0.wait().context("Cannot wait for the agent")?;
    if status.success() || status.code().is_none() {
        Ok(())
    } else {
        bail!("dwcp-agent exited with {status}")
    }
}

/// Sends the demo image twice (raw with `--streams auto`, then HDE-coded).
fn demo(
    agent: &Path,
    agent_args: &[String],
    dir: &Path,
    psk: &Path,
    child: &mut AgentProcess,
) -> Result<()> {
    let image = dir.join("vm-memory.img");
    if !image.is_file() {
        println!(
            "demo: writing a {DEMO_MIB} MiB memory-like image to {}",
            image.display()
        );
        write_image(&image)?;
    }
    wait_ready(child, &http_addr(agent_args))?;
    for (label, extra) in [
        (
            "raw blocks, adaptive stream count",
            vec!["--streams", "auto"],
        ),
        (
            "HDE-coded stream, 4 streams",
            vec!["--streams", "4", "--codec", "hde"],
        ),
    ] {
        println!("\ndemo: {label}");
        let mut send = cmd::new(agent, ["send"]);
        send.arg(&image)
            .args(["--to", DEMO_LISTEN])
            .arg("--psk-file")
            .arg(psk)
            .args(&extra);
        cmd::run(&mut send).with_context(|| format!("Demo transfer ({label}) failed"))?;
    }
    println!(
        "\ndemo: the received copy is {}",
        dir.join("incoming").join("vm-memory.img").display()
    );
    Ok(())
}

/// The agent's HTTP address: `--http-addr` among the extra arguments, else the default.
fn http_addr(agent_args: &[String]) -> String {
    agent_args
        .iter()
        .position(|a| a == "--http-addr")
        .and_then(|i| agent_args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9477".to_owned())
}

/// Waits until the agent serves HTTP (it starts its receiver before that), without
/// touching the data port (a probe there would be logged as a refused handshake).
fn wait_ready(child: &mut AgentProcess, http: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().context("Cannot check the agent")? {
            bail!("dwcp-agent exited with {status} before it was ready");
        }
        if std::net::TcpStream::connect(http).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("dwcp-agent did not serve {http} within 30 s")
}

/// Writes the deterministic demo image: per 16 pages, 6 zero pages, 4 copies of a few
/// common pages, 3 near-copies with one changed word, 3 pages of noise.
fn write_image(path: &PathBuf) -> Result<()> {
    const PAGE: usize = 4096;
    let file = File::create(path).with_context(|| format!("Cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = move || {
        // xorshift64*: deterministic, fast, good enough for incompressible filler.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let common: Vec<Vec<u8>> = (0..8u8)
        .map(|k| (0..PAGE).map(|i| (i as u8).wrapping_mul(k | 1)).collect())
        .collect();
    let mut page = vec![0u8; PAGE];
    for n in 0..DEMO_MIB * 256 {
        match n % 16 {
            0..=5 => page.fill(0),
            6..=9 => page.copy_from_slice(&common[n % common.len()]),
            10..=12 => {
                page.copy_from_slice(&common[(n / 16) % common.len()]);
                let at = (noise() as usize % (PAGE / 8)) * 8;
                page[at..at + 8].copy_from_slice(&noise().to_le_bytes());
            }
            _ => {
                for chunk in page.as_chunks_mut::<8>().0 {
                    *chunk = noise().to_le_bytes();
                }
            }
        }
        out.write_all(&page)?;
    }
    out.flush()?;
    Ok(())
}
