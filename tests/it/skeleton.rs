//! The walking skeleton end to end: signed webhook in, Rhai reply out, through store and
//! outbox; signatures, handshake, restart, isolation between users.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn signed_text_message_gets_exactly_one_quoted_reply_with_the_users_token() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.HELLO1", "Hello there");
    let resp = tg.post_signed(OLGA, &body).await;
    assert_eq!(resp.status(), 200);
    let reqs = tg.fake.wait_for(1, T).await;
    assert_eq!(reqs.len(), 1, "one reply reached the Cloud API");
    let rows = settled(&tg, "olga").await;
    let r = &tg.fake.requests()[0];
    assert_eq!(r.phone_number_id, OLGA.phone);
    assert_eq!(r.version, "v23.0");
    assert_eq!(
        r.bearer.as_ref().map(|t| t.expose().as_str()),
        Some(OLGA.token)
    );
    assert_eq!(r.body["to"], "+33612345678");
    assert_eq!(r.body["type"], "text");
    assert_eq!(r.body["text"]["body"], "You said: Hello there");
    assert_eq!(r.body["context"]["message_id"], "wamid.HELLO1");
    assert_eq!(r.status, 200);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "sent");
    assert_eq!(rows[0].wamid, r.wamid, "the returned wamid is recorded");
    assert_eq!(
        tg.fake.requests().len(),
        1,
        "still exactly one request after the outbox settled"
    );
    let status = tg
        .store()
        .message_status("olga", r.wamid.as_deref().unwrap())
        .unwrap();
    assert_eq!(status.as_deref(), Some("sent"));
    tg.shutdown().await;
}

#[tokio::test]
async fn bad_or_missing_signature_is_401_and_stores_nothing() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.BAD", "hi");
    let wrong = wagate::whatsapp::sign(b"not-the-secret", &body);
    let azaryas = wagate::whatsapp::sign(AZARYA.secret.as_bytes(), &body);
    let cases = [
        (None, "missing"),
        (Some(wrong), "does not match"),
        (Some(azaryas), "does not match"),
        (Some("sha256=zz".to_string()), "not of the form"),
        (Some("garbage".to_string()), "not of the form"),
    ];
    for (sig, reason) in cases {
        let resp = tg.post_raw("olga", body.clone(), sig.clone()).await;
        assert_eq!(resp.status(), 401, "signature {sig:?}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(reason), "{v}");
    }
    // A body signed correctly but altered in one byte is refused too.
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &body);
    let mut altered = body.clone();
    let i = altered.iter().position(|b| *b == b'h').unwrap();
    altered[i] = b'H';
    assert_eq!(tg.post_raw("olga", altered, Some(sig)).await.status(), 401);
    assert_eq!(
        tg.store().counts("olga").unwrap(),
        (0, 0, 0),
        "nothing stored"
    );
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

