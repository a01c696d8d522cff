//! Graph API versions and their lifetimes, so the gate can warn before the pinned version
//! (gate.yaml `graph.version`) stops working. Meta supports each version for about two years;
//! a call to an expired version is served by the oldest live one, which may change behaviour
//! silently. Update the table when Meta announces a version.
//!
//! Source: Meta's Graph API changelog, "Versions" (developers.facebook.com/docs/graph-api/
//! changelog/versions), as published in 2026: release and expiration dates of each version.
//! A version whose expiration Meta had not yet set is `None`.

use chrono::NaiveDate;

/// A date as (year, month, day).
pub type Ymd = (i32, u32, u32);

/// (version, released, expires).
pub const VERSIONS: &[(&str, Ymd, Option<Ymd>)] = &[
    ("v26.0", (2026, 7, 29), None),
    ("v25.0", (2026, 2, 18), Some((2028, 7, 29))),
    ("v24.0", (2025, 10, 8), Some((2028, 2, 18))),
    ("v23.0", (2025, 5, 29), Some((2027, 10, 8))),
    ("v22.0", (2025, 1, 21), Some((2027, 5, 20))),
    ("v21.0", (2024, 10, 2), Some((2027, 1, 21))),
    ("v20.0", (2024, 5, 21), Some((2026, 9, 24))),
    ("v19.0", (2024, 1, 23), Some((2026, 5, 21))),
    ("v18.0", (2023, 9, 12), Some((2026, 1, 26))),
    ("v17.0", (2023, 5, 23), Some((2025, 9, 12))),
    ("v16.0", (2023, 2, 2), Some((2025, 5, 14))),
    ("v15.0", (2022, 9, 15), Some((2024, 11, 20))),
    ("v14.0", (2022, 5, 25), Some((2024, 9, 17))),
    ("v13.0", (2022, 2, 8), Some((2024, 5, 28))),
    ("v12.0", (2021, 9, 14), Some((2024, 2, 8))),
];

/// Warn this many days before the pinned version expires.
pub const WARN_DAYS: i64 = 90;

fn date((y, m, d): Ymd) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

/// What the table says about a version on a given day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// Supported, with no end in sight (or more than [`WARN_DAYS`] away).
    Supported { expires: Option<NaiveDate> },
    /// Expires within [`WARN_DAYS`].
    ExpiresSoon { expires: NaiveDate, days: i64 },
    /// Past its expiration date.
    Expired { expired: NaiveDate },
    /// Not in the table (mistyped, or newer than this build).
    Unknown,
}

/// The status of `version` on `today`.
pub fn status(version: &str, today: NaiveDate) -> VersionStatus {
    let Some((_, _, expires)) = VERSIONS.iter().find(|(v, _, _)| *v == version) else {
        return VersionStatus::Unknown;
    };
    let Some(expires) = expires.map(date) else {
        return VersionStatus::Supported { expires: None };
    };
    let days = (expires - today).num_days();
    if days <= 0 {
        VersionStatus::Expired { expired: expires }
    } else if days <= WARN_DAYS {
        VersionStatus::ExpiresSoon { expires, days }
    } else {
        VersionStatus::Supported {
            expires: Some(expires),
        }
    }
}

/// The newest version in the table.
pub fn newest() -> &'static str {
    VERSIONS[0].0
}

/// A warning about the pinned `version` on `today`, if it deserves one.
pub fn warning(version: &str, today: NaiveDate) -> Option<String> {
    let hint = format!(
        "pin a newer one in gate.yaml `graph.version` (newest known: {}) after reading Meta's changelog",
        newest()
    );
    match status(version, today) {
        VersionStatus::Supported { .. } => None,
        VersionStatus::ExpiresSoon { expires, days } => Some(format!(
            "warning: Graph API {version} expires on {expires} (in {days} days): {hint}"
        )),
        VersionStatus::Expired { expired } => Some(format!(
            "warning: Graph API {version} expired on {expired}: Meta now answers with the oldest supported version instead; {hint}"
        )),
        VersionStatus::Unknown => Some(format!(
            "warning: Graph API version `{version}` is not one this gate knows ({}…{}): check gate.yaml `graph.version`",
            VERSIONS[VERSIONS.len() - 1].0,
            newest()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn warns_near_and_after_the_end_and_for_unknown_versions() {
        assert_eq!(warning("v23.0", day(2026, 11, 24)), None);
        let w = warning("v23.0", day(2027, 9, 1)).unwrap();
        assert!(w.contains("expires on 2027-10-08 (in 37 days)"), "{w}");
        let w = warning("v20.0", day(2026, 11, 24)).unwrap();
        assert!(w.contains("expired on 2026-09-24"), "{w}");
        assert_eq!(
            status("v26.0", day(2030, 1, 1)),
            VersionStatus::Supported { expires: None }
        );
        let w = warning("v23", day(2026, 11, 24)).unwrap();
        assert!(w.contains("`v23` is not one this gate knows"), "{w}");
        // The table is newest first and every date parses.
        for pair in VERSIONS.windows(2) {
            assert!(date(pair[0].1) > date(pair[1].1), "{:?}", pair[0]);
        }
    }
}
