//! Reading a home to serve it: a user whose files have errors (users/<user>.yaml, or anything
//! under rules/<user>/) is left out and reported, and the others are served. Errors that
//! belong to no user (gate.yaml, an unreadable users folder) still stop the gate.
//! `wagate check` keeps reporting every error and failing (see `Home::load_partial`).

use super::{Diagnostic, Diagnostics, Home, UserConfig};
use crate::domain::UserId;
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

    /// The project folder (its path under rules_dir, as projects are named) that a rule
    /// file's error belongs to: the loaded project whose folder holds the file, else the file's
    /// own folder (a project.yaml that did not load). `None` for users' files, files right in
    /// rules/<user>/, and files outside rules_dir.
    pub fn project_of(&self, d: &Diagnostic) -> Option<String> {
        let full = if d.file.is_absolute() {
            d.file.clone()
        } else {
            self.gate.home.join(&d.file)
        };
        let rel = full.strip_prefix(&self.gate.rules_dir).ok()?;
        if let Some(p) = self
            .projects
            .iter()
            .filter(|p| full.starts_with(&p.dir))
            .max_by_key(|p| p.dir.components().count())
        {
            return Some(p.name.clone());
        }
        let folder = rel.parent()?;
        (folder.components().count() > 1).then(|| {
            folder
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
    }

    /// Splits users' `errors` into those that take their whole user out (users/<user>.yaml,
    /// anything not in a project folder) and those that take only their project out: a
    /// project that does not load must not stop the user's webhooks and other projects. Errors
    /// that belong to no user come back as `Err`.
    #[allow(clippy::type_complexity)]
    pub fn errors_by_user_or_project(
        &self,
        errors: Vec<Diagnostic>,
    ) -> Result<
        (
            BTreeMap<String, Vec<Diagnostic>>,
            BTreeMap<String, Vec<Diagnostic>>,
        ),
        Diagnostics,
    > {
        let mut projects: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
        let mut rest = Vec::new();
        for d in errors {
            match self.project_of(&d) {
                Some(p) if self.owner_of(&d).is_some() => projects.entry(p).or_default().push(d),
                _ => rest.push(d),
            }
        }
        let users = self.errors_by_user(rest)?;
        // A user left out takes their projects' errors along.
        projects.retain(|p, _| !users.contains_key(&top(p)));
        Ok((users, projects))
    }

    /// Drops these projects (named by their path under rules_dir).
    pub fn without_projects(&mut self, names: &BTreeSet<String>) {
        self.projects.retain(|p| !names.contains(&p.name));
    }

    /// Leaves out the projects that `errors` belong to if none of them is `live` (a project
    /// left out at start, or never good), and returns them with their errors. Should any error
    /// belong to a live project, a user's file or no project, nothing is left out and every
    /// error comes back as `Err`: the last good rule set keeps running.
    pub fn leave_out_not_live(
        &mut self,
        errors: Vec<Diagnostic>,
        live: &BTreeSet<String>,
    ) -> Result<Vec<(String, Diagnostics)>, Diagnostics> {
        let mut out: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
        let mut blocking = false;
        for d in &errors {
            match self.project_of(d) {
                Some(p) if self.owner_of(d).is_some() && !live.contains(&p) => {
                    out.entry(p).or_default().push(d.clone())
                }
                _ => blocking = true,
            }
        }
        if blocking {
            return Err(Diagnostics(errors));
        }
        self.without_projects(&out.keys().cloned().collect());
        Ok(out
            .into_iter()
            .map(|(p, ds)| (p, Diagnostics(ds)))
            .collect())
    }

    /// Drops these users and their projects.
    pub fn without_users(&mut self, names: &BTreeSet<String>) {
        self.users.retain(|id, _| !names.contains(id.as_str()));
        self.projects
            .retain(|p| !names.contains(p.user.as_str()) && !names.contains(&top(&p.name)));
    }

    /// Reads the home to serve it: every user with an error in their own file is left out,
    /// and every project with an error in its folder; each with its errors (users first, then
    /// projects). Fails only on errors that belong to no user.
    pub fn load_serving(
        gate_yaml: &Path,
    ) -> Result<(Home, Vec<(String, Diagnostics)>), Diagnostics> {
        let (mut home, errors) = Self::load_partial(gate_yaml)?;
        for w in &home.warnings {
            tracing::warn!("{}", w.as_warning());
        }
        let out = home.leave_out(errors)?;
        Ok((home, out))
    }

    /// Leaves out the users and projects `errors` belong to (see
    /// [`Home::errors_by_user_or_project`]), and returns them with their errors.
    pub fn leave_out(
        &mut self,
        errors: Vec<Diagnostic>,
    ) -> Result<Vec<(String, Diagnostics)>, Diagnostics> {
        let (users, projects) = self.errors_by_user_or_project(errors)?;
        self.without_users(&users.keys().cloned().collect());
        self.without_projects(&projects.keys().cloned().collect());
        Ok(users
            .into_iter()
            .chain(projects)
            .map(|(name, ds)| (name, Diagnostics(ds)))
            .collect())
    }

    /// Reads the rules again for the users in `served` only (a hot reload), with those users'
    /// settings as served: users/*.yaml is read only to tell which served users' files differ
    /// (edited, broken or removed; they need a restart), returned as (user, the file as shown,
    /// what it reads now). Errors of other users' files are ignored (those of a folder under
    /// rules/ that is no user's, such as `rules/Olga/`, join the warnings, which are logged). A
    /// project not `live` that still has errors stays out (it is returned with them) and holds
    /// up no other; any other error fails the whole read.
    #[allow(clippy::type_complexity)]
    pub fn load_served(
        gate_yaml: &Path,
        served: &BTreeMap<UserId, UserConfig>,
        live: &BTreeSet<String>,
    ) -> Result<(Home, Vec<UserFileChange>, Vec<(String, Diagnostics)>), Diagnostics> {
        let gate = super::load_gate(gate_yaml).map_err(|d| Diagnostics(vec![d]))?;
        let mut user_errors = Vec::new();
        let on_disk = super::files::load_users(&gate, &mut user_errors);
        let mut changed = Vec::new();
        for (id, u) in served {
            let now = match on_disk.get(id) {
                Some(n) => format!("{n:?}"),
                None if u.file.exists() => user_errors
                    .iter()
                    .filter(|d| d.file == gate.display_path(&u.file))
                    .map(|d| d.to_string())
                    .collect::<String>(),
                None => "removed".to_string(),
            };
            if now != format!("{u:?}") {
                let shown = gate.display_path(&u.file).display().to_string();
                changed.push((id.to_string(), shown, now));
            }
        }
        let mut errors = Vec::new();
        let projects = super::files::load_projects(&gate, served, &mut errors);
        let warnings = super::files::misnamed_project_files(&gate);
        let mut home = Home {
            gate,
            users: served.clone(),
            projects,
            warnings,
        };
        let names: BTreeSet<String> = served.keys().map(|u| u.to_string()).collect();
        let mut kept = Vec::new();
        for d in errors {
            match home.owner_of(&d) {
                // A folder under rules/ that is no user's (`rules/Olga/`): not served, and said
                // so, as `check` says it; a served user's errors wait for the restart.
                Some(u) if !names.contains(&u) => {
                    let is_user = ["yaml", "yml"]
                        .iter()
                        .any(|x| home.gate.users_dir.join(format!("{u}.{x}")).is_file());
                    if !is_user {
                        home.warnings.push(d);
                    }
                }
                _ => kept.push(d),
            }
        }
        for w in &home.warnings {
            tracing::warn!("not served: {}", w.as_warning());
        }
        let out = home.leave_out_not_live(kept, live)?;
        let others: BTreeSet<String> = home
            .projects
            .iter()
            .map(|p| top(&p.name))
            .filter(|u| !names.contains(u))
            .collect();
        home.without_users(&others);
        Ok((home, changed, out))
    }
}

/// A served user whose users/<user>.yaml differs from what is served: (user, the file as
/// shown, what it reads now: its settings, its errors, or `removed`).
pub type UserFileChange = (String, String, String);

/// The first folder of a project path (`olga/tours/x` → `olga`).
fn top(project: &str) -> String {
    project.split('/').next().unwrap_or("").to_string()
}
