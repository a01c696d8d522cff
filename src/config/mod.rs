//! The gate home on disk: gate.yaml, users/*.yaml and rules/<user>/**/project.yaml, read with
//! serde_yaml (unknown keys refused) and checked; every problem is a located [`Diagnostic`].
//! Scripts are not compiled here: that is `rules/`'s job.

pub mod diag;
mod files;
mod gate;
mod serving;

pub use diag::{Diagnostic, Diagnostics};
pub use files::{
    BackupSection, DispatchSection, GateFile, GraphSection, LogFormat, LogSection, Permissions,
    ProjectFile, RuleFile, STORES, ScriptLimits, ServerSection, StatusSection, StorageSection,
    UserFile, VaultSection, parse_duration,
};

use crate::domain::UserId;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which events or times start a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// An inbound message.
    Message,
    /// A status of a sent message.
    Status,
    /// `message_template_status_update`.
    TemplateStatus,
    /// `phone_number_name_update`.
    PhoneNumberNameUpdate,
    /// Any webhook event, whatever its field.
    Webhook,
    /// A cron expression (5 or 6 fields) in the project timezone.
    Cron(String),
    /// A one-off local time or RFC 3339 instant.
    At(String),
}

impl Trigger {
    /// Whether an event of `kind` starts a rule with this trigger.
    pub fn matches_kind(&self, kind: &str) -> bool {
        match self {
            Trigger::Message => kind == "message",
            Trigger::Status => kind == "status",
            Trigger::TemplateStatus => kind == "message_template_status_update",
            Trigger::PhoneNumberNameUpdate => kind == "phone_number_name_update",
            Trigger::Webhook => kind != "schedule",
            Trigger::Cron(_) | Trigger::At(_) => false,
        }
    }

    /// Whether this trigger is a time (cron, at) rather than an event.
    pub fn is_timed(&self) -> bool {
        matches!(self, Trigger::Cron(_) | Trigger::At(_))
    }

    /// The next time a timed trigger fires strictly after `after`, in `tz`; `None` for event
    /// triggers and for an `at:` already past.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        tz: Tz,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        use crate::domain::schedule::{at_instant, check_at, next_cron};
        match self {
            Trigger::Cron(expr) => next_cron(expr, after, tz),
            Trigger::At(text) => {
                let t = at_instant(&check_at(text).ok()?, tz);
                (t > after).then_some(t)
            }
            _ => None,
        }
    }

    /// How the trigger is written in project.yaml.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Message => "message".into(),
            Trigger::Status => "status".into(),
            Trigger::TemplateStatus => "template_status".into(),
            Trigger::PhoneNumberNameUpdate => "phone_number_name_update".into(),
            Trigger::Webhook => "webhook".into(),
            Trigger::Cron(c) => format!("cron \"{c}\""),
            Trigger::At(a) => format!("at \"{a}\""),
        }
    }
}

/// The loaded gate.yaml with its paths resolved against its folder.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// The folder of gate.yaml; every relative path is resolved against it.
    pub home: PathBuf,
    /// gate.yaml itself.
    pub gate_yaml: PathBuf,
    pub file: GateFile,
    pub db_path: PathBuf,
    pub users_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub identity_file: PathBuf,
}

impl GateConfig {
    /// Resolves `p` against the home folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        self.home.join(p)
    }

    /// Where `creds set` writes a user's encrypted credentials.
    pub fn credentials_path(&self, user: &UserId) -> PathBuf {
        self.home.join("credentials").join(format!("{user}.age"))
    }

    /// `path` shown relative to the home, as users see it in their tree.
    pub fn display_path(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.home).unwrap_or(path).to_path_buf()
    }
}

/// One user's settings from users/<user>.yaml.
#[derive(Clone, Debug)]
pub struct UserConfig {
    pub id: UserId,
    pub phone_number_id: String,
    pub business_account_id: Option<String>,
    pub display_name: Option<String>,
    pub display_phone_number: Option<String>,
    pub timezone: Tz,
    pub permissions: Permissions,
    pub mark_read: bool,
    /// Messages per second from this number.
    pub rate_limit: f64,
    /// Messages to one recipient at once before pacing starts.
    pub recipient_burst: u32,
    /// Then one message to that recipient every this long.
    pub recipient_every: std::time::Duration,
    /// users/<user>.yaml, for messages.
    pub file: PathBuf,
}

