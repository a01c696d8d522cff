//! The users' shipped rules (the repository's `rules/`), end to end: loaded as they ship into a
//! test home, fired by the scheduler at exact local times on a hand-driven clock, answered with
//! signed webhooks shaped like Meta's, checked on what the fake Cloud API received and on the
//! projects' state.
//!
//! Two clocks meet here. Timed rules run on the manual clock (May 2026, when the tour and the
//! consultations are), message rules and the sender on the real one. A webhook carries the real
//! time as WhatsApp's timestamp, which is after May 2026: for the timed rules someone who wrote
//! in the test has written recently (their 24-hour window is open), someone who never wrote
//! has not. Both branches of every reminder (free-form or template) are exercised that way.

mod azarya;
mod olga;

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// Every file under the repository's `rules/<under>`, as (path under rules/, text).
fn shipped(under: &str) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut out = Vec::new();
    walk(&root, &root.join(under), &mut out);
    assert!(!out.is_empty(), "nothing shipped under rules/{under}");
    out
}

async fn start(under: &str) -> TestGate {
    let files = shipped(under);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    TestGate::start_manual_time(&files).await
}

fn local(tz: &str, s: &str) -> DateTime<Utc> {
    let tz: Tz = tz.parse().unwrap();
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn paris(s: &str) -> DateTime<Utc> {
    local("Europe/Paris", s)
}

/// A sent message as one line: `+<to> <what>`, where `what` is `template NAME LANG: params
/// [payloads]`, `text: BODY`, `buttons: BODY [id=title, …]` or `location NAME`.
fn line(to: &str, body: &Value) -> String {
    let what = match body["type"].as_str().unwrap_or("") {
        "template" => {
            let t = &body["template"];
            let comps = t["components"].as_array().cloned().unwrap_or_default();
            let mut params = Vec::new();
            let mut payloads = Vec::new();
            for c in &comps {
                for p in c["parameters"].as_array().into_iter().flatten() {
                    match c["type"].as_str() {
                        Some("body") => params.push(p["text"].as_str().unwrap_or("").to_string()),
                        _ => payloads.push(p["payload"].as_str().unwrap_or("").to_string()),
                    }
                }
            }
            let mut s = format!(
                "template {} {}: {}",
                t["name"].as_str().unwrap_or(""),
                t["language"]["code"].as_str().unwrap_or(""),
                params.join(" | ")
            );
            if !payloads.is_empty() {
                s += &format!(" [{}]", payloads.join(", "));
            }
            s
        }
        "text" => format!("text: {}", body["text"]["body"].as_str().unwrap_or("")),
        "interactive" => {
            let i = &body["interactive"];
            let buttons: Vec<String> = i["action"]["buttons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "{}={}",
                        b["reply"]["id"].as_str().unwrap_or(""),
                        b["reply"]["title"].as_str().unwrap_or("")
                    )
                })
                .collect();
            format!(
                "buttons: {} [{}]",
                i["body"]["text"].as_str().unwrap_or(""),
                buttons.join(", ")
            )
        }
        "location" => format!(
            "location {}",
            body["location"]["name"].as_str().unwrap_or("")
        ),
        other => format!("{other}: {body}"),
    };
    format!("+{to} {what}")
}

/// Reads what the gate queued for a user since the last look.
struct Outbox {
    user: &'static str,
    seen: usize,
}

impl Outbox {
    fn new(user: &'static str) -> Self {
        Outbox { user, seen: 0 }
    }

    /// The rows queued since the last call, as sorted lines.
    fn new_lines(&mut self, tg: &TestGate) -> Vec<String> {
        let rows = tg.store().outbox(self.user).unwrap();
        let mut lines: Vec<String> = rows[self.seen..]
            .iter()
            .map(|r| line(&r.recipient.replace('+', ""), &r.body))
            .collect();
        self.seen = rows.len();
        lines.sort();
        lines
    }

    /// Ticks the scheduler every `step` from `from` to `to` (both included) and returns what
    /// each tick queued, as `<local time> <line>`.
    async fn walk(
        &mut self,
        tg: &TestGate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: chrono::Duration,
        tz: Tz,
    ) -> Vec<String> {
        let mut all = Vec::new();
        let mut t = from;
        while t <= to {
            tg.gate().scheduler.tick(t).await;
            let at = t.with_timezone(&tz).format("%m-%d %H:%M").to_string();
            all.extend(self.new_lines(tg).into_iter().map(|l| format!("{at} {l}")));
            t += step;
        }
        all
    }

    /// Waits for the user's events and sends to settle, and returns what was queued since the
    /// last look.
    async fn after_messages(&mut self, tg: &TestGate) -> Vec<String> {
        settled(tg, self.user).await;
        self.new_lines(tg)
    }
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// A Meta `messages` webhook with one message of `kind` (`text`, `button`, `interactive`)
/// from `from`, at WhatsApp time `ts`, shaped like the fixtures in ../shared.
fn message(u: TestUser, from: &str, name: &str, wamid: &str, ts: i64, content: Value) -> Vec<u8> {
    let mut m = json!({"from": from, "id": wamid, "timestamp": ts.to_string()});
    for (k, v) in content.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": u.waba, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{}", u.phone), "phone_number_id": u.phone},
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [m]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

/// A template's quick-reply button, as Meta delivers it (type `button`).
fn quick_reply(payload: &str, title: &str) -> Value {
    json!({"type": "button", "button": {"payload": payload, "text": title},
           "context": {"from": "15550000000", "id": "wamid.TEMPLATE"}})
}

/// A reply button of an interactive message (type `interactive`, `button_reply`).
fn button_reply(id: &str, title: &str) -> Value {
    json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}},
           "context": {"from": "15550000000", "id": "wamid.BUTTONS"}})
}

async fn post(tg: &TestGate, u: TestUser, body: Vec<u8>) {
    let r = tg.post_signed(u, &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

fn state(tg: &TestGate, user: &str, project: &str, key: &str) -> Option<Value> {
    tg.store().state_get(user, project, key).unwrap()
}

/// Every row queued for `user` went out, and the fake Cloud API received exactly those.
async fn all_delivered(tg: &TestGate, u: TestUser) {
    let rows = settled(tg, u.name).await;
    let failed: Vec<_> = rows.iter().filter(|r| r.state != "sent").collect();
    assert!(failed.is_empty(), "not sent: {failed:#?}");
    let mut queued: Vec<String> = rows
        .iter()
        .map(|r| line(&r.recipient.replace('+', ""), &r.body))
        .collect();
    let mut received: Vec<String> = sent_to_phone(&tg.fake, u.phone)
        .iter()
        .map(|b| line(b["to"].as_str().unwrap_or("").trim_start_matches('+'), b))
        .collect();
    queued.sort();
    received.sort();
    assert_eq!(received, queued);
}

#[tokio::test]
async fn every_shipped_project_compiles_in_the_demo_home() {
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["--config", "examples/demo/gate.yaml", "rules", "list"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--now", "2026-05-06T12:00"])
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in [
        "azarya/auto-reply/auto-reply",
        "olga/consultations/evening-reminder",
        "olga/consultations/daily-summary",
        "olga/design-travels/PARIS-2026/week-before",
        "olga/design-travels/PARIS-2026/not-confirmed",
    ] {
        assert!(stdout.contains(rule), "{rule} missing from:\n{stdout}");
    }
}
