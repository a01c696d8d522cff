//! `wagate export USER`: Substance Export of one user's data to a file (default
//! `data/exports/<user>/`) or to standard output, with a progress bar on a terminal.

use super::CliError;
use crate::config::{Home, UserConfig};
use crate::export::{self, Account, ExportOptions};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// What `wagate export` was asked.
#[derive(clap::Args, Debug)]
pub(super) struct ExportArgs {
    user: String,
    /// Messages from this time: RFC 3339, a local date or time in the user's timezone
    /// (2026-05-01, 2026-05-01T08:00), or an age (90s, 30m, 2h, 3d).
    #[arg(long)]
    since: Option<String>,
    /// Messages before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only the messages with this contact (phone number).
    #[arg(long)]
    contact: Option<String>,
    /// Only what is new or changed since the last incremental export.
    #[arg(long, conflicts_with = "until")]
    incremental: bool,
    /// Write here (`-` for standard output); default data/exports/USER/USER-<time>.json.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `--since`/`--until`: the forms `audit --since` takes, local ones in the user's timezone.
fn time_arg(
    flag: &str,
    text: Option<&str>,
    user: &UserConfig,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CliError> {
    text.map(|t| super::args::time_arg(flag, t, user.timezone, now))
        .transpose()
}

/// Loads the home and finds USER in it.
pub(super) fn user_of(config: &Path, user: &str) -> Result<(Home, UserConfig), CliError> {
    let id = super::args::user_arg(user)?;
    let (home, _errors) = Home::load_partial(config).map_err(CliError::failure)?;
    let u = home.users.get(&id).cloned().ok_or_else(|| {
        CliError::failure(format!(
            "error: no user `{id}` in {}",
            home.gate.display_path(&home.gate.users_dir).display()
        ))
    })?;
    Ok((home, u))
}

pub(super) fn run(config: &Path, args: ExportArgs) -> Result<(), CliError> {
    let (home, user) = user_of(config, &args.user)?;
    if !user.permissions.export {
        return Err(CliError::failure(format!(
            "error: user `{}` may not export (permissions.export is false in users/{}.yaml)",
            user.id, user.id
        )));
    }
    let now = Utc::now();
    let opts = ExportOptions {
        since: time_arg("since", args.since.as_deref(), &user, now)?,
        until: time_arg("until", args.until.as_deref(), &user, now)?,
        contact: args.contact.clone(),
        incremental: args.incremental,
    };
    export::filter(user.id.as_str(), &opts).map_err(|e| CliError::usage(format!("error: {e}")))?;
    let store = Store::open(&home.gate.db_path).map_err(CliError::failure)?;
    let account = Account::of(&user);
    if args.out.as_deref() == Some(Path::new("-")) {
        let stdout = std::io::stdout().lock();
        let done = export::write_export(&store, &account, &opts, stdout, None)?;
        if let Some(mark) = &done.mark {
            let f = export::filter(user.id.as_str(), &opts)?;
            store.set_export_mark(&f, mark, "-")?;
        }
        store.audit(
            user.id.as_str(),
            "export",
            &export::audit_details(&opts, &done.counts, "-", "cli"),
        )?;
        eprintln!(
            "exported {} message(s), {} contact(s), {} media record(s) of `{}`",
            done.counts.messages, done.counts.contacts, done.counts.media, user.id
        );
        return Ok(());
    }
    let path = args.out.clone().unwrap_or_else(|| {
        export::default_file(
            &export::exports_dir(&home.gate.db_path, user.id.as_str()),
            user.id.as_str(),
            Utc::now(),
            opts.incremental,
        )
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} messages ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("exporting {}", user.id));
        bar
    });
    let mut tell = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let progress: Option<export::Progress<'_>> = if bar.is_some() { Some(&mut tell) } else { None };
    let existed = std::fs::symlink_metadata(&path).is_ok();
    let summary = export::export_to_file(&store, &account, &opts, &path, progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = summary.map_err(|e| {
        CliError::failure(if existed {
            format!("{e}; the file that was there is left as it was")
        } else {
            e.to_string()
        })
    })?;
    if summary.replaced {
        eprintln!(
            "replaced the file that was at {}",
            home.gate.display_path(&summary.path).display()
        );
    }
    store.audit(
        user.id.as_str(),
        "export",
        &export::audit_details(
            &opts,
            &summary.counts,
            &home.gate.display_path(&summary.path).to_string_lossy(),
            "cli",
        ),
    )?;
    println!(
        "exported {} message(s), {} contact(s), {} media record(s) of `{}` to {}",
        summary.counts.messages,
        summary.counts.contacts,
        summary.counts.media,
        user.id,
        home.gate.display_path(&summary.path).display()
    );
    Ok(())
}
