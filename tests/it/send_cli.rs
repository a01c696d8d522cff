//! `wagate send`, `wagate test-connection`, files sent by upload, read receipts and `check`
//! reporting a rejected token: the real binary against a home whose Graph is the fake Cloud
//! API on 127.0.0.1, beside a running gate on the same database file.

use crate::common::*;
use serde_json::Value;
use wagate::graph::simulator::Fault;

/// Ann writes to Olga, so that her 24-hour window is open; returns once it is stored.
async fn ann_writes(tg: &TestGate) {
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.ANN1", "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(tg, "olga").await;
}

/// Message bodies the fake Cloud API received for recipient `to` (`+` and digits).
fn messages_to(tg: &TestGate, to: &str) -> Vec<Value> {
    tg.fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["to"] == to && b.get("status").is_none())
        .collect()
}

#[tokio::test]
async fn send_text_goes_through_the_outbox_and_prints_the_wamid() {
    // No rule: the only message is the CLI's.
    let tg = TestGate::start_with(&[]).await;
    ann_writes(&tg).await;
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            "+33 6 12 34 56 78",
            "--text",
            "Your tour starts at 9",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(
        printed.contains("sent to +33 6 12 34 56 78 as wamid.SIM"),
        "{printed}"
    );
    let sent = messages_to(&tg, "+33612345678");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["text"]["body"], "Your tour starts at 9");
    let rows = tg.store().outbox("olga").unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].idem_key.starts_with("cli/"), "{}", rows[0].idem_key);
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("sent", 1));
    // Stored under the contact's digits, as its inbound messages are: one conversation.
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    let contacts: Vec<(String, String)> = conn
        .prepare("SELECT direction, contact FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ann = "33612345678".to_string();
    assert_eq!(
        contacts,
        vec![("in".into(), ann.clone()), ("out".into(), ann)]
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn send_text_outside_the_window_is_refused_and_queues_nothing() {
    let tg = TestGate::start_with(&[]).await;
    let o = wagate_in(
        tg.dir.path(),
        &["send", "olga", "--to", "+33699999999", "--text", "hi"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(
        printed.contains("has never written to this number"),
        "{printed}"
    );
    assert!(printed.contains("template"), "{printed}");
    assert!(printed.contains("nothing was queued"), "{printed}");
    assert!(tg.store().outbox("olga").unwrap().is_empty());
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

#[tokio::test]
async fn send_template_reaches_anyone_and_survives_two_500s() {
    let tg = TestGate::start_with(&[]).await;
    tg.fake.push_fault(Fault::http(500));
    tg.fake.push_fault(Fault::http(503));
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            "+33699999999",
            "--template",
            "tour_reminder",
            "--language",
            "fr",
            "--param",
            "Ann",
            "--param",
            "PARIS-2026",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("3 attempt(s)"),
        "{}",
        output_text(&o)
    );
    let statuses: Vec<u16> = tg.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 200]);
    let body = &tg.fake.requests()[2].body;
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "tour_reminder");
    assert_eq!(body["template"]["language"]["code"], "fr");
    let params = &body["template"]["components"][0]["parameters"];
    assert_eq!(params[0]["text"], "Ann");
    assert_eq!(params[1]["text"], "PARIS-2026");
    tg.shutdown().await;
}

#[tokio::test]
async fn send_that_graph_refuses_fails_with_a_readable_reason_and_exit_1() {
    let tg = TestGate::start_with(&[]).await;
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            "+33699999999",
            "--template",
            "hello_world",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(printed.contains("failed (outbox row"), "{printed}");
    assert!(printed.contains("131026"), "{printed}");
    assert_eq!(
        tg.fake.requests().len(),
        1,
        "a permanent error is not retried"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn send_usage_errors_exit_2() {
    let tg = TestGate::start_with(&[]).await;
    for args in [
        vec!["send", "olga", "--to", "+33612345678"],
        vec![
            "send",
            "olga",
            "--to",
            "+33612345678",
            "--text",
            "a",
            "--template",
            "t",
        ],
        vec!["send", "olga", "--to", "not-a-number", "--text", "a"],
        vec![
            "send",
            "olga",
            "--to",
            "+33612345678",
            "--file",
            "/no/such/file.pdf",
        ],
    ] {
        let o = wagate_in(tg.dir.path(), &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", output_text(&o));
    }
    let o = wagate_in(
        tg.dir.path(),
        &["send", "nobody", "--to", "+33612345678", "--text", "a"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        output_text(&o).contains("no user `nobody`"),
        "{}",
        output_text(&o)
    );
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

#[tokio::test]
async fn send_file_uploads_by_multipart_then_sends_the_media_id() {
    let tg = TestGate::start_with(&[]).await;
    ann_writes(&tg).await;
    let pdf = tg.dir.path().join("Programme PARIS-2026.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 the programme").unwrap();
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            "+33612345678",
            "--file",
            pdf.to_str().unwrap(),
            "--caption",
            "Programme",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    let reqs = tg.fake.requests();
    assert_eq!(reqs.len(), 2, "an upload, then the message");
    let up = &reqs[0].body["upload"];
    assert_eq!(up["file_name"], "Programme PARIS-2026.pdf");
    assert_eq!(up["type"], "application/pdf");
    assert_eq!(up["size"], 22);
    let media_id = up["media_id"].as_str().unwrap();
    let doc = &reqs[1].body["document"];
    assert_eq!(doc["id"], media_id);
    assert_eq!(doc["caption"], "Programme");
    assert_eq!(doc["filename"], "Programme PARIS-2026.pdf");
    assert!(
        doc.get("wagate_file").is_none(),
        "the marker never reaches Graph: {doc}"
    );
    tg.shutdown().await;
}

const FILE_PROJECT: (&str, &str) = (
    "olga/tour/project.yaml",
    "rules:\n  - name: programme\n    on: message\n    if: 'event.text == \"programme\"'\n    script: programme.rhai\n  - name: escape\n    on: message\n    if: 'event.text == \"escape\"'\n    script: escape.rhai\n",
);
const FILE_SCRIPT: (&str, &str) = (
    "olga/tour/programme.rhai",
    "reply(event, #{file: \"docs/programme.pdf\", caption: \"Programme\"});\n",
);
const ESCAPE_SCRIPT: (&str, &str) = (
    "olga/tour/escape.rhai",
    "reply(event, #{file: \"../../../data/secret.pdf\"});\n",
);

#[tokio::test]
async fn a_rule_sending_one_file_to_many_uploads_it_once() {
    let tg = TestGate::start_with(&[
        FILE_PROJECT,
        FILE_SCRIPT,
        ESCAPE_SCRIPT,
        ("olga/tour/docs/programme.pdf", "%PDF programme"),
    ])
    .await;
    let contacts = ["33600000001", "33600000002", "33600000003"];
    for (i, c) in contacts.iter().enumerate() {
        let body = text_webhook(OLGA, c, "P", &format!("wamid.FILE{i}"), "programme");
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    let reqs = tg.fake.requests();
    let uploads: Vec<&Value> = reqs
        .iter()
        .map(|r| &r.body)
        .filter(|b| b.get("upload").is_some())
        .collect();
    assert_eq!(uploads.len(), 1, "one upload for one content: {uploads:?}");
    let id = uploads[0]["upload"]["media_id"].as_str().unwrap();
    for c in contacts {
        let sent = messages_to(&tg, &format!("+{c}"));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["document"]["id"], id);
        assert_eq!(sent[0]["document"]["filename"], "programme.pdf");
    }
    tg.shutdown().await;
}

#[tokio::test]
async fn a_rule_cannot_send_a_file_outside_its_project_folder() {
    let tg = TestGate::start_with(&[FILE_PROJECT, FILE_SCRIPT, ESCAPE_SCRIPT]).await;
    let body = text_webhook(OLGA, "33600000009", "Eve", "wamid.ESC", "escape");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let runs = eventually(
        "the run to be recorded",
        std::time::Duration::from_secs(10),
        || {
            let store = tg.store().clone();
            async move {
                let runs = store.recent_runs("olga", 10).ok()?;
                runs.into_iter().find(|r| r.rule == "escape")
            }
        },
    )
    .await;
    let err = runs.error.clone().unwrap_or_default();
    assert!(err.contains("without `..`"), "{err}");
    // Nor through a symlink that leads out of it.
    let outside = tg.dir.path().join("outside.pdf");
    std::fs::write(&outside, b"%PDF not Olga's to send").unwrap();
    let link = tg.dir.path().join("rules/olga/tour/docs/programme.pdf");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let body = text_webhook(OLGA, "33600000009", "Eve", "wamid.ESC2", "programme");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let runs = eventually("the second run", std::time::Duration::from_secs(10), || {
        let store = tg.store().clone();
        async move {
            let runs = store.recent_runs("olga", 10).ok()?;
            runs.into_iter()
                .find(|r| r.rule == "programme" && r.error.is_some())
        }
    })
    .await;
    let err = runs.error.clone().unwrap_or_default();
    assert!(
        err.contains("is not a file inside the project folder"),
        "{err}"
    );
    assert!(tg.store().outbox("olga").unwrap().is_empty());
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

#[tokio::test]
async fn a_file_swapped_for_a_symlink_leading_out_before_its_upload_is_not_sent() {
    let tg = TestGate::start_with(&[
        (
            "olga/tour/project.yaml",
            "rules:\n  - name: doc\n    on: message\n    script: doc.rhai\n",
        ),
        // A message first: the file's upload waits while it is in flight to the same contact.
        (
            "olga/tour/doc.rhai",
            "send(event.from, \"first\");\nreply(event, #{file: \"doc.txt\"});\n",
        ),
        ("olga/tour/doc.txt", "Olga's programme"),
    ])
    .await;
    let outside = tg.dir.path().join("credentials-copy.txt");
    std::fs::write(&outside, b"NOT OLGA'S TO SEND").unwrap();
    tg.fake
        .push_fault(Fault::delay(std::time::Duration::from_millis(1500)));
    let body = text_webhook(OLGA, "33600000009", "Eve", "wamid.SWAP", "doc");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    // The first message has reached Graph, which holds its answer: the file is not read yet.
    tg.fake
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let rows = tg.store().outbox("olga").unwrap();
    assert_eq!(
        rows.len(),
        2,
        "the run checked the file and queued it: {rows:?}"
    );
    let doc = tg.dir.path().join("rules/olga/tour/doc.txt");
    std::fs::remove_file(&doc).unwrap();
    std::os::unix::fs::symlink(&outside, &doc).unwrap();
    let mut rows = settled(&tg, "olga").await;
    rows.sort_by_key(|r| r.id);
    assert_eq!(rows[0].state, "sent");
    assert_eq!(rows[1].state, "failed", "{:?}", rows[1]);
    let err = rows[1].error.clone().unwrap_or_default();
    assert!(
        err.contains("is a symlink leaving the project folder"),
        "{err}"
    );
    let uploads: Vec<Value> = tg
        .fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("upload").is_some() || b.get("document").is_some())
        .collect();
    assert!(uploads.is_empty(), "nothing of the file left: {uploads:?}");
    tg.shutdown().await;
}

#[tokio::test]
async fn test_connection_reports_the_number_and_a_valid_token() {
    let tg = TestGate::start_with(&[]).await;
    tg.fake
        .add_phone_number(OLGA.phone, "+33 1 23 45 67 89", "Olga Design Travels");
    let o = wagate_in(tg.dir.path(), &["test-connection", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(
        printed.contains("+33 1 23 45 67 89 \"Olga Design Travels\""),
        "{printed}"
    );
    assert!(printed.contains("quality GREEN"), "{printed}");
    assert!(printed.contains("token: valid"), "{printed}");
    assert!(!printed.contains(OLGA.token), "no token printed");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_rejected_token_shows_in_test_connection_and_check_until_it_is_accepted_again() {
    let tg = TestGate::start_with(&[]).await;
    tg.fake.push_fault(Fault::graph(
        401,
        190,
        "Error validating access token: Session has expired",
    ));
    let o = wagate_in(tg.dir.path(), &["test-connection", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("token: INVALID"),
        "{}",
        output_text(&o)
    );
    assert!(
        output_text(&o).contains("wagate creds set olga"),
        "{}",
        output_text(&o)
    );

    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(
        printed.contains("user `olga`: Graph rejected its access token"),
        "{printed}"
    );
    assert!(
        !printed.contains("azarya"),
        "only Olga's token was rejected: {printed}"
    );

    // Graph accepts it again (say Meta restored the session): the mark goes, check passes.
    let o = wagate_in(tg.dir.path(), &["test-connection", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("cleared"), "{}", output_text(&o));
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    tg.shutdown().await;
}

#[tokio::test]
async fn test_connection_names_an_unknown_phone_number_id() {
    let tg = TestGate::start_with(&[]).await;
    tg.fake.push_fault(Fault::graph(
        400,
        100,
        "Unsupported get request. Object with ID '111222333' does not exist",
    ));
    let o = wagate_in(tg.dir.path(), &["test-connection", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let printed = output_text(&o);
    assert!(
        printed.contains("phone number 111222333: Graph refuses it"),
        "{printed}"
    );
    assert!(
        printed.contains("phone_number_id in the users file"),
        "{printed}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn mark_read_true_marks_each_incoming_message_read_once() {
    let mut tg = TestGate::start().await;
    let users = tg.dir.path().join("users/olga.yaml");
    let yaml = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&users, format!("{yaml}mark_read: true\n")).unwrap();
    tg.restart().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.READ1", "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    // Meta redelivers: still one receipt.
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    let reads: Vec<_> = rows.iter().filter(|r| r.msg_type == "read").collect();
    assert_eq!(reads.len(), 1, "{rows:?}");
    assert_eq!(reads[0].state, "sent");
    let receipts: Vec<Value> = tg
        .fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["status"] == "read")
        .collect();
    assert_eq!(
        receipts,
        vec![
            serde_json::json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.READ1"})
        ]
    );
    assert_eq!(
        tg.store()
            .message_status("olga", "wamid.READ1")
            .unwrap()
            .as_deref(),
        Some("read")
    );
    // The echo reply went out too.
    assert_eq!(messages_to(&tg, "+33612345678").len(), 1);
    tg.shutdown().await;
}

#[tokio::test]
async fn without_mark_read_nothing_is_marked_read() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.NOREAD", "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    assert!(rows.iter().all(|r| r.msg_type != "read"), "{rows:?}");
    assert!(
        tg.fake
            .requests()
            .iter()
            .all(|r| r.body["status"] != "read")
    );
    tg.shutdown().await;
}
