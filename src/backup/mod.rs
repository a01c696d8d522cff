//! Backups: one age-encrypted tar archive holding a consistent online snapshot of the database,
//! gate.yaml, users/, the rules folder, inbound media files and credentials/*.age (copied as they are: still
//! encrypted). Never the vault identity, never anything decrypted. The archive ends with
//! `MANIFEST.json`: every file's path, size and sha256, which `verify` and `restore` check.
//! `restore` writes into an empty home (or, forced, over one). [`BackupScheduler`] writes
//! backups at gate.yaml's `backup.cron` times and keeps the newest `backup.keep`.

use crate::config::{BackupSection, GateConfig};
use crate::scheduler::Clock;
use crate::store::{Store, StoreError};
use crate::vault::{Vault, VaultError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod restore;
pub use restore::{KeptGateYaml, RestoreSummary, restore};

/// The archive's format name, in its manifest.
pub const FORMAT: &str = "wagate-backup/1";
const MANIFEST: &str = "MANIFEST.json";
const DB_ENTRY: &str = "data/wagate.db";

/// Backup, verify and restore failures. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the database snapshot {0}: {1}")]
    Snapshot(PathBuf, StoreError),
    #[error("{0} is not a valid wagate backup: {1}")]
    Invalid(PathBuf, String),
    #[error(
        "refusing to restore into a home that is not empty ({0} already there): restore into an empty home, or pass --force to overwrite it"
    )]
    NotEmpty(String),
    /// The restore would write where the home restored into does not say; the message says
    /// what and how to go on.
    #[error("{0}")]
    Refused(String),
    #[error("refusing to restore while {0}: stop it first, then restore")]
    InUse(crate::lock::LockError),
}

