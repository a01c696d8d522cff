//! Reading a local file right before its upload. A rule's file was checked to be inside its
//! project folder when the script ran; the upload comes later (the recipient's earlier
//! messages, pacing, retries), and by then the file may have been replaced by a symlink
//! leading out. So it is checked again here, on the path as it resolves now, and the file read
//! is the one checked.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The bytes of `path`, a file for a `kind` message (image, document…) of at most `max` bytes,
/// or why it cannot be sent. With `root` (a rule's file: its project folder), the file must
/// resolve inside `root`; without (the CLI's `send --file`), any readable file goes.
pub(super) fn read(
    path: &Path,
    root: Option<&Path>,
    kind: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    let unreadable =
        |e: std::io::Error| format!("not sent: cannot read the file {}: {e}", path.display());
    let (mut file, real) = match root {
        Some(root) => open_inside(path, root)?,
        None => (
            std::fs::File::open(path).map_err(unreadable)?,
            path.to_path_buf(),
        ),
    };
    let len = file.metadata().map_err(unreadable)?.len();
    if len > max {
        return Err(format!(
            "not sent: {} has {len} bytes; WhatsApp takes {kind} files of at most {max} bytes",
            real.display()
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(unreadable)?;
    Ok(bytes)
}

/// Opens `path`, which must resolve inside the folder `root`, and gives the path it resolved
/// to. A path swapped between the check and the open (a folder on its way made a symlink) is
/// caught after the open: it must still resolve to the file that was opened.
fn open_inside(path: &Path, root: &Path) -> Result<(std::fs::File, PathBuf), String> {
    let unreadable =
        |e: std::io::Error| format!("not sent: cannot read the file {}: {e}", path.display());
    let folder = root
        .canonicalize()
        .map_err(|e| format!("not sent: the project folder {}: {e}", root.display()))?;
    let inside = |real: &Path| -> Result<(), String> {
        if real.starts_with(&folder) {
            return Ok(());
        }
        let link = path.ancestors().any(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        });
        let how = if link {
            "is a symlink leaving"
        } else {
            "is outside"
        };
        Err(format!(
            "not sent: file {} {how} the project folder {}",
            path.display(),
            root.display()
        ))
    };
    let real = path.canonicalize().map_err(unreadable)?;
    inside(&real)?;
    let file = std::fs::File::open(&real).map_err(unreadable)?;
    let again = path.canonicalize().map_err(unreadable)?;
    inside(&again)?;
    if again != real || !same_file(&file, &again) {
        return Err(format!(
            "not sent: file {} changed while it was being read; send it again",
            path.display()
        ));
    }
    Ok((file, real))
}

/// Whether `file` (open) is the file at `path` now.
#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_inside_is_read_and_one_leading_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("rules/olga/tour");
        std::fs::create_dir_all(project.join("docs")).unwrap();
        std::fs::write(project.join("docs/p.pdf"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret.pdf"), b"outside").unwrap();
        let root = project.canonicalize().unwrap();
        let file = root.join("docs/p.pdf");
        assert_eq!(
            read(&file, Some(&root), "document", 100).unwrap(),
            b"inside"
        );
        let err = read(&file, Some(&root), "document", 3).unwrap_err();
        assert!(err.contains("has 6 bytes"), "{err}");
        // The file made a symlink leading out.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.pdf"), &file).unwrap();
        let err = read(&file, Some(&root), "document", 100).unwrap_err();
        assert!(
            err.contains("is a symlink leaving the project folder"),
            "{err}"
        );
        // A folder on its way made one.
        std::fs::remove_dir_all(root.join("docs")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("docs")).unwrap();
        let err = read(&root.join("docs/secret.pdf"), Some(&root), "document", 100).unwrap_err();
        assert!(
            err.contains("is a symlink leaving the project folder"),
            "{err}"
        );
        // The CLI names any file.
        assert_eq!(
            read(&root.join("docs/secret.pdf"), None, "document", 100).unwrap(),
            b"outside"
        );
    }
}
