//! One case of a suite: a real `dwcp-agent send`, `iperf3 -P N`, or a plain
//! single-stream copy with socat, run over a [`Link`] and recorded as a [`CaseResult`]
//! (an error is recorded too, never hidden).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    link::Link,
    plan::Streams,
    scrape::{self, Sample},
};
use crate::{
    agent::{self, SendRequest},
    iperf,
    process::{self, Server},
};

/// What kind of contender a case is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `dwcp-agent send`.
    Dwcp,
    /// `iperf3 -P N`, memory to memory: the TCP ceiling for N streams.
    Iperf3,
    /// socat, file to file over one TCP stream: what a plain copy gets.
    Copy,
}

/// The outcome of one case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Link profile.
    pub profile: String,
    /// Contender.
    pub kind: Option<Kind>,
    /// Stream count asked for (`auto`, or a number).
    pub requested: String,
    /// Round (0-based).
    pub round: usize,
    /// Streams used (for `auto`, the count the agent settled on).
    pub streams: Option<usize>,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds of the transfer (dwcp: the sender's transfer clock; iperf3: its
    /// receiver's, or when run by time the transfer's bytes over its rate; copy: from
    /// starting the sender to the receiver's exit).
    pub seconds: Option<f64>,
    /// Payload bits per second.
    pub goodput_bps: Option<f64>,
    /// Sender CPU seconds (dwcp: kernel-measured).
    pub sender_cpu_seconds: Option<f64>,
    /// Receiver CPU seconds (dwcp: growth of the receiving agent's kernel-measured CPU).
    pub receiver_cpu_seconds: Option<f64>,
    /// Retransmitted segments (kernel).
    pub retransmits: Option<u64>,
    /// PBA idle memory per byte in use on the receiver, percent.
    pub pba_overhead_percent: Option<f64>,
    /// The receiving agent's kernel-measured receive rate per second: (t s, bit/s).
    pub rx_series: Vec<(f64, f64)>,
    /// Stopped at the plan's cap: `bytes` is what moved by then, `goodput_bps` that
    /// rate, and `seconds` the full transfer's time extrapolated from it.
    pub capped: bool,
    /// Percent of the machine's CPU time the hypervisor took while the case ran
    /// (`steal` in `/proc/stat`; `None` where the kernel does not count it).
    #[serde(default)]
    pub steal_percent: Option<f64>,
    /// Command lines run, in order.
    pub commands: Vec<String>,
    /// Why the case failed, if it did.
    pub error: Option<String>,
}

impl CaseResult {
    /// How the case is named in tables: `dwcp --streams 4`, `iperf3 -P 4`, `socat copy`.
    pub fn label(&self) -> String {
        match self.kind {
            Some(Kind::Dwcp) => format!("dwcp --streams {}", self.requested),
            Some(Kind::Iperf3) => format!("iperf3 -P {}", self.requested),
            Some(Kind::Copy) => "socat copy (1 stream)".into(),
            None => "?".into(),
        }
    }
}

/// What the cases of one profile share.
#[derive(Debug)]
pub struct CaseEnv<'a> {
    /// The link.
    pub link: &'a Link,
    /// Profile name.
    pub profile: &'a str,
    /// The agent binary.
    pub agent: &'a Path,
    /// The file every contender moves.
    pub source: &'a Path,
    /// Its size.
    pub bytes: u64,
    /// Where the sender's per-case hard links of the source go.
    pub send_dir: &'a Path,
    /// The receiving agent's directory when it is on this host (cleaned after a case).
    pub recv_dir: Option<&'a Path>,
    /// Where the copy's receiver writes (`None`: the copy cannot run on this link).
    pub copy_dir: Option<&'a Path>,
    /// Pre-shared key file.
    pub psk: &'a Path,
    /// The receiving agent's data address.
    pub data_addr: SocketAddr,
    /// The receiving agent's metrics address (`None`: not reachable).
    pub http_addr: Option<SocketAddr>,
    /// iperf3 server port on a remote host (`None`: start a one-shot server per case).
    pub remote_iperf3_port: Option<u16>,
    /// `--block-kib` of the agent.
    pub block_kib: usize,
    /// Raw outputs go here.
    pub raw: &'a Path,
    /// A send or copy running longer is stopped and measured by what it moved.
    pub cap: Duration,
    /// iperf3 runs `-t` this many seconds instead of `-n <bytes>`.
    pub iperf3_seconds: Option<u64>,
    /// Congestion control of dwcp's and iperf3's streams.
    pub congestion: Option<&'a str>,
}

/// Extra time a program gets past the cap before it counts as hung.
const GRACE: Duration = Duration::from_secs(60);

