//! Ingestion that loses nothing: order per contact and parallelism across contacts, the shared
//! route, 503 when the store cannot commit, statuses that only move forward, non-message
//! fields reaching rules, senders known only by a business-scoped id.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn texts_to(rows: &[wagate::store::OutboxRow], to: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r.body["to"] == to)
        .map(|r| r.body["text"]["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn one_contacts_events_are_handled_in_arrival_order() {
    let tg = TestGate::start().await;
    for i in 0..12 {
        for (from, tag) in [("33611111111", "a"), ("33622222222", "b")] {
            let body = text_webhook(
                OLGA,
                from,
                "X",
                &format!("wamid.{tag}{i}"),
                &format!("{tag}{i}"),
            );
            assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
        }
    }
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 24);
    let want = |tag: &str| {
        (0..12)
            .map(|i| format!("You said: {tag}{i}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts_to(&rows, "+33611111111"), want("a"));
    assert_eq!(texts_to(&rows, "+33622222222"), want("b"));
    tg.shutdown().await;
}

/// A gate with the echo rule and `spin`, a rule that loops until its 3 s wall-clock limit
/// cuts it off, for messages saying `word`.
async fn spin_gate(word: &str) -> TestGate {
    let spin = format!(
        "rules:\n  - name: spin\n    on: message\n    if: 'event.text == \"{word}\"'\n    script: spin.rhai\n"
    );
    let rules = [
        ECHO_PROJECT,
        ECHO_SCRIPT,
        ("olga/spin/project.yaml", spin.as_str()),
        ("olga/spin/spin.rhai", "loop { }\n"),
    ];
    // No operation limit here, so that only the wall clock stops the loop.
    TestGate::start_opts(&rules, "{ timeout_ms: 3000, max_operations: 0 }").await
}

#[tokio::test]
async fn a_slow_rule_holds_up_neither_other_contacts_nor_the_200s() {
    let tg = spin_gate("slow").await;
    let slow = text_webhook(OLGA, "33611111111", "A", "wamid.SLOW", "slow");
    assert_eq!(tg.post_signed(OLGA, &slow).await.status(), 200);
    // While A's event is still being dispatched, B's webhook is acked and answered.
    let fast = text_webhook(OLGA, "33622222222", "B", "wamid.FAST", "fast");
    assert_eq!(tg.post_signed(OLGA, &fast).await.status(), 200);
    let first = tg.fake.wait_for(1, T).await;
    assert_eq!(first[0].body["to"], "+33622222222", "B was answered first");
    assert!(
        tg.store()
            .outbox("olga")
            .unwrap()
            .iter()
            .all(|r| r.body["to"] != "+33611111111"),
        "A's run had not finished when B was answered"
    );
    let rows = settled(&tg, "olga").await;
    assert_eq!(texts_to(&rows, "+33611111111"), vec!["You said: slow"]);
    let runs = tg.store().recent_runs("olga", 10).unwrap();
    let spun = runs.iter().find(|r| r.rule == "spin").unwrap();
    assert!(
        spun.error.as_deref().unwrap().contains("3000 ms limit"),
        "{spun:?}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn shared_app_route_goes_by_phone_number_id_and_checks_the_owners_secret() {
    let az = (
        "azarya/auto/project.yaml",
        "rules:\n  - name: hello\n    on: message\n    script: hello.rhai\n",
    );
    let az_script = ("azarya/auto/hello.rhai", "reply(event, \"Azarya here\");\n");
    let tg = TestGate::start_with(&[ECHO_PROJECT, ECHO_SCRIPT, az, az_script]).await;
    let post = |body: Vec<u8>, sig: Option<String>| {
        let c = tg.client.clone();
        let url = tg.url("/webhook/whatsapp");
        async move {
            let mut r = c.post(url).body(body);
            if let Some(s) = sig {
                r = r.header("x-hub-signature-256", s);
            }
            r.send().await.unwrap()
        }
    };
    let to_azarya = text_webhook(AZARYA, "972501112222", "Dana", "wamid.SH1", "hi");
    let sig = wagate::whatsapp::sign(AZARYA.secret.as_bytes(), &to_azarya);
    let resp = post(to_azarya.clone(), Some(sig)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["users"], json!(["azarya"]));
    // Signed with Olga's secret: not the owner's, refused, nothing stored.
    let to_azarya2 = text_webhook(AZARYA, "972501112222", "Dana", "wamid.SH2", "hi");
    let bad = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &to_azarya2);
    assert_eq!(post(to_azarya2, Some(bad)).await.status(), 401);
    // No known phone number, signed by Olga's app: kept as foreign under Olga, 200 (Meta
    // would retry a refusal forever).
    let nobody = text_webhook(OLGA, "1", "N", "wamid.SH3", "hi");
    let nobody = String::from_utf8(nobody)
        .unwrap()
        .replace(OLGA.phone, "999")
        .into_bytes();
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &nobody);
    let v: Value = post(nobody, Some(sig)).await.json().await.unwrap();
    assert_eq!(
        (v["users"].clone(), v["foreign"].clone()),
        (json!(["olga"]), json!(1))
    );
    // A template update carries no metadata: it is routed by its account (WABA) id.
    let tpl = fixture_for(OLGA, "java-bindambc__rejectedTemplate.json");
    let tpl = String::from_utf8(tpl)
        .unwrap()
        .replace("880480871844883", OLGA.waba)
        .into_bytes();
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &tpl);
    let v: Value = post(tpl, Some(sig)).await.json().await.unwrap();
    assert_eq!(v["users"], json!(["olga"]));
    tg.fake.wait_for(1, T).await;
    settled(&tg, "azarya").await;
    let reqs = tg.fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].phone_number_id, AZARYA.phone);
    assert_eq!(
        tg.store().counts("azarya").unwrap().1,
        1,
        "the refused body stored nothing"
    );
    assert_eq!(
        tg.store().counts("olga").unwrap().1,
        2,
        "the message for no served number (foreign) and the template update are Olga's"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_store_that_cannot_commit_answers_503_and_meta_can_retry() {
    let tg = TestGate::start().await;
    let db = tg.store().path().to_path_buf();
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.LOCKED", "hi");
    {
        // Another process holds the database's write lock longer than the gate will wait.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let resp = tg.post_signed(OLGA, &body).await;
        assert_eq!(resp.status(), 503);
        conn.execute_batch("ROLLBACK").unwrap();
    }
    // Meta's retry then succeeds, and the message is answered once.
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    assert_eq!(settled(&tg, "olga").await.len(), 1);
    tg.shutdown().await;
}

fn status_webhook(
    u: TestUser,
    wamid: &str,
    status: &str,
    ts: u64,
    errors: Option<Value>,
) -> Vec<u8> {
    let mut s = json!({"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": "33612345678"});
    if let Some(e) = errors {
        s["errors"] = e;
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": u.waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": u.phone}, "statuses": [s]}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_status_that_arrives_before_its_send_is_recorded_is_applied_when_it_is() {
    let tg = TestGate::start().await;
    // Meta may post a status before the sender's commit of the send it is about. The fake
    // Cloud API numbers its wamids, so the echo's wamid is known before it is sent.
    let wamid = format!("wamid.SIM{}{:08}", OLGA.phone, 1);
    for (st, ts) in [("delivered", 20), ("read", 30)] {
        let v: Value = tg
            .post_signed(OLGA, &status_webhook(OLGA, &wamid, st, ts, None))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["stored"], 1, "{v}");
    }
    assert!(tg.store().message_state("olga", &wamid).unwrap().is_none());
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.EARLY1", "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    settled(&tg, "olga").await;
    assert_eq!(tg.fake.requests()[0].wamid.as_deref(), Some(wamid.as_str()));
    let (status, _) = tg.store().message_state("olga", &wamid).unwrap().unwrap();
    assert_eq!(status, "read", "the statuses that came first are not lost");
    // A later, lower status still does not move it back.
    assert_eq!(
        tg.post_signed(OLGA, &status_webhook(OLGA, &wamid, "sent", 40, None))
            .await
            .status(),
        200
    );
    let (status, _) = tg.store().message_state("olga", &wamid).unwrap().unwrap();
    assert_eq!(status, "read");
    tg.shutdown().await;
}

