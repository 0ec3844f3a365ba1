//! Runs a [`Plan`]: per profile, brings the link up, starts the receiving agent on the
//! receiving side, runs every case for every round (alternating the order of the
//! contenders between rounds), and tears everything down again, even on errors.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{
    cases::{CaseEnv, CaseResult, Kind},
    link::{Link, LinkInfo},
    plan::{Plan, Streams},
    steal,
};
use crate::{
    agent::{self, Receiver},
    process,
};

/// Files and binaries shared by every profile.
#[derive(Debug)]
pub struct Workspace<'a> {
    /// The agent binary (a private copy).
    pub agent: &'a Path,
    /// Directory for temporary files (source, receive and copy directories).
    pub tmp: &'a Path,
    /// Pre-shared key file.
    pub psk: &'a Path,
    /// Empty agent configuration.
    pub config: &'a Path,
    /// Raw outputs.
    pub raw: &'a Path,
    /// `--block-kib`.
    pub block_kib: usize,
}

/// A remote receiving host prepared by the user.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Host name as given.
    pub host: String,
    /// Its address.
    pub addr: IpAddr,
    /// Its agent's data port.
    pub data_port: u16,
    /// Its agent's metrics port.
    pub http_port: u16,
    /// Its `iperf3 -s` port.
    pub iperf3_port: u16,
}

/// What one profile produced.
#[derive(Debug)]
pub struct ProfileRun {
    /// The link.
    pub link: LinkInfo,
    /// Every case.
    pub cases: Vec<CaseResult>,
    /// Set-up commands (receiving agent, link).
    pub commands: Vec<String>,
    /// Set-up errors (the cases then did not run).
    pub errors: Vec<String>,
}

/// Opens the link of `profile` (or the remote one).
pub fn open_link(profile: &str, remote: Option<&Remote>) -> anyhow::Result<Link> {
    if let Some(r) = remote {
        return Ok(Link::Remote {
            addr: r.addr,
            host: r.host.clone(),
        });
    }
    Link::open(profile)
}

/// Runs every case of `plan` on `profile`, with a source file of `bytes` bytes.
pub fn run_profile(
    plan: &Plan,
    profile: &str,
    source: &Path,
    bytes: u64,
    ws: &Workspace<'_>,
    remote: Option<&Remote>,
) -> ProfileRun {
    let mut out = ProfileRun {
        link: LinkInfo {
            name: profile.into(),
            rate_bps: None,
            rtt_ms: None,
            loss: None,
            kind: "not started".into(),
        },
        cases: Vec::new(),
        commands: Vec::new(),
        errors: Vec::new(),
    };
    if let Err(err) = run_profile_into(plan, profile, source, bytes, ws, remote, &mut out) {
        out.errors.push(format!("{profile}: {err:#}"));
    }
    out
}

