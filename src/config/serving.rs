//! Reading a home to serve it: a user whose files have errors (users/<user>.yaml, or anything
//! under rules/<user>/) is left out and reported, and the others are served. Errors that
//! belong to no user (gate.yaml, an unreadable users folder) still stop the gate.
//! `wagate check` keeps reporting every error and failing (see `Home::load_partial`).

use super::{Diagnostic, Diagnostics, Home};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

impl Home {
    /// The user a diagnostic belongs to: the stem of users/<user>.yaml, or the first folder
    /// under rules_dir. `None` for gate.yaml and anything else.
    pub fn owner_of(&self, d: &Diagnostic) -> Option<String> {
        let full = if d.file.is_absolute() {
            d.file.clone()
        } else {
            self.gate.home.join(&d.file)
        };
        if let Ok(rel) = full.strip_prefix(&self.gate.users_dir) {
            let is_file = rel.components().count() == 1;
            let stem = Path::new(rel).file_stem().and_then(|s| s.to_str());
            return stem.filter(|_| is_file).map(str::to_string);
        }
        let rel = full.strip_prefix(&self.gate.rules_dir).ok()?;
        let first = rel.components().next()?;
        // A file right in rules/ belongs to nobody.
        (rel.components().count() > 1).then(|| first.as_os_str().to_string_lossy().into_owned())
    }

    /// Splits `errors` by owner; errors that belong to no user come back as `Err`.
    pub fn errors_by_user(
        &self,
        errors: Vec<Diagnostic>,
    ) -> Result<BTreeMap<String, Vec<Diagnostic>>, Diagnostics> {
        let mut by_user: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
        let mut nobody = Vec::new();
        for d in errors {
            match self.owner_of(&d) {
                Some(u) => by_user.entry(u).or_default().push(d),
                None => nobody.push(d),
            }
        }
        if nobody.is_empty() {
            Ok(by_user)
        } else {
            Err(Diagnostics(nobody))
        }
    }

    /// Drops these users and their projects.
    pub fn without_users(&mut self, names: &BTreeSet<String>) {
        self.users.retain(|id, _| !names.contains(id.as_str()));
        self.projects
            .retain(|p| !names.contains(p.user.as_str()) && !names.contains(&top(&p.name)));
    }

    /// Reads the home to serve it: every user with an error in their files is left out, with
    /// their errors. Fails only on errors that belong to no user.
    pub fn load_serving(
        gate_yaml: &Path,
    ) -> Result<(Home, BTreeMap<String, Diagnostics>), Diagnostics> {
        let (mut home, errors) = Self::load_partial(gate_yaml)?;
        let by_user = home.errors_by_user(errors)?;
        let names: BTreeSet<String> = by_user.keys().cloned().collect();
        home.without_users(&names);
        let skipped = by_user
            .into_iter()
            .map(|(u, ds)| (u, Diagnostics(ds)))
            .collect();
        Ok((home, skipped))
    }

    /// Reads the home again for the users in `served` only (a hot reload): errors of other
    /// users' files are ignored, any other error fails the whole read.
    pub fn load_served(gate_yaml: &Path, served: &BTreeSet<String>) -> Result<Home, Diagnostics> {
        let (mut home, errors) = Self::load_partial(gate_yaml)?;
        let mut kept = Vec::new();
        for d in errors {
            match home.owner_of(&d) {
                Some(u) if !served.contains(&u) => {}
                _ => kept.push(d),
            }
        }
        if !kept.is_empty() {
            return Err(Diagnostics(kept));
        }
        let others: BTreeSet<String> = home
            .users
            .keys()
            .map(|u| u.to_string())
            .chain(home.projects.iter().map(|p| top(&p.name)))
            .filter(|u| !served.contains(u))
            .collect();
        home.without_users(&others);
        Ok(home)
    }
}

/// The first folder of a project path (`olga/tours/x` → `olga`).
fn top(project: &str) -> String {
    project.split('/').next().unwrap_or("").to_string()
}
