//! The dispatcher's look at pending events, without decoding what it will not start.

use super::{Store, StoreError, StoredEvent};
use serde_json::Value;
use std::collections::HashSet;

impl Store {
    /// Up to `limit` events waiting for dispatch, oldest first, leaving out those in `skip`
    /// (already being run) before their payload is decoded. Reads at most `limit + skip.len()`
    /// rows.
    pub fn pending_events_except(
        &self,
        limit: usize,
        skip: &HashSet<i64>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, user, kind, contact, payload, created_at FROM events WHERE state = 'pending' ORDER BY id LIMIT ?1",
            )?;
            let mut rows = st.query([(limit + skip.len()) as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                if out.len() >= limit {
                    break;
                }
                let id: i64 = r.get(0)?;
                if skip.contains(&id) {
                    continue;
                }
                let payload = r.get_ref(4)?.as_str().unwrap_or("null");
                out.push(StoredEvent {
                    id,
                    user: r.get(1)?,
                    kind: r.get(2)?,
                    contact: r.get(3)?,
                    map: serde_json::from_str(payload).unwrap_or(Value::Null),
                    created_at_ms: r.get(5)?,
                });
            }
            Ok(out)
        })
    }
}