/// What a rule does when it fires while a run of it is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// One run at a time; a firing during a run is skipped (and traced as skipped).
    Single,
    /// One run at a time; firings wait their turn, at most this many waiting (then skipped).
    Queued(usize),
    /// Up to this many runs at once (the default, 10); more wait for a free place.
    Parallel(usize),
}

/// What a timed rule does about instants it missed while the gate was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire once on start, if the latest missed instant is within `max_lateness`.
    Once,
    /// Fire nothing that was missed (beyond a minute's grace).
    Skip,
}

/// One rule as written, checked but not compiled.
#[derive(Clone, Debug)]
pub struct RuleConfig {
    pub name: String,
    pub trigger: Trigger,
    pub condition: Option<String>,
    /// 1-based line and column of the `if:` value in project.yaml, for located errors.
    pub condition_pos: (usize, usize),
    pub script: PathBuf,
    pub call: Option<String>,
    /// 1-based line and column of the `call:` value in project.yaml (this rule's own).
    pub call_pos: (usize, usize),
    pub mode: RunMode,
    pub catch_up: CatchUp,
    /// How late a missed instant may still fire (with `catch_up: once`).
    pub max_lateness: std::time::Duration,
}

/// One project folder under rules/<user>/.
#[derive(Clone, Debug)]
pub struct ProjectConfig {
    pub user: UserId,
    /// Path under rules_dir, e.g. `olga/design-travels/PARIS-2026`.
    pub name: String,
    pub dir: PathBuf,
    /// project.yaml, and its text (for locating errors found later, e.g. in `if:`).
    pub file: PathBuf,
    pub source: String,
    pub timezone: Tz,
    pub tables: BTreeMap<String, PathBuf>,
    /// `fallback_template` as a `send` map.
    pub fallback_template: Option<serde_json::Value>,
    pub rules: Vec<RuleConfig>,
}

/// Everything read from a gate home.
#[derive(Clone, Debug)]
pub struct Home {
    pub gate: GateConfig,
    pub users: BTreeMap<UserId, UserConfig>,
    pub projects: Vec<ProjectConfig>,
    /// Things that are not errors but are likely mistakes (a `project.yml` that is never
    /// read): `check` prints them, serve and reload log them.
    pub warnings: Vec<Diagnostic>,
}

impl Home {
    /// Reads the whole home named by `gate_yaml`, collecting every problem instead of stopping
    /// at the first.
    pub fn load(gate_yaml: &Path) -> Result<Home, Diagnostics> {
        let (home, errors) = Self::load_partial(gate_yaml)?;
        if errors.is_empty() {
            Ok(home)
        } else {
            Err(Diagnostics(errors))
        }
    }

    /// Reads what can be read and lists every problem: the home holds the users, projects,
    /// tables and rules that are valid, so that the rest can still be checked (`wagate check`).
    /// Fails only when gate.yaml itself cannot be read.
    pub fn load_partial(gate_yaml: &Path) -> Result<(Home, Vec<Diagnostic>), Diagnostics> {
        let gate = load_gate(gate_yaml).map_err(|d| Diagnostics(vec![d]))?;
        let mut errors = Vec::new();
        let users = files::load_users(&gate, &mut errors);
        let projects = files::load_projects(&gate, &users, &mut errors);
        let warnings = files::misnamed_project_files(&gate);
        Ok((
            Home {
                gate,
                users,
                projects,
                warnings,
            },
            errors,
        ))
    }
}

/// Reads gate.yaml alone (the CLI needs it before users exist, e.g. for `creds set`).
pub fn load_gate(gate_yaml: &Path) -> Result<GateConfig, Diagnostic> {
    let (file, src): (GateFile, String) = files::read_yaml(gate_yaml, gate_yaml)?;
    gate::check(&file, gate_yaml, &src)?;
    let home = gate_yaml
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let home = std::fs::canonicalize(&home).unwrap_or(home);
    Ok(GateConfig {
        db_path: home.join(&file.storage.path),
        users_dir: home.join(&file.users_dir),
        rules_dir: home.join(&file.rules_dir),
        identity_file: home.join(&file.vault.identity_file),
        gate_yaml: gate_yaml.to_path_buf(),
        home,
        file,
    })
}
