//! Files only their owner may read: what holds users' messages (the database, exports) or
//! secrets is created with mode 0600 on Unix, whatever the umask.

use std::fs::File;
use std::io;
use std::path::Path;

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
}
