//! What an operator looks at: queries for `/metrics` (computed at scrape time), the status
//! page and `wagate status`. Read-only; every query is bounded.

use super::{Store, StoreError};
use rusqlite::params;

/// A recent rule run, for the status page.
#[derive(Clone, Debug)]
pub struct RunRow {
    pub user: String,
    pub project: String,
    pub rule: String,
    pub outcome: String,
    pub error: Option<String>,
    /// Why it was skipped, or the first log line.
    pub note: Option<String>,
    pub trigger: Option<String>,
    pub started_at_ms: i64,
    pub duration_us: i64,
}

/// A failed outbox row, with its reason.
#[derive(Clone, Debug)]
pub struct FailureRow {
    pub user: String,
    pub recipient: String,
    pub msg_type: String,
    pub error: String,
    pub attempts: i64,
    pub updated_at_ms: i64,
}

/// A recent webhook event.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub user: String,
    pub kind: String,
    pub contact: Option<String>,
    /// The contact's profile name as last seen.
    pub name: Option<String>,
    /// A message's text, or a status's status.
    pub summary: String,
    /// The wamid of a message or status.
    pub message_id: Option<String>,
    pub state: String,
    pub created_at_ms: i64,
}

/// A timed rule's next instant: (user, project, rule, unix ms; `None` when nothing is left).
pub type NextFiring = (String, String, String, Option<i64>);

impl Store {
    /// Outbox rows by state: (user, state, count), every state that has rows.
    pub fn outbox_depth(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, state, COUNT(*) FROM outbox GROUP BY user, state ORDER BY user, state",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    /// Events waiting for dispatch: (count, when the oldest was committed, unix ms).
    pub fn pending_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT COUNT(*), MIN(created_at) FROM events WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// The earliest timer or `schedule()` call that is due but has not fired (unix ms).
    pub fn oldest_overdue(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT MIN(t) FROM (
                    SELECT MIN(next_at) AS t FROM timers WHERE next_at IS NOT NULL AND next_at <= ?1
                    UNION ALL
                    SELECT MIN(due_at) AS t FROM schedules WHERE state = 'pending' AND due_at <= ?1)",
                [now_ms],
                |r| r.get(0),
            )
        })
    }

    /// Each timed rule's next instant: (user, project, rule, next_at unix ms).
    pub fn next_firings(&self) -> Result<Vec<NextFiring>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, project, rule, next_at FROM timers ORDER BY next_at IS NULL, next_at",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })
    }

    /// The latest rule runs of every user, newest first.
    pub fn latest_runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, project, rule, outcome, error, logs, trigger, started_at, duration_us
                 FROM rule_runs ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                let logs: String = r.get(5)?;
                let note = serde_json::from_str::<Vec<String>>(&logs)
                    .ok()
                    .and_then(|l| l.into_iter().next());
                Ok(RunRow {
                    user: r.get(0)?,
                    project: r.get(1)?,
                    rule: r.get(2)?,
                    outcome: r.get(3)?,
                    error: r.get(4)?,
                    note,
                    trigger: r.get(6)?,
                    started_at_ms: r.get(7)?,
                    duration_us: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The latest failed sends of every user, newest first, with their reasons.
    pub fn latest_failures(&self, limit: usize) -> Result<Vec<FailureRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, recipient, type, COALESCE(error, ''), attempts, updated_at
                 FROM outbox WHERE state = 'failed' ORDER BY updated_at DESC, id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(FailureRow {
                    user: r.get(0)?,
                    recipient: r.get(1)?,
                    msg_type: r.get(2)?,
                    error: r.get(3)?,
                    attempts: r.get(4)?,
                    updated_at_ms: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The latest webhook events of every user, newest first, with the contact's name.
    pub fn latest_events(&self, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT e.user, e.kind, e.contact, c.name, e.payload, e.state, e.created_at
                 FROM events e LEFT JOIN contacts c ON c.user = e.user AND c.contact = e.contact
                 ORDER BY e.id DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit as i64], |r| {
                let payload: String = r.get(4)?;
                let map: serde_json::Value =
                    serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
                let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let summary = text("text")
                    .filter(|t| !t.is_empty())
                    .or_else(|| text("status"))
                    .or_else(|| text("type"))
                    .unwrap_or_default();
                Ok(EventRow {
                    user: r.get(0)?,
                    kind: r.get(1)?,
                    contact: r.get(2)?,
                    name: r.get(3)?,
                    summary,
                    message_id: text("id"),
                    state: r.get(5)?,
                    created_at_ms: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}
