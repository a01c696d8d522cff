//! `wagate rules test`: a dry run of one rule, printed as a user reads it.

use super::*;

/// `rules test`: one dry run of one rule.
pub(super) fn test(
    config: &Path,
    path: &str,
    event: Option<&Path>,
    now: Option<&str>,
) -> Result<(), CliError> {
    // USER/PROJECT…/RULE: a malformed USER is a usage error, as in every command.
    if let Some((user, _)) = path.trim_matches('/').split_once('/') {
        crate::cli::args::user_arg(user)?;
    }
    let now = parse_now(now)?;
    let (home, engine, rules) = load(config)?;
    let (project, rule) = find_rule(&home, &rules, path)?;
    let now = now.map_or_else(Utc::now, |t| at_instant(&t, project.timezone));
    let input = dry_run_input(event, project, rule, now)?;
    let permissions = home.users.get(&project.user).map(|u| &u.permissions);
    let mut ctx = runner::context(&engine, project, permissions, read_host(&home, project)?);
    ctx.now = now;
    let kind = input["kind"].as_str().unwrap_or("webhook").to_string();
    let res = runner::run_rule(&engine, project, rule, &input, None, &kind, &ctx);
    let written = rule_config(&home, &project.name, &rule.name);
    let if_error = res
        .record
        .error
        .as_deref()
        .filter(|e| is_condition_error(e))
        .map(str::to_string);
    let condition = written.and_then(|r| r.condition.as_deref());
    print_dry_run(project, rule, condition, if_error, &res)
}

/// The event a dry run gives the rule: from FILE, or a timed rule's firing at `now`.
pub(super) fn dry_run_input(
    event: Option<&Path>,
    project: &Project,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<Value, CliError> {
    match event {
        Some(file) => {
            // A dry run plays the event as if it arrived now: a message's sender has just
            // written, so they are inside the 24-hour window as they would be in the gate.
            let mut ev = event_from_file(file, project, rule)?;
            if ev.get("kind").and_then(Value::as_str) == Some("message") {
                ev["timestamp"] = now.timestamp().into();
            }
            Ok(ev)
        }
        None if is_timed(&rule.trigger) => Ok(schedule_event(project, rule, now)),
        None => Err(CliError::usage(format!(
            "error: rule `{}/{}` runs on {}: give --event FILE (a Meta webhook payload or an event map, as JSON)",
            project.name,
            rule.name,
            rule.trigger.describe()
        ))),
    }
}

/// Finds `USER/PROJECT…/RULE` among the compiled projects; says what exists if it is not there.
pub(super) fn find_rule<'a>(
    home: &Home,
    rules: &'a RuleSet,
    path: &str,
) -> Result<(&'a Project, &'a Rule), CliError> {
    let path = path.trim_matches('/');
    if let Some(p) = rules.projects.iter().find(|p| p.name == path) {
        let full: Vec<String> = p
            .rules
            .iter()
            .map(|r| format!("{path}/{}", r.name))
            .collect();
        return Err(failure(format!(
            "`{path}` is a project; name one of its rules: {}",
            full.join(", ")
        )));
    }
    let Some((proj, name)) = path.rsplit_once('/') else {
        return Err(failure(format!(
            "`{path}` is not a rule path: write USER/PROJECT…/RULE, e.g. olga/replies/echo"
        )));
    };
    let Some(project) = rules.projects.iter().find(|p| p.name == proj) else {
        let dir = home.gate.display_path(&home.gate.rules_dir);
        let known = join(rules.projects.iter().map(|p| p.name.as_str()));
        return Err(failure(if known.is_empty() {
            format!(
                "no project `{proj}` in {}/: there are no projects",
                dir.display()
            )
        } else {
            format!(
                "no project `{proj}` in {}/; the projects are: {known}",
                dir.display()
            )
        }));
    };
    match project.rules.iter().find(|r| r.name == name) {
        Some(rule) => Ok((project, rule)),
        None => Err(failure(format!(
            "project `{proj}` has no rule `{name}`; its rules are: {}",
            join(project.rules.iter().map(|r| r.name.as_str()))
        ))),
    }
}

