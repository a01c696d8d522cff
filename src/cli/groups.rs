//! `wagate groups USER list|create|show|invite-link|remove|delete|send`: the Cloud API Groups
//! API with USER's credentials, and the groups the store keeps from group_* webhooks. A group
//! is named by its id (or, until Meta names it, the request id `create` printed).
//!
//! `send` goes through the outbox like every send: it queues one row, then sends that row at
//! once with the sender's own checks (24-hour window, token, error classification), claiming
//! it first so that a running gate never sends it twice. A transient failure leaves the row
//! queued: the gate retries it.

use super::CliError;
use super::contacts::open_user;
use crate::config::{Home, UserConfig};
use crate::domain::{groups, window};
use crate::graph::GraphClient;
use crate::graph::groups::approval_mode;
use crate::sender::Sender;
use crate::sender::policy::Limits;
use crate::store::{GroupRow, NewOutbound, Store, now_ms};
use crate::terminal::one_line;
use crate::users::Users;
use crate::vault::{Credentials, Vault};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who gets into a group through its invite link.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum Approval {
    /// Anyone with the link joins.
    Auto,
    /// An admin approves each join request.
    Required,
}

/// `wagate groups USER …`.
#[derive(Subcommand, Debug)]
pub(super) enum GroupsAction {
    /// The groups the gate knows (from `create` and group webhooks); --remote asks Graph.
    List {
        #[arg(long)]
        remote: bool,
    },
    /// Create a group; Meta names it in a group_lifecycle_update webhook a moment later.
    Create {
        subject: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_enum, default_value = "auto")]
        approval: Approval,
    },
    /// What Graph says of a group (subject, participants…); the store is updated with it.
    Show { group: String },
    /// The group's invite link; --reset revokes it and makes a new one.
    InviteLink {
        group: String,
        #[arg(long)]
        reset: bool,
    },
    /// Remove participants (wa_ids or phone numbers) from a group.
    Remove {
        group: String,
        #[arg(required = true)]
        participants: Vec<String>,
    },
    /// Delete a group (every participant is removed). Needs --yes.
    Delete {
        group: String,
        #[arg(long)]
        yes: bool,
    },
    /// Send a text (or a template) to a group, through the outbox.
    Send {
        group: String,
        /// Free-form text: needs a participant to have written in the group in the last 24 h.
        #[arg(
            long,
            conflicts_with = "template",
            required_unless_present = "template"
        )]
        text: Option<String>,
        /// An approved template's name: always allowed.
        #[arg(long)]
        template: Option<String>,
        /// The template's language code.
        #[arg(long, default_value = "en_US", requires = "template")]
        language: String,
        /// Seconds to wait for the outcome when a running gate sends it (0: do not wait).
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

/// The Graph client of this home: its base URL, or the simulator of a running gate
/// (`graph.base_url: simulator` lives inside `wagate serve`).
fn graph_client(home: &Home) -> Result<GraphClient, CliError> {
    let g = &home.gate.file.graph;
    let base = if g.base_url == "simulator" {
        let listen = home.gate.file.server.listen.replace("0.0.0.0", "127.0.0.1");
        format!("http://{listen}/simulator")
    } else {
        g.base_url.clone()
    };
    GraphClient::new(&base, &g.version, Duration::from_secs(g.timeout_secs))
        .map_err(CliError::failure)
}

fn credentials(home: &Home, cfg: &UserConfig) -> Result<Credentials, CliError> {
    let vault = Vault::open_from_env(&home.gate.identity_file)?;
    Ok(vault.read_credentials(&home.gate.credentials_path(&cfg.id))?)
}

