//! `send --codec auto` on streams: per block, HDE or raw, whichever moves the data in the
//! least time, re-decided every [`PERIOD`] from what this transfer measures.
//!
//! - Codec speed and ratio: the HDE encoder's own counters (CPU time of the encoding
//!   thread, bytes in and out) over the blocks it encoded, most recent [`PERIOD`]s
//!   weighted most. The first [`SAMPLE_BLOCKS`] blocks are always HDE-encoded (the
//!   sample), then blocks go raw until the first decision (measuring the link); while
//!   raw is chosen, one block in [`RESAMPLE_EVERY`] is still HDE-encoded, so a change in
//!   the data is noticed.
//! - Link goodput: wire bytes the data streams wrote per second over the last period.
//!   That is the link's rate only when the link was the bottleneck, i.e. the reader
//!   waited for room in the outbox for most of the period; otherwise it is a lower bound
//!   (the encoder or the source was slower). With HDE chosen on a lower bound, one
//!   period in [`LINK_PROBE_EVERY`] is sent raw to measure the link again.
//! - The decision is [`dwcp_hde::adaptive::choose`] between raw and HDE on one core
//!   (the reader thread encodes).
//!
//! The stream is announced as HDE, and a raw block is a frame with codec `none`, which
//! neither side's HDE state sees: sender and receiver HDE states advance over the same
//! blocks, so they stay identical whatever is chosen.

use std::time::{Duration, Instant};

use dwcp_hde::{
    Encoder,
    adaptive::{self, Choice, CodecOption, Measurement},
    config::{HdeConfig, Levels},
    stats::Stats,
};

use super::codec_tally::{AutoCodec, Decision, DecisionReason};
use crate::{amst::AmstError, protocol::frame::Codec};

/// How often the choice is made again.
pub const PERIOD: Duration = Duration::from_millis(500);
/// A period also ends after this many blocks, if it lasted [`MIN_PERIOD`] (a fast
/// transfer is decided early).
pub const PERIOD_BLOCKS: u64 = 32;
/// The shortest period whose rates mean something.
const MIN_PERIOD: Duration = Duration::from_millis(20);
/// Blocks HDE-encoded at the start, before the first decision.
pub const SAMPLE_BLOCKS: u64 = 4;
/// While raw is chosen, one block in this many is still HDE-encoded.
pub const RESAMPLE_EVERY: u64 = 16;
/// With HDE chosen on a lower bound of the link, one period in this many goes raw.
pub const LINK_PROBE_EVERY: u32 = 8;
/// Share of a period the reader must have waited for room for the wire rate to be the
/// link's.
const LINK_BOUND_WAIT: f64 = 0.5;

/// What the transfer measured about the link over one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    /// Wire bytes per second.
    pub wire_rate: f64,
    /// Whether the link was the bottleneck (the rate is the link's, not a lower bound).
    pub link_bound: bool,
}

/// The choice between raw and HDE from measured numbers (see the module documentation):
/// `link` in bytes per second, `hde` measured on this data. Without a codec measurement
/// the choice is raw.
#[must_use]
pub fn decide(link: f64, hde: Option<Measurement>) -> Choice {
    adaptive::choose(link, 1, hde.as_slice())
}

/// Below this ratio raw is chosen because the data hardly compresses (rather than
/// because the codec is slower than the link).
const INCOMPRESSIBLE_RATIO: f64 = 1.1;

/// The bounded label of `choice`, made from `link` and the `hde` measurement it came
/// from: the stage that limits HDE when it is chosen, else why raw wins.
#[must_use]
pub fn classify(choice: &Choice, link: f64, hde: Option<&Measurement>) -> Decision {
    if choice.option == CodecOption::None {
        let reason = match hde {
            None => DecisionReason::Unmeasured,
            Some(m) if m.ratio < INCOMPRESSIBLE_RATIO => DecisionReason::Incompressible,
            Some(_) => DecisionReason::CpuBound,
        };
        return Decision {
            codec: AutoCodec::None,
            reason,
        };
    }
    let limit = hde.map_or("link", |m| adaptive::effective_rate(m, link, 1).1);
    Decision {
        codec: AutoCodec::Hde,
        reason: if limit == "link" {
            DecisionReason::LinkBound
        } else {
            DecisionReason::CpuBound
        },
    }
}

/// The option auto uses for HDE.
fn hde_option(config: &HdeConfig) -> CodecOption {
    CodecOption::Hde {
        levels: config.levels,
        zstd_level: config.zstd_level,
    }
}

/// HDE or raw per block, decided from measurements.
pub struct AutoEncoder {
    hde: Box<Encoder>,
    option: CodecOption,
    choice: Option<Choice>,
    blocks: u64,
    /// Link estimate, bytes per second, and whether it is exact.
    link: Option<LinkSample>,
    /// Decayed HDE counters: data bytes, frame bytes, CPU nanoseconds.
    codec: (f64, f64, f64),
    last_stats: Stats,
    period_start: Instant,
    period_blocks: u64,
    period_wire: u64,
    period_waited: Duration,
    periods: u32,
    probing_link: bool,
    hde_bytes_in: u64,
    hde_bytes_out: u64,
}

