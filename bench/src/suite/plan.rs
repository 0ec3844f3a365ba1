//! What a suite runs: the link profiles, the stream counts, the peers and the rounds.
//!
//! Three suites: `quick` (one emulated WAN profile, a few stream counts, one round; CI
//! runs it), `full` (every profile, 1 to 256 streams, more rounds) and `smoke` (loopback,
//! tiny transfers; for checking the pipeline itself).

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// iperf3 refuses more parallel streams than this.
pub const IPERF_MAX_STREAMS: usize = 128;
/// The agent accepts at most this many data streams.
pub const AGENT_MAX_STREAMS: usize = 256;
/// The pseudo-profile name of the loopback link (no emulation, no namespaces).
pub const LOOPBACK: &str = "loopback";
/// The profile the bandwidth goal is judged on.
pub const GOAL_PROFILE: &str = "wan-1g-50ms-0.1pct";
/// The emulated profiles `full` runs.
pub const EMULATED_PROFILES: &[&str] = &[
    "lan-1g",
    "metro-1g-5ms",
    "wan-1g-50ms-0.1pct",
    "intercontinental-500m-150ms-0.5pct",
];

/// A named suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// A few minutes on one emulated WAN profile; runs in CI.
    Quick,
    /// Every profile, 1 to 256 streams, three rounds.
    Full,
    /// Loopback and small transfers: checks the pipeline end to end in seconds.
    Smoke,
}

impl FromStr for Suite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Self::Quick),
            "full" => Ok(Self::Full),
            "smoke" => Ok(Self::Smoke),
            other => Err(format!(
                "unknown suite {other:?}: expected quick, full or smoke"
            )),
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quick => "quick",
            Self::Full => "full",
            Self::Smoke => "smoke",
        })
    }
}

/// A stream count for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Streams {
    /// This many streams.
    Fixed(usize),
    /// The agent's controller chooses.
    Auto,
}

impl FromStr for Streams {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=AGENT_MAX_STREAMS).contains(&n) => Ok(Self::Fixed(n)),
                _ => Err(format!(
                    "expected `auto` or a number in 1..={AGENT_MAX_STREAMS}, got {s:?}"
                )),
            },
        }
    }
}

impl fmt::Display for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// Everything one run of a suite does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Which suite.
    pub suite: Suite,
    /// Link profiles, in order (`loopback` or an emulated profile's name).
    pub profiles: Vec<String>,
    /// Agent stream counts per profile.
    pub streams: Vec<Streams>,
    /// `iperf3 -P N` peers per profile.
    pub iperf3_streams: Vec<usize>,
    /// Whether the plain single-stream copy (socat) runs.
    pub copy: bool,
    /// Bytes each transfer moves, per profile (same order as `profiles`).
    pub bytes: Vec<u64>,
    /// Rounds of every case.
    pub rounds: usize,
    /// A dwcp send or copy still running after this long is stopped and measured by
    /// what it moved so far (its transfer time is then extrapolated from that rate).
    pub cap: Duration,
    /// iperf3 runs for this many seconds (`-t`) instead of moving the transfer's bytes
    /// (`None`: `-n <bytes>`).
    pub iperf3_seconds: Option<u64>,
    /// Congestion control of dwcp's and iperf3's streams (`None`: the kernel's default).
    pub congestion: Option<String>,
}

/// Bytes a transfer moves on a profile: a few seconds at the profile's rate (single
/// streams on lossy links take far longer: they are stopped at the plan's cap).
fn bytes_for(profile: &str, suite: Suite) -> u64 {
    let mib = match (suite, profile) {
        (Suite::Smoke, _) => 16,
        (_, LOOPBACK) => 512,
        (Suite::Quick, _) => 384,
        (Suite::Full, p) if p.starts_with("intercontinental") => 256,
        (Suite::Full, _) => 512,
    };
    mib << 20
}

