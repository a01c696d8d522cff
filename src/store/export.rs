//! What Substance Export reads: one user's messages, contacts and media, row by row from a
//! cursor on a read-only connection of its own, inside one read transaction. So an export is a
//! consistent snapshot, holds no more than a row or two in memory, and never blocks the gate, which
//! goes on writing through its own connection (WAL). Also each user's export watermarks.
//! Turning rows into the export's JSON is `crate::export`'s job.

use super::{Store, StoreError, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Which rows an export takes.
#[derive(Clone, Debug, Default)]
pub struct ExportFilter {
    pub user: String,
    /// Messages at or after this WhatsApp/send time (unix s).
    pub since: Option<i64>,
    /// Messages before this time (unix s).
    pub until: Option<i64>,
    /// Only this contact (digits, or a business-scoped user id).
    pub contact: Option<String>,
    /// Only what changed since the last incremental export of the same scope.
    pub incremental: bool,
}

impl ExportFilter {
    /// The watermark's scope: every contact, or the one the export is limited to.
    pub fn scope(&self) -> String {
        self.contact.clone().unwrap_or_else(|| "*".into())
    }
}

/// A message as stored, for the export.
#[derive(Clone, Debug)]
pub struct ExportMessageRow {
    pub wamid: Option<String>,
    pub local_id: Option<String>,
    pub direction: String,
    pub contact: String,
    pub msg_type: String,
    pub text: String,
    /// Unix s: WhatsApp's time (in) or the send time (out).
    pub timestamp: i64,
    pub status: String,
    /// Unix s of the last status change, if any.
    pub status_at: Option<i64>,
    /// Meta's error details of a failed message (JSON text), or a reason.
    pub error: Option<String>,
    /// The message object as Meta sent it (in), or the Cloud API request (out).
    pub raw: Option<String>,
}

/// A contact as stored.
#[derive(Clone, Debug)]
pub struct ExportContactRow {
    pub contact: String,
    pub name: Option<String>,
    pub last_inbound_at: Option<i64>,
    /// Unix ms.
    pub updated_at: i64,
}

/// A media record as stored.
#[derive(Clone, Debug)]
pub struct ExportMediaRow {
    pub media_id: String,
    pub wamid: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub path: Option<String>,
    pub size: Option<i64>,
    pub state: String,
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// An incremental export's place: every change up to `rev` (the store's change counter, moved
/// by each new or changed message, contact and failed send) went out at `at_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportMark {
    pub rev: i64,
    pub at_ms: i64,
}

/// A failure while reading rows or while handing one to the sink.
#[derive(Debug, thiserror::Error)]
pub enum ExportReadError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sink(#[from] std::io::Error),
}

impl From<rusqlite::Error> for ExportReadError {
    fn from(e: rusqlite::Error) -> Self {
        ExportReadError::Store(StoreError::Sql(e))
    }
}

/// One read transaction over one user's data.
pub struct ExportSnapshot {
    conn: Connection,
    filter: ExportFilter,
    /// The previous mark (incremental), else rev 0 / time 0.
    pub from: ExportMark,
    /// Where this export leaves the mark: the change counter in the snapshot.
    pub to: ExportMark,
    /// The business side's phone number as last seen in a webhook, if any.
    pub seen_display_phone: Option<String>,
}

/// The message filter shared by the message, contact and media queries. Parameters: ?1 user,
/// ?2 since, ?3 until, ?4 contact, ?5 rev above which a message is new.
const MESSAGE_FILTER: &str = "m.user = ?1 AND (?2 IS NULL OR m.timestamp >= ?2)
     AND (?3 IS NULL OR m.timestamp < ?3) AND (?4 IS NULL OR m.contact = ?4)
     AND (?5 = 0 OR m.rev > ?5)";

impl Store {
    /// Opens a consistent snapshot of `filter.user`'s data for an export.
    pub fn export_snapshot(&self, filter: &ExportFilter) -> Result<ExportSnapshot, StoreError> {
        let conn = super::read_only_connection(&self.path)?;
        // The snapshot starts with the first read after BEGIN and lasts until the connection
        // is dropped: every query below sees the same database.
        conn.execute_batch("BEGIN")?;
        let at_ms = now_ms();
        let from = if filter.incremental {
            conn.query_row(
                "SELECT rev, at FROM export_marks WHERE user = ?1 AND scope = ?2",
                params![filter.user, filter.scope()],
                |r| {
                    Ok(ExportMark {
                        rev: r.get(0)?,
                        at_ms: r.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default()
        } else {
            ExportMark::default()
        };
        let rev: i64 = conn.query_row("SELECT n FROM change_seq", [], |r| r.get(0))?;
        let seen_display_phone = conn
            .query_row(
                "SELECT json_extract(payload, '$.display_phone_number') FROM events
                 WHERE user = ?1 AND kind = 'message' AND state != 'foreign' ORDER BY id DESC LIMIT 1",
                [&filter.user],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten();
        Ok(ExportSnapshot {
            conn,
            filter: filter.clone(),
            to: ExportMark {
                rev: rev.max(from.rev),
                at_ms,
            },
            from,
            seen_display_phone,
        })
    }

    /// Records where an incremental export of `filter`'s scope ended.
    pub fn set_export_mark(
        &self,
        filter: &ExportFilter,
        mark: &ExportMark,
        path: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO export_marks (user, scope, rev, at, path) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user, scope) DO UPDATE SET rev = excluded.rev, at = excluded.at, path = excluded.path",
                params![filter.user, filter.scope(), mark.rev, mark.at_ms, path],
            )
            .map(drop)
        })
    }

    /// The mark of the last incremental export of `user` over `scope`, if any.
    pub fn export_mark(&self, user: &str, scope: &str) -> Result<Option<ExportMark>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT rev, at FROM export_marks WHERE user = ?1 AND scope = ?2",
                params![user, scope],
                |r| {
                    Ok(ExportMark {
                        rev: r.get(0)?,
                        at_ms: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }
}

impl ExportSnapshot {
    fn message_params(&self) -> [rusqlite::types::Value; 5] {
        use rusqlite::types::Value as V;
        let f = &self.filter;
        [
            V::Text(f.user.clone()),
            f.since.map_or(V::Null, V::Integer),
            f.until.map_or(V::Null, V::Integer),
            f.contact.clone().map_or(V::Null, V::Text),
            V::Integer(self.from.rev),
        ]
    }

    /// How many messages the export will hold (for a progress bar).
    pub fn count_messages(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM messages m WHERE {MESSAGE_FILTER}"),
            rusqlite::params_from_iter(self.message_params()),
            |r| r.get(0),
        )?;
        Ok(n as u64 + self.count_unsent()?)
    }

    fn count_unsent(&self) -> Result<u64, StoreError> {
        if self.filter.contact.is_none() {
            let n: i64 = self.conn.query_row(
                &format!("SELECT COUNT(*) FROM outbox o WHERE {UNSENT_FILTER}"),
                rusqlite::params_from_iter(self.unsent_params()),
                |r| r.get(0),
            )?;
            return Ok(n as u64);
        }
        // One contact: the recipient as written is keyed in Rust, row by row, as the sends
        // themselves are.
        let mut st = self.conn.prepare(&format!(
            "SELECT o.recipient FROM outbox o WHERE {UNSENT_FILTER}"
        ))?;
        let mut rows = st.query(rusqlite::params_from_iter(self.unsent_params()))?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            if self.is_the_contact(&r.get::<_, String>(0)?) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether a send written to `recipient` belongs to the export's contact (no contact
    /// filter: every one). The recipient is keyed as every stored message is
    /// ([`crate::domain::window::contact_key`]), so `+33 6 44 55 66 77` is `33644556677`.
    fn is_the_contact(&self, recipient: &str) -> bool {
        self.filter
            .contact
            .as_deref()
            .is_none_or(|c| crate::domain::window::contact_key(recipient) == c)
    }

    /// Hands every message to `f`, oldest first: the stored messages and the sends Graph never
    /// accepted (which have no wamid and so no row in `messages`), merged from two cursors each
    /// in time order, so that memory stays flat whatever their number. At equal seconds a
    /// stored message goes first.
    pub fn for_each_message(
        &self,
        f: &mut dyn FnMut(&ExportMessageRow) -> std::io::Result<()>,
    ) -> Result<u64, ExportReadError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT m.wamid, m.local_id, m.direction, m.contact, m.type, m.text, m.timestamp, m.status,
                    m.status_at, m.error, m.raw
             FROM messages m WHERE {MESSAGE_FILTER} ORDER BY m.timestamp, m.id"
        ))?;
        let mut stored = st.query(rusqlite::params_from_iter(self.message_params()))?;
        let mut next_stored = || -> rusqlite::Result<Option<ExportMessageRow>> {
            let Some(r) = stored.next()? else {
                return Ok(None);
            };
            Ok(Some(ExportMessageRow {
                wamid: r.get(0)?,
                local_id: r.get(1)?,
                direction: r.get(2)?,
                contact: r.get(3)?,
                msg_type: r.get(4)?,
                text: r.get(5)?,
                timestamp: r.get(6)?,
                status: r.get(7)?,
                status_at: r.get(8)?,
                error: r.get(9)?,
                raw: r.get(10)?,
            }))
        };
        let mut st = self.conn.prepare(&format!(
            "SELECT o.idem_key, o.recipient, o.type, o.body, o.error, o.created_at
             FROM outbox o WHERE {UNSENT_FILTER} ORDER BY o.created_at, o.id"
        ))?;
        let mut unsent = st.query(rusqlite::params_from_iter(self.unsent_params()))?;
        let mut next_unsent = || -> rusqlite::Result<Option<ExportMessageRow>> {
            while let Some(r) = unsent.next()? {
                let recipient: String = r.get(1)?;
                if !self.is_the_contact(&recipient) {
                    continue;
                }
                let body: String = r.get(3)?;
                let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                return Ok(Some(ExportMessageRow {
                    wamid: None,
                    local_id: r.get(0)?,
                    direction: "out".into(),
                    contact: crate::domain::window::contact_key(&recipient),
                    msg_type: r.get(2)?,
                    text: super::outbound_text(&parsed),
                    timestamp: r.get::<_, i64>(5)?.div_euclid(1000),
                    status: "failed".into(),
                    status_at: None,
                    error: r.get(4)?,
                    raw: Some(body),
                }));
            }
            Ok(None)
        };
        let (mut a, mut b) = (next_stored()?, next_unsent()?);
        let mut n = 0;
        loop {
            let take_stored = match (&a, &b) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(m), Some(u)) => m.timestamp <= u.timestamp,
            };
            if take_stored {
                f(a.as_ref().expect("a stored row"))?;
                a = next_stored()?;
            } else {
                f(b.as_ref().expect("an unsent row"))?;
                b = next_unsent()?;
            }
            n += 1;
        }
        Ok(n)
    }

    fn unsent_params(&self) -> [rusqlite::types::Value; 4] {
        use rusqlite::types::Value as V;
        let f = &self.filter;
        [
            V::Text(f.user.clone()),
            f.since.map_or(V::Null, |s| V::Integer(s * 1000)),
            f.until.map_or(V::Null, |s| V::Integer(s * 1000)),
            V::Integer(self.from.rev),
        ]
    }

    /// Hands every contact of the export to `f`: all of the user's for a full export, else
    /// those with a message in it (and, incremental, those whose name changed since).
    pub fn for_each_contact(
        &self,
        f: &mut dyn FnMut(&ExportContactRow) -> std::io::Result<()>,
    ) -> Result<u64, ExportReadError> {
        let filtered =
            self.filter.since.is_some() || self.filter.until.is_some() || self.filter.incremental;
        let sql = format!(
            "SELECT c.contact, c.name, c.last_inbound_at, c.updated_at FROM contacts c
             WHERE c.user = ?1 AND (?4 IS NULL OR c.contact = ?4)
               AND (?6 = 0 OR EXISTS (SELECT 1 FROM messages m WHERE m.contact = c.contact AND {MESSAGE_FILTER})
                    OR (?5 > 0 AND c.rev > ?5))
             ORDER BY c.contact"
        );
        let mut st = self.conn.prepare(&sql)?;
        let mut p = self.message_params().to_vec();
        p.push(rusqlite::types::Value::Integer(i64::from(filtered)));
        let mut rows = st.query(rusqlite::params_from_iter(p))?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            f(&ExportContactRow {
                contact: r.get(0)?,
                name: r.get(1)?,
                last_inbound_at: r.get(2)?,
                updated_at: r.get(3)?,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// Hands every media record of the export's messages to `f`. (Correlated `EXISTS`, not
    /// `IN (…)`: SQLite would materialise the list, and memory must stay flat.)
    pub fn for_each_media(
        &self,
        f: &mut dyn FnMut(&ExportMediaRow) -> std::io::Result<()>,
    ) -> Result<u64, ExportReadError> {
        let sql = format!(
            "SELECT d.media_id, d.wamid, d.mime_type, d.sha256, d.path, d.size, d.state, d.error, d.created_at
             FROM media d WHERE d.user = ?1
               AND EXISTS (SELECT 1 FROM messages m WHERE m.wamid = d.wamid AND {MESSAGE_FILTER})
             ORDER BY d.id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(self.message_params()))?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            f(&ExportMediaRow {
                media_id: r.get(0)?,
                wamid: r.get(1)?,
                mime_type: r.get(2)?,
                sha256: r.get(3)?,
                path: r.get(4)?,
                size: r.get(5)?,
                state: r.get(6)?,
                error: r.get(7)?,
                created_at: r.get(8)?,
            })?;
            n += 1;
        }
        Ok(n)
    }
}

/// Sends that failed before Graph accepted them. Parameters: ?1 user, ?2 since (ms), ?3 until
/// (ms), ?4 the change counter above which a failure is new (0: every one). The contact
/// filter is applied to each row's recipient as written, keyed in Rust (`is_the_contact`):
/// the recipient may be `+33 6 44 55 66 77`.
const UNSENT_FILTER: &str = "o.user = ?1 AND o.state = 'failed' AND o.wamid IS NULL
     AND (?2 IS NULL OR o.created_at >= ?2) AND (?3 IS NULL OR o.created_at < ?3)
     AND (?4 = 0 OR o.rev > ?4)";
