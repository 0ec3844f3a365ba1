//! The real `dwcp-agent` binary as a benchmark subject: a receiving agent (`run`) in the
//! background and `send --json` runs against it.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::process::{self, Server};

/// Where `cargo build --release -p dwcp-agent` puts the binary in this workspace.
pub fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/dwcp-agent")
}

/// Checks that the agent binary exists, with a message saying how to build it.
pub fn require_binary(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "No dwcp-agent binary at {}: run `cargo build --release -p dwcp-agent` first \
             (or pass --agent PATH)",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("Resolve {}", path.display()))
}

/// The JSON summary `dwcp-agent send --json` prints (the agent's own type).
pub use dwcp_agent::amst::summary::Summary as SendSummary;

/// One `dwcp-agent send` run.
#[derive(Clone, Debug, Serialize)]
pub struct SendRun {
    /// What the sender reported.
    pub summary: SendSummary,
    /// Wall time of the whole process (probe loading, handshake, end-to-end verification).
    pub process_seconds: f64,
    /// The command line.
    pub command: String,
}

/// Runs `dwcp-agent send FILE --to ADDR --psk-file KEY --streams S --block-kib K --json`.
pub fn send(
    agent: &Path,
    file: &Path,
    to: SocketAddr,
    psk_file: &Path,
    streams: &str,
    block_kib: usize,
    log_stem: &Path,
) -> anyhow::Result<SendRun> {
    let request = SendRequest {
        file,
        to,
        psk_file,
        streams,
        block_kib,
        timeout: Duration::from_secs(900),
        congestion: None,
    };
    send_with(Command::new(agent), &request, log_stem)?
        .context("The send did not finish within 900 s and was killed")
}

/// What to send, where, and how.
#[derive(Debug)]
pub struct SendRequest<'a> {
    /// The file.
    pub file: &'a Path,
    /// The receiving agent's data address.
    pub to: SocketAddr,
    /// Pre-shared key file.
    pub psk_file: &'a Path,
    /// `--streams` value.
    pub streams: &'a str,
    /// `--block-kib` value.
    pub block_kib: usize,
    /// Killed after this long.
    pub timeout: Duration,
    /// `--congestion` value (`None`: the kernel's default).
    pub congestion: Option<&'a str>,
}

/// Runs `send ... --json` with `cmd`, a command running the agent binary (possibly
/// inside a network namespace), and reads its summary; `None` when it was killed at the
/// request's timeout.
pub fn send_with(
    mut cmd: Command,
    request: &SendRequest<'_>,
    log_stem: &Path,
) -> anyhow::Result<Option<SendRun>> {
    let SendRequest {
        file,
        to,
        psk_file,
        streams,
        block_kib,
        timeout,
        congestion,
    } = *request;
    cmd.arg("send")
        .arg(file)
        .arg("--to")
        .arg(to.to_string())
        .arg("--psk-file")
        .arg(psk_file)
        .args(["--streams", streams, "--block-kib", &block_kib.to_string()])
        .arg("--json");
    if let Some(cc) = congestion {
        cmd.args(["--congestion", cc]);
    }
    let Some(done) = process::run_capped(&mut cmd, log_stem, timeout)? else {
        return Ok(None);
    };
    let command = process::display(&cmd);
    if !done.status.success() {
        bail!(
            "`{command}` failed ({}):\n{}",
            done.status,
            done.logs.stderr_tail()
        );
    }
    let json = done
        .stdout
        .find('{')
        .map_or("", |start| &done.stdout[start..]);
    let summary: SendSummary = serde_json::from_str(json).with_context(|| {
        format!(
            "`{command}` printed no JSON summary; stdout was:\n{}",
            done.stdout
        )
    })?;
    Ok(Some(SendRun {
        summary,
        process_seconds: done.wall.as_secs_f64(),
        command,
    }))
}

/// A receiving agent (`dwcp-agent run --receive-dir ...`) on loopback.
#[derive(Debug)]
pub struct Receiver {
    server: Server,
    /// DWCP data address.
    pub data_addr: SocketAddr,
    /// Metrics address.
    pub http_addr: SocketAddr,
}

