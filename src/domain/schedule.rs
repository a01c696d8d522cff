//! Pure syntax of timed triggers: cron expressions (5 fields, or 6 with seconds) and `at:`
//! times (local `YYYY-MM-DDTHH:MM[:SS]` in the project timezone, or RFC 3339 with offset).

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
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

/// A local time placed in `tz`: an ambiguous one (fall back) is the first of the two
/// instants; one that does not exist (spring forward) is the first valid instant after it.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward a minute at a time (gaps are at most a few hours) to the first
            // local time that exists, and keep its wall-clock reading.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&local)
        }
    }
}

/// The first firing of a cron expression strictly after `after`, in `tz`.
pub fn next_cron(expr: &str, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let schedule = check_cron(expr).ok()?;
    schedule
        .after(&after.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// The instant of an `at:` time in `tz`.
pub fn at_instant(at: &AtTime, tz: Tz) -> DateTime<Utc> {
    match at {
        AtTime::Local(t) => local_to_utc(tz, *t),
        AtTime::Instant(t) => t.with_timezone(&Utc),
    }
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
