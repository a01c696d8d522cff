//! Batched outbox claims: the sender claims every row it is about to send in one
//! transaction (one fsync) instead of one transaction per row.

use super::{OUTBOX_COLS, OutboxRow, Store, StoreError, outbox_row};
use rusqlite::{OptionalExtension, params};

impl Store {
    /// Claims the rows `ids` right before their HTTP calls, as [`Store::claim_outbox`] does
    /// for one: each still queued and due is marked `sending` with one more attempt. Returns
    /// the rows claimed, in the order of `ids`; a row no longer queued is left out.
    pub fn claim_outbox_many(&self, ids: &[i64], now: i64) -> Result<Vec<OutboxRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.grouped(move |tx| {
            let mut claim = tx.prepare_cached(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1 AND state = 'queued' AND next_attempt_at <= ?2",
            )?;
            let mut read =
                tx.prepare_cached(&format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?1"))?;
            let mut rows = Vec::with_capacity(ids.len());
            for &id in &ids {
                if claim.execute(params![id, now])? == 1
                    && let Some(row) = read.query_row([id], outbox_row).optional()?
                {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
    }
}
