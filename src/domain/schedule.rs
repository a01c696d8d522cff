//! Pure syntax of timed triggers: cron expressions (5 fields, or 6 with seconds) and `at:`
//! times (local `YYYY-MM-DDTHH:MM[:SS]` in the project timezone, or RFC 3339 with offset).

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// A cron expression in the `cron` crate's 6-field form (seconds first), with numeric
/// weekdays as names: in standard cron 0 and 7 are Sunday and 1 is Monday, while the crate
/// counts 1 as Sunday, so `1-5` must reach it as `Mon-Fri`.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let mut fields: Vec<String> = expr.split_whitespace().map(str::to_string).collect();
    match fields.len() {
        5 => fields.insert(0, "0".into()),
        6 => {}
        n => {
            return Err(format!(
                "cron expression `{expr}` has {n} fields; use 5 (min hour day month weekday) or 6 (with seconds first)"
            ));
        }
    }
    fields[5] = weekday_names(&fields[5])?;
    Ok(fields.join(" "))
}

/// Rewrites the numbers 0–7 of a weekday field as names the crate reads the standard way:
/// `1-5` → `Mon-Fri`, `0,6` → `Sun,Sat`, `7` → `Sun`. A range that ends on 7 (Sunday after
/// Saturday) or has a step cannot be a range of names, since the crate's week starts on
/// Sunday: it is written out as a list (`5-7` → `Fri,Sat,Sun`, `1-7/2` → `Mon,Wed,Fri,Sun`).
/// `*`, `*/n` and names are left as they are (`*/n` picks the same days in both countings).
fn weekday_names(field: &str) -> Result<String, String> {
    let items = field
        .split(',')
        .map(weekday_item)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(items.join(","))
}

const DAY_NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One item of a weekday list: `N`, `A-B`, `A-B/S` or `A/S` with numbers, or anything else.
fn weekday_item(item: &str) -> Result<String, String> {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (range, None),
    };
    let day = |s: &str| -> Result<usize, String> {
        if numeric(s) {
            s.parse()
                .ok()
                .filter(|n| *n <= 7)
                .ok_or_else(|| format!("weekday `{s}` is not 0–7 (0 and 7 are Sunday)"))
        } else {
            DAY_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(s))
                .ok_or_else(|| format!("`{s}` is not a weekday"))
        }
    };
    if !numeric(lo) && !hi.is_some_and(numeric) {
        return Ok(item.to_string()); // `*`, `*/2`, `Mon-Fri`: the crate reads these as written
    }
    let lo_n = day(lo)?;
    // `A/S` runs from A to the end of the week, as in standard cron.
    let hi_n = match hi {
        Some(h) => day(h)?,
        None if step.is_some() => 7,
        None => lo_n,
    };
    if lo_n > hi_n {
        return Err(format!(
            "weekday range `{range}` runs backwards; write it as a list, e.g. `5,6,0`"
        ));
    }
    let step = match step {
        None => 1,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("weekday step `{s}` is not a number from 1"))?,
    };
    if step == 1 && hi_n < 7 {
        return Ok(if lo_n == hi_n {
            DAY_NAMES[lo_n].to_string()
        } else {
            format!("{}-{}", DAY_NAMES[lo_n], DAY_NAMES[hi_n])
        });
    }
    // 7 is Sunday again: listed once, in week order from Monday (Sunday last).
    let mut days: Vec<usize> = (lo_n..=hi_n).step_by(step).map(|d| d % 7).collect();
    days.sort_by_key(|d| (d + 6) % 7);
    days.dedup();
    Ok(days
        .iter()
        .map(|d| DAY_NAMES[*d])
        .collect::<Vec<_>>()
        .join(","))
}

/// Checks a cron expression.
pub fn check_cron(expr: &str) -> Result<cron::Schedule, String> {
    let six = normalize_cron(expr)?;
    cron::Schedule::from_str(&six).map_err(|e| {
        // The crate's message repeats the expression with a caret; its last line says why.
        let e = e.to_string();
        let why = e
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && *l != "^")
            .unwrap_or("");
        format!(
            "invalid cron expression `{expr}`: {}",
            plain_cron_reason(why)
        )
    })
}

