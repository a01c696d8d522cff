//! One row sent now, by whoever queued it (the CLI), with the sender's own checks and error
//! handling: the row is claimed first, so if a running gate's sender took it already, it is
//! not sent twice; the gate then reports through the store.

use super::Sender;
use crate::store::{OutboxRow, StoreError, now_ms};

impl Sender {
    /// Sends queued row `id` now if it is still queued (the 24-hour window, the token and
    /// the age are checked as for every send; a transient failure leaves it queued for the
    /// gate to retry). Returns the row as it is afterwards.
    pub async fn send_now(&self, user: &str, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        if let Some(row) = self
            .store
            .call(move |s| s.claim_outbox(id, now_ms()))
            .await?
        {
            self.send_one(row).await;
        }
        let user = user.to_string();
        let rows = self.store.call(move |s| s.outbox(&user)).await?;
        Ok(rows.into_iter().find(|r| r.id == id))
    }
}