impl CaseEnv<'_> {
    fn blank(&self, kind: Kind, requested: String, round: usize) -> CaseResult {
        CaseResult {
            profile: self.profile.into(),
            kind: Some(kind),
            requested,
            round,
            bytes: self.bytes,
            ..CaseResult::default()
        }
    }

    fn stem(&self, what: &str, round: usize) -> PathBuf {
        self.raw.join(format!(
            "{}-{what}-round-{round}",
            self.profile.replace(':', "_")
        ))
    }

    /// Sends the source with `dwcp-agent send --streams S`, scraping the receiver.
    pub fn dwcp(&self, streams: Streams, round: usize) -> CaseResult {
        let mut r = self.blank(Kind::Dwcp, streams.to_string(), round);
        if let Err(err) = self.dwcp_into(streams, round, &mut r) {
            r.error = Some(format!("{err:#}"));
        }
        r
    }

    fn dwcp_into(&self, streams: Streams, round: usize, r: &mut CaseResult) -> anyhow::Result<()> {
        let name = format!(
            "{}-streams-{streams}-round-{round}.bin",
            self.profile.replace(':', "_")
        );
        let file = self.send_dir.join(&name);
        std::fs::hard_link(self.source, &file)
            .with_context(|| format!("Link {} to {}", self.source.display(), file.display()))?;
        let _cleanup = RemoveOnDrop(&file);
        let streams_arg = streams.to_string();
        let request = SendRequest {
            file: &file,
            to: self.data_addr,
            psk_file: self.psk,
            streams: &streams_arg,
            block_kib: self.block_kib,
            timeout: self.cap,
            congestion: self.congestion,
        };
        let stem = self.stem(&format!("dwcp-{streams}"), round);
        let send = || agent::send_with(self.link.sender_command(self.agent), &request, &stem);
        let (run, samples): (_, Vec<Sample>) = match self.http_addr {
            Some(http) => scrape::during(self.link, http, send),
            None => (send(), Vec::new()),
        };
        let Some(run) = run? else {
            return self.capped_send(&samples, r);
        };
        r.commands.push(run.command.clone());
        let s = &run.summary;
        if s.bytes != self.bytes {
            bail!("The agent moved {} bytes, not {}", s.bytes, self.bytes);
        }
        if let Some(dir) = self.recv_dir {
            let target = dir.join(&name);
            let got = std::fs::metadata(&target)
                .with_context(|| format!("No received file at {}", target.display()))?
                .len();
            if got != self.bytes {
                bail!(
                    "Received {got} bytes at {}, not {}",
                    target.display(),
                    self.bytes
                );
            }
            clean_dir(dir)?;
        }
        r.streams = Some(s.streams);
        r.seconds = Some(s.seconds);
        r.goodput_bps = Some(s.goodput_bps);
        r.sender_cpu_seconds = s.cpu_seconds;
        r.retransmits = s.retransmits;
        r.receiver_cpu_seconds = scrape::cpu_growth(&samples);
        r.pba_overhead_percent = scrape::pba_overhead_percent(&samples);
        r.rx_series = scrape::rx_rate_series(&samples);
        Ok(())
    }

    /// Records a send stopped at the cap by the rate the receiver saw (its payload bytes,
    /// scraped every second; when not one block completed, the bytes its kernel
    /// received), and removes the partial file.
    fn capped_send(&self, samples: &[Sample], r: &mut CaseResult) -> anyhow::Result<()> {
        r.capped = true;
        r.commands.push(format!(
            "# stopped after {} s (the cap)",
            self.cap.as_secs()
        ));
        let moved = scrape::moved_by_cap(samples).map_err(|why| {
            anyhow::anyhow!("Stopped at the cap after {} s: {why}", self.cap.as_secs())
        })?;
        if moved.from_kernel {
            r.commands.push(
                "# no block completed by the cap: rate from the bytes the receiver's kernel received"
                    .into(),
            );
        }
        let bps = moved.bytes * 8.0 / moved.seconds;
        r.bytes = moved.bytes as u64;
        r.goodput_bps = Some(bps);
        r.seconds = Some(self.bytes as f64 * 8.0 / bps);
        r.receiver_cpu_seconds = scrape::cpu_growth(samples);
        r.pba_overhead_percent = scrape::pba_overhead_percent(samples);
        r.rx_series = scrape::rx_rate_series(samples);
        if let Some(dir) = self.recv_dir {
            clean_dir(dir)?;
        }
        Ok(())
    }

    /// `iperf3 -P streams` moving the same bytes (or for the plan's seconds).
    pub fn iperf3(&self, streams: usize, round: usize) -> CaseResult {
        let mut r = self.blank(Kind::Iperf3, streams.to_string(), round);
        let result = (|| -> anyhow::Result<iperf::IperfRun> {
            let ends = iperf::Ends {
                server: match self.remote_iperf3_port {
                    Some(_) => None,
                    None => self.link.receiver_command("iperf3"),
                },
                client: self.link.sender_command("iperf3"),
                server_ip: self.link.receiver_ip(),
                port: match self.remote_iperf3_port {
                    Some(port) => port,
                    None => process::free_port()?,
                },
                congestion: self.congestion.map(str::to_owned),
            };
            let stem = self.stem(&format!("iperf3-P{streams}"), round);
            let amount = match self.iperf3_seconds {
                Some(t) => iperf::Amount::Seconds(t),
                None => iperf::Amount::Bytes(self.bytes),
            };
            let limit = self
                .cap
                .max(Duration::from_secs(self.iperf3_seconds.unwrap_or(0)))
                + GRACE;
            iperf::run_between(ends, streams, amount, &stem, limit)
        })();
        match result {
            Ok(run) => {
                r.streams = Some(streams);
                r.bytes = run.bytes;
                // Run by time, iperf3 moved other bytes than the others: the comparable
                // figure is how long the transfer's bytes take at its rate.
                r.seconds = match self.iperf3_seconds {
                    Some(_) if run.bits_per_second > 0.0 => {
                        Some(self.bytes as f64 * 8.0 / run.bits_per_second)
                    }
                    _ => Some(run.seconds),
                };
                r.goodput_bps = Some(run.bits_per_second);
                r.retransmits = run.retransmits;
                r.sender_cpu_seconds = run.client_cpu_percent.map(|p| p / 100.0 * run.seconds);
                r.receiver_cpu_seconds = run.server_cpu_percent.map(|p| p / 100.0 * run.seconds);
                r.commands.extend(run.commands);
            }
            Err(err) => r.error = Some(format!("{err:#}")),
        }
        r
    }

    /// A plain single-stream copy of the source file with socat, file to file.
    pub fn copy(&self, round: usize) -> CaseResult {
        let mut r = self.blank(Kind::Copy, "1".into(), round);
        match self.copy_into(round, &mut r) {
            Ok(()) => r.streams = Some(1),
            Err(err) => r.error = Some(format!("{err:#}")),
        }
        r
    }

    fn copy_into(&self, round: usize, r: &mut CaseResult) -> anyhow::Result<()> {
        let (Some(dir), Some(mut server_cmd)) =
            (self.copy_dir, self.link.receiver_command("socat"))
        else {
            bail!("The copy needs its receiver on a host this run controls");
        };
        let dest = dir.join("copy.bin");
        let _cleanup = RemoveOnDrop(&dest);
        let port = process::free_port()?;
        server_cmd.args([
            "-u".to_owned(),
            format!("TCP-LISTEN:{port},reuseaddr"),
            format!("CREATE:{}", dest.display()),
        ]);
        let stem = self.stem("copy", round);
        let mut server = Server::spawn(
            &mut server_cmd,
            "the socat receiver",
            &with(&stem, "-server"),
        )?;
        server.wait_listening(port, Duration::from_secs(10))?;
        let mut client = self.link.sender_command("socat");
        client.args([
            "-u".to_owned(),
            format!("OPEN:{},rdonly", self.source.display()),
            format!("TCP:{}:{port}", self.link.receiver_ip()),
        ]);
        r.commands.push(server.command.clone());
        let start = Instant::now();
        let mut sender = Server::spawn(&mut client, "the socat sender", &with(&stem, "-client"))?;
        r.commands.push(sender.command.clone());
        let received = server.wait_for(self.cap)?;
        let elapsed = start.elapsed().as_secs_f64();
        let got = || {
            std::fs::metadata(&dest)
                .map(|m| m.len())
                .with_context(|| format!("No copy at {}", dest.display()))
        };
        let Some(status) = received else {
            // Stopped at the cap: measure what arrived by then.
            let moved = got()?;
            drop(sender);
            server.wait_or_kill(Duration::from_secs(5))?;
            if moved == 0 {
                bail!("The copy moved nothing in {} s", self.cap.as_secs());
            }
            let bps = moved as f64 * 8.0 / elapsed;
            r.capped = true;
            r.commands.push(format!(
                "# stopped after {} s (the cap)",
                self.cap.as_secs()
            ));
            r.bytes = moved;
            r.goodput_bps = Some(bps);
            r.seconds = Some(self.bytes as f64 * 8.0 / bps);
            return Ok(());
        };
        let sent = sender.wait_for(Duration::from_secs(5))?;
        if !status.success() || sent.is_some_and(|s| !s.success()) {
            bail!(
                "The copy failed (receiver {status}, sender {sent:?}):\n{}",
                sender.logs.stderr_tail()
            );
        }
        let got = got()?;
        if got != self.bytes {
            bail!("The copy has {got} bytes, not {}", self.bytes);
        }
        r.seconds = Some(elapsed);
        r.goodput_bps = Some(self.bytes as f64 * 8.0 / elapsed);
        Ok(())
    }
}

/// `stem` with `suffix` appended to its file name.
fn with(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes received files (and any partial-transfer state) but keeps the directory.
fn clean_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("Remove {}", path.display()))?;
    }
    Ok(())
}

/// Deletes a file when dropped (missing is fine).
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
