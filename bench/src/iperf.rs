//! iperf3 as the peer: a one-shot server and a client moving a fixed byte count over
//! N parallel streams, read from its JSON output.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::process::{self, Server};

/// One iperf3 run.
#[derive(Clone, Debug, Serialize)]
pub struct IperfRun {
    /// Parallel streams (`-P`).
    pub streams: usize,
    /// `end.sum_received.bits_per_second`.
    pub bits_per_second: f64,
    /// `end.sum_received.bytes`.
    pub bytes: u64,
    /// `end.sum_received.seconds`.
    pub seconds: f64,
    /// `end.sum_sent.retransmits` (the client's kernel count).
    pub retransmits: Option<u64>,
    /// `end.cpu_utilization_percent.host_total` (client process, getrusage, % of one core).
    pub client_cpu_percent: Option<f64>,
    /// `end.cpu_utilization_percent.remote_total` (server process).
    pub server_cpu_percent: Option<f64>,
    /// Server and client command lines.
    pub commands: [String; 2],
}

impl IperfRun {
    /// Client CPU seconds per GB received (from its own getrusage percentage).
    pub fn client_cpu_per_gb(&self) -> Option<f64> {
        self.client_cpu_percent
            .map(|p| p / 100.0 * self.seconds / (self.bytes as f64 / 1e9))
    }

    /// Server CPU seconds per GB received.
    pub fn server_cpu_per_gb(&self) -> Option<f64> {
        self.server_cpu_percent
            .map(|p| p / 100.0 * self.seconds / (self.bytes as f64 / 1e9))
    }
}

/// `iperf3 --version`'s first line, or why not.
pub fn version() -> anyhow::Result<String> {
    let out = Command::new("iperf3")
        .arg("--version")
        .output()
        .context("Cannot run iperf3 (install it: `apt-get install iperf3`)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("iperf3 (unknown version)")
        .trim()
        .to_owned())
}

/// `iperf3 -s -1 -p PORT` plus `iperf3 -c 127.0.0.1 -p PORT -P N -n BYTES -J`; their
/// output goes to `<log_stem>-server.*` and `<log_stem>-client.*`.
pub fn run(streams: usize, bytes: u64, log_stem: &Path) -> anyhow::Result<IperfRun> {
    run_local(
        Command::new("iperf3"),
        Command::new("iperf3"),
        streams,
        bytes,
        log_stem,
    )
}

/// File to file as `streams` separate iperf3 pairs running at once, each pair one stream
/// moving its share of `bytes` and each server writing its own file in `target_dir`: the
/// same page-cache reads and fresh receive-directory pages as a file transfer over
/// `streams` streams. (`-F` with `-P N` is not: every server stream writes the same file
/// from its start, so it fills only 1/N of the pages.) Every client reads `source` from
/// its start, from the page cache.
///
/// The aggregate rate is all bytes over the longest pair's own measured seconds. Pairs
/// start a few milliseconds apart, so this slightly overstates the peer, never dwcp.
pub fn run_file_pairs(
    streams: usize,
    bytes: u64,
    (source, target_dir): (&Path, &Path),
    log_stem: &Path,
) -> anyhow::Result<IperfRun> {
    let pairs = streams.max(1);
    let share = |i: usize| bytes / pairs as u64 + u64::from(i == 0) * (bytes % pairs as u64);
    let runs: Vec<anyhow::Result<IperfRun>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..pairs)
            .map(|i| {
                let target = target_dir.join(format!("iperf3-files-{i}.bin"));
                let mut stem = log_stem.as_os_str().to_owned();
                stem.push(format!("-pair-{i}"));
                scope.spawn(move || {
                    let mut server = Command::new("iperf3");
                    server.arg("-F").arg(&target);
                    let mut client = Command::new("iperf3");
                    client.arg("-F").arg(source);
                    run_local(server, client, 1, share(i), Path::new(&stem))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("An iperf3 pair's thread panicked")))
            })
            .collect()
    });
    let runs = runs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    combine(&runs).context("No iperf3 pair ran")
}

