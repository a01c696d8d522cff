//! The YAML shapes of DESIGN.md (unknown keys refused) and the walk that loads them.

use super::diag::Diagnostic;
use super::{CatchUp, GateConfig, ProjectConfig, RuleConfig, RunMode, Trigger, UserConfig};
use crate::domain::UserId;
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateFile {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub graph: GraphSection,
    pub vault: VaultSection,
    pub users_dir: String,
    pub rules_dir: String,
    pub scripts: ScriptLimits,
    pub dispatch: DispatchSection,
    pub log: LogSection,
    pub status: StatusSection,
    /// Scheduled backups while the gate serves (none without it).
    pub backup: Option<BackupSection>,
}

/// `log:` of gate.yaml.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (human-readable, the default) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `status:` of gate.yaml: who may see /status and /metrics besides loopback.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// The environment variable holding the admin token (`Authorization: Bearer …`).
    pub admin_token_env: Option<String>,
}

/// `backup:` of gate.yaml: `wagate serve` writes a backup at each `cron` time (UTC) into `dir`
/// and keeps the newest `keep`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    pub cron: String,
    #[serde(default = "default_backup_keep")]
    pub keep: usize,
    #[serde(default = "default_backup_dir")]
    pub dir: String,
}

fn default_backup_keep() -> usize {
    7
}

fn default_backup_dir() -> String {
    "data/backups".into()
}

/// `dispatch:` of gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSection {
    /// How many contacts' events are handled at once (each contact's in arrival order).
    pub max_parallel: usize,
}

impl Default for DispatchSection {
    fn default() -> Self {
        DispatchSection { max_parallel: 64 }
    }
}

impl Default for GateFile {
    fn default() -> Self {
        GateFile {
            server: ServerSection::default(),
            storage: StorageSection::default(),
            graph: GraphSection::default(),
            vault: VaultSection::default(),
            users_dir: "users".into(),
            rules_dir: "rules".into(),
            scripts: ScriptLimits::default(),
            dispatch: DispatchSection::default(),
            log: LogSection::default(),
            status: StatusSection::default(),
            backup: None,
        }
    }
}

/// `server:` of gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    /// Largest webhook body accepted; Meta sends at most 3 MB.
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's line and headers (and how long a
    /// keep-alive connection may stay idle) before it is closed.
    pub header_timeout_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout_ms: 10_000,
        }
    }
}

/// `storage:` of gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub path: String,
    /// How long a write waits for a locked database before the webhook answers 503.
    pub busy_timeout_ms: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            path: "data/wagate.db".into(),
            busy_timeout_ms: 5000,
        }
    }
}

/// `graph:` of gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSection {
    /// `https://graph.facebook.com`, or `simulator` for the built-in fake Cloud API.
    pub base_url: String,
    pub version: String,
    /// Per-request timeout for Graph calls, in seconds.
    pub timeout_secs: u64,
}

impl Default for GraphSection {
    fn default() -> Self {
        GraphSection {
            base_url: "https://graph.facebook.com".into(),
            version: "v23.0".into(),
            timeout_secs: 30,
        }
    }
}

/// `vault:` of gate.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSection {
    pub identity_file: String,
}

impl Default for VaultSection {
    fn default() -> Self {
        VaultSection {
            identity_file: "identity.txt".into(),
        }
    }
}

/// `scripts:` of gate.yaml: the sandbox limits of every rule run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptLimits {
    /// Rhai operations per run; 0 means no limit (the wall clock still applies).
    pub max_operations: u64,
    pub max_call_depth: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock limit of one run, in milliseconds.
    pub timeout_ms: u64,
    /// Messages one run may queue (`send`, `reply`, every form); a run that asks for more
    /// fails and queues none of them. 0 means no limit.
    pub max_sends: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_operations: 1_000_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 10_000,
            timeout_ms: 2000,
            max_sends: 1000,
        }
    }
}

