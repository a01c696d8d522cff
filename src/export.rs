//! Substance Export: one user's account, messages in and out with their final statuses,
//! contacts and media records, in the format of DESIGN.md (the seed note's, extended
//! compatibly: fields are only ever added). The JSON is written row by row from a store cursor,
//! one `serde_json` serialisation per row, so memory stays flat however many messages there
//! are. The CLI (`wagate export`) and scripts (`export(opts)`) both come here; a benchmark can
//! call [`write_export`] with any `Write` sink.
//!
//! Extensions to the seed format: top-level `export` (mode and filters) and `counts`; per
//! message `local_id` (outbound), `contact`, `status_at`, `error` and `raw` (the message
//! object as Meta sent it, or the request we sent: fields the typed model does not know yet
//! survive); per contact `id`, `name`, `last_inbound_at`, `updated_at`; per media record `id`,
//! `message_id`, `mime_type`, `sha256`, `path`, `size`, `state`, `error`, `created_at`.

use crate::config::UserConfig;
use crate::store::{
    ExportContactRow, ExportFilter, ExportMark, ExportMediaRow, ExportMessageRow, ExportReadError,
    Store, StoreError,
};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The business account an export describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub business_account_id: Option<String>,
    pub phone_number_id: String,
    pub name: Option<String>,
    /// The business number in digits, if the user's yaml names it.
    pub display_phone_number: Option<String>,
}

impl Account {
    /// The account of a user as configured.
    pub fn of(user: &UserConfig) -> Account {
        Account {
            user: user.id.to_string(),
            business_account_id: user.business_account_id.clone(),
            phone_number_id: user.phone_number_id.clone(),
            name: user.display_name.clone(),
            display_phone_number: user.display_phone_number.clone(),
        }
    }
}

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Messages at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Messages before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this contact (a phone number in any notation, or a business-scoped user id).
    pub contact: Option<String>,
    /// Only what is new or changed since the last incremental export (of the same contact
    /// filter); the watermark moves when the export is complete.
    pub incremental: bool,
}

/// What the audit log keeps of an export: who asked, the filters, the counts, where it went.
pub fn audit_details(
    opts: &ExportOptions,
    counts: &ExportCounts,
    to: &str,
    by: &str,
) -> serde_json::Value {
    serde_json::json!({
        "by": by,
        "to": to,
        "since": opts.since.map(|t| t.to_rfc3339()),
        "until": opts.until.map(|t| t.to_rfc3339()),
        "contact": opts.contact,
        "incremental": opts.incremental,
        "messages": counts.messages,
        "contacts": counts.contacts,
        "media": counts.media,
    })
}

/// How many records an export holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    pub messages: u64,
    pub contacts: u64,
    pub media: u64,
}

/// An export written to a sink; `mark` is where an incremental export leaves the watermark
/// once the caller has the output safe.
#[derive(Clone, Debug)]
pub struct ExportDone {
    pub counts: ExportCounts,
    pub mark: Option<ExportMark>,
}

/// Export failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export: {0}")]
    Store(#[from] StoreError),
    #[error("export: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("export: {0}")]
    Sink(std::io::Error),
    #[error("export: {0}")]
    Invalid(String),
}

impl From<ExportReadError> for ExportError {
    fn from(e: ExportReadError) -> Self {
        match e {
            ExportReadError::Store(s) => ExportError::Store(s),
            ExportReadError::Sink(io) => ExportError::Sink(io),
        }
    }
}

/// Told how far an export is: (messages written, messages in all).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn rfc3339_s(secs: i64) -> Option<String> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn json_or_text(s: &Option<String>) -> Option<Value> {
    s.as_ref()
        .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())))
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_id: Option<&'a str>,
    from: &'a str,
    to: &'a str,
    text: &'a str,
    timestamp: Option<String>,
    status: &'a str,
    direction: &'a str,
    #[serde(rename = "type")]
    msg_type: &'a str,
    contact: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<Value>,
}

#[derive(Serialize)]
struct ContactOut<'a> {
    id: &'a str,
    name: Option<&'a str>,
    last_inbound_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Serialize)]
