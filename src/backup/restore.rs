//! `restore`: an archive, checked whole, written back into a home. Where its files go is
//! decided by the gate.yaml of the home restored into (`--config`), never by the archive's: a
//! backup of another home whose gate.yaml names places outside it (an absolute database path,
//! a rules folder up `..`) must not write there. Into a home without a gate.yaml, the archive's
//! becomes the home's, and only if every place it names where the gate writes is inside it.

use super::{BackupError, io_err, private_file, read_archive};
use crate::config::GateFile;
use crate::vault::Vault;
use std::path::{Component, Path, PathBuf};

/// A restore done.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub files: usize,
    pub home: PathBuf,
    /// Set when the home's own gate.yaml was kept because the archive's names other places.
    pub kept_gate_yaml: Option<KeptGateYaml>,
}

/// The home's gate.yaml kept, the archive's written beside it.
#[derive(Clone, Debug)]
pub struct KeptGateYaml {
    /// Where the archive's gate.yaml was written instead (`gate.yaml.from-backup`).
    pub archived_to: PathBuf,
    /// The places that differ: `storage.path: `/x/wagate.db` in the archive, `data/wagate.db` here`.
    pub differences: Vec<String>,
}

/// Where a restored home keeps things, from the gate.yaml that decides them.
struct Target {
    gate_yaml: PathBuf,
    /// Where the archive's gate.yaml goes: `gate_yaml`, unless the home keeps its own.
    archived_gate_yaml: PathBuf,
    home: PathBuf,
    db: PathBuf,
    users: PathBuf,
    rules: PathBuf,
    credentials: PathBuf,
    media: PathBuf,
}

impl Target {
    #[cfg(test)]
    fn of(gate_yaml: &Path, text: &str) -> Result<Target, String> {
        Ok(Target::new(gate_yaml, &parse(text)?))
    }

    fn new(gate_yaml: &Path, file: &GateFile) -> Target {
        let home = home_of(gate_yaml);
        Target {
            gate_yaml: gate_yaml.to_path_buf(),
            archived_gate_yaml: gate_yaml.to_path_buf(),
            db: home.join(&file.storage.path),
            media: crate::app::media_dir(&home.join(&file.storage.path)),
            users: home.join(&file.users_dir),
            rules: home.join(&file.rules_dir),
            credentials: home.join("credentials"),
            home,
        }
    }

    /// Where an archive path goes.
    fn place(&self, name: &str) -> Option<PathBuf> {
        let (top, rest) = name.split_once('/').unwrap_or((name, ""));
        match (top, rest) {
            ("gate.yaml", "") => Some(self.archived_gate_yaml.clone()),
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

    /// The folders `--force` empties, refused if one of them holds the home itself (a
    /// gate.yaml saying `users_dir: .`): that would delete the vault identity with it.
    fn replaceable(&self) -> Result<[&PathBuf; 3], String> {
        let dirs = [&self.users, &self.rules, &self.credentials];
        let home = std::fs::canonicalize(&self.home).unwrap_or(self.home.clone());
        for d in dirs {
            if let Ok(d) = std::fs::canonicalize(d)
                && home.starts_with(&d)
            {
                return Err(format!(
                    "refusing to restore: --force would delete {}, which holds the home {}",
                    d.display(),
                    home.display()
                ));
            }
        }
        Ok(dirs)
    }
}

fn home_of(gate_yaml: &Path) -> PathBuf {
    gate_yaml
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A gate.yaml's text; an empty one takes every default, as `load_gate` does.
fn parse(text: &str) -> Result<GateFile, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_yaml::from_str(text).map_err(|e| format!("its gate.yaml: {e}"))
}

/// The places a gate.yaml names, by key, as written.
fn places(file: &GateFile) -> Vec<(&'static str, Option<&str>)> {
    vec![
        ("storage.path", Some(file.storage.path.as_str())),
        ("users_dir", Some(file.users_dir.as_str())),
        ("rules_dir", Some(file.rules_dir.as_str())),
        (
            "vault.identity_file",
            Some(file.vault.identity_file.as_str()),
        ),
        ("backup.dir", file.backup.as_ref().map(|b| b.dir.as_str())),
    ]
}

/// A relative path that stays inside the folder it is resolved against, and is not that
/// folder itself.
fn inside(path: &str) -> bool {
    let mut named = false;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            _ => return false,
        }
    }
    named
}

/// Where the restore writes, and where the archive's gate.yaml goes.
struct Plan {
    target: Target,
    kept: Option<KeptGateYaml>,
}

