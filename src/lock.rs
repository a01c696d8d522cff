//! The home's liveness lock: `wagate.lock` beside the database (`data/wagate.lock`), held with
//! an exclusive advisory lock (std's `File::try_lock`: `flock` on Unix) by `wagate serve` for
//! its whole life and by `wagate restore` while it writes. The file holds the holder's pid and
//! command, for the message of whoever is refused. The OS lets go of the lock when its holder
//! exits or dies, so a lock file left behind by a killed gate blocks nothing. This module owns
//! that one file and nothing else of the home.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name, in the database's folder.
pub const LOCK_FILE: &str = "wagate.lock";

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{}", held_by(.pid, .command, .path))]
    Held {
        path: PathBuf,
        pid: Option<u32>,
        command: Option<String>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn held_by(pid: &Option<u32>, command: &Option<String>, path: &Path) -> String {
    let who = match command {
        Some(c) => format!("`wagate {c}`"),
        None => "another wagate process".into(),
    };
    let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    format!("{who}{pid} holds this home (lock {})", path.display())
}

/// The home's lock, held until dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

/// Where the lock of the home whose database is `db_path` lives.
pub fn path_for(db_path: &Path) -> PathBuf {
    db_path.parent().unwrap_or(Path::new(".")).join(LOCK_FILE)
}

impl HomeLock {
    /// Takes the lock of the home whose database is `db_path` for `command` (`serve`,
    /// `restore`), creating the folder and the file if need be; never waits. Refused with
    /// [`LockError::Held`] while another process holds it.
    pub fn acquire(db_path: &Path, command: &str) -> Result<HomeLock, LockError> {
        let path = path_for(db_path);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Not truncated on open: until the lock is ours, the text is the holder's.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut words = text.split_whitespace();
                return Err(LockError::Held {
                    pid: words.next().and_then(|p| p.parse().ok()),
                    command: words.next().map(str::to_string),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{} {command}", std::process::id()).map_err(io)?;
        Ok(HomeLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_named_in_the_refusal_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/wagate.db");
        let held = HomeLock::acquire(&db, "serve").unwrap();
        let lock = dir.path().join("data/wagate.lock");
        let text = std::fs::read_to_string(&lock).unwrap();
        assert_eq!(text, format!("{} serve\n", std::process::id()));
        // A second open of the file is refused even in the same process (flock is per open).
        let e = HomeLock::acquire(&db, "restore").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "`wagate serve` (pid {}) holds this home (lock {})",
                std::process::id(),
                lock.display()
            )
        );
        drop(held);
        let _again = HomeLock::acquire(&db, "restore").unwrap();
        let text = std::fs::read_to_string(&lock).unwrap();
        assert_eq!(text, format!("{} restore\n", std::process::id()));
    }
}