/// The group id an argument names: a group id, or the request id of a group the gate knows.
fn resolve(store: &Store, user: &str, arg: &str) -> Result<String, CliError> {
    let arg = arg.trim();
    let arg = groups::group_of(arg).unwrap_or(arg);
    if let Some(g) = store.group(user, arg)? {
        return match g.group_id {
            Some(id) => Ok(id),
            None => Err(CliError::failure(format!(
                "error: the group of request {arg} has no id yet: Meta names it in a group_lifecycle_update webhook (is the gate receiving webhooks?)"
            ))),
        };
    }
    groups::validate_group_id(arg).map_err(|e| CliError::usage(format!("error: {e}")))
}

/// A failed Graph call, with the sender's readable reason for Graph's error code.
fn graph_failed(what: &str, e: crate::graph::GraphError) -> CliError {
    CliError::failure(format!(
        "error: {what}: {}",
        crate::sender::policy::reason(&e)
    ))
}

/// Runs a `groups` subcommand.
pub(super) async fn run(config: &Path, user: &str, action: GroupsAction) -> Result<(), CliError> {
    let (home, cfg, store) = open_user(config, user)?;
    let user = cfg.id.as_str().to_string();
    if let GroupsAction::List { remote: false } = action {
        return list_local(&store, &user);
    }
    let creds = credentials(&home, &cfg)?;
    let token = &creds.access_token;
    let graph = graph_client(&home)?;
    match action {
        GroupsAction::List { .. } => {
            let remote = graph
                .list_groups(&cfg.phone_number_id, token)
                .await
                .map_err(|e| graph_failed("Graph could not list the groups", e))?;
            let known = store.groups(&user)?;
            for (id, subject) in &remote {
                let here = known.iter().any(|g| g.group_id.as_deref() == Some(id));
                if !here {
                    // A group whose webhook never reached the gate: recorded from now on.
                    store.update_group_info(&user, id, subject.as_deref(), None, None, None)?;
                }
                println!(
                    "{}  {}{}",
                    one_line(id),
                    one_line(subject.as_deref().unwrap_or("-")),
                    if here {
                        ""
                    } else {
                        "  (new to the gate: recorded)"
                    }
                );
            }
            println!("{} group(s) on Graph", remote.len());
            Ok(())
        }
        GroupsAction::Create {
            subject,
            description,
            approval,
        } => {
            let subject = subject.trim();
            if subject.is_empty() {
                return Err(CliError::usage("error: the subject is empty"));
            }
            let mode = approval_mode(matches!(approval, Approval::Required));
            let request_id = graph
                .create_group(
                    &cfg.phone_number_id,
                    token,
                    subject,
                    description.as_deref(),
                    Some(mode),
                )
                .await
                .map_err(|e| graph_failed("Graph refused to create the group", e))?;
            store.record_group_request(
                &user,
                &request_id,
                subject,
                description.as_deref(),
                Some(mode),
            )?;
            audit(
                &store,
                &user,
                "group.create",
                json!({"request_id": request_id, "subject": subject, "join_approval_mode": mode}),
            )?;
            println!("requested group \"{subject}\" ({mode}): request {request_id}");
            println!(
                "Meta names the group in a group_lifecycle_update webhook; then `wagate groups {user} list` shows its id"
            );
            Ok(())
        }
        GroupsAction::Show { group } => {
            let id = resolve(&store, &user, &group)?;
            let info = graph
                .get_group(&id, token)
                .await
                .map_err(|e| graph_failed(&format!("Graph could not read group {id}"), e))?;
            store.update_group_info(
                &user,
                &id,
                info.subject.as_deref(),
                info.description.as_deref(),
                info.join_approval_mode.as_deref(),
                Some(&info.participants),
            )?;
            let row = store.group(&user, &id)?;
            println!("group {id}");
            println!(
                "subject: {}",
                one_line(info.subject.as_deref().unwrap_or("-"))
            );
            if let Some(d) = &info.description {
                println!("description: {}", one_line(d));
            }
            println!(
                "join approval: {}",
                one_line(info.join_approval_mode.as_deref().unwrap_or("-"))
            );
            if let Some(link) = row.as_ref().and_then(|r| r.invite_link.as_deref()) {
                println!("invite link: {}", one_line(link));
            }
            let count = info
                .total_participant_count
                .unwrap_or(info.participants.len() as u64);
            println!("participants ({count}): {}", plus(&info.participants));
            Ok(())
        }
        GroupsAction::InviteLink { group, reset } => {
            let id = resolve(&store, &user, &group)?;
            let link = graph
                .group_invite_link(&id, token, reset)
                .await
                .map_err(|e| {
                    graph_failed(&format!("Graph could not give the invite link of {id}"), e)
                })?;
            store.set_group_invite_link(&user, &id, &link)?;
            if reset {
                // The old link stops working: who did it, and when, is kept. (The link itself
                // is not: it lets anyone in.)
                audit(
                    &store,
                    &user,
                    "group.invite_link_reset",
                    json!({"group": id}),
                )?;
                println!("new invite link of {id} (the old one no longer works): {link}");
            } else {
                println!("{link}");
            }
            Ok(())
        }
        GroupsAction::Remove {
            group,
            participants,
        } => {
            let id = resolve(&store, &user, &group)?;
            let wa: Vec<String> = participants
                .iter()
                .map(|p| crate::domain::book::contact_key_of(p))
                .collect::<Result<_, _>>()
                .map_err(|e| CliError::usage(format!("error: {e}")))?;
            graph
                .remove_group_participants(&id, token, &wa)
                .await
                .map_err(|e| {
                    graph_failed(&format!("Graph could not remove participants of {id}"), e)
                })?;
            store.remove_group_participants(&user, &id, &wa)?;
            audit(
                &store,
                &user,
                "group.remove",
                json!({"group": id, "participants": wa}),
            )?;
            println!("removed {} from group {id}", plus(&wa));
            Ok(())
        }
        GroupsAction::Delete { group, yes } => {
            let id = resolve(&store, &user, &group)?;
            if !yes {
                return Err(CliError::usage(format!(
                    "error: deleting group {id} removes every participant and cannot be undone: add --yes"
                )));
            }
            graph
                .delete_group(&id, token)
                .await
                .map_err(|e| graph_failed(&format!("Graph could not delete group {id}"), e))?;
            store.mark_group_deleted(&user, &id)?;
            audit(&store, &user, "group.delete", json!({"group": id}))?;
            println!("deleted group {id}");
            Ok(())
        }
        GroupsAction::Send {
            group,
            text,
            template,
            language,
            wait,
        } => {
            let id = resolve(&store, &user, &group)?;
            let spec = match (text, template) {
                (Some(t), _) => json!({ "text": t }),
                (None, Some(name)) => json!({"template": name, "language": language}),
                (None, None) => {
                    return Err(CliError::usage("error: give --text T or --template NAME"));
                }
            };
            send(&home, &cfg, &store, &graph, &id, &spec, wait).await
        }
    }
}

