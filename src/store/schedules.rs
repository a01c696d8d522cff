//! `schedule()` calls as operators see them: the pending ones (status), the rules they name
//! (a reload that drops a rule warns about its pending calls), and a call whose rule is gone,
//! failed visibly (a run trace with outcome `error`, its audit entry).

use super::{Completion, Effects, RunRecord, Store, StoreError, audit, now_ms};
use rusqlite::params;
use serde_json::json;

/// A pending `schedule()` call, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCall {
    pub user: String,
    pub project: String,
    pub rule: String,
    pub call: String,
    pub due_at_ms: i64,
}

/// Pending calls of one rule: (user, project, rule, how many, the first one's due time).
pub type PendingByRule = (String, String, String, i64, i64);

impl Store {
    /// The next `limit` pending `schedule()` calls of every user, soonest first, and how many
    /// are pending in all.
    pub fn pending_calls(&self, limit: usize) -> Result<(Vec<PendingCall>, i64), StoreError> {
        self.with(|conn| {
            let total: i64 = conn.query_row(
                "SELECT COUNT(*) FROM schedules WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            let mut st = conn.prepare(
                "SELECT user, project, rule, call, due_at FROM schedules WHERE state = 'pending'
                 ORDER BY due_at, id LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(PendingCall {
                    user: r.get(0)?,
                    project: r.get(1)?,
                    rule: r.get(2)?,
                    call: r.get(3)?,
                    due_at_ms: r.get(4)?,
                })
            })?;
            Ok((rows.collect::<Result<_, _>>()?, total))
        })
    }

    /// Pending `schedule()` calls grouped by the rule they name.
    pub fn pending_calls_by_rule(&self) -> Result<Vec<PendingByRule>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, project, rule, COUNT(*), MIN(due_at) FROM schedules
                 WHERE state = 'pending' GROUP BY user, project, rule ORDER BY MIN(due_at)",
            )?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect()
        })
    }

    /// Fails a `schedule()` call (in state `from`) whose rule no longer exists, with `why`,
    /// and records `run` (its trace, outcome `error`, and its audit entry) in the same
    /// transaction. `false` if the call was not in `from` any more.
    pub fn fail_call(
        &self,
        id: i64,
        from: &str,
        user: &str,
        why: &str,
        run: RunRecord,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = Completion::new(Effects::default(), vec![run], None);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE schedules SET state = 'failed', error = ?3, fired_at = ?4 WHERE id = ?1 AND state = ?2",
                params![id, from, why, now],
            )?;
            if n == 0 {
                return Ok(false);
            }
            done.apply(&tx, user, now)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Records in `user`'s audit log that a reload left pending `schedule()` calls naming
    /// rules that no longer exist: `rules` is `[(project/rule, count, first due ms)]`.
    pub fn audit_orphan_calls(
        &self,
        user: &str,
        rules: &[(String, i64, i64)],
    ) -> Result<(), StoreError> {
        let details = json!({
            "calls": rules.iter().map(|(_, n, _)| n).sum::<i64>(),
            "rules": rules.iter().map(|(r, n, first)| json!({"rule": r, "calls": n, "first_due": first})).collect::<Vec<_>>(),
        });
        self.with(|conn| {
            let tx = conn.transaction()?;
            audit::append(&tx, user, "schedule.orphaned", &details)?;
            tx.commit()
        })
    }
}
