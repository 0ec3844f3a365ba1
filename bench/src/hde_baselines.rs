//! The peers HDE is compared with in `dwcp-bench hde`: zstd per block, the QEMU
//! pre-copy + XBZRLE model (see [`crate::hde`]), the `zstd --long` command line, and the
//! checksum speeds. Every codec runs on one thread and every decode is checked.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail, ensure};
use dwcp_hde::{PAGE_SIZE, clock, delta, page::is_zero};

use crate::hde::{ChecksumSpeeds, Row};

/// Megabytes per second.
pub fn mb_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e6
}

/// zstd at `level` on each block, one context, like QEMU's multifd zstd.
pub fn zstd_blocks(image: &[u8], block: usize, level: i32) -> anyhow::Result<Row> {
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
pub fn xbzrle(image: &[u8], previous: Option<&[u8]>) -> Row {
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
pub fn zstd_cli(image: &Path, previous: Option<&Path>, bytes: u64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    crate::interrupt::remove_on_signal(dir.path());
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

pub fn checksum_speeds(image: &[u8]) -> ChecksumSpeeds {
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