struct MediaOut<'a> {
    id: &'a str,
    message_id: Option<&'a str>,
    mime_type: Option<&'a str>,
    sha256: Option<&'a str>,
    /// Relative to the data folder, e.g. `media/olga/123.jpg`.
    path: Option<String>,
    size: Option<i64>,
    state: &'a str,
    error: Option<&'a str>,
    created_at: Option<String>,
}

fn message_out<'a>(m: &'a ExportMessageRow, business: &'a str) -> MessageOut<'a> {
    let (from, to) = if m.direction == "in" {
        (m.contact.as_str(), business)
    } else {
        (business, m.contact.as_str())
    };
    MessageOut {
        id: m.wamid.as_deref(),
        local_id: m.local_id.as_deref().filter(|_| m.direction == "out"),
        from,
        to,
        text: &m.text,
        timestamp: rfc3339_s(m.timestamp),
        status: &m.status,
        direction: &m.direction,
        msg_type: &m.msg_type,
        contact: &m.contact,
        status_at: m.status_at.and_then(rfc3339_s),
        error: json_or_text(&m.error),
        raw: json_or_text(&m.raw),
    }
}

fn contact_out(c: &ExportContactRow) -> ContactOut<'_> {
    ContactOut {
        id: &c.contact,
        name: c.name.as_deref(),
        last_inbound_at: c.last_inbound_at.and_then(rfc3339_s),
        updated_at: rfc3339_ms(c.updated_at),
    }
}

fn media_out(d: &ExportMediaRow) -> MediaOut<'_> {
    MediaOut {
        id: &d.media_id,
        message_id: d.wamid.as_deref(),
        mime_type: d.mime_type.as_deref(),
        sha256: d.sha256.as_deref(),
        path: d.path.as_ref().map(|p| format!("media/{p}")),
        size: d.size,
        state: &d.state,
        error: d.error.as_deref(),
        created_at: rfc3339_ms(d.created_at),
    }
}

/// The store filter for `opts` (contact normalised to the store's key).
pub fn filter(user: &str, opts: &ExportOptions) -> Result<ExportFilter, ExportError> {
    if opts.incremental && opts.until.is_some() {
        return Err(ExportError::Invalid(
            "an incremental export takes everything new: it cannot have `until`".into(),
        ));
    }
    if let (Some(s), Some(u)) = (opts.since, opts.until)
        && s >= u
    {
        return Err(ExportError::Invalid(format!(
            "`since` ({s}) must be before `until` ({u})"
        )));
    }
    let contact = match opts.contact.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => Some(crate::domain::window::contact_key(c)).filter(|k| !k.is_empty()),
    };
    if opts
        .contact
        .as_deref()
        .is_some_and(|c| !c.trim().is_empty())
        && contact.is_none()
    {
        return Err(ExportError::Invalid(
            "`contact` must be a phone number or a business-scoped user id".into(),
        ));
    }
    Ok(ExportFilter {
        user: user.to_string(),
        since: opts.since.map(|t| t.timestamp()),
        until: opts.until.map(|t| t.timestamp()),
        contact,
        incremental: opts.incremental,
    })
}

