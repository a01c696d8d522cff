//! `wagate send USER --to N (--text T | --template NAME …)`: one message through the same
//! outbox as the rules' sends, so it gets the same checks (permissions, 24-hour window, a
//! token Graph rejected), retries and record. The command queues the row, then sends it itself
//! (a running gate may take it first: a row is claimed by one sender only) and waits up to
//! `--wait` seconds for the outcome.

use super::CliError;
use super::account::Account;
use super::interrupt::{self, Interrupt};
use crate::domain::outgoing;
use crate::domain::window::{contact_key, needs_window, within_customer_window};
use crate::sender::policy::Limits;
use crate::sender::{Sender, window_reason};
use crate::store::{NewOutbound, now_ms};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What to send.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["text", "template", "file"])))]
pub(super) struct SendArgs {
    user: String,
    /// The recipient: a phone number in international form (+33612345678) or a business-scoped
    /// user id (US.1234…).
    #[arg(long)]
    to: String,
    /// A free-form text (only inside the contact's 24-hour window).
    #[arg(long)]
    text: Option<String>,
    /// Let WhatsApp show a preview of the first link in --text.
    #[arg(long, requires = "text")]
    preview_url: bool,
    /// An approved template's name (reaches any contact, window or not).
    #[arg(long)]
    template: Option<String>,
    /// The template's language code.
    #[arg(long, default_value = "en_US", requires = "template")]
    language: String,
    /// A body parameter of the template, in order; repeat for each.
    #[arg(long = "param", requires = "template")]
    params: Vec<String>,
    /// A local file (image, video, audio, document or sticker, by its extension): uploaded to
    /// WhatsApp, then sent (free-form: inside the 24-hour window only).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// The caption of --file.
    #[arg(long, requires = "file")]
    caption: Option<String>,
    /// Seconds to wait for Graph's answer, retries included (0: queue and return; a running
    /// gate sends it).
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

pub(super) async fn run(config: &Path, a: SendArgs) -> Result<(), CliError> {
    let acct = Account::open(config, &a.user)?;
    let spec = match (&a.text, &a.template, &a.file) {
        (Some(t), None, None) if a.preview_url => json!({"text": t, "preview_url": true}),
        (Some(t), None, None) => Value::String(t.clone()),
        (None, Some(name), None) => {
            json!({"template": name, "language": a.language, "params": a.params})
        }
        (None, None, Some(f)) => {
            let full = std::fs::canonicalize(f)
                .map_err(|e| CliError::usage(format!("--file {}: {e}", f.display())))?;
            let mut m = json!({"file": full.to_string_lossy()});
            if let Some(c) = &a.caption {
                m["caption"] = c.as_str().into();
            }
            m
        }
        _ => {
            return Err(CliError::usage(
                "give one of --text T, --template NAME or --file F",
            ));
        }
    };
    let (msg_type, body) = outgoing::build(&a.to, &spec, None)
        .map_err(|e| CliError::usage(e.trim_start_matches("send: ")))?;
    if !acct.user.config.permissions.send {
        return Err(CliError::failure(format!(
            "user `{}` may not send: permissions.send is false in its users file",
            acct.id
        )));
    }
    let store = acct.store()?;
    let user = acct.id.to_string();
    if needs_window(&msg_type) {
        let last = store.last_inbound(&user, &contact_key(&a.to))?;
        if !within_customer_window(last, now_ms() / 1000) {
            return Err(CliError::failure(format!(
                "{}\nnothing was queued",
                window_reason(&a.to, last)
            )));
        }
    }
    // Caught before the row exists (and after a passphrase prompt, which Ctrl-C must end):
    // from here on a signal never leaves the row half sent.
    let mut stop = Interrupt::catch()?;
    let idem_key = format!("cli/{}-{}", now_ms(), std::process::id());
    store.enqueue(
        &user,
        &[NewOutbound {
            idem_key: idem_key.clone(),
            recipient: a.to.clone(),
            msg_type,
            body,
        }],
    )?;
    let id = store
        .outbox_id(&user, &idem_key)?
        .ok_or_else(|| CliError::failure("the queued message vanished from the outbox"))?;
    if a.wait == 0 {
        println!("queued as outbox row {id}; a running gate sends it");
        return Ok(());
    }
    let sender = Sender {
        store: store.clone(),
        graph: acct.graph.clone(),
        users: acct.users.clone(),
        wake: Arc::new(Notify::new()),
        limits: Limits::default(),
        max_in_flight: 1,
        uploads: Default::default(),
        rejected: Default::default(),
    };
    // From the upload (a file) and the message: Graph's timeout each.
    let calls = if a.file.is_some() { 2 } else { 1 };
    let limit = Duration::from_secs(acct.home.gate.file.graph.timeout_secs * calls);
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    let mut interrupted = false;
    loop {
        let (row, next_at) = store
            .outbox_row(id)?
            .ok_or_else(|| CliError::failure(format!("outbox row {id} vanished")))?;
        match row.state.as_str() {
            "sent" => {
                println!(
                    "sent to {} as {} (outbox row {id}, {} attempt(s))",
                    a.to,
                    row.wamid.unwrap_or_default(),
                    row.attempts
                );
                return Ok(());
            }
            "failed" => {
                let why = row.error.unwrap_or_default();
                let hint = if why.contains("cannot reach") || why.contains("connect") {
                    format!("\nGraph is {}", acct.graph_at)
                } else {
                    String::new()
                };
                return Err(CliError::failure(format!(
                    "failed (outbox row {id}): {why}{hint}"
                )));
            }
            "queued" if interrupted => return Err(interrupt::left_to_gate(id, &row.state)),
            "queued" if next_at <= now_ms() => {
                if let Some(row) = store.claim_outbox(id, now_ms())? {
                    let ((), signalled) = stop.in_flight(sender.send_one(row), id, limit).await?;
                    interrupted |= signalled;
                    continue;
                }
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = row
                .error
                .map(|e| format!("; last error: {}", crate::terminal::one_line(&e)))
                .unwrap_or_default();
            println!(
                "not sent yet: outbox row {id} is {} after {} attempt(s){last}; a running gate keeps trying",
                row.state, row.attempts
            );
            return Ok(());
        }
        let until_due = Duration::from_millis((next_at - now_ms()).clamp(20, 200) as u64);
        tokio::select! {
            () = tokio::time::sleep(until_due.min(left)) => {}
            // Nothing in flight: the row is queued (or a running gate's), and stays so.
            () = stop.signal() => return Err(interrupt::left_to_gate(id, &row.state)),
        }
    }
}
