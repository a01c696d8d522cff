//! One rule run, the same for webhook events, dry runs and (later) timed firings: check the
//! `if:`, take a place under the rule's run mode, run the script, trace it, and turn its
//! actions into store effects with idempotency keys.

use crate::config::{Permissions, UserConfig};
use crate::export::{self, Account, ExportOptions};
use crate::rules::{Project, Rule};
use crate::script::{
    Action, ExportRequest, ExportResult, Host, RunContext, ScriptEngine, ScriptRun,
};
use crate::store::{
    Effects, LabelWrite, NewOutbound, NewSchedule, RunRecord, StateWrite, Store, now_ms,
};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The store as scripts may read it: this user and this project only.
pub struct StoreHost {
    pub store: Store,
    pub user: String,
    pub project: String,
    /// What `export(opts)` may do.
    pub export: ExportAccess,
}

/// What a script's `export(opts)` may do in a run.
#[derive(Clone, Debug)]
pub enum ExportAccess {
    /// The user's permissions.export is false (or the user is not served).
    Denied { user: String },
    /// Write a new file under `dir` (data/exports/<user>/).
    Write { account: Account, dir: PathBuf },
    /// A dry run: count what would be exported, write nothing, move no watermark.
    DryRun { account: Account, dir: PathBuf },
}

impl ExportAccess {
    /// The access of `user`'s rules: as users/<user>.yaml `permissions.export` says.
    pub fn of(store: &Store, name: &str, user: Option<&UserConfig>, dry_run: bool) -> Self {
        match user.filter(|u| u.permissions.export) {
            None => ExportAccess::Denied {
                user: name.to_string(),
            },
            Some(u) => {
                let (account, dir) = (Account::of(u), export::exports_dir(store.path(), name));
                if dry_run {
                    ExportAccess::DryRun { account, dir }
                } else {
                    ExportAccess::Write { account, dir }
                }
            }
        }
    }
}

fn export_options(req: &ExportRequest) -> ExportOptions {
    ExportOptions {
        since: req.since,
        until: req.until,
        contact: req.contact.clone(),
        incremental: req.incremental,
    }
}

impl Host for StoreHost {
    fn state(&self, key: &str) -> Result<Option<Value>, String> {
        self.store
            .state_get(&self.user, &self.project, key)
            .map_err(|e| format!("state: {e}"))
    }

    fn lookup(
        &self,
        table: &str,
        key: Option<&str>,
        query: Option<&Map<String, Value>>,
    ) -> Result<Vec<Value>, String> {
        let r = match table {
            "contacts" => self.store.lookup_contacts(&self.user, key, query),
            "messages" => self.store.lookup_messages(&self.user, key, query),
            other => return Err(format!("lookup: no table `{other}`")),
        };
        r.map_err(|e| format!("lookup: {e}"))
    }

    fn last_inbound(&self, contact: &str) -> Result<Option<i64>, String> {
        self.store
            .last_inbound(&self.user, contact)
            .map_err(|e| format!("window: {e}"))
    }

    fn export(&self, req: &ExportRequest) -> Result<ExportResult, String> {
        let opts = export_options(req);
        let (account, dir, dry) = match &self.export {
            ExportAccess::Denied { user } => {
                return Err(format!(
                    "export: user `{user}` may not export (permissions.export is false in users/{user}.yaml)"
                ));
            }
            ExportAccess::Write { account, dir } => (account, dir, false),
            ExportAccess::DryRun { account, dir } => (account, dir, true),
        };
        let path = export::default_file(dir, &account.user, chrono::Utc::now(), opts.incremental);
        let counts = if dry {
            // Counted through a sink: nothing is written, no watermark moves.
            export::write_export(&self.store, account, &opts, std::io::sink(), None)
                .map_err(|e| e.to_string())?
                .counts
        } else {
            let counts = export::export_to_file(&self.store, account, &opts, &path, None)
                .map_err(|e| e.to_string())?
                .counts;
            let details = export::audit_details(
                &opts,
                &counts,
                &path.to_string_lossy(),
                &format!("script {}", self.project),
            );
            self.store
                .audit(&self.user, "export", &details)
                .map_err(|e| format!("export: written, but cannot be audited: {e}"))?;
            counts
        };
        Ok(ExportResult {
            path: path.to_string_lossy().into_owned(),
            messages: counts.messages,
            contacts: counts.contacts,
            media: counts.media,
        })
    }
}