impl From<crate::lock::LockError> for BackupError {
    fn from(e: crate::lock::LockError) -> Self {
        match e {
            crate::lock::LockError::Io { path, source } => BackupError::Io { path, source },
            held => BackupError::InUse(held),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What the archive holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    pub wagate_version: String,
    pub files: Vec<ManifestEntry>,
}

/// A backup written.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub files: usize,
    /// Size of the encrypted archive.
    pub bytes: u64,
    /// Whether a file already at `path` was replaced.
    pub replaced: bool,
}

/// Records a backup in the gate's audit log (`*`): where, how many files, how large, who.
pub fn audit_backup(store: &Store, gate: &GateConfig, done: &BackupSummary, by: &str) {
    let details = serde_json::json!({
        "by": by,
        "path": gate.display_path(&done.path).to_string_lossy(),
        "files": done.files,
        "bytes": done.bytes,
    });
    if let Err(e) = store.audit(crate::store::GATE, "backup", &details) {
        tracing::error!(error = %e, "a backup was written but cannot be audited");
    }
}

/// Where backups go by default: `backups/` beside the database (`data/backups/`).
pub fn default_dir(gate: &GateConfig) -> PathBuf {
    gate.db_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("backups")
}

/// A new backup's file name in `dir`.
pub fn default_file(dir: &Path, now: DateTime<Utc>) -> PathBuf {
    dir.join(format!(
        "wagate-{}.tar.age",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

/// Files of the home that go into a backup: (file on disk, path in the archive). The identity
/// file is left out wherever it is.
fn home_files(gate: &GateConfig) -> Vec<(PathBuf, String)> {
    let identity = std::fs::canonicalize(&gate.identity_file).ok();
    let mut files = vec![(gate.gate_yaml.clone(), "gate.yaml".to_string())];
    let flat = |dir: &Path, prefix: &str, ext: &str, into: &mut Vec<(PathBuf, String)>| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .collect();
        found.sort();
        for p in found {
            if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                let name = format!("{prefix}/{name}");
                into.push((p, name));
            }
        }
    };
    flat(&gate.users_dir, "users", "yaml", &mut files);
    flat(
        &gate.home.join("credentials"),
        "credentials",
        "age",
        &mut files,
    );
    walk(&gate.rules_dir, "rules", &mut files);
    // Inbound media files, as fetched (their records are in the database).
    walk(&crate::app::media_dir(&gate.db_path), "media", &mut files);
    files.retain(|(p, _)| identity.is_none() || std::fs::canonicalize(p).ok() != identity);
    files
}

/// Every file under `dir` (hidden names skipped: editor files, `.defs`), sorted.
fn walk(dir: &Path, prefix: &str, into: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let inner = format!("{prefix}/{name}");
        if p.is_dir() {
            walk(&p, &inner, into);
        } else if p.is_file() {
            into.push((p, inner));
        }
    }
}

/// Reads through to `inner` and hashes what passes.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// A reader that notes whether reading failed: a failed append names the file read, or else
/// the archive written (`into`), which is what a full disk stops.
struct Noted<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Noted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= r.is_err();
        r
    }
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    src: &Path,
    into: &Path,
    manifest: &mut Vec<ManifestEntry>,
) -> Result<(), BackupError> {
    let f = std::fs::File::open(src).map_err(io_err(src))?;
    let len = f.metadata().map_err(io_err(src))?.len();
    let mut reader = Hashing {
        inner: f.take(len),
        hash: Sha256::new(),
        size: 0,
    };
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(Utc::now().timestamp().max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    let mut noted = Noted {
        inner: &mut reader,
        failed: false,
    };
    tar.append_data(&mut h, name, &mut noted).map_err(|e| {
        let failed = noted.failed;
        io_err(if failed { src } else { into })(e)
    })?;
    manifest.push(ManifestEntry {
        path: name.to_string(),
        size: reader.size,
        sha256: hex::encode(reader.hash.finalize()),
    });
    Ok(())
}

/// Writes a backup of the home to `out` (mode 0600, through a temporary file and a rename).
pub fn create(
    gate: &GateConfig,
    store: &Store,
    vault: &Vault,
    out: &Path,
) -> Result<BackupSummary, BackupError> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Written under a name of its own, the archive replaces a file at `out` only once
    // complete: a failure half-way leaves a previous backup there as it was.
    let (file, pending) = crate::private_file::create_beside(out).map_err(io_err(out))?;
    // The database snapshot is as plaintext as the database itself; it sits beside the
    // archive only while it is being packed.
    let mut snap = pending.path().as_os_str().to_owned();
    snap.push(".db");
    let snap = PathBuf::from(snap);
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _cleanup = Remove(&snap);
    store
        .snapshot_into(&snap)
        .map_err(|e| BackupError::Snapshot(snap.clone(), e))?;
    let sealed = vault.encrypt_stream(std::io::BufWriter::new(file))?;
    let mut tar = tar::Builder::new(sealed);
    let mut manifest = Vec::new();
    for (src, name) in home_files(gate) {
        append(&mut tar, &name, &src, out, &mut manifest)?;
    }
    append(&mut tar, DB_ENTRY, &snap, out, &mut manifest)?;
    let m = Manifest {
        format: FORMAT.into(),
        created_at: Utc::now().to_rfc3339(),
        wagate_version: env!("CARGO_PKG_VERSION").into(),
        files: manifest,
    };
    let json = serde_json::to_vec_pretty(&m).unwrap_or_default();
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(Utc::now().timestamp().max(0) as u64);
    tar.append_data(&mut h, MANIFEST, json.as_slice())
        .map_err(io_err(out))?;
    let sealed = tar.into_inner().map_err(io_err(out))?;
    let buffered = sealed.finish().map_err(io_err(out))?;
    let file = buffered.into_inner().map_err(|e| BackupError::Io {
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    let replaced = pending.commit(file).map_err(io_err(out))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupSummary {
        path: out.to_path_buf(),
        files: m.files.len(),
        bytes,
        replaced,
    })
}

fn private_file(path: &Path) -> Result<std::fs::File, BackupError> {
    crate::private_file::create(path).map_err(io_err(path))
}

/// An archive path that stays inside where it is extracted (no `..`, not absolute).
fn safe(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Reads the archive once, handing each file (path, reader) to `each`, and checks it against
/// the manifest: every file listed, with its size and sha256, nothing else, a database that is
/// SQLite. Returns the manifest.
fn read_archive(
    vault: &Vault,
    path: &Path,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<(), BackupError>,
) -> Result<Manifest, BackupError> {
    let bad = |why: String| BackupError::Invalid(path.to_path_buf(), why);
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let plain = vault.decrypt_stream(path, std::io::BufReader::new(file))?;
    let mut archive = tar::Archive::new(plain);
    let mut seen: Vec<ManifestEntry> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !safe(&name) {
            return Err(bad(format!("unsafe path `{name}`")));
        }
        if manifest.is_some() {
            return Err(bad(format!("`{name}` comes after the manifest")));
        }
        let mut r = Hashing {
            inner: entry,
            hash: Sha256::new(),
            size: 0,
        };
        if name == MANIFEST {
            let mut json = Vec::new();
            r.read_to_end(&mut json).map_err(|e| bad(e.to_string()))?;
            manifest =
                Some(serde_json::from_slice(&json).map_err(|e| bad(format!("manifest: {e}")))?);
            continue;
        }
        each(&name, &mut r)?;
        // Whatever `each` left unread still counts.
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| bad(e.to_string()))?;
        seen.push(ManifestEntry {
            path: name,
            size: r.size,
            sha256: hex::encode(r.hash.finalize()),
        });
    }
    let m = manifest.ok_or_else(|| bad("no manifest: the archive is truncated".into()))?;
    if m.format != FORMAT {
        return Err(bad(format!("unknown format `{}`", m.format)));
    }
    if m.files != seen {
        let differs = m
            .files
            .iter()
            .find(|f| !seen.contains(f))
            .map(|f| f.path.clone())
            .or_else(|| {
                seen.iter()
                    .find(|f| !m.files.contains(f))
                    .map(|f| f.path.clone())
            })
            .unwrap_or_default();
        return Err(bad(format!(
            "`{differs}` does not match the manifest (size or sha256)"
        )));
    }
    if !m.files.iter().any(|f| f.path == DB_ENTRY) {
        return Err(bad("it holds no database".into()));
    }
    Ok(m)
}

