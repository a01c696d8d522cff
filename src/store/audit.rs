//! The audit log: append-only and hash-chained per user. Each entry is written in the same
//! transaction as the operation it records, so the log and the data never disagree. Entry n of
//! a user carries the hash of entry n-1; its own hash covers that, its number, time, action and
//! details. `audit_head` keeps each user's last (seq, hash), so that removing entries from the
//! end is found too. Gate-wide entries (a reload that failed before naming a project) are
//! kept under the user `*`.

use super::{Store, StoreError, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The user of gate-wide entries.
pub const GATE: &str = "*";

/// The `prev` of a user's first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub user: String,
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    pub action: String,
    pub details: Value,
}

/// What `--verify` found for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub user: String,
    pub entries: i64,
    /// Problems in words (changed, removed, reordered entries); empty when the chain is whole.
    pub problems: Vec<String>,
    /// The hash of the last entry: note it elsewhere to detect a rewrite of the whole log.
    pub head: String,
}

fn entry_hash(prev: &str, user: &str, seq: i64, at: i64, action: &str, details: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{prev}\n{user}\n{seq}\n{at}\n{action}\n{details}"));
    hex::encode(h.finalize())
}

/// Appends an entry for `user` inside the caller's transaction.
pub(super) fn append(
    conn: &Connection,
    user: &str,
    action: &str,
    details: &Value,
) -> rusqlite::Result<()> {
    append_text(conn, user, action, &details.to_string())
}

/// As [`append`], with the details already JSON text (made before the writer's turn).
pub(super) fn append_text(
    conn: &Connection,
    user: &str,
    action: &str,
    details: &str,
) -> rusqlite::Result<()> {
    let last = super::tx_cache::audit_head(conn, user)?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let at = now_ms();
    let hash = entry_hash(&prev, user, seq, at, action, details);
    conn.prepare_cached(
        "INSERT INTO audit (user, seq, at, action, details, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![user, seq, at, action, details, prev, hash])?;
    super::tx_cache::set_audit_head(conn, user, seq, &hash)
}

impl Store {
    /// Records an operation that has no transaction of its own in the store (a rejected
    /// webhook, credentials written to a file, a token refreshed).
    pub fn audit(&self, user: &str, action: &str, details: &Value) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            append(&tx, user, action, details)?;
            tx.commit()
        })
    }

    /// Entries, oldest first: of `user` (or everyone), since `since_ms`, the last `limit`.
    pub fn audit_entries(
        &self,
        user: Option<&str>,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT user, seq, at, action, details FROM (
                   SELECT id, user, seq, at, action, details FROM audit
                   WHERE (?1 IS NULL OR user = ?1) AND at >= ?2
                   ORDER BY id DESC LIMIT ?3)
                 ORDER BY id",
            )?;
            let rows = st.query_map(params![user, since_ms.unwrap_or(0), limit as i64], |r| {
                let details: String = r.get(4)?;
                Ok(AuditEntry {
                    user: r.get(0)?,
                    seq: r.get(1)?,
                    at: r.get(2)?,
                    action: r.get(3)?,
                    details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
                })
            })?;
            rows.collect()
        })
    }

    /// Walks each user's chain (or `user`'s) and reports every entry that was changed, removed
    /// or moved.
    pub fn audit_verify(&self, user: Option<&str>) -> Result<Vec<ChainReport>, StoreError> {
        self.with(|conn| {
            let mut users: Vec<String> = conn
                .prepare(
                    "SELECT user FROM audit_head WHERE ?1 IS NULL OR user = ?1
                     UNION SELECT DISTINCT user FROM audit WHERE ?1 IS NULL OR user = ?1",
                )?
                .query_map([user], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            users.sort();
            let mut reports = Vec::new();
            for u in users {
                reports.push(verify_chain(conn, &u)?);
            }
            Ok(reports)
        })
    }
}

fn verify_chain(conn: &Connection, user: &str) -> rusqlite::Result<ChainReport> {
    let mut st = conn.prepare(
        "SELECT seq, at, action, details, prev, hash FROM audit WHERE user = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([user], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut problems = Vec::new();
    let (mut expected, mut prev_hash, mut entries) = (1i64, GENESIS.to_string(), 0i64);
    for row in rows {
        let (seq, at, action, details, prev, hash) = row?;
        entries += 1;
        if seq != expected {
            problems.push(if seq > expected {
                format!("entries {expected}..{} are missing (removed)", seq - 1)
            } else {
                format!("entry {seq} appears out of order")
            });
        }
        if prev != prev_hash {
            problems.push(format!(
                "entry {seq} does not follow the entry before it (removed, inserted or reordered entries)"
            ));
        }
        if entry_hash(&prev, user, seq, at, &action, &details) != hash {
            problems.push(format!(
                "entry {seq} ({action}) was changed after it was written"
            ));
        }
        expected = seq + 1;
        prev_hash = hash;
    }
    let head: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_head WHERE user = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match head {
        Some((seq, _)) if seq >= expected => problems.push(format!(
            "entries {expected}..{seq} at the end are missing (removed)"
        )),
        Some((_, h)) if h != prev_hash => {
            problems.push("the last entry is not the one recorded as the head".to_string())
        }
        None if entries > 0 => problems.push("the head record is missing".to_string()),
        _ => {}
    }
    Ok(ChainReport {
        user: user.to_string(),
        entries,
        problems,
        head: prev_hash,
    })
}