/// Files the receiving agent is started with.
#[derive(Debug)]
pub struct ReceiverFiles<'a> {
    /// Agent configuration (empty: defaults, so no host file is read).
    pub config: &'a Path,
    /// Receive directory.
    pub dir: &'a Path,
    /// Pre-shared key file.
    pub psk: &'a Path,
    /// Stem of the log files.
    pub log_stem: &'a Path,
}

impl Receiver {
    /// Starts the agent on loopback and waits until its data port listens.
    pub fn start(agent: &Path, files: &ReceiverFiles<'_>) -> anyhow::Result<Self> {
        let data_addr = SocketAddr::from(([127, 0, 0, 1], process::free_port()?));
        let http_addr = SocketAddr::from(([127, 0, 0, 1], process::free_port()?));
        Self::spawn(Command::new(agent), data_addr, http_addr, files)
    }

    /// Starts `run` with `cmd`, a command running the agent binary (possibly inside a
    /// network namespace), listening on `data_addr` and serving metrics on `http_addr`.
    pub fn spawn(
        mut cmd: Command,
        data_addr: SocketAddr,
        http_addr: SocketAddr,
        files: &ReceiverFiles<'_>,
    ) -> anyhow::Result<Self> {
        cmd.arg("run")
            .arg("--config")
            .arg(files.config)
            .arg("--receive-dir")
            .arg(files.dir)
            .arg("--psk-file")
            .arg(files.psk)
            .args(["--listen", &data_addr.to_string()])
            .args(["--http-addr", &http_addr.to_string()]);
        let mut server = Server::spawn(&mut cmd, "the receiving dwcp-agent", files.log_stem)?;
        server.wait_listening(data_addr.port(), Duration::from_secs(60))?;
        Ok(Self {
            server,
            data_addr,
            http_addr,
        })
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.server.command
    }

    /// Kernel-measured CPU seconds of all the agent's threads so far, from `/metrics`
    /// (`None` when its probes are not attached).
    pub fn cpu_seconds(&self) -> anyhow::Result<Option<f64>> {
        let body = http_get(self.http_addr, "/metrics")?;
        Ok(cpu_from_metrics(&body))
    }

    /// Stops it with SIGTERM.
    pub fn stop(self) -> anyhow::Result<()> {
        let status = self.server.terminate(Duration::from_secs(15))?;
        if !status.success() {
            eprintln!("Note: the receiving agent exited with {status}");
        }
        Ok(())
    }
}

/// Sum of `dwcp_agent_cpu_seconds_total` if `dwcp_probe_up` is 1.
pub fn cpu_from_metrics(body: &str) -> Option<f64> {
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let up = body
        .lines()
        .find(|l| l.starts_with("dwcp_probe_up"))
        .and_then(value);
    if up != Some(1.0) {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| l.starts_with("dwcp_agent_cpu_seconds_total{"))
            .filter_map(value)
            .sum(),
    )
}

/// A minimal HTTP/1.0 GET (so the body is never chunked); returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("Connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: a request split over several segments is harder on small servers.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("Read http://{addr}{path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("Malformed response from http://{addr}{path}"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "http://{addr}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_thread_cpu_when_probes_are_up() {
        let body = "# HELP x\ndwcp_probe_up 1\n\
            dwcp_agent_cpu_seconds_total{thread=\"dwcp-recv\"} 1.5\n\
            dwcp_agent_cpu_seconds_total{thread=\"dwcp-worker\"} 0.25\n\
            dwcp_agent_cpu_seconds_total_created 9\n";
        assert_eq!(cpu_from_metrics(body), Some(1.75));
        assert_eq!(cpu_from_metrics("dwcp_probe_up 0\n"), None);
    }

    #[test]
    fn parses_the_send_summary() {
        let json = r#"{"bytes": 10, "seconds": 0.5, "goodput_bps": 160.0, "streams": 4,
            "kernel_tx_bytes": 12, "retransmits": 0, "cpu_seconds": 0.1, "digest": "ab",
            "resumed_blocks": 0, "resent_blocks": 0, "failed_streams": 0}"#;
        let s: SendSummary = serde_json::from_str(json).unwrap();
        assert_eq!((s.bytes, s.streams, s.cpu_seconds), (10, 4, Some(0.1)));
    }
}
