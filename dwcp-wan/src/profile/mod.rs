//! Link profiles: what a WAN link looks like (rate, round-trip time, jitter, loss, queue),
//! the built-in profiles shipped in `dwcp-wan/profiles/`, and their validation.

mod file;
mod units;

use std::time::Duration;

use thiserror::Error;

pub use file::ProfileFileError;
pub use units::{
    UnitError, format_duration, format_rate, parse_duration, parse_loss, parse_rate, parse_size,
};

/// The built-in profiles, embedded from `dwcp-wan/profiles/`.
const BUILTIN_FILES: &[&str] = &[
    include_str!("../../profiles/lan-1g.toml"),
    include_str!("../../profiles/metro-1g-5ms.toml"),
    include_str!("../../profiles/wan-1g-50ms-0.1pct.toml"),
    include_str!("../../profiles/intercontinental-500m-150ms-0.5pct.toml"),
];

/// The smallest queue the default (`bdp`) limit gives, so that links with a tiny
/// bandwidth-delay product still hold a burst of a few dozen full packets.
pub const MIN_DEFAULT_QUEUE_BYTES: u64 = 64 * 1024;

/// The largest packet the emulator carries (the links' MTU).
pub const MTU: u64 = 1500;

/// Upper bounds that catch typos (a rate in bit/s given as Gbit/s, an RTT in µs given as s).
const MAX_RATE_BPS: u64 = 100_000_000_000;
const MAX_RTT: Duration = Duration::from_secs(10);
const MAX_QUEUE_BYTES: u64 = 1 << 30;

/// How many bytes may wait for the link in one direction before new packets are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueLimit {
    /// One bandwidth-delay product (rate × RTT), at least [`MIN_DEFAULT_QUEUE_BYTES`].
    #[default]
    Bdp,
    /// As many bytes as the link sends in this time.
    Time(Duration),
    /// A fixed number of bytes.
    Bytes(u64),
}

impl QueueLimit {
    /// Reads `bdp`, a duration (`5ms`) or a size (`256KiB`).
    pub fn parse(text: &str) -> Result<QueueLimit, UnitError> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("bdp") {
            return Ok(QueueLimit::Bdp);
        }
        if let Ok(duration) = parse_duration(trimmed)
            && trimmed.trim_end().ends_with('s')
        {
            return Ok(QueueLimit::Time(duration));
        }
        parse_size(trimmed).map(QueueLimit::Bytes)
    }

    /// The limit in bytes for a link of this rate and round-trip time.
    pub fn bytes(&self, rate_bps: u64, rtt: Duration) -> u64 {
        let at_rate =
            |time: Duration| (u128::from(rate_bps) * time.as_nanos() / 8_000_000_000) as u64;
        match *self {
            QueueLimit::Bdp => at_rate(rtt).max(MIN_DEFAULT_QUEUE_BYTES),
            QueueLimit::Time(time) => at_rate(time),
            QueueLimit::Bytes(bytes) => bytes,
        }
    }
}

impl std::fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueLimit::Bdp => write!(f, "bdp"),
            QueueLimit::Time(time) => write!(f, "{}", format_duration(*time)),
            QueueLimit::Bytes(bytes) => write!(f, "{bytes} B"),
        }
    }
}

/// One emulated link, the same in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Name shown in output (a built-in's name, or `custom`).
    pub name: String,
    /// Rate of each direction in bit/s, counted over IP packets (headers included).
    pub rate_bps: u64,
    /// Round-trip time the link adds: each direction delays packets by half of it.
    pub rtt: Duration,
    /// Each packet's one-way delay varies uniformly within ± this; packets of one
    /// direction are never reordered by it.
    pub jitter: Duration,
    /// Probability that a packet is lost, independently in each direction, in `[0, 1)`.
    pub loss: f64,
    /// How much may wait for the link in each direction before tail drops.
    pub queue: QueueLimit,
    /// Seed of the loss and jitter generator; `None` draws one from the OS.
    pub seed: Option<u64>,
}

