//! Versioned configuration: what went live is read from disk and recorded in the store
//! (gate.yaml and users/*.yaml when the gate starts, each project folder when it starts and at
//! every reload that goes live); two versions can be diffed, and one written back to disk, from
//! where the watcher reloads it like any edit. The store keeps the versions; this module knows
//! the files.

use crate::config::GateConfig;
use crate::store::{ConfigItem, ConfigVersion, Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kinds of versioned things.
pub const GATE: &str = "gate";
pub const USER: &str = "user";
pub const PROJECT: &str = "project";

fn read_text(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// gate.yaml and every users/*.yaml as they are on disk now.
pub fn gate_and_users(gate: &GateConfig) -> Vec<ConfigItem> {
    let mut items = Vec::new();
    if let Some(text) = read_text(&gate.gate_yaml) {
        items.push(ConfigItem {
            kind: GATE.into(),
            name: "gate.yaml".into(),
            files: BTreeMap::from([("gate.yaml".to_string(), text)]),
        });
    }
    let mut users: Vec<PathBuf> = std::fs::read_dir(&gate.users_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
        .collect();
    users.sort();
    for p in users {
        let (Some(file), Some(text)) = (p.file_name().and_then(|n| n.to_str()), read_text(&p))
        else {
            continue;
        };
        items.push(ConfigItem {
            kind: USER.into(),
            name: format!("users/{file}"),
            files: BTreeMap::from([(file.to_string(), text)]),
        });
    }
    items
}

/// A project folder's files (not hidden, not editors' backups `x~`, not in subfolders: a
/// project's scripts, imports and tables all live in its folder), by name.
pub fn project(rules_dir: &Path, name: &str) -> ConfigItem {
    let dir = rules_dir.join(name);
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Some(file) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file.starts_with('.') || file.ends_with('~') || !p.is_file() {
            continue;
        }
        if let Some(text) = read_text(&p) {
            files.insert(file.to_string(), text);
        }
    }
    ConfigItem {
        kind: PROJECT.into(),
        name: name.to_string(),
        files,
    }
}

/// Records gate.yaml, users and the live projects (at start): what changed since the last
/// recorded version of each. Returns the new versions' ids.
pub fn record_start(
    store: &Store,
    gate: &GateConfig,
    projects: &[String],
) -> Result<Vec<i64>, StoreError> {
    let mut items = gate_and_users(gate);
    items.extend(projects.iter().map(|p| project(&gate.rules_dir, p)));
    store.record_config(&items)
}

/// Where a version's file goes on disk (gate.yaml is whatever file `--config` names).
pub fn target(gate: &GateConfig, v: &ConfigVersion, file: &str) -> PathBuf {
    match v.kind.as_str() {
        GATE => gate.gate_yaml.clone(),
        USER => gate.users_dir.join(file),
        _ => gate.rules_dir.join(&v.name).join(file),
    }
}

/// How a version's file is named to a user: relative to the home where possible.
fn shown(v: &ConfigVersion, file: &str) -> String {
    match v.kind.as_str() {
        GATE | USER => v.name.clone(),
        _ => format!("rules/{}/{file}", v.name),
    }
}

/// A unified diff from version `a` to version `b`, file by file ("" when they are the same).
pub fn diff(a: &ConfigVersion, b: &ConfigVersion) -> String {
    let mut out = String::new();
    let mut names: Vec<&String> = a.files.keys().chain(b.files.keys()).collect();
    names.sort();
    names.dedup();
    for file in names {
        let (old, new) = (a.files.get(file), b.files.get(file));
        if old == new {
            continue;
        }
        let left = if old.is_some() {
            shown(a, file)
        } else {
            "/dev/null".into()
        };
        let right = if new.is_some() {
            shown(b, file)
        } else {
            "/dev/null".into()
        };
        let text = similar::TextDiff::from_lines(
            old.map_or("", String::as_str),
            new.map_or("", String::as_str),
        )
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{left} (version {})", a.id),
            &format!("{right} (version {})", b.id),
        )
        .to_string();
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no configuration version {0}: `wagate config history` lists them")]
    Missing(i64),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes version `id` back to disk (each file through a temporary file and a rename); files
/// of a project folder that its latest version has and this one lacks are removed. Returns
/// the version and the files written or removed.
pub fn restore(
    store: &Store,
    gate: &GateConfig,
    id: i64,
) -> Result<(ConfigVersion, Vec<String>), RestoreError> {
    let v = store.config_version(id)?.ok_or(RestoreError::Missing(id))?;
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Write { path, source }
    };
    let mut changed = Vec::new();
    for (file, text) in &v.files {
        let path = target(gate, &v, file);
        if read_text(&path).as_deref() == Some(text.as_str()) {
            continue;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(werr(dir))?;
        let tmp = dir.join(format!(".{file}.restore"));
        std::fs::write(&tmp, text).map_err(werr(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(werr(&path))?;
        changed.push(format!("wrote {}", shown(&v, file)));
    }
    if v.kind == PROJECT
        && let Some(latest) = store.latest_config(&v.kind, &v.name)?
    {
        for file in latest.files.keys().filter(|f| !v.files.contains_key(*f)) {
            let path = target(gate, &v, file);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(werr(&path))?;
                changed.push(format!("removed {}", shown(&v, file)));
            }
        }
    }
    Ok((v, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: i64, files: &[(&str, &str)]) -> ConfigVersion {
        ConfigVersion {
            id,
            kind: PROJECT.into(),
            name: "olga/tours".into(),
            hash: String::new(),
            files: files
                .iter()
                .map(|(f, t)| (f.to_string(), t.to_string()))
                .collect(),
            at_ms: 0,
        }
    }

    #[test]
    fn diff_shows_changed_added_and_removed_files() {
        let a = version(1, &[("project.yaml", "rules: []\n"), ("old.rhai", "1\n")]);
        let b = version(2, &[("project.yaml", "rules: []\n"), ("new.rhai", "2\n")]);
        assert_eq!(
            diff(&a, &b),
            "--- /dev/null (version 1)\n+++ rules/olga/tours/new.rhai (version 2)\n@@ -0,0 +1 @@\n+2\n\
             --- rules/olga/tours/old.rhai (version 1)\n+++ /dev/null (version 2)\n@@ -1 +0,0 @@\n-1\n"
        );
        assert_eq!(diff(&a, &a), "");
    }
}
