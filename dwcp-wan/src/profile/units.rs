//! Human-readable quantities in profiles and flags: rates (`1gbit`), durations (`0.2ms`),
//! sizes (`256KiB`) and loss fractions (`0.001` or `0.1%`).

use std::time::Duration;

use thiserror::Error;

/// A quantity that could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    /// The text is empty.
    #[error("Empty {what}")]
    Empty {
        /// What was expected (rate, duration, size, loss).
        what: &'static str,
    },
    /// The text is negative.
    #[error("Negative {what} `{text}`")]
    Negative {
        /// What was expected.
        what: &'static str,
        /// The text as given.
        text: String,
    },
    /// The number part is not a number.
    #[error("`{text}` is not a {what}: expected {expected}")]
    Malformed {
        /// What was expected.
        what: &'static str,
        /// The text as given.
        text: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// The value does not fit in the internal representation.
    #[error("{what} `{text}` is too large")]
    TooLarge {
        /// What was expected.
        what: &'static str,
        /// The text as given.
        text: String,
    },
}

const RATE_FORMS: &str =
    "a number of bit/s with an optional unit bit, kbit, mbit or gbit (e.g. `500mbit`)";
const DURATION_FORMS: &str = "a number with a unit ns, us, ms or s (e.g. `0.2ms`)";
const SIZE_FORMS: &str =
    "a number of bytes with an optional unit B, KB, KiB, MB or MiB (e.g. `256KiB`)";
const LOSS_FORMS: &str = "a fraction (e.g. `0.001`) or a percentage (e.g. `0.1%`)";

/// Splits `text` into its number and its (lower-cased, trimmed) unit.
fn split(
    text: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<(f64, String), UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty { what });
    }
    if text.starts_with('-') {
        return Err(UnitError::Negative {
            what,
            text: text.to_owned(),
        });
    }
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let malformed = || UnitError::Malformed {
        what,
        text: text.to_owned(),
        expected,
    };
    let value: f64 = number.parse().map_err(|_| malformed())?;
    if !value.is_finite() {
        return Err(malformed());
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Scales `value` by `factor` into a `u64`, refusing what does not fit.
fn scaled(value: f64, factor: f64, what: &'static str, text: &str) -> Result<u64, UnitError> {
    let scaled = (value * factor).round();
    if scaled >= u64::MAX as f64 {
        return Err(UnitError::TooLarge {
            what,
            text: text.trim().to_owned(),
        });
    }
    // The value is finite, non-negative and below u64::MAX: the cast is exact up to rounding.
    Ok(scaled as u64)
}

/// Reads a rate in bit/s: `1gbit`, `500mbit`, `100kbit`, `1000000` (bit/s).
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    const WHAT: &str = "rate";
    let (value, unit) = split(text, WHAT, RATE_FORMS)?;
    let factor = match unit.trim_end_matches("/s").trim_end_matches("ps") {
        "" | "bit" | "b" => 1.0,
        "k" | "kbit" | "kb" => 1e3,
        "m" | "mbit" | "mb" => 1e6,
        "g" | "gbit" | "gb" => 1e9,
        _ => {
            return Err(UnitError::Malformed {
                what: WHAT,
                text: text.trim().to_owned(),
                expected: RATE_FORMS,
            });
        }
    };
    scaled(value, factor, WHAT, text)
}

/// Reads a duration: `150ms`, `0.2ms`, `50us`, `1s`, `0` (a bare zero needs no unit).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    const WHAT: &str = "duration";
    let (value, unit) = split(text, WHAT, DURATION_FORMS)?;
    let factor = match unit.as_str() {
        "" if value == 0.0 => 0.0,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => {
            return Err(UnitError::Malformed {
                what: WHAT,
                text: text.trim().to_owned(),
                expected: DURATION_FORMS,
            });
        }
    };
    Ok(Duration::from_nanos(scaled(value, factor, WHAT, text)?))
}