impl std::fmt::Debug for AutoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoEncoder")
            .field("choice", &self.choice.as_ref().map(|c| c.option))
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl AutoEncoder {
    /// An encoder whose HDE part uses `config` (the stream is announced with it).
    pub fn new(config: &HdeConfig) -> Self {
        Self {
            hde: Box::new(Encoder::new(config)),
            option: hde_option(config),
            choice: None,
            blocks: 0,
            link: None,
            codec: (0.0, 0.0, 0.0),
            last_stats: Stats::default(),
            period_start: Instant::now(),
            period_blocks: 0,
            period_wire: 0,
            period_waited: Duration::ZERO,
            periods: 0,
            probing_link: false,
            hde_bytes_in: 0,
            hde_bytes_out: 0,
        }
    }

    /// Tells the encoder how the transfer goes: `wire_bytes` written by the data streams
    /// so far, and how long the reader just waited for room. Re-decides once a period;
    /// returns the decision when it did.
    pub fn observe(&mut self, wire_bytes: u64, waited: Duration) -> Option<Decision> {
        self.period_waited += waited;
        let elapsed = self.period_start.elapsed();
        let full =
            elapsed >= PERIOD || (self.period_blocks >= PERIOD_BLOCKS && elapsed >= MIN_PERIOD);
        if !full || self.blocks < SAMPLE_BLOCKS {
            return None;
        }
        let seconds = elapsed.as_secs_f64();
        let sample = LinkSample {
            wire_rate: wire_bytes.saturating_sub(self.period_wire) as f64 / seconds,
            link_bound: self.period_waited.as_secs_f64() >= seconds * LINK_BOUND_WAIT,
        };
        self.period_start = Instant::now();
        self.period_blocks = 0;
        self.period_wire = wire_bytes;
        self.period_waited = Duration::ZERO;
        self.periods += 1;
        self.link = Some(match self.link {
            // A lower bound never lowers an estimate; an exact rate replaces it.
            Some(old) if !sample.link_bound && old.wire_rate > sample.wire_rate => old,
            _ => sample,
        });
        self.decay_codec();
        self.redecide()
    }

    /// Halves the weight of older codec measurements.
    fn decay_codec(&mut self) {
        self.codec.0 /= 2.0;
        self.codec.1 /= 2.0;
        self.codec.2 /= 2.0;
    }

    /// The HDE measurement so far, if any block was HDE-encoded.
    pub fn measurement(&self) -> Option<Measurement> {
        let (data, frame, nanos) = self.codec;
        (data > 0.0 && frame > 0.0 && nanos > 0.0).then(|| Measurement {
            option: self.option,
            ratio: data / frame,
            encode_per_core: data * 1e9 / nanos,
            // The receiver decodes on one thread; HDE decodes faster than it encodes,
            // so the encode speed bounds it.
            decode_per_core: data * 1e9 / nanos,
        })
    }

    fn redecide(&mut self) -> Option<Decision> {
        let link = self.link?;
        let hde = self.measurement();
        let rate = link.wire_rate.max(1.0);
        let choice = decide(rate, hde);
        let decision = classify(&choice, rate, hde.as_ref());
        let hde_on_lower_bound = choice.option != CodecOption::None && !link.link_bound;
        self.probing_link = hde_on_lower_bound && self.periods.is_multiple_of(LINK_PROBE_EVERY);
        if self.choice.as_ref().map(|c| c.option) != Some(choice.option) {
            tracing::info!(codec = %choice.option, reason = %choice.reason, "Codec choice");
        }
        self.choice = Some(choice);
        Some(decision)
    }

    /// The current choice (`None` until the first decision).
    pub fn choice(&self) -> Option<&Choice> {
        self.choice.as_ref()
    }

    /// Data bytes in and frame bytes out of the HDE-encoded blocks.
    pub fn hde_bytes(&self) -> (u64, u64) {
        (self.hde_bytes_in, self.hde_bytes_out)
    }

    /// Whether the next block goes through HDE.
    fn use_hde(&self) -> bool {
        if self.blocks < SAMPLE_BLOCKS {
            return true;
        }
        if self.probing_link {
            return false;
        }
        match &self.choice {
            // Until the first decision the link is measured with raw blocks.
            None => false,
            Some(c) if c.option == CodecOption::None => self.blocks.is_multiple_of(RESAMPLE_EVERY),
            Some(_) => true,
        }
    }

    /// Encodes `raw` (at stream byte `offset`) into `out` as HDE or raw; returns the
    /// frame's codec.
    pub fn encode(
        &mut self,
        raw: &[u8],
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<Codec, AmstError> {
        let hde = self.use_hde();
        self.blocks += 1;
        self.period_blocks += 1;
        out.clear();
        if !hde {
            out.extend_from_slice(raw);
            return Ok(Codec::None);
        }
        self.hde
            .encode_block(offset / dwcp_hde::PAGE_SIZE as u64, raw, out)
            .map_err(|e| AmstError::Invalid(format!("HDE encoding failed: {e}")))?;
        let stats = self.hde.stats();
        let data = stats.data_bytes - self.last_stats.data_bytes;
        let frame = stats.frame_bytes - self.last_stats.frame_bytes;
        let nanos = stats.total_nanos - self.last_stats.total_nanos;
        self.last_stats = stats;
        self.codec.0 += data as f64;
        self.codec.1 += frame as f64;
        self.codec.2 += nanos as f64;
        self.hde_bytes_in += data;
        self.hde_bytes_out += frame;
        Ok(Codec::Hde)
    }

    /// The levels auto's HDE uses.
    pub fn levels(&self) -> Option<Levels> {
        match self.option {
            CodecOption::Hde { levels, .. } => Some(levels),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hde(ratio: f64, encode_mb_s: f64) -> Measurement {
        Measurement {
            option: hde_option(&HdeConfig::default()),
            ratio,
            encode_per_core: encode_mb_s * 1e6,
            decode_per_core: encode_mb_s * 2e6,
        }
    }

    #[test]
    fn fast_link_and_incompressible_data_go_raw() {
        // 2 GB/s link, HDE at 400 MB/s with ratio 1.0: raw wins.
        let c = decide(2e9, Some(hde(1.0, 400.0)));
        assert_eq!(c.option, CodecOption::None, "{}", c.reason);
    }

    #[test]
    fn slow_link_and_compressible_data_go_hde() {
        // 10 MB/s link, ratio 6 at 400 MB/s: HDE moves 60 MB/s of data.
        let c = decide(10e6, Some(hde(6.0, 400.0)));
        assert!(matches!(c.option, CodecOption::Hde { .. }), "{}", c.reason);
        assert!(c.effective_rate > 5.0 * 10e6, "{}", c.effective_rate);
    }

    #[test]
    fn a_fast_link_beats_a_slow_codec_even_on_compressible_data() {
        // 2 GB/s link, ratio 6 but encoding at 200 MB/s: raw wins (the example).
        let c = decide(2e9, Some(hde(6.0, 200.0)));
        assert_eq!(c.option, CodecOption::None, "{}", c.reason);
    }

    #[test]
    fn decisions_map_to_a_bounded_reason() {
        let label = |link: f64, m: Option<Measurement>| {
            let choice = decide(link, m);
            let d = classify(&choice, link, m.as_ref());
            (d.codec.label(), d.reason.label())
        };
        assert_eq!(label(10e6, Some(hde(6.0, 400.0))), ("hde", "link_bound"));
        // 100 MB/s link, ratio 6 at 400 MB/s: HDE still wins, its encoder limits it.
        assert_eq!(label(100e6, Some(hde(6.0, 400.0))), ("hde", "cpu_bound"));
        assert_eq!(label(2e9, Some(hde(6.0, 200.0))), ("none", "cpu_bound"));
        assert_eq!(
            label(2e9, Some(hde(1.0, 400.0))),
            ("none", "incompressible")
        );
        assert_eq!(label(1e6, None), ("none", "unmeasured"));
    }

    #[test]
    fn no_codec_measurement_means_raw() {
        assert_eq!(decide(1e6, None).option, CodecOption::None);
    }

    #[test]
    fn the_sample_blocks_are_hde_and_round_trip() {
        let config = HdeConfig {
            workers: 1,
            ..HdeConfig::default()
        };
        let mut enc = AutoEncoder::new(&config);
        let mut dec = dwcp_hde::Decoder::new(&config);
        let block: Vec<u8> = b"page ".iter().cycle().take(64 << 10).copied().collect();
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        for i in 0..SAMPLE_BLOCKS {
            let codec = enc
                .encode(&block, i * block.len() as u64, &mut wire)
                .unwrap();
            assert_eq!(codec, Codec::Hde);
            dec.decode_block(&wire, &mut back).unwrap();
            assert_eq!(back, block);
        }
        let m = enc.measurement().unwrap();
        assert!(m.ratio > 5.0, "{}", m.ratio);
        assert!(
            enc.choice().is_none(),
            "no decision before a period has passed"
        );
    }

    #[test]
    fn a_lower_bound_never_lowers_the_link_estimate() {
        let mut enc = AutoEncoder::new(&HdeConfig::default());
        enc.blocks = SAMPLE_BLOCKS;
        enc.period_start = Instant::now() - PERIOD;
        enc.observe(1_000_000_000, PERIOD); // exact: ~2 GB/s
        let first = enc.link.unwrap();
        assert!(first.link_bound);
        enc.period_start = Instant::now() - PERIOD;
        enc.observe(1_000_100_000, Duration::ZERO); // lower bound: tiny
        assert_eq!(enc.link.unwrap().wire_rate, first.wire_rate);
    }
}
