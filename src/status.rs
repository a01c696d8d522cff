//! The gate's status as an operator reads it: users with token health and expiry, rules with
//! their trigger and next fire time, the latest runs, outbox counts and failures, recent
//! webhooks. Gathered once from the store and the loaded home; rendered as HTML by
//! `http::status` (GET /status) and as text by `wagate status`. Holds no secret: a token is
//! shown only as healthy, rejected or expiring.

use crate::config::Trigger;
use crate::rules::RuleSet;
use crate::store::{EventRow, FailureRow, PendingCall, RunRow, Store, StoreError};
use crate::users::Users;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;

/// How many rows of each list the report holds.
pub const LIST_LIMIT: usize = 20;

/// One user as the status shows them.
#[derive(Clone, Debug)]
pub struct UserStatus {
    pub name: String,
    pub display_name: Option<String>,
    pub timezone: Tz,
    /// `ok`, `invalid: <reason>` (Graph rejected the token), or why the user is not served.
    pub token: TokenHealth,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenHealth {
    Ok,
    /// Graph rejected it (code 190), with Graph's reason, since then (unix ms).
    Rejected {
        reason: String,
        since_ms: i64,
    },
    /// The user is not served (their files or credentials could not be read).
    NotServed(String),
}

/// One rule and when it fires next.
#[derive(Clone, Debug)]
pub struct RuleStatus {
    pub user: String,
    pub project: String,
    pub rule: String,
    pub trigger: String,
    pub timezone: Tz,
    /// For timed rules: the next instant, if any is left.
    pub next: Option<DateTime<Utc>>,
    pub timed: bool,
}

/// Everything the status page shows.
#[derive(Clone, Debug)]
pub struct Report {
    pub now: DateTime<Utc>,
    pub users: Vec<UserStatus>,
    pub rules: Vec<RuleStatus>,
    pub runs: Vec<RunRow>,
    /// (user, state, count).
    pub outbox: Vec<(String, String, i64)>,
    pub failures: Vec<FailureRow>,
    pub events: Vec<EventRow>,
    /// Events waiting for dispatch, and when the oldest was committed.
    pub pending: (i64, Option<i64>),
    /// The next pending `schedule()` calls (at most [`LIST_LIMIT`]), soonest first, and how
    /// many are pending in all.
    pub calls: (Vec<PendingCall>, i64),
}

/// A rule as the report needs it (from the live rule set or from the home's files).
pub struct RuleInfo {
    pub user: String,
    pub project: String,
    pub rule: String,
    pub trigger: Trigger,
    pub timezone: Tz,
}

/// The rules of a compiled set.
pub fn rules_of(set: &RuleSet) -> Vec<RuleInfo> {
    set.projects
        .iter()
        .flat_map(|p| {
            p.rules.iter().map(|r| RuleInfo {
                user: p.user.to_string(),
                project: p.name.clone(),
                rule: r.name.clone(),
                trigger: r.trigger.clone(),
                timezone: p.timezone,
            })
        })
        .collect()
}

/// Reads the report from the store (blocking: call it through `Store::call` from async code).
pub fn gather(
    store: &Store,
    users: &Users,
    skipped: &[(String, String)],
    rules: &[RuleInfo],
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let mut out_users = Vec::new();
    for (name, u) in users.iter() {
        let fp = crate::sender::fingerprint(u.creds().access_token.expose());
        let token = match store.token_invalid(name, &fp)? {
            None => TokenHealth::Ok,
            Some((reason, since_ms)) => TokenHealth::Rejected { reason, since_ms },
        };
        out_users.push(UserStatus {
            name: name.clone(),
            display_name: u.config.display_name.clone(),
            timezone: u.config.timezone,
            token,
            expires_at: store.token_expiry(name, &u.creds())?,
        });
    }
    for (name, why) in skipped {
        // A project left out (its user's other projects run) is named by its path.
        let why = if name.contains('/') {
            format!("this project is not live (its user's other projects are): {why}")
        } else {
            why.clone()
        };
        out_users.push(UserStatus {
            name: name.clone(),
            display_name: None,
            timezone: Tz::UTC,
            token: TokenHealth::NotServed(why),
            expires_at: None,
        });
    }
    let timers: HashMap<(String, String, String), Option<i64>> = store
        .next_firings()?
        .into_iter()
        .map(|(u, p, r, n)| ((u, p, r), n))
        .collect();
    let out_rules = rules
        .iter()
        .map(|r| {
            let key = (r.user.clone(), r.project.clone(), r.rule.clone());
            // The scheduler's persisted timer is the truth; without one (the gate never ran
            // this rule), the trigger says when it would fire.
            let next = match timers.get(&key) {
                Some(t) => t.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                None => r.trigger.next_after(now, r.timezone),
            };
            RuleStatus {
                user: r.user.clone(),
                project: r.project.clone(),
                rule: r.rule.clone(),
                trigger: r.trigger.describe(),
                timezone: r.timezone,
                next,
                timed: r.trigger.is_timed(),
            }
        })
        .collect();
    Ok(Report {
        now,
        users: out_users,
        rules: out_rules,
        runs: store.latest_runs(LIST_LIMIT)?,
        outbox: store.outbox_depth()?,
        failures: store.latest_failures(LIST_LIMIT)?,
        events: store.latest_events(LIST_LIMIT)?,
        pending: store.pending_backlog()?,
        calls: store.pending_calls(LIST_LIMIT)?,
    })
}

/// A pending `schedule()` call's due time in its user's timezone (UTC for a user not served),
/// and how far off it is: `2026-05-01 08:00:15 CEST (in 3h 20m)`.
pub fn call_due_text(r: &Report, c: &PendingCall) -> String {
    let tz = r
        .users
        .iter()
        .find(|u| u.name == c.user)
        .map_or(Tz::UTC, |u| u.timezone);
    let Some(t) = Utc.timestamp_millis_opt(c.due_at_ms).single() else {
        return String::new();
    };
    let when = t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z");
    if t <= r.now {
        format!("{when} (due {})", relative(t, r.now))
    } else {
        format!("{when} ({})", relative(t, r.now))
    }
}

/// `2026-05-01 08:00 CEST` in `tz`.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// A unix-ms time in UTC, to the second.
pub fn utc_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `in 3 days`, `5 hours ago`: how far `t` is from `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let span = crate::scheduler::humanize(std::time::Duration::from_secs(secs.unsigned_abs()));
    if secs >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// How a token's expiry reads: `expires 2026-05-01 … (in 3 days)`, `EXPIRED …`, or unknown.
pub fn expiry_text(u: &UserStatus, now: DateTime<Utc>) -> String {
    match u.expires_at {
        None => "expiry not known".into(),
        Some(t) if t <= now => format!("EXPIRED {} ({})", local(t, u.timezone), relative(t, now)),
        Some(t) => format!("expires {} ({})", local(t, u.timezone), relative(t, now)),
    }
}

/// The token's health in words.
pub fn health_text(h: &TokenHealth) -> String {
    match h {
        TokenHealth::Ok => "ok".into(),
        TokenHealth::Rejected { reason, since_ms } => {
            format!("REJECTED by Graph since {}: {reason}", utc_ms(*since_ms))
        }
        TokenHealth::NotServed(why) => format!("NOT SERVED: {why}"),
    }
}

/// When a rule fires next, in words.
pub fn next_text(r: &RuleStatus, now: DateTime<Utc>) -> String {
    match (r.timed, r.next) {
        (false, _) => "on each event".into(),
        (true, Some(t)) => format!("{} ({})", local(t, r.timezone), relative(t, now)),
        (true, None) => "nothing left to fire".into(),
    }
}

/// How long a run took, in words.
pub fn duration_text(us: i64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{} ms", us / 1000)
    } else {
        format!("{:.1} s", us as f64 / 1e6)
    }
}
