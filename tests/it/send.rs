//! The send pipeline against the fake Cloud API: retries that end in one delivery, permanent
//! errors that stop at once with a readable reason, a rejected token that stops a user's sends
//! and shows in /healthz, and the 24-hour window checked before any call.

use crate::common::*;
use serde_json::Value;
use wagate::graph::simulator::Fault;

async fn message(tg: &TestGate, wamid: &str) -> Vec<wagate::store::OutboxRow> {
    let body = text_webhook(OLGA, "33612345678", "Ann", wamid, "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(tg, "olga").await
}

#[tokio::test]
async fn a_429_with_retry_after_is_delivered_once_after_the_wait() {
    let tg = TestGate::start().await;
    let mut f = Fault::graph(429, 130429, "Rate limit hit");
    f.retry_after = Some(1);
    tg.fake.push_fault(f);
    let rows = message(&tg, "wamid.T429").await;
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("sent", 2));
    let statuses: Vec<u16> = tg.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
    tg.shutdown().await;
}

#[tokio::test]
async fn a_closed_window_stops_after_one_attempt_with_a_readable_reason() {
    let tg = TestGate::start().await;
    tg.fake
        .push_fault(Fault::graph(400, 131047, "Re-engagement message"));
    let rows = message(&tg, "wamid.T131047").await;
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("failed", 1));
    let reason = rows[0].error.as_deref().unwrap();
    assert!(
        reason.contains("24-hour customer-service window is closed"),
        "{reason}"
    );
    assert!(reason.contains("template"), "{reason}");
    assert_eq!(tg.fake.requests().len(), 1);
    tg.shutdown().await;
}

#[tokio::test]
async fn a_rejected_token_stops_the_users_sends_and_shows_in_healthz() {
    let tg = TestGate::start().await;
    tg.fake.push_fault(Fault::graph(
        401,
        190,
        "Error validating access token: Session has expired",
    ));
    let rows = message(&tg, "wamid.T190a").await;
    assert_eq!(rows[0].state, "failed");
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("access token is invalid or expired")
    );
    let h: Value = tg
        .client
        .get(tg.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["tokens"]["olga"]["state"], "invalid", "{h}");
    assert_eq!(h["tokens"]["azarya"]["state"], "ok", "{h}");
    // The next message of Olga is refused before any call: the fake sees nothing more.
    let rows = message(&tg, "wamid.T190b").await;
    assert_eq!(rows[1].state, "failed");
    assert!(
        rows[1]
            .error
            .as_deref()
            .unwrap()
            .contains("wagate creds set olga"),
        "{:?}",
        rows[1].error
    );
    assert_eq!(tg.fake.requests().len(), 1);
    tg.shutdown().await;
}

#[tokio::test]
async fn free_form_to_a_contact_outside_the_window_is_refused_before_any_call() {
    let tg = TestGate::start().await;
    // A row queued for a contact who never wrote (as a CLI or an older rule could queue it).
    let (_, body) =
        wagate::domain::outgoing::build("+33699999999", &Value::from("hello"), None).unwrap();
    let row = wagate::store::NewOutbound {
        idem_key: "test:window".into(),
        recipient: "+33699999999".into(),
        msg_type: "text".into(),
        body,
    };
    tg.store().enqueue("olga", &[row]).unwrap();
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows[0].state, "failed");
    let reason = rows[0].error.as_deref().unwrap();
    assert!(
        reason.contains("has never written to this number"),
        "{reason}"
    );
    assert!(
        reason.contains("only an approved template can reach them"),
        "{reason}"
    );
    assert!(tg.fake.requests().is_empty(), "no call was made");
    tg.shutdown().await;
}