pub(super) fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// The event of a dry run from FILE: the first event of a Meta payload that starts the rule,
/// or an event map as it is. It gets the project's user, as the gate's events do.
pub(super) fn event_from_file(
    file: &Path,
    project: &Project,
    rule: &Rule,
) -> Result<Value, CliError> {
    let bytes =
        std::fs::read(file).map_err(|e| failure(format!("cannot read {}: {e}", file.display())))?;
    let root: Value = serde_json::from_slice(&bytes)
        .map_err(|e| failure(format!("{} is not JSON: {e}", file.display())))?;
    let trigger = rule.trigger.describe();
    let mut event = if root.get("entry").is_some_and(Value::is_array) {
        let events = crate::whatsapp::parse_webhook(&bytes).map_err(failure)?;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        match events
            .iter()
            .find(|e| starts(&rule.trigger, e.kind.as_str()))
        {
            Some(e) => e.map.clone(),
            None if kinds.is_empty() => {
                return Err(failure(format!("{} holds no events", file.display())));
            }
            None => {
                return Err(failure(format!(
                    "no event in {} starts rule `{}` (on: {trigger}); it holds: {}",
                    file.display(),
                    rule.name,
                    kinds.join(", ")
                )));
            }
        }
    } else if let Some(kind) = root.get("kind").and_then(Value::as_str) {
        if !starts(&rule.trigger, kind) {
            return Err(failure(format!(
                "rule `{}` runs on {trigger}, not on events of kind `{kind}`",
                rule.name
            )));
        }
        root.clone()
    } else {
        return Err(failure(format!(
            "{} is neither a Meta webhook payload (an object with `entry`) nor an event map (an object with `kind`)",
            file.display()
        )));
    };
    event["user"] = project.user.as_str().into();
    Ok(event)
}

/// The event of a timed rule's firing at `now`, as the scheduler makes it.
pub(super) fn schedule_event(project: &Project, rule: &Rule, now: DateTime<Utc>) -> Value {
    let tz = project.timezone;
    // A one-off rule fires for its own time; a cron rule for the clock's.
    let due = match &rule.trigger {
        Trigger::At(text) => check_at(text).map_or(now, |t| at_instant(&t, tz)),
        _ => now,
    };
    crate::scheduler::schedule_event(project, rule, due, now)
}

/// What scripts may read: the home's database if it exists (read, never written), else nothing.
pub(super) fn read_host(home: &Home, project: &Project) -> Result<Arc<dyn Host>, CliError> {
    if !home.gate.db_path.is_file() {
        return Ok(Arc::new(EmptyHost));
    }
    let store = Store::open_read_only(&home.gate.db_path).map_err(failure)?;
    // A dry run counts what `export(opts)` would write and writes nothing.
    let export = crate::runner::ExportAccess::of(
        &store,
        project.user.as_str(),
        home.users.get(&project.user),
        true,
    );
    Ok(Arc::new(StoreHost {
        store,
        user: project.user.to_string(),
        project: project.name.clone(),
        export,
    }))
}

/// Whether a run's error came from its `if:` rather than its script: placed by the runner, or,
/// in runs traced before it placed them, named `if:` (or "`if:` must give…").
pub(super) fn is_condition_error(e: &str) -> bool {
    e.starts_with("if:") || e.starts_with("`if:`") || is_placed_condition_error(e)
}

/// An `if:` error the runner placed in project.yaml:
/// ``rules/…/project.yaml:4:21: in `if:` of rule `a`: message``.
pub(super) fn is_placed_condition_error(e: &str) -> bool {
    e.contains(": in `if:` of rule `")
}

/// An `if:` error as traced before the runner placed them, as ((line, column) inside the
/// expression, message): `if::line:col: message`, or just the message.
pub(super) fn split_condition_error(e: &str) -> (Option<(usize, usize)>, &str) {
    let rest = e.strip_prefix("if:").unwrap_or(e).trim_start_matches(':');
    let at = |at: &str| {
        let (l, c) = at.split_once(':')?;
        Some((l.parse::<usize>().ok()?, c.parse::<usize>().ok()?))
    };
    match rest.split_once(": ") {
        Some((p, msg)) if at(p).is_some() => (at(p), msg),
        _ => (None, rest),
    }
}

