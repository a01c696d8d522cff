//! Groups (Cloud API Groups API) as the gate knows them: a row per group created through it
//! (known by its request id until Meta names the group) or seen in a webhook, kept up to date
//! from `group_lifecycle_update`, `group_participants_update` and `group_settings_update`
//! webhooks when they are ingested, and from messages participants write in it (the group's
//! 24-hour window).

use super::{Store, StoreError, now_ms};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    /// `None` until the group_lifecycle_update webhook names it.
    pub group_id: Option<String>,
    pub request_id: Option<String>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub join_approval_mode: Option<String>,
    pub invite_link: Option<String>,
    /// requested | active | failed | deleted
    pub state: String,
    pub error: Option<String>,
    /// wa_ids, sorted.
    pub participants: Vec<String>,
    /// WhatsApp's timestamp (unix s) of the last message a participant wrote in it.
    pub last_inbound_at: Option<i64>,
    pub created_at_ms: i64,
}

const GROUP_COLS: &str = "group_id, request_id, subject, description, join_approval_mode, invite_link, state, error, last_inbound_at, created_at";

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        group_id: r.get(0)?,
        request_id: r.get(1)?,
        subject: r.get(2)?,
        description: r.get(3)?,
        join_approval_mode: r.get(4)?,
        invite_link: r.get(5)?,
        state: r.get(6)?,
        error: r.get(7)?,
        participants: Vec::new(),
        last_inbound_at: r.get(8)?,
        created_at_ms: r.get(9)?,
    })
}

/// Ids arrive as strings or numbers (the fixtures' wa_ids are numbers).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A text field given as a string or as `{"text": …}`.
fn text_field(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The wa_ids of a participants array (`[{"input", "wa_id"}]`).
fn wa_ids(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("wa_id").or_else(|| p.get("input")).and_then(id_text))
        .collect()
}