fn plus(ids: &[String]) -> String {
    if ids.is_empty() {
        return "(none)".into();
    }
    ids.iter()
        .map(|w| format!("+{}", one_line(w)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_local(store: &Store, user: &str) -> Result<(), CliError> {
    let all = store.groups(user)?;
    for g in &all {
        println!("{}", describe(g));
    }
    println!("{} group(s)", all.len());
    Ok(())
}

fn describe(g: &GroupRow) -> String {
    let id = match (&g.group_id, &g.request_id) {
        (Some(id), _) => id.clone(),
        (None, Some(r)) => format!("(request {r})"),
        (None, None) => "?".into(),
    };
    let mut s = format!(
        "{}  \"{}\"  {}  participants: {}",
        one_line(&id),
        one_line(g.subject.as_deref().unwrap_or("-")),
        g.state,
        g.participants.len()
    );
    if let Some(link) = &g.invite_link {
        s.push_str(&format!("  {}", one_line(link)));
    }
    if let Some(e) = &g.error {
        s.push_str(&format!("  error: {}", one_line(e)));
    }
    s
}

async fn send(
    home: &Home,
    cfg: &UserConfig,
    store: &Store,
    graph: &GraphClient,
    group_id: &str,
    spec: &Value,
    wait: u64,
) -> Result<(), CliError> {
    let user = cfg.id.as_str();
    if !cfg.permissions.send {
        return Err(CliError::failure(format!(
            "error: user `{user}` may not send: permissions.send is false in its users file"
        )));
    }
    let (msg_type, body) =
        groups::build(group_id, spec).map_err(|e| CliError::usage(format!("error: {e}")))?;
    let recipient = groups::recipient(group_id);
    if window::needs_window(&msg_type) {
        let last = store.last_inbound(user, &recipient)?;
        let now = now_ms() / 1000;
        if !window::within_customer_window(last, now) {
            return Err(CliError::failure(format!(
                "error: not sent: {}: --template NAME [--language CODE]",
                groups::window_closed(group_id, last, now)
            )));
        }
    }
    let idem_key = format!("cli/groups/{}-{}", now_ms(), std::process::id());
    store.enqueue(
        user,
        &[NewOutbound {
            idem_key: idem_key.clone(),
            recipient: recipient.clone(),
            msg_type,
            body,
        }],
    )?;
    let id = store
        .outbox(user)?
        .into_iter()
        .rev()
        .find(|r| r.idem_key == idem_key)
        .map(|r| r.id)
        .ok_or_else(|| CliError::failure("error: the queued message is not in the outbox"))?;
    let vault = Vault::open_from_env(&home.gate.identity_file)?;
    let (users, _failed) = Users::load(home, &vault);
    let sender = Sender {
        store: store.clone(),
        graph: graph.clone(),
        users,
        wake: Arc::new(tokio::sync::Notify::new()),
        limits: Limits::default(),
        max_in_flight: 1,
        uploads: Default::default(),
        rejected: Default::default(),
    };
    // A signal while Graph's call is in flight waits for its answer (see interrupt.rs).
    let mut stop = super::interrupt::Interrupt::catch()?;
    let limit = Duration::from_secs(home.gate.file.graph.timeout_secs);
    let (row, interrupted) = stop.in_flight(sender.send_now(user, id), id, limit).await?;
    let mut row = row?;
    // A running gate may have claimed it first: its outcome shows in the store.
    let deadline = Instant::now() + Duration::from_secs(wait);
    while row.as_ref().is_some_and(|r| r.state == "sending") && Instant::now() < deadline {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = stop.signal() => return Err(super::interrupt::left_to_gate(id, "sending")),
        }
        row = store.outbox(user)?.into_iter().find(|r| r.id == id);
    }
    if let Some(r) = row.as_ref().filter(|r| interrupted && r.state == "queued") {
        return Err(super::interrupt::left_to_gate(id, &r.state));
    }
    match row {
        Some(r) if r.state == "sent" => {
            println!(
                "sent to group {group_id}: {}",
                r.wamid.as_deref().unwrap_or("?")
            );
            Ok(())
        }
        Some(r) if r.state == "failed" => Err(CliError::failure(format!(
            "error: {}",
            r.error.as_deref().unwrap_or("not sent")
        ))),
        Some(r) if r.state == "queued" => {
            println!(
                "queued for group {group_id}; not sent yet{}: the gate (`wagate serve`) retries it",
                r.error
                    .map(|e| format!(" ({})", one_line(&e)))
                    .unwrap_or_default()
            );
            Ok(())
        }
        _ => {
            println!("queued for group {group_id}; a running gate is sending it");
            Ok(())
        }
    }
}

/// Records a change Graph made to a group at USER's request in USER's audit log. Graph has
/// done it by now: should the record fail, the command says so and fails.
fn audit(store: &Store, user: &str, action: &str, details: Value) -> Result<(), CliError> {
    store.audit(user, action, &details).map_err(|e| {
        CliError::failure(format!(
            "{action} done, but it could not be recorded in the audit log: {e}"
        ))
    })
}
