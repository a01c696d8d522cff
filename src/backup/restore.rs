//! `restore`: an archive, checked whole, written back into a home.

use super::{BackupError, io_err, private_file, read_archive};
use crate::config::GateFile;
use crate::vault::Vault;
use std::path::{Path, PathBuf};

/// A restore done.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub files: usize,
    pub home: PathBuf,
}

/// Where a restored home keeps things, from the archive's gate.yaml.
struct Target {
    gate_yaml: PathBuf,
    home: PathBuf,
    db: PathBuf,
    users: PathBuf,
    rules: PathBuf,
    credentials: PathBuf,
    media: PathBuf,
}

impl Target {
    fn of(gate_yaml: &Path, text: &str) -> Result<Target, String> {
        let file: GateFile =
            serde_yaml::from_str(text).map_err(|e| format!("its gate.yaml: {e}"))?;
        let home = gate_yaml
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(Target {
            gate_yaml: gate_yaml.to_path_buf(),
            db: home.join(&file.storage.path),
            media: crate::app::media_dir(&home.join(&file.storage.path)),
            users: home.join(&file.users_dir),
            rules: home.join(&file.rules_dir),
            credentials: home.join("credentials"),
            home,
        })
    }

    /// Where an archive path goes.
    fn place(&self, name: &str) -> Option<PathBuf> {
        let (top, rest) = name.split_once('/').unwrap_or((name, ""));
        match (top, rest) {
            ("gate.yaml", "") => Some(self.gate_yaml.clone()),
            ("data", "wagate.db") => Some(self.db.clone()),
            ("users", r) if !r.is_empty() => Some(self.users.join(r)),
            ("rules", r) if !r.is_empty() => Some(self.rules.join(r)),
            ("credentials", r) if !r.is_empty() => Some(self.credentials.join(r)),
            ("media", r) if !r.is_empty() => Some(self.media.join(r)),
            _ => None,
        }
    }

    /// What of the home is already there.
    fn occupied(&self) -> Vec<PathBuf> {
        let nonempty = |d: &Path| std::fs::read_dir(d).is_ok_and(|mut r| r.next().is_some());
        let mut found = Vec::new();
        for f in [&self.gate_yaml, &self.db] {
            if f.exists() {
                found.push(f.clone());
            }
        }
        for d in [&self.users, &self.rules, &self.credentials, &self.media] {
            if nonempty(d) {
                found.push(d.clone());
            }
        }
        found
    }
}

/// `restore`: checks the whole archive first, then writes it into the home of `gate_yaml`.
/// A home that already has a gate.yaml, a database, users, rules or credentials is refused
/// unless `force`, which replaces them. The vault identity is not in the archive: the caller's
/// vault (identity file or passphrase) decrypts it and stays as it is.
pub fn restore(
    vault: &Vault,
    archive: &Path,
    gate_yaml: &Path,
    force: bool,
) -> Result<RestoreSummary, BackupError> {
    let mut gate_text = None;
    read_archive(vault, archive, &mut |name, r| {
        if name == "gate.yaml" {
            let mut s = String::new();
            r.read_to_string(&mut s).map_err(io_err(Path::new(name)))?;
            gate_text = Some(s);
        }
        Ok(())
    })?;
    let text = gate_text.ok_or_else(|| {
        BackupError::Invalid(archive.to_path_buf(), "it holds no gate.yaml".into())
    })?;
    let target = Target::of(gate_yaml, &text)
        .map_err(|why| BackupError::Invalid(archive.to_path_buf(), why))?;
    let occupied = target.occupied();
    if !occupied.is_empty() && !force {
        let names: Vec<String> = occupied
            .iter()
            .map(|p| {
                p.strip_prefix(&target.home)
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        return Err(BackupError::NotEmpty(names.join(", ")));
    }
    if force {
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", target.db.display()));
            if p.exists() {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        for d in [&target.users, &target.rules, &target.credentials] {
            if d.is_dir() {
                std::fs::remove_dir_all(d).map_err(io_err(d))?;
            }
        }
    }
    let mut files = 0;
    read_archive(vault, archive, &mut |name, r| {
        let Some(dest) = target.place(name) else {
            return Ok(());
        };
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!(
            ".{}.restore",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let mut f = private_file(&tmp)?;
        std::io::copy(r, &mut f).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        files += 1;
        Ok(())
    })?;
    Ok(RestoreSummary {
        files,
        home: target.home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_go_where_gate_yaml_says() {
        let t = Target::of(
            Path::new("/h/gate.yaml"),
            "storage: { path: db/w.db }\nusers_dir: people\n",
        )
        .unwrap();
        assert_eq!(t.place("data/wagate.db"), Some(PathBuf::from("/h/db/w.db")));
        assert_eq!(
            t.place("users/olga.yaml"),
            Some(PathBuf::from("/h/people/olga.yaml"))
        );
        assert_eq!(
            t.place("credentials/olga.age"),
            Some(PathBuf::from("/h/credentials/olga.age"))
        );
        assert_eq!(
            t.place("media/olga/1234.jpg"),
            Some(PathBuf::from("/h/db/media/olga/1234.jpg"))
        );
        assert_eq!(t.place("identity.txt"), None);
        assert_eq!(t.place("users"), None);
    }
}