/// The row of group `group_id`, or, for a creation, of the request that created it; created
/// if there is none. Returns its rowid.
fn find_or_insert(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    group_id: &str,
    request_id: Option<&str>,
    creation: bool,
    now: i64,
) -> rusqlite::Result<i64> {
    let by_group: Option<i64> = tx
        .query_row(
            "SELECT id FROM groups WHERE user = ?1 AND group_id = ?2",
            params![user, group_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = by_group {
        return Ok(id);
    }
    if creation && let Some(req) = request_id {
        let by_request: Option<i64> = tx
            .query_row(
                "SELECT id FROM groups WHERE user = ?1 AND request_id = ?2 AND group_id IS NULL",
                params![user, req],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = by_request {
            tx.execute(
                "UPDATE groups SET group_id = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, group_id, now],
            )?;
            return Ok(id);
        }
    }
    // A request id names one request: only a creation's is kept (and only once).
    let req = request_id.filter(|_| creation);
    let taken = match req {
        Some(r) => tx
            .query_row(
                "SELECT 1 FROM groups WHERE user = ?1 AND request_id = ?2",
                params![user, r],
                |_| Ok(()),
            )
            .optional()?
            .is_some(),
        None => false,
    };
    tx.execute(
        "INSERT INTO groups (user, group_id, request_id, state, created_at, updated_at) VALUES (?1, ?2, ?3, 'active', ?4, ?4)",
        params![user, group_id, if taken { None } else { req }, now],
    )?;
    Ok(tx.last_insert_rowid())
}

fn add_participants(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    group_id: &str,
    wa: &[String],
    now: i64,
) -> rusqlite::Result<()> {
    for w in wa {
        tx.execute(
            "INSERT OR IGNORE INTO group_participants (user, group_id, wa_id, added_at) VALUES (?1, ?2, ?3, ?4)",
            params![user, group_id, w, now],
        )?;
    }
    Ok(())
}

fn remove_participants(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    group_id: &str,
    wa: &[String],
) -> rusqlite::Result<()> {
    for w in wa {
        tx.execute(
            "DELETE FROM group_participants WHERE user = ?1 AND group_id = ?2 AND wa_id = ?3",
            params![user, group_id, w],
        )?;
    }
    Ok(())
}

/// Applies a `group_*` webhook change (`value` with its `groups` array) as it is ingested.
pub(super) fn apply_webhook(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    field: &str,
    value: Option<&Value>,
    now: i64,
) -> rusqlite::Result<()> {
    let items = value
        .and_then(|v| v.get("groups"))
        .and_then(Value::as_array);
    for g in items.into_iter().flatten() {
        let ty = g.get("type").and_then(Value::as_str).unwrap_or("");
        let request_id = g.get("request_id").and_then(id_text);
        let errors = g
            .get("errors")
            .filter(|e| e.as_array().is_some_and(|a| !a.is_empty()));
        let Some(group_id) = g.get("group_id").and_then(id_text) else {
            // A refused creation names only its request.
            if let (Some(req), Some(errs)) = (&request_id, errors) {
                tx.execute(
                    "UPDATE groups SET state = 'failed', error = ?3, updated_at = ?4 WHERE user = ?1 AND request_id = ?2",
                    params![user, req, errs.to_string(), now],
                )?;
            }
            continue;
        };
        let creation = field == "group_lifecycle_update" && ty == "group_create";
        let id = find_or_insert(tx, user, &group_id, request_id.as_deref(), creation, now)?;
        if field == "group_lifecycle_update" {
            let state = match (ty, errors) {
                (_, Some(_)) => "failed",
                ("group_delete", _) => "deleted",
                _ => "active",
            };
            tx.execute(
                "UPDATE groups SET state = ?2, error = ?3,
                   subject = COALESCE(?4, subject), description = COALESCE(?5, description),
                   invite_link = COALESCE(?6, invite_link),
                   join_approval_mode = COALESCE(?7, join_approval_mode), updated_at = ?8
                 WHERE id = ?1",
                params![
                    id,
                    state,
                    errors.map(Value::to_string),
                    text_field(g.get("subject")),
                    text_field(g.get("description")),
                    g.get("invite_link").and_then(Value::as_str),
                    g.get("join_approval_mode").and_then(Value::as_str),
                    now
                ],
            )?;
        } else if field == "group_settings_update" {
            tx.execute(
                "UPDATE groups SET subject = COALESCE(?2, subject), description = COALESCE(?3, description),
                   join_approval_mode = COALESCE(?4, join_approval_mode), updated_at = ?5 WHERE id = ?1",
                params![
                    id,
                    text_field(g.get("group_subject").or_else(|| g.get("subject"))),
                    text_field(g.get("group_description").or_else(|| g.get("description"))),
                    g.get("join_approval_mode").and_then(Value::as_str),
                    now
                ],
            )?;
        }
        add_participants(
            tx,
            user,
            &group_id,
            &wa_ids(g.get("added_participants")),
            now,
        )?;
        remove_participants(tx, user, &group_id, &wa_ids(g.get("removed_participants")))?;
    }
    Ok(())
}

/// A participant wrote in the group at WhatsApp time `ts`: the group's window opens.
pub(super) fn inbound(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    group_id: &str,
    ts: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let id = find_or_insert(tx, user, group_id, None, false, now)?;
    tx.execute(
        "UPDATE groups SET last_inbound_at = MAX(COALESCE(last_inbound_at, 0), ?2) WHERE id = ?1",
        params![id, ts],
    )?;
    Ok(())
}

impl Store {
    /// Records a group creation Graph accepted, by its request id (the group id comes later,
    /// in a group_lifecycle_update webhook). A webhook that came first keeps what it said.
    pub fn record_group_request(
        &self,
        user: &str,
        request_id: &str,
        subject: &str,
        description: Option<&str>,
        join_approval_mode: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with(|conn| {
            conn.execute(
                "INSERT INTO groups (user, request_id, subject, description, join_approval_mode, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'requested', ?6, ?6)
                 ON CONFLICT (user, request_id) DO UPDATE SET
                   subject = COALESCE(groups.subject, excluded.subject),
                   description = COALESCE(groups.description, excluded.description),
                   join_approval_mode = COALESCE(groups.join_approval_mode, excluded.join_approval_mode)",
                params![user, request_id, subject, description, join_approval_mode, now],
            )
            .map(drop)
        })
    }

    /// Every group of a user, oldest first, with participants.
    pub fn groups(&self, user: &str) -> Result<Vec<GroupRow>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {GROUP_COLS} FROM groups WHERE user = ?1 ORDER BY created_at, id"
            ))?;
            let mut all: Vec<GroupRow> = st
                .query_map([user], group_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut pst = conn.prepare_cached(
                "SELECT wa_id FROM group_participants WHERE user = ?1 AND group_id = ?2 ORDER BY wa_id",
            )?;
            for g in &mut all {
                if let Some(id) = &g.group_id {
                    g.participants = pst
                        .query_map(params![user, id], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                }
            }
            Ok(all)
        })
    }

    /// A group by its id or, before Meta named it, its request id.
    pub fn group(&self, user: &str, id: &str) -> Result<Option<GroupRow>, StoreError> {
        Ok(self
            .groups(user)?
            .into_iter()
            .find(|g| g.group_id.as_deref() == Some(id) || g.request_id.as_deref() == Some(id)))
    }

    /// Records what Graph said of a group (`GET /{group_id}`): subject, description,
    /// approval mode and, when given, the whole participant list.
    pub fn update_group_info(
        &self,
        user: &str,
        group_id: &str,
        subject: Option<&str>,
        description: Option<&str>,
        join_approval_mode: Option<&str>,
        participants: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let id = find_or_insert(&tx, user, group_id, None, false, now)?;
            tx.execute(
                "UPDATE groups SET subject = COALESCE(?2, subject), description = COALESCE(?3, description),
                   join_approval_mode = COALESCE(?4, join_approval_mode), updated_at = ?5 WHERE id = ?1",
                params![id, subject, description, join_approval_mode, now],
            )?;
            if let Some(p) = participants {
                tx.execute(
                    "DELETE FROM group_participants WHERE user = ?1 AND group_id = ?2",
                    params![user, group_id],
                )?;
                add_participants(&tx, user, group_id, p, now)?;
            }
            tx.commit()
        })
    }

    /// Records a group's current invite link.
    pub fn set_group_invite_link(
        &self,
        user: &str,
        group_id: &str,
        link: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let id = find_or_insert(&tx, user, group_id, None, false, now)?;
            tx.execute(
                "UPDATE groups SET invite_link = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, link, now],
            )?;
            tx.commit()
        })
    }

    /// Records participants Graph removed.
    pub fn remove_group_participants(
        &self,
        user: &str,
        group_id: &str,
        wa: &[String],
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            remove_participants(&tx, user, group_id, wa)?;
            tx.commit()
        })
    }

    /// Records that a group was deleted.
    pub fn mark_group_deleted(&self, user: &str, group_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let id = find_or_insert(&tx, user, group_id, None, false, now)?;
            tx.execute(
                "UPDATE groups SET state = 'deleted', invite_link = NULL, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.execute(
                "DELETE FROM group_participants WHERE user = ?1 AND group_id = ?2",
                params![user, group_id],
            )?;
            tx.commit()
        })
    }
}
