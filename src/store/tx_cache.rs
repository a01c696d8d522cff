//! Counters that every write of a group commit moves: the change number (`change_seq`) and
//! each user's audit head (`audit_head`). Written row by row, each is an UPDATE of the same row
//! per message; within one transaction of the writer they are kept here instead, read once
//! when first needed and written once, right before the commit.
//!
//! The cache lives on the thread that holds the transaction, between [`begin`] and the end of
//! the returned scope; outside one (a CLI's own write, a write on the read connection),
//! callers fall back to the table. A write that fails under its savepoint gives back what it
//! took ([`snapshot`], [`restore`]), so the audit chain never points past a rolled-back entry.

use rusqlite::{Connection, OptionalExtension, params};
use std::cell::RefCell;
use std::collections::HashMap;

/// The counters as this transaction has moved them.
#[derive(Clone, Default)]
pub(super) struct Counters {
    /// The last change number handed out, once one was.
    rev: Option<i64>,
    /// Each user's (seq, hash) of the last audit entry, once read (`None`: no entry yet).
    heads: HashMap<String, Option<(i64, String)>>,
    heads_moved: Vec<String>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Counters>> = const { RefCell::new(None) };
}

/// Ends the cache of this thread's transaction when dropped (after a commit, or a rollback).
pub(super) struct Scope(());

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.borrow_mut().take());
    }
}

/// Starts caching for the transaction this thread is about to run.
pub(super) fn begin() -> Scope {
    ACTIVE.with(|a| *a.borrow_mut() = Some(Counters::default()));
    Scope(())
}

/// The counters now, to give back if the next write fails under its savepoint.
pub(super) fn snapshot() -> Option<Counters> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// Gives back what a failed write took.
pub(super) fn restore(snap: Option<Counters>) {
    if snap.is_some() {
        ACTIVE.with(|a| *a.borrow_mut() = snap);
    }
}

/// Writes the moved counters, in the transaction, before its commit.
pub(super) fn flush(conn: &Connection) -> rusqlite::Result<()> {
    // Taken: the transaction ends right after (its scope would drop them anyway).
    let Some(c) = ACTIVE.with(|a| a.borrow_mut().take()) else {
        return Ok(());
    };
    if let Some(n) = c.rev {
        // Never backwards: the trigger `outbox_rev_failed` (migration 10) still moves the
        // table itself, today only outside the writer, but a job may one day fire it.
        conn.prepare_cached("UPDATE change_seq SET n = MAX(n, ?1)")?
            .execute([n])?;
    }
    for user in &c.heads_moved {
        if let Some(Some((seq, hash))) = c.heads.get(user) {
            write_head(conn, user, *seq, hash)?;
        }
    }
    Ok(())
}

/// The next change number, from the cache when a transaction of this thread has one.
pub(super) fn next_rev(conn: &Connection) -> rusqlite::Result<i64> {
    let cached = ACTIVE.with(|a| -> rusqlite::Result<Option<i64>> {
        let mut a = a.borrow_mut();
        let Some(c) = a.as_mut() else {
            return Ok(None);
        };
        let last = match c.rev {
            Some(n) => n,
            None => conn
                .prepare_cached("SELECT n FROM change_seq")?
                .query_row([], |r| r.get(0))?,
        };
        c.rev = Some(last + 1);
        Ok(Some(last + 1))
    })?;
    match cached {
        Some(n) => Ok(n),
        None => conn
            .prepare_cached("UPDATE change_seq SET n = n + 1 RETURNING n")?
            .query_row([], |r| r.get(0)),
    }
}

/// A user's last audit entry (seq, hash), from the cache when a transaction of this thread
/// has one.
pub(super) fn audit_head(conn: &Connection, user: &str) -> rusqlite::Result<Option<(i64, String)>> {
    let read = |conn: &Connection| {
        conn.prepare_cached("SELECT seq, hash FROM audit_head WHERE user = ?1")?
            .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    };
    let active = ACTIVE.with(|a| a.borrow().as_ref().map(|c| c.heads.get(user).cloned()));
    match active {
        None => read(conn),
        Some(Some(head)) => Ok(head),
        Some(None) => {
            let head = read(conn)?;
            ACTIVE.with(|a| {
                if let Some(c) = a.borrow_mut().as_mut() {
                    c.heads.insert(user.to_string(), head.clone());
                }
            });
            Ok(head)
        }
    }
}

/// Records a user's new audit head: in the cache (written at [`flush`]) when a transaction of
/// this thread has one, else in the table at once.
pub(super) fn set_audit_head(
    conn: &Connection,
    user: &str,
    seq: i64,
    hash: &str,
) -> rusqlite::Result<()> {
    let cached = ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let Some(c) = a.as_mut() else {
            return false;
        };
        c.heads
            .insert(user.to_string(), Some((seq, hash.to_string())));
        if !c.heads_moved.iter().any(|u| u == user) {
            c.heads_moved.push(user.to_string());
        }
        true
    });
    if cached {
        return Ok(());
    }
    write_head(conn, user, seq, hash)
}

fn write_head(conn: &Connection, user: &str, seq: i64, hash: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_head (user, seq, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (user) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![user, seq, hash])
    .map(drop)
}
