//! `dwcp-agent hde stats`: what the HDE codec would do for an image (or a pre-copy round
//! after a previous image) before migrating it. The work is in [`dwcp_hde::survey`].

use std::path::PathBuf;

use anyhow::Context as _;

/// `dwcp-agent hde ...`.
#[derive(Debug, clap::Args)]
pub struct HdeArgs {
    #[command(subcommand)]
    command: HdeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HdeCommand {
    /// Ratio and speed per level, and projected transfer times, for an image.
    Stats(StatsArgs),
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Guest memory dump or disk image.
    image: PathBuf,
    /// Encode IMAGE as a pre-copy round after this one (the receiver holds its pages).
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Link rate in Gbit/s to project the transfer for (repeatable).
    #[arg(long = "link-gbit", value_name = "X", default_values_t = vec![1.0, 10.0, 25.0])]
    link_gbit: Vec<f64>,
    /// Block size in KiB.
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// Cores per side for the projection [default: this machine's].
    #[arg(long)]
    cores: Option<usize>,
    /// zstd level of L3.
    #[arg(long, default_value_t = 1)]
    zstd_level: i32,
    /// Literal pages sampled to train a zstd dictionary (0: none, the default; it pays
    /// only for small blocks).
    #[arg(long, default_value_t = dwcp_hde::HdeConfig::default().dict_sample_pages)]
    dict_pages: u32,
}

/// Runs `dwcp-agent hde <command>`.
pub fn run(args: &HdeArgs) -> anyhow::Result<()> {
    let HdeCommand::Stats(args) = &args.command;
    anyhow::ensure!(
        args.link_gbit.iter().all(|&g| g > 0.0 && g.is_finite()),
        "Link rates must be positive"
    );
    anyhow::ensure!(
        (4..=65_536).contains(&args.block_kib) && args.block_kib.is_multiple_of(4),
        "Block size must be a multiple of 4 KiB between 4 and 65536"
    );
    let options = dwcp_hde::survey::SurveyOptions {
        image: args.image.clone(),
        previous: args.previous.clone(),
        block_bytes: args.block_kib * 1024,
        link_bits: args.link_gbit.iter().map(|g| g * 1e9).collect(),
        cores: args
            .cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        zstd_level: args.zstd_level,
        dict_sample_pages: args.dict_pages,
        all_levels_only: false,
    };
    let survey = dwcp_hde::survey::run(&options)
        .with_context(|| format!("Cannot survey {}", args.image.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&survey)?);
    } else {
        print!("{}", dwcp_hde::survey::render(&survey));
    }
    Ok(())
}