/// Reads a size in bytes: `256KiB`, `1MB`, `64000`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    const WHAT: &str = "size";
    let (value, unit) = split(text, WHAT, SIZE_FORMS)?;
    let factor = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1024.0 * 1024.0,
        _ => {
            return Err(UnitError::Malformed {
                what: WHAT,
                text: text.trim().to_owned(),
                expected: SIZE_FORMS,
            });
        }
    };
    scaled(value, factor, WHAT, text)
}

/// Reads a loss probability: `0.001` or `0.1%`.
pub fn parse_loss(text: &str) -> Result<f64, UnitError> {
    const WHAT: &str = "loss";
    let (value, unit) = split(text, WHAT, LOSS_FORMS)?;
    match unit.as_str() {
        "" => Ok(value),
        "%" => Ok(value / 100.0),
        _ => Err(UnitError::Malformed {
            what: WHAT,
            text: text.trim().to_owned(),
            expected: LOSS_FORMS,
        }),
    }
}

/// Formats a rate for people: `1 Gbit/s`, `500 Mbit/s`, `64 kbit/s`.
pub fn format_rate(bps: u64) -> String {
    let (value, unit) = if bps >= 1_000_000_000 {
        (bps as f64 / 1e9, "Gbit/s")
    } else if bps >= 1_000_000 {
        (bps as f64 / 1e6, "Mbit/s")
    } else if bps >= 1_000 {
        (bps as f64 / 1e3, "kbit/s")
    } else {
        (bps as f64, "bit/s")
    };
    format!("{} {unit}", trim_float(value))
}

/// Formats a duration in milliseconds: `0.2 ms`, `150 ms`.
pub fn format_duration(duration: Duration) -> String {
    format!("{} ms", trim_float(duration.as_secs_f64() * 1e3))
}

/// Prints `value` with up to three decimals and no trailing zeros.
fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_and_without_units() {
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500Mbit"), Ok(500_000_000));
        assert_eq!(parse_rate("2.5mbit"), Ok(2_500_000));
        assert_eq!(parse_rate("100kbit/s"), Ok(100_000));
        assert_eq!(parse_rate("1gbps"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1200"), Ok(1200));
    }

    #[test]
    fn bad_rates_are_refused_with_the_accepted_forms() {
        assert!(matches!(parse_rate(""), Err(UnitError::Empty { .. })));
        assert!(matches!(
            parse_rate("-1gbit"),
            Err(UnitError::Negative { .. })
        ));
        let error = parse_rate("fast").unwrap_err();
        assert!(
            error.to_string().contains("`fast` is not a rate"),
            "{error}"
        );
        assert!(parse_rate("1 furlong").is_err());
        assert!(parse_rate("1e30gbit").is_err());
    }

    #[test]
    fn durations_read_in_every_unit() {
        assert_eq!(parse_duration("0.2ms"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_duration("150 ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(matches!(
            parse_duration("-5ms"),
            Err(UnitError::Negative { .. })
        ));
        assert!(matches!(
            parse_duration("5"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("5 fortnights"),
            Err(UnitError::Malformed { .. })
        ));
    }

    #[test]
    fn sizes_and_losses_read() {
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert!(parse_size("1 GiB-ish").is_err());
        assert_eq!(parse_loss("0.1%"), Ok(0.001));
        assert_eq!(parse_loss("0.005"), Ok(0.005));
        assert!(matches!(
            parse_loss("-0.1"),
            Err(UnitError::Negative { .. })
        ));
        assert!(parse_loss("0.1 per cent").is_err());
    }

    #[test]
    fn quantities_format_for_people() {
        assert_eq!(format_rate(1_000_000_000), "1 Gbit/s");
        assert_eq!(format_rate(500_000_000), "500 Mbit/s");
        assert_eq!(format_duration(Duration::from_micros(200)), "0.2 ms");
        assert_eq!(format_duration(Duration::from_millis(150)), "150 ms");
    }
}