/// The context of runs of `project`'s rules.
pub fn context(
    engine: &ScriptEngine,
    project: &Project,
    permissions: Option<&Permissions>,
    host: Arc<dyn Host>,
) -> RunContext {
    let none = Permissions::none();
    let p = permissions.unwrap_or(&none);
    RunContext {
        user: project.user.to_string(),
        may_send: p.send,
        readable: p.read.clone(),
        timeout: engine.timeout(),
        tz: project.timezone,
        now: chrono::Utc::now(),
        tables: project.tables.clone(),
        host,
        fallback_template: project.fallback_template.clone(),
        dir: Some(project.dir.clone()),
        key_prefix: None,
    }
}

/// A finished run: its trace and, if it succeeded, its actions.
pub struct RunResult {
    pub record: RunRecord,
    pub actions: Vec<Action>,
}

/// Runs `rule` of `project` for `input` (an event map, or a scheduled call's argument with
/// `call`). `trigger` names what started it, for the trace.
pub fn run_rule(
    engine: &ScriptEngine,
    project: &Project,
    rule: &Rule,
    input: &Value,
    call: Option<&str>,
    trigger: &str,
    ctx: &RunContext,
) -> RunResult {
    let t0 = Instant::now();
    let mut record = RunRecord {
        project: project.name.clone(),
        rule: rule.name.clone(),
        version: project.hash.clone(),
        trigger: trigger.to_string(),
        detail: Value::Array(Vec::new()),
        outcome: "ok",
        error: None,
        logs: Vec::new(),
        actions: 0,
        started_at_ms: now_ms(),
        duration_us: 0,
    };
    let done = |mut record: RunRecord, actions: Vec<Action>| {
        record.duration_us = t0.elapsed().as_micros() as i64;
        record.actions = actions.len();
        record.detail = Value::Array(actions.iter().map(describe_action).collect());
        RunResult { record, actions }
    };
    if call.is_none()
        && let Some(cond) = &rule.condition
    {
        match engine.eval_condition(cond, input, ctx) {
            Ok(true) => {}
            Ok(false) => {
                record.outcome = "skipped";
                record.logs.push("`if:` was false".into());
                return done(record, Vec::new());
            }
            Err(e) => {
                let at = match (e.line, e.col) {
                    (0, _) => String::new(),
                    (line, col) => format!(":{line}:{col}"),
                };
                let e = format!(
                    "{}{at}: in `if:` of rule `{}`: {}",
                    project_file_shown(project, rule),
                    rule.name,
                    e.message
                );
                run_failed(project, rule, input, &e);
                record.outcome = "error";
                record.error = Some(e);
                return done(record, Vec::new());
            }
        }
    }
    let _permit = match rule.gate.enter() {
        Ok(p) => p,
        Err(why) => {
            record.outcome = "skipped";
            record.logs.push(why);
            return done(record, Vec::new());
        }
    };
    let call = call.or(rule.call.as_deref());
    let (ast, imports_first) = match (call, &rule.calls) {
        // A function called alone runs the script's top-level imports first.
        (Some(_), Some(calls)) => (&**calls, true),
        _ => (&*rule.ast, false),
    };
    let run = ScriptRun {
        ast,
        call,
        imports_first,
        file: &rule.script_shown,
        // A send's id is the key [`effects`] stores it under.
        ids: ctx
            .key_prefix
            .as_deref()
            .map(|prefix| effect_key(prefix, project, rule, "", None)),
        // The gate's runs (whose effects are stored under the key prefix) log to the gate's
        // log too; a dry run prints its log instead.
        log_as: ctx
            .key_prefix
            .is_some()
            .then_some((project.name.as_str(), rule.name.as_str())),
    };
    let out = engine.run_script(run, input, ctx);
    record.logs = out.logs;
    if let Some(e) = out.error {
        run_failed(project, rule, input, &e);
        record.outcome = "error";
        record.error = Some(e);
        return done(record, Vec::new());
    }
    done(record, out.actions)
}

