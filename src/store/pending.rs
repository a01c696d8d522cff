//! The dispatcher's look at pending events: those committed after the last one it read.

use super::{Store, StoreError, StoredEvent};
use serde_json::Value;

impl Store {
    /// Up to `limit` events waiting for dispatch whose id is above `after`, oldest first.
    /// Events are committed in the order of their ids (one writer at a time), so reading on
    /// from the last id read finds each new event once.
    pub fn pending_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, user, kind, contact, payload, created_at FROM events
                 WHERE state = 'pending' AND id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(rusqlite::params![after, limit as i64], |r| {
                let payload = r.get_ref(4)?.as_str().unwrap_or("null");
                Ok(StoredEvent {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    kind: r.get(2)?,
                    contact: r.get(3)?,
                    map: serde_json::from_str(payload).unwrap_or(Value::Null),
                    created_at_ms: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }
}