/// users/<user>.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub user: String,
    #[serde(deserialize_with = "string_or_number")]
    pub phone_number_id: String,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub business_account_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// The business number in digits, used as `from`/`to` in exports.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub display_phone_number: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub mark_read: bool,
    /// Messages per second this number may send (Meta's default throughput is 80).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Messages to one recipient at once before pacing starts.
    #[serde(default)]
    pub recipient_burst: Option<u32>,
    /// Then one message to that recipient every this long (`6s`).
    #[serde(default)]
    pub recipient_every: Option<String>,
}

/// What a user's rules may do.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Permissions {
    pub send: bool,
    pub export: bool,
    /// The user's stores that their rules may `lookup`: `contacts`, `messages`.
    pub read: Vec<String>,
}

/// The stores a rule may read with `lookup`, when permitted.
pub const STORES: [&str; 2] = ["contacts", "messages"];

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            send: true,
            export: true,
            read: STORES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Permissions {
    /// Nothing at all: for a run whose user is not loaded.
    pub fn none() -> Self {
        Permissions {
            send: false,
            export: false,
            read: Vec::new(),
        }
    }
}

/// rules/<user>/<path>/project.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Sent instead of a free-form message to a contact outside the 24-hour window.
    #[serde(default)]
    pub fallback_template: Option<FallbackTemplate>,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

/// `fallback_template:` of project.yaml: an approved template.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackTemplate {
    pub name: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// Body text parameters, in order.
    #[serde(default)]
    pub params: Vec<String>,
}

fn default_language() -> String {
    "en_US".into()
}

/// One entry of `rules:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    pub on: serde_yaml::Value,
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    pub script: String,
    #[serde(default)]
    pub call: Option<String>,
    /// What happens when the rule fires while a run of it is still going.
    #[serde(default)]
    pub mode: Option<String>,
    /// With `queued`: how many may wait; with `parallel`: how many may run at once.
    #[serde(default)]
    pub max: Option<usize>,
    /// Timed rules: after downtime, fire a missed instant `once`, or `skip` it.
    #[serde(default)]
    pub catch_up: Option<String>,
    /// Timed rules: how late a missed instant may still fire (`90s`, `30m`, `2h`, `1d`).
    #[serde(default)]
    pub max_lateness: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        S(String),
        N(u64),
    }
    match S::deserialize(d).map_err(|_| serde::de::Error::custom("expected a string of digits"))? {
        S::S(s) => Ok(s),
        S::N(n) => Ok(n.to_string()),
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_or_number(d).map(Some)
}

/// Reads and deserialises a YAML file; `shown` is the path used in messages.
pub(crate) fn read_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    shown: &Path,
) -> Result<(T, String), Diagnostic> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(shown, format!("cannot read {}: {e}", shown.display())))?;
    // An empty file is an empty mapping, so that every section can take its defaults.
    let text = if src.trim().is_empty() { "{}" } else { &src };
    match serde_yaml::from_str::<T>(text) {
        Ok(v) => Ok((v, src)),
        // serde_yaml hands the typed reader the events parsed before a syntax error, so a
        // badly indented line shows up as a missing field of the item it cut short; reading
        // the text as plain YAML first finds the syntax error at its own line.
        Err(e) => Err(match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Err(syntax) if !syntax.to_string().contains("duplicate entry") => {
                Diagnostic::from_yaml(shown, &src, &syntax)
            }
            _ => Diagnostic::from_yaml(shown, &src, &e),
        }),
    }
}

fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown timezone `{name}`: use an IANA name such as Europe/Paris"))
}