/// `backup verify`: decrypts the archive and checks every file against its manifest and that
/// the database is an SQLite file.
pub fn verify(vault: &Vault, path: &Path) -> Result<Manifest, BackupError> {
    let mut db_ok = false;
    let m = read_archive(vault, path, &mut |name, r| {
        if name == DB_ENTRY {
            let mut head = [0u8; 16];
            db_ok = r.read_exact(&mut head).is_ok() && &head == b"SQLite format 3\0";
        }
        Ok(())
    })?;
    if !db_ok {
        return Err(BackupError::Invalid(
            path.to_path_buf(),
            "its database is not an SQLite file".into(),
        ));
    }
    Ok(m)
}

/// Deletes all but the newest `keep` backups (`*.tar.age`) in `dir`; returns those deleted.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".tar.age") && !n.starts_with('.'))
        })
        .collect();
    // Names carry the UTC time, so name order is age order.
    found.sort();
    let n = found.len().saturating_sub(keep.max(1));
    found
        .into_iter()
        .take(n)
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// The time in the name of the newest backup in `dir` (`wagate-<UTC time>.tar.age`).
pub fn newest_backup_time(dir: &Path) -> Option<DateTime<Utc>> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let t = name.strip_prefix("wagate-")?.strip_suffix(".tar.age")?;
            chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S%.3fZ")
                .ok()
                .map(|n| n.and_utc())
        })
        .max()
}

/// Checks gate.yaml's `backup:` section; the message says what is wrong.
pub fn check_section(s: &BackupSection) -> Result<(), String> {
    crate::domain::schedule::check_cron(&s.cron)
        .map_err(|e| format!("gate.yaml `backup.cron`: {e}"))?;
    if s.keep == 0 {
        return Err("gate.yaml `backup.keep` must be at least 1".into());
    }
    Ok(())
}

/// Scheduled backups while the gate serves: at each `cron` time (UTC) a backup into `dir`,
/// then all but the newest `keep` deleted. Times missed while the gate was down are not caught
/// up: the next one comes at the next cron time.
pub struct BackupScheduler {
    pub gate: GateConfig,
    pub store: Store,
    pub vault: Arc<Vault>,
    pub cron: String,
    pub keep: usize,
    pub dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    next: Mutex<Option<DateTime<Utc>>>,
}

impl BackupScheduler {
    /// A scheduler for `section`. Its first time is the next cron time after the clock's now,
    /// or now if a cron time passed since the newest backup in its folder (the gate was down
    /// then): one catch-up backup, not one per missed time.
    pub fn new(
        gate: GateConfig,
        store: Store,
        vault: Arc<Vault>,
        section: &BackupSection,
        clock: Arc<dyn Clock>,
    ) -> Result<BackupScheduler, String> {
        check_section(section)?;
        let now = clock.now();
        let dir = gate.resolve(&section.dir);
        let missed = newest_backup_time(&dir)
            .and_then(|last| {
                crate::domain::schedule::next_cron(&section.cron, last, chrono_tz::UTC)
            })
            .filter(|t| *t <= now);
        let next = match missed {
            Some(t) => {
                tracing::warn!(missed = %t, "a scheduled backup was missed while the gate was down; writing one now");
                Some(now)
            }
            None => crate::domain::schedule::next_cron(&section.cron, now, chrono_tz::UTC),
        };
        Ok(BackupScheduler {
            dir,
            gate,
            store,
            vault,
            cron: section.cron.clone(),
            keep: section.keep,
            clock,
            next: Mutex::new(next),
        })
    }

    /// When the next backup is due.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a backup if one is due at `now` (then prunes); returns it.
    pub fn tick(&self, now: DateTime<Utc>) -> Result<Option<BackupSummary>, BackupError> {
        let due = self.next().is_some_and(|t| t <= now);
        if !due {
            return Ok(None);
        }
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) =
            crate::domain::schedule::next_cron(&self.cron, now, chrono_tz::UTC);
        let out = default_file(&self.dir, now);
        let done = create(&self.gate, &self.store, &self.vault, &out)?;
        audit_backup(&self.store, &self.gate, &done, "scheduled");
        for old in prune(&self.dir, self.keep) {
            tracing::info!(path = %old.display(), "old backup removed (backup.keep)");
        }
        Ok(Some(done))
    }

    /// Ticks at each due time until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let now = self.clock.now();
            let wait = self
                .next()
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
            let this = self.clone();
            let now = self.clock.now();
            match tokio::task::spawn_blocking(move || this.tick(now)).await {
                Ok(Ok(Some(b))) => {
                    tracing::info!(path = %b.path.display(), files = b.files, bytes = b.bytes, "backup written")
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "scheduled backup failed"),
                Err(e) => tracing::error!(error = %e, "scheduled backup panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside_the_home() {
        assert!(safe("rules/olga/x.rhai") && safe("gate.yaml"));
        for bad in ["../x", "/etc/passwd", "rules/../../x", ""] {
            assert!(!safe(bad), "{bad}");
        }
    }
}
