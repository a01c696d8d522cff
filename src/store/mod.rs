//! The store: the one place that speaks SQL. SQLite (bundled) in WAL mode with
//! `synchronous=FULL`, so that a commit that returned survives a crash of the process or the
//! machine. One connection behind a mutex: SQLite has a single writer anyway, and every method
//! is one short transaction. Async callers go through [`Store::call`] (a blocking thread).

mod audit;
mod backup;
mod bench;
mod claims;
mod config_history;
mod contacts;
mod export;
mod group;
mod groups;
mod pending;
mod schedules;
mod schema;
mod status;
mod tx_cache;

pub use audit::{AuditEntry, ChainReport, GATE};
pub use claims::SendCheck;
pub use contacts::{ContactEntry, ImportOutcome, LabelWrite};
pub use group::{GroupCounts, group_commit_counts};
pub use groups::GroupRow;

pub use config_history::{ConfigItem, ConfigVersion};
pub use export::{
    ExportContactRow, ExportFilter, ExportMark, ExportMediaRow, ExportMessageRow, ExportReadError,
    ExportSnapshot,
};

use crate::domain::{Event, UserId};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use schedules::{PendingByRule, PendingCall};
pub use status::{EventRow, FailureRow, RunRow};

/// Store failures. A failure to commit makes the webhook answer 503, so Meta retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the folder of {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the database {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database worker failed: {0}")]
    Join(String),
    #[error("database commit failed: {0}")]
    Commit(String),
}

/// What a webhook body added to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestOutcome {
    /// False for a redelivery: the very body that brought its events was stored before, so it
    /// is not kept again (a different body repeating known events is kept).
    pub new_body: bool,
    /// Events stored (this user's, new).
    pub new_events: usize,
    /// Of those, the events some rule (or `mark_read`) wants: stored pending for the
    /// dispatcher. The others are stored done.
    pub to_dispatch: usize,
    /// Events already stored (redelivered), skipped.
    pub duplicates: usize,
    /// Events for a phone number that is not this user's: kept, never dispatched.
    pub foreign: usize,
    /// Inbound media queued for download.
    pub new_media: usize,
}

/// What becomes of an event the store takes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// This user's, and wanted by a rule (or `mark_read`): pending for the dispatcher.
    Dispatch,
    /// This user's, and wanted by nothing live when it was committed: stored done.
    Keep,
    /// For a phone number that is not this user's: kept as `foreign`, never dispatched.
    Foreign,
}

/// An event waiting for the dispatcher.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub id: i64,
    pub user: String,
    pub kind: String,
    pub contact: Option<String>,
    pub map: Value,
    /// When the event was committed (unix ms).
    pub created_at_ms: i64,
}

/// A message the dispatcher or CLI wants sent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOutbound {
    pub idem_key: String,
    pub recipient: String,
    pub msg_type: String,
    /// The Cloud API request body.
    pub body: Value,
}

/// A `set_state` to commit.
#[derive(Clone, Debug, PartialEq)]
pub struct StateWrite {
    pub project: String,
    pub key: String,
    /// `null` removes the key.
    pub value: Value,
}

/// A `schedule()` call to persist.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSchedule {
    pub project: String,
    pub rule: String,
    pub call: String,
    pub arg: Value,
    pub due_at_ms: i64,
    pub idem_key: String,
}

/// A rule run as traced, in full.
#[derive(Clone, Debug, PartialEq)]
pub struct RunTrace {
    pub id: i64,
    pub user: String,
    pub project: String,
    pub rule: String,
    pub event_id: Option<i64>,
    pub trigger: Option<String>,
    pub version: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub logs: Vec<String>,
    /// The run's actions (JSON array).
    pub detail: Value,
    pub started_at_ms: i64,
    pub duration_us: i64,
}

/// A reload of the rule set.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadRow {
    pub at_ms: i64,
    pub outcome: String,
    pub hash: String,
    pub projects: Value,
    pub error: Option<String>,
}

/// A timed rule's persisted timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerRow {
    pub user: String,
    pub project: String,
    pub rule: String,
    pub trigger: String,
    pub next_at_ms: Option<i64>,
}

/// A firing of a timed rule, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiringRow {
    pub id: i64,
    pub user: String,
    pub project: String,
    pub rule: String,
    pub instant_ms: i64,
    pub state: String,
    pub reason: Option<String>,
}

/// A `schedule()` call due to run.
#[derive(Clone, Debug, PartialEq)]
pub struct DueCall {
    pub id: i64,
    pub user: String,
    pub project: String,
    pub rule: String,
    pub call: String,
    pub arg: Value,
    pub due_at_ms: i64,
    pub state: String,
}

/// A persisted `schedule()` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRow {
    pub project: String,
    pub rule: String,
    pub call: String,
    pub due_at_ms: i64,
    pub state: String,
}

/// Everything one event's runs produced, committed together.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub outbound: Vec<NewOutbound>,
    pub states: Vec<StateWrite>,
    pub schedules: Vec<NewSchedule>,
    /// `add_label` / `remove_label` calls.
    pub labels: Vec<LabelWrite>,
    /// The stored values the runs read with `state(key)`: if one has changed by the commit
    /// (another contact's run wrote it meanwhile), nothing is written and the runs go again.
    pub reads: Vec<StateRead>,
}

/// A persistent value a run read from the store, as it found it.
#[derive(Clone, Debug, PartialEq)]
pub struct StateRead {
    pub project: String,
    pub key: String,
    /// `None`: the key was unset.
    pub value: Option<Value>,
}

/// A value read by a run was changed by another run before this one's commit.
#[derive(Debug)]
pub struct StateConflict {
    pub project: String,
    pub key: String,
}

impl std::fmt::Display for StateConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state `{}` of project {} changed while the run went on; it runs again",
            self.key, self.project
        )
    }
}

impl std::error::Error for StateConflict {}

impl StoreError {
    /// Whether the write failed only because a value its runs read has changed since: the
    /// runs must go again with the new value (nothing was written).
    pub fn is_state_conflict(&self) -> bool {
        matches!(self, StoreError::Sql(rusqlite::Error::ToSqlConversionFailure(e)) if e.is::<StateConflict>())
    }
}

/// The trace of one rule run.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub project: String,
    pub rule: String,
    /// Content hash of the project version that ran.
    pub version: String,
    /// What started it: the event kind, or `schedule`.
    pub trigger: String,
    /// The run's actions, as JSON.
    pub detail: Value,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub logs: Vec<String>,
    pub actions: usize,
    pub started_at_ms: i64,
    pub duration_us: i64,
}

/// A rule run as recorded.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub project: String,
    pub rule: String,
    pub outcome: String,
    pub error: Option<String>,
}

/// An outbox row.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub user: String,
    pub idem_key: String,
    pub recipient: String,
    pub msg_type: String,
    pub body: Value,
    pub state: String,
    pub attempts: i64,
    pub wamid: Option<String>,
    pub error: Option<String>,
    /// When the row was queued (unix ms).
    pub created_at: i64,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Shared, so that a clone (one per blocking call, one per request) allocates nothing.
    path: Arc<Path>,
    /// Writes waiting for the next group commit.
    group: Arc<group::Queue>,
    /// A second connection for the hot reads (pending events, due sends, windows, state):
    /// in WAL they see every committed write and never wait for a commit's fsync.
    reader: Arc<Mutex<Connection>>,
}

