//! Pure syntax of timed triggers: cron expressions (5 fields, or 6 with seconds) and `at:`
//! times (local `YYYY-MM-DDTHH:MM[:SS]` in the project timezone, or RFC 3339 with offset).

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use std::str::FromStr;

/// A cron expression in the `cron` crate's 6-field form (seconds first).
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields = expr.split_whitespace().count();
    match fields {
        5 => Ok(format!("0 {}", expr.trim())),
        6 => Ok(expr.trim().to_string()),
        n => Err(format!(
            "cron expression `{expr}` has {n} fields; use 5 (min hour day month weekday) or 6 (with seconds first)"
        )),
    }
}

/// Checks a cron expression.
pub fn check_cron(expr: &str) -> Result<cron::Schedule, String> {
    let six = normalize_cron(expr)?;
    cron::Schedule::from_str(&six).map_err(|e| format!("invalid cron expression `{expr}`: {e}"))
}

/// An `at:` time as written: a local time to be placed in a timezone, or a fixed instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AtTime {
    Local(NaiveDateTime),
    Instant(DateTime<FixedOffset>),
}

/// Parses an `at:` time.
pub fn check_at(s: &str) -> Result<AtTime, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(AtTime::Instant(t));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(AtTime::Local(t));
        }
    }
    Err(format!(
        "invalid time `{s}`: use a local time like 2026-05-01T08:00 or RFC 3339 like 2026-05-01T08:00:00+02:00"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields() {
        assert!(check_cron("0 18 * * *").is_ok());
        assert!(check_cron("30 0 18 * * *").is_ok());
        assert!(check_cron("0 18 * *").is_err());
        assert!(check_cron("0 25 * * *").is_err());
    }

    #[test]
    fn at_times() {
        assert!(matches!(check_at("2026-05-01T08:00"), Ok(AtTime::Local(_))));
        assert!(matches!(
            check_at("2026-05-01T08:00:30"),
            Ok(AtTime::Local(_))
        ));
        assert!(matches!(
            check_at("2026-05-01T08:00:00+02:00"),
            Ok(AtTime::Instant(_))
        ));
        assert!(check_at("tomorrow").is_err());
    }
}
