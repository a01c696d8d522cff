//! Trust: the hash-chained audit log (and a database altered behind the gate's back), tokens
//! that renew themselves against the fake Cloud API's debug_token and exchange endpoints,
//! least privilege between users, and no secret in logs or anywhere in the home.

use crate::common::*;
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use wagate::graph::simulator::Fault;
use wagate::tokens::TokenOutcome;

/// Rewrites `u`'s credentials in `home` with extra fields (app_id, token_expires_at…).
fn set_creds(home: &Path, u: TestUser, token: &str, extra: Value) {
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    let mut j =
        json!({"access_token": token, "app_secret": u.secret, "webhook_verify_token": u.verify});
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    let creds = wagate::vault::parse_credentials(j.to_string().as_bytes()).unwrap();
    vault
        .write_credentials(&home.join(format!("credentials/{}.age", u.name)), &creds)
        .unwrap();
}

fn read_token(home: &Path, u: TestUser) -> String {
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    let c = vault
        .read_credentials(&home.join(format!("credentials/{}.age", u.name)))
        .unwrap();
    c.access_token.expose().to_string()
}

fn actions(tg: &TestGate, user: &str) -> Vec<String> {
    tg.store()
        .audit_entries(Some(user), None, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

fn in_days(d: i64) -> i64 {
    now_secs() + d * 86_400
}

#[tokio::test]
async fn the_audit_log_records_each_operation_and_verify_finds_every_kind_of_tampering() {
    let tg = TestGate::start().await;
    // Accepted webhook → rule run → send; a refused webhook; a send that fails for good.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.AUD1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let forged = text_webhook(OLGA, "33612345678", "Ann", "wamid.AUD2", "hi");
    let sig = wagate::whatsapp::sign(AZARYA.secret.as_bytes(), &forged);
    assert_eq!(tg.post_raw("olga", forged, Some(sig)).await.status(), 401);
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.AUD3", "again");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;

    let acts = actions(&tg, "olga");
    for a in [
        "reload",
        "webhook.accepted",
        "rule.run",
        "send.sent",
        "webhook.rejected",
        "send.failed",
    ] {
        assert!(acts.iter().any(|x| x == a), "{a} audited: {acts:?}");
    }
    let entries = tg.store().audit_entries(Some("olga"), None, 1000).unwrap();
    let rejected = entries
        .iter()
        .find(|e| e.action == "webhook.rejected")
        .unwrap();
    assert_eq!(rejected.details["status"], 401);
    assert!(
        rejected.details["reason"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256 does not match"),
        "{}",
        rejected.details
    );
    let failed = entries.iter().find(|e| e.action == "send.failed").unwrap();
    assert!(failed.details["error"].as_str().unwrap().contains("131026"));
    // Azarya's log holds none of Olga's operations.
    assert!(!actions(&tg, "azarya").iter().any(|a| a.starts_with("send")));

    // The CLI lists them and finds the chains whole.
    let home = tg.dir.path().to_path_buf();
    let o = wagate_in(&home, &["audit", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains(" olga #1 reload "),
        "{}",
        output_text(&o)
    );
    assert!(
        output_text(&o).contains("send.failed"),
        "{}",
        output_text(&o)
    );
    let o = wagate_in(&home, &["audit", "--verify"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("olga: "), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("chain intact"),
        "{}",
        output_text(&o)
    );
    let n = entries.len() as i64;

    // Each way of altering the table, on its own copy of the database.
    let db = home.join("data/wagate.db");
    let tamper = |name: &str, sql: &str| -> Vec<String> {
        let copy = home.join(format!("data/{name}.db"));
        Connection::open(&db)
            .unwrap()
            .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        Connection::open(&copy).unwrap().execute_batch(sql).unwrap();
        let store = wagate::store::Store::open(&copy).unwrap();
        let reports = store.audit_verify(Some("olga")).unwrap();
        reports.into_iter().flat_map(|r| r.problems).collect()
    };
    let changed = tamper(
        "changed",
        "UPDATE audit SET details = replace(details, '131026', '0') WHERE user = 'olga' AND action = 'send.failed'",
    );
    assert!(
        changed.iter().any(|p| p.contains("was changed")),
        "{changed:?}"
    );
    let removed = tamper(
        "removed",
        "DELETE FROM audit WHERE user = 'olga' AND seq = 3",
    );
    assert!(
        removed
            .iter()
            .any(|p| p.contains("entries 3..3 are missing")),
        "{removed:?}"
    );
    let reordered = tamper(
        "reordered",
        "UPDATE audit SET seq = -1 WHERE user = 'olga' AND seq = 2;
         UPDATE audit SET seq = 2 WHERE user = 'olga' AND seq = 3;
         UPDATE audit SET seq = 3 WHERE user = 'olga' AND seq = -1;",
    );
    assert!(
        reordered
            .iter()
            .any(|p| p.contains("does not follow the entry before it")),
        "{reordered:?}"
    );
    let truncated = tamper(
        "truncated",
        &format!("DELETE FROM audit WHERE user = 'olga' AND seq = {n}"),
    );
    assert!(
        truncated
            .iter()
            .any(|p| p.contains("at the end are missing")),
        "{truncated:?}"
    );
    let untouched = tamper("untouched", "SELECT 1");
    assert!(untouched.is_empty(), "{untouched:?}");

    // And the CLI's exit code says so.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE audit SET at = at + 1 WHERE user = 'olga' AND seq = 2",
            [],
        )
        .unwrap();
    let o = wagate_in(&home, &["audit", "--verify"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("olga: TAMPERED: entry 2 (webhook.accepted) was changed"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_token_near_its_end_is_renewed_stored_encrypted_and_used() {
    let mut tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    set_creds(
        &home,
        OLGA,
        OLGA.token,
        json!({"app_id": "1234567890", "token_expires_at": in_days(3)}),
    );
    tg.fake.set_token_expiry(OLGA.token, in_days(3));
    tg.restart().await; // the keeper looks at every token when the gate starts
    let renewed = eventually("the renewal", Duration::from_secs(15), || {
        let store = tg.store().clone();
        async move {
            let e = store.audit_entries(Some("olga"), None, 1000).ok()?;
            e.into_iter().find(|e| e.action == "token.refresh")
        }
    })
    .await;
    let new = read_token(&home, OLGA);
    assert_ne!(new, OLGA.token, "a new token is in credentials/olga.age");
    assert_eq!(
        tg.fake.expected_token(OLGA.phone).unwrap().expose(),
        &new,
        "the fake issued it"
    );
    let file = std::fs::read(home.join("credentials/olga.age")).unwrap();
    assert!(!contains(&file, new.as_bytes()), "stored encrypted");
    assert!(
        !renewed.details.to_string().contains(&new),
        "audited without the token"
    );
    assert_eq!(
        renewed.details["old_fingerprint"],
        wagate::sender::fingerprint(OLGA.token)
    );
    // The next send carries the new token.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.NEWTOK", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let last = tg
        .fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.phone_number_id == OLGA.phone)
        .unwrap();
    assert_eq!(last.bearer.unwrap().expose(), &new);
    // Azarya has no app_id: nothing was asked for her.
    let calls: Vec<Value> = tg
        .fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("graph").is_some())
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "one exchange, no debug_token (the expiry was known): {calls:?}"
    );
    assert_eq!(calls[0]["graph"], "fb_exchange_token");
    assert_eq!(calls[0]["client_id"], "1234567890");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_system_user_token_is_learnt_through_debug_token_and_left_alone() {
    let mut tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    set_creds(&home, OLGA, OLGA.token, json!({"app_id": "1234567890"}));
    tg.restart().await;
    let u = tg.gate().tokens.users.get("olga").unwrap().clone();
    let outcome = tg.gate().tokens.check(&u, false).await.unwrap();
    assert_eq!(outcome, TokenOutcome::NeverExpires);
    let graph_calls: Vec<Value> = tg
        .fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("graph").is_some())
        .collect();
    assert!(
        graph_calls.iter().all(|b| b["graph"] == "debug_token"),
        "{graph_calls:?}"
    );
    assert!(!graph_calls.is_empty());
    assert_eq!(read_token(&home, OLGA), OLGA.token, "untouched");
    tg.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_marked_invalid_audited_and_shown() {
    let mut tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    set_creds(
        &home,
        OLGA,
        OLGA.token,
        json!({"app_id": "1234567890", "token_expires_at": now_secs() - 60}),
    );
    tg.restart().await;
    eventually(
        "the token to be marked invalid",
        Duration::from_secs(15),
        || {
            let store = tg.store().clone();
            async move {
                let e = store.audit_entries(Some("olga"), None, 1000).ok()?;
                e.into_iter().find(|e| e.action == "token.invalid")
            }
        },
    )
    .await;
    let health: Value = tg
        .client
        .get(tg.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["tokens"]["olga"]["state"], "invalid");
    assert!(
        health["tokens"]["olga"]["reason"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert_eq!(health["tokens"]["azarya"]["state"], "ok");
    let o = wagate_in(&home, &["check"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("Graph rejected its access token"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn token_refresh_on_demand_renews_now_and_the_running_gate_takes_the_new_file() {
    let tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    set_creds(
        &home,
        OLGA,
        OLGA.token,
        json!({"app_id": "1234567890", "token_expires_at": in_days(50)}),
    );
    tg.fake.set_token_expiry(OLGA.token, in_days(50));
    let o = wagate_in(&home, &["token", "refresh", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("renewed `olga`'s access token"),
        "{}",
        output_text(&o)
    );
    let new = read_token(&home, OLGA);
    assert_ne!(new, OLGA.token);
    assert!(!output_text(&o).contains(&new) && !output_text(&o).contains(OLGA.token));
    // The gate started with the old file; it picks up the changed one.
    tg.gate().tokens.reload_changed().await;
    let u = tg.gate().tokens.users.get("olga").unwrap().clone();
    assert_eq!(u.creds().access_token.expose(), &new);
    // Azarya has no app_id: a clear refusal.
    let o = wagate_in(&home, &["token", "refresh", "azarya"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(output_text(&o).contains("no app_id"), "{}", output_text(&o));
    // A refused exchange is explained and marks the token invalid.
    tg.fake.push_fault(Fault::graph(
        400,
        190,
        "Error validating access token: Session has expired",
    ));
    let o = wagate_in(&home, &["token", "refresh", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("cannot be renewed"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}

const PEEK_PROJECT: (&str, &str) = (
    "olga/peek/project.yaml",
    "rules:\n  - name: peek\n    on: message\n    script: peek.rhai\n",
);
const PEEK_SCRIPT: (&str, &str) = (
    "olga/peek/peek.rhai",
    "let cs = lookup(\"contacts\", #{});\nlet ms = lookup(\"messages\", #{});\nlet az = lookup(\"contacts\", \"972500000001\");\nreply(event, `contacts=${cs.len()} messages=${ms.len()} azarya_contact=${type_of(az)}`);\n",
);

#[tokio::test]
async fn one_users_rules_see_only_their_own_contacts_and_messages() {
    let tg = TestGate::start_with(&[PEEK_PROJECT, PEEK_SCRIPT]).await;
    // Azarya's contact writes to Azarya first.
    let body = text_webhook(AZARYA, "972500000001", "Dov", "wamid.AZ1", "shalom");
    assert_eq!(tg.post_signed(AZARYA, &body).await.status(), 200);
    settled(&tg, "azarya").await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.OL1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let reply = tg
        .fake
        .requests()
        .into_iter()
        .find(|r| r.phone_number_id == OLGA.phone)
        .expect("Olga's rule replied");
    assert_eq!(
        reply.body["text"]["body"],
        "contacts=1 messages=1 azarya_contact=()"
    );
    // It went out as Olga: her number, her token.
    assert_eq!(reply.bearer.unwrap().expose(), OLGA.token);
    tg.shutdown().await;
}

#[tokio::test]
async fn permissions_read_limits_which_stores_a_users_rules_may_look_up() {
    let mut tg = TestGate::start_with(&[PEEK_PROJECT, PEEK_SCRIPT]).await;
    let f = tg.dir.path().join("users/olga.yaml");
    let yaml = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        format!("{yaml}permissions: {{ send: true, read: [contacts] }}\n"),
    )
    .unwrap();
    tg.restart().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.PERM1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let run = tg.store().recent_runs("olga", 5).unwrap().remove(0);
    let err = run.error.unwrap_or_default();
    assert!(
        err.contains("user `olga` may not read `messages` (permissions.read in users/olga.yaml lists: [contacts])"),
        "{err}"
    );
    assert!(err.contains("peek.rhai:2:"), "located: {err}");
    assert!(tg.fake.requests().is_empty());
    // A store that does not exist is a config error, located.
    std::fs::write(
        &f,
        format!("{yaml}permissions: {{ read: [contacts, tokens] }}\n"),
    )
    .unwrap();
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        output_text(&o).contains("users/olga.yaml:"),
        "{}",
        output_text(&o)
    );
    assert!(
        output_text(&o).contains("`tokens` is not a store"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn webhooks_cannot_cross_users() {
    let tg = TestGate::start().await;
    // Olga's URL, signed with Azarya's secret: refused, nothing stored, audited under Olga.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.X1", "hi");
    let sig = wagate::whatsapp::sign(AZARYA.secret.as_bytes(), &body);
    assert_eq!(tg.post_raw("olga", body, Some(sig)).await.status(), 401);
    // Olga's URL and secret, but Azarya's number in the metadata: kept, never dispatched.
    let body = text_webhook(AZARYA, "33612345678", "Ann", "wamid.X2", "hi");
    let resp = tg.post_signed(OLGA, &body).await;
    assert_eq!(resp.status(), 200);
    let j: Value = resp.json().await.unwrap();
    assert_eq!(j["foreign"], 1);
    // The shared route: Azarya's number, Olga's signature: refused.
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &body);
    let r = tg
        .client
        .post(tg.url("/webhook/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    settled(&tg, "olga").await;
    assert!(tg.fake.requests().is_empty(), "nothing answered");
    let olga = tg.store().audit_entries(Some("olga"), None, 100).unwrap();
    let accepted = olga
        .iter()
        .find(|e| e.action == "webhook.accepted")
        .unwrap();
    assert_eq!(accepted.details["foreign"], 1);
    let rejected: Vec<_> = olga
        .iter()
        .filter(|e| e.action == "webhook.rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    let azarya = tg.store().audit_entries(Some("azarya"), None, 100).unwrap();
    assert_eq!(
        azarya
            .iter()
            .filter(|e| e.action == "webhook.rejected")
            .count(),
        1,
        "the shared route's refusal is Azarya's"
    );
    tg.shutdown().await;
}

/// A template status update with `entry.id` = `waba` (none if `None`): a field that carries no
/// `metadata.phone_number_id`, only the account it concerns.
fn template_status(waba: Option<&str>, template: &str) -> Vec<u8> {
    let mut entry = json!({"time": 1674250641, "changes": [{"field": "message_template_status_update",
        "value": {"event": "APPROVED", "message_template_id": 905507062668800_u64,
                  "message_template_name": template, "message_template_language": "en"}}]});
    if let Some(w) = waba {
        entry["id"] = w.into();
    }
    json!({"object": "whatsapp_business_account", "entry": [entry]})
        .to_string()
        .into_bytes()
}

/// Least privilege for what a user's own URL brings: an event is the user's only if it names
/// the user's phone number or, for fields without one, the user's business account. Another
/// account's template update, one naming no account, and a message without a phone number id
/// are kept (audited as foreign), never run as the URL's user.
#[tokio::test]
async fn events_naming_another_account_or_none_are_kept_but_not_run_as_the_urls_user() {
    let watch = (
        "azarya/watch/project.yaml",
        "rules:\n  - name: tpl\n    on: template_status\n    script: note.rhai\n  - name: msg\n    on: message\n    script: note.rhai\n",
    );
    let note = ("azarya/watch/note.rhai", "log(\"seen \" + event.kind);\n");
    let tg = TestGate::start_with(&[watch, note]).await;
    let mut foreign = vec![
        ("Olga's account", template_status(Some(OLGA.waba), "olgas")),
        ("no account", template_status(None, "nobodys")),
    ];
    for (what, id) in [
        ("an empty phone number id", json!("")),
        ("an object", json!({})),
    ] {
        let mut v: Value = serde_json::from_slice(&text_webhook(
            AZARYA,
            "972500000001",
            "Dan",
            "wamid.NOPN",
            "hi",
        ))
        .unwrap();
        v["entry"][0]["id"] = AZARYA.waba.into();
        v["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = id;
        v["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = format!("wamid.{what}").into();
        foreign.push((what, v.to_string().into_bytes()));
    }
    for (what, body) in &foreign {
        let r = tg.post_signed(AZARYA, body).await;
        assert_eq!(r.status(), 200, "{what}");
        let j: Value = r.json().await.unwrap();
        assert_eq!(
            (j["foreign"].as_u64(), j["to_dispatch"].as_u64()),
            (Some(1), Some(0)),
            "{what}: {j}"
        );
    }
    settled(&tg, "azarya").await;
    assert!(
        tg.store().recent_runs("azarya", 10).unwrap().is_empty(),
        "no rule ran"
    );
    assert_eq!(tg.store().counts("azarya").unwrap().1, 4, "all four kept");
    let accepted: Vec<Value> = tg
        .store()
        .audit_entries(Some("azarya"), None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "webhook.accepted")
        .map(|e| e.details)
        .collect();
    assert_eq!(accepted.len(), 4);
    assert!(accepted.iter().all(|d| d["foreign"] == 1), "{accepted:?}");
    // Azarya's own account: run as Azarya.
    let r = tg
        .post_signed(AZARYA, &template_status(Some(AZARYA.waba), "azaryas"))
        .await;
    let j: Value = r.json().await.unwrap();
    assert_eq!(
        (j["foreign"].as_u64(), j["to_dispatch"].as_u64()),
        (Some(0), Some(1)),
        "{j}"
    );
    settled(&tg, "azarya").await;
    let runs = tg.store().recent_runs("azarya", 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].rule, "tpl");
    tg.shutdown().await;
}

#[tokio::test]
async fn check_warns_of_secrets_files_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    let o = wagate_in(&home, &["check"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!output_text(&o).contains("warning"), "{}", output_text(&o));
    let f = home.join("credentials/azarya.age");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = wagate_in(&home, &["check"]).await;
    assert!(
        o.status.success(),
        "a warning, not an error: {}",
        output_text(&o)
    );
    assert!(
        output_text(&o).contains("warning: credentials/azarya.age is mode 0644"),
        "{}",
        output_text(&o)
    );
    assert!(output_text(&o).contains("chmod 600"), "{}", output_text(&o));
    // The verdict alone on stdout (scripts read it); the warning on stderr.
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("ok: 2 user(s)"),
        "{}",
        output_text(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: credentials/azarya.age"));
    tg.shutdown().await;
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The real binary at debug level, through traffic that touches every secret: handshakes
/// with the verify token, signed and forged webhooks, replies with the token, a token renewed
/// at start, a token Graph rejects. Then nothing of any secret in its output, nor in any file
/// of the home (database, WAL, credentials, everything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_logs_of_a_full_run_nor_anywhere_in_the_home() {
    scan_a_full_run(false).await;
}

/// The same with `log: { format: json }`: JSON lines carry every field, and still no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_json_logs_either() {
    scan_a_full_run(true).await;
}

async fn scan_a_full_run(json_logs: bool) {
    let logs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fake = wagate::graph::simulator::Simulator::new();
    for u in [OLGA, AZARYA] {
        fake.expect_token(u.phone, wagate::domain::Secret::new(u.token.to_string()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(fake.clone().serve(listener, cancel.clone()));
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    if json_logs {
        let gate = home.join("gate.yaml");
        let yaml = std::fs::read_to_string(&gate).unwrap();
        std::fs::write(&gate, format!("{yaml}log: {{ format: json }}\n")).unwrap();
    }
    set_creds(
        home,
        OLGA,
        OLGA.token,
        json!({"app_id": "1234567890", "token_expires_at": in_days(2)}),
    );
    fake.set_token_expiry(OLGA.token, in_days(2));

    let stderr = std::fs::File::create(logs.path().join("stderr.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(home.join("gate.yaml"))
        .arg("serve")
        .env_remove("WAGATE_PASSPHRASE")
        .env("WAGATE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let stdout_task = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut all = String::new();
        let mut tx = Some(addr_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.strip_prefix("wagate listening on http://")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(a.trim().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
        .await
        .expect("listens in time")
        .expect("prints its address");
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    // Handshakes: right and wrong verify tokens.
    for (token, want) in [(OLGA.verify, 200), ("wrong-token", 403)] {
        let r = client
            .get(format!(
                "{base}/webhook/whatsapp/olga?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    // (A token Graph rejects comes at the end.)
    let post = |u: TestUser, signer: TestUser, wamid: &str| {
        let body = text_webhook(u, "33612345678", "Ann", wamid, "hello");
        let sig = wagate::whatsapp::sign(signer.secret.as_bytes(), &body);
        client
            .post(format!("{base}/webhook/whatsapp/{}", u.name))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
    };
    assert_eq!(
        post(AZARYA, AZARYA, "wamid.S0").await.unwrap().status(),
        200
    );
    assert_eq!(post(OLGA, AZARYA, "wamid.S1").await.unwrap().status(), 401);
    // Olga's token is renewed at start; wait for it, then her messages are answered.
    let new = eventually("the renewal", Duration::from_secs(30), || {
        let fake = fake.clone();
        async move {
            let t = fake.expected_token(OLGA.phone)?;
            (t.expose() != OLGA.token).then(|| t.expose().to_string())
        }
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            post(OLGA, OLGA, &format!("wamid.S{}", i + 2))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let log_path = logs.path().join("stderr.log");
    let _explain = scopeguard_log(log_path.clone());
    eventually("five replies", Duration::from_secs(30), || {
        let fake = fake.clone();
        async move {
            let n = fake
                .requests()
                .iter()
                .filter(|r| r.phone_number_id == OLGA.phone && r.status == 200)
                .count();
            (n >= 5).then_some(())
        }
    })
    .await;
    // Then Graph rejects Olga's new token.
    fake.push_fault(Fault::graph(
        401,
        190,
        "Error validating access token: Session has expired",
    ));
    assert_eq!(post(OLGA, OLGA, "wamid.S9").await.unwrap().status(), 200);
    eventually("the 401", Duration::from_secs(30), || {
        let fake = fake.clone();
        async move {
            fake.requests()
                .iter()
                .any(|r| r.status == 401)
                .then_some(())
        }
    })
    .await;
    // SIGTERM by pid, then the full output.
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let stdout = stdout_task.await.unwrap();
    let stderr = std::fs::read_to_string(logs.path().join("stderr.log")).unwrap();
    cancel.cancel();

    assert!(
        stderr.contains("access token renewed"),
        "the run covered a renewal:\n{stderr}"
    );
    assert!(
        stderr.contains("Graph rejected the access token"),
        "and a rejected token"
    );
    assert!(stderr.len() > 2_000, "debug logs were written");
    if json_logs {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines
                .iter()
                .all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "every log line is JSON"
        );
    }
    let secrets = [
        OLGA.token,
        OLGA.secret,
        OLGA.verify,
        AZARYA.token,
        AZARYA.secret,
        AZARYA.verify,
        new.as_str(),
    ];
    for s in secrets {
        assert!(!stdout.contains(s), "stdout holds a secret");
        assert!(!stderr.contains(s), "the log holds a secret");
    }
    let all = files(home);
    assert!(all.iter().any(|f| f.ends_with("wagate.db")));
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        for s in secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{} holds a secret in plaintext",
                f.display()
            );
        }
    }
}

struct LogOnPanic(std::path::PathBuf);
impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- gate log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
fn scopeguard_log(p: std::path::PathBuf) -> LogOnPanic {
    LogOnPanic(p)
}

#[tokio::test]
async fn exports_backups_and_restores_are_audited() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.EXP1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let home = tg.dir.path().to_path_buf();
    let o = wagate_in(&home, &["export", "olga", "--contact", "+33612345678"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let archive = home.join("backup.age");
    let o = wagate_in(&home, &["backup", "--out", archive.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let olga = tg.store().audit_entries(Some("olga"), None, 1000).unwrap();
    let export = olga
        .iter()
        .find(|e| e.action == "export")
        .expect("export audited");
    assert_eq!(export.details["by"], "cli");
    assert_eq!(export.details["contact"], "+33612345678");
    assert_eq!(
        export.details["messages"], 2,
        "in and out: {}",
        export.details
    );
    let gate = tg.store().audit_entries(Some("*"), None, 1000).unwrap();
    let backup = gate
        .iter()
        .find(|e| e.action == "backup")
        .expect("backup audited");
    assert_eq!(backup.details["by"], "cli");
    assert!(backup.details["files"].as_u64().unwrap() >= 4);
    // Restored elsewhere: the restored home's own log says so, and its chains are whole.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(home.join("identity.txt"), other.path().join("identity.txt")).unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(other.path().join("gate.yaml"))
        .args(["restore", archive.to_str().unwrap()])
        .env_remove("WAGATE_PASSPHRASE")
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", output_text(&o));
    let o = wagate_in(other.path(), &["audit", "*"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains(" restore "), "{}", output_text(&o));
    let o = wagate_in(other.path(), &["audit", "--verify"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    tg.shutdown().await;
}

#[tokio::test]
async fn the_cli_honours_a_users_permissions() {
    let tg = TestGate::start().await;
    let home = tg.dir.path().to_path_buf();
    let f = home.join("users/olga.yaml");
    let yaml = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        format!("{yaml}permissions: {{ send: false, export: false }}\n"),
    )
    .unwrap();
    let o = wagate_in(
        &home,
        &[
            "send",
            "olga",
            "--to",
            "+33612345678",
            "--template",
            "hello",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("may not send"),
        "{}",
        output_text(&o)
    );
    let o = wagate_in(&home, &["export", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("may not export"),
        "{}",
        output_text(&o)
    );
    // Azarya keeps hers.
    let o = wagate_in(&home, &["export", "azarya", "--out", "-"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_forged_webhooks_is_refused_without_flooding_the_audit_log() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.FLOOD", "hi");
    let sig = wagate::whatsapp::sign(b"not-olgas-secret", &body);
    let posts = wagate::http::REJECTIONS_PER_MINUTE as usize + 15;
    for _ in 0..posts {
        let r = tg.post_raw("olga", body.clone(), Some(sig.clone())).await;
        assert_eq!(r.status(), 401);
    }
    let rejected = tg
        .store()
        .audit_entries(Some("olga"), None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "webhook.rejected")
        .count();
    assert_eq!(rejected, wagate::http::REJECTIONS_PER_MINUTE as usize);
    let o = wagate_in(tg.dir.path(), &["audit", "--verify"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    tg.shutdown().await;
}
