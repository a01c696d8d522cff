//! `Time` for scripts: an instant shown in the project's timezone. Scripts get it from
//! `now()`, `today()`, `date(..)`, `time(..)`; add days (calendar days, DST-aware), compare,
//! format. The clock is the run's (`RunContext::now`), so tests and dry runs control it.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;

pub use crate::domain::schedule::local_to_utc;

/// An instant with the timezone it is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    pub utc: DateTime<Utc>,
    pub tz: Tz,
}

impl Time {
    /// `utc` shown in `tz`.
    pub fn new(utc: DateTime<Utc>, tz: Tz) -> Self {
        Time { utc, tz }
    }

    /// The local date and time.
    pub fn local(&self) -> DateTime<Tz> {
        self.utc.with_timezone(&self.tz)
    }

    /// Midnight of the local day.
    pub fn start_of_day(&self) -> Time {
        let d = self.local().date_naive();
        Time::new(local_to_utc(self.tz, d.and_time(NaiveTime::MIN)), self.tz)
    }

    /// The same local time `n` calendar days later (earlier if negative). Across a DST change
    /// the wall-clock time is kept; a local time that does not exist moves forward.
    pub fn add_days(&self, n: i64) -> Time {
        let local = self.local().naive_local();
        let moved = local + Duration::days(n);
        Time::new(local_to_utc(self.tz, moved), self.tz)
    }

    /// Plus `secs` seconds of real time.
    pub fn add_seconds(&self, secs: i64) -> Time {
        Time::new(self.utc + Duration::seconds(secs), self.tz)
    }

    /// chrono's strftime format, in local time.
    pub fn format(&self, fmt: &str) -> Result<String, String> {
        use std::fmt::Write;
        let mut s = String::new();
        write!(s, "{}", self.local().format(fmt))
            .map_err(|_| format!("invalid time format `{fmt}`"))?;
        Ok(s)
    }

    /// Whole local calendar days from `self` to `other`.
    pub fn days_until(&self, other: &Time) -> i64 {
        let a = self.local().date_naive();
        let b = other.utc.with_timezone(&self.tz).date_naive();
        (b - a).num_days()
    }

    pub fn year(&self) -> i64 {
        self.local().year() as i64
    }
    pub fn month(&self) -> i64 {
        self.local().month() as i64
    }
    pub fn day(&self) -> i64 {
        self.local().day() as i64
    }
    pub fn hour(&self) -> i64 {
        self.local().hour() as i64
    }
    pub fn minute(&self) -> i64 {
        self.local().minute() as i64
    }
    pub fn second(&self) -> i64 {
        self.local().second() as i64
    }
    /// 1 = Monday … 7 = Sunday.
    pub fn weekday(&self) -> i64 {
        self.local().weekday().number_from_monday() as i64
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.local().to_rfc3339())
    }
}

/// A date as tables write it: `2026-05-01`, `01.05.2026` or `01/05/2026` (day first).
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    for fmt in ["%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            return Ok(d);
        }
    }
    Err(format!(
        "`{s}` is not a date; write 2026-05-01, 01.05.2026 or 01/05/2026"
    ))
}

/// A local date-time (`2026-05-01T08:00[:SS]`, `2026-05-01 08:00`), a date alone (midnight),
/// or an RFC 3339 instant with offset.
pub fn parse_time(s: &str, tz: Tz) -> Result<Time, String> {
    let s = s.trim();
    // The same forms as an `at:` trigger, so that scripts and project.yaml agree.
    if let Ok(at) = crate::domain::schedule::check_at(s) {
        return Ok(Time::new(crate::domain::schedule::at_instant(&at, tz), tz));
    }
    if let Ok(d) = parse_date(s) {
        return Ok(Time::new(local_to_utc(tz, d.and_time(NaiveTime::MIN)), tz));
    }
    Err(format!(
        "`{s}` is not a time; write 2026-05-01T08:00 (local), 2026-05-01, or 2026-05-01T08:00:00+02:00"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> Tz {
        "Europe/Paris".parse().unwrap()
    }

    #[test]
    fn add_days_keeps_wall_clock_across_dst() {
        // 2026-03-28 18:00 Paris (UTC+1) + 1 day = 2026-03-29 18:00 Paris (UTC+2).
        let t = parse_time("2026-03-28T18:00", paris()).unwrap();
        let next = t.add_days(1);
        assert_eq!(
            next.format("%Y-%m-%d %H:%M %z").unwrap(),
            "2026-03-29 18:00 +0200"
        );
        assert_eq!((next.utc - t.utc).num_hours(), 23);
    }

    #[test]
    fn missing_and_doubled_local_times() {
        // 02:30 does not exist on 2026-03-29 in Paris: the first valid instant after is 03:00.
        let t = parse_time("2026-03-29T02:30", paris()).unwrap();
        assert_eq!(t.format("%H:%M %z").unwrap(), "03:00 +0200");
        // 02:30 happens twice on 2026-10-25: the first one (+02:00) is taken.
        let t = parse_time("2026-10-25T02:30", paris()).unwrap();
        assert_eq!(t.format("%H:%M %z").unwrap(), "02:30 +0200");
    }

    #[test]
    fn dates_and_days() {
        assert_eq!(
            parse_date("01.05.2026").unwrap(),
            NaiveDate::from_ymd_opt(2026, 5, 1).unwrap()
        );
        assert_eq!(
            parse_date("01/05/2026").unwrap(),
            NaiveDate::from_ymd_opt(2026, 5, 1).unwrap()
        );
        assert!(parse_date("May 1st").is_err());
        let a = parse_time("2026-04-24T23:30", paris()).unwrap();
        let b = parse_time("2026-05-01", paris()).unwrap();
        assert_eq!(a.days_until(&b), 7);
        assert_eq!(b.weekday(), 5);
        assert_eq!(a.start_of_day().format("%H:%M").unwrap(), "00:00");
        assert!(a.format("%Q").is_err());
    }
}
