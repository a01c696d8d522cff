//! A throwaway home for the benchmark: gate.yaml, a fresh identity, users with encrypted
//! credentials and their rules, under a temp folder that is removed on drop.

use serde_json::json;
use std::path::{Path, PathBuf};

/// A temp folder removed (with everything in it) on drop.
pub struct TempHome {
    pub dir: PathBuf,
}

impl TempHome {
    pub fn new(tag: &str) -> std::io::Result<TempHome> {
        let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("wagate-bench-{tag}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempHome { dir })
    }

    pub fn gate_yaml(&self) -> PathBuf {
        self.dir.join("gate.yaml")
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bench user: its name, number id, token and app secret.
#[derive(Clone, Debug)]
pub struct BenchUser {
    pub name: String,
    pub phone: String,
    pub token: String,
    pub secret: String,
}

impl BenchUser {
    pub fn numbered(i: usize) -> BenchUser {
        BenchUser {
            name: format!("user{i}"),
            phone: format!("{}", 100_000_000 + i),
            token: format!("EAAbench-token-{i}-0123456789"),
            secret: format!("bench-app-secret-{i}"),
        }
    }
}

/// The typical rule: answer every text message, quoting it.
pub const ECHO_RULE: &str =
    "  - name: echo{n}\n    on: message\n    if: 'event.type == \"text\"'\n    script: echo.rhai\n";
pub const ECHO_SCRIPT: &str = "reply(event, \"You said: \" + event.text);\n";

/// Writes a home whose Graph base URL is `graph_url`, with `users`, each with one project of
/// `rules` echo rules (none when 0).
pub fn write_home(
    home: &Path,
    graph_url: &str,
    users: &[BenchUser],
    rules: usize,
) -> anyhow::Result<()> {
    write(
        &home.join("gate.yaml"),
        &format!(
            "server: {{ listen: \"127.0.0.1:0\" }}\nstorage: {{ path: data/wagate.db }}\ngraph: {{ base_url: \"{graph_url}\", version: \"v23.0\", timeout_secs: 10 }}\nvault: {{ identity_file: identity.txt }}\n"
        ),
    )?;
    crate::vault::generate_identity_file(&home.join("identity.txt"))?;
    let vault = crate::vault::Vault::open(&home.join("identity.txt"), None)?;
    std::fs::create_dir_all(home.join("rules"))?;
    for u in users {
        // A benchmark answers thousands of contacts a second: the number's rate limit is set
        // to the most a user file may say (Meta's own cap is lower; see README).
        write(
            &home.join(format!("users/{}.yaml", u.name)),
            &format!(
                "user: {}\nphone_number_id: \"{}\"\nbusiness_account_id: \"9{}\"\ndisplay_phone_number: \"1555{}\"\ntimezone: Europe/Paris\nrate_limit: 10000\n",
                u.name, u.phone, u.phone, u.phone
            ),
        )?;
        let creds = crate::vault::parse_credentials(
            json!({"access_token": u.token, "app_secret": u.secret, "webhook_verify_token": "verify"})
                .to_string()
                .as_bytes(),
        )?;
        vault.write_credentials(&home.join(format!("credentials/{}.age", u.name)), &creds)?;
        if rules > 0 {
            let project = home.join(format!("rules/{}/replies", u.name));
            let list: String = (0..rules)
                .map(|n| ECHO_RULE.replace("{n}", &n.to_string()))
                .collect();
            write(&project.join("project.yaml"), &format!("rules:\n{list}"))?;
            write(&project.join("echo.rhai"), ECHO_SCRIPT)?;
        }
    }
    Ok(())
}

/// Writes `text` to `path`, creating folders.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// A Meta `messages` webhook: one text message from `from` to `u`'s number.
pub fn text_webhook(u: &BenchUser, from: &str, wamid: &str, text: &str) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{}", u.phone), "phone_number_id": u.phone},
            "contacts": [{"profile": {"name": "Bench Contact"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
                          "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

/// The contact number of message `i` of a run tagged `run` (digits, unique per message).
pub fn contact(run: u32, i: usize) -> String {
    format!("9{run}{i:09}")
}

/// The message index a contact number carries, for a run tagged `run`.
pub fn index_of(run: u32, contact: &str) -> Option<usize> {
    let digits = contact.trim_start_matches('+');
    digits.strip_prefix(&format!("9{run}"))?.parse().ok()
}