pub(super) fn load_users(
    gate: &GateConfig,
    errors: &mut Vec<Diagnostic>,
) -> BTreeMap<UserId, UserConfig> {
    let mut users = BTreeMap::new();
    let mut by_phone: BTreeMap<String, UserId> = BTreeMap::new();
    let dir = &gate.users_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let shown = gate.display_path(dir);
            errors.push(Diagnostic::file(
                &shown,
                format!("cannot read the users folder: {e}"),
            ));
            return users;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    for path in paths {
        let shown = gate.display_path(&path);
        match load_user(&path, &shown) {
            Ok(u) => {
                if let Some(other) = by_phone.insert(u.phone_number_id.clone(), u.id.clone()) {
                    let src = std::fs::read_to_string(&path).unwrap_or_default();
                    errors.push(Diagnostic::at_key(
                        &shown,
                        &src,
                        "phone_number_id",
                        format!(
                            "phone_number_id {} is already used by user `{other}`",
                            u.phone_number_id
                        ),
                    ));
                }
                users.insert(u.id.clone(), u);
            }
            Err(d) => errors.push(d),
        }
    }
    users
}

fn load_user(path: &Path, shown: &Path) -> Result<UserConfig, Diagnostic> {
    let (f, src): (UserFile, String) = read_yaml(path, shown)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let id = UserId::parse(&f.user).map_err(|m| Diagnostic::at_key(shown, &src, "user", m))?;
    if id.as_str() != stem {
        return Err(Diagnostic::at_key(
            shown,
            &src,
            "user",
            format!("user `{id}` must be written in users/{id}.yaml, not {stem}.yaml"),
        ));
    }
    if f.phone_number_id.is_empty() || !f.phone_number_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Diagnostic::at_key(
            shown,
            &src,
            "phone_number_id",
            "phone_number_id must be the digits of the Cloud API phone number id",
        ));
    }
    // Kept as digits, as Meta's webhooks and the export write it: `+33 1 00…` is `331 00…`.
    let display_phone_number = match f.display_phone_number.as_deref() {
        None => None,
        Some(n) => Some(crate::domain::phone::phone_digits(n).map_err(|m| {
            Diagnostic::at_key(
                shown,
                &src,
                "display_phone_number",
                format!("display_phone_number: {m}"),
            )
        })?),
    };
    let timezone = match &f.timezone {
        Some(t) => parse_tz(t).map_err(|m| Diagnostic::at_key(shown, &src, "timezone", m))?,
        None => Tz::UTC,
    };
    if let Some(bad) = f
        .permissions
        .read
        .iter()
        .find(|r| !STORES.contains(&r.as_str()))
    {
        return Err(Diagnostic::at_key(
            shown,
            &src,
            "permissions",
            format!(
                "permissions.read: `{bad}` is not a store; the stores are {}",
                STORES.join(", ")
            ),
        ));
    }
    Ok(UserConfig {
        id,
        phone_number_id: f.phone_number_id,
        business_account_id: f.business_account_id,
        display_name: f.display_name,
        display_phone_number,
        timezone,
        permissions: f.permissions,
        mark_read: f.mark_read,
        rate_limit: match f.rate_limit {
            None => 80.0,
            Some(r) if r > 0.0 && r <= 10_000.0 => r,
            Some(_) => {
                return Err(Diagnostic::at_key(
                    shown,
                    &src,
                    "rate_limit",
                    "rate_limit is messages per second, from 1 to 10000 (Meta's default is 80)",
                ));
            }
        },
        recipient_burst: match f.recipient_burst {
            None => 10,
            Some(0) => {
                return Err(Diagnostic::at_key(
                    shown,
                    &src,
                    "recipient_burst",
                    "recipient_burst must be at least 1",
                ));
            }
            Some(b) => b,
        },
        recipient_every: match f.recipient_every.as_deref() {
            None => std::time::Duration::from_secs(6),
            Some(t) => parse_duration(t).filter(|d| !d.is_zero()).ok_or_else(|| {
                Diagnostic::at_key(
                    shown,
                    &src,
                    "recipient_every",
                    format!("recipient_every `{t}` is not a duration like 6s or 1m"),
                )
            })?,
        },
        file: shown.to_path_buf(),
    })
}

