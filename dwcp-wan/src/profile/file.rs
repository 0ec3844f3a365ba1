//! Profiles as TOML: the keys, their forms, and the refusal of anything unknown.
//!
//! ```toml
//! name = "wan-1g-50ms-0.1pct"
//! rate = "1gbit"        # bit/s with unit bit, kbit, mbit, gbit
//! rtt = "50ms"          # ns, us, ms, s
//! jitter = "0ms"        # optional, default 0
//! loss = 0.001          # optional, fraction in [0, 1) or a string such as "0.1%"
//! queue = "bdp"         # optional: "bdp", a time ("5ms") or a size ("256KiB")
//! seed = 42             # optional: loss and jitter generator seed
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::{
    LinkProfile, ProfileError, QueueLimit, UnitError, parse_duration, parse_loss, parse_rate,
};

/// A profile file that could not be used.
#[derive(Debug, Error)]
pub enum ProfileFileError {
    /// The file could not be read.
    #[error("Cannot read profile {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not TOML of the expected keys.
    #[error("Profile is not valid TOML of the expected keys")]
    Toml(#[from] toml::de::Error),
    /// A value's text could not be read.
    #[error("Bad `{key}`")]
    Value {
        /// The key.
        key: &'static str,
        /// Why.
        source: UnitError,
    },
    /// The values cannot describe a link.
    #[error("Profile `{name}` is invalid")]
    Invalid {
        /// The profile's name.
        name: String,
        /// Why.
        source: ProfileError,
    },
}

/// `loss` may be a number or a string such as `"0.1%"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum LossValue {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    rate: String,
    rtt: String,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    loss: Option<LossValue>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
}

/// Reads and validates the profile in `path`.
pub(super) fn from_toml_file(path: &Path) -> Result<LinkProfile, ProfileFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_toml_str(&text)
}

/// Reads and validates a profile from TOML text.
pub(super) fn from_toml_str(text: &str) -> Result<LinkProfile, ProfileFileError> {
    let raw: RawProfile = toml::from_str(text)?;
    let value = |key: &'static str| move |source| ProfileFileError::Value { key, source };
    let profile = LinkProfile {
        rate_bps: parse_rate(&raw.rate).map_err(value("rate"))?,
        rtt: parse_duration(&raw.rtt).map_err(value("rtt"))?,
        jitter: match &raw.jitter {
            Some(text) => parse_duration(text).map_err(value("jitter"))?,
            None => std::time::Duration::ZERO,
        },
        loss: match raw.loss {
            Some(LossValue::Number(loss)) => loss,
            Some(LossValue::Text(text)) => parse_loss(&text).map_err(value("loss"))?,
            None => 0.0,
        },
        queue: match &raw.queue {
            Some(text) => QueueLimit::parse(text).map_err(value("queue"))?,
            None => QueueLimit::Bdp,
        },
        seed: raw.seed,
        name: raw.name,
    };
    profile
        .validate()
        .map_err(|source| ProfileFileError::Invalid {
            name: profile.name.clone(),
            source,
        })?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::*;

    /// The error and all its sources, joined, as a person would read them.
    fn chain(error: &ProfileFileError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_full_profile_reads() {
        let profile = from_toml_str(
            "name = \"x\"\nrate = \"100mbit\"\nrtt = \"20ms\"\njitter = \"1ms\"\nloss = \"0.5%\"\nqueue = \"5ms\"\nseed = 7\n",
        )
        .unwrap();
        assert_eq!(profile.rate_bps, 100_000_000);
        assert_eq!(profile.rtt, Duration::from_millis(20));
        assert_eq!(profile.jitter, Duration::from_millis(1));
        assert_eq!(profile.loss, 0.005);
        assert_eq!(profile.queue, QueueLimit::Time(Duration::from_millis(5)));
        assert_eq!(profile.seed, Some(7));
        let integer_loss =
            from_toml_str("name = \"y\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nloss = 0\n").unwrap();
        assert_eq!(integer_loss.loss, 0.0);
    }

    #[test]
    fn bad_profiles_are_refused_with_clear_errors() {
        let cases = [
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nlatency = \"5ms\"\n",
                "unknown field `latency`",
            ),
            ("name = \"x\"\nrtt = \"1ms\"\n", "missing field `rate`"),
            (
                "name = \"x\"\nrate = \"0\"\nrtt = \"1ms\"\n",
                "Profile `x` is invalid: Rate must be above 0",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"-1ms\"\n",
                "Bad `rtt`: Negative duration `-1ms`",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nloss = 1.0\n",
                "Loss 1 is not in [0, 1)",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nloss = \"100%\"\n",
                "Loss 1 is not in [0, 1)",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nloss = -0.2\n",
                "Loss -0.2 is not in [0, 1)",
            ),
            (
                "name = \"x\"\nrate = \"1 lightyear\"\nrtt = \"1ms\"\n",
                "Bad `rate`: `1 lightyear` is not a rate",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nqueue = \"10\"\n",
                "Queue of 10 B",
            ),
            (
                "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\nseed = -1\n",
                "seed",
            ),
            ("rate = [", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let error = from_toml_str(text).unwrap_err();
            let text = chain(&error);
            assert!(
                text.contains(expected),
                "{text:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let error = LinkProfile::from_toml_file("/nonexistent/wan.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Cannot read profile /nonexistent/wan.toml"
        );
    }

    #[test]
    fn a_profile_file_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "name = \"file\"\nrate = \"10mbit\"\nrtt = \"30ms\"\n",
        )
        .unwrap();
        let profile = LinkProfile::from_toml_file(&path).unwrap();
        assert_eq!(
            (profile.name.as_str(), profile.rate_bps),
            ("file", 10_000_000)
        );
    }
}