/// The cron crate's range errors in a user's words, with the field's real range: its
/// "Hours must be less than 23. ('25' specified.)" means hours go to 23 at most.
fn plain_cron_reason(why: &str) -> String {
    const FIELDS: [(&str, &str, &str); 7] = [
        ("Seconds", "second", "0–59"),
        ("Minutes", "minute", "0–59"),
        ("Hours", "hour", "0–23"),
        ("Days of Month", "day of the month", "1–31"),
        ("Months", "month", "1–12"),
        ("Days of Week", "weekday", "0–7 (0 and 7 are Sunday)"),
        ("Years", "year", "1970–2100"),
    ];
    let given = why
        .split_once("('")
        .and_then(|(_, r)| r.split_once("' specified"))
        .map(|(v, _)| v);
    for (name, word, range) in FIELDS {
        let Some(rest) = why
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(" must be "))
        else {
            continue;
        };
        let Some(given) = given else { break };
        if let Some(max) = rest.strip_prefix("between 1 and ") {
            let max = max.split('.').next().unwrap_or(max);
            return format!("the {word} step must be 1–{max}, not {given}");
        }
        return format!("{word} must be {range}, not {given}");
    }
    why.to_string()
}

/// The schedules whose earliest match is the expression's next firing. As in standard cron,
/// when both the day of the month and the weekday are restricted (neither starts with `*`), a
/// day matching either one fires (`0 9 1 * 1`: the 1st, and every Monday); the crate alone
/// would want both.
fn day_schedules(expr: &str) -> Result<Vec<cron::Schedule>, String> {
    let whole = check_cron(expr)?;
    let six = normalize_cron(expr)?;
    let fields: Vec<&str> = six.split_whitespace().collect();
    let restricted = |f: &str| !f.starts_with('*') && !f.starts_with('?');
    if !(restricted(fields[3]) && restricted(fields[5])) {
        return Ok(vec![whole]);
    }
    let with = |i: usize| {
        let mut f = fields.clone();
        f[i] = "*";
        cron::Schedule::from_str(&f.join(" ")).map_err(|e| e.to_string())
    };
    Ok(vec![with(5)?, with(3)?])
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
///
/// The expression is matched against local wall-clock times, and each match is placed with
/// [`local_to_utc`]: a match in a spring-forward gap fires once, at the first valid instant
/// after the gap; a match in a fall-back hour fires once, at its first occurrence. Matches that
/// land on the same instant fire once.
///
/// The work is bounded whatever the expression (`* * * * * *` included): one search of the
/// cron crate per schedule, from the wall-clock time of `after`. `None` only when the
/// expression has no instant left (see [`never_fires`]).
pub fn next_cron(expr: &str, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let schedules = day_schedules(expr).ok()?;
    let from = wall_start(after, tz);
    // A match placed at or before `after` is possible only for wall times in a spring-forward
    // gap placed later (see `local_to_utc`); the next match after it is then the answer.
    let mut from = Utc.from_utc_datetime(&from);
    for _ in 0..4 {
        let m = schedules
            .iter()
            .filter_map(|s| s.after(&from).next())
            .min()?;
        let at = local_to_utc(tz, m.naive_utc());
        if at > after {
            return Some(at);
        }
        from = m;
    }
    None
}

/// The wall-clock time after which the matches placed after `after` start. Matches placed
/// strictly after `after` are exactly the matches after its wall-clock time, except when
/// `after` falls in the second run of a fall-back hour: wall times of that hour are placed at
/// their first occurrence (before `after`), so the search starts where the repeated hour ends.
fn wall_start(after: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    use chrono::LocalResult;
    let w = after.with_timezone(&tz).naive_local();
    let LocalResult::Ambiguous(_, second) = tz.from_local_datetime(&w) else {
        return w;
    };
    if after < second.with_timezone(&Utc) {
        return w; // the first occurrence
    }
    // The repeated hour ends within `w + (the offsets' difference)`: find its end to the
    // second (the smallest wall time after `w` that is not ambiguous), by bisection.
    let first = tz
        .from_local_datetime(&w)
        .earliest()
        .map(|t| t.with_timezone(&Utc));
    let span = first.map_or(Duration::hours(1), |f| second.with_timezone(&Utc) - f);
    let ambiguous =
        |t: NaiveDateTime| matches!(tz.from_local_datetime(&t), LocalResult::Ambiguous(..));
    let (mut lo, mut hi) = (w, w + span);
    if ambiguous(hi) {
        return hi; // not a single fall-back (never seen in tzdata): start after it anyway
    }
    while hi - lo > Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if ambiguous(mid) { lo = mid } else { hi = mid }
    }
    // Matches strictly after this are the first ones past the repeated hour.
    hi - Duration::seconds(1)
}