pub(super) fn load_projects(
    gate: &GateConfig,
    users: &BTreeMap<UserId, UserConfig>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<ProjectConfig> {
    let mut found = Vec::new();
    if gate.rules_dir.is_dir() {
        find_project_files(&gate.rules_dir, 0, &mut found);
    }
    found.sort();
    let mut projects = Vec::new();
    for path in found {
        match load_project(gate, users, &path) {
            Ok((p, mut ds)) => {
                errors.append(&mut ds);
                projects.push(p);
            }
            Err(mut ds) => errors.append(&mut ds),
        }
    }
    projects
}

/// Depth-first search for project.yaml files, bounded so that a symlink loop cannot hang us.
fn find_project_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            find_project_files(&p, depth + 1, out);
        } else if name == "project.yaml" {
            out.push(p);
        }
    }
}

/// Files under rules/ that look like a project's file but are not read, because only
/// `project.yaml` is (`project.yml`, `Project.yaml`): one warning each, naming the file.
pub(super) fn misnamed_project_files(gate: &GateConfig) -> Vec<Diagnostic> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_lowercase();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                if depth < 16 && out.len() < 100 {
                    walk(&p, depth + 1, out);
                }
            } else if (name == "project.yml" || name == "project.yaml")
                && e.file_name() != "project.yaml"
                && !dir.join("project.yaml").is_file()
            {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    if gate.rules_dir.is_dir() {
        walk(&gate.rules_dir, 0, &mut found);
    }
    found.sort();
    found
        .iter()
        .map(|p| {
            let shown = gate.display_path(p);
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            Diagnostic::file(
                &shown,
                format!(
                    "{} is not read: a project's file must be named project.yaml (did you mean project.yaml?)",
                    name
                ),
            )
        })
        .collect()
}

/// A path inside the project folder: relative, without `..`.
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| dir.join(p))
}

/// Why a path written in project.yaml is refused before looking for its file.
fn outside_msg(rel: &str) -> String {
    if rel.is_empty() {
        "no file named: write a path inside this project folder".into()
    } else {
        format!(
            "`{rel}` is outside this project folder: tables and scripts must be inside it (a path relative to project.yaml, without `..` or a leading `/`)"
        )
    }
}

fn load_project(
    gate: &GateConfig,
    users: &BTreeMap<UserId, UserConfig>,
    path: &Path,
) -> Result<(ProjectConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let shown = gate.display_path(path);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let rel = dir.strip_prefix(&gate.rules_dir).unwrap_or(&dir);
    let name = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let user_part = name.split('/').next().unwrap_or("");
    let (f, src): (ProjectFile, String) = read_yaml(path, &shown).map_err(|d| vec![d])?;
    let mut errors = Vec::new();
    let user = match UserId::parse(user_part)
        .ok()
        .filter(|u| users.contains_key(u))
    {
        Some(u) => u,
        // users/<user>.yaml is there but has errors of its own, reported for that file: saying
        // the project has no user would send the reader looking for a file that exists.
        None if ["yaml", "yml"]
            .iter()
            .any(|x| gate.users_dir.join(format!("{user_part}.{x}")).is_file()) =>
        {
            return Err(Vec::new());
        }
        None => {
            return Err(vec![Diagnostic::file(
                &shown,
                format!(
                    "project `{name}` is not under a known user: its first folder `{user_part}` must match a file in users/"
                ),
            )]);
        }
    };
    if rel.components().count() < 2 {
        errors.push(Diagnostic::file(
            &shown,
            format!("project.yaml must sit in a project folder under rules/{user}/, e.g. rules/{user}/replies/"),
        ));
    }
    let timezone = match &f.timezone {
        Some(t) => parse_tz(t).unwrap_or_else(|m| {
            errors.push(Diagnostic::at_key(&shown, &src, "timezone", m));
            Tz::UTC
        }),
        None => users[&user].timezone,
    };
    let mut tables = BTreeMap::new();
    for (tname, tfile) in &f.tables {
        match inside(&dir, tfile) {
            Some(p) if p.is_file() => {
                tables.insert(tname.clone(), p);
            }
            Some(_) => errors.push(Diagnostic::at_key(
                &shown,
                &src,
                tname,
                format!("table `{tname}`: no file `{tfile}` in this project folder"),
            )),
            None => errors.push(Diagnostic::at_key(
                &shown,
                &src,
                tname,
                format!("table `{tname}`: {}", outside_msg(tfile)),
            )),
        }
    }
    let mut rules = Vec::new();
    let mut names = BTreeSet::new();
    for (i, r) in f.rules.iter().enumerate() {
        match check_rule(&dir, &shown, &src, i, r, &mut names) {
            Ok(rule) => rules.push(rule),
            Err(d) => errors.push(d),
        }
    }
    // The valid part is kept beside the errors, so that `check` can go on and compile it.
    let fallback_template = f.fallback_template.as_ref().map(
        |t| serde_json::json!({ "template": t.name, "language": t.language, "params": t.params }),
    );
    let project = ProjectConfig {
        fallback_template,
        user,
        name,
        dir,
        file: shown,
        source: src,
        timezone,
        tables,
        rules,
    };
    Ok((project, errors))
}

