//! `dwcp-agent`: command-line entry point.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dwcp_agent::{
    amst::sender::StreamCount,
    config::{self, AgentConfig},
    daemon, error_chain, logging,
    metrics::names,
    vm_cli,
};

/// DWCP host agent: fast VM-migration data plane, measured in the kernel by eBPF.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load the eBPF probes and serve /metrics and /healthz.
    Run(RunArgs),
    /// Send a file or block device to a peer agent over DWCP.
    Send(SendArgs),
    /// Manage VMs through the local agent's control socket.
    Vm(vm_cli::VmArgs),
    /// Check a configuration file and print the effective configuration.
    CheckConfig(ConfigArgs),
    /// HDE codec tools (`hde stats IMAGE`: what HDE does for a VM before migrating it).
    Hde(dwcp_agent::hde_cli::HdeArgs),
    /// List every metric the agent exports (name, type, labels, help).
    Metrics {
        /// Print a Markdown table instead of plain lines.
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// TOML configuration file [default: /etc/dwcp/agent.toml if it exists].
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address for /metrics and /healthz (overrides http.addr).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// DWCP data-plane listen address (overrides transport.listen).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Do not load the eBPF probes (overrides probes.enabled).
    #[arg(long)]
    no_probes: bool,
    /// Receive transfers into this directory (overrides transport.receive_dir).
    #[arg(long)]
    receive_dir: Option<PathBuf>,
    /// Pre-shared key file (overrides transport.psk_file).
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// State directory for VM records and disks (overrides state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Control API unix socket (overrides control_socket).
    #[arg(long)]
    control_socket: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    /// File or block device to send, or `-` for standard input (sent as a stream).
    path: PathBuf,
    /// Name the receiver gives the data (required with `-`; default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Receiving agent's DWCP address.
    #[arg(long)]
    to: std::net::SocketAddr,
    /// Data streams: a number in 1..=256 or `auto`.
    #[arg(long, default_value = "auto")]
    streams: StreamCount,
    /// Pre-shared key file (the receiver's key).
    #[arg(long)]
    psk_file: PathBuf,
    /// Block size in KiB (power of two, 64..=16384).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// TCP congestion control for data streams (e.g. cubic, bbr).
    #[arg(long)]
    congestion: Option<String>,
    /// Block encoding: `none`, `zstd` (level 1), `hde` (zero, duplicate and delta
    /// pages, then zstd), or `auto` (HDE or raw per block, whichever the measured link
    /// and codec speeds make faster; re-decided twice a second). With a codec a file is
    /// sent as a stream (in order, no resume).
    #[arg(long, default_value = "none", value_parser = dwcp_agent::amst::sender::CODEC_NAMES)]
    codec: String,
    /// Do not use MSG_ZEROCOPY for stream payloads.
    #[arg(long)]
    no_zerocopy: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => effective_config(&args.config).and_then(run),
        Command::CheckConfig(args) => effective_config(&args).map(|config| println!("{config:#?}")),
        Command::Send(args) => send(&args),
        Command::Hde(args) => dwcp_agent::hde_cli::run(&args),
        Command::Vm(args) => vm_cli::run(&args).map_err(anyhow::Error::new),
        Command::Metrics { markdown } => {
            print_metrics(markdown);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("Error: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}

/// File (if any), then command-line overrides, then validation.
fn effective_config(args: &ConfigArgs) -> anyhow::Result<AgentConfig> {
    let mut config = match config::file::resolve(args.config.as_deref()) {
        Some(path) => config::file::load(&path)?,
        None => AgentConfig::default(),
    };
    if let Some(addr) = args.http_addr {
        config.http.addr = addr;
    }
    if let Some(addr) = args.listen {
        config.transport.listen = addr;
    }
    if args.no_probes {
        config.probes.enabled = false;
    }
    if let Some(dir) = &args.receive_dir {
        config.transport.receive_dir = Some(dir.clone());
    }
    if let Some(psk) = &args.psk_file {
        config.transport.psk_file = Some(psk.clone());
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    if let Some(socket) = &args.control_socket {
        config.control_socket = socket.clone();
    }
    config.validate()?;
    Ok(config)
}

fn run(config: AgentConfig) -> anyhow::Result<()> {
    logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dwcp-worker")
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(daemon::run(config)).map_err(|err| {
        tracing::error!(error = %error_chain(&err), "Agent failed");
        anyhow::Error::new(err)
    })
}

fn print_metrics(markdown: bool) {
    if markdown {
        println!("| metric | type | labels | help |\n|---|---|---|---|");
    }
    for def in names::ALL {
        let labels = def.labels.join(",");
        if markdown {
            println!(
                "| `{}` | {} | {} | {} |",
                def.name,
                def.kind.as_str(),
                labels,
                def.help
            );
        } else {
            println!(
                "{} {} [{}] {}",
                def.name,
                def.kind.as_str(),
                labels,
                def.help
            );
        }
    }
}

/// `dwcp-agent send`: progress bar on stderr, summary on stdout.
fn send(args: &SendArgs) -> anyhow::Result<()> {
    logging::init(&config::LogConfig {
        level: "warn".into(),
        ..config::LogConfig::default()
    });
    let key = std::fs::read(&args.psk_file).with_context(|| {
        format!(
            "Cannot read pre-shared key file {}",
            args.psk_file.display()
        )
    })?;
    let psk = dwcp_agent::protocol::handshake::Psk::new(&key)?;
    let options = dwcp_agent::amst::sender::SendOptions {
        streams: args.streams,
        block_size: args.block_kib * 1024,
        tuning: dwcp_agent::amst::socket::SocketTuning {
            congestion: args.congestion.clone(),
            ..Default::default()
        },
        zerocopy: !args.no_zerocopy,
        ..Default::default()
    }
    .with_codec(&args.codec)
    .map_err(anyhow::Error::msg)?;
    let source = if args.path.as_os_str() == "-" {
        let name = args
            .name
            .as_deref()
            .context("Sending standard input needs --name")?;
        dwcp_agent::transfer_cli::Source::Stdin { name }
    } else {
        if args.name.is_some() {
            anyhow::bail!("--name is only for standard input (`-`): a file keeps its name");
        }
        dwcp_agent::transfer_cli::Source::File(&args.path)
    };
    dwcp_agent::transfer_cli::send(source, args.to, &psk, &options, args.json)?;
    Ok(())
}
