//! Parsing the `dwcp.*` options of the guest kernel command line (`/proc/cmdline`).
//!
//! Words that do not start with `dwcp.` belong to the kernel and are ignored. Every
//! `dwcp.` word must be one of the known keys with a valid value, given at most once:
//! a typo is an error, not a silent default.

use std::{fmt, str::FromStr};

/// Default memory a workload owns, in MiB.
pub const DEFAULT_MEM_MIB: u32 = 64;
/// Default dirtying rate of `dirty` and `table`, in MiB/s.
pub const DEFAULT_RATE_MIB_S: u32 = 16;
/// Largest accepted `dwcp.mem_mib` (1 TiB).
pub const MAX_MEM_MIB: u32 = 1 << 20;
/// Largest accepted `dwcp.rate_mib_s`.
pub const MAX_RATE_MIB_S: u32 = 1 << 20;

/// What the guest does with its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workload {
    /// Nothing but the heartbeat.
    #[default]
    Idle,
    /// Builds files in tmpfs and archives them with busybox tar + gzip, over and over.
    Compress,
    /// An in-memory key/value table whose records are updated at the rate and verified.
    Table,
    /// Pages rewritten at the rate with content derived from (page, generation), verified.
    Dirty,
}

impl Workload {
    /// The name used on the command line and in the console lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Compress => "compress",
            Self::Table => "table",
            Self::Dirty => "dirty",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = CmdlineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Idle, Self::Compress, Self::Table, Self::Dirty]
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| CmdlineError::UnknownWorkload(s.to_owned()))
    }
}

/// The workload settings read from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `dwcp.workload`.
    pub workload: Workload,
    /// `dwcp.mem_mib`: memory the workload owns, in MiB (at least 1).
    pub mem_mib: u32,
    /// `dwcp.rate_mib_s`: dirtying rate of `dirty` and `table` in MiB/s (0: never dirty).
    pub rate_mib_s: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workload: Workload::default(),
            mem_mib: DEFAULT_MEM_MIB,
            rate_mib_s: DEFAULT_RATE_MIB_S,
        }
    }
}

/// A `dwcp.*` option that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// `dwcp.workload` names no workload.
    #[error("Unknown workload `{0}` (expected idle, compress, table or dirty)")]
    UnknownWorkload(String),
    /// A `dwcp.` key this program does not know.
    #[error("Unknown option `{0}` (expected dwcp.workload, dwcp.mem_mib or dwcp.rate_mib_s)")]
    UnknownKey(String),
    /// A `dwcp.` word without `=value`.
    #[error("Option `{0}` has no value")]
    MissingValue(String),
    /// A key given twice.
    #[error("Option `{0}` is given more than once")]
    Duplicate(String),
    /// A number that does not parse or is out of range.
    #[error("Option `{key}={value}` must be a whole number from {min} to {max}")]
    BadNumber {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
}

/// Reads the `dwcp.*` options of a kernel command line; missing ones keep their default.
pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
    let mut config = Config::default();
    let mut seen: Vec<&str> = Vec::new();
    for word in cmdline.split_whitespace() {
        if !word.starts_with("dwcp.") {
            continue;
        }
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| CmdlineError::MissingValue(word.to_owned()))?;
        if seen.contains(&key) {
            return Err(CmdlineError::Duplicate(key.to_owned()));
        }
        seen.push(key);
        match key {
            "dwcp.workload" => config.workload = value.parse()?,
            "dwcp.mem_mib" => config.mem_mib = number(key, value, 1, MAX_MEM_MIB)?,
            "dwcp.rate_mib_s" => config.rate_mib_s = number(key, value, 0, MAX_RATE_MIB_S)?,
            _ => return Err(CmdlineError::UnknownKey(key.to_owned())),
        }
    }
    Ok(config)
}

/// Parses `value` as a number in `min..=max`.
fn number(key: &str, value: &str, min: u32, max: u32) -> Result<u32, CmdlineError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| CmdlineError::BadNumber {
            key: key.to_owned(),
            value: value.to_owned(),
            min,
            max,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_no_dwcp_options() {
        let config = parse("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.workload, Workload::Idle);
        assert_eq!((config.mem_mib, config.rate_mib_s), (64, 16));
    }

    #[test]
    fn reads_every_option() {
        let config =
            parse("console=ttyS0 dwcp.workload=dirty dwcp.mem_mib=32 dwcp.rate_mib_s=0\n").unwrap();
        assert_eq!(
            config,
            Config {
                workload: Workload::Dirty,
                mem_mib: 32,
                rate_mib_s: 0
            }
        );
        for name in ["idle", "compress", "table", "dirty"] {
            let w = parse(&format!("dwcp.workload={name}")).unwrap().workload;
            assert_eq!(w.name(), name);
        }
    }

    #[test]
    fn rejects_bad_options() {
        assert_eq!(
            parse("dwcp.workload=dirt"),
            Err(CmdlineError::UnknownWorkload("dirt".into()))
        );
        assert_eq!(
            parse("dwcp.memmib=3"),
            Err(CmdlineError::UnknownKey("dwcp.memmib".into()))
        );
        assert_eq!(
            parse("dwcp.mem_mib"),
            Err(CmdlineError::MissingValue("dwcp.mem_mib".into()))
        );
        assert_eq!(
            parse("dwcp.mem_mib=1 dwcp.mem_mib=2"),
            Err(CmdlineError::Duplicate("dwcp.mem_mib".into()))
        );
        for bad in [
            "dwcp.mem_mib=0",
            "dwcp.mem_mib=-1",
            "dwcp.mem_mib=1x",
            "dwcp.mem_mib=",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::BadNumber { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("dwcp.rate_mib_s=99999999"),
            Err(CmdlineError::BadNumber { .. })
        ));
        let msg = parse("dwcp.mem_mib=0").unwrap_err().to_string();
        assert_eq!(
            msg,
            "Option `dwcp.mem_mib=0` must be a whole number from 1 to 1048576"
        );
    }
}