fn check_rule(
    dir: &Path,
    shown: &Path,
    src: &str,
    i: usize,
    r: &RuleFile,
    names: &mut BTreeSet<String>,
) -> Result<RuleConfig, Diagnostic> {
    let at = |key: &str, msg: String| match rule_key(src, key, i) {
        Some((l, c)) => Diagnostic::at(shown, src, l, c, msg),
        None => Diagnostic::file(shown, msg),
    };
    if r.name.trim().is_empty() {
        return Err(at("name", "a rule needs a name".into()));
    }
    if !names.insert(r.name.clone()) {
        return Err(at(
            "name",
            format!("rule name `{}` is used twice in this project", r.name),
        ));
    }
    let trigger = parse_trigger(&r.on).map_err(|m| match trigger_value(src, i) {
        Some((l, c)) => Diagnostic::at(shown, src, l, c, m),
        None => at("on", m),
    })?;
    if inside(dir, &r.script).is_none() {
        return Err(at(
            "script",
            format!("rule `{}`: {}", r.name, outside_msg(&r.script)),
        ));
    }
    let script = inside(dir, &r.script)
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            at(
                "script",
                format!(
                    "rule `{}`: no script `{}` in this project folder",
                    r.name, r.script
                ),
            )
        })?;
    let mode = match (r.mode.as_deref(), r.max) {
        (None | Some("parallel"), max) => RunMode::Parallel(max.unwrap_or(10)),
        (Some("queued"), max) => RunMode::Queued(max.unwrap_or(10)),
        (Some("single"), None) => RunMode::Single,
        (Some("single"), Some(_)) => {
            return Err(at(
                "max",
                format!("rule `{}`: `max` does not apply to mode: single", r.name),
            ));
        }
        (Some(other), _) => {
            return Err(at(
                "mode",
                format!(
                    "rule `{}`: unknown mode `{other}`; use single, queued or parallel",
                    r.name
                ),
            ));
        }
    };
    if matches!(mode, RunMode::Queued(0) | RunMode::Parallel(0)) {
        return Err(at(
            "max",
            format!("rule `{}`: `max` must be at least 1", r.name),
        ));
    }
    let timed = matches!(trigger, Trigger::Cron(_) | Trigger::At(_));
    if !timed && (r.catch_up.is_some() || r.max_lateness.is_some()) {
        let key = if r.catch_up.is_some() {
            "catch_up"
        } else {
            "max_lateness"
        };
        return Err(at(
            key,
            format!(
                "rule `{}`: `{key}` applies to timed rules (cron, at) only",
                r.name
            ),
        ));
    }
    let catch_up = match r.catch_up.as_deref() {
        None | Some("once") => CatchUp::Once,
        Some("skip") => CatchUp::Skip,
        Some(other) => {
            return Err(at(
                "catch_up",
                format!(
                    "rule `{}`: catch_up is `once` or `skip`, not `{other}`",
                    r.name
                ),
            ));
        }
    };
    let max_lateness = match r.max_lateness.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(text) => parse_duration(text).ok_or_else(|| {
            at(
                "max_lateness",
                format!(
                    "rule `{}`: max_lateness `{text}` is not a duration like 90s, 30m, 2h or 1d",
                    r.name
                ),
            )
        })?,
    };
    let condition_pos = match &r.condition {
        Some(_) => rule_key(src, "if", i).unwrap_or((0, 0)),
        None => (0, 0),
    };
    Ok(RuleConfig {
        name: r.name.clone(),
        trigger,
        condition: r.condition.clone(),
        condition_pos,
        script,
        call: r.call.clone(),
        call_pos: rule_key(src, "call", i).unwrap_or((0, 0)),
        mode,
        catch_up,
        max_lateness,
    })
}

