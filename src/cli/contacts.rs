//! `wagate contacts USER list|label|unlabel|import`: the contact book. It writes the store
//! directly; a running gate may write it at the same time (SQLite WAL, short transactions).
//! Contacts are keyed as webhooks give them (wa_id digits); labels are exact texts.

use super::CliError;
use crate::config::{Home, UserConfig};
use crate::domain::book::{contact_key_of, parse_contacts_csv, validate_label};
use crate::store::Store;
use crate::terminal::one_line;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// `wagate contacts USER …`.
#[derive(Subcommand, Debug)]
pub(super) enum ContactsAction {
    /// Every contact of USER's book: number, profile name, labels, when they last wrote.
    List {
        /// Only contacts carrying this label.
        #[arg(long)]
        label: Option<String>,
    },
    /// Give CONTACT (a phone number or wa_id) one or more labels.
    Label {
        contact: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Take one or more labels away from CONTACT.
    Unlabel {
        contact: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Add the contacts of a CSV file (header with `phone` or `wa_id`, optional `name`). A bad
    /// line is reported as FILE:LINE and nothing is imported.
    Import {
        file: PathBuf,
        /// Give every imported contact this label (e.g. the tour's code).
        #[arg(long)]
        label: Option<String>,
    },
}

/// The home, the user's settings and the store, for commands about one user. Only the user's
/// own file must be valid (a broken rule elsewhere does not stop these commands).
pub(super) fn open_user(config: &Path, user: &str) -> Result<(Home, UserConfig, Store), CliError> {
    let id = super::args::user_arg(user)?;
    let (home, errors) = Home::load_partial(config).map_err(CliError::failure)?;
    let Some(cfg) = home.users.get(&id).cloned() else {
        let own: Vec<String> = errors
            .iter()
            .filter(|d| d.file.file_stem().is_some_and(|s| s == id.as_str()))
            .map(ToString::to_string)
            .collect();
        return Err(CliError::failure(if own.is_empty() {
            format!(
                "no user `{id}` in {}",
                home.gate.display_path(&home.gate.users_dir).display()
            )
        } else {
            own.join("\n\n")
        }));
    };
    let store = Store::open(&home.gate.db_path).map_err(CliError::failure)?;
    Ok((home, cfg, store))
}

fn labels_of(raw: &[String]) -> Result<Vec<String>, CliError> {
    raw.iter()
        .map(|l| validate_label(l).map_err(|e| CliError::usage(format!("error: {e}"))))
        .collect()
}

/// Runs a `contacts` subcommand.
pub(super) fn run(config: &Path, user: &str, action: ContactsAction) -> Result<(), CliError> {
    let (_home, cfg, store) = open_user(config, user)?;
    let user = cfg.id.as_str();
    match action {
        ContactsAction::List { label } => {
            let label = label
                .as_deref()
                .map(validate_label)
                .transpose()
                .map_err(|e| CliError::usage(format!("error: {e}")))?;
            let book = store.contact_book(user, label.as_deref())?;
            let now = chrono::Utc::now().timestamp();
            // Profile names and numbers come from contacts: shown escaped.
            let shown = |c: &crate::store::ContactEntry| {
                (
                    one_line(&c.contact).into_owned(),
                    one_line(c.name.as_deref().unwrap_or("-")).into_owned(),
                )
            };
            let width = book.iter().map(|c| shown(c).0.len()).max().unwrap_or(0) + 1;
            let name_width = book
                .iter()
                .map(|c| shown(c).1.chars().count())
                .max()
                .unwrap_or(0);
            for c in &book {
                let wrote = match c.last_inbound_at {
                    Some(t) => format!(
                        "last wrote {} ago",
                        crate::scheduler::humanize(std::time::Duration::from_secs(
                            (now - t).max(0) as u64
                        ))
                    ),
                    None => "never wrote".into(),
                };
                let labels = if c.labels.is_empty() {
                    "-".to_string()
                } else {
                    one_line(&c.labels.join(", ")).into_owned()
                };
                let (contact, name) = shown(c);
                println!(
                    "{:<width$}  {name:<name_width$}  [{labels}]  {wrote}",
                    format!("+{contact}"),
                );
            }
            let what = match &label {
                Some(l) => format!(" labelled {l}"),
                None => String::new(),
            };
            println!("{} contact(s){what}", book.len());
            Ok(())
        }
        ContactsAction::Label { contact, labels } => set(&store, user, &contact, &labels, true),
        ContactsAction::Unlabel { contact, labels } => set(&store, user, &contact, &labels, false),
        ContactsAction::Import { file, label } => {
            let label = label
                .as_deref()
                .map(validate_label)
                .transpose()
                .map_err(|e| CliError::usage(format!("error: {e}")))?;
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::failure(format!("cannot read {shown}: {e}")))?;
            let rows = parse_contacts_csv(&shown, &text)
                .map_err(|e| CliError::failure(format!("error: {e}\nnothing was imported")))?;
            let rows: Vec<(String, Option<String>)> =
                rows.into_iter().map(|r| (r.contact, r.name)).collect();
            let out = store.import_contacts(user, &rows, label.as_deref())?;
            let labelled = match &label {
                Some(l) => format!(", {} newly labelled {l}", out.labelled),
                None => String::new(),
            };
            println!(
                "imported {} contact(s) from {shown} for `{user}`: {} new, {} already known{labelled}",
                rows.len(),
                out.added,
                out.known
            );
            Ok(())
        }
    }
}

fn set(
    store: &Store,
    user: &str,
    contact: &str,
    labels: &[String],
    add: bool,
) -> Result<(), CliError> {
    let key = contact_key_of(contact).map_err(|e| CliError::usage(format!("error: {e}")))?;
    let labels = labels_of(labels)?;
    let n = store.set_labels(user, std::slice::from_ref(&key), &labels, add)?;
    let (verb, prep) = if add {
        ("labelled", "as")
    } else {
        ("unlabelled", "from")
    };
    println!("{verb} +{key} {prep} {} ({n} change(s))", labels.join(", "));
    Ok(())
}