#[tokio::test]
async fn handshake_answers_the_challenge_only_for_the_right_verify_token() {
    let tg = TestGate::start().await;
    let get = |q: String| {
        let url = tg.url(&format!("/webhook/whatsapp/{q}"));
        let c = tg.client.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let ok = get(format!(
        "olga?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1158201444",
        OLGA.verify
    ))
    .await;
    assert_eq!(ok, (200, "1158201444".to_string()));
    let (s, body) =
        get("olga?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=42".into()).await;
    assert_eq!(s, 403);
    assert!(!body.contains("42"));
    // Azarya's verify token does not open Olga's endpoint.
    let (s, _) = get(format!(
        "olga?hub.mode=subscribe&hub.verify_token={}&hub.challenge=42",
        AZARYA.verify
    ))
    .await;
    assert_eq!(s, 403);
    let (s, _) = get(format!(
        "olga?hub.mode=unsubscribe&hub.verify_token={}&hub.challenge=42",
        OLGA.verify
    ))
    .await;
    assert_eq!(s, 403);
    let (s, _) = get(format!(
        "olga?hub.mode=subscribe&hub.verify_token={}",
        OLGA.verify
    ))
    .await;
    assert_eq!(s, 403, "no challenge, nothing to echo");
    let (s, _) = get(format!(
        "nobody?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1",
        OLGA.verify
    ))
    .await;
    assert_eq!(s, 404);
    let resp = tg.post_signed(OLGA, b"{}").await;
    assert_eq!(resp.status(), 200);
    let resp = tg.post_raw("nobody", b"{}".to_vec(), None).await;
    assert_eq!(resp.status(), 404);
    tg.shutdown().await;
}

#[tokio::test]
async fn data_survive_a_restart_and_a_redelivery_is_not_answered_twice() {
    let mut tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.PERSIST", "Persist me");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    settled(&tg, "olga").await;
    let db = tg.store().path().to_path_buf();
    tg.restart().await;
    assert_eq!(tg.store().path(), db);
    let (bodies, events, pending) = tg.store().counts("olga").unwrap();
    assert_eq!((bodies, events, pending), (1, 1, 0));
    let rows = tg.store().outbox("olga").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "sent");
    assert_eq!(
        tg.store()
            .message_status("olga", "wamid.PERSIST")
            .unwrap()
            .as_deref(),
        Some("received")
    );
    // Meta redelivers the same webhook after the restart: stored once, answered once.
    let resp = tg.post_signed(OLGA, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["stored"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    // A second, new message after the restart is answered: the pipeline runs again.
    let body2 = text_webhook(OLGA, "33612345678", "Ann", "wamid.PERSIST2", "Again");
    assert_eq!(tg.post_signed(OLGA, &body2).await.status(), 200);
    tg.fake.wait_for(2, T).await;
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        tg.fake.requests().len(),
        2,
        "the redelivery was not answered"
    );
    assert_eq!(
        tg.fake.requests()[1].body["context"]["message_id"],
        "wamid.PERSIST2"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn rules_act_as_their_own_user_only() {
    let azarya_rule = (
        "azarya/auto/project.yaml",
        "rules:\n  - name: hello\n    on: message\n    script: hello.rhai\n",
    );
    let azarya_script = ("azarya/auto/hello.rhai", "reply(event, \"Azarya here\");\n");
    let tg = TestGate::start_with(&[ECHO_PROJECT, ECHO_SCRIPT, azarya_rule, azarya_script]).await;
    let body = text_webhook(AZARYA, "972501112222", "Dana", "wamid.AZ1", "shalom");
    assert_eq!(tg.post_signed(AZARYA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    settled(&tg, "azarya").await;
    let reqs = tg.fake.requests();
    assert_eq!(reqs.len(), 1, "only Azarya's rule ran for Azarya's message");
    assert_eq!(reqs[0].phone_number_id, AZARYA.phone);
    assert_eq!(reqs[0].bearer.as_ref().unwrap().expose(), AZARYA.token);
    assert_eq!(reqs[0].body["text"]["body"], "Azarya here");
    assert!(tg.store().outbox("olga").unwrap().is_empty());
    // Azarya's webhook carrying Olga's phone number id is kept but not dispatched.
    let foreign = text_webhook(OLGA, "33612345678", "Ann", "wamid.FOREIGN", "hi");
    let resp = tg.post_signed(AZARYA, &foreign).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["foreign"], 1);
    settled(&tg, "azarya").await;
    assert_eq!(
        tg.fake.requests().len(),
        1,
        "no rule ran for a foreign number"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_failing_rule_fails_alone_and_a_5xx_is_retried() {
    let broken = (
        "olga/broken/project.yaml",
        "rules:\n  - name: boom\n    on: message\n    script: boom.rhai\n",
    );
    let boom = ("olga/broken/boom.rhai", "let x = 1;\nx.no_such_method();\n");
    let tg = TestGate::start_with(&[ECHO_PROJECT, ECHO_SCRIPT, broken, boom]).await;
    tg.fake
        .push_fault(wagate::graph::simulator::Fault::http(500));
    tg.fake
        .push_fault(wagate::graph::simulator::Fault::http(503));
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.RETRY", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(3, T).await;
    let rows = settled(&tg, "olga").await;
    assert_eq!(
        rows.len(),
        1,
        "the broken rule queued nothing; the echo rule one reply"
    );
    assert_eq!(rows[0].state, "sent");
    assert_eq!(rows[0].attempts, 3, "500, 503, then accepted");
    let statuses: Vec<u16> = tg.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 200]);
    let runs = tg.store().recent_runs("olga", 10).unwrap();
    let boom_run = runs
        .iter()
        .find(|r| r.rule == "boom")
        .expect("the failed run is traced");
    assert_eq!(boom_run.outcome, "error");
    let err = boom_run.error.as_deref().unwrap();
    assert!(err.starts_with("rules/olga/broken/boom.rhai:2:"), "{err}");
    tg.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_clear_statuses() {
    let tg = TestGate::start().await;
    let resp = tg.post_signed(OLGA, b"this is not json").await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
    assert_eq!(tg.post_signed(OLGA, b"[1,2,3]").await.status(), 400);
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(tg.post_signed(OLGA, &huge).await.status(), 413);
    assert_eq!(tg.store().counts("olga").unwrap(), (0, 0, 0));
    tg.shutdown().await;
}

/// A message kept as foreign while Olga's phone_number_id was mistyped is not a duplicate of
/// the same message once her file is right: the owned copy is stored, run and answered.
#[tokio::test]
async fn a_foreign_copy_gives_way_to_the_users_own_once_her_number_is_right() {
    let mut tg = TestGate::start().await;
    let real = TestUser {
        phone: "555000111",
        ..OLGA
    };
    tg.fake.expect_token(
        real.phone,
        wagate::domain::Secret::new(OLGA.token.to_string()),
    );
    let body = text_webhook(real, "33612345678", "Ann", "wamid.TYPO", "hi");
    let v: Value = tg.post_signed(OLGA, &body).await.json().await.unwrap();
    assert_eq!(
        (v["foreign"].as_u64(), v["to_dispatch"].as_u64()),
        (Some(1), Some(0))
    );
    // Olga corrects her file and the gate starts again; the same message comes again.
    let file = tg.dir.path().join("users/olga.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, yaml.replace(OLGA.phone, real.phone)).unwrap();
    tg.restart().await;
    let v: Value = tg.post_signed(OLGA, &body).await.json().await.unwrap();
    assert_eq!(
        (
            v["stored"].as_u64(),
            v["duplicates"].as_u64(),
            v["foreign"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{v}"
    );
    tg.fake.wait_for(1, T).await;
    let reqs = tg.fake.requests();
    assert_eq!(reqs[0].phone_number_id, real.phone);
    assert_eq!(reqs[0].body["text"]["body"], "You said: hi");
    // Once owned, it is a duplicate like any other.
    let v: Value = tg.post_signed(OLGA, &body).await.json().await.unwrap();
    assert_eq!(
        (v["stored"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    settled(&tg, "olga").await;
    assert_eq!(tg.fake.requests().len(), 1, "answered once");
    tg.shutdown().await;
}
