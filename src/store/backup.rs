//! A consistent online copy of the database for backups: `VACUUM INTO` on a read-only
//! connection of its own, so the gate goes on writing meanwhile (WAL) and the copy is one
//! transaction's view, compacted, with no -wal file to go with it.

use super::{Store, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

impl Store {
    /// Writes a consistent copy of the whole database to `to` (which must not exist).
    pub fn snapshot_into(&self, to: &Path) -> Result<(), StoreError> {
        let open_err = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        Ok(())
    }
}
