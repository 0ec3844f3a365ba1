//! A small synchronous QMP client (QEMU Machine Protocol: one JSON object per line over
//! a Unix socket), enough for the corpus: the `qmp_capabilities` handshake, commands
//! with their `return` or `error` (events in between are skipped), and waiting for a
//! migration to complete.
//!
//! xtask cannot use the agent's asynchronous client (xtask does not depend on the
//! agent), and needs only these few exchanges.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// How long one reply may take (a `pmemsave` of several GiB writes that much first).
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// A connected QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the socket at `path` (retrying while QEMU creates it, up to
    /// `timeout`), reads the greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("Cannot connect to QMP at {}", path.display()));
                }
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QEMU did not greet with a QMP banner: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` and returns its `return` value; a QMP `error`
    /// becomes an error naming the command.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut line = serde_json::to_vec(&json!({"execute": command, "arguments": arguments}))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("Cannot send QMP command {command}"))?;
        loop {
            let message = self.read_message()?;
            if message.get("event").is_some() {
                // Events (STOP, RESUME, MIGRATION...) say nothing the corpus needs.
                continue;
            }
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = message.get("error") {
                bail!(
                    "QMP command {command} failed: {}",
                    err.get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no description")
                );
            }
            bail!("Unexpected QMP message while waiting for {command}: {message}");
        }
    }

    /// Polls `query-migrate` until the migration completed (Ok) or failed/was
    /// cancelled (error), for at most `timeout`.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.execute("query-migrate", json!({}))?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(info),
                Some(s @ ("failed" | "cancelled")) => bail!(
                    "QEMU's migration {s}: {}",
                    info.get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no description")
                ),
                _ if Instant::now() >= deadline => {
                    bail!("QEMU's migration did not complete in {timeout:?}: {info}")
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("Cannot read from QMP")?;
        if n == 0 {
            bail!("QEMU closed the QMP connection");
        }
        serde_json::from_str(&line).with_context(|| format!("QEMU sent invalid JSON: {line}"))
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// QEMU without a machine: answers QMP at once, runs no guest.
    struct Bare(Child);

    impl Drop for Bare {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn talks_to_a_real_qemu_and_reports_its_errors() {
        let dir = tempfile_dir();
        let socket = dir.join("qmp.sock");
        let child = Command::new(super::super::qemu::QEMU)
            .args([
                "-machine",
                "none",
                "-display",
                "none",
                "-nodefaults",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 is installed by `cargo xtask setup`");
        let _qemu = Bare(child);
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(20)).unwrap();
        let version = qmp.execute("query-version", json!({})).unwrap();
        assert!(version["qemu"]["major"].as_u64().is_some(), "{version}");
        let err = qmp.execute("no-such-command", json!({})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("QMP command no-such-command failed"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let dir = tempfile_dir();
        let Err(err) = Qmp::connect(&dir.join("absent.sock"), Duration::from_millis(100)) else {
            panic!("connected to nothing");
        };
        assert!(
            err.to_string().starts_with("Cannot connect to QMP"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-qmp-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher as _, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }
}
