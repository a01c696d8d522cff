//! `wagate backup [--out F]`, `wagate backup verify F` and `wagate restore F [--force]`.

use super::CliError;
use crate::backup;
use crate::config::load_gate;
use crate::store::Store;
use crate::vault::{PASSPHRASE_ENV, Vault};
use chrono::Utc;
use std::path::{Path, PathBuf};

/// What `wagate backup` was asked.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct BackupArgs {
    #[command(subcommand)]
    action: Option<BackupAction>,
    /// Write the archive here (default data/backups/wagate-<time>.tar.age).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum BackupAction {
    /// Decrypt an archive and check every file against its manifest.
    Verify { file: PathBuf },
}

/// What `wagate restore` was asked.
#[derive(clap::Args, Debug)]
pub(super) struct RestoreArgs {
    /// The archive (from `wagate backup`).
    file: PathBuf,
    /// Overwrite a home that is not empty (its database, users, rules and credentials, where
    /// its own gate.yaml puts them, are replaced by the archive's).
    #[arg(long)]
    force: bool,
    /// The age identity that decrypts the archive (default: identity.txt in the home named by
    /// --config; WAGATE_PASSPHRASE for passphrase mode).
    #[arg(long)]
    identity: Option<PathBuf>,
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

pub(super) fn backup(config: &Path, args: BackupArgs) -> Result<(), CliError> {
    let gate = load_gate(config).map_err(CliError::failure)?;
    let vault = Vault::open_from_env(&gate.identity_file)?;
    if let Some(BackupAction::Verify { file }) = args.action {
        let m = backup::verify(&vault, &file)?;
        let bytes: u64 = m.files.iter().map(|f| f.size).sum();
        println!(
            "ok: {} holds {} file(s), {} (format {}, made {} by wagate {})",
            file.display(),
            m.files.len(),
            kib(bytes),
            m.format,
            m.created_at,
            m.wagate_version
        );
        return Ok(());
    }
    if !gate.db_path.is_file() {
        return Err(CliError::failure(format!(
            "error: no database at {}: nothing to back up yet",
            gate.display_path(&gate.db_path).display()
        )));
    }
    let store = Store::open(&gate.db_path)?;
    let out = args
        .out
        .unwrap_or_else(|| backup::default_file(&backup::default_dir(&gate), Utc::now()));
    let existed = std::fs::symlink_metadata(&out).is_ok();
    let done = backup::create(&gate, &store, &vault, &out).map_err(|e| {
        CliError::failure(if existed {
            format!("{e}; the file that was there is left as it was")
        } else {
            e.to_string()
        })
    })?;
    if done.replaced {
        eprintln!(
            "replaced the file that was at {}",
            gate.display_path(&done.path).display()
        );
    }
    backup::audit_backup(&store, &gate, &done, "cli");
    println!(
        "backup written to {}: {} file(s), {} encrypted",
        gate.display_path(&done.path).display(),
        done.files,
        kib(done.bytes)
    );
    Ok(())
}

pub(super) fn restore(config: &Path, args: RestoreArgs) -> Result<(), CliError> {
    let home = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| home.join("identity.txt"));
    let passphrase = std::env::var(PASSPHRASE_ENV).ok();
    let vault = Vault::open(&identity, passphrase)?;
    let done = backup::restore(&vault, &args.file, config, args.force)?;
    // Audited in the restored home's own log.
    if let Ok(gate) = load_gate(config)
        && let Ok(store) = Store::open(&gate.db_path)
    {
        let details = serde_json::json!({"from": args.file.display().to_string(),
                                         "files": done.files, "force": args.force});
        if let Err(e) = store.audit(crate::store::GATE, "restore", &details) {
            eprintln!("warning: restored, but the restore cannot be audited: {e}");
        }
    }
    println!(
        "restored {} file(s) from {} into {}; run `wagate check`, then `wagate serve`",
        done.files,
        args.file.display(),
        done.home.display()
    );
    if let Some(kept) = &done.kept_gate_yaml {
        println!(
            "note: kept this home's gate.yaml, which decided where the files went: the archive's \
             names other places ({}); it is in {}",
            kept.differences.join("; "),
            kept.archived_to.display()
        );
    }
    // A backup never holds the vault identity: the restored credentials need it beside them.
    if let Ok(gate) = load_gate(config)
        && std::env::var(PASSPHRASE_ENV).is_err()
        && !gate.identity_file.exists()
    {
        println!(
            "note: the credentials are encrypted to your vault identity: copy it to {}",
            gate.identity_file.display()
        );
    }
    Ok(())
}
