//! `hde stats`: what HDE does to an image, level by level, before a migration.
//!
//! Encodes the image (as a pre-copy round after `previous` when given: the receiver then
//! holds every page of `previous`) once per cumulative level set on one thread, decodes
//! every frame and checks it against the image, and projects transfer times over links of
//! given rates with [`crate::adaptive`].

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

use crate::{
    adaptive::{self, Choice, CodecOption, Measurement},
    classify::EncodeError,
    codec::{Decoder, Encoder},
    config::{HdeConfig, Levels},
    error::DecodeError,
    stats::Stats,
};

/// Why a survey failed.
#[derive(Debug, Error)]
pub enum SurveyError {
    /// An image could not be read.
    #[error("Cannot read {path}")]
    Read {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Encoding failed.
    #[error("Encoding failed")]
    Encode(#[from] EncodeError),
    /// Decoding failed.
    #[error("Decoding its own frames failed")]
    Decode(#[from] DecodeError),
    /// Decoded data differs from the image (a codec bug).
    #[error("Decoded block at page {0} differs from the image")]
    Mismatch(u64),
}

/// What to survey.
#[derive(Debug, Clone)]
pub struct SurveyOptions {
    /// The image.
    pub image: PathBuf,
    /// The round before it, held by the receiver.
    pub previous: Option<PathBuf>,
    /// Block size in bytes.
    pub block_bytes: usize,
    /// Link rates to project for, bits per second.
    pub link_bits: Vec<f64>,
    /// Cores per side for the projection.
    pub cores: usize,
    /// zstd level of L3.
    pub zstd_level: i32,
    /// Literal pages sampled for the zstd dictionary (0: no dictionary).
    pub dict_sample_pages: u32,
    /// Only every level on (at `zstd_level`), not each cumulative level set: a quarter
    /// of the time, for benchmarks that need only the full codec.
    pub all_levels_only: bool,
}

/// One level set's result.
#[derive(Debug, Clone, Serialize)]
pub struct LevelRow {
    /// Level set, e.g. `L0+L1`.
    pub levels: String,
    /// zstd level (when L3 is on).
    pub zstd_level: Option<i32>,
    /// Image bytes per encoded byte.
    pub ratio: f64,
    /// Encoded bytes.
    pub encoded_bytes: u64,
    /// Encode MB/s on one core.
    pub encode_mb_s_per_core: f64,
    /// Decode MB/s on one core.
    pub decode_mb_s_per_core: f64,
    /// Encoder counters.
    pub encoder: Stats,
}

/// Projection for one link rate.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    /// Link rate, Gbit/s.
    pub link_gbit: f64,
    /// Seconds to send the image raw.
    pub raw_seconds: f64,
    /// Seconds with every level on.
    pub hde_seconds: f64,
    /// What the adaptive choice would pick.
    pub choice: Choice,
    /// Seconds with the chosen option.
    pub chosen_seconds: f64,
}

/// The survey.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// The image.
    pub image: PathBuf,
    /// The previous round, if any.
    pub previous: Option<PathBuf>,
    /// Image bytes.
    pub bytes: u64,
    /// Cores assumed per side.
    pub cores: usize,
    /// One row per level set.
    pub rows: Vec<LevelRow>,
    /// One per link rate.
    pub projections: Vec<Projection>,
}

/// Runs the survey.
pub fn run(opts: &SurveyOptions) -> Result<Survey, SurveyError> {
    let bytes = std::fs::metadata(&opts.image)
        .map_err(|source| SurveyError::Read {
            path: opts.image.clone(),
            source,
        })?
        .len();
    let mut sets: Vec<(String, Levels, i32)> = Levels::cumulative()
        .into_iter()
        .filter(|(_, levels)| !opts.all_levels_only || *levels == Levels::ALL)
        .map(|(name, levels)| (name.to_owned(), levels, opts.zstd_level))
        .collect();
    if opts.zstd_level != 3 && !opts.all_levels_only {
        sets.push(("L0+L1+L2+L3".to_owned(), Levels::ALL, 3));
    }
    let mut rows = Vec::new();
    for (name, levels, zstd_level) in sets {
        let config = HdeConfig {
            levels,
            zstd_level,
            workers: 1,
            history_slots: HdeConfig::slots_for(
                bytes.max(
                    opts.previous
                        .as_ref()
                        .and_then(|p| std::fs::metadata(p).ok())
                        .map_or(0, |m| m.len()),
                ),
            ),
            dict_sample_pages: opts.dict_sample_pages,
            ..HdeConfig::default()
        };
        let (encoder, decode_nanos) = round_trip(opts, &config)?;
        let s = encoder;
        rows.push(LevelRow {
            levels: name,
            zstd_level: levels.zstd.then_some(zstd_level),
            ratio: s.ratio(),
            encoded_bytes: s.frame_bytes,
            encode_mb_s_per_core: s.mb_per_core_second(),
            decode_mb_s_per_core: if decode_nanos == 0 {
                0.0
            } else {
                s.data_bytes as f64 * 1e3 / decode_nanos as f64
            },
            encoder: s,
        });
    }
    let measurements: Vec<Measurement> = rows
        .iter()
        .map(|r| Measurement {
            option: CodecOption::Hde {
                levels: levels_of(&r.levels),
                zstd_level: r.zstd_level.unwrap_or(opts.zstd_level),
            },
            ratio: r.ratio,
            encode_per_core: r.encode_mb_s_per_core * 1e6,
            decode_per_core: r.decode_mb_s_per_core * 1e6,
        })
        .collect();
    let projections = opts
        .link_bits
        .iter()
        .map(|&bits| {
            let link = bits / 8.0;
            let all = measurements
                .iter()
                .find(|m| matches!(m.option, CodecOption::Hde { levels, .. } if levels == Levels::ALL))
                .copied();
            let hde_rate = all.map_or(link, |m| adaptive::effective_rate(&m, link, opts.cores).0);
            let choice = adaptive::choose(link, opts.cores, &measurements);
            Projection {
                link_gbit: bits / 1e9,
                raw_seconds: bytes as f64 / link,
                hde_seconds: bytes as f64 / hde_rate,
                chosen_seconds: bytes as f64 / choice.effective_rate,
                choice,
            }
        })
        .collect();
    Ok(Survey {
        image: opts.image.clone(),
        previous: opts.previous.clone(),
        bytes,
        cores: opts.cores,
        rows,
        projections,
    })
}

fn levels_of(name: &str) -> Levels {
    Levels {
        zero: name.contains("L0"),
        dedup: name.contains("L1"),
        delta: name.contains("L2"),
        zstd: name.contains("L3"),
    }
}

/// Encodes (previous, then) the image with `config`, decoding and checking every block;
/// the encoder counters of the image's round and the decode nanoseconds of that round.
fn round_trip(opts: &SurveyOptions, config: &HdeConfig) -> Result<(Stats, u64), SurveyError> {
    let mut encoder = Encoder::new(config);
    let mut decoder = Decoder::new(config);
    let (mut frame, mut decoded) = (Vec::new(), Vec::new());
    if let Some(previous) = &opts.previous {
        for_each_block(previous, opts.block_bytes, |first_page, data| {
            encoder.encode_block(first_page, data, &mut frame)?;
            decoder.decode_block(&frame, &mut decoded)?;
            Ok::<(), SurveyError>(())
        })?;
    }
    let (enc_before, dec_before) = (encoder.stats(), decoder.stats());
    for_each_block(&opts.image, opts.block_bytes, |first_page, data| {
        encoder.encode_block(first_page, data, &mut frame)?;
        decoder.decode_block(&frame, &mut decoded)?;
        if decoded != data {
            return Err(SurveyError::Mismatch(first_page));
        }
        Ok::<(), SurveyError>(())
    })?;
    let mut round = encoder.stats();
    subtract(&mut round, &enc_before);
    let decode_nanos = decoder.stats().total_nanos - dec_before.total_nanos;
    Ok((round, decode_nanos))
}

/// `a -= b` for counters taken from the same encoder.
fn subtract(a: &mut Stats, b: &Stats) {
    let level = |a: &mut crate::stats::LevelStats, b: &crate::stats::LevelStats| {
        a.pages -= b.pages;
        a.input_bytes -= b.input_bytes;
        a.output_bytes -= b.output_bytes;
        a.nanos -= b.nanos;
    };
    a.blocks -= b.blocks;
    a.data_bytes -= b.data_bytes;
    a.frame_bytes -= b.frame_bytes;
    level(&mut a.zero, &b.zero);
    level(&mut a.duplicate, &b.duplicate);
    level(&mut a.unchanged, &b.unchanged);
    level(&mut a.delta, &b.delta);
    level(&mut a.literal, &b.literal);
    level(&mut a.zstd, &b.zstd);
    a.incompressible_blocks -= b.incompressible_blocks;
    a.dict_train_nanos -= b.dict_train_nanos;
    a.total_nanos -= b.total_nanos;
}

/// Calls `f(first_page, block)` for each block of `path`, in order.
pub fn for_each_block<E>(
    path: &Path,
    block_bytes: usize,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<SurveyError>,
{
    let read_err = |source| SurveyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut buf = vec![0u8; block_bytes];
    let mut offset = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e).into()),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        f(offset / crate::PAGE_SIZE as u64, &buf[..filled])?;
        offset += filled as u64;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// The survey as text for a terminal.
#[must_use]
pub fn render(s: &Survey) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mib = s.bytes as f64 / (1 << 20) as f64;
    let _ = writeln!(out, "image: {} ({mib:.0} MiB)", s.image.display());
    if let Some(p) = &s.previous {
        let _ = writeln!(
            out,
            "round after: {} (receiver holds its pages)",
            p.display()
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>8} {:>12} {:>14} {:>14}",
        "levels (cumulative)", "ratio", "encoded MiB", "enc MB/s/core", "dec MB/s/core"
    );
    for r in &s.rows {
        let name = match r.zstd_level {
            Some(l) => format!("{} zstd-{l}", r.levels),
            None => r.levels.clone(),
        };
        let _ = writeln!(
            out,
            "{name:<24} {:>8.2} {:>12.1} {:>14.0} {:>14.0}",
            r.ratio,
            r.encoded_bytes as f64 / (1 << 20) as f64,
            r.encode_mb_s_per_core,
            r.decode_mb_s_per_core
        );
    }
    if let Some(r) = s.rows.iter().find(|r| r.levels == "L0+L1+L2+L3") {
        let e = &r.encoder;
        let pct = |p: u64| 100.0 * p as f64 * crate::PAGE_SIZE as f64 / s.bytes.max(1) as f64;
        let _ = writeln!(
            out,
            "\npages: {:.1}% zero, {:.1}% duplicate, {:.1}% unchanged, {:.1}% delta, {:.1}% literal",
            pct(e.zero.pages),
            pct(e.duplicate.pages),
            pct(e.unchanged.pages),
            pct(e.delta.pages),
            pct(e.literal.pages)
        );
    }
    let _ = writeln!(out, "\nprojected transfer ({} cores per side):", s.cores);
    for p in &s.projections {
        let _ = writeln!(
            out,
            "  {:>6.1} Gbit/s: raw {:.2} s, hde (all levels) {:.2} s, chosen {:.2} s\n      choice: {}",
            p.link_gbit, p.raw_seconds, p.hde_seconds, p.chosen_seconds, p.choice.reason
        );
    }
    out
}
