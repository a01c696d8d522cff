//! The sender: claims due outbox rows, POSTs each to Graph with its user's token, and records
//! the wamid, a retry time, or a failure with a readable reason. Rows found in `sending` at
//! start were in flight when the gate died; they go back to the queue (the one narrow window
//! in which a message can be sent twice, documented in README).

use crate::graph::{GraphClient, GraphError};
use crate::store::{OutboxRow, Store, now_ms};
use crate::users::Users;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Attempts before a transiently failing row is given up.
pub const MAX_ATTEMPTS: i64 = 8;

/// What the sender needs; cheap handles.
#[derive(Clone)]
pub struct Sender {
    pub store: Store,
    pub graph: GraphClient,
    pub users: Users,
    pub wake: Arc<Notify>,
    /// The first retry delay; doubles with each attempt (capped at 5 minutes).
    pub backoff_base: Duration,
}

/// The delay before attempt `attempts + 1`: Retry-After if Graph gave one, else exponential.
pub fn next_backoff(base: Duration, attempts: i64, retry_after: Option<Duration>) -> Duration {
    if let Some(r) = retry_after {
        return r;
    }
    let exp = base.saturating_mul(1u32 << attempts.clamp(0, 16) as u32 >> 1);
    exp.min(Duration::from_secs(300))
}

impl Sender {
    /// Sends until `cancel` fires; a request in flight is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        match self.store.call(|s| s.recover_inflight()).await {
            Ok(n) if n > 0 => tracing::warn!(
                rows = n,
                "re-queued sends that were in flight when the gate stopped"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot recover in-flight sends"),
        }
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let due = match self.store.call(|s| s.due_outbox(now_ms(), 32)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "sender cannot read the outbox");
                    Vec::new()
                }
            };
            if due.is_empty() {
                let next = self.store.call(|s| s.next_due()).await.ok().flatten();
                let wait = next
                    .map(|t| Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64))
                    .unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            for id in due {
                if cancel.is_cancelled() {
                    return;
                }
                match self.store.call(move |s| s.claim_outbox(id, now_ms())).await {
                    Ok(Some(row)) => self.send_one(row).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(outbox_id = id, error = %e, "sender cannot claim a row")
                    }
                }
            }
        }
    }

    async fn send_one(&self, row: OutboxRow) {
        let id = row.id;
        let Some(user) = self.users.get(&row.user).cloned() else {
            let reason = format!(
                "user `{}` is not loaded (check its credentials with `wagate check`)",
                row.user
            );
            let _ = self.store.call(move |s| s.mark_failed(id, &reason)).await;
            return;
        };
        let result = self
            .graph
            .send_message(
                &user.config.phone_number_id,
                &user.creds.access_token,
                &row.body,
            )
            .await;
        let store_result = match result {
            Ok(acc) => {
                tracing::info!(user = %row.user, outbox_id = id, wamid = %acc.wamid, to = %row.recipient, "sent");
                let wamid = acc.wamid;
                self.store.call(move |s| s.mark_sent(&row, &wamid)).await
            }
            Err(e) => self.failed(row, e).await,
        };
        if let Err(e) = store_result {
            tracing::error!(outbox_id = id, error = %e, "cannot record a send result");
        }
    }

    async fn failed(&self, row: OutboxRow, e: GraphError) -> Result<(), crate::store::StoreError> {
        let id = row.id;
        let reason = e.to_string();
        if e.is_transient() && row.attempts < MAX_ATTEMPTS {
            let retry_after = match &e {
                GraphError::Api { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = next_backoff(self.backoff_base, row.attempts, retry_after);
            tracing::warn!(user = %row.user, outbox_id = id, attempt = row.attempts, error = %reason, retry_in_ms = delay.as_millis() as u64, "send failed; will retry");
            let at = now_ms() + delay.as_millis() as i64;
            self.store
                .call(move |s| s.mark_retry(id, at, &reason))
                .await
        } else {
            tracing::warn!(user = %row.user, outbox_id = id, attempt = row.attempts, error = %reason, "send failed for good");
            let reason = format!("after {} attempt(s): {reason}", row.attempts);
            self.store.call(move |s| s.mark_failed(id, &reason)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let b = Duration::from_secs(1);
        assert_eq!(next_backoff(b, 1, None), Duration::from_secs(1));
        assert_eq!(next_backoff(b, 2, None), Duration::from_secs(2));
        assert_eq!(next_backoff(b, 3, None), Duration::from_secs(4));
        assert_eq!(next_backoff(b, 20, None), Duration::from_secs(300));
        assert_eq!(
            next_backoff(b, 3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