/// Makes the database at `path` its owner's alone (it holds every message): created with mode
/// 0600, or brought to it if other users may read it. SQLite gives its WAL and shared-memory
/// files the database's mode.
fn own_only(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An empty file is a new database to SQLite.
            crate::private_file::create(path)
                .map(drop)
                .map_err(|source| StoreError::Create {
                    path: path.to_path_buf(),
                    source,
                })
        }
        #[cfg(unix)]
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode();
            if mode & 0o077 != 0 {
                // Not ours to insist on (a read-only mount, another owner): say so and go on.
                let private = std::fs::Permissions::from_mode(mode & 0o700);
                if let Err(e) = std::fs::set_permissions(path, private) {
                    tracing::warn!(path = %path.display(), error = %e, "the database is readable by other users and cannot be made private");
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A read-only connection of its own to the database at `path` (a running gate may write it
/// meanwhile: WAL), waiting up to 5 s for a lock.
fn read_only_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    Ok(conn)
}

/// The page cache of a gate's connections, and their query plans. (No memory map: the file
/// grows with every commit, and remapping it costs every core a TLB flush.)
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -16384i64)?;
    // A plan does not depend on the values bound: without this, SQLite (3.46 on) plans
    // `LIMIT ?` with the value bound, and so prepares such a statement again at every run
    // (the dispatcher's and the sender's looks did, at every look).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, std::time::Duration::from_secs(5))
    }

    /// Opens the database; a write waits at most `busy_timeout` for a lock held elsewhere.
    pub fn open_with(path: &Path, busy_timeout: std::time::Duration) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        own_only(path)?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(busy_timeout).map_err(open_err)?;
        // The hot writes keep their statements prepared (group commit runs many per commit),
        // and the savepoint of each write in a group commit lives in memory, not a temp file.
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // Hot index pages stay in memory (16 MB of cache instead of 2 MB).
        tune(&conn).map_err(open_err)?;
        // A burst may grow the WAL; once it starts over it is cut back to this size.
        conn.pragma_update(None, "journal_size_limit", 64i64 << 20)
            .map_err(open_err)?;
        // Foreign keys are on once migrated.
        migrate(&mut conn).map_err(open_err)?;
        let reader = Connection::open(path).map_err(open_err)?;
        reader.busy_timeout(busy_timeout).map_err(open_err)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(open_err)?;
        reader.set_prepared_statement_cache_capacity(64);
        tune(&reader).map_err(open_err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::from(path),
            group: Arc::default(),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Opens an existing database for reading only: no migration, no write of any kind
    /// (dry runs, `wagate runs`). A running gate may write it at the same time (WAL).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = read_only_connection(path)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(Store {
            reader: conn.clone(),
            conn,
            path: Arc::from(path),
            group: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a blocking thread, so that async tasks never wait on SQLite.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        // A panic elsewhere while holding the lock leaves the connection usable: SQLite
        // rolls back the open transaction when its guard drops.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut conn)?)
    }

    /// As `with`, on the read connection: for reads only, which see every committed write.
    fn read<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Stores a verified webhook body and its events in one transaction, each event as its
    /// [`Fate`] says.
    pub async fn ingest(
        &self,
        user: UserId,
        body: bytes::Bytes,
        events: Vec<(Event, Fate)>,
    ) -> Result<IngestOutcome, StoreError> {
        self.grouped_async(ingest_job(user, body, events)).await
    }

    /// Commits everything one event's dispatch produced, in one transaction: its outbox rows
    /// (a key already present is skipped, so a re-run after a crash enqueues nothing twice),
    /// the run traces, and the event marked done.
    pub async fn complete_event(
        &self,
        event_id: i64,
        user: String,
        effects: Effects,
        runs: Vec<RunRecord>,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let done = Completion::new(effects, runs, Some(event_id));
        // Committed together with the other lanes' events finishing now (group commit).
        self.grouped_async(move |tx| {
            let user = user.as_str();
            // Only a pending event completes: should it ever be run twice, the second result
            // is dropped whole instead of applying its effects again.
            let claimed = tx.prepare_cached("UPDATE events SET state = 'done', done_at = ?2 WHERE id = ?1 AND state = 'pending'")?.execute(params![event_id, now])?;
            if claimed == 0 {
                tracing::warn!(event_id, "an event was completed twice; the second result is dropped");
                return Ok(0);
            }
            done.apply(tx, user, now)
        })
        .await
    }

    /// Queues messages outside any event (the CLI's `send`). Returns how many were new.
    pub fn enqueue(&self, user: &str, outbound: &[NewOutbound]) -> Result<usize, StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let rows: Vec<OutboundRow> = outbound.iter().cloned().map(OutboundRow::new).collect();
            let n = insert_outbound(&tx, user, &rows, now)?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// Moves rows left in `sending` by a crash back to `queued`: Graph's answer to them was
    /// lost in flight, the one window in which a message may be sent twice.
    pub fn recover_inflight(&self) -> Result<usize, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE outbox SET state = 'queued', updated_at = ?1 WHERE state = 'sending'",
                [now_ms()],
            )
        })
    }

    /// Gives back a row claimed but not sent (the gate is stopping): queued again, its attempt
    /// not counted.
    pub fn unclaim_outbox(&self, id: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE outbox SET state = 'queued', attempts = MAX(attempts - 1, 0), updated_at = ?2
                 WHERE id = ?1 AND state = 'sending'",
                params![id, now_ms()],
            )
            .map(drop)
        })
    }

    /// Up to `limit` due rows, soonest first (not yet claimed): (id, user, recipient).
    pub fn due_outbox(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, user, recipient FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, id LIMIT ?2",
            )?;
            let rows = st.query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    /// Puts a queued row off until `at_ms` without counting an attempt (rate pacing).
    pub fn defer_outbox(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1 AND state = 'queued'",
                params![id, at_ms],
            )
            .map(drop)
        })
    }

    /// The WhatsApp timestamp (unix s) of a contact's last inbound message, if they ever wrote.
    pub fn last_inbound(&self, user: &str, contact: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| last_inbound_in(conn, user, contact))
    }

    /// Records that Graph rejected the token with this fingerprint.
    pub fn mark_token_invalid(
        &self,
        user: &str,
        fingerprint: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO token_status (user, fingerprint, reason, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user) DO UPDATE SET fingerprint = excluded.fingerprint, reason = excluded.reason, at = excluded.at",
                params![user, fingerprint, reason, now_ms()],
            )?;
            audit::append(
                &tx,
                user,
                "token.invalid",
                &serde_json::json!({"fingerprint": fingerprint, "reason": reason}),
            )?;
            tx.commit()
        })
    }

    /// What debug_token said of this user's token (by fingerprint): its expiry (unix s, 0
    /// never) and when that was asked (unix ms).
    pub fn token_info(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT expires_at, checked_at FROM token_info WHERE user = ?1 AND fingerprint = ?2",
                params![user, fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// When this user's current token expires, as far as known: the credentials' own date,
    /// else what debug_token said (`None` also for a token that never expires).
    pub fn token_expiry(
        &self,
        user: &str,
        creds: &crate::vault::Credentials,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        if let Some(t) = creds.token_expires_at {
            return Ok(Some(t));
        }
        let fp = crate::sender::fingerprint(creds.access_token.expose());
        Ok(self
            .token_info(user, &fp)?
            .filter(|(at, _)| *at > 0)
            .and_then(|(at, _)| chrono::DateTime::from_timestamp(at, 0)))
    }

    /// Records what debug_token said of this user's token.
    pub fn set_token_info(
        &self,
        user: &str,
        fingerprint: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO token_info (user, fingerprint, expires_at, checked_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user) DO UPDATE SET fingerprint = excluded.fingerprint,
                   expires_at = excluded.expires_at, checked_at = excluded.checked_at",
                params![user, fingerprint, expires_at, now_ms()],
            )
            .map(drop)
        })
    }

    /// Forgets that Graph rejected this user's token (Graph accepted it again).
    pub fn clear_token_invalid(&self, user: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            if tx.execute("DELETE FROM token_status WHERE user = ?1", [user])? > 0 {
                audit::append(
                    &tx,
                    user,
                    "token.valid",
                    &serde_json::json!({"note": "Graph accepted the token again"}),
                )?;
            }
            tx.commit()
        })
    }

    /// Why and when (unix ms) Graph rejected this token, if it did; a new token clears it.
    pub fn token_invalid(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        self.read(|conn| token_invalid_in(conn, user, fingerprint))
    }

    /// Claims one row right before its HTTP call: `sending` marks exactly the rows whose
    /// answer may be lost if the gate dies now. `None` if it is no longer queued.
    pub fn claim_outbox(&self, id: i64, now: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1 AND state = 'queued' AND next_attempt_at <= ?2",
                params![id, now],
            )?;
            let row = if n == 1 {
                tx.query_row(
                    &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?1"),
                    [id],
                    outbox_row,
                )
                .optional()?
            } else {
                None
            };
            tx.commit()?;
            Ok(row)
        })
    }

    /// One outbox row by id, with the time of its next attempt (unix ms).
    pub fn outbox_row(&self, id: i64) -> Result<Option<(OutboxRow, i64)>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {OUTBOX_COLS}, next_attempt_at FROM outbox WHERE id = ?1"),
                [id],
                |r| Ok((outbox_row(r)?, r.get(11)?)),
            )
            .optional()
        })
    }

    /// The id of this user's outbox row with `idem_key`.
    pub fn outbox_id(&self, user: &str, idem_key: &str) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT id FROM outbox WHERE user = ?1 AND idem_key = ?2",
                params![user, idem_key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The earliest `next_attempt_at` after `now` of a queued row, if any: the sender sleeps
    /// until then. Rows due already wait for what held them back at the sender's last look (a
    /// busy recipient, no free slot), whose end wakes the sender.
    pub fn next_due_after(&self, now: i64) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued' AND next_attempt_at > ?1",
            )?
            .query_row([now], |r| r.get(0))
        })
    }

    /// Records a send that Graph accepted, and the outbound message it became.
    pub fn mark_sent(&self, row: &OutboxRow, wamid: &str) -> Result<(), StoreError> {
        self.grouped(mark_sent_job(row.clone(), wamid.to_string()))
    }

    /// As [`Store::mark_sent`], for the sender's tasks: waits for the commit without holding a
    /// blocking thread.
    pub async fn mark_sent_owned(&self, row: OutboxRow, wamid: String) -> Result<(), StoreError> {
        self.grouped_async(mark_sent_job(row, wamid)).await
    }

    /// A mark-as-read Graph accepted: the row is done and the incoming message is `read`.
    pub fn mark_read_sent(&self, row: &OutboxRow) -> Result<(), StoreError> {
        let now = now_ms();
        let message_id = row
            .body
            .get("message_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.prepare_cached("UPDATE outbox SET state = 'sent', error = NULL, updated_at = ?2 WHERE id = ?1")?.execute(params![row.id, now])?;
            audit_send(&tx, row.id, "send.sent", serde_json::json!({"read": message_id}))?;
            let rev = next_rev(&tx)?;
            tx.prepare_cached("UPDATE messages SET status = 'read', rev = ?3 WHERE user = ?1 AND wamid = ?2 AND direction = 'in'")?.execute(params![row.user, message_id, rev])?;
            tx.commit()
        })
    }

    /// Puts a row back in the queue for another attempt at `at_ms`.
    pub fn mark_retry(&self, id: i64, at_ms: i64, error: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE outbox SET state = 'queued', next_attempt_at = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, at_ms, error, now_ms()],
            )?;
            audit_send(&tx, id, "send.retry", serde_json::json!({"error": error, "next_attempt_at": at_ms}))?;
            tx.commit()
        })
    }

    /// Gives up on a row with a reason a user can read.
    pub fn mark_failed(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE outbox SET state = 'failed', error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, reason, now_ms()],
            )?;
            audit_send(&tx, id, "send.failed", serde_json::json!({"error": reason}))?;
            tx.commit()
        })
    }

    /// Every outbox row of a user, oldest first.
    pub fn outbox(&self, user: &str) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {OUTBOX_COLS} FROM outbox WHERE user = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([user], outbox_row)?;
            rows.collect()
        })
    }

    /// A message's delivery status, by wamid.
    pub fn message_status(&self, user: &str, wamid: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT status FROM messages WHERE user = ?1 AND wamid = ?2",
                params![user, wamid],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// A message's status and, for a failed one, Meta's error details (JSON).
    pub fn message_state(
        &self,
        user: &str,
        wamid: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT status, error FROM messages WHERE user = ?1 AND wamid = ?2",
                params![user, wamid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// A persistent value of a project.
    pub fn state_get(
        &self,
        user: &str,
        project: &str,
        key: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT value FROM state WHERE user = ?1 AND project = ?2 AND key = ?3",
            )?
            .query_row(params![user, project, key], |r| r.get::<_, String>(0))
            .optional()
            .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
        })
    }

    /// This user's contacts as maps, each with its `labels`: the one with `key`, or those
    /// matching `query` (fields: contact, name; `label: L` keeps those carrying label L).
    pub fn lookup_contacts(
        &self,
        user: &str,
        key: Option<&str>,
        query: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<Value>, StoreError> {
        // On the read connection: a script's lookup never waits for the writer's commits.
        let key = key.map(contact_of);
        let query = contact_in(query);
        self.read(|conn| contacts::lookup(conn, user, key.as_deref(), query.as_ref()))
    }

    /// This user's messages as maps, newest first: the one with wamid `key`, or those matching
    /// `query` (fields: id, contact, direction, type, text, status), the newest 1000 of them.
    pub fn lookup_messages(
        &self,
        user: &str,
        key: Option<&str>,
        query: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<Value>, StoreError> {
        let query = contact_in(query);
        self.read(|conn| {
            let contact = query
                .as_ref()
                .and_then(|q| q.get("contact"))
                .and_then(Value::as_str);
            let mut st = conn.prepare_cached(
                "SELECT wamid, contact, direction, type, text, timestamp, status FROM messages
                 WHERE user = ?1 AND (?2 IS NULL OR wamid = ?2) AND (?3 IS NULL OR contact = ?3)
                 ORDER BY timestamp DESC, id DESC",
            )?;
            let rows = st.query_map(params![user, key, contact], |r| {
                Ok(serde_json::json!({
                    "id": r.get::<_, Option<String>>(0)?,
                    "contact": r.get::<_, String>(1)?,
                    "direction": r.get::<_, String>(2)?,
                    "type": r.get::<_, String>(3)?,
                    "text": r.get::<_, String>(4)?,
                    "timestamp": r.get::<_, i64>(5)?,
                    "status": r.get::<_, String>(6)?,
                }))
            })?;
            // The limit bounds what is found, not where it is looked for.
            let mut found = Vec::new();
            for row in rows {
                found.extend(filter_rows(vec![row?], "id", None, query.as_ref()));
                if found.len() == MESSAGES_FOUND_MAX {
                    break;
                }
            }
            Ok(found)
        })
    }

    /// Pending and past `schedule()` calls of a user, soonest first.
    pub fn schedules(&self, user: &str) -> Result<Vec<ScheduleRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT project, rule, call, due_at, state FROM schedules WHERE user = ?1 ORDER BY due_at, id",
            )?;
            let rows = st.query_map([user], |r| {
                Ok(ScheduleRow {
                    project: r.get(0)?,
                    rule: r.get(1)?,
                    call: r.get(2)?,
                    due_at_ms: r.get(3)?,
                    state: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Rule runs, newest first: of `user` (or everyone), of rule `rule` (or every rule; a rule
    /// is named `name` or `project/name`), at most `limit`.
    pub fn runs(
        &self,
        user: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunTrace>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT id, user, project, rule, event_id, trigger, version, outcome, error, logs, detail, started_at, duration_us
                 FROM rule_runs
                 WHERE (?1 IS NULL OR user = ?1) AND (?2 IS NULL OR rule = ?2 OR project || '/' || rule = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = st.query_map(params![user, rule, limit as i64], |r| {
                let logs: String = r.get(9)?;
                let detail: Option<String> = r.get(10)?;
                Ok(RunTrace {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    project: r.get(2)?,
                    rule: r.get(3)?,
                    event_id: r.get(4)?,
                    trigger: r.get(5)?,
                    version: r.get(6)?,
                    outcome: r.get(7)?,
                    error: r.get(8)?,
                    logs: serde_json::from_str(&logs).unwrap_or_default(),
                    detail: detail.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or(Value::Null),
                    started_at_ms: r.get(11)?,
                    duration_us: r.get(12)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Records a reload of the rule set.
    pub fn record_reload(
        &self,
        outcome: &str,
        hash: &str,
        projects: &Value,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO reloads (at, outcome, hash, projects, error) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_ms(), outcome, hash, projects.to_string(), error],
            )?;
            // One entry per user whose projects went live (or failed to), with their hashes.
            let mut by_user: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
                Default::default();
            if let Some(m) = projects.as_object() {
                for (name, h) in m {
                    let user = name.split('/').next().unwrap_or(audit::GATE).to_string();
                    by_user.entry(user).or_default().insert(name.clone(), h.clone());
                }
            }
            if by_user.is_empty() {
                by_user.insert(audit::GATE.to_string(), Default::default());
            }
            for (user, projects) in by_user {
                audit::append(
                    &tx,
                    &user,
                    "reload",
                    &serde_json::json!({"outcome": outcome, "hash": hash, "projects": projects, "error": error}),
                )?;
            }
            tx.commit()
        })
    }

    /// Reloads, newest first.
    pub fn reloads(&self, limit: usize) -> Result<Vec<ReloadRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT at, outcome, hash, projects, error FROM reloads ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                let projects: String = r.get(3)?;
                Ok(ReloadRow {
                    at_ms: r.get(0)?,
                    outcome: r.get(1)?,
                    hash: r.get(2)?,
                    projects: serde_json::from_str(&projects).unwrap_or(Value::Null),
                    error: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Every timer.
    pub fn timers(&self) -> Result<Vec<TimerRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare("SELECT user, project, rule, trigger, next_at FROM timers ORDER BY user, project, rule")?;
            let rows = st.query_map([], |r| {
                Ok(TimerRow {
                    user: r.get(0)?,
                    project: r.get(1)?,
                    rule: r.get(2)?,
                    trigger: r.get(3)?,
                    next_at_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Makes the timers match the live timed rules: new ones and ones whose trigger changed get
    /// `next_at` from `next`, ones of rules that are gone are removed (their future firings
    /// with them). Unchanged timers keep their `next_at`, so a restart or reload misses nothing.
    pub fn sync_timers(
        &self,
        live: &[(String, String, String, String)],
        next: &dyn Fn(&str, &str, &str) -> Option<i64>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let existing: Vec<(String, String, String, String)> = {
                let mut st = tx.prepare("SELECT user, project, rule, trigger FROM timers")?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for (u, p, r, _) in &existing {
                if !live.iter().any(|(lu, lp, lr, _)| lu == u && lp == p && lr == r) {
                    tx.execute("DELETE FROM timers WHERE user = ?1 AND project = ?2 AND rule = ?3", params![u, p, r])?;
                }
            }
            for (u, p, r, t) in live {
                let same = existing.iter().any(|(eu, ep, er, et)| eu == u && ep == p && er == r && et == t);
                if !same {
                    tx.execute(
                        "INSERT INTO timers (user, project, rule, trigger, next_at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (user, project, rule) DO UPDATE SET trigger = excluded.trigger, next_at = excluded.next_at",
                        params![u, p, r, t, next(u, p, r)],
                    )?;
                }
            }
            tx.commit()
        })?;
        Ok(())
    }

    /// Claims a firing of a timed rule at `instant`: records it as running and moves the
    /// timer to `next_at`, in one transaction. `false` if that instant was claimed before
    /// (then nothing changes but the timer).
    pub fn claim_firing(
        &self,
        t: &TimerRow,
        instant: i64,
        next_at: Option<i64>,
        skipped: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let state = if skipped.is_some() { "skipped" } else { "running" };
            let n = tx.execute(
                "INSERT OR IGNORE INTO firings (user, project, rule, instant, state, reason, fired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.user, t.project, t.rule, instant, state, skipped, now],
            )?;
            tx.execute(
                "UPDATE timers SET next_at = ?4 WHERE user = ?1 AND project = ?2 AND rule = ?3",
                params![t.user, t.project, t.rule, next_at],
            )?;
            let id = (n == 1).then(|| tx.last_insert_rowid());
            tx.commit()?;
            Ok(id)
        })
    }

    /// Firings left running by a crash, to run again once.
    pub fn running_firings(&self) -> Result<Vec<FiringRow>, StoreError> {
        self.firings_where("state = 'running'")
    }

    /// Every firing, oldest instant first.
    pub fn firings(&self) -> Result<Vec<FiringRow>, StoreError> {
        self.firings_where("1 = 1")
    }

    fn firings_where(&self, cond: &str) -> Result<Vec<FiringRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT id, user, project, rule, instant, state, reason FROM firings WHERE {cond} ORDER BY instant, id"
            ))?;
            let rows = st.query_map([], |r| {
                Ok(FiringRow {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    project: r.get(2)?,
                    rule: r.get(3)?,
                    instant_ms: r.get(4)?,
                    state: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Commits a firing's run: its effects and trace, and the firing done, in one transaction,
    /// only if it is still running (so a firing's effects are applied once).
    pub fn complete_firing(
        &self,
        firing_id: i64,
        user: &str,
        effects: Effects,
        runs: Vec<RunRecord>,
    ) -> Result<usize, StoreError> {
        self.complete_one(
            "UPDATE firings SET state = 'done' WHERE id = ?1 AND state = 'running'",
            firing_id,
            user,
            effects,
            runs,
        )
    }

    /// `schedule()` calls due at `now` (pending, or left running by a crash).
    pub fn due_calls(&self, now: i64) -> Result<Vec<DueCall>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT id, user, project, rule, call, arg, due_at, state FROM schedules
                 WHERE (state = 'pending' AND due_at <= ?1) OR state = 'running' ORDER BY due_at, id",
            )?;
            let rows = st.query_map([now], |r| {
                let arg: String = r.get(5)?;
                Ok(DueCall {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    project: r.get(2)?,
                    rule: r.get(3)?,
                    call: r.get(4)?,
                    arg: serde_json::from_str(&arg).unwrap_or(Value::Null),
                    due_at_ms: r.get(6)?,
                    state: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The earliest pending `schedule()` call, if any.
    pub fn next_call_due(&self) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT MIN(due_at) FROM schedules WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Moves a `schedule()` call to `state` (running, skipped, failed) with a reason; `false`
    /// if it was not in `from`.
    pub fn set_call_state(
        &self,
        id: i64,
        from: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE schedules SET state = ?3, error = ?4, fired_at = ?5 WHERE id = ?1 AND state = ?2",
                params![id, from, state, reason, now_ms()],
            )
            .map(|n| n == 1)
        })
    }

    /// Commits a `schedule()` call's run, only if it is still running.
    pub fn complete_call(
        &self,
        call_id: i64,
        user: &str,
        effects: Effects,
        runs: Vec<RunRecord>,
    ) -> Result<usize, StoreError> {
        self.complete_one(
            "UPDATE schedules SET state = 'done' WHERE id = ?1 AND state = 'running'",
            call_id,
            user,
            effects,
            runs,
        )
    }

    fn complete_one(
        &self,
        claim_sql: &str,
        id: i64,
        user: &str,
        effects: Effects,
        runs: Vec<RunRecord>,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let done = Completion::new(effects, runs, None);
        self.with(|conn| {
            let tx = conn.transaction()?;
            if tx.execute(claim_sql, [id])? == 0 {
                return Ok(0);
            }
            let queued = done.apply(&tx, user, now)?;
            tx.commit()?;
            Ok(queued)
        })
    }

    /// A contact's profile name as last seen in a webhook.
    pub fn contact_name(&self, user: &str, contact: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT name FROM contacts WHERE user = ?1 AND contact = ?2",
                params![user, contact],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Counts: (raw bodies, events, events by state `pending`).
    pub fn counts(&self, user: &str) -> Result<(i64, i64, i64), StoreError> {
        self.with(|conn| {
            let one = |sql: &str| conn.query_row(sql, [user], |r| r.get::<_, i64>(0));
            Ok((
                one("SELECT COUNT(*) FROM inbox WHERE user = ?1")?,
                one("SELECT COUNT(*) FROM events WHERE user = ?1")?,
                one("SELECT COUNT(*) FROM events WHERE user = ?1 AND state = 'pending'")?,
            ))
        })
    }

    /// The most recent rule runs of a user, newest first.
    pub fn recent_runs(&self, user: &str, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT project, rule, outcome, error FROM rule_runs WHERE user = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![user, limit as i64], |r| {
                Ok(RunSummary {
                    project: r.get(0)?,
                    rule: r.get(1)?,
                    outcome: r.get(2)?,
                    error: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}

/// Keeps rows whose `key_field` is `key` and whose fields match `query` (text comparison).
/// Most messages one `lookup("messages", …)` gives.
const MESSAGES_FOUND_MAX: usize = 1000;

/// A contact as rows key it (digits for a phone number: "+33 6 12…" is 33612…), or as given
/// when it holds no digit.
fn contact_of(given: &str) -> String {
    let key = crate::domain::window::contact_key(given);
    if key.is_empty() {
        given.to_string()
    } else {
        key
    }
}

/// `query` with its `contact` as rows key it.
fn contact_in(
    query: Option<&serde_json::Map<String, Value>>,
) -> Option<serde_json::Map<String, Value>> {
    let mut query = query.cloned()?;
    if let Some(Value::String(c)) = query.get("contact") {
        let c = contact_of(c);
        query.insert("contact".into(), c.into());
    }
    Some(query)
}

fn filter_rows(
    rows: Vec<Value>,
    key_field: &str,
    key: Option<&str>,
    query: Option<&serde_json::Map<String, Value>>,
) -> Vec<Value> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    rows.into_iter()
        .filter(|r| key.is_none_or(|k| r.get(key_field).map(text).as_deref() == Some(k)))
        .filter(|r| {
            query.is_none_or(|q| {
                q.iter()
                    .all(|(k, v)| r.get(k).is_some_and(|c| c == v || text(c) == text(v)))
            })
        })
        .collect()
}

/// One event of a webhook as the writer stores it: plain values taken out of its map on the
/// caller's thread, so the writer's turn neither reads nor drops an event map (only a rare
/// `group_*` change hands its `raw` value over, for the groups it names).
struct IngestRow {
    kind: String,
    dedupe_key: String,
    contact: Option<String>,
    phone_number_id: Option<String>,
    /// The event map (with `user`) as stored in `events.payload`.
    payload: String,
    fate: Fate,
    effect: Effect,
}

impl IngestRow {
    fn new(user: &UserId, ev: Event, fate: Fate, now: i64) -> IngestRow {
        let effect = Effect::of(&ev, now);
        let Event {
            kind,
            dedupe_key,
            contact,
            phone_number_id,
            mut map,
            ..
        } = ev;
        if let Some(m) = map.as_object_mut() {
            m.insert("user".into(), user.as_str().into());
        }
        IngestRow {
            kind: kind.as_str().to_string(),
            dedupe_key,
            contact,
            phone_number_id,
            payload: map.to_string(),
            fate,
            effect,
        }
    }
}

/// What a newly stored event writes besides its own row.
enum Effect {
    /// An inbound message: its row in messages, its contact, its group, its media.
    Message {
        wamid: Option<String>,
        contact: String,
        /// WhatsApp's timestamp (unix s), else the time it was received.
        ts: i64,
        msg_type: String,
        text: String,
        /// The message object as JSON (`raw`).
        raw: Option<String>,
        name: Option<String>,
        group_id: Option<String>,
        media: Option<MediaRef>,
    },
    /// A delivery status of a message sent.
    Status {
        wamid: String,
        status: String,
        /// Meta's `errors` as JSON, when it names any.
        errors: Option<String>,
        at: Option<i64>,
    },
    /// A `group_*` change, with its `raw` value.
    Group {
        field: String,
        raw: Option<Value>,
    },
    None,
}

/// Media an inbound message carries, to fetch.
struct MediaRef {
    id: String,
    mime_type: Option<String>,
    sha256: Option<String>,
}

impl Effect {
    fn of(ev: &Event, now: i64) -> Effect {
        let m = &ev.map;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        match m.get("kind").and_then(Value::as_str) {
            // A message with no sender is stored and dispatched as an event, but is part of no
            // conversation: no row in messages or contacts.
            Some("message") if ev.contact.as_deref().is_none_or(str::is_empty) => Effect::None,
            Some("message") => Effect::Message {
                wamid: ev.wamid.clone(),
                contact: ev.contact.clone().unwrap_or_default(),
                ts: m
                    .get("timestamp")
                    .and_then(Value::as_i64)
                    .unwrap_or(now / 1000),
                msg_type: text(m.get("type")).unwrap_or_else(|| "unknown".into()),
                text: ev.text().to_string(),
                raw: m.get("raw").map(Value::to_string),
                name: text(m.get("name")).filter(|n| !n.is_empty()),
                group_id: text(m.pointer("/raw/group_id")),
                media: text(m.pointer("/media/id")).map(|id| MediaRef {
                    id,
                    mime_type: text(m.pointer("/media/mime_type")),
                    sha256: text(m.pointer("/media/sha256")),
                }),
            },
            Some("status") => match (&ev.wamid, text(m.get("status"))) {
                (Some(wamid), Some(status)) => Effect::Status {
                    wamid: wamid.clone(),
                    status,
                    errors: m
                        .get("errors")
                        .filter(|e| e.as_array().is_some_and(|a| !a.is_empty()))
                        .map(Value::to_string),
                    at: m.get("timestamp").and_then(Value::as_i64),
                },
                _ => Effect::None,
            },
            Some(field) if field.starts_with("group_") => Effect::Group {
                field: field.to_string(),
                raw: m.get("raw").cloned(),
            },
            _ => Effect::None,
        }
    }
}

/// The writes of one verified webhook (see [`Store::ingest`]), to run in a group commit.
fn ingest_job(
    user: UserId,
    body: bytes::Bytes,
    events: Vec<(Event, Fate)>,
) -> impl Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<IngestOutcome> + Send + 'static {
    let sha = hex::encode(Sha256::digest(&body));
    let now = now_ms();
    // What needs no transaction is made here, on the caller's thread, not the writer's.
    let rows: Vec<IngestRow> = events
        .into_iter()
        .map(|(ev, fate)| IngestRow::new(&user, ev, fate, now))
        .collect();
    move |tx| {
        let (user, body) = (&user, &body[..]);
        tx.prepare_cached(
            "INSERT INTO inbox (user, received_at, sha256, body) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![user.as_str(), now, sha, body])?;
        let inbox_id = tx.last_insert_rowid();
        let mut out = IngestOutcome {
            new_body: true,
            new_events: 0,
            to_dispatch: 0,
            duplicates: 0,
            foreign: 0,
            new_media: 0,
        };
        for row in &rows {
            let state = match row.fate {
                Fate::Dispatch => "pending",
                Fate::Keep => "done",
                Fate::Foreign => "foreign",
            };
            let done_at = (row.fate == Fate::Keep).then_some(now);
            let insert = || -> rusqlite::Result<bool> {
                Ok(tx.prepare_cached("INSERT OR IGNORE INTO events (user, inbox_id, kind, dedupe_key, contact, phone_number_id, payload, state, created_at, done_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?.execute(params![user.as_str(), inbox_id, row.kind, row.dedupe_key, row.contact,
                            row.phone_number_id, row.payload, state, now, done_at])? == 1)
            };
            let mut inserted = insert()?;
            if !inserted && row.fate != Fate::Foreign {
                // A copy kept as foreign (the user's phone_number_id was wrong when it came)
                // gives way to the user's own: it was never run, so nothing is done twice.
                // It goes out and the owned one comes in anew, after the dispatcher's cursor.
                let foreign = tx
                    .prepare_cached("DELETE FROM events WHERE user = ?1 AND dedupe_key = ?2 AND state = 'foreign'")?
                    .execute(params![user.as_str(), row.dedupe_key])?;
                inserted = foreign == 1 && insert()?;
            }
            if !inserted {
                out.duplicates += 1;
                continue;
            }
            if row.fate == Fate::Foreign {
                out.foreign += 1;
                continue;
            }
            out.new_events += 1;
            out.to_dispatch += usize::from(row.fate == Fate::Dispatch);
            out.new_media += record_effects(tx, user, &row.effect, now)?;
        }
        if !rows.is_empty() && out.duplicates == rows.len() && redelivered(tx, user, &rows, &sha)? {
            // The very body that brought these events before: it is kept once.
            tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?
                .execute([inbox_id])?;
            out.new_body = false;
        }
        let details = accepted_details(&sha, body.len(), &out);
        audit::append_text(tx, user.as_str(), "webhook.accepted", &details)?;
        Ok(out)
    }
}

/// The details of a `webhook.accepted` audit entry, written out without a JSON value (it is
/// made on the writer's turn): the text `serde_json` gives for them, keys in this order (the
/// crate keeps the order of insertion), since a hex digest and counts need no escaping.
fn accepted_details(sha: &str, bytes: usize, out: &IngestOutcome) -> String {
    format!(
        r#"{{"sha256":"{sha}","bytes":{bytes},"events":{},"duplicates":{},"foreign":{}}}"#,
        out.new_events, out.duplicates, out.foreign
    )
}

/// Whether a body whose events are all stored already is the very body (`sha`) that brought
/// one of them: a redelivery. A different body repeating known events is kept.
fn redelivered(
    tx: &rusqlite::Transaction<'_>,
    user: &UserId,
    rows: &[IngestRow],
    sha: &str,
) -> rusqlite::Result<bool> {
    let mut st = tx.prepare_cached(
        "SELECT i.sha256 FROM events e JOIN inbox i ON i.id = e.inbox_id
         WHERE e.user = ?1 AND e.dedupe_key = ?2",
    )?;
    for row in rows {
        let first: Option<String> = st
            .query_row(params![user.as_str(), row.dedupe_key], |r| r.get(0))
            .optional()?;
        if first.as_deref() == Some(sha) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The writes of a send Graph accepted (see [`Store::mark_sent`]), to run in a group commit.
fn mark_sent_job(
    row: OutboxRow,
    wamid: String,
) -> impl Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send + 'static {
    let now = now_ms();
    // Made before the writer's turn: the writer gets text, no JSON value.
    let (text, body) = (outbound_text(&row.body), row.body.to_string());
    let details = send_details_text(
        row.id,
        &row.recipient,
        &row.msg_type,
        row.attempts,
        serde_json::json!({"wamid": wamid}),
    );
    let OutboxRow {
        id,
        user,
        idem_key,
        recipient,
        msg_type,
        ..
    } = row;
    // The contact as every other row keys it (digits: a send to "+33 6…" is 336…'s).
    let contact = crate::domain::window::contact_key(&recipient);
    move |tx| {
        let wamid = wamid.as_str();
        tx.prepare_cached("UPDATE outbox SET state = 'sent', wamid = ?2, error = NULL, updated_at = ?3 WHERE id = ?1")?.execute(params![id, wamid, now])?;
        audit::append_text(tx, &user, "send.sent", &details)?;
        let rev = next_rev(tx)?;
        tx.prepare_cached("INSERT OR IGNORE INTO messages (user, wamid, direction, contact, type, text, timestamp, status, local_id, raw, rev)
             VALUES (?1, ?2, 'out', ?3, ?4, ?5, ?6, 'sent', ?7, ?8, ?9)")?.execute(params![user, wamid, contact, msg_type, text, now / 1000,
                    idem_key, body, rev])?;
        early_statuses(tx, &user, wamid)
    }
}

/// Applies the statuses of `wamid` that arrived before its send was recorded (Meta may answer
/// a webhook faster than the sender's commit): kept as events, they would else be lost.
fn early_statuses(tx: &rusqlite::Transaction<'_>, user: &str, wamid: &str) -> rusqlite::Result<()> {
    // The events' unique index (user, dedupe_key) holds them under `status:<wamid>:<status>`.
    let from = format!("status:{wamid}:");
    let to = format!("status:{wamid};");
    let early: Vec<String> = tx
        .prepare_cached(
            "SELECT payload FROM events WHERE user = ?1 AND dedupe_key >= ?2 AND dedupe_key < ?3
             AND state != 'foreign' ORDER BY id",
        )?
        .query_map(params![user, from, to], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for payload in early {
        let Ok(ev) = serde_json::from_str::<Value>(&payload) else {
            continue;
        };
        let Some(status) = ev.get("status").and_then(Value::as_str) else {
            continue;
        };
        let errors = ev
            .get("errors")
            .filter(|e| e.as_array().is_some_and(|a| !a.is_empty()))
            .map(Value::to_string);
        let at = ev.get("timestamp").and_then(Value::as_i64);
        apply_status(tx, user, wamid, status, errors.as_deref(), at)?;
    }
    Ok(())
}

const OUTBOX_COLS: &str =
    "id, user, idem_key, recipient, type, body, state, attempts, wamid, error, created_at";

/// Audits what happened to outbox row `id`, under its user, with its recipient and type.
fn audit_send(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    action: &str,
    details: Value,
) -> rusqlite::Result<()> {
    let (user, to, msg_type, attempts): (String, String, String, i64) = tx
        .prepare_cached("SELECT user, recipient, type, attempts FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    send_details(tx, id, &user, &to, &msg_type, attempts, action, details)
}

#[allow(clippy::too_many_arguments)]
fn send_details(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    user: &str,
    to: &str,
    msg_type: &str,
    attempts: i64,
    action: &str,
    details: Value,
) -> rusqlite::Result<()> {
    let details = send_details_text(id, to, msg_type, attempts, details);
    audit::append_text(tx, user, action, &details)
}

/// The details of a send's audit entry: `details` with the outbox row, its recipient, type and
/// attempt.
fn send_details_text(
    id: i64,
    to: &str,
    msg_type: &str,
    attempts: i64,
    mut details: Value,
) -> String {
    if let Some(m) = details.as_object_mut() {
        m.insert("outbox_id".into(), id.into());
        m.insert("to".into(), to.into());
        m.insert("type".into(), msg_type.into());
        m.insert("attempt".into(), attempts.into());
    }
    details.to_string()
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let (mut row, body) = outbox_row_text(r)?;
    row.body = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(row)
}

/// A row of [`OUTBOX_COLS`] with its body left as text (`null` in the row), for a caller that
/// decodes it later, off the writer's turn.
fn outbox_row_text(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxRow, String)> {
    Ok((
        OutboxRow {
            id: r.get(0)?,
            user: r.get(1)?,
            idem_key: r.get(2)?,
            recipient: r.get(3)?,
            msg_type: r.get(4)?,
            body: Value::Null,
            state: r.get(6)?,
            attempts: r.get(7)?,
            wamid: r.get(8)?,
            error: r.get(9)?,
            created_at: r.get(10)?,
        },
        r.get(5)?,
    ))
}

fn insert_outbound(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    outbound: &[OutboundRow],
    now: i64,
) -> rusqlite::Result<usize> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (user, idem_key, recipient, type, body, state, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6, ?6)",
    )?;
    let mut n = 0;
    for o in outbound {
        n += st.execute(params![
            user,
            o.idem_key,
            o.recipient,
            o.msg_type,
            o.body,
            now
        ])?;
    }
    Ok(n)
}

/// A message to queue, its request body as JSON text.
struct OutboundRow {
    idem_key: String,
    recipient: String,
    msg_type: String,
    body: String,
}

impl OutboundRow {
    fn new(o: NewOutbound) -> OutboundRow {
        OutboundRow {
            body: o.body.to_string(),
            idem_key: o.idem_key,
            recipient: o.recipient,
            msg_type: o.msg_type,
        }
    }
}

/// What finished rule runs commit (their effects and traces), made ready before the writer's
/// turn: every JSON value is text already, so the writer's turn serializes and drops none.
struct Completion {
    /// The values the runs read, to find unchanged before anything is written.
    reads: Vec<StateRead>,
    outbound: Vec<OutboundRow>,
    /// (project, key, the value as JSON; `None` removes the key).
    states: Vec<(String, String, Option<String>)>,
    schedules: Vec<NewScheduleRow>,
    labels: Vec<contacts::LabelWrite>,
    runs: Vec<TraceRow>,
    event_id: Option<i64>,
}

/// A `schedule()` call, its argument as JSON text.
struct NewScheduleRow {
    project: String,
    rule: String,
    call: String,
    arg: String,
    due_at_ms: i64,
    idem_key: String,
}

/// A run's trace row and, unless it was skipped, its audit entry's details (JSON text).
struct TraceRow {
    project: String,
    rule: String,
    outcome: &'static str,
    error: Option<String>,
    logs: String,
    actions: i64,
    started_at_ms: i64,
    duration_us: i64,
    version: String,
    trigger: String,
    detail: String,
    audit: Option<String>,
}

impl Completion {
    /// The writes of `effects` and the traces of `runs`, started by event `event_id` if any.
    fn new(effects: Effects, runs: Vec<RunRecord>, event_id: Option<i64>) -> Completion {
        let Effects {
            outbound,
            states,
            schedules,
            labels,
            reads,
        } = effects;
        Completion {
            reads,
            outbound: outbound.into_iter().map(OutboundRow::new).collect(),
            states: states
                .into_iter()
                .map(|w| {
                    let value = (!w.value.is_null()).then(|| w.value.to_string());
                    (w.project, w.key, value)
                })
                .collect(),
            schedules: schedules
                .into_iter()
                .map(|s| NewScheduleRow {
                    arg: s.arg.to_string(),
                    project: s.project,
                    rule: s.rule,
                    call: s.call,
                    due_at_ms: s.due_at_ms,
                    idem_key: s.idem_key,
                })
                .collect(),
            labels,
            runs: runs
                .into_iter()
                .map(|r| TraceRow {
                    logs: serde_json::to_string(&r.logs).unwrap_or_else(|_| "[]".into()),
                    detail: r.detail.to_string(),
                    audit: (r.outcome != "skipped").then(|| {
                        serde_json::json!({"project": r.project, "rule": r.rule, "outcome": r.outcome,
                                           "error": r.error, "event_id": event_id, "trigger": r.trigger,
                                           "version": r.version, "actions": r.actions})
                        .to_string()
                    }),
                    actions: r.actions as i64,
                    started_at_ms: r.started_at_ms,
                    duration_us: r.duration_us,
                    project: r.project,
                    rule: r.rule,
                    outcome: r.outcome,
                    error: r.error,
                    version: r.version,
                    trigger: r.trigger,
                })
                .collect(),
            event_id,
        }
    }

    /// Writes it all for `user`; returns how many messages were queued.
    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        user: &str,
        now: i64,
    ) -> rusqlite::Result<usize> {
        for read in &self.reads {
            let stored: Option<String> = tx
                .prepare_cached(
                    "SELECT value FROM state WHERE user = ?1 AND project = ?2 AND key = ?3",
                )?
                .query_row(params![user, read.project, read.key], |r| r.get(0))
                .optional()?;
            let now_value = stored.and_then(|s| serde_json::from_str::<Value>(&s).ok());
            if now_value != read.value {
                // Carried in the one error variant of rusqlite that holds any error.
                return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                    StateConflict {
                        project: read.project.clone(),
                        key: read.key.clone(),
                    },
                )));
            }
        }
        let queued = insert_outbound(tx, user, &self.outbound, now)?;
        for (project, key, value) in &self.states {
            match value {
                None => tx
                    .prepare_cached("DELETE FROM state WHERE user = ?1 AND project = ?2 AND key = ?3")?
                    .execute(params![user, project, key])?,
                Some(value) => tx.prepare_cached("INSERT INTO state (user, project, key, value, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (user, project, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")?.execute(params![user, project, key, value, now])?,
            };
        }
        for s in &self.schedules {
            tx.prepare_cached("INSERT OR IGNORE INTO schedules (user, project, rule, call, arg, due_at, state, idem_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)")?.execute(params![user, s.project, s.rule, s.call, s.arg, s.due_at_ms, s.idem_key, now])?;
        }
        contacts::apply_labels(tx, user, &self.labels, now)?;
        self.insert_runs(tx, user)?;
        Ok(queued)
    }

    fn insert_runs(&self, tx: &rusqlite::Transaction<'_>, user: &str) -> rusqlite::Result<()> {
        let mut st = tx.prepare_cached(
            "INSERT INTO rule_runs (user, project, rule, event_id, outcome, error, logs, actions, started_at, duration_us, version, trigger, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for r in &self.runs {
            st.execute(params![
                user,
                r.project,
                r.rule,
                self.event_id,
                r.outcome,
                r.error,
                r.logs,
                r.actions,
                r.started_at_ms,
                r.duration_us,
                r.version,
                r.trigger,
                r.detail
            ])?;
            if let Some(details) = &r.audit {
                audit::append_text(tx, user, "rule.run", details)?;
            }
        }
        Ok(())
    }
}

/// When `contact` (or the group `g:<id>`) last wrote to `user` (unix s), on `conn`.
pub(super) fn last_inbound_in(
    conn: &Connection,
    user: &str,
    contact: &str,
) -> rusqlite::Result<Option<i64>> {
    let (sql, key) = match crate::domain::groups::group_of(contact) {
        Some(g) => (
            "SELECT last_inbound_at FROM groups WHERE user = ?1 AND group_id = ?2",
            g,
        ),
        None => (
            "SELECT last_inbound_at FROM contacts WHERE user = ?1 AND contact = ?2",
            contact,
        ),
    };
    conn.prepare_cached(sql)?
        .query_row(params![user, key], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

/// Why Graph rejected `user`'s token of this fingerprint, and since when, on `conn`.
pub(super) fn token_invalid_in(
    conn: &Connection,
    user: &str,
    fingerprint: &str,
) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached("SELECT reason, at FROM token_status WHERE user = ?1 AND fingerprint = ?2")?
        .query_row(params![user, fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The next change number, for a message or contact row about to be written (incremental
/// exports take the rows whose `rev` is above their watermark).
pub(super) fn next_rev(conn: &Connection) -> rusqlite::Result<i64> {
    tx_cache::next_rev(conn)
}

/// The rank of a delivery status: a status only ever moves to a higher rank.
fn status_rank(s: &str) -> i32 {
    match s {
        "queued" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "played" => 4,
        "failed" => 5,
        _ => -1,
    }
}

/// A delivery status of message `wamid`, if it has a row: out-of-order and late webhooks never
/// move a status back (read stays read).
fn apply_status(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    wamid: &str,
    status: &str,
    errors: Option<&str>,
    at: Option<i64>,
) -> rusqlite::Result<()> {
    let old: Option<String> = tx
        .prepare_cached("SELECT status FROM messages WHERE user = ?1 AND wamid = ?2")?
        .query_row(params![user, wamid], |r| r.get(0))
        .optional()?;
    if let Some(old) = old
        && status_rank(status) > status_rank(&old)
    {
        let rev = next_rev(tx)?;
        tx.prepare_cached(
            "UPDATE messages SET status = ?3, error = COALESCE(?4, error), status_at = ?5, rev = ?6
             WHERE user = ?1 AND wamid = ?2",
        )?
        .execute(params![user, wamid, status, errors, at, rev])?;
    }
    Ok(())
}

/// The side effects of a newly stored event on messages, contacts, groups and media; returns
/// how many media downloads it queued.
fn record_effects(
    tx: &rusqlite::Transaction<'_>,
    user: &UserId,
    effect: &Effect,
    now: i64,
) -> rusqlite::Result<usize> {
    match effect {
        Effect::Message {
            wamid,
            contact,
            ts,
            msg_type,
            text,
            raw,
            name,
            group_id,
            media,
        } => {
            let rev = next_rev(tx)?;
            tx.prepare_cached("INSERT OR IGNORE INTO messages (user, wamid, direction, contact, type, text, timestamp, status, raw, rev)
                 VALUES (?1, ?2, 'in', ?3, ?4, ?5, ?6, 'received', ?7, ?8)")?.execute(params![user.as_str(), wamid, contact,
                        msg_type, text, ts, raw, rev])?;
            // A timestamp in the future (a clock's error) opens the 24-hour window from now,
            // not from then.
            let last_inbound = (*ts).min(now / 1000);
            let rev = next_rev(tx)?;
            tx.prepare_cached("INSERT INTO contacts (user, contact, name, last_inbound_at, updated_at, rev) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user, contact) DO UPDATE SET
                   name = COALESCE(excluded.name, contacts.name),
                   last_inbound_at = MAX(COALESCE(contacts.last_inbound_at, 0), excluded.last_inbound_at),
                   updated_at = excluded.updated_at,
                   rev = excluded.rev")?.execute(params![user.as_str(), contact, name, last_inbound, now, rev])?;
            if let Some(g) = group_id {
                groups::inbound(tx, user.as_str(), g, *ts, now)?;
            }
            if let Some(media) = media {
                let queued = tx.prepare_cached("INSERT OR IGNORE INTO media (user, media_id, wamid, mime_type, meta_sha256, state, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)")?.execute(params![user.as_str(), media.id, wamid,
                            media.mime_type, media.sha256, now])?;
                return Ok(queued);
            }
        }
        Effect::Status {
            wamid,
            status,
            errors,
            at,
        } => {
            apply_status(tx, user.as_str(), wamid, status, errors.as_deref(), *at)?;
        }
        Effect::Group { field, raw } => {
            groups::apply_webhook(tx, user.as_str(), field, raw.as_ref(), now)?;
        }
        Effect::None => {}
    }
    Ok(0)
}

/// A media download waiting or done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRow {
    pub id: i64,
    pub user: String,
    pub media_id: String,
    pub wamid: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub path: Option<String>,
    pub size: Option<i64>,
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
}

const MEDIA_COLS: &str =
    "id, user, media_id, wamid, mime_type, sha256, path, size, state, attempts, error";

fn media_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRow> {
    Ok(MediaRow {
        id: r.get(0)?,
        user: r.get(1)?,
        media_id: r.get(2)?,
        wamid: r.get(3)?,
        mime_type: r.get(4)?,
        sha256: r.get(5)?,
        path: r.get(6)?,
        size: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        error: r.get(10)?,
    })
}

impl Store {
    /// Claims up to `limit` due media downloads (counts the attempt) and returns them.
    pub fn claim_media(&self, now: i64, limit: usize) -> Result<Vec<MediaRow>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let rows: Vec<MediaRow> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {MEDIA_COLS} FROM media WHERE state = 'pending' AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at, id LIMIT ?2"
                ))?;
                st.query_map(params![now, limit as i64], media_row)?
                    .collect::<rusqlite::Result<_>>()?
            };
            for r in &rows {
                // Pushed out while in hand, so that a crash only delays it.
                tx.execute(
                    "UPDATE media SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
                    params![r.id, now + 60_000],
                )?;
            }
            tx.commit()?;
            Ok(rows)
        })
    }

    /// The earliest time a pending media download is due, if any.
    pub fn next_media_due(&self) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT MIN(next_attempt_at) FROM media WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Records a finished download.
    pub fn media_done(
        &self,
        id: i64,
        path: &str,
        sha256: &str,
        size: i64,
        mime: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE media SET state = 'done', path = ?2, sha256 = ?3, size = ?4,
                 mime_type = COALESCE(?5, mime_type), error = NULL WHERE id = ?1",
                params![id, path, sha256, size, mime],
            )
            .map(drop)
        })
    }

    /// Schedules another attempt, or gives up (`at_ms = None`), with the reason.
    pub fn media_failed(&self, id: i64, at_ms: Option<i64>, error: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            match at_ms {
                Some(at) => conn.execute(
                    "UPDATE media SET next_attempt_at = ?2, error = ?3 WHERE id = ?1",
                    params![id, at, error],
                ),
                None => conn.execute(
                    "UPDATE media SET state = 'failed', error = ?2 WHERE id = ?1",
                    params![id, error],
                ),
            }
            .map(drop)
        })
    }

    /// Every media row of a user, oldest first.
    pub fn media(&self, user: &str) -> Result<Vec<MediaRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {MEDIA_COLS} FROM media WHERE user = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([user], media_row)?;
            rows.collect()
        })
    }
}

/// The readable text of an outbound Cloud API body, for the messages table.
fn outbound_text(body: &Value) -> String {
    let t = body.get("type").and_then(Value::as_str).unwrap_or("");
    let get = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
    match t {
        "text" => get("/text/body"),
        "interactive" => get("/interactive/body/text"),
        "template" => get("/template/name").map(|n| format!("[template {n}]")),
        "image" | "video" | "document" => get(&format!("/{t}/caption")),
        "reaction" => get("/reaction/emoji"),
        _ => None,
    }
    .unwrap_or_default()
}

/// Applies the migrations not applied yet, each in a transaction of its own, with foreign
/// keys off (a table rebuilt as SQLite's ALTER TABLE instructions say would otherwise lose its
/// children); each must leave every reference whole, which is checked before it commits.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    for (i, sql) in schema::MIGRATIONS
        .iter()
        .enumerate()
        .skip(current.max(0) as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                Some(format!(
                    "migration {} would leave rows of {table} referring to nothing",
                    i + 1
                )),
            ));
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `webhook.accepted` details are written out by hand on the writer's turn; they must
    /// stay the very text a JSON value of them gives (and `audit --verify` hashes).
    #[test]
    fn accepted_details_are_the_text_serde_json_gives() {
        let sha = hex::encode(Sha256::digest(b"a body"));
        let out = IngestOutcome {
            new_body: true,
            new_events: 3,
            to_dispatch: 1,
            duplicates: 2,
            foreign: 1,
            new_media: 0,
        };
        let json = serde_json::json!({"sha256": sha, "bytes": 1234, "events": 3,
                                      "duplicates": 2, "foreign": 1});
        assert_eq!(accepted_details(&sha, 1234, &out), json.to_string());
    }
}
