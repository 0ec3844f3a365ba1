//! HDE side by side with its peers on real images: ratio and per-core encode/decode
//! speed of HDE (every cumulative level set, from `dwcp_hde::survey`), zstd level 1
//! (QEMU multifd's default) and level 3 per 1 MiB block, a QEMU-pre-copy-with-XBZRLE
//! model, and the `zstd --long` command line (`--patch-from=PREVIOUS` for a round).
//!
//! Every codec runs on one thread; speeds are data bytes per CPU second of that thread
//! (of the child, for the command line), so that other work on a shared machine does not
//! count; every decode is checked against the image.
//!
//! The XBZRLE model follows QEMU's pre-copy: a page equal to its previous version is not
//! dirty and costs nothing; a zero page costs its 8-byte page header; a changed page
//! whose previous version is cached is sent as an XOR run-length delta (QEMU's XBZRLE,
//! here with `dwcp_hde::delta`) with an 11-byte header when that is shorter than the
//! page, else as the page with an 8-byte header. Without a previous image every page is
//! new (zero pages still cost only the header).
//!
//! `--corpus DIR` runs every image of a `cargo xtask corpus` folder in one table (see
//! [`crate::hde_corpus`]); `--quick` keeps only HDE with every level and zstd-1.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, ensure};
use dwcp_hde::survey;
use serde::Serialize;

use crate::{hde_baselines as base, hde_corpus};

/// Options of `dwcp-bench hde`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Guest memory image (raw `pmemsave` dump) or disk image.
    #[arg(long, required_unless_present = "corpus", conflicts_with = "corpus")]
    image: Option<PathBuf>,
    /// Encode IMAGE as a pre-copy round after this image.
    #[arg(long, requires = "image")]
    previous: Option<PathBuf>,
    /// Every image of a corpus made by `cargo xtask corpus` (its folder, holding
    /// `corpus.json`): full images alone, later rounds after their previous round.
    #[arg(long, value_name = "DIR")]
    corpus: Option<PathBuf>,
    /// Only HDE with every level (zstd-1) and zstd-1 per block: what the suite needs.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Block size in KiB (HDE and the per-block zstd baselines).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
}

/// One codec's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Codec and settings.
    pub codec: String,
    /// Image bytes per encoded byte.
    pub ratio: f64,
    /// Encoded bytes.
    pub encoded_bytes: u64,
    /// Encode speed of one core.
    pub encode_mb_s_per_core: f64,
    /// Decode speed of one core (0 when not measured).
    pub decode_mb_s_per_core: f64,
}

/// The rows of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image.
    pub image: PathBuf,
    /// The round before it, if any.
    pub previous: Option<PathBuf>,
    /// Image bytes.
    pub bytes: u64,
    /// One per codec.
    pub rows: Vec<Row>,
    /// Checksum speeds over the image (GB/s, one core): xxh3-64 (used) and CRC32C.
    pub checksum_gb_s: ChecksumSpeeds,
    /// The goals, met or not, in one line.
    pub verdict: String,
}

/// Checksum speeds, GB/s on one core.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksumSpeeds {
    /// xxh3-64 (what frames carry).
    pub xxh3_64: f64,
    /// CRC32C.
    pub crc32c: f64,
}

/// The row name of HDE with every level at zstd-1 (the codec the goals are about).
pub const HDE_ALL: &str = "hde L0+L1+L2+L3 (zstd-1)";
/// The row name of zstd-1 per block.
pub const ZSTD1: &str = "zstd-1 per block";

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure!(
        opts.block_kib >= 4 && opts.block_kib.is_multiple_of(4),
        "Block size must be a multiple of 4 KiB"
    );
    let block = opts.block_kib * 1024;
    if let Some(dir) = &opts.corpus {
        let report = hde_corpus::measure(dir, block, opts.quick)?;
        if opts.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", hde_corpus::render(&report));
        }
        return Ok(());
    }
    let image = opts.image.as_ref().context("Give --image or --corpus")?;
    let report = measure(image, opts.previous.as_deref(), block, opts.quick)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Every codec on `image` (as a round after `previous` if given); `quick` keeps only
