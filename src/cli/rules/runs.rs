//! `wagate runs`: recent rule runs from the store, newest first.

use super::test::{
    action_line, is_condition_error, is_placed_condition_error, skip_reason, split_condition_error,
};
use super::*;

/// `wagate runs`: recent rule runs from the store, newest first, one block each.
pub(in crate::cli) fn runs(
    config: &Path,
    user: Option<&str>,
    rule: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    if let Some(u) = user {
        crate::cli::args::user_arg(u)?;
    }
    let gate = load_gate(config).map_err(CliError::failure)?;
    if !gate.db_path.is_file() {
        println!(
            "no runs yet: there is no database at {} (the gate creates it when it first serves)",
            gate.display_path(&gate.db_path).display()
        );
        return Ok(());
    }
    let store = Store::open_read_only(&gate.db_path).map_err(failure)?;
    let runs = store.runs(user, rule, limit).map_err(failure)?;
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    let zones = user_zones(config);
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let tz = zones.get(&run.user).copied().unwrap_or(Tz::UTC);
        print_run(run, tz);
    }
    Ok(())
}

/// Each user's timezone, when the home loads; runs of others are shown in UTC.
pub(super) fn user_zones(config: &Path) -> BTreeMap<String, Tz> {
    Home::load(config)
        .map(|h| {
            h.users
                .iter()
                .map(|(id, u)| (id.to_string(), u.timezone))
                .collect()
        })
        .unwrap_or_default()
}

/// One run: when (in `tz`), who, what, how it went, then its details indented.
pub(super) fn print_run(run: &RunTrace, tz: Tz) {
    let at = DateTime::from_timestamp_millis(run.started_at_ms).unwrap_or_default();
    println!(
        "{} {}  {}  {}/{}  {}  {:.1} ms",
        at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S"),
        tz.name(),
        run.user,
        run.project,
        run.rule,
        run.outcome,
        run.duration_us as f64 / 1000.0
    );
    let trigger = run.trigger.as_deref().unwrap_or("?");
    match run.event_id {
        Some(id) => println!("  trigger: {} (event {id})", one_line(trigger)),
        None => println!("  trigger: {}", one_line(trigger)),
    }
    if run.outcome == "skipped" {
        println!("  skipped: {}", one_line(&skip_reason(&run.logs)));
        return;
    }
    for l in &run.logs {
        println!("  log: {}", one_line(l));
    }
    match run.error.as_deref() {
        Some(e) if is_placed_condition_error(e) => {
            println!("  error: {}", one_line(e));
            return;
        }
        Some(e) if is_condition_error(e) => {
            let (at, msg) = split_condition_error(e);
            let at = at
                .map(|(_, c)| format!(" (column {c})"))
                .unwrap_or_default();
            println!("  error: in `if:`{at}: {}", one_line(msg));
            return;
        }
        Some(e) => {
            println!("  error: {}", one_line(e));
            return;
        }
        None => {}
    }
    let actions = run.detail.as_array().map(Vec::as_slice).unwrap_or_default();
    if actions.is_empty() {
        println!("  actions: none");
    }
    for a in actions {
        println!("  action: {}", one_line(&action_line(a, tz)));
    }
}
