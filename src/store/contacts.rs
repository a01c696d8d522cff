//! The contact book: labels per (user, contact), the contact list the CLI shows, CSV imports,
//! and the `contacts` rows scripts read with `lookup` (each with its `labels`).

use super::{Store, StoreError, filter_rows, now_ms};
use rusqlite::{Connection, params};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// An `add_label` / `remove_label` to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelWrite {
    /// The contact key (wa_id digits or a business-scoped id).
    pub contact: String,
    pub label: String,
    /// True adds the label, false removes it.
    pub add: bool,
}

/// A contact of the book, as `wagate contacts USER list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactEntry {
    pub contact: String,
    pub name: Option<String>,
    /// WhatsApp's timestamp (unix s) of their last message, if they ever wrote.
    pub last_inbound_at: Option<i64>,
    pub labels: Vec<String>,
}

/// What an import changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Contacts the book did not have.
    pub added: usize,
    /// Contacts it had already.
    pub known: usize,
    /// Labels newly given.
    pub labelled: usize,
}

/// Every label of a user's contacts, sorted, by contact.
fn labels_by_contact(
    conn: &Connection,
    user: &str,
) -> rusqlite::Result<HashMap<String, Vec<String>>> {
    let mut st = conn.prepare_cached(
        "SELECT contact, label FROM contact_labels WHERE user = ?1 ORDER BY contact, label",
    )?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let rows = st.query_map([user], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (c, l) = row?;
        out.entry(c).or_default().push(l);
    }
    Ok(out)
}

/// Makes sure the contact has a row in `contacts` (a labelled or imported contact who never
/// wrote is still in the book).
fn ensure_contact(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    contact: &str,
    name: Option<&str>,
    now: i64,
) -> rusqlite::Result<bool> {
    let rev = super::next_rev(tx)?;
    let added = tx.execute(
        "INSERT OR IGNORE INTO contacts (user, contact, name, last_inbound_at, updated_at, rev) VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
        params![user, contact, name, now, rev],
    )? == 1;
    if !added && name.is_some() {
        // A profile name from WhatsApp wins over an imported one.
        tx.execute(
            "UPDATE contacts SET name = ?3, updated_at = ?4, rev = ?5 WHERE user = ?1 AND contact = ?2 AND name IS NULL",
            params![user, contact, name, now, rev],
        )?;
    }
    Ok(added)
}

/// Applies label writes inside a transaction (a run's effects, or the CLI).
pub(super) fn apply_labels(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    writes: &[LabelWrite],
    now: i64,
) -> rusqlite::Result<usize> {
    let mut changed = 0;
    for w in writes {
        if w.add {
            ensure_contact(tx, user, &w.contact, None, now)?;
            changed += tx.execute(
                "INSERT OR IGNORE INTO contact_labels (user, contact, label, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user, w.contact, w.label, now],
            )?;
        } else {
            changed += tx.execute(
                "DELETE FROM contact_labels WHERE user = ?1 AND contact = ?2 AND label = ?3",
                params![user, w.contact, w.label],
            )?;
        }
    }
    Ok(changed)
}

/// `lookup("contacts", …)`: this user's contacts as maps with their `labels`: the one with
/// `key`, or those matching `query` (fields: contact, name, last_inbound_at; `label: L` keeps
/// the contacts carrying label L).
pub(super) fn lookup(
    conn: &Connection,
    user: &str,
    key: Option<&str>,
    query: Option<&Map<String, Value>>,
) -> rusqlite::Result<Vec<Value>> {
    let labels = labels_by_contact(conn, user)?;
    let mut st = conn.prepare_cached(
        "SELECT contact, name, last_inbound_at, updated_at FROM contacts WHERE user = ?1 ORDER BY contact",
    )?;
    let rows = st.query_map([user], |r| {
        let contact: String = r.get(0)?;
        Ok(json!({
            "contact": contact,
            "name": r.get::<_, Option<String>>(1)?,
            "last_inbound_at": r.get::<_, Option<i64>>(2)?,
            "updated_at": r.get::<_, i64>(3)? / 1000,
            "labels": labels.get(&contact).cloned().unwrap_or_default(),
        }))
    })?;
    let all: Vec<Value> = rows.collect::<rusqlite::Result<_>>()?;
    let mut rest = query.cloned();
    let label = rest.as_mut().and_then(|q| q.remove("label"));
    let label = label.as_ref().map(|l| match l {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let found = filter_rows(all, "contact", key, rest.as_ref());
    Ok(match label {
        None => found,
        Some(l) => found
            .into_iter()
            .filter(|r| {
                r["labels"]
                    .as_array()
                    .is_some_and(|ls| ls.iter().any(|x| x.as_str() == Some(l.as_str())))
            })
            .collect(),
    })
}

impl Store {
    /// Gives (`add`) or takes away every label of `labels` to or from every contact of
    /// `contacts`, in one transaction. Returns how many labels changed.
    pub fn set_labels(
        &self,
        user: &str,
        contacts: &[String],
        labels: &[String],
        add: bool,
    ) -> Result<usize, StoreError> {
        let writes: Vec<LabelWrite> = contacts
            .iter()
            .flat_map(|c| {
                labels.iter().map(move |l| LabelWrite {
                    contact: c.clone(),
                    label: l.clone(),
                    add,
                })
            })
            .collect();
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = apply_labels(&tx, user, &writes, now)?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// The contact book of a user, by contact; only contacts carrying `label` if given.
    pub fn contact_book(
        &self,
        user: &str,
        label: Option<&str>,
    ) -> Result<Vec<ContactEntry>, StoreError> {
        self.with(|conn| {
            let labels = labels_by_contact(conn, user)?;
            let mut st = conn.prepare(
                "SELECT contact, name, last_inbound_at FROM contacts WHERE user = ?1 ORDER BY contact",
            )?;
            let rows = st.query_map([user], |r| {
                let contact: String = r.get(0)?;
                Ok(ContactEntry {
                    labels: labels.get(&contact).cloned().unwrap_or_default(),
                    contact,
                    name: r.get(1)?,
                    last_inbound_at: r.get(2)?,
                })
            })?;
            let all: Vec<ContactEntry> = rows.collect::<rusqlite::Result<_>>()?;
            Ok(all
                .into_iter()
                .filter(|c| label.is_none_or(|l| c.labels.iter().any(|x| x == l)))
                .collect())
        })
    }

    /// Adds contacts (key, name) to the book in one transaction, each with `label` if given. A
    /// name fills in only where WhatsApp gave none.
    pub fn import_contacts(
        &self,
        user: &str,
        rows: &[(String, Option<String>)],
        label: Option<&str>,
    ) -> Result<ImportOutcome, StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut out = ImportOutcome::default();
            for (contact, name) in rows {
                if ensure_contact(&tx, user, contact, name.as_deref(), now)? {
                    out.added += 1;
                } else {
                    out.known += 1;
                }
                if let Some(l) = label {
                    out.labelled += tx.execute(
                        "INSERT OR IGNORE INTO contact_labels (user, contact, label, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![user, contact, l, now],
                    )?;
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }
}