/// [`HDE_ALL`] and [`ZSTD1`].
pub fn measure(
    image_path: &Path,
    previous_path: Option<&Path>,
    block: usize,
    quick: bool,
) -> anyhow::Result<Report> {
    let image =
        fs::read(image_path).with_context(|| format!("Cannot read {}", image_path.display()))?;
    let previous = match previous_path {
        Some(p) => Some(fs::read(p).with_context(|| format!("Cannot read {}", p.display()))?),
        None => None,
    };
    let survey = survey::run(&survey::SurveyOptions {
        image: image_path.to_path_buf(),
        previous: previous_path.map(Path::to_path_buf),
        block_bytes: block,
        link_bits: vec![],
        cores: 1,
        zstd_level: 1,
        dict_sample_pages: dwcp_hde::HdeConfig::default().dict_sample_pages,
        all_levels_only: quick,
    })?;
    let mut rows: Vec<Row> = survey
        .rows
        .iter()
        .map(|r| Row {
            codec: match r.zstd_level {
                Some(l) => format!("hde {} (zstd-{l})", r.levels),
                None => format!("hde {}", r.levels),
            },
            ratio: r.ratio,
            encoded_bytes: r.encoded_bytes,
            encode_mb_s_per_core: r.encode_mb_s_per_core,
            decode_mb_s_per_core: r.decode_mb_s_per_core,
        })
        .collect();
    let levels: &[i32] = if quick { &[1] } else { &[1, 3] };
    for &level in levels {
        rows.push(base::zstd_blocks(&image, block, level)?);
    }
    if !quick {
        rows.push(base::xbzrle(&image, previous.as_deref()));
        rows.push(base::zstd_cli(
            image_path,
            previous_path,
            image.len() as u64,
        )?);
    }
    let checksum_gb_s = base::checksum_speeds(&image);
    let verdict = verdict(&rows, previous.is_some());
    Ok(Report {
        image: image_path.to_path_buf(),
        previous: previous_path.map(Path::to_path_buf),
        bytes: image.len() as u64,
        rows,
        checksum_gb_s,
        verdict,
    })
}

/// The goals: full image, ratio ≥ 1.5× zstd-1's at ≥ 1000 MB/s encode per core;
/// round delta, ratio ≥ 10.
fn verdict(rows: &[Row], round: bool) -> String {
    let hde = rows.iter().find(|r| r.codec == HDE_ALL);
    let zstd1 = rows.iter().find(|r| r.codec == ZSTD1);
    let (Some(hde), Some(zstd1)) = (hde, zstd1) else {
        return "incomplete".to_owned();
    };
    let vs = hde.ratio / zstd1.ratio;
    if round {
        format!(
            "round delta: hde ratio {:.1} (goal >= 10: {}), {:.1}x zstd-1's, encode {:.0} MB/s/core",
            hde.ratio,
            if hde.ratio >= 10.0 { "met" } else { "NOT met" },
            vs,
            hde.encode_mb_s_per_core
        )
    } else {
        format!(
            "full image: hde ratio {:.2} = {:.2}x zstd-1's (goal >= 1.5x: {}), encode {:.0} MB/s/core (goal >= 1000: {})",
            hde.ratio,
            vs,
            if vs >= 1.5 { "met" } else { "NOT met" },
            hde.encode_mb_s_per_core,
            if hde.encode_mb_s_per_core >= 1000.0 {
                "met"
            } else {
                "NOT met"
            }
        )
    }
}

fn print_table(r: &Report) {
    println!("image: {} ({} MiB)", r.image.display(), r.bytes >> 20);
    if let Some(p) = &r.previous {
        println!("round after: {}", p.display());
    }
    println!(
        "\n{:<38} {:>8} {:>12} {:>14} {:>14}",
        "codec (one core)", "ratio", "encoded MiB", "enc MB/s", "dec MB/s"
    );
    for row in &r.rows {
        println!(
            "{:<38} {:>8.2} {:>12.1} {:>14.0} {:>14.0}",
            row.codec,
            row.ratio,
            row.encoded_bytes as f64 / (1 << 20) as f64,
            row.encode_mb_s_per_core,
            row.decode_mb_s_per_core
        );
    }
    println!(
        "\nchecksum over the image: xxh3-64 {:.1} GB/s, crc32c {:.1} GB/s",
        r.checksum_gb_s.xxh3_64, r.checksum_gb_s.crc32c
    );
    println!("{}", r.verdict);
}
