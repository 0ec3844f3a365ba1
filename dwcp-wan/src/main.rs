//! `dwcp-wan`: sets up an emulated WAN link between two network namespaces, prints how to
//! use them, shows live per-second statistics, and tears everything down on Ctrl-C
//! (SIGINT) or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use dwcp_wan::profile::{format_rate, parse_duration, parse_loss, parse_rate};
use dwcp_wan::{LinkProfile, LinkStats, QueueLimit, WanLink};

/// Emulate a WAN link (rate, RTT, jitter, loss, queue) between two network namespaces.
///
/// Start from a built-in profile (--profile), a TOML file (--profile-file) or nothing
/// (then --rate and --rtt are required); the other flags override its values.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A built-in profile (see --list).
    #[arg(long, conflicts_with = "profile_file")]
    profile: Option<String>,
    /// A profile in TOML (keys: name, rate, rtt, jitter, loss, queue, seed).
    #[arg(long)]
    profile_file: Option<PathBuf>,
    /// Rate of each direction, e.g. `1gbit`, `500mbit`.
    #[arg(long, allow_hyphen_values = true)]
    rate: Option<String>,
    /// Round-trip time, e.g. `50ms`, `0.2ms`.
    #[arg(long, allow_hyphen_values = true)]
    rtt: Option<String>,
    /// One-way delay variation (±), e.g. `1ms`; never reorders packets.
    #[arg(long, allow_hyphen_values = true)]
    jitter: Option<String>,
    /// Random loss each way, e.g. `0.001` or `0.1%`.
    #[arg(long, allow_hyphen_values = true)]
    loss: Option<String>,
    /// Queue limit: `bdp`, a time at the rate (`5ms`) or a size (`256KiB`).
    #[arg(long, allow_hyphen_values = true)]
    queue: Option<String>,
    /// Seed of the loss and jitter generator.
    #[arg(long)]
    seed: Option<u64>,
    /// List the built-in profiles and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for profile in LinkProfile::builtins() {
            println!("{}", profile.summary());
        }
        return Ok(());
    }
    let profile = profile(&args)?;
    let signals = block_stop_signals()?;
    let link = WanLink::start(&profile).context("Cannot start the emulated link")?;
    println!("Emulating {}", profile.summary());
    for (label, host) in [("A", link.a()), ("B", link.b())] {
        println!(
            "  host {label}: netns {}  address {}",
            host.netns, host.addr
        );
    }
    println!(
        "Run commands in a host with: ip netns exec {} <command>",
        link.a().netns
    );
    println!(
        "  e.g. ip netns exec {} iperf3 -s   and   ip netns exec {} iperf3 -c {}",
        link.b().netns,
        link.a().netns,
        link.b().addr
    );
    println!("Ctrl-C tears the link down.");
    let mut previous = LinkStats::default();
    let signal = loop {
        if let Some(signal) = wait_for_signal(&signals, Duration::from_secs(1)) {
            break signal;
        }
        let now = link.stats();
        println!("{}", per_second_line(&previous, &now));
        previous = now;
    };
    let stats = link.stop().context("Cannot tear the link down cleanly")?;
    println!("Stopped by signal {signal}; totals:");
    for (label, direction) in [("A->B", &stats.a_to_b), ("B->A", &stats.b_to_a)] {
        println!(
            "  {label}: {} packets, {} bytes, {} lost, {} queue drops, peak queue {} B",
            direction.packets,
            direction.bytes,
            direction.dropped_loss,
            direction.dropped_queue,
            direction.peak_queue_bytes
        );
    }
    Ok(())
}

/// The profile the flags describe.
fn profile(args: &Args) -> anyhow::Result<LinkProfile> {
    let mut profile = match (&args.profile, &args.profile_file) {
        (Some(name), _) => LinkProfile::builtin(name).with_context(|| {
            let names: Vec<String> = LinkProfile::builtins()
                .into_iter()
                .map(|p| p.name)
                .collect();
            format!(
                "No built-in profile `{name}`; there are: {}",
                names.join(", ")
            )
        })?,
        (None, Some(path)) => LinkProfile::from_toml_file(path)?,
        (None, None) => {
            let (Some(rate), Some(rtt)) = (&args.rate, &args.rtt) else {
                bail!(
                    "Give --profile NAME, --profile-file FILE, or at least --rate and --rtt (see --help)"
                );
            };
            LinkProfile::new("custom", parse_rate(rate)?, parse_duration(rtt)?)
        }
    };
    if let Some(rate) = &args.rate {
        profile.rate_bps = parse_rate(rate).context("Bad --rate")?;
    }
    if let Some(rtt) = &args.rtt {
        profile.rtt = parse_duration(rtt).context("Bad --rtt")?;
    }
    if let Some(jitter) = &args.jitter {
        profile.jitter = parse_duration(jitter).context("Bad --jitter")?;
    }
    if let Some(loss) = &args.loss {
        profile.loss = parse_loss(loss).context("Bad --loss")?;
    }
    if let Some(queue) = &args.queue {
        profile.queue = QueueLimit::parse(queue).context("Bad --queue")?;
    }
    if args.seed.is_some() {
        profile.seed = args.seed;
    }
    profile.validate().context("Invalid link")?;
    Ok(profile)
}

/// One line of live statistics: what each direction did in the last second.
fn per_second_line(previous: &LinkStats, now: &LinkStats) -> String {
    let direction =
        |label: &str, before: &dwcp_wan::DirectionStats, after: &dwcp_wan::DirectionStats| {
            format!(
                "{label} {:>12} {:>7} pkt/s lost {:>5} dropped {:>5}",
                format_rate((after.bytes - before.bytes) * 8),
                after.packets - before.packets,
                after.dropped_loss - before.dropped_loss,
                after.dropped_queue - before.dropped_queue,
            )
        };
    format!(
        "{} | {}",
        direction("A->B", &previous.a_to_b, &now.a_to_b),
        direction("B->A", &previous.b_to_a, &now.b_to_a)
    )
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts later) so that
/// they are taken synchronously by [`wait_for_signal`] and the link is torn down normally.
fn block_stop_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use, and
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let result = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if result != 0 {
            return Err(std::io::Error::from_raw_os_error(result))
                .context("Cannot block SIGINT and SIGTERM");
        }
        Ok(set)
    }
}

/// Waits up to `timeout` for one of `signals`; returns its number.
fn wait_for_signal(signals: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `signals` is an initialised set, `timeout` a valid timespec, and a null
    // siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}
