//! Files only their owner may read: what holds users' messages (the database, exports) or
//! secrets is created with mode 0600 on Unix, whatever the umask.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates (or truncates) `path` for writing, readable and writable by its owner only.
pub fn create(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path)?;
    // A file that was already there keeps its mode through open(): set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// A file being written beside its target under a name of its own: it takes the target's place
/// only when complete ([`Pending::commit`]), so a failure half-way (disk full, an error in the
/// middle) leaves a previous file at the target as it was. Dropped uncommitted, the temporary
/// file is removed.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// Creates a new owner-only temporary file in `target`'s directory (never one that is already
/// there, so two writers of one target never share a file), for [`Pending::commit`].
pub fn create_beside(target: &Path) -> io::Result<(File, Pending)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    sweep(dir, &name);
    let mut last = None;
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}.partial", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&tmp) {
            Ok(file) => {
                let pending = Pending {
                    tmp,
                    target: target.to_path_buf(),
                    committed: false,
                };
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
                return Ok((file, pending));
            }
            // Left by a process that died with this id: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Removes the temporary files of `name` left in `dir` by writers that died (kill -9, power
/// loss): a plaintext export half-written must not stay behind. A file is its writer's while
/// that process lives (`/proc/<pid>`); where there is no /proc, nothing is removed.
fn sweep(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix)?.strip_suffix(".partial"))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| n.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Pending {
    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes `file` (the one [`create_beside`] gave) to disk and renames it over the target.
    /// Returns whether it replaced a file that was there.
    pub fn commit(mut self, file: File) -> io::Result<bool> {
        file.sync_all()?;
        drop(file);
        let replaced = std::fs::symlink_metadata(&self.target).is_ok();
        std::fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        // The rename itself survives a crash once the directory is on disk.
        #[cfg(unix)]
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(replaced)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_and_existing_files_end_up_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a");
        let old = dir.path().join("b");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        for p in [&fresh, &old] {
            super::create(p).unwrap();
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{p:?}");
            assert_eq!(std::fs::metadata(p).unwrap().len(), 0);
        }
    }

    #[test]
    fn a_pending_file_replaces_its_target_only_when_committed() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        std::fs::write(&target, "good").unwrap();
        // Abandoned half-way: the target is untouched and nothing is left beside it.
        let (mut f, p) = super::create_beside(&target).unwrap();
        f.write_all(b"half").unwrap();
        let (mut g, q) = super::create_beside(&target).unwrap();
        assert_ne!(p.path(), q.path(), "two writers never share a file");
        drop((f, p));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "good");
        // Completed: it takes the target's place, owner-only.
        g.write_all(b"new").unwrap();
        assert!(q.commit(g).unwrap(), "it replaced a file");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let (h, r) = super::create_beside(&dir.path().join("fresh")).unwrap();
        assert!(!r.commit(h).unwrap(), "nothing was there");
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        // No process has pid 999999999 (Linux pids stay below 2^22); pid 1 always lives.
        let dead = dir.path().join(".out.json.999999999-3.partial");
        let live = dir.path().join(".out.json.1-0.partial");
        let other = dir.path().join(".other.json.999999999-0.partial");
        for p in [&dead, &live, &other] {
            std::fs::write(p, "half an export").unwrap();
        }
        let (f, p) = super::create_beside(&target).unwrap();
        p.commit(f).unwrap();
        assert!(!dead.exists(), "a dead writer's file is removed");
        assert!(live.exists(), "a live writer's file is kept");
        assert!(
            other.exists(),
            "another target's file is not this one's to remove"
        );
    }
}
