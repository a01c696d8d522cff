//! `wagate rules list`: every rule with its trigger, mode and next fire time.

use super::*;

/// `rules list`: every rule (of `user`) in one table.
pub(super) fn list(config: &Path, user: Option<&str>, now: Option<&str>) -> Result<(), CliError> {
    if let Some(u) = user {
        crate::cli::args::user_arg(u)?;
    }
    let now = parse_now(now)?;
    let (home, _engine, _rules) = load(config)?;
    if let Some(u) = user
        && !home.users.keys().any(|k| k.as_str() == u)
    {
        let users: Vec<&str> = home.users.keys().map(UserId::as_str).collect();
        return Err(failure(format!(
            "no user `{u}`; the users are: {}",
            users.join(", ")
        )));
    }
    let mut rows = vec![["USER", "RULE", "TRIGGER", "MODE", "NEXT (LOCAL, UTC)"].map(String::from)];
    for p in home
        .projects
        .iter()
        .filter(|p| user.is_none_or(|u| p.user.as_str() == u))
    {
        let after = now
            .as_ref()
            .map_or_else(Utc::now, |t| at_instant(t, p.timezone));
        for r in &p.rules {
            rows.push([
                p.user.to_string(),
                format!("{}/{}", p.name, r.name),
                r.trigger.describe(),
                mode_text(r.mode),
                next_text(&r.trigger, after, p.timezone),
            ]);
        }
    }
    if rows.len() == 1 {
        println!("no rules");
    } else {
        print_table(&rows);
    }
    Ok(())
}

pub(super) fn mode_text(mode: RunMode) -> String {
    match mode {
        RunMode::Single => "single".into(),
        RunMode::Queued(n) => format!("queued (max {n})"),
        RunMode::Parallel(n) => format!("parallel (max {n})"),
    }
}

/// When a timed trigger fires next after `after`; `-` for event triggers.
pub(super) fn next_text(trigger: &Trigger, after: DateTime<Utc>, tz: Tz) -> String {
    match trigger.next_after(after, tz) {
        Some(t) => local_and_utc(t, tz),
        None if matches!(trigger, Trigger::At(_)) => "passed".into(),
        None if is_timed(trigger) => "never".into(),
        None => "-".into(),
    }
}

/// Rows in left-aligned columns two spaces apart.
pub(super) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