/// `90s`, `30m`, `2h`, `1d`, or a number of seconds.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// 1-based (line, col) of `key` in the `i`-th item of the top-level `rules:` list, as
/// [`super::diag::locate_key`] gives it (the value, or the key when its value is on the next
/// lines). Only the item's own keys count: not a `name:` of `fallback_template:`, another
/// rule's `mode:`, or text inside an `if: >-` block. `None` for a list written in flow style.
/// Where rule `i`'s `cron:` or `at:` value is written on a line of its own under `on:`
/// (1-based line and column of the value).
fn trigger_value(src: &str, i: usize) -> Option<(usize, usize)> {
    let item = rule_items(src).into_iter().nth(i)?;
    let lines: Vec<&str> = src.lines().collect();
    (item.start..item.end).find_map(|n| {
        let line = lines.get(n)?;
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if indent <= item.keys_at {
            return None;
        }
        let after = ["cron:", "at:"].iter().find_map(|k| body.strip_prefix(k))?;
        let value = after.trim_start();
        (!value.is_empty()).then(|| (n + 1, line.len() - value.len() + 1))
    })
}

fn rule_key(src: &str, key: &str, i: usize) -> Option<(usize, usize)> {
    let item = rule_items(src).into_iter().nth(i)?;
    let lines: Vec<&str> = src.lines().collect();
    (item.start..item.end).find_map(|n| {
        let line = lines[n];
        let mut body = line.trim_start_matches(' ');
        let mut at = line.len() - body.len();
        if n == item.start {
            let rest = body.strip_prefix('-')?;
            body = rest.trim_start_matches(' ');
            at += 1 + rest.len() - body.len();
        }
        if at != item.keys_at {
            return None;
        }
        let after = body.strip_prefix(key)?.strip_prefix(':')?;
        let value_off = after.len() - after.trim_start().len();
        let col = if after.trim().is_empty() || after.trim_start().starts_with('#') {
            at + 1
        } else {
            at + key.len() + 1 + value_off + 1
        };
        Some((n + 1, col))
    })
}

/// One item of the top-level `rules:` list: its lines (0-based, `end` excluded) and the
/// column (0-based) of its keys.
#[derive(Debug, PartialEq, Eq)]
struct RuleItem {
    start: usize,
    end: usize,
    keys_at: usize,
}

