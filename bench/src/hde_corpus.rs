//! `dwcp-bench hde --corpus DIR`: every image of a corpus made by `cargo xtask corpus`
//! (its `corpus.json`), in one table, and the goals of issue 5 over the whole corpus.
//!
//! Full images (round 0 of each workload, and QEMU's migration stream) are encoded alone;
//! a later round is encoded after its previous round (the receiver holds that round, as
//! in pre-copy). The summary aggregates bytes, not per-image ratios: ratio = all image
//! bytes / all encoded bytes, speed = all image bytes / all encode CPU seconds.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};

use crate::hde::{self, HDE_ALL, Report, ZSTD1};

/// The part of `corpus.json` this reads (written by xtask's `corpus` module).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CorpusInfo {
    /// The guest's input fingerprint.
    pub guest_fingerprint: String,
    /// `qemu-system-x86_64 --version`.
    pub qemu_version: String,
    /// Guest RAM, MiB.
    pub mem_mib: u32,
    /// Guest running seconds between rounds.
    pub seconds_apart: f64,
    /// The files.
    pub images: Vec<CorpusImage>,
}

/// One corpus file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CorpusImage {
    /// File name in the corpus folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// `memory` (raw image) or `migration` (QEMU's stream).
    pub kind: String,
    /// Workload in the guest.
    pub workload: String,
    /// Round (0: first image of its boot).
    pub round: u32,
    /// The previous round's file.
    pub previous: Option<String>,
}

/// One image's results.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The corpus entry.
    pub image: CorpusImage,
    /// Its rows.
    pub report: Report,
}

/// Aggregate of one class of images (see the module documentation).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Aggregate {
    /// Images counted.
    pub images: usize,
    /// Image bytes.
    pub bytes: u64,
    /// HDE (every level, zstd-1) ratio.
    pub hde_ratio: f64,
    /// zstd-1 per block ratio.
    pub zstd1_ratio: f64,
    /// HDE's ratio over zstd-1's.
    pub hde_vs_zstd1: f64,
    /// HDE encode MB/s on one core.
    pub hde_encode_mb_s_per_core: f64,
}

/// The whole corpus.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusReport {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub corpus: CorpusInfo,
    /// One per image.
    pub entries: Vec<Entry>,
    /// Full memory images (round 0).
    pub full: Aggregate,
    /// Later rounds, each after its previous one.
    pub rounds: Aggregate,
}

/// Reads `DIR/corpus.json`.
pub fn read_manifest(dir: &Path) -> anyhow::Result<CorpusInfo> {
    let path = dir.join("corpus.json");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "Cannot read {} (make the corpus with `cargo xtask corpus`)",
            path.display()
        )
    })?;
    let info: CorpusInfo = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a corpus manifest", path.display()))?;
    ensure!(
        !info.images.is_empty(),
        "{} lists no images",
        path.display()
    );
    for image in &info.images {
        let file = dir.join(&image.file);
        let len = fs::metadata(&file)
            .with_context(|| format!("The corpus lacks {}", file.display()))?
            .len();
        ensure!(
            len == image.bytes,
            "{} has {len} bytes, the manifest says {}: run `cargo xtask corpus --force`",
            file.display(),
            image.bytes
        );
    }
    Ok(info)
}

/// Measures every image of the corpus in `dir`.
pub fn measure(dir: &Path, block: usize, quick: bool) -> anyhow::Result<CorpusReport> {
    let corpus = read_manifest(dir)?;
    let mut entries = Vec::new();
    for image in &corpus.images {
        eprintln!("hde: {}", image.file);
        let previous = image.previous.as_ref().map(|p| dir.join(p));
        let report = hde::measure(&dir.join(&image.file), previous.as_deref(), block, quick)?;
        entries.push(Entry {
            image: image.clone(),
            report,
        });
    }
    let full = aggregate(
        entries
            .iter()
            .filter(|e| e.image.kind == "memory" && e.image.previous.is_none()),
    );
    let rounds = aggregate(entries.iter().filter(|e| e.image.previous.is_some()));
    Ok(CorpusReport {
        dir: dir.to_path_buf(),
        corpus,
        entries,
        full,
        rounds,
    })
}

fn aggregate<'a>(entries: impl Iterator<Item = &'a Entry>) -> Aggregate {
    let mut a = Aggregate::default();
    let (mut hde_bytes, mut zstd_bytes, mut hde_seconds) = (0u64, 0u64, 0.0);
    for e in entries {
        let row = |name: &str| e.report.rows.iter().find(|r| r.codec == name);
        let (Some(h), Some(z)) = (row(HDE_ALL), row(ZSTD1)) else {
            continue;
        };
        a.images += 1;
        a.bytes += e.report.bytes;
        hde_bytes += h.encoded_bytes;
        zstd_bytes += z.encoded_bytes;
        hde_seconds += e.report.bytes as f64 / 1e6 / h.encode_mb_s_per_core.max(1e-9);
    }
    if a.images > 0 {
        a.hde_ratio = a.bytes as f64 / hde_bytes.max(1) as f64;
        a.zstd1_ratio = a.bytes as f64 / zstd_bytes.max(1) as f64;
        a.hde_vs_zstd1 = a.hde_ratio / a.zstd1_ratio;
        a.hde_encode_mb_s_per_core = a.bytes as f64 / 1e6 / hde_seconds.max(1e-9);
    }
    a
}

/// The report as one table for a terminal.
pub fn render(r: &CorpusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "corpus: {} ({} MiB guest, {}, guest {}, rounds {} s apart)",
        r.dir.display(),
        r.corpus.mem_mib,
        r.corpus.qemu_version,
        &r.corpus.guest_fingerprint[..r.corpus.guest_fingerprint.len().min(12)],
        r.corpus.seconds_apart
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:<18} {:<34} {:>8} {:>12} {:>10} {:>10}",
        "image", "after", "codec (one core)", "ratio", "encoded MiB", "enc MB/s", "dec MB/s"
    );
    for e in &r.entries {
        for row in &e.report.rows {
            let _ = writeln!(
                out,
                "{:<24} {:<18} {:<34} {:>8.2} {:>12.1} {:>10.0} {:>10.0}",
                e.image.file,
                e.image.previous.as_deref().unwrap_or("-"),
                row.codec,
                row.ratio,
                row.encoded_bytes as f64 / (1 << 20) as f64,
                row.encode_mb_s_per_core,
                row.decode_mb_s_per_core
            );
        }
    }
    let f = &r.full;
    let _ = writeln!(
        out,
        "\nfull images ({}): hde ratio {:.2} (seed > 5: {}), {:.2}x zstd-1's {:.2} (goal >= 1.5x: {}), \
         encode {:.0} MB/s/core (goal >= 1000: {})",
        f.images,
        f.hde_ratio,
        met(f.hde_ratio > 5.0),
        f.hde_vs_zstd1,
        f.zstd1_ratio,
        met(f.hde_vs_zstd1 >= 1.5),
        f.hde_encode_mb_s_per_core,
        met(f.hde_encode_mb_s_per_core >= 1000.0)
    );
    let d = &r.rounds;
    let _ = writeln!(
        out,
        "round deltas ({}): hde ratio {:.1} (goal >= 10: {}), encode {:.0} MB/s/core",
        d.images,
        d.hde_ratio,
        met(d.hde_ratio >= 10.0),
        d.hde_encode_mb_s_per_core
    );
    out
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
