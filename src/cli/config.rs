//! `wagate config history|diff|restore`: the versions of gate.yaml, users/*.yaml and each
//! project folder that went live.

use super::CliError;
use crate::config::load_gate;
use crate::history;
use crate::store::{ConfigVersion, Store};
use chrono::{SecondsFormat, TimeZone, Utc};
use std::path::Path;

#[derive(clap::Subcommand, Debug)]
pub(super) enum ConfigAction {
    /// Every version that went live, newest first: id, time (UTC), kind, name, hash.
    History {
        /// Only versions of this: gate.yaml, users/USER.yaml, or a project (USER/PROJECT…).
        name: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// A unified diff from version A to version B.
    Diff { a: i64, b: i64 },
    /// Print one version's files.
    Show { version: i64 },
    /// Write version V's files back (a running gate reloads rules at once; gate.yaml and
    /// users take effect at the next start).
    Restore { version: i64 },
}

fn when(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn version(store: &Store, id: i64) -> Result<ConfigVersion, CliError> {
    store.config_version(id)?.ok_or_else(|| {
        CliError::failure(format!(
            "error: no configuration version {id}: `wagate config history` lists them"
        ))
    })
}

pub(super) fn run(config: &Path, action: ConfigAction) -> Result<(), CliError> {
    let gate = load_gate(config).map_err(CliError::failure)?;
    if !gate.db_path.is_file() {
        println!("no configuration history yet: the gate records it when it serves");
        return Ok(());
    }
    let store = Store::open(&gate.db_path)?;
    match action {
        ConfigAction::History { name, limit } => {
            let versions = store.config_versions(name.as_deref(), limit as usize)?;
            if versions.is_empty() {
                println!("no configuration history yet");
            }
            let width = versions.iter().map(|v| v.name.len()).max().unwrap_or(0);
            for v in versions {
                println!(
                    "{:>5}  {}  {:<7}  {:<width$}  {}  ({} file(s))",
                    v.id,
                    when(v.at_ms),
                    v.kind,
                    v.name,
                    &v.hash[..12.min(v.hash.len())],
                    v.files.len()
                );
            }
        }
        ConfigAction::Diff { a, b } => {
            let (va, vb) = (version(&store, a)?, version(&store, b)?);
            let d = history::diff(&va, &vb);
            if d.is_empty() {
                println!("versions {a} and {b} are the same");
            } else {
                print!("{d}");
            }
        }
        ConfigAction::Show { version: id } => {
            let v = version(&store, id)?;
            println!(
                "# version {} of {} {} ({})",
                v.id,
                v.kind,
                v.name,
                when(v.at_ms)
            );
            for (file, text) in &v.files {
                println!("--- {file}");
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            }
        }
        ConfigAction::Restore { version: id } => {
            let (v, changed) = history::restore(&store, &gate, id)?;
            // Audited under the user it belongs to (a project `olga/…`, a user file `olga`),
            // or the gate's own log for gate.yaml.
            let owner = match v.kind.as_str() {
                history::PROJECT => v.name.split('/').next().unwrap_or(crate::store::GATE),
                history::USER => v.name.as_str(),
                _ => crate::store::GATE,
            };
            store.audit(
                owner,
                "config.restore",
                &serde_json::json!({"version": id, "kind": v.kind, "name": v.name, "files": changed}),
            )?;
            if changed.is_empty() {
                println!("{} {} is already as in version {id}", v.kind, v.name);
            }
            for c in &changed {
                println!("{c}");
            }
            if !changed.is_empty() && v.kind != history::PROJECT {
                println!("{} takes effect when the gate next starts", v.name);
            }
        }
    }
    Ok(())
}
