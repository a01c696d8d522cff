//! `wagate token refresh USER` and `wagate audit [USER] [--since T] [--verify]`.

use super::CliError;
use super::account::Account;
use crate::config::Home;
use crate::store::Store;
use crate::tokens::{TokenKeeper, TokenOutcome};
use std::path::Path;
use std::sync::Arc;

pub(super) async fn token_refresh(config: &Path, user: &str) -> Result<(), CliError> {
    let acct = Account::open(config, user)?;
    let store = acct.store()?;
    let keeper = TokenKeeper::new(
        store,
        acct.graph.clone(),
        acct.users.clone(),
        Arc::new(acct.vault()?),
        acct.home.gate.home.join("credentials"),
    );
    let id = &acct.id;
    match keeper.check(&acct.user, true).await {
        Ok(TokenOutcome::Renewed {
            old_expiry,
            expires_at,
        }) => {
            let until = expires_at
                .map(|t| format!("until {}", t.to_rfc3339()))
                .unwrap_or_else(|| "(Graph gave no lifetime)".into());
            println!(
                "renewed `{id}`'s access token (the old one ran until {}); the new one is valid {until}, stored encrypted in {}; a running gate takes it within a minute",
                old_expiry.to_rfc3339(),
                acct.home
                    .gate
                    .display_path(&acct.home.gate.credentials_path(id))
                    .display()
            );
            Ok(())
        }
        Ok(TokenOutcome::NeverExpires) => {
            println!(
                "`{id}`'s access token never expires (a system user's token): nothing to renew"
            );
            Ok(())
        }
        Ok(TokenOutcome::Valid { expires_at }) => {
            println!(
                "`{id}`'s access token is valid until {}",
                expires_at.to_rfc3339()
            );
            Ok(())
        }
        Ok(TokenOutcome::NoAppId) => Err(CliError::failure(format!(
            "`{id}`'s credentials have no app_id, which Graph needs to check and renew a token; add it with `wagate creds set {id}`"
        ))),
        Ok(TokenOutcome::Invalid(why)) => Err(CliError::failure(format!(
            "`{id}`'s access token cannot be renewed: {why}; get a new one in Meta's dashboard and store it with `wagate creds set {id}`"
        ))),
        Err(e) => Err(CliError::failure(format!(
            "cannot renew `{id}`'s token: {e}; Graph is {}",
            acct.graph_at
        ))),
    }
}

pub(super) fn audit(
    config: &Path,
    user: Option<&str>,
    since: Option<&str>,
    verify: bool,
    limit: usize,
) -> Result<(), CliError> {
    if let Some(u) = user
        && u != crate::store::GATE
    {
        super::args::user_arg(u)?;
    }
    let since_ms = since
        .map(|s| {
            super::args::time_arg("since", s, chrono_tz::Tz::UTC, chrono::Utc::now())
                .map(|t| t.timestamp_millis())
        })
        .transpose()?;
    let home = Home::load(config).map_err(CliError::failure)?;
    if let Some(u) = user
        && u != crate::store::GATE
        && !home.users.keys().any(|k| k.as_str() == u)
    {
        return Err(CliError::failure(format!("no user `{u}`")));
    }
    if !home.gate.db_path.exists() {
        return Err(CliError::failure(format!(
            "no database at {} yet: nothing is audited before the gate first runs",
            home.gate.display_path(&home.gate.db_path).display()
        )));
    }
    let store = Store::open_read_only(&home.gate.db_path)?;
    if verify {
        let reports = store.audit_verify(user)?;
        let mut bad = 0;
        for r in &reports {
            if r.problems.is_empty() {
                println!(
                    "{}: {} entries, chain intact, head {}",
                    r.user,
                    r.entries,
                    &r.head[..16]
                );
            } else {
                bad += r.problems.len();
                for p in &r.problems {
                    println!("{}: TAMPERED: {p}", r.user);
                }
            }
        }
        if reports.is_empty() {
            println!("no audit entries");
        }
        return if bad == 0 {
            Ok(())
        } else {
            Err(CliError::failure(format!(
                "the audit log was altered: {bad} problem(s)"
            )))
        };
    }
    // One more than shown tells whether older entries were left out.
    let mut entries = store.audit_entries(user, since_ms, limit.saturating_add(1))?;
    let more = entries.len() > limit;
    if more {
        entries.remove(0);
    }
    for e in entries {
        let t = chrono::DateTime::from_timestamp_millis(e.at)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        // JSON escapes C0 controls, not DEL or the C1 ones (U+009B opens an ESC sequence too).
        let details = e.details.to_string();
        println!(
            "{t} {} #{} {} {}",
            e.user,
            e.seq,
            e.action,
            crate::terminal::one_line(&details)
        );
    }
    if more {
        eprintln!(
            "(the newest {limit} entries; older ones are kept: see them with --limit or --since)"
        );
    }
    Ok(())
}