/// One run standing for `runs` that ran at the same time: bytes summed over the longest
/// run's seconds, CPU summed, retransmits summed.
fn combine(runs: &[IperfRun]) -> Option<IperfRun> {
    let first = runs.first()?;
    let bytes: u64 = runs.iter().map(|r| r.bytes).sum();
    let seconds = runs.iter().map(|r| r.seconds).fold(0.0_f64, f64::max);
    let cpu = |f: fn(&IperfRun) -> Option<f64>| {
        runs.iter()
            .map(|r| f(r).map(|p| p / 100.0 * r.seconds))
            .sum::<Option<f64>>()
            .filter(|_| seconds > 0.0)
            .map(|s| s / seconds * 100.0)
    };
    let [server, client] = &first.commands;
    Some(IperfRun {
        streams: runs.iter().map(|r| r.streams).sum(),
        bits_per_second: if seconds > 0.0 {
            bytes as f64 * 8.0 / seconds
        } else {
            0.0
        },
        bytes,
        seconds,
        retransmits: runs.iter().map(|r| r.retransmits).sum(),
        client_cpu_percent: cpu(|r| r.client_cpu_percent),
        server_cpu_percent: cpu(|r| r.server_cpu_percent),
        commands: [
            format!(
                "{server}   # pair 1 of {}, each pair its own port and file",
                runs.len()
            ),
            format!(
                "{client}   # pair 1 of {}, each moving its share of the bytes",
                runs.len()
            ),
        ],
    })
}

/// A one-shot `server` and a `client` on loopback moving `bytes` over `streams`.
fn run_local(
    server: Command,
    client: Command,
    streams: usize,
    bytes: u64,
    log_stem: &Path,
) -> anyhow::Result<IperfRun> {
    let ends = Ends {
        server: Some(server),
        client,
        server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: process::free_port()?,
        congestion: None,
    };
    run_between(
        ends,
        streams,
        Amount::Bytes(bytes),
        log_stem,
        Duration::from_secs(900),
    )
}

/// How much one iperf3 run moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// This many bytes (`-n`).
    Bytes(u64),
    /// For this many seconds (`-t`).
    Seconds(u64),
}

/// Where the two iperf3 processes run.
#[derive(Debug)]
pub struct Ends {
    /// A command running `iperf3` on the server side (`None`: an `iperf3 -s` the user
    /// started there already).
    pub server: Option<Command>,
    /// A command running `iperf3` on the client side.
    pub client: Command,
    /// The server's address as the client reaches it.
    pub server_ip: IpAddr,
    /// The server's port.
    pub port: u16,
    /// Congestion control for the client's streams (`-C`; `None`: the kernel's default).
    pub congestion: Option<String>,
}

/// Runs a one-shot server (unless one is already there) and a client moving `amount`
/// over `streams` streams, killed after `timeout`.
pub fn run_between(
    ends: Ends,
    streams: usize,
    amount: Amount,
    log_stem: &Path,
    timeout: Duration,
) -> anyhow::Result<IperfRun> {
    let Ends {
        server: server_cmd,
        client: mut client_cmd,
        server_ip,
        port,
        congestion,
    } = ends;
    let stem = |what: &str| {
        let mut name = log_stem.as_os_str().to_owned();
        name.push(what);
        std::path::PathBuf::from(name)
    };
    let server = match server_cmd {
        Some(mut cmd) => {
            cmd.args(["-s", "-1", "-p", &port.to_string()]);
            let mut server = Server::spawn(&mut cmd, "the iperf3 server", &stem("-server"))?;
            server.wait_listening(port, Duration::from_secs(10))?;
            Some(server)
        }
        None => None,
    };
    client_cmd.args([
        "-c",
        &server_ip.to_string(),
        "-p",
        &port.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ]);
    match amount {
        Amount::Bytes(n) => client_cmd.args(["-n", &n.to_string()]),
        Amount::Seconds(t) => client_cmd.args(["-t", &t.to_string()]),
    };
    if let Some(cc) = &congestion {
        client_cmd.args(["-C", cc]);
    }
    let client_line = process::display(&client_cmd);
    let reused_server = server.is_none();
    let mut attempt = 1;
    let done = loop {
        let done = process::run(&mut client_cmd, &stem("-client"), timeout)?;
        // A long-running `iperf3 -s` refuses connections, or says it is busy, for a
        // moment after each test while it resets: retry that, and only for a server this
        // run did not start.
        if reused_server && attempt < REFUSED_ATTEMPTS && not_ready(&done.stdout) {
            attempt += 1;
            thread::sleep(REFUSED_PAUSE);
            continue;
        }
        break done;
    };
    let server_line = match server {
        Some(server) => {
            let line = server.command.clone();
            server.wait_or_kill(Duration::from_secs(5))?;
            line
        }
        None => format!("iperf3 -s -p {port} (started by the user on {server_ip})"),
    };
    let json: Value = serde_json::from_str(&done.stdout)
        .with_context(|| format!("`{client_line}` printed no JSON ({})", done.status))?;
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        bail!("`{client_line}` failed: {error}");
    }
    if !done.status.success() {
        bail!("`{client_line}` exited with {}", done.status);
    }
    parse(&json, streams, [server_line, client_line])
}

