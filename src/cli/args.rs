//! Arguments several commands share, parsed one way everywhere: a USER (a malformed name is a
//! usage error, exit 2, whatever the command) and the times of `--since`/`--until`.

use super::CliError;
use crate::domain::UserId;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A USER argument. A name that cannot be a user's (`BAD!`) is a usage error; whether such a
/// user exists is the command's to say (exit 1).
pub(super) fn user_arg(text: &str) -> Result<UserId, CliError> {
    UserId::parse(text).map_err(|e| CliError::usage(format!("error: {e}")))
}

/// The forms `--since` and `--until` take, for error messages.
const TIME_FORMS: &str = "an RFC 3339 time (2026-05-01T08:00:00+02:00), a local date or time \
    (2026-05-01, 2026-05-01T08:00) or an age (90s, 30m, 2h, 3d)";

/// A `--since`/`--until` value of `audit` and `export`: an RFC 3339 time; a date or a local
/// date-time (the same forms as an `at:` trigger), placed in `tz`; or an age, `N` then `s`,
/// `m`, `h` or `d`, counted back from `now`. A value in none of these forms is a usage error.
pub(super) fn time_arg(
    flag: &str,
    text: &str,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, CliError> {
    let usage = || CliError::usage(format!("error: --{flag} `{text}`: give {TIME_FORMS}"));
    let t = text.trim();
    // An age has its unit: a bare number is neither a time nor an age.
    if t.ends_with(|c: char| c.is_ascii_alphabetic())
        && let Some(age) = crate::config::parse_duration(t)
    {
        let age = chrono::Duration::from_std(age).map_err(|_| usage())?;
        return now.checked_sub_signed(age).ok_or_else(usage);
    }
    crate::script::time::parse_time(t, tz)
        .map(|t| t.utc)
        .map_err(|_| usage())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn times_dates_and_ages() {
        let now = at("2026-11-25T12:00:00Z");
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let ok = |s: &str, tz| time_arg("since", s, tz, now).unwrap();
        assert_eq!(ok("2h", Tz::UTC), at("2026-11-25T10:00:00Z"));
        assert_eq!(ok("3d", paris), at("2026-11-22T12:00:00Z"));
        assert_eq!(ok("90s", Tz::UTC), at("2026-11-25T11:58:30Z"));
        assert_eq!(ok("2026-11-24", Tz::UTC), at("2026-11-24T00:00:00Z"));
        assert_eq!(ok("2026-11-24", paris), at("2026-11-23T23:00:00Z"));
        assert_eq!(ok("2026-11-24T08:00", paris), at("2026-11-24T07:00:00Z"));
        assert_eq!(
            ok("2026-11-24T08:00:00+02:00", paris),
            at("2026-11-24T06:00:00Z")
        );
        for bad in ["", "2", "2w", "soon", "-2h", "2026-13-01"] {
            let e = time_arg("until", bad, Tz::UTC, now).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(e.message.starts_with("error: --until `"), "{}", e.message);
        }
    }

    #[test]
    fn a_malformed_user_is_a_usage_error() {
        assert_eq!(user_arg("BAD!").unwrap_err().code, 2);
        assert_eq!(user_arg("olga").unwrap().as_str(), "olga");
    }
}