/// The items of the top-level `rules:` list in block style, read from the text's indentation
/// (serde_yaml gives values without positions).
fn rule_items(src: &str) -> Vec<RuleItem> {
    let lines: Vec<&str> = src.lines().collect();
    let Some(top) = lines.iter().position(|l| {
        l.strip_prefix("rules:")
            .map(str::trim_start)
            .is_some_and(|r| r.is_empty() || r.starts_with('#'))
    }) else {
        return Vec::new();
    };
    let mut items: Vec<RuleItem> = Vec::new();
    let mut dash_at = None;
    let mut end = lines.len();
    for (n, line) in lines.iter().enumerate().skip(top + 1) {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        let is_item = body == "-" || body.starts_with("- ");
        let dash = *dash_at.get_or_insert(indent);
        if indent < dash || (indent == dash && !is_item) || body.starts_with("---") {
            end = n;
            break;
        }
        if let Some(last) = items.last_mut().filter(|l| l.keys_at == usize::MAX) {
            // `-` alone on its line: the keys start on the next one.
            last.keys_at = indent;
        }
        if indent == dash && is_item {
            if let Some(last) = items.last_mut() {
                last.end = n;
            }
            let rest = &body[1..];
            let k = rest.trim_start_matches(' ');
            let keys_at = if k.is_empty() || k.starts_with('#') {
                usize::MAX
            } else {
                indent + 1 + rest.len() - k.len()
            };
            items.push(RuleItem {
                start: n,
                end: lines.len(),
                keys_at,
            });
        }
    }
    if let Some(last) = items.last_mut() {
        last.end = last.end.min(end);
    }
    items
}

fn parse_trigger(v: &serde_yaml::Value) -> Result<Trigger, String> {
    use serde_yaml::Value as Y;
    const NAMES: &str = "message, status, template_status, phone_number_name_update, webhook, { cron: \"…\" } or { at: \"…\" }";
    match v {
        Y::String(s) => match s.as_str() {
            "message" => Ok(Trigger::Message),
            "status" => Ok(Trigger::Status),
            "template_status" => Ok(Trigger::TemplateStatus),
            "phone_number_name_update" => Ok(Trigger::PhoneNumberNameUpdate),
            "webhook" => Ok(Trigger::Webhook),
            other => Err(format!(
                "unknown trigger `{other}`; expected one of {NAMES}"
            )),
        },
        Y::Mapping(m) if m.len() == 1 => {
            let (k, val) = m.iter().next().expect("one entry");
            let val = val
                .as_str()
                .ok_or_else(|| "the trigger's value must be a string".to_string())?;
            match k.as_str() {
                Some("cron") => {
                    crate::domain::schedule::check_cron(val)?;
                    if crate::domain::schedule::never_fires(val) {
                        return Err(format!(
                            "cron expression `{val}` never fires: no date has that day of the month in those months"
                        ));
                    }
                    Ok(Trigger::Cron(val.to_string()))
                }
                Some("at") => {
                    crate::domain::schedule::check_at(val)?;
                    Ok(Trigger::At(val.to_string()))
                }
                _ => Err(format!("unknown trigger; expected one of {NAMES}")),
            }
        }
        _ => Err(format!("`on:` must be one of {NAMES}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_are_found_in_their_own_rule() {
        let src = "\
fallback_template:
  name: hello_world
rules:
  - name: a
    on: message
    if: >-
      mode: not a key
    script: a.rhai
  -
    name: b
    mode: bogus
    on:
      cron: \"0 9 * * *\"
tables: {}
";
        assert_eq!(rule_key(src, "name", 0), Some((4, 11)));
        assert_eq!(rule_key(src, "name", 1), Some((10, 11)));
        assert_eq!(rule_key(src, "mode", 0), None);
        assert_eq!(rule_key(src, "mode", 1), Some((11, 11)));
        assert_eq!(rule_key(src, "on", 1), Some((12, 5)));
        assert_eq!(rule_key(src, "if", 0), Some((6, 9)));
        assert_eq!(rule_key(src, "name", 2), None);
        // At the top level's own indentation, and in flow style (not located).
        let src = "rules:\n- name: a\n  mode: x\n- name: b\n  mode: y\n";
        assert_eq!(rule_key(src, "mode", 1), Some((5, 9)));
        assert_eq!(rule_key("rules: [{name: a}]\n", "name", 0), None);
    }
}