/// Logs a run that failed (its `if:` or its script), once, where it is traced.
fn run_failed(project: &Project, rule: &Rule, input: &Value, error: &str) {
    tracing::warn!(user = %project.user, project = %project.name, rule = %rule.name, message_id = input.get("id").and_then(serde_json::Value::as_str).unwrap_or(""), error = %error, "rule run failed");
}

/// The project's project.yaml as users name it (`rules/olga/tour/project.yaml`): in the folder
/// of the rule's script as shown that is the project's.
fn project_file_shown(project: &Project, rule: &Rule) -> String {
    let shown = std::path::Path::new(&rule.script_shown);
    let dir = shown
        .ancestors()
        .find(|d| d.ends_with(&project.name))
        .unwrap_or(&project.dir);
    dir.join("project.yaml").display().to_string()
}

/// Counts a finished run in the metrics (`wagate_rule_runs`, `wagate_rule_run_seconds`): the
/// callers of [`run_rule`] whose runs count, once they know they do.
pub fn count(user: &str, record: &RunRecord) {
    crate::metrics::rule_run(
        user,
        &record.project,
        &record.rule,
        record.outcome,
        record.duration_us,
    );
}

/// The key of a run's `n`-th effect of a kind (`""` for sends): `<prefix>/<project>/<rule>/
/// <kind><n>`; without `n`, what the keys of that kind start with.
fn effect_key(
    prefix: &str,
    project: &Project,
    rule: &Rule,
    kind: &str,
    n: Option<usize>,
) -> String {
    let n = n.map(|n| n.to_string()).unwrap_or_default();
    format!("{prefix}/{}/{}/{kind}{n}", project.name, rule.name)
}

/// A run's actions as store effects. Keys are `<prefix>/<project>/<rule>/<kind><ordinal>`, so
/// that running the same trigger again (after a crash) adds nothing twice. `prefix` must be
/// the run's [`RunContext::key_prefix`], for the ids its sends returned to be these keys.
pub fn effects(
    project: &Project,
    rule: &Rule,
    actions: Vec<Action>,
    prefix: &str,
    into: &mut Effects,
) {
    let key = |kind: &str, n: usize| effect_key(prefix, project, rule, kind, Some(n));
    let (mut sends, mut schedules) = (0, 0);
    for a in actions {
        match a {
            Action::Send {
                recipient,
                msg_type,
                body,
            } => {
                let idem_key = key("", sends);
                into.outbound.push(NewOutbound {
                    idem_key,
                    recipient,
                    msg_type,
                    body,
                });
                sends += 1;
            }
            Action::SetState { key: k, value } => into.states.push(StateWrite {
                project: project.name.clone(),
                key: k,
                value,
            }),
            Action::Schedule { at, call, arg } => {
                into.schedules.push(NewSchedule {
                    project: project.name.clone(),
                    rule: rule.name.clone(),
                    call,
                    arg,
                    due_at_ms: at.timestamp_millis(),
                    idem_key: key("schedule", schedules),
                });
                schedules += 1;
            }
            Action::Label {
                contact,
                label,
                add,
            } => into.labels.push(LabelWrite {
                contact,
                label,
                add,
            }),
        }
    }
}

/// An action as a user reads it in traces and dry runs.
pub fn describe_action(a: &Action) -> Value {
    match a {
        Action::Send {
            recipient,
            msg_type,
            body,
        } => {
            json!({"send": {"to": recipient, "type": msg_type, "body": body}})
        }
        Action::SetState { key, value } => json!({"set_state": {"key": key, "value": value}}),
        Action::Schedule { at, call, arg } => {
            json!({"schedule": {"at": at.to_rfc3339(), "call": call, "arg": arg}})
        }
        Action::Label {
            contact,
            label,
            add,
        } => {
            let f = if *add { "add_label" } else { "remove_label" };
            json!({ f: {"contact": contact, "label": label} })
        }
    }
}