/// Attempts against a server the user started before a refused connection is an error.
const REFUSED_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const REFUSED_PAUSE: Duration = Duration::from_millis(300);

/// Whether iperf3's JSON says the server refused the connection or is still busy.
fn not_ready(stdout: &str) -> bool {
    serde_json::from_str::<Value>(stdout)
        .ok()
        .and_then(|json| json.get("error").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|error| error.contains("unable to connect") || error.contains("busy"))
}

fn parse(json: &Value, streams: usize, commands: [String; 2]) -> anyhow::Result<IperfRun> {
    let received = json
        .pointer("/end/sum_received")
        .context("iperf3 JSON has no end.sum_received")?;
    let num = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("iperf3 JSON has no end.sum_received.{key}"))
    };
    let cpu = |key: &str| {
        json.pointer(&format!("/end/cpu_utilization_percent/{key}"))
            .and_then(Value::as_f64)
    };
    Ok(IperfRun {
        streams,
        bits_per_second: num(received, "bits_per_second")?,
        bytes: received
            .get("bytes")
            .and_then(Value::as_u64)
            .context("iperf3 JSON has no end.sum_received.bytes")?,
        seconds: num(received, "seconds")?,
        retransmits: json
            .pointer("/end/sum_sent/retransmits")
            .and_then(Value::as_u64),
        client_cpu_percent: cpu("host_total"),
        server_cpu_percent: cpu("remote_total"),
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_received_rate_and_cpu() {
        let json: Value = serde_json::from_str(
            r#"{"end": {"sum_received": {"bytes": 2000000000, "seconds": 1.0,
                "bits_per_second": 16e9}, "sum_sent": {"retransmits": 3},
                "cpu_utilization_percent": {"host_total": 50.0, "remote_total": 80.0}}}"#,
        )
        .unwrap();
        let run = parse(&json, 4, [String::new(), String::new()]).unwrap();
        assert_eq!(run.bits_per_second, 16e9);
        assert_eq!(run.retransmits, Some(3));
        assert_eq!(run.client_cpu_per_gb(), Some(0.25));
        assert_eq!(run.server_cpu_per_gb(), Some(0.4));
    }

    fn pair(bytes: u64, seconds: f64, cpu: f64) -> IperfRun {
        IperfRun {
            streams: 1,
            bits_per_second: bytes as f64 * 8.0 / seconds,
            bytes,
            seconds,
            retransmits: Some(1),
            client_cpu_percent: Some(cpu),
            server_cpu_percent: None,
            commands: [String::new(), String::new()],
        }
    }

    #[test]
    fn only_a_server_not_ready_is_retried() {
        assert!(not_ready(
            r#"{"start": {}, "error": "unable to connect to server: Connection refused"}"#
        ));
        assert!(not_ready(
            r#"{"error": "the server is busy running a test. try again later"}"#
        ));
        assert!(!not_ready(
            r#"{"error": "error - control socket has closed unexpectedly"}"#
        ));
        assert!(!not_ready(r#"{"end": {}}"#));
        assert!(!not_ready("not json"));
    }

    #[test]
    fn pairs_combine_over_the_longest_run() {
        let run = combine(&[
            pair(1_000_000_000, 1.0, 50.0),
            pair(1_000_000_000, 2.0, 50.0),
        ])
        .unwrap();
        assert_eq!(
            (run.streams, run.bytes, run.seconds),
            (2, 2_000_000_000, 2.0)
        );
        assert_eq!(run.bits_per_second, 8e9);
        assert_eq!(run.retransmits, Some(2));
        // 0.5 + 1.0 CPU seconds over 2 seconds.
        assert_eq!(run.client_cpu_percent, Some(75.0));
        assert_eq!(run.server_cpu_percent, None);
        assert!(combine(&[]).is_none());
    }
}
