//! Batched outbox claims: the sender claims every row it is about to send in one
//! transaction (one fsync) instead of one transaction per row.

use super::{
    OUTBOX_COLS, OutboxRow, Store, StoreError, last_inbound_in, outbox_row_text, token_invalid_in,
};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

/// What the store said of a claimed row, read in the claim's transaction: all the sender
/// needs to know before its call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendCheck {
    /// Graph rejected the token the row would be sent with: why.
    pub token_invalid: Option<String>,
    /// For a row that needs the 24-hour window: when its recipient last wrote (unix s).
    pub last_inbound: Option<Option<i64>>,
}

/// What the store says of `row` before its call, on `conn`: whether Graph rejected the token
/// of fingerprint `fp`, and, if its type needs the 24-hour window, when its recipient last
/// wrote.
fn send_check_in(
    conn: &rusqlite::Connection,
    row: &OutboxRow,
    fp: Option<&str>,
    needs_window: fn(&str) -> bool,
) -> rusqlite::Result<SendCheck> {
    let token_invalid = match fp {
        Some(fp) => token_invalid_in(conn, &row.user, fp)?.map(|(why, _)| why),
        None => None,
    };
    let last_inbound = if needs_window(&row.msg_type) {
        let contact = crate::domain::window::contact_key(&row.recipient);
        Some(last_inbound_in(conn, &row.user, &contact)?)
    } else {
        None
    };
    Ok(SendCheck {
        token_invalid,
        last_inbound,
    })
}

impl Store {
    /// [`SendCheck`] of a row not claimed here (the CLI's sends), on the read connection.
    pub fn send_check(
        &self,
        row: &OutboxRow,
        fingerprint: &str,
        needs_window: fn(&str) -> bool,
    ) -> Result<SendCheck, StoreError> {
        self.read(|conn| send_check_in(conn, row, Some(fingerprint), needs_window))
    }
    /// Claims the rows `ids` right before their HTTP calls, as [`Store::claim_outbox`] does
    /// for one: each still queued and due is marked `sending` with one more attempt. Returns
    /// the rows claimed, in the order of `ids`; a row no longer queued is left out.
    ///
    /// With each row comes its [`SendCheck`]: `fingerprints` gives the fingerprint of each
    /// user's token, and `needs_window` says which types need the 24-hour window.
    pub async fn claim_outbox_many(
        &self,
        ids: &[i64],
        now: i64,
        fingerprints: HashMap<String, String>,
        needs_window: fn(&str) -> bool,
    ) -> Result<Vec<(OutboxRow, SendCheck)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        let rows = self
            .grouped_async(move |tx| {
                let mut claim = tx.prepare_cached(
                    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1 AND state = 'queued' AND next_attempt_at <= ?2",
                )?;
                let mut read =
                    tx.prepare_cached(&format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?1"))?;
                let mut rows = Vec::with_capacity(ids.len());
                for &id in &ids {
                    if claim.execute(params![id, now])? == 1
                        && let Some((row, body)) =
                            read.query_row([id], outbox_row_text).optional()?
                    {
                        let fp = fingerprints.get(&row.user).map(String::as_str);
                        let check = send_check_in(tx, &row, fp, needs_window)?;
                        rows.push((row, body, check));
                    }
                }
                Ok(rows)
            })
            .await?;
        // The bodies are decoded here, after the commit, not on the writer's turn.
        Ok(rows
            .into_iter()
            .map(|(mut row, body, check)| {
                row.body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                (row, check)
            })
            .collect())
    }
}