fn run_profile_into(
    plan: &Plan,
    profile: &str,
    source: &Path,
    bytes: u64,
    ws: &Workspace<'_>,
    remote: Option<&Remote>,
    out: &mut ProfileRun,
) -> anyhow::Result<()> {
    let link = open_link(profile, remote)?;
    out.link = link.info();
    out.commands.extend(link.setup_commands());
    let dir = |name: &str| -> anyhow::Result<PathBuf> {
        let d = ws.tmp.join(format!("{}-{name}", profile.replace(':', "_")));
        std::fs::create_dir_all(&d).with_context(|| format!("Create {}", d.display()))?;
        Ok(d)
    };
    let send_dir = dir("send")?;
    let copy_dir = dir("copy")?;
    let ip = link.receiver_ip();
    let (receiver, data_addr, http_addr, recv_dir) = match remote {
        Some(r) => (
            None,
            SocketAddr::new(r.addr, r.data_port),
            SocketAddr::new(r.addr, r.http_port),
            None,
        ),
        None => {
            let recv_dir = dir("recv")?;
            let data_addr = SocketAddr::new(ip, process::free_port()?);
            let http_addr = SocketAddr::new(ip, process::free_port()?);
            let cmd = link
                .receiver_command(ws.agent)
                .context("The link cannot run the receiving agent")?;
            let files = agent::ReceiverFiles {
                config: ws.config,
                dir: &recv_dir,
                psk: ws.psk,
                log_stem: &ws
                    .raw
                    .join(format!("{}-receiver", profile.replace(':', "_"))),
            };
            let receiver = Receiver::spawn(cmd, data_addr, http_addr, &files)?;
            out.commands.push(receiver.command().to_owned());
            (Some(receiver), data_addr, http_addr, Some(recv_dir))
        }
    };
    let env = CaseEnv {
        link: &link,
        profile: &out.link.name,
        agent: ws.agent,
        source,
        bytes,
        send_dir: &send_dir,
        recv_dir: recv_dir.as_deref(),
        copy_dir: remote.is_none().then_some(copy_dir.as_path()),
        psk: ws.psk,
        data_addr,
        http_addr: Some(http_addr),
        remote_iperf3_port: remote.map(|r| r.iperf3_port),
        block_kib: ws.block_kib,
        raw: ws.raw,
        cap: plan.cap,
        iperf3_seconds: plan.iperf3_seconds,
        congestion: plan.congestion.as_deref(),
    };
    for round in 0..plan.rounds {
        run_round(plan, &env, round, &mut out.cases);
    }
    if let Some(receiver) = receiver {
        receiver.stop()?;
    }
    drop(link);
    Ok(())
}

/// One round: the agent at every stream count, then the peers (the other way round in
/// odd rounds, so drift hits both alike). iperf3 also runs at the count `auto` chose
/// when the plan does not have it.
fn run_round(plan: &Plan, env: &CaseEnv<'_>, round: usize, cases: &mut Vec<CaseResult>) {
    let mut record = |r: CaseResult| {
        eprintln!("{}", progress_line(&r));
        cases.push(r);
    };
    let dwcp = |record: &mut dyn FnMut(CaseResult)| -> Option<usize> {
        let mut auto_count = None;
        for &s in &plan.streams {
            let r = with_steal(|| env.dwcp(s, round));
            if s == Streams::Auto {
                auto_count = r.streams;
            }
            record(r);
        }
        auto_count
    };
    let peers = |record: &mut dyn FnMut(CaseResult), extra: Option<usize>| {
        for &n in plan.iperf3_streams.iter().chain(extra.as_slice()) {
            record(with_steal(|| env.iperf3(n, round)));
        }
        if plan.copy && env.copy_dir.is_some() {
            record(with_steal(|| env.copy(round)));
        }
    };
    let missing = |n: Option<usize>| {
        n.filter(|n| !plan.iperf3_streams.contains(n))
            .map(|n| n.min(super::plan::IPERF_MAX_STREAMS))
    };
    if round.is_multiple_of(2) {
        let auto = dwcp(&mut record);
        peers(&mut record, missing(auto));
    } else {
        peers(&mut record, None);
        let auto = dwcp(&mut record);
        if let Some(n) = missing(auto) {
            record(with_steal(|| env.iperf3(n, round)));
        }
    }
}

/// Runs one case and records the CPU time the hypervisor took meanwhile.
fn with_steal(case: impl FnOnce() -> CaseResult) -> CaseResult {
    let (mut r, stolen) = steal::measure(case);
    r.steal_percent = stolen;
    r
}

fn progress_line(r: &CaseResult) -> String {
    let what = match (&r.error, r.goodput_bps) {
        (Some(e), _) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
        (None, Some(bps)) => format!(
            "{:.3} Gbit/s in {:.2} s{}",
            bps / 1e9,
            r.seconds.unwrap_or(0.0),
            match (r.kind, r.streams) {
                (Some(Kind::Dwcp), Some(n)) => format!(" ({n} streams)"),
                _ => String::new(),
            }
        ),
        (None, None) => "no figure".into(),
    };
    let contended = match r.steal_percent {
        Some(p) if p >= steal::CONTENDED_PERCENT => {
            format!(" [the hypervisor took {p:.0}% of the CPU time]")
        }
        _ => String::new(),
    };
    format!(
        "[{}] {} round {}: {what}{contended}",
        r.profile,
        r.label(),
        r.round + 1
    )
}
