//! The configuration's history: every version of gate.yaml, each users/*.yaml and each project
//! folder that went live, with its hash, time and full content. A version is recorded only when
//! it differs from the latest one of the same file or folder, so restarts and reloads that
//! change nothing add nothing.

use super::{Store, StoreError, now_ms};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A file or folder of the configuration as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigItem {
    /// `gate`, `user` or `project`.
    pub kind: String,
    /// `gate.yaml`, `users/olga.yaml`, or the project's path under rules_dir.
    pub name: String,
    /// Path relative to the home → text.
    pub files: BTreeMap<String, String>,
}

impl ConfigItem {
    /// sha256 over every file's path and content, in path order.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, text) in &self.files {
            h.update((path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// A recorded version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigVersion {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub hash: String,
    pub files: BTreeMap<String, String>,
    /// When it went live (unix ms).
    pub at_ms: i64,
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConfigVersion> {
    let content: String = r.get(4)?;
    Ok(ConfigVersion {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        hash: r.get(3)?,
        files: serde_json::from_str(&content).unwrap_or_default(),
        at_ms: r.get(5)?,
    })
}

const COLS: &str = "id, kind, name, hash, content, at";

impl Store {
    /// Records the items whose content differs from their latest version, in one transaction;
    /// returns the ids of the new versions.
    pub fn record_config(&self, items: &[ConfigItem]) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut new = Vec::new();
            for item in items {
                let hash = item.hash();
                let latest: Option<String> = tx
                    .query_row(
                        "SELECT hash FROM config_versions WHERE kind = ?1 AND name = ?2 ORDER BY id DESC LIMIT 1",
                        params![item.kind, item.name],
                        |r| r.get(0),
                    )
                    .optional()?;
                if latest.as_deref() == Some(hash.as_str()) {
                    continue;
                }
                let content = serde_json::to_string(&item.files).unwrap_or_else(|_| "{}".into());
                tx.execute(
                    "INSERT INTO config_versions (kind, name, hash, content, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![item.kind, item.name, hash, content, now],
                )?;
                new.push(tx.last_insert_rowid());
            }
            tx.commit()?;
            Ok(new)
        })
    }

    /// Versions, newest first: of the file or folder `name` (or all), at most `limit`.
    pub fn config_versions(
        &self,
        name: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConfigVersion>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {COLS} FROM config_versions WHERE (?1 IS NULL OR name = ?1) ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![name, limit as i64], version_row)?;
            rows.collect()
        })
    }

    /// One version by id.
    pub fn config_version(&self, id: i64) -> Result<Option<ConfigVersion>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {COLS} FROM config_versions WHERE id = ?1"),
                [id],
                version_row,
            )
            .optional()
        })
    }

    /// The latest version of a file or folder.
    pub fn latest_config(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {COLS} FROM config_versions WHERE kind = ?1 AND name = ?2 ORDER BY id DESC LIMIT 1"
                ),
                params![kind, name],
                version_row,
            )
            .optional()
        })
    }
}