/// Whether a (valid) cron expression can never fire: its days do not exist (`0 0 30 2 *`,
/// `0 0 31 4 *`). The cron crate searches every year it knows; no match means none will ever
/// come.
pub fn never_fires(expr: &str) -> bool {
    let start = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    start.is_some_and(|t| next_cron(expr, t, Tz::UTC).is_none())
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
    fn weekdays_count_as_in_standard_cron() {
        assert_eq!(
            normalize_cron("30 7 * * 1-5").unwrap(),
            "0 30 7 * * Mon-Fri"
        );
        assert_eq!(normalize_cron("0 9 * * 0,6").unwrap(), "0 0 9 * * Sun,Sat");
        assert_eq!(normalize_cron("0 9 * * 7").unwrap(), "0 0 9 * * Sun");
        assert_eq!(normalize_cron("0 9 * * */2").unwrap(), "0 0 9 * * */2");
        assert_eq!(
            normalize_cron("0 9 * * Sun-Thu").unwrap(),
            "0 0 9 * * Sun-Thu"
        );
        assert!(check_cron("0 9 * * 8").is_err());
        // Ranges that end on 7 (Sunday after Saturday), lists and steps, as standard cron has them.
        for (expr, six) in [
            ("0 9 * * 1-7", "0 0 9 * * Mon,Tue,Wed,Thu,Fri,Sat,Sun"),
            ("0 9 * * 5-7", "0 0 9 * * Fri,Sat,Sun"),
            ("0 9 * * 0-7", "0 0 9 * * Mon,Tue,Wed,Thu,Fri,Sat,Sun"),
            ("0 9 * * 7-7", "0 0 9 * * Sun"),
            ("0 9 * * 0-6", "0 0 9 * * Sun-Sat"),
            ("0 9 * * 6,7", "0 0 9 * * Sat,Sun"),
            ("0 9 * * 1-5,7", "0 0 9 * * Mon-Fri,Sun"),
            ("0 9 * * 1-7/2", "0 0 9 * * Mon,Wed,Fri,Sun"),
            ("0 9 * * 1/3", "0 0 9 * * Mon,Thu,Sun"),
            ("0 9 * * mon-5", "0 0 9 * * Mon-Fri"),
        ] {
            assert_eq!(normalize_cron(expr).unwrap(), six, "{expr}");
            assert!(check_cron(expr).is_ok(), "{expr}");
        }
        assert!(check_cron("0 9 * * 5-1").unwrap_err().contains("backwards"));
        // The crate's range errors, with the field's real range.
        for (expr, why) in [
            ("0 25 * * *", "hour must be 0–23, not 25"),
            ("61 * * * *", "minute must be 0–59, not 61"),
            ("0 9 0 * *", "day of the month must be 1–31, not 0"),
            ("0 9 32 * *", "day of the month must be 1–31, not 32"),
            ("0 9 * 13 *", "month must be 1–12, not 13"),
            ("0 */30 * * *", "the hour step must be 1–23, not 30"),
        ] {
            let e = check_cron(expr).unwrap_err();
            assert_eq!(e, format!("invalid cron expression `{expr}`: {why}"));
        }
        assert!(check_cron("0 9 * * 1-5/0").is_err());
        // Friday 2026-04-24 18:00 Paris → the next weekday 07:30 is Monday the 27th.
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let t = next_cron("30 7 * * 1-5", at(paris, "2026-04-24 18:00"), paris).unwrap();
        assert_eq!(
            t.with_timezone(&paris).format("%a %d %H:%M").to_string(),
            "Mon 27 07:30"
        );
        let t = next_cron("30 7 * * 0", at(paris, "2026-04-24 18:00"), paris).unwrap();
        assert_eq!(
            t.with_timezone(&paris).format("%a %d").to_string(),
            "Sun 26"
        );
    }

    /// The weekdays (Mon, Tue, …) on which `expr` fires in the 14 days after Monday 2026-04-20.
    fn weekdays(expr: &str) -> Vec<String> {
        let utc: Tz = "UTC".parse().unwrap();
        let end = at(utc, "2026-05-04 00:00");
        let mut t = at(utc, "2026-04-20 00:00");
        let mut out = Vec::new();
        while let Some(n) = next_cron(expr, t, utc).filter(|n| *n < end) {
            out.push(n.format("%a").to_string());
            t = n;
        }
        out
    }

    #[test]
    fn weekday_fields_fire_on_the_days_standard_cron_does() {
        let week = |days: &str| {
            let days: Vec<String> = days.split(' ').map(str::to_string).collect();
            [days.clone(), days].concat()
        };
        assert_eq!(weekdays("0 9 * * 1-7"), week("Mon Tue Wed Thu Fri Sat Sun"));
        assert_eq!(weekdays("0 9 * * 0-6"), week("Mon Tue Wed Thu Fri Sat Sun"));
        assert_eq!(weekdays("0 9 * * 5-7"), week("Fri Sat Sun"));
        assert_eq!(weekdays("0 9 * * 7"), week("Sun"));
        assert_eq!(weekdays("0 9 * * 6,7"), week("Sat Sun"));
        assert_eq!(weekdays("0 9 * * 0,6"), week("Sat Sun"));
        // Standard cron's */2 is 0,2,4,6: Sunday, Tuesday, Thursday, Saturday.
        assert_eq!(weekdays("0 9 * * */2"), week("Tue Thu Sat Sun"));
        assert_eq!(weekdays("0 9 * * 1-5/2"), week("Mon Wed Fri"));
        assert_eq!(weekdays("0 9 * * 1-7/2"), week("Mon Wed Fri Sun"));
    }

    #[test]
    fn a_day_of_the_month_or_a_weekday_fires_as_in_standard_cron() {
        // 2026-11-25 is a Wednesday: the next Monday (the 30th) comes before the 1st.
        let tz: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(
            fires("0 9 1 * 1", tz, "2026-11-25 12:00", 3),
            [
                "11-30 09:00 +0100",
                "12-01 09:00 +0100",
                "12-07 09:00 +0100"
            ]
        );
        // The weekday unrestricted: only the day of the month counts.
        assert_eq!(
            fires("0 9 1 * *", tz, "2026-11-25 12:00", 1),
            ["12-01 09:00 +0100"]
        );
        // A field starting with `*` counts as unrestricted, so both must match (as in Vixie
        // cron): the 1st, 11th, 21st or 31st that is a Monday.
        assert_eq!(
            fires("0 9 */10 * 1", tz, "2026-11-25 12:00", 1),
            ["12-21 09:00 +0100"]
        );
    }

    #[test]
    fn cron_fields() {
        assert!(check_cron("0 18 * * *").is_ok());
        assert!(check_cron("30 0 18 * * *").is_ok());
        assert!(check_cron("0 18 * *").is_err());
        assert!(check_cron("0 25 * * *").is_err());
    }

    fn at(tz: Tz, s: &str) -> DateTime<Utc> {
        local_to_utc(
            tz,
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap(),
        )
    }

    fn fires(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let mut t = at(tz, from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = next_cron(expr, t, tz).unwrap();
            out.push(t.with_timezone(&tz).format("%m-%d %H:%M %z").to_string());
        }
        out
    }

    #[test]
    fn cron_in_a_timezone_through_dst() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // 18:00 every day: the wall-clock time holds across both changes.
        assert_eq!(
            fires("0 18 * * *", paris, "2026-03-28 12:00", 2),
            vec!["03-28 18:00 +0100", "03-29 18:00 +0200"]
        );
        // 02:30 does not exist on 2026-03-29: it fires once, at 03:00 (the first valid instant).
        assert_eq!(
            fires("30 2 * * *", paris, "2026-03-28 12:00", 3),
            vec![
                "03-29 03:00 +0200",
                "03-30 02:30 +0200",
                "03-31 02:30 +0200"
            ]
        );
        // 02:30 happens twice on 2026-10-25: it fires once.
        assert_eq!(
            fires("30 2 * * *", paris, "2026-10-24 12:00", 2),
            vec!["10-25 02:30 +0200", "10-26 02:30 +0100"]
        );
        // Every 30 minutes through the gap: 02:00 and 02:30 both land on 03:00, fired once.
        assert_eq!(
            fires("*/30 * * * *", paris, "2026-03-29 01:15", 4),
            vec![
                "03-29 01:30 +0100",
                "03-29 03:00 +0200",
                "03-29 03:30 +0200",
                "03-29 04:00 +0200"
            ]
        );
        // Through the doubled hour: the repeated 02:00 and 02:30 fire once each.
        assert_eq!(
            fires("*/30 * * * *", paris, "2026-10-25 01:15", 4),
            vec![
                "10-25 01:30 +0200",
                "10-25 02:00 +0200",
                "10-25 02:30 +0200",
                "10-25 03:00 +0100"
            ]
        );
        let jerusalem: Tz = "Asia/Jerusalem".parse().unwrap();
        // Israel springs forward 02:00 → 03:00 on Friday 2026-03-27 and falls back on 2026-10-25.
        assert_eq!(
            fires("30 2 * * *", jerusalem, "2026-03-26 12:00", 2),
            vec!["03-27 03:00 +0300", "03-28 02:30 +0300"]
        );
        assert_eq!(
            fires("30 1 * * *", jerusalem, "2026-10-24 12:00", 2),
            vec!["10-25 01:30 +0300", "10-26 01:30 +0200"]
        );
    }

    /// `t` plus `s` seconds.
    fn plus(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
        t + Duration::seconds(s)
    }

    #[test]
    fn every_second_fires_every_second() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let t0 = at(paris, "2026-11-25 12:00");
        for expr in ["* * * * * *", "*/1 * * * * *", "0-59 * * * * *"] {
            let mut t = t0;
            for i in 1..=5 {
                t = next_cron(expr, t, paris).unwrap_or_else(|| panic!("{expr} never fires"));
                assert_eq!(t, plus(t0, i), "{expr}");
            }
            // From a time between two seconds, the next whole second.
            let half = t0 + Duration::milliseconds(500);
            assert_eq!(next_cron(expr, half, paris), Some(plus(t0, 1)), "{expr}");
        }
        // Through the doubled hour of 2026-10-25 (02:00–03:00 twice): every second of both
        // runs of the hour is a real instant; the repeated wall times are placed at their first
        // occurrence, so the second run jumps to 03:00:00 +0100.
        let first = "2026-10-25T02:30:00+02:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(next_cron("* * * * * *", first, paris), Some(plus(first, 1)));
        let second = "2026-10-25T02:30:00+01:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        let three = "2026-10-25T03:00:00+01:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(next_cron("* * * * * *", second, paris), Some(three));
        assert_eq!(next_cron("*/30 * * * *", second, paris), Some(three));
        assert_eq!(
            next_cron("15 * * * * *", second, paris),
            Some(plus(three, 15))
        );
        // Through the gap of 2026-03-29 (02:00 → 03:00).
        let before = "2026-03-29T01:59:59+01:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        let after_gap = "2026-03-29T03:00:00+02:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(next_cron("* * * * * *", before, paris), Some(after_gap));
        assert_eq!(
            next_cron("* * * * * *", after_gap, paris),
            Some(plus(after_gap, 1))
        );
    }

    #[test]
    fn expressions_without_a_date_never_fire_and_are_told() {
        assert!(never_fires("0 0 30 2 *"));
        assert!(never_fires("0 0 31 4 *"));
        assert!(never_fires("0 0 31 2,4,6,9,11 *"));
        // February the 29th comes every four years; a weekday makes any day of the month fire.
        assert!(!never_fires("0 0 29 2 *"));
        assert!(!never_fires("0 0 30 2 1"));
        assert!(!never_fires("* * * * * *"));
        let utc: Tz = "UTC".parse().unwrap();
        let t = at(utc, "2026-11-25 12:00");
        assert_eq!(
            next_cron("0 0 29 2 *", t, utc),
            Some(at(utc, "2028-02-29 00:00"))
        );
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
