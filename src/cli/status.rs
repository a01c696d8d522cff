//! `wagate status`: the status page, as text, for the terminal; and what `wagate serve`
//! prints when it starts (where it listens, users, rules, the next timed firings).
//! Reads the store read-only, so it works beside a running gate, and never prints a secret.

use super::CliError;
use crate::config::{Diagnostics, Home};
use crate::status::{
    Report, RuleInfo, TokenHealth, call_due_text, duration_text, expiry_text, health_text, local,
    next_text, utc_ms,
};
use crate::store::Store;
use crate::terminal::{block, one_line};
use crate::users::Users;
use crate::vault::Vault;
use chrono::Utc;
use std::path::Path;

/// The rules of a home's files.
fn rules_of_home(home: &Home) -> Vec<RuleInfo> {
    home.projects
        .iter()
        .flat_map(|p| {
            p.rules.iter().map(|r| RuleInfo {
                user: p.user.to_string(),
                project: p.name.clone(),
                rule: r.name.clone(),
                trigger: r.trigger.clone(),
                timezone: p.timezone,
            })
        })
        .collect()
}

/// `wagate status`.
pub(super) fn run(config: &Path) -> Result<(), CliError> {
    let (home, errors) = Home::load_partial(config).map_err(CliError::failure)?;
    let (by_user, by_project) = home
        .errors_by_user_or_project(errors)
        .map_err(CliError::failure)?;
    let mut skipped: Vec<(String, String)> = by_user
        .into_iter()
        .chain(by_project)
        .map(|(u, d)| (u, first_line(&Diagnostics(d).to_string())))
        .collect();
    let users = match Vault::open_from_env(&home.gate.identity_file) {
        Ok(vault) => {
            let (users, failed) = Users::load(&home, &vault);
            skipped.extend(failed.into_iter().map(|(u, e)| (u, e.to_string())));
            users
        }
        Err(e) => {
            eprintln!("warning: {e}; token expiry is not shown");
            Users::default()
        }
    };
    let served: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
    skipped.retain(|(u, _)| !served.contains(u));
    if !home.gate.db_path.exists() {
        return Err(CliError::failure(format!(
            "no database at {} yet: start the gate once with `wagate serve`",
            home.gate.display_path(&home.gate.db_path).display()
        )));
    }
    let store = Store::open_read_only(&home.gate.db_path)?;
    let report =
        crate::status::gather(&store, &users, &skipped, &rules_of_home(&home), Utc::now())?;
    print!("{}", text(&report));
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The report as plain text, section by section.
pub fn text(r: &Report) -> String {
    let mut o = format!(
        "wagate status as of {}\n",
        r.now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    o.push_str(&format!("\nUSERS ({})\n", r.users.len()));
    for u in &r.users {
        let expiry = match u.token {
            TokenHealth::NotServed(_) => String::new(),
            _ => format!("; {}", expiry_text(u, r.now)),
        };
        o.push_str(&format!(
            "  {}  token {}{expiry}\n",
            u.name,
            health_text(&u.token)
        ));
    }
    o.push_str(&format!("\nRULES ({})\n", r.rules.len()));
    for x in &r.rules {
        o.push_str(&format!(
            "  {}/{}  {}  next: {}\n",
            x.project,
            x.rule,
            x.trigger,
            next_text(x, r.now)
        ));
    }
    let (calls, total) = &r.calls;
    let shown = if calls.len() as i64 == *total {
        total.to_string()
    } else {
        format!("next {} of {total}", calls.len())
    };
    o.push_str(&format!("\nPENDING SCHEDULE() CALLS ({shown})\n"));
    for c in calls {
        o.push_str(&format!(
            "  {}  {}  {}/{}: {}\n",
            call_due_text(r, c),
            c.user,
            c.project,
            c.rule,
            c.call
        ));
    }
    o.push_str(&format!("\nLAST RUNS ({})\n", r.runs.len()));
    for x in &r.runs {
        let why = x
            .error
            .as_deref()
            .or(x.note.as_deref().filter(|_| x.outcome != "ok"))
            .map(|e| format!("\n      {}", block(e).replace('\n', "\n      ")))
            .unwrap_or_default();
        o.push_str(&format!(
            "  {}  {:<7} {}/{}  {} · {}{why}\n",
            utc_ms(x.started_at_ms),
            x.outcome,
            x.project,
            x.rule,
            x.trigger.as_deref().unwrap_or(""),
            duration_text(x.duration_us)
        ));
    }
    let count = |state: &str| -> i64 {
        r.outbox
            .iter()
            .filter(|(_, s, _)| s == state)
            .map(|(_, _, n)| n)
            .sum()
    };
    o.push_str(&format!(
        "\nOUTBOX  queued {}  sending {}  sent {}  failed {}  (events waiting: {})\n",
        count("queued"),
        count("sending"),
        count("sent"),
        count("failed"),
        r.pending.0
    ));
    o.push_str(&format!("\nLATEST FAILURES ({})\n", r.failures.len()));
    for f in &r.failures {
        o.push_str(&format!(
            "  {}  {} to {} ({}): {}\n",
            utc_ms(f.updated_at_ms),
            f.user,
            one_line(&crate::domain::phone::shown(&f.recipient)),
            f.msg_type,
            one_line(&f.error)
        ));
    }
    o.push_str(&format!("\nRECENT WEBHOOKS ({})\n", r.events.len()));
    for e in &r.events {
        let who = match (&e.name, &e.contact) {
            (Some(n), Some(c)) => format!("{} (+{})", one_line(n), one_line(c)),
            (None, Some(c)) => format!("+{}", one_line(c)),
            _ => "-".into(),
        };
        o.push_str(&format!(
            "  {}  {} {} {} [{}] {}\n",
            utc_ms(e.created_at_ms),
            e.user,
            e.kind,
            who,
            e.state,
            one_line(&e.summary)
        ));
    }
    o
}

/// What `wagate serve` prints once it listens.
pub(super) fn banner(
    addr: std::net::SocketAddr,
    users: &Users,
    rules: &[RuleInfo],
    skipped: &[(String, String)],
    simulated: bool,
) -> String {
    let mut o = format!("wagate listening on http://{addr}\n");
    let names: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
    o.push_str(&format!(
        "users: {}\n",
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    ));
    for (u, _) in skipped {
        o.push_str(&format!("skipped user: {u} (see the warning above)\n"));
    }
    o.push_str(&format!("rules: {}\n", rules.len()));
    for r in rules {
        o.push_str(&format!(
            "  {}/{} ({})\n",
            r.project,
            r.rule,
            r.trigger.describe()
        ));
    }
    let now = Utc::now();
    let mut next: Vec<(chrono::DateTime<Utc>, String)> = rules
        .iter()
        .filter_map(|r| {
            r.trigger.next_after(now, r.timezone).map(|t| {
                (
                    t,
                    format!("{}  {}/{}", local(t, r.timezone), r.project, r.rule),
                )
            })
        })
        .collect();
    next.sort();
    if !next.is_empty() {
        o.push_str("next timed firings:\n");
        for (_, line) in next.iter().take(10) {
            o.push_str(&format!("  {line}\n"));
        }
    }
    if simulated {
        o.push_str(&format!(
            "graph: built-in Cloud API simulator at http://{addr}/simulator\n"
        ));
    }
    o.push_str(&format!(
        "status page: http://{addr}/status   metrics: http://{addr}/metrics\n"
    ));
    o
}
