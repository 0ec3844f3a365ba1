//! The suite's codec rows: HDE measured on the guest-memory corpus of `cargo xtask
//! corpus` (quick mode of `dwcp-bench hde --corpus`: HDE with every level and zstd-1 per
//! block, one core each). Without a corpus every codec row says how to make one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::targets::{self, MetricResult, PeerValue, Target};
use crate::hde_corpus::{self, CorpusReport};

/// Why the codec rows are not measured when there is no corpus.
pub const NO_CORPUS: &str = "run `cargo xtask corpus` (no guest-memory corpus)";

/// What the report says about the codec rows' data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CodecData {
    /// The corpus folder (`None`: no corpus was found).
    pub corpus: Option<PathBuf>,
    /// The images measured, with what each was encoded after.
    pub images: Vec<String>,
    /// One line per class (full images, round deltas) with the peers' figures.
    pub summary: Vec<String>,
}

/// The default corpus folder: `$DWCP_CACHE_DIR/corpus`, else this workspace's
/// `target/dwcp-cache/corpus` (where `cargo xtask corpus` writes it).
pub fn default_dir() -> PathBuf {
    std::env::var_os("DWCP_CACHE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dwcp-cache/corpus"),
        |d| PathBuf::from(d).join("corpus"),
    )
}

/// The codec targets judged on the corpus in `dir`, and what the report says about it.
pub fn evaluate(dir: &Path, block: usize) -> (Vec<MetricResult>, CodecData) {
    if !dir.join("corpus.json").is_file() {
        return (not_measured(NO_CORPUS), CodecData::default());
    }
    eprintln!("== codec rows on the corpus in {}", dir.display());
    match hde_corpus::measure(dir, block, true) {
        Ok(report) => (results(&report), data(&report)),
        Err(err) => (
            not_measured(&format!("the corpus could not be measured: {err:#}")),
            CodecData {
                corpus: Some(dir.to_path_buf()),
                ..CodecData::default()
            },
        ),
    }
}

const CODEC_TARGETS: [&Target; 4] = [
    &targets::HDE_RATIO,
    &targets::HDE_VS_ZSTD1,
    &targets::HDE_ENCODE,
    &targets::HDE_ROUND_DELTA,
];

fn not_measured(why: &str) -> Vec<MetricResult> {
    CODEC_TARGETS
        .iter()
        .map(|t| MetricResult::not_measured(t, None, why))
        .collect()
}

fn results(r: &CorpusReport) -> Vec<MetricResult> {
    let peer = |name: &str, value: f64| PeerValue {
        peer: name.to_owned(),
        value,
    };
    let f = &r.full;
    let mut out = Vec::new();
    if f.images == 0 {
        out.extend(
            not_measured("the corpus has no full memory image")
                .into_iter()
                .take(3),
        );
    } else {
        out.push(MetricResult::measured(
            &targets::HDE_RATIO,
            None,
            f.hde_ratio,
            vec![peer("zstd-1 per block", f.zstd1_ratio)],
        ));
        out.push(MetricResult::measured(
            &targets::HDE_VS_ZSTD1,
            None,
            f.hde_vs_zstd1,
            Vec::new(),
        ));
        out.push(MetricResult::measured(
            &targets::HDE_ENCODE,
            None,
            f.hde_encode_mb_s_per_core,
            Vec::new(),
        ));
    }
    let d = &r.rounds;
    out.push(if d.images == 0 {
        MetricResult::not_measured(
            &targets::HDE_ROUND_DELTA,
            None,
            "the corpus has no later round (`cargo xtask corpus --rounds 2` or more)",
        )
    } else {
        MetricResult::measured(
            &targets::HDE_ROUND_DELTA,
            None,
            d.hde_ratio,
            vec![peer("zstd-1 per block", d.zstd1_ratio)],
        )
    });
    out
}

fn data(r: &CorpusReport) -> CodecData {
    let images = r
        .entries
        .iter()
        .map(|e| match &e.image.previous {
            Some(p) => format!("{} after {p}", e.image.file),
            None => e.image.file.clone(),
        })
        .collect();
    let line = |class: &str, a: &hde_corpus::Aggregate| {
        format!(
            "{class} ({} images, {} MiB): HDE ratio {:.2}, zstd-1 {:.2} ({:.2}x), HDE encode \
             {:.0} MB/s per core",
            a.images,
            a.bytes >> 20,
            a.hde_ratio,
            a.zstd1_ratio,
            a.hde_vs_zstd1,
            a.hde_encode_mb_s_per_core
        )
    };
    CodecData {
        corpus: Some(r.dir.clone()),
        images,
        summary: vec![
            line("full images", &r.full),
            line("round deltas", &r.rounds),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::targets::Status;

    #[test]
    fn without_a_corpus_every_codec_row_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, data) = evaluate(dir.path(), 1 << 20);
        assert_eq!(rows.len(), CODEC_TARGETS.len());
        for row in &rows {
            assert_eq!(row.status, Status::NotMeasured(NO_CORPUS.to_owned()));
        }
        assert_eq!(data, CodecData::default());
    }

    /// A two-round corpus of text-like pages: every codec row gets a value, and the
    /// round after an almost unchanged one compresses far better than the first.
    #[test]
    fn a_corpus_gives_every_codec_row_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut r0 = Vec::new();
        for i in 0..1024u32 {
            if i % 4 == 0 {
                r0.extend(std::iter::repeat_n(0u8, 4096));
            } else {
                let line = format!("record {i:06} of the table; ");
                r0.extend(line.bytes().cycle().take(4096));
            }
        }
        let mut r1 = r0.clone();
        for page in (0..1024).step_by(64) {
            r1[page * 4096 + 17] ^= 0x5a;
        }
        std::fs::write(dir.path().join("t-r0.raw"), &r0).unwrap();
        std::fs::write(dir.path().join("t-r1.raw"), &r1).unwrap();
        let manifest = serde_json::json!({
            "guest_fingerprint": "f", "qemu_version": "QEMU 7.2", "mem_mib": 4,
            "seconds_apart": 5.0,
            "images": [
                {"file": "t-r0.raw", "bytes": r0.len(), "kind": "memory", "workload": "table",
                 "round": 0, "previous": null},
                {"file": "t-r1.raw", "bytes": r1.len(), "kind": "memory", "workload": "table",
                 "round": 1, "previous": "t-r0.raw"},
            ]
        });
        std::fs::write(dir.path().join("corpus.json"), manifest.to_string()).unwrap();
        let (rows, data) = evaluate(dir.path(), 1 << 20);
        assert_eq!(rows.len(), CODEC_TARGETS.len());
        for row in &rows {
            assert!(row.value.is_some(), "{row:?}");
        }
        let ratio = |id: &str| rows.iter().find(|r| r.target == id).unwrap().value.unwrap();
        assert!(ratio(targets::HDE_RATIO.id) > 2.0);
        assert!(ratio(targets::HDE_ROUND_DELTA.id) > 5.0 * ratio(targets::HDE_RATIO.id));
        assert_eq!(data.images, ["t-r0.raw", "t-r1.raw after t-r0.raw"]);
    }

    #[test]
    fn a_broken_corpus_is_not_measured_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corpus.json"), "{not json").unwrap();
        let (rows, _) = evaluate(dir.path(), 1 << 20);
        assert_eq!(rows.len(), CODEC_TARGETS.len());
        for row in &rows {
            let Status::NotMeasured(why) = &row.status else {
                panic!("measured a broken corpus: {row:?}");
            };
            assert!(why.contains("is not a corpus manifest"), "{why}");
        }
    }
}
