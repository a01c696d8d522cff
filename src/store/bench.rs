//! Bulk seeding for `wagate bench`: many stored messages written fast, in one transaction
//! (as a long-running gate would have accumulated them).

use super::{Store, StoreError, now_ms};
use rusqlite::params;

impl Store {
    /// Stores `n` messages of `user` (half in, half out, over 500 contacts, a typical text)
    /// in one transaction. Returns how many rows were written.
    pub fn seed_messages(&self, user: &str, n: usize) -> Result<usize, StoreError> {
        let now = now_ms() / 1000;
        self.with(|conn| {
            let tx = conn.transaction()?;
            // Change numbers for all of them at once.
            let base: i64 = tx.query_row(
                "UPDATE change_seq SET n = n + ?1 RETURNING n - ?1",
                [n as i64],
                |r| r.get(0),
            )?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO messages (user, wamid, direction, contact, type, text, timestamp, status, rev)
                     VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?7, ?8)",
                )?;
                for i in 0..n {
                    let inbound = i % 2 == 0;
                    let contact = format!("3361234{:04}", i % 500);
                    st.execute(params![
                        user,
                        format!("wamid.bench{i:012}"),
                        if inbound { "in" } else { "out" },
                        contact,
                        format!("Message {i}: hello, is the PARIS-2026 tour still open for two people?"),
                        now - (n - i) as i64,
                        if inbound { "received" } else { "delivered" },
                        base + 1 + i as i64,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }
}