/// Writes the export of `account`'s data to `out`, streamed. Does not move the watermark:
/// the caller does that with `ExportDone::mark` once the output is safe ([`export_to_file`]).
pub fn write_export<W: Write>(
    store: &Store,
    account: &Account,
    opts: &ExportOptions,
    out: W,
    progress: Option<Progress<'_>>,
) -> Result<ExportDone, ExportError> {
    let filter = filter(&account.user, opts)?;
    let snap = store.export_snapshot(&filter)?;
    let total = match progress {
        Some(_) => snap.count_messages()?,
        None => 0,
    };
    let mut progress = progress;
    if let Some(p) = progress.as_mut() {
        p(0, total);
    }
    let business = account
        .display_phone_number
        .clone()
        .or_else(|| snap.seen_display_phone.clone())
        .unwrap_or_else(|| account.phone_number_id.clone());
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let io = ExportError::Sink;
    let head = serde_json::json!({
        "provider": "whatsapp_business",
        "user": account.user,
        "timestamp": rfc3339_ms(snap.to.at_ms),
        "export": {
            "mode": if filter.incremental { "incremental" } else { "full" },
            "since": opts.since.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "until": opts.until.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "contact": filter.contact,
        },
    });
    let account_json = serde_json::json!({
        "business_account_id": account.business_account_id,
        "phone_number_id": account.phone_number_id,
        "name": account.name,
        "display_phone_number": business,
    });
    // The head object without its closing brace, then "data" streamed after it.
    let head = serde_json::to_string(&head).map_err(|e| io(e.into()))?;
    w.write_all(&head.as_bytes()[..head.len() - 1])
        .map_err(io)?;
    write!(w, ",\"data\":{{\"account\":{account_json},\"messages\":[").map_err(io)?;
    let mut counts = ExportCounts::default();
    let mut first = true;
    let mut done = 0u64;
    counts.messages = snap.for_each_message(&mut |m| {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut w, &message_out(m, &business))?;
        done += 1;
        if let Some(p) = progress.as_mut()
            && (done.is_multiple_of(1024) || done == total)
        {
            p(done, total);
        }
        Ok(())
    })?;
    let close = |empty: bool| if empty { "]" } else { "\n]" };
    write!(w, "{},\"contacts\":[", close(first)).map_err(io)?;
    first = true;
    counts.contacts = snap.for_each_contact(&mut |c| {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut w, &contact_out(c))?;
        Ok(())
    })?;
    write!(w, "{},\"media\":[", close(first)).map_err(io)?;
    first = true;
    counts.media = snap.for_each_media(&mut |d| {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut w, &media_out(d))?;
        Ok(())
    })?;
    let counts_json = serde_json::to_string(&counts).map_err(|e| io(e.into()))?;
    writeln!(w, "{}}},\"counts\":{counts_json}}}", close(first)).map_err(io)?;
    w.flush().map_err(io)?;
    if let Some(p) = progress.as_mut() {
        p(counts.messages, total.max(counts.messages));
    }
    Ok(ExportDone {
        counts,
        mark: filter.incremental.then_some(snap.to.clone()),
    })
}

/// A file export's result, as `wagate export` prints it and `export(opts)` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub counts: ExportCounts,
    /// Whether a file already at `path` was replaced.
    pub replaced: bool,
}

/// Where exports go by default: `exports/<user>/` beside the database (`data/exports/<user>/`).
pub fn exports_dir(db_path: &Path, user: &str) -> PathBuf {
    db_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("exports")
        .join(user)
}

/// A new export file's name: `<user>-<UTC time>[-incremental].json`.
pub fn default_file(dir: &Path, user: &str, now: DateTime<Utc>, incremental: bool) -> PathBuf {
    let kind = if incremental { "-incremental" } else { "" };
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    dir.join(format!("{user}-{stamp}{kind}.json"))
}

/// Writes the export to `path` through a temporary file and a rename (a reader never sees half
/// an export), then moves the watermark of an incremental export.
pub fn export_to_file(
    store: &Store,
    account: &Account,
    opts: &ExportOptions,
    path: &Path,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary, ExportError> {
    let err = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    // An export holds every message: its owner alone reads it. Written under a name of its
    // own, it replaces a file at `path` only once complete.
    let (file, pending) = crate::private_file::create_beside(path).map_err(err)?;
    let done = match write_export(store, account, opts, &file, progress) {
        Ok(d) => d,
        Err(ExportError::Sink(source)) => return Err(err(source)),
        Err(e) => return Err(e),
    };
    let replaced = pending.commit(file).map_err(err)?;
    if let Some(mark) = &done.mark {
        let f = filter(&account.user, opts)?;
        store.set_export_mark(&f, mark, &path.to_string_lossy())?;
    }
    Ok(ExportSummary {
        path: path.to_path_buf(),
        counts: done.counts,
        replaced,
    })
}