/// A profile whose values cannot describe a link.
#[derive(Debug, Error, PartialEq)]
pub enum ProfileError {
    /// The name is empty.
    #[error("Profile name is empty")]
    EmptyName,
    /// The rate is zero.
    #[error("Rate must be above 0 bit/s")]
    ZeroRate,
    /// The rate is beyond what the emulator can mean.
    #[error("Rate {} is above the maximum of {}", format_rate(*.0), format_rate(MAX_RATE_BPS))]
    RateTooHigh(u64),
    /// The round-trip time is too long.
    #[error("RTT {} is above the maximum of {}", format_duration(*.0), format_duration(MAX_RTT))]
    RttTooLong(Duration),
    /// The jitter could make the one-way delay negative.
    #[error("Jitter {} is above half the RTT ({}): a packet's delay cannot go below zero", format_duration(*jitter), format_duration(*half_rtt))]
    JitterAboveHalfRtt {
        /// The jitter asked for.
        jitter: Duration,
        /// Half the RTT (the one-way delay).
        half_rtt: Duration,
    },
    /// The loss is not a probability below 1.
    #[error(
        "Loss {0} is not in [0, 1): give a fraction such as 0.001 or a percentage such as 0.1%"
    )]
    LossOutOfRange(f64),
    /// The queue cannot hold one full packet, or is absurdly large.
    #[error("Queue of {bytes} B is outside {MTU} B (one full packet) to {MAX_QUEUE_BYTES} B")]
    QueueOutOfRange {
        /// The queue limit in bytes.
        bytes: u64,
    },
}

impl LinkProfile {
    /// A link of this rate and RTT with no jitter, no loss and the default queue.
    pub fn new(name: impl Into<String>, rate_bps: u64, rtt: Duration) -> LinkProfile {
        LinkProfile {
            name: name.into(),
            rate_bps,
            rtt,
            jitter: Duration::ZERO,
            loss: 0.0,
            queue: QueueLimit::default(),
            seed: None,
        }
    }

    /// The built-in profile of this name.
    pub fn builtin(name: &str) -> Option<LinkProfile> {
        LinkProfile::builtins()
            .into_iter()
            .find(|profile| profile.name == name)
    }

