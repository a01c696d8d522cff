//! `wagate inject USER --text T`: posts a webhook signed with USER's app secret to the running
//! gate, as Meta would, then (with the built-in simulator) shows the replies it received.

use super::CliError;
use crate::config::Home;
use crate::terminal::one_line;
use crate::vault::Vault;
use crate::whatsapp::sign;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the contact does: types `text`, or presses the reply button `button` titled `text`.
pub(super) struct Message {
    pub from: String,
    pub name: String,
    pub text: String,
    pub button: Option<String>,
}

pub(super) async fn run(config: &Path, user: &str, m: &Message, wait: u64) -> Result<(), CliError> {
    let id = super::args::user_arg(user)?;
    // `from` as Meta writes it: the wa_id's digits (`+33 6 12…` → `33612…`).
    let from = crate::domain::book::contact_key_of(&m.from)
        .map_err(|e| CliError::usage(format!("error: --from {e}")))?;
    let m = &Message {
        from,
        name: m.name.clone(),
        text: m.text.clone(),
        button: m.button.clone(),
    };
    let (from, name) = (m.from.as_str(), m.name.as_str());
    let home = Home::load(config).map_err(CliError::failure)?;
    let cfg = home.users.get(&id).ok_or_else(|| {
        CliError::failure(format!(
            "no user `{id}` in {}",
            home.gate.users_dir.display()
        ))
    })?;
    let vault = Vault::open_from_env(&home.gate.identity_file)?;
    let creds = vault.read_credentials(&home.gate.credentials_path(&id))?;
    let now = chrono::Utc::now().timestamp();
    let wamid = format!("wamid.INJECT{now}{}", std::process::id());
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": cfg.business_account_id.clone().unwrap_or_default(), "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": cfg.display_phone_number.clone().unwrap_or_default(),
                         "phone_number_id": cfg.phone_number_id},
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [message(m, &wamid, now)]
        }}]}]
    });
    let bytes = serde_json::to_vec(&body)?;
    let listen = &home.gate.file.server.listen;
    let base = format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = client
        .post(format!("{base}/webhook/whatsapp/{id}"))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            sign(creds.app_secret.expose().as_bytes(), &bytes),
        )
        .body(bytes)
        .send()
        .await
        .map_err(|e| {
            CliError::failure(format!(
                "cannot reach the gate at {base} (is `wagate serve` running?): {}",
                e.without_url()
            ))
        })?;
    let status = resp.status();
    let answer = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(CliError::failure(format!(
            "the gate answered {status}: {answer}"
        )));
    }
    println!(
        "delivered {wamid} from {} to `{id}`: gate answered {status} {}",
        one_line(&crate::domain::phone::shown(from)),
        one_line(&answer)
    );
    if wait == 0 || home.gate.file.graph.base_url != "simulator" {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    while Instant::now() < deadline {
        let list: Value = match client
            .get(format!("{base}/simulator/_sim/requests"))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let replies: Vec<&Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r.pointer("/body/context/message_id")
                    .and_then(Value::as_str)
                    == Some(wamid.as_str())
            })
            .collect();
        if !replies.is_empty() {
            for r in replies {
                let b = &r["body"];
                let shown = b
                    .pointer("/text/body")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| b.to_string());
                println!(
                    "reply to +{}: {}",
                    one_line(b["to"].as_str().unwrap_or(from).trim_start_matches('+')),
                    one_line(&shown)
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("no reply within {wait} s (no rule matched, or see the gate's log)");
    Ok(())
}

/// The message object Meta would send: a text, or a reply-button press.
fn message(m: &Message, wamid: &str, now: i64) -> Value {
    let mut o = json!({"from": m.from, "id": wamid, "timestamp": now.to_string()});
    match &m.button {
        Some(id) => {
            o["type"] = "interactive".into();
            o["interactive"] =
                json!({"type": "button_reply", "button_reply": {"id": id, "title": m.text}});
        }
        None => {
            o["type"] = "text".into();
            o["text"] = json!({ "body": m.text });
        }
    }
    o
}
