//! `wagate rules test|list|defs` and `wagate runs`: looking at a home's rules without serving.
//! A dry run compiles the home as the gate does and runs one rule through the gate's own
//! runner (so `if:` and run modes behave the same) against a read-only view of the store:
//! nothing is sent, nothing is written. None of these commands opens the credentials.

use super::CliError;
use crate::config::{Home, RuleConfig, RunMode, ScriptLimits, Trigger, load_gate};
use crate::domain::UserId;
use crate::domain::schedule::{AtTime, at_instant, check_at};
use crate::rules::{Project, Rule, RuleSet};
use crate::runner::{self, RunResult, StoreHost};
use crate::script::{EmptyHost, Host, ScriptEngine};
use crate::store::{RunTrace, Store};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::Subcommand;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `wagate rules …`.
#[derive(Subcommand, Debug)]
pub(super) enum RulesAction {
    /// Dry-run one rule on an event: prints what it would send, sends and stores nothing.
    Test {
        /// USER/PROJECT…/RULE: the project's path under rules_dir, then the rule's name.
        path: String,
        /// A Meta webhook payload or an `event` map, as JSON. Optional for cron/at rules,
        /// which then get the `kind: "schedule"` event of a firing.
        #[arg(long)]
        event: Option<PathBuf>,
        /// The run's clock: RFC 3339, or a local time like 2026-05-01T08:00 in the project
        /// timezone (default: now).
        #[arg(long)]
        now: Option<String>,
    },
    /// Every rule: user, project/rule, trigger, run mode, and when timed rules fire next.
    List {
        /// Only this user's rules.
        user: Option<String>,
        /// Show the next firings after this time (RFC 3339, or local in each project's
        /// timezone) instead of after now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Write a Rhai definition file of the script API, for editors.
    ///
    /// An editor with a Rhai language server reads it to autocomplete and check rule scripts:
    /// send, reply, lookup, state, schedule, now and the time helpers, and Rhai's own
    /// functions. Regenerate it after upgrading wagate.
    Defs {
        /// Where to write them (default: <rules_dir>/.defs, which project discovery ignores).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a `rules` subcommand on the home of `config`.
pub(super) fn run(config: &Path, action: RulesAction) -> Result<(), CliError> {
    match action {
        RulesAction::Test { path, event, now } => {
            test(config, &path, event.as_deref(), now.as_deref())
        }
        RulesAction::List { user, now } => list(config, user.as_deref(), now.as_deref()),
        RulesAction::Defs { out } => defs(config, out.as_deref()),
    }
}

fn failure(message: impl std::fmt::Display) -> CliError {
    CliError::failure(format!("error: {message}"))
}

/// The home and its compiled rules, loaded as the gate loads them but without credentials.
fn load(config: &Path) -> Result<(Home, ScriptEngine, RuleSet), CliError> {
    let home = Home::load(config).map_err(CliError::failure)?;
    let engine = ScriptEngine::new(&home.gate.file.scripts);
    let rules = RuleSet::compile(&home, &engine).map_err(CliError::failure)?;
    Ok((home, engine, rules))
}

/// A `--now` value: RFC 3339, or a local time to be placed in a project's timezone.
fn parse_now(text: Option<&str>) -> Result<Option<AtTime>, CliError> {
    text.map(|t| check_at(t).map_err(|e| CliError::usage(format!("error: --now: {e}"))))
        .transpose()
}

/// `t` in `tz` and in UTC: `2026-05-01T08:00:00+02:00 (2026-05-01T06:00:00Z)`.
fn local_and_utc(t: DateTime<Utc>, tz: Tz) -> String {
    format!(
        "{} ({})",
        t.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Text on one line: line breaks and other control characters escaped.
use crate::terminal::one_line;

/// The rule as written in project.yaml (its `if:` text and run mode).
fn rule_config<'a>(home: &'a Home, project: &str, rule: &str) -> Option<&'a RuleConfig> {
    home.projects
        .iter()
        .find(|p| p.name == project)
        .and_then(|p| p.rules.iter().find(|r| r.name == rule))
}

fn is_timed(t: &Trigger) -> bool {
    matches!(t, Trigger::Cron(_) | Trigger::At(_))
}

/// Whether an event of `kind` starts a rule with `trigger`; timed rules take `schedule`.
fn starts(trigger: &Trigger, kind: &str) -> bool {
    if is_timed(trigger) {
        kind == "schedule"
    } else {
        trigger.matches_kind(kind)
    }
}

mod defs;
mod list;
mod runs;
mod test;

use defs::defs;
use list::list;
pub(super) use runs::runs;
use test::test;
