//! Choosing the codec: a pure function from measured link goodput and measured codec
//! speed and ratio to the option that moves the data in the least time.
//!
//! Model: encoding, sending and decoding are pipelined, so the effective data rate of an
//! option is the slowest of its stages:
//! `min(encode/core * cores, link * ratio, decode/core * cores)`. "none" runs at the
//! link's rate. The option with the highest effective rate wins; among options within
//! 2 % of the best, the one listed first (the cheaper: callers list options from least
//! to most CPU) wins, so a negligible gain never costs CPU.

use serde::Serialize;

use crate::config::Levels;

/// A codec configuration that can be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "codec", rename_all = "lowercase")]
pub enum CodecOption {
    /// Raw blocks.
    None,
    /// Plain zstd per block.
    Zstd {
        /// zstd level.
        level: i32,
    },
    /// HDE with these levels.
    Hde {
        /// Levels used.
        levels: Levels,
        /// zstd level of L3.
        zstd_level: i32,
    },
}

impl std::fmt::Display for CodecOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::Zstd { level } => write!(f, "zstd-{level}"),
            Self::Hde { levels, zstd_level } if levels.zstd => {
                write!(f, "hde {} (zstd-{zstd_level})", levels.name())
            }
            Self::Hde { levels, .. } => write!(f, "hde {}", levels.name()),
        }
    }
}

/// What was measured for one option on the data at hand.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measurement {
    /// The option.
    pub option: CodecOption,
    /// Data bytes per encoded byte.
    pub ratio: f64,
    /// Encode speed of one core, data bytes per second.
    pub encode_per_core: f64,
    /// Decode speed of one core, data bytes per second.
    pub decode_per_core: f64,
}

/// The chosen option and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The option.
    pub option: CodecOption,
    /// Its effective data rate, bytes per second.
    pub effective_rate: f64,
    /// Effective rate of sending raw, bytes per second (the link's).
    pub raw_rate: f64,
    /// One line for metrics and transfer summaries.
    pub reason: String,
}

/// Effective data rate of `m` on a link of `link` bytes/s with `cores` cores per side,
/// and the stage that limits it.
#[must_use]
pub fn effective_rate(m: &Measurement, link: f64, cores: usize) -> (f64, &'static str) {
    if m.option == CodecOption::None {
        return (link, "link");
    }
    let cores = cores.max(1) as f64;
    [
        (m.encode_per_core * cores, "encode"),
        (link * m.ratio, "link"),
        (m.decode_per_core * cores, "decode"),
    ]
    .into_iter()
    .fold(
        (f64::INFINITY, "link"),
        |best, x| if x.0 < best.0 { x } else { best },
    )
}

/// Picks the option of `candidates` that transfers fastest over a link of `link` bytes/s
/// with `cores` cores per side (see the module documentation). With no candidates,
/// "none".
#[must_use]
pub fn choose(link: f64, cores: usize, candidates: &[Measurement]) -> Choice {
    let none = Measurement {
        option: CodecOption::None,
        ratio: 1.0,
        encode_per_core: f64::INFINITY,
        decode_per_core: f64::INFINITY,
    };
    let rated: Vec<(Measurement, f64, &str)> = std::iter::once(none)
        .chain(
            candidates
                .iter()
                .copied()
                .filter(|m| m.option != CodecOption::None),
        )
        .map(|m| {
            let (rate, limit) = effective_rate(&m, link, cores);
            (m, rate, limit)
        })
        .collect();
    let best = rated.iter().map(|r| r.1).fold(0.0, f64::max);
    let (m, rate, limit) = rated
        .iter()
        .find(|r| r.1 >= best * 0.98)
        .copied()
        .unwrap_or((none, link, "link"));
    let mb = |bytes: f64| bytes / 1e6;
    let reason = if m.option == CodecOption::None {
        let runner_up = rated
            .iter()
            .skip(1)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|r| {
                format!(
                    "; best codec {} would reach {:.0} MB/s ({:.2}x, {}-bound)",
                    r.0.option,
                    mb(r.1),
                    r.0.ratio,
                    r.2
                )
            })
            .unwrap_or_default();
        format!(
            "none: the link ({:.0} MB/s) is faster than any codec{runner_up}",
            mb(link)
        )
    } else {
        format!(
            "{}: {:.2}x at {:.0} MB/s encode, {:.0} MB/s decode per core x {cores} on a {:.0} MB/s link gives {:.0} MB/s ({:.1}x raw), {limit}-bound",
            m.option,
            m.ratio,
            mb(m.encode_per_core),
            mb(m.decode_per_core),
            mb(link),
            mb(rate),
            rate / link
        )
    };
    Choice {
        option: m.option,
        effective_rate: rate,
        raw_rate: link,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(level: i32, ratio: f64, enc_mb: f64) -> Measurement {
        Measurement {
            option: CodecOption::Zstd { level },
            ratio,
            encode_per_core: enc_mb * 1e6,
            decode_per_core: 1500e6,
        }
    }

    #[test]
    fn slow_codec_on_fast_link_loses_to_none() {
        let c = choose(2e9, 1, &[zstd(1, 3.0, 200.0)]);
        assert_eq!(c.option, CodecOption::None);
        assert!(c.reason.starts_with("none"), "{}", c.reason);
        assert!(c.reason.contains("encode-bound"), "{}", c.reason);
    }

    #[test]
    fn slow_link_takes_the_best_ratio() {
        let c = choose(12.5e6, 2, &[zstd(1, 3.0, 400.0), zstd(3, 3.5, 150.0)]);
        assert_eq!(c.option, CodecOption::Zstd { level: 3 });
        assert!((c.effective_rate - 12.5e6 * 3.5).abs() < 1.0);
        assert!(c.reason.contains("link-bound"), "{}", c.reason);
    }

    #[test]
    fn middle_link_takes_the_faster_level() {
        // 125 MB/s link, 2 cores: zstd-1 reaches min(800, 375) = 375, zstd-3 min(300, 437) = 300.
        let c = choose(125e6, 2, &[zstd(1, 3.0, 400.0), zstd(3, 3.5, 150.0)]);
        assert_eq!(c.option, CodecOption::Zstd { level: 1 });
    }

    #[test]
    fn near_ties_prefer_the_cheaper_option() {
        // Both link-bound, ratio 1.01 vs none: within 2 %, so none.
        let c = choose(1e8, 4, &[zstd(1, 1.01, 1000.0)]);
        assert_eq!(c.option, CodecOption::None);
        let c = choose(1e8, 4, &[zstd(1, 2.0, 1000.0), zstd(3, 2.01, 900.0)]);
        assert_eq!(c.option, CodecOption::Zstd { level: 1 });
    }

    #[test]
    fn decode_speed_bounds_too() {
        let mut m = zstd(1, 10.0, 5000.0);
        m.decode_per_core = 100e6;
        let (rate, limit) = effective_rate(&m, 1e9, 2);
        assert_eq!(limit, "decode");
        assert!((rate - 200e6).abs() < 1.0);
        assert_eq!(choose(1e9, 2, &[m]).option, CodecOption::None);
    }
}
