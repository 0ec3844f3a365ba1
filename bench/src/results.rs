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

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn utc_stamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
