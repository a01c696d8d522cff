//! The dispatcher's look at pending events: those committed after the last one it read.

use super::{Store, StoreError, StoredEvent};
use serde_json::Value;

/// Pending events after an id, oldest first, up to a limit.
const LOOK: &str = "SELECT id, user, kind, contact, payload, created_at FROM events
     WHERE state = 'pending' AND id > ?1 ORDER BY id LIMIT ?2";

impl Store {
    /// Up to `limit` events waiting for dispatch whose id is above `after`, oldest first.
    /// Events are committed in the order of their ids (one writer at a time), so reading on
    /// from the last id read finds each new event once.
    pub fn pending_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The payloads are decoded after the read connection is given back: the rules'
        // `state()` and the sender's looks wait for it meanwhile.
        let rows = self.read(|conn| {
            let mut st = conn.prepare_cached(LOOK)?;
            let rows = st.query_map(rusqlite::params![after, limit as i64], |r| {
                let event = StoredEvent {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    kind: r.get(2)?,
                    contact: r.get(3)?,
                    map: Value::Null,
                    created_at_ms: r.get(5)?,
                };
                // Not text (a hand-edited database): the event's map is null, as before.
                let payload = r.get_ref(4)?.as_str().unwrap_or("null").to_owned();
                Ok((event, payload))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .map(|(mut event, payload)| {
                event.map = serde_json::from_str(&payload).unwrap_or(Value::Null);
                event
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use rusqlite::StatementStatus;

    /// The dispatcher looks with a new limit each time (the room it has left). Each look must
    /// run the statement prepared once, not plan it again for the value bound to `LIMIT ?`.
    #[test]
    fn a_look_with_another_limit_is_not_prepared_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        for (after, limit) in [(0, 4096), (0, 17), (5, 4000), (9, 1)] {
            store.pending_events_after(after, limit).unwrap();
        }
        let again = store
            .read(|c| {
                let st = c.prepare_cached(super::LOOK)?;
                Ok(st.get_status(StatementStatus::RePrepare))
            })
            .unwrap();
        assert_eq!(again, 0, "the look was prepared again {again} times");
    }
}