impl Plan {
    /// With a gate.yaml at `gate_yaml`, its places are the destinations, and the archive's
    /// replaces it only if it names the same ones (else it goes beside it, and the home keeps
    /// its own: a home whose gate.yaml points at another home's database would write into it at
    /// the next `serve`). Without one, the archive's is the home's, if every place it names
    /// where the gate writes is inside the home.
    fn new(gate_yaml: &Path, archived: &GateFile) -> Result<Plan, String> {
        if gate_yaml.exists() {
            Plan::over_own(gate_yaml, archived)
        } else {
            Plan::into_new_home(gate_yaml, archived)
        }
    }

    fn into_new_home(gate_yaml: &Path, archived: &GateFile) -> Result<Plan, String> {
        // The identity is only read, and often kept outside the home on purpose.
        let outside: Vec<String> = places(archived)
            .into_iter()
            .filter(|(key, _)| *key != "vault.identity_file")
            .filter_map(|(key, p)| p.filter(|p| !inside(p)).map(|p| format!("{key} `{p}`")))
            .collect();
        if !outside.is_empty() {
            let home = home_of(gate_yaml);
            return Err(format!(
                "refusing to restore: the archive's gate.yaml names places outside the home {} ({}), \
                 and a restore writes only inside the home named by --config or where that home's \
                 own gate.yaml says; to restore anyway, first write a gate.yaml in {} naming where the \
                 database, users and rules go (restore then writes there), and restore with --force",
                home.display(),
                outside.join(", "),
                home.display()
            ));
        }
        Ok(Plan {
            target: Target::new(gate_yaml, archived),
            kept: None,
        })
    }

    fn over_own(gate_yaml: &Path, archived: &GateFile) -> Result<Plan, String> {
        let own = crate::config::load_gate(gate_yaml).map_err(|d| {
            format!(
                "refusing to restore: this home's gate.yaml decides where a restore writes, and it \
                 cannot be read (move it away to restore the archive's):\n{d}"
            )
        })?;
        let mut target = Target::new(gate_yaml, &own.file);
        let differences = differences(&target.home, archived, &own.file);
        let kept = (!differences.is_empty()).then(|| {
            let name = gate_yaml
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("gate.yaml");
            KeptGateYaml {
                archived_to: gate_yaml.with_file_name(format!("{name}.from-backup")),
                differences,
            }
        });
        if let Some(k) = &kept {
            target.archived_gate_yaml = k.archived_to.clone();
        }
        Ok(Plan { target, kept })
    }
}

/// The places that `archived` names elsewhere than `own`, both resolved against `home`.
fn differences(home: &Path, archived: &GateFile, own: &GateFile) -> Vec<String> {
    let resolve = |p: Option<&str>| p.map(|p| home.join(p));
    let shown = |p: Option<&str>| p.map_or("none".to_string(), |p| format!("`{p}`"));
    places(archived)
        .into_iter()
        .zip(places(own))
        .filter(|((_, a), (_, o))| resolve(*a) != resolve(*o))
        .map(|((key, a), (_, o))| format!("{key}: {} in the archive, {} here", shown(a), shown(o)))
        .collect()
}

/// `restore`: checks the whole archive first, then writes it into the home of `gate_yaml`,
/// where that home's gate.yaml (or, in a home without one, the archive's) says; see [`Plan`].
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
    let archived = parse(&text).map_err(|why| BackupError::Invalid(archive.to_path_buf(), why))?;
    let Plan { target, kept } = Plan::new(gate_yaml, &archived).map_err(BackupError::Refused)?;
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
    // Held while the files are replaced: a gate serving this home would go on acking webhooks
    // into a database no longer on disk, and one started meanwhile would read a half-restore.
    let _lock = crate::lock::HomeLock::acquire(&target.db, "restore")?;
    if force {
        let dirs = target.replaceable().map_err(BackupError::Refused)?;
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", target.db.display()));
            if p.exists() {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        for d in dirs {
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
        kept_gate_yaml: kept,
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

    #[test]
    fn places_inside_the_home_are_relative_and_below_it() {
        for ok in ["data/wagate.db", "./rules", "rules/"] {
            assert!(inside(ok), "{ok}");
        }
        // Any `..` is refused, even one that comes back in.
        for bad in ["/tmp/x/wagate.db", "../../rules", "a/../b", ".", ""] {
            assert!(!inside(bad), "{bad}");
        }
    }
}
