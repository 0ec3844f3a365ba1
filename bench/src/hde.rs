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

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use dwcp_hde::{PAGE_SIZE, clock, delta, page::is_zero, survey};
use serde::Serialize;

/// Options of `dwcp-bench hde`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Guest memory image (raw `pmemsave` dump) or disk image.
    #[arg(long)]
    image: PathBuf,
    /// Encode IMAGE as a pre-copy round after this image.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Block size in KiB (HDE and the per-block zstd baselines).
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
}

/// One codec's result.
#[derive(Debug, Serialize)]
struct Row {
    codec: String,
    ratio: f64,
    encoded_bytes: u64,
    encode_mb_s_per_core: f64,
    decode_mb_s_per_core: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    image: PathBuf,
    previous: Option<PathBuf>,
    bytes: u64,
    rows: Vec<Row>,
    /// Checksum speeds over the image (GB/s, one core): xxh3-64 (used) and CRC32C.
    checksum_gb_s: ChecksumSpeeds,
    verdict: String,
}

#[derive(Debug, Serialize)]
struct ChecksumSpeeds {
    xxh3_64: f64,
    crc32c: f64,
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure!(
        opts.block_kib >= 4 && opts.block_kib.is_multiple_of(4),
        "Block size must be a multiple of 4 KiB"
    );
    let block = opts.block_kib * 1024;
    let image =
        fs::read(&opts.image).with_context(|| format!("Cannot read {}", opts.image.display()))?;
    let previous = match &opts.previous {
        Some(p) => Some(fs::read(p).with_context(|| format!("Cannot read {}", p.display()))?),
        None => None,
    };
    let survey = survey::run(&survey::SurveyOptions {
        image: opts.image.clone(),
        previous: opts.previous.clone(),
        block_bytes: block,
        link_bits: vec![],
        cores: 1,
        zstd_level: 1,
        dict_sample_pages: dwcp_hde::HdeConfig::default().dict_sample_pages,
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
    for level in [1, 3] {
        rows.push(zstd_blocks(&image, block, level)?);
    }
    rows.push(xbzrle(&image, previous.as_deref()));
    rows.push(zstd_cli(
        &opts.image,
        opts.previous.as_deref(),
        image.len() as u64,
    )?);
    let checksum_gb_s = checksum_speeds(&image);
    let verdict = verdict(&rows, previous.is_some());
    let report = Report {
        image: opts.image.clone(),
        previous: opts.previous.clone(),
        bytes: image.len() as u64,
        rows,
        checksum_gb_s,
        verdict,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn mb_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e6
}

/// zstd at `level` on each block, one context, like QEMU's multifd zstd.
fn zstd_blocks(image: &[u8], block: usize, level: i32) -> anyhow::Result<Row> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let mut frames = Vec::new();
    let started = clock::now();
    for chunk in image.chunks(block) {
        frames.push(compressor.compress(chunk)?);
    }
    let encode = seconds(started);
    let started = clock::now();
    let mut out = Vec::with_capacity(block);
    for (chunk, frame) in image.chunks(block).zip(&frames) {
        out.clear();
        decompressor.decompress_to_buffer(frame.as_slice(), &mut out)?;
        ensure!(out == chunk, "zstd-{level} round trip differs");
    }
    let decode = seconds(started);
    let encoded: u64 = frames.iter().map(|f| f.len() as u64).sum();
    Ok(Row {
        codec: format!("zstd-{level} per block"),
        ratio: image.len() as f64 / encoded as f64,
        encoded_bytes: encoded,
        encode_mb_s_per_core: mb_s(image.len(), encode),
        decode_mb_s_per_core: mb_s(image.len(), decode),
    })
}

/// The QEMU pre-copy + XBZRLE model (see the module documentation).
fn xbzrle(image: &[u8], previous: Option<&[u8]>) -> Row {
    let mut encoded = 0u64;
    let mut deltas: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::with_capacity(PAGE_SIZE);
    let started = clock::now();
    for (i, page) in image.chunks(PAGE_SIZE).enumerate() {
        let old = previous.and_then(|p| p.get(i * PAGE_SIZE..i * PAGE_SIZE + page.len()));
        if old == Some(page) {
            continue;
        }
        if is_zero(page) {
            encoded += 8;
            continue;
        }
        if let Some(old) = old {
            scratch.clear();
            if delta::encode(old, page, PAGE_SIZE - 1, &mut scratch) {
                encoded += 11 + scratch.len() as u64;
                deltas.push((i, scratch.clone()));
                continue;
            }
        }
        encoded += 8 + page.len() as u64;
    }
    let encode = seconds(started);
    // Decode: apply the deltas to the previous versions (raw and zero pages are copies).
    let mut decode = 0.0;
    if let Some(previous) = previous {
        let mut page = vec![0u8; PAGE_SIZE];
        let started = clock::now();
        for (i, d) in &deltas {
            page.copy_from_slice(&previous[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
            if delta::apply(d, &mut page).is_err()
                || page != image[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]
            {
                eprintln!("warning: XBZRLE model delta of page {i} does not round-trip");
            }
        }
        decode = seconds(started);
    }
    Row {
        codec: "qemu pre-copy + xbzrle (model)".to_owned(),
        ratio: image.len() as f64 / encoded.max(1) as f64,
        encoded_bytes: encoded,
        encode_mb_s_per_core: mb_s(image.len(), encode),
        decode_mb_s_per_core: if decode > 0.0 {
            mb_s(image.len(), decode)
        } else {
            0.0
        },
    }
}

/// `zstd -T1 --long=30` (with `--patch-from` for a round), timed as a child process.
fn zstd_cli(image: &Path, previous: Option<&Path>, bytes: u64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let packed = dir.path().join("image.zst");
    let unpacked = dir.path().join("image");
    let mut args: Vec<String> = vec!["-q".into(), "-f".into(), "-T1".into(), "--long=30".into()];
    if let Some(p) = previous {
        args.push(format!("--patch-from={}", p.display()));
    }
    let run = |extra: &[String]| -> anyhow::Result<f64> {
        let started = children_cpu_seconds();
        let status = Command::new("zstd")
            .args(&args)
            .args(extra)
            .status()
            .context("Cannot run zstd (install it with `cargo xtask setup`)")?;
        if !status.success() {
            bail!("zstd {} failed: {status}", extra.join(" "));
        }
        Ok(children_cpu_seconds() - started)
    };
    let encode = run(&[
        image.display().to_string(),
        "-o".into(),
        packed.display().to_string(),
    ])?;
    let decode = run(&[
        "-d".into(),
        packed.display().to_string(),
        "-o".into(),
        unpacked.display().to_string(),
    ])?;
    ensure!(
        fs::read(&unpacked)? == fs::read(image)?,
        "zstd --long round trip differs"
    );
    let encoded = fs::metadata(&packed)?.len();
    Ok(Row {
        codec: if previous.is_some() {
            "zstd -3 --long --patch-from (cli)".to_owned()
        } else {
            "zstd -3 --long (cli)".to_owned()
        },
        ratio: bytes as f64 / encoded as f64,
        encoded_bytes: encoded,
        encode_mb_s_per_core: mb_s(bytes as usize, encode),
        decode_mb_s_per_core: mb_s(bytes as usize, decode),
    })
}

/// CPU seconds of this thread since `started`.
fn seconds(started: clock::CpuInstant) -> f64 {
    clock::elapsed(started) as f64 / 1e9
}

/// User + system CPU seconds of the waited-for children so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn checksum_speeds(image: &[u8]) -> ChecksumSpeeds {
    let started = clock::now();
    let x = xxhash_rust::xxh3::xxh3_64(image);
    let xxh3 = image.len() as f64 / seconds(started) / 1e9;
    let started = clock::now();
    let c = crc32c::crc32c(image);
    let crc = image.len() as f64 / seconds(started) / 1e9;
    std::hint::black_box((x, c));
    ChecksumSpeeds {
        xxh3_64: xxh3,
        crc32c: crc,
    }
}

/// The goals: full image, ratio ≥ 1.5× zstd-1's at ≥ 1000 MB/s encode per core;
/// round delta, ratio ≥ 10.
fn verdict(rows: &[Row], round: bool) -> String {
    let hde = rows
        .iter()
        .find(|r| r.codec.starts_with("hde L0+L1+L2+L3 (zstd-1)"));
    let zstd1 = rows.iter().find(|r| r.codec.starts_with("zstd-1"));
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