    /// Every built-in profile, from the fastest-and-nearest to the farthest.
    #[expect(
        clippy::expect_used,
        reason = "the embedded profiles are fixed at build time and tested"
    )]
    pub fn builtins() -> Vec<LinkProfile> {
        BUILTIN_FILES
            .iter()
            .map(|text| {
                file::from_toml_str(text).expect(
                    "built-in profiles are valid: the `builtins_are_valid` test reads them all",
                )
            })
            .collect()
    }

    /// Reads and validates a profile from a TOML file (see `dwcp-wan/profiles/` for the keys).
    pub fn from_toml_file(
        path: impl AsRef<std::path::Path>,
    ) -> Result<LinkProfile, ProfileFileError> {
        file::from_toml_file(path.as_ref())
    }

    /// Reads and validates a profile from TOML text.
    pub fn from_toml_str(text: &str) -> Result<LinkProfile, ProfileFileError> {
        file::from_toml_str(text)
    }

    /// Checks that the values describe a link the emulator can run.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.name.trim().is_empty() {
            return Err(ProfileError::EmptyName);
        }
        if self.rate_bps == 0 {
            return Err(ProfileError::ZeroRate);
        }
        if self.rate_bps > MAX_RATE_BPS {
            return Err(ProfileError::RateTooHigh(self.rate_bps));
        }
        if self.rtt > MAX_RTT {
            return Err(ProfileError::RttTooLong(self.rtt));
        }
        if self.jitter > self.one_way_delay() {
            return Err(ProfileError::JitterAboveHalfRtt {
                jitter: self.jitter,
                half_rtt: self.one_way_delay(),
            });
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(ProfileError::LossOutOfRange(self.loss));
        }
        let bytes = self.queue_bytes();
        if !(MTU..=MAX_QUEUE_BYTES).contains(&bytes) {
            return Err(ProfileError::QueueOutOfRange { bytes });
        }
        Ok(())
    }

    /// The delay each direction adds (half the RTT).
    pub fn one_way_delay(&self) -> Duration {
        self.rtt / 2
    }

    /// The queue limit in bytes.
    pub fn queue_bytes(&self) -> u64 {
        self.queue.bytes(self.rate_bps, self.rtt)
    }

    /// One line for people: `wan-1g-50ms-0.1pct: 1 Gbit/s, RTT 50 ms, jitter 0 ms, loss 0.1%, queue 6250000 B`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {}, RTT {}, jitter ±{}, loss {}%, queue {} B",
            self.name,
            format_rate(self.rate_bps),
            format_duration(self.rtt),
            format_duration(self.jitter),
            self.loss * 100.0,
            self.queue_bytes()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_match_their_names() {
        let builtins = LinkProfile::builtins();
        let names: Vec<&str> = builtins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lan-1g",
                "metro-1g-5ms",
                "wan-1g-50ms-0.1pct",
                "intercontinental-500m-150ms-0.5pct"
            ]
        );
        for profile in &builtins {
            profile.validate().unwrap();
        }
        let wan = LinkProfile::builtin("wan-1g-50ms-0.1pct").unwrap();
        assert_eq!(wan.rate_bps, 1_000_000_000);
        assert_eq!(wan.rtt, Duration::from_millis(50));
        assert_eq!(wan.loss, 0.001);
        assert_eq!(wan.queue_bytes(), 6_250_000);
        let far = LinkProfile::builtin("intercontinental-500m-150ms-0.5pct").unwrap();
        assert_eq!(
            (far.rate_bps, far.rtt, far.loss),
            (500_000_000, Duration::from_millis(150), 0.005)
        );
        assert_eq!(
            LinkProfile::builtin("lan-1g").unwrap().queue_bytes(),
            MIN_DEFAULT_QUEUE_BYTES
        );
        assert!(LinkProfile::builtin("moon-1k").is_none());
    }

    fn valid() -> LinkProfile {
        LinkProfile::new("test", 100_000_000, Duration::from_millis(10))
    }

    #[test]
    fn invalid_values_are_refused_with_clear_errors() {
        let cases: Vec<(LinkProfile, &str)> = vec![
            (
                LinkProfile {
                    rate_bps: 0,
                    ..valid()
                },
                "Rate must be above 0",
            ),
            (
                LinkProfile {
                    rate_bps: 200_000_000_000,
                    ..valid()
                },
                "above the maximum",
            ),
            (
                LinkProfile {
                    rtt: Duration::from_secs(11),
                    ..valid()
                },
                "RTT 11000 ms is above",
            ),
            (
                LinkProfile {
                    jitter: Duration::from_millis(6),
                    ..valid()
                },
                "Jitter 6 ms is above half the RTT (5 ms)",
            ),
            (
                LinkProfile {
                    loss: 1.0,
                    ..valid()
                },
                "Loss 1 is not in [0, 1)",
            ),
            (
                LinkProfile {
                    loss: -0.1,
                    ..valid()
                },
                "Loss -0.1 is not in [0, 1)",
            ),
            (
                LinkProfile {
                    loss: f64::NAN,
                    ..valid()
                },
                "is not in [0, 1)",
            ),
            (
                LinkProfile {
                    queue: QueueLimit::Bytes(100),
                    ..valid()
                },
                "Queue of 100 B",
            ),
            (
                LinkProfile {
                    queue: QueueLimit::Time(Duration::ZERO),
                    ..valid()
                },
                "Queue of 0 B",
            ),
            (
                LinkProfile {
                    name: " ".into(),
                    ..valid()
                },
                "Profile name is empty",
            ),
        ];
        for (profile, expected) in cases {
            let error = profile.validate().unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
        valid().validate().unwrap();
    }

    #[test]
    fn queue_limits_read_and_size() {
        assert_eq!(QueueLimit::parse("bdp"), Ok(QueueLimit::Bdp));
        assert_eq!(
            QueueLimit::parse("5ms"),
            Ok(QueueLimit::Time(Duration::from_millis(5)))
        );
        assert_eq!(QueueLimit::parse("256KiB"), Ok(QueueLimit::Bytes(262_144)));
        assert_eq!(QueueLimit::parse("3000"), Ok(QueueLimit::Bytes(3000)));
        assert!(QueueLimit::parse("lots").is_err());
        let rtt = Duration::from_millis(50);
        assert_eq!(
            QueueLimit::Time(Duration::from_millis(2)).bytes(1_000_000_000, rtt),
            250_000
        );
        assert_eq!(QueueLimit::Bdp.bytes(1_000_000_000, rtt), 6_250_000);
        assert_eq!(
            QueueLimit::Bdp.bytes(1_000_000, rtt),
            MIN_DEFAULT_QUEUE_BYTES
        );
    }
}
