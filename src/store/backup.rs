//! A consistent online copy of the database for backups: `VACUUM INTO` on a read-only
//! connection of its own, so the gate goes on writing meanwhile (WAL) and the copy is one
//! transaction's view, compacted, with no -wal file to go with it.

use super::{Store, StoreError};
use std::path::Path;

impl Store {
    /// Writes a consistent copy of the whole database to `to` (which must not exist).
    pub fn snapshot_into(&self, to: &Path) -> Result<(), StoreError> {
        let conn = super::read_only_connection(&self.path)?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        Ok(())
    }
}
