//! Where benchmark results go: `bench/results/<UTC timestamp>-<name>/`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
pub fn now_stamp() -> anyhow::Result<String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("Clock before 1970")?
        .as_secs();
    Ok(utc_stamp(secs))
}

/// Creates and returns a fresh results directory for benchmark `name`.
pub fn new_dir(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let dir = root.join(format!("{}-{name}", now_stamp()?));
    std::fs::create_dir_all(&dir).with_context(|| format!("Create {}", dir.display()))?;
    Ok(dir)
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (RFC 3339 without separators).
pub fn utc_stamp(secs: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_known_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_000_000), "20261118T110640Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