#[tokio::test]
async fn statuses_only_move_forward_and_failures_keep_their_details() {
    let tg = TestGate::start().await;
    for (id, text) in [("wamid.S1", "one"), ("wamid.S2", "two")] {
        let body = text_webhook(OLGA, "33612345678", "Ann", id, text);
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    tg.fake.wait_for(2, T).await;
    settled(&tg, "olga").await;
    let sent: Vec<String> = tg
        .fake
        .requests()
        .iter()
        .map(|r| r.wamid.clone().unwrap())
        .collect();
    let (w1, w2) = (&sent[0], &sent[1]);
    // read arrives before delivered (Meta does not guarantee order): read stays read.
    for (st, ts) in [("sent", 10), ("read", 30), ("delivered", 20), ("sent", 40)] {
        assert_eq!(
            tg.post_signed(OLGA, &status_webhook(OLGA, w1, st, ts, None))
                .await
                .status(),
            200
        );
    }
    let errors = json!([{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                         "error_data": {"details": "Message Undeliverable."}}]);
    for (st, ts, e) in [("failed", 10, Some(errors)), ("delivered", 20, None)] {
        assert_eq!(
            tg.post_signed(OLGA, &status_webhook(OLGA, w2, st, ts, e))
                .await
                .status(),
            200
        );
    }
    // Redelivery of the same status is stored once.
    let v: Value = tg
        .post_signed(OLGA, &status_webhook(OLGA, w1, "read", 30, None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["duplicates"], 1);
    let (s1, _) = tg.store().message_state("olga", w1).unwrap().unwrap();
    assert_eq!(s1, "read");
    let (s2, err) = tg.store().message_state("olga", w2).unwrap().unwrap();
    assert_eq!(s2, "failed");
    let err: Value = serde_json::from_str(&err.expect("error details kept")).unwrap();
    assert_eq!(err[0]["code"], 131026);
    tg.shutdown().await;
}

#[tokio::test]
async fn non_message_fields_reach_their_rules() {
    let project = (
        "olga/watch/project.yaml",
        "rules:
  - name: on-status
    on: status
    script: watch.rhai
    call: note
  - name: on-template
    on: template_status
    script: watch.rhai
    call: note
  - name: on-name
    on: phone_number_name_update
    script: watch.rhai
    call: note
  - name: on-any
    on: webhook
    if: 'event.kind != \"message\" && event.kind != \"status\"'
    script: watch.rhai
    call: note
",
    );
    let script = (
        "olga/watch/watch.rhai",
        "fn note(event) {\n  let what = if event.kind == \"status\" { event.status } else { event.raw.to_json() };\n  send(\"+15550000000\", #{ template: \"note\", params: [event.kind + \": \" + what] });\n}\n",
    );
    let tg = TestGate::start_with(&[project, script]).await;
    for f in [
        "php-netflie__a_status_notification.json",
        "java-bindambc__rejectedTemplate.json",
        "java-bindambc__phoneNumberNameUpdate.json",
        "meta-openapi__webhook__group-settings-update.json",
    ] {
        assert_eq!(
            tg.post_signed(OLGA, &fixture_for(OLGA, f)).await.status(),
            200,
            "{f}"
        );
    }
    let rows = settled(&tg, "olga").await;
    let mut texts: Vec<String> = rows
        .iter()
        .map(|r| {
            r.body["template"]["components"][0]["parameters"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    texts.sort();
    assert_eq!(texts.len(), 6, "{texts:#?}");
    let starts = |p: &str| texts.iter().filter(|t| t.starts_with(p)).count();
    assert_eq!(starts("status: "), 1);
    assert_eq!(
        starts("message_template_status_update: "),
        2,
        "on: template_status and on: webhook"
    );
    assert_eq!(
        starts("phone_number_name_update: "),
        2,
        "on: phone_number_name_update and on: webhook"
    );
    assert_eq!(
        starts("group_settings_update: "),
        1,
        "a field no rule names reaches on: webhook"
    );
    assert!(texts.iter().any(|t| t.contains("REJECTED")));
    tg.shutdown().await;
}

#[tokio::test]
async fn unknown_types_and_username_only_senders_are_kept_dispatched_and_replyable() {
    let tg = TestGate::start_with(&[
        (
            "olga/all/project.yaml",
            "rules:\n  - name: any\n    on: message\n    script: any.rhai\n",
        ),
        (
            "olga/all/any.rhai",
            "reply(event, \"got \" + event.type);\n",
        ),
    ])
    .await;
    let unknown = fixture_for(OLGA, "php-netflie__an_unknown_notification.json");
    let unknown = String::from_utf8(unknown)
        .unwrap()
        .replace("\"PHONE_NUMBER\"", "\"33699999999\"")
        .into_bytes();
    assert_eq!(tg.post_signed(OLGA, &unknown).await.status(), 200);
    let bsuid = fixture_for(OLGA, "js-secreto__v25-incoming.json");
    let v: Value = serde_json::from_slice(&bsuid).unwrap();
    let mut v2 = v.clone();
    // The same user, but as Meta sends a username-only user: no `from`, no wa_id.
    let m = &mut v2["entry"][0]["changes"][0]["value"];
    m["messages"][0].as_object_mut().unwrap().remove("from");
    m["contacts"][0].as_object_mut().unwrap().remove("wa_id");
    assert_eq!(
        tg.post_signed(OLGA, v2.to_string().as_bytes())
            .await
            .status(),
        200
    );
    tg.fake.wait_for(2, T).await;
    let mut rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 2);
    // Two contacts are dispatched in parallel: their replies may be queued in either order.
    rows.sort_by_key(|r| r.body.get("to").is_none());
    assert_eq!(rows[0].body["to"], "+33699999999");
    assert_eq!(rows[0].body["text"]["body"], "got unknown");
    assert_eq!(rows[1].body["recipient"], "US.13491208655302741918");
    assert!(rows[1].body.get("to").is_none());
    assert_eq!(rows[1].body["context"]["message_id"], "ABGGFlA5Fpa");
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    assert_eq!(
        tg.store()
            .contact_name("olga", "US.13491208655302741918")
            .unwrap()
            .as_deref(),
        Some("test user name")
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn contact_profile_names_are_kept_per_user_and_follow_changes() {
    let tg = TestGate::start().await;
    let b1 = text_webhook(OLGA, "33612345678", "Ann", "wamid.N1", "hi");
    let b2 = text_webhook(OLGA, "33612345678", "Ann Smith", "wamid.N2", "hi again");
    let b3 = text_webhook(AZARYA, "33612345678", "Annie", "wamid.N3", "shalom");
    for (u, b) in [(OLGA, b1), (OLGA, b2), (AZARYA, b3)] {
        assert_eq!(tg.post_signed(u, &b).await.status(), 200);
    }
    assert_eq!(
        tg.store()
            .contact_name("olga", "33612345678")
            .unwrap()
            .as_deref(),
        Some("Ann Smith")
    );
    assert_eq!(
        tg.store()
            .contact_name("azarya", "33612345678")
            .unwrap()
            .as_deref(),
        Some("Annie")
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn inbound_media_is_fetched_in_the_background_retried_and_hashed() {
    use sha2::{Digest, Sha256};
    use wagate::graph::simulator::Fault;
    let tg = TestGate::start_with(&[]).await;
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    tg.fake
        .add_media("8472976218001204", bytes.clone(), "image/jpeg");
    // The first URL lookup answers only after 2 s; the first download then fails with a 500.
    tg.fake.push_fault(Fault::delay(Duration::from_secs(2)));
    tg.fake.push_fault(Fault::http(500));
    let body = fixture_for(OLGA, "java-bindambc__imageMessage.json");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = tg.store().media("olga").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].state, "pending",
        "the webhook was answered before the download"
    );
    let store = tg.store().clone();
    let done = eventually("the media download", T, || {
        let store = store.clone();
        async move {
            store
                .media("olga")
                .ok()?
                .into_iter()
                .find(|m| m.state != "pending")
        }
    })
    .await;
    assert_eq!(done.state, "done", "{done:?}");
    assert_eq!(done.attempts, 2);
    assert_eq!(
        done.wamid.as_deref(),
        Some("wamid.HBgODE0NDQwANNTTBGRjkUyNzkzNhUCABIYFDNF5NzAzMDkQjBEQ3NjdBA==")
    );
    assert_eq!(
        done.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&bytes)).as_str())
    );
    assert_eq!(done.path.as_deref(), Some("olga/8472976218001204.jpg"));
    let file = tg.dir.path().join("data/media/olga/8472976218001204.jpg");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    // A media id Graph does not know fails for good, with Graph's reason.
    let body = String::from_utf8(fixture_for(OLGA, "java-bindambc__videoMessage.json")).unwrap();
    assert_eq!(tg.post_signed(OLGA, body.as_bytes()).await.status(), 200);
    let store = tg.store().clone();
    let failed = eventually("the unknown media to fail", T, || {
        let store = store.clone();
        async move {
            store
                .media("olga")
                .ok()?
                .into_iter()
                .find(|m| m.state == "failed")
        }
    })
    .await;
    let reason = failed.error.unwrap();
    assert!(
        reason.contains("(#100)") && reason.contains("does not exist"),
        "{reason}"
    );
    assert_eq!(failed.attempts, 1, "a permanent error is not retried");
    tg.shutdown().await;
}

#[tokio::test]
async fn events_no_live_rule_wants_are_stored_done_and_a_new_rule_gets_the_next_ones() {
    // Olga's only rule answers messages: a status is wanted by nothing.
    let tg = TestGate::start().await;
    let ack = |v: &Value| (v["stored"].as_u64(), v["to_dispatch"].as_u64());
    let resp = tg
        .post_signed(
            OLGA,
            &status_webhook(OLGA, "wamid.UNKNOWN1", "delivered", 1_700_000_000, None),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ack(&resp.json().await.unwrap()), (Some(1), Some(0)));
    // Done in the very commit the 200 waited for: nothing is pending, nothing ran.
    let (_, events, pending) = tg.store().counts("olga").unwrap();
    assert_eq!((events, pending), (1, 0));
    let msg = text_webhook(OLGA, "33611111111", "A", "wamid.WANTED", "hello");
    let resp = tg.post_signed(OLGA, &msg).await;
    assert_eq!(ack(&resp.json().await.unwrap()), (Some(1), Some(1)));
    assert_eq!(settled(&tg, "olga").await.len(), 1);
    assert!(
        tg.store()
            .runs(Some("olga"), None, 100)
            .unwrap()
            .iter()
            .all(|r| r.rule == "echo"),
        "only the message ran a rule"
    );
    // A rule on statuses goes live: the next status is queued for it and runs it.
    let seen = tg.reload_count();
    std::fs::create_dir_all(tg.dir.path().join("rules/olga/statuses")).unwrap();
    tg.write_rule_file(
        "olga/statuses/s.rhai",
        "set_state(\"last\", event.status);\n",
    );
    tg.write_rule_file(
        "olga/statuses/project.yaml",
        "rules:\n  - name: keep\n    on: status\n    script: s.rhai\n",
    );
    let reload = tg.next_reload(seen).await;
    assert!(reload.error.is_none(), "{:?}", reload.error);
    let resp = tg
        .post_signed(
            OLGA,
            &status_webhook(OLGA, "wamid.UNKNOWN2", "read", 1_700_000_001, None),
        )
        .await;
    assert_eq!(ack(&resp.json().await.unwrap()), (Some(1), Some(1)));
    let store = tg.store().clone();
    let last = eventually("the status rule to run", T, || {
        let store = store.clone();
        async move {
            store
                .state_get("olga", "olga/statuses", "last")
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(last, json!("read"));
    tg.shutdown().await;
}

#[tokio::test]
async fn a_dispatch_that_cannot_commit_is_run_again_and_the_contacts_order_holds() {
    // The commit of a "hold" event comes after the 3 s spin: late enough for the test to
    // hold the database's lock by then.
    let tg = spin_gate("hold").await;
    let from = "33611111111";
    let post = |wamid: &'static str, text: &'static str| {
        let body = text_webhook(OLGA, from, "A", wamid, text);
        let tg = &tg;
        async move { assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200) }
    };
    post("wamid.HOLD", "hold").await;
    let inflight = tg.gate().runs_in_flight.clone();
    eventually("the spinning run to start", T, || {
        let n = inflight.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    post("wamid.B", "b").await;
    post("wamid.C", "c").await;
    {
        // Another process holds the write lock past the run's end and the gate's wait for it
        // (300 ms): the event's commit fails, and it is run again, its contact's later events
        // waiting behind it. The lock goes once the second run has started.
        let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let running = |want: bool| {
            let n = inflight.load(std::sync::atomic::Ordering::SeqCst);
            async move { ((n >= 1) == want).then_some(()) }
        };
        eventually("the first run to end", T, || running(false)).await;
        eventually("the event to be run again", T, || running(true)).await;
        assert!(
            tg.fake.requests().is_empty(),
            "nothing was sent while the store could not commit"
        );
        conn.execute_batch("ROLLBACK").unwrap();
    }
    // The event is run again (the spin with it), then b and c: each answered once, in order.
    let reqs = tg.fake.wait_for(3, Duration::from_secs(30)).await;
    let texts: Vec<&str> = reqs
        .iter()
        .map(|r| r.body["text"]["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["You said: hold", "You said: b", "You said: c"]);
    assert_eq!(settled(&tg, "olga").await.len(), 3);
    tg.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_body_is_kept_once_and_a_different_body_repeating_an_event_is_kept() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33611111111", "A", "wamid.ONCE", "hello");
    for _ in 0..3 {
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    let (bodies, events, _) = tg.store().counts("olga").unwrap();
    assert_eq!((bodies, events), (1, 1), "Meta's redeliveries add nothing");
    // The same message in another envelope (a new name): its bytes are kept, its event is not
    // stored twice.
    let other = text_webhook(OLGA, "33611111111", "Another name", "wamid.ONCE", "hello");
    let resp = tg.post_signed(OLGA, &other).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["stored"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    let (bodies, events, _) = tg.store().counts("olga").unwrap();
    assert_eq!((bodies, events), (2, 1));
    assert_eq!(settled(&tg, "olga").await.len(), 1, "answered once");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_message_from_the_future_opens_the_window_from_now_and_one_without_a_sender_joins_no_conversation()
 {
    let tg = TestGate::start_with(&[]).await;
    let mut future: Value = serde_json::from_slice(&text_webhook(
        OLGA,
        "33611112222",
        "Fut",
        "wamid.FUT1",
        "hi",
    ))
    .unwrap();
    let later = now_secs() + 10 * 365 * 86_400;
    future["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        later.to_string().into();
    let nobody = json!({"object": "whatsapp_business_account", "entry": [{"id": OLGA.waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": OLGA.phone},
                  "messages": [{"id": "wamid.NOFROM", "timestamp": now_secs().to_string(), "type": "text", "text": {"body": "?"}}]}}]}]});
    for body in [future, nobody] {
        let v: Value = tg
            .post_signed(OLGA, body.to_string().as_bytes())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["stored"], 1, "{v}");
    }
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // The message keeps WhatsApp's time; the window runs from no later than now.
    assert_eq!(
        one("SELECT timestamp FROM messages WHERE wamid = 'wamid.FUT1'"),
        later
    );
    let opened = one("SELECT last_inbound_at FROM contacts WHERE contact = '33611112222'");
    assert!(opened <= now_secs(), "{opened}");
    // The sender-less message is an event (rules see it), in no conversation.
    assert_eq!(
        one("SELECT COUNT(*) FROM events WHERE dedupe_key = 'msg:wamid.NOFROM'"),
        1
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM messages WHERE wamid = 'wamid.NOFROM' OR contact = ''"),
        0
    );
    assert_eq!(one("SELECT COUNT(*) FROM contacts WHERE contact = ''"), 0);
    tg.shutdown().await;
}