/// Prints a dry run: header, `if:`, actions, logs, summary. A failed run is an error.
pub(super) fn print_dry_run(
    project: &Project,
    rule: &Rule,
    condition: Option<&str>,
    if_error: Option<String>,
    res: &RunResult,
) -> Result<(), CliError> {
    let rec = &res.record;
    println!(
        "rule {}/{} (on: {})",
        project.name,
        rule.name,
        rule.trigger.describe()
    );
    if let Some(e) = if_error {
        return Err(failure(e));
    }
    if rec.outcome == "skipped" {
        println!("skipped: {}", skip_reason(&rec.logs));
        println!("dry run: nothing was sent");
        return Ok(());
    }
    match condition {
        Some(c) => println!("if: {c} → matched"),
        None => println!("if: (none)"),
    }
    for a in &res.actions {
        let line = action_line(&runner::describe_action(a), project.timezone);
        println!("would {line}");
    }
    for l in &rec.logs {
        println!("log: {}", one_line(l));
    }
    if let Some(e) = &rec.error {
        return Err(failure(e));
    }
    println!("dry run: nothing was sent");
    Ok(())
}

/// Why a run was skipped, from its logs (the run mode's reasons start with `skipped: `).
pub(super) fn skip_reason(logs: &[String]) -> String {
    let reasons: Vec<&str> = logs
        .iter()
        .map(|l| l.strip_prefix("skipped: ").unwrap_or(l))
        .collect();
    if reasons.is_empty() {
        "no reason recorded".into()
    } else {
        reasons.join("; ")
    }
}

/// One action of a run (as `runner::describe_action` writes it) on one line, with times in
/// `tz` and UTC: `send to +33… (text): Hello`, `set state k = 1`, `schedule f(1) at …`.
pub(super) fn action_line(a: &Value, tz: Tz) -> String {
    if let Some(s) = a.get("send") {
        return send_line(s);
    }
    if let Some(s) = a.get("set_state") {
        let key = s["key"].as_str().unwrap_or_default();
        return format!("set state {key} = {}", s["value"]);
    }
    if let Some(s) = a.get("schedule") {
        let at = s["at"].as_str().unwrap_or_default();
        let when = DateTime::parse_from_rfc3339(at)
            .map(|t| local_and_utc(t.with_timezone(&Utc), tz))
            .unwrap_or_else(|_| at.to_string());
        let call = s["call"].as_str().unwrap_or_default();
        return format!("schedule {call}({}) at {when}", s["arg"]);
    }
    for (f, verb, word) in [
        ("add_label", "label", "as"),
        ("remove_label", "unlabel", "from"),
    ] {
        if let Some(l) = a.get(f) {
            let (c, l) = (
                l["contact"].as_str().unwrap_or("?"),
                l["label"].as_str().unwrap_or("?"),
            );
            // A number is shown with its `+`; a business-scoped id as it is.
            let plus = if c.bytes().all(|b| b.is_ascii_digit()) {
                "+"
            } else {
                ""
            };
            return format!("{verb} {plus}{c} {word} {l}");
        }
    }
    a.to_string()
}

/// `send to +33612345678 (text, quoting wamid.X): Hello`; non-text content as compact JSON.
pub(super) fn send_line(s: &Value) -> String {
    let body = &s["body"];
    let to = ["to", "recipient"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .or_else(|| s["to"].as_str())
        .unwrap_or("?");
    let ty = s["type"].as_str().unwrap_or("?");
    let quoting = body
        .pointer("/context/message_id")
        .and_then(Value::as_str)
        .map(|m| format!(", quoting {m}"))
        .unwrap_or_default();
    let content = match body.get(ty) {
        Some(t) if ty == "text" => t["body"].as_str().unwrap_or_default().to_string(),
        Some(other) => other.to_string(),
        None => body.to_string(),
    };
    format!("send to {to} ({ty}{quoting}): {}", one_line(&content))
}