impl Plan {
    /// The default plan of `suite`, on `profiles` if given (else the suite's own).
    pub fn new(suite: Suite, profiles: &[String]) -> Self {
        let own: Vec<String> = match suite {
            Suite::Quick => vec![GOAL_PROFILE.into()],
            Suite::Full => EMULATED_PROFILES.iter().map(|p| (*p).into()).collect(),
            Suite::Smoke => vec![LOOPBACK.into()],
        };
        let profiles = if profiles.is_empty() {
            own
        } else {
            profiles.to_vec()
        };
        let (streams, iperf3_streams, rounds, cap_s) = match suite {
            Suite::Quick => (
                vec![
                    Streams::Fixed(1),
                    Streams::Fixed(4),
                    Streams::Fixed(16),
                    Streams::Auto,
                ],
                vec![1, 4, 16],
                1,
                25,
            ),
            Suite::Full => (
                [1, 2, 4, 8, 16, 32, 64, 128, 256]
                    .into_iter()
                    .map(Streams::Fixed)
                    .chain([Streams::Auto])
                    .collect(),
                vec![1, 2, 4, 8, 16, 32, 64, 128],
                3,
                120,
            ),
            Suite::Smoke => (
                vec![Streams::Fixed(1), Streams::Fixed(2), Streams::Auto],
                vec![1, 2],
                1,
                60,
            ),
        };
        let bytes = profiles.iter().map(|p| bytes_for(p, suite)).collect();
        Self {
            suite,
            profiles,
            streams,
            iperf3_streams,
            copy: true,
            bytes,
            rounds,
            cap: Duration::from_secs(cap_s),
            iperf3_seconds: match suite {
                Suite::Quick => Some(10),
                Suite::Full => Some(20),
                Suite::Smoke => None,
            },
            congestion: None,
        }
    }

    /// Overrides every profile's transfer size.
    pub fn with_size_mib(mut self, mib: u64) -> Self {
        self.bytes = vec![mib << 20; self.profiles.len()];
        self
    }

    /// Checks the plan can run.
    pub fn validate(&self) -> Result<(), String> {
        if self.profiles.is_empty() || self.streams.is_empty() {
            return Err("The plan has no profile or no stream count".into());
        }
        if self.rounds == 0 || self.bytes.contains(&0) {
            return Err("Rounds and transfer sizes must be positive".into());
        }
        if let Some(n) = self
            .iperf3_streams
            .iter()
            .find(|n| !(1..=IPERF_MAX_STREAMS).contains(*n))
        {
            return Err(format!(
                "iperf3 runs 1..={IPERF_MAX_STREAMS} streams, not {n}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_and_print() {
        for s in ["quick", "full", "smoke"] {
            assert_eq!(s.parse::<Suite>().unwrap().to_string(), s);
        }
        let err = "fast".parse::<Suite>().unwrap_err();
        assert!(err.contains("quick, full or smoke"), "{err}");
    }

    #[test]
    fn stream_counts_parse_within_the_agents_limits() {
        assert_eq!("auto".parse::<Streams>(), Ok(Streams::Auto));
        assert_eq!(" 256".parse::<Streams>(), Ok(Streams::Fixed(256)));
        assert!("0".parse::<Streams>().is_err());
        assert!("257".parse::<Streams>().is_err());
        assert!("many".parse::<Streams>().is_err());
    }

    #[test]
    fn quick_is_one_wan_profile_and_full_explores_1_to_256() {
        let quick = Plan::new(Suite::Quick, &[]);
        assert_eq!(quick.profiles, [GOAL_PROFILE]);
        assert_eq!(quick.iperf3_streams, [1, 4, 16]);
        assert!(quick.streams.contains(&Streams::Auto));
        quick.validate().unwrap();
        let full = Plan::new(Suite::Full, &[]);
        assert_eq!(full.profiles.len(), EMULATED_PROFILES.len());
        assert!(full.streams.contains(&Streams::Fixed(256)));
        assert_eq!(full.iperf3_streams.last(), Some(&IPERF_MAX_STREAMS));
        full.validate().unwrap();
    }

    #[test]
    fn profiles_given_replace_the_suites_own() {
        let plan = Plan::new(Suite::Quick, &["lan-1g".into(), LOOPBACK.into()]).with_size_mib(8);
        assert_eq!(plan.profiles, ["lan-1g", LOOPBACK]);
        assert_eq!(plan.bytes, [8 << 20, 8 << 20]);
    }

    #[test]
    fn invalid_plans_are_refused() {
        let mut plan = Plan::new(Suite::Smoke, &[]);
        plan.iperf3_streams.push(129);
        assert!(plan.validate().unwrap_err().contains("1..=128"));
        let mut plan = Plan::new(Suite::Smoke, &[]);
        plan.rounds = 0;
        assert!(plan.validate().is_err());
        assert!(
            Plan::new(Suite::Smoke, &[])
                .with_size_mib(0)
                .validate()
                .is_err()
        );
    }
}
