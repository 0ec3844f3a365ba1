//! Child processes for benchmarks that run real binaries: free ports, waiting for a
//! listener, running a command with its output in files, and stopping servers.

use std::{
    fs::File,
    io::ErrorKind,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A loopback port nobody listens on right now (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("Bind a probe listener")?;
    Ok(listener.local_addr()?.port())
}

/// The command as a shell line (arguments with spaces or quotes are single-quoted).
pub fn display(cmd: &Command) -> String {
    let mut words = vec![quote(&cmd.get_program().to_string_lossy())];
    words.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Files receiving a child's standard output and error: `<stem>.stdout`, `<stem>.stderr`.
#[derive(Clone, Debug)]
pub struct Logs {
    /// Standard output file.
    pub stdout: PathBuf,
    /// Standard error file.
    pub stderr: PathBuf,
}

impl Logs {
    /// Logs named after `stem` (`.stdout` and `.stderr` are appended to it).
    pub fn new(stem: &Path) -> Self {
        let with = |ext: &str| {
            let mut name = stem.as_os_str().to_owned();
            name.push(ext);
            PathBuf::from(name)
        };
        Self {
            stdout: with(".stdout"),
            stderr: with(".stderr"),
        }
    }

    fn attach(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let create = |p: &Path| File::create(p).with_context(|| format!("Create {}", p.display()));
        cmd.stdin(Stdio::null())
            .stdout(create(&self.stdout)?)
            .stderr(create(&self.stderr)?);
        Ok(())
    }

    /// The last lines of standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Standard output.
    pub stdout: String,
    /// Where the output went.
    pub logs: Logs,
}

/// Runs `cmd` to completion (killed after `timeout`), output into files next to `stem`.
pub fn run(cmd: &mut Command, stem: &Path, timeout: Duration) -> anyhow::Result<Finished> {
    let what = display(cmd);
    run_capped(cmd, stem, timeout)?
        .with_context(|| format!("`{what}` did not finish within {timeout:?} and was killed"))
}

/// Runs `cmd`, output into files next to `stem`; kills it after `cap` and returns `None`
/// then (a cap is an outcome, not an error).
pub fn run_capped(
    cmd: &mut Command,
    stem: &Path,
    cap: Duration,
) -> anyhow::Result<Option<Finished>> {
    let logs = Logs::new(stem);
    logs.attach(cmd)?;
    let what = display(cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("Cannot start `{what}`"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // A waiting thread gives the exit time precisely (no polling interval in the wall time).
    let waiter = thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((status, start.elapsed()));
    });
    let (status, wall) = match rx.recv_timeout(cap) {
        Ok(done) => done,
        Err(_) => {
            signal(pid, libc::SIGKILL);
            let _ = waiter.join();
            return Ok(None);
        }
    };
    let _ = waiter.join();
    let status = status.with_context(|| format!("Waiting for `{what}`"))?;
    let stdout = std::fs::read_to_string(&logs.stdout).unwrap_or_default();
    Ok(Some(Finished {
        status,
        wall,
        stdout,
        logs,
    }))
}

/// Sends `sig` to process `pid` (a child or descendant of ours); a process that has
/// exited meanwhile is not an error.
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours. `pid` was
        // a child or descendant of ours not yet reaped when we looked; at worst it has
        // exited since and the call fails with ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// A background server process, killed if dropped while running.
#[derive(Debug)]
pub struct Server {
    child: Child,
    name: String,
    /// Where its output goes.
    pub logs: Logs,
    /// The command line.
    pub command: String,
}

impl Server {
    /// Starts `cmd` in the background, output into files next to `stem`.
    pub fn spawn(cmd: &mut Command, name: &str, stem: &Path) -> anyhow::Result<Self> {
        let logs = Logs::new(stem);
        logs.attach(cmd)?;
        let command = display(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("Cannot start {name}: `{command}`"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            logs,
            command,
        })
    }

    /// Waits until something listens on TCP `port` (any address), failing if the server
    /// exits first or `timeout` passes. Reads `/proc/net/tcp*`, so no connection is made
    /// (a probe connection would use up a one-shot `iperf3 -s -1`).
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening on port {port}:\n{}",
                    self.name,
                    self.logs.stderr_tail()
                );
            }
            if is_listening(Some(self.child.id()), port)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not listening on port {port} after {timeout:?}:\n{}",
                    self.name,
                    self.logs.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the process to exit; `None` if it still runs.
    pub fn wait_for(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `grace` for the process to exit by itself, then kills it.
    pub fn wait_or_kill(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        Ok(self.child.wait()?)
    }

    /// Sends SIGTERM and waits up to `grace` (then kills).
    pub fn terminate(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
        }
        self.wait_or_kill(grace)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a TCP socket listens on `port` (IPv4 or IPv6, any address) in the network
/// namespace of process `pid` (this process's when `None`): a server started inside
/// another namespace is looked for there.
fn is_listening(pid: Option<u32>, port: u16) -> anyhow::Result<bool> {
    let base = pid.map_or_else(|| "/proc/self/net".to_owned(), |p| format!("/proc/{p}/net"));
    for table in [format!("{base}/tcp"), format!("{base}/tcp6")] {
        let text = match std::fs::read_to_string(&table) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("Read {table}")),
        };
        if listening_in(&text, port) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a `/proc/net/tcp`-format table has a LISTEN (`0A`) row on `port`.
fn listening_in(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        let local_port = local
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && state == Some("0A")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_in_proc_tables() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000\n   \
            1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000\n";
        assert!(listening_in(table, 8080));
        assert!(!listening_in(table, 8081), "established, not listening");
        assert!(!listening_in(table, 80));
    }

    #[test]
    fn sees_a_real_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(None, port).unwrap());
        assert!(is_listening(Some(std::process::id()), port).unwrap());
        drop(listener);
        assert!(!is_listening(None, port).unwrap());
    }

    #[test]
    fn log_names_append_to_the_stem() {
        let logs = Logs::new(Path::new("/r/round-0.5-iperf3-server"));
        assert_eq!(logs.stdout, Path::new("/r/round-0.5-iperf3-server.stdout"));
        assert_eq!(logs.stderr, Path::new("/r/round-0.5-iperf3-server.stderr"));
    }

    #[test]
    fn quotes_only_what_needs_it() {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-c", "127.0.0.1", "a b", "it's"]);
        assert_eq!(display(&cmd), r"iperf3 -c 127.0.0.1 'a b' 'it'\''s'");
    }
}
