//! Checking that the memory a workload asks for is there before taking it, so that a
//! too large `dwcp.mem_mib` is a clear error line rather than an out-of-memory kill.

use std::fs;

/// Where the kernel reports free memory.
const MEMINFO: &str = "/proc/meminfo";

/// Memory that cannot be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// More than the guest has available.
    #[error("dwcp.mem_mib={wanted} exceeds the {available} MiB the guest has available")]
    TooMuch {
        /// MiB asked for.
        wanted: u64,
        /// MiB available.
        available: u64,
    },
    /// `/proc/meminfo` could not be read or has no `MemAvailable`.
    #[error("Cannot read MemAvailable from {MEMINFO}")]
    Unknown,
}

/// `MemAvailable` of a `/proc/meminfo` text, in MiB.
pub fn available_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib / 1024)
}

/// Fails unless `wanted_mib` fits in what `meminfo` reports available.
pub fn check(wanted_mib: u64, meminfo: &str) -> Result<(), MemoryError> {
    let available = available_mib(meminfo).ok_or(MemoryError::Unknown)?;
    if wanted_mib > available {
        return Err(MemoryError::TooMuch {
            wanted: wanted_mib,
            available,
        });
    }
    Ok(())
}

/// [`check`] against this machine's `/proc/meminfo`.
pub fn check_here(wanted_mib: u64) -> Result<(), MemoryError> {
    let meminfo = fs::read_to_string(MEMINFO).map_err(|_| MemoryError::Unknown)?;
    check(wanted_mib, &meminfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:         250000 kB\nMemFree:          200000 kB\n\
                           MemAvailable:     204800 kB\n";

    #[test]
    fn reads_available_memory() {
        assert_eq!(available_mib(MEMINFO), Some(200));
        assert_eq!(available_mib("MemTotal: 1 kB\n"), None);
        assert_eq!(available_mib("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn refuses_more_than_available() {
        assert_eq!(check(200, MEMINFO), Ok(()));
        let err = check(201, MEMINFO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dwcp.mem_mib=201 exceeds the 200 MiB the guest has available"
        );
        assert_eq!(check(1, "nothing"), Err(MemoryError::Unknown));
    }
}
