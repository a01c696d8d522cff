//! The HTTP edge's corners: the shared route's handshake and signature check, slow clients,
//! what /healthz tells whom, and error bodies.

use crate::common::*;

/// GET `path` on the gate: (status, body).
async fn get(tg: &TestGate, path: &str) -> (u16, String) {
    let r = tg.client.get(tg.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_shared_route_answers_metas_handshake_with_any_served_users_verify_token() {
    let tg = TestGate::start().await;
    for u in [OLGA, AZARYA] {
        let q = format!(
            "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token={}&hub.challenge=42",
            u.verify
        );
        assert_eq!(get(&tg, &q).await, (200, "42".to_string()), "{}", u.name);
    }
    let refused = [
        "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=42".to_string(),
        "/webhook/whatsapp?hub.mode=subscribe&hub.challenge=42".to_string(),
        format!(
            "/webhook/whatsapp?hub.mode=unsubscribe&hub.verify_token={}&hub.challenge=42",
            OLGA.verify
        ),
        format!(
            "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token={}",
            OLGA.verify
        ),
        // A prefix of a real token is not that token.
        "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token=verify-&hub.challenge=42"
            .to_string(),
    ];
    for q in refused {
        let (status, body) = get(&tg, &q).await;
        assert_eq!(status, 403, "{q}");
        assert!(!body.contains("42"), "{q}: {body}");
    }
    tg.shutdown().await;
}

/// POSTs `body` to the shared route with `signature` as X-Hub-Signature-256.
async fn post_shared(tg: &TestGate, body: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut req = tg
        .client
        .post(tg.url("/webhook/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    req.send().await.unwrap()
}

/// `text_webhook` for Olga with her phone number id replaced by `phone`.
fn text_for_number(phone: &str, wamid: &str) -> Vec<u8> {
    String::from_utf8(text_webhook(OLGA, "33612345678", "Ann", wamid, "hi"))
        .unwrap()
        .replace(
            &format!("\"phone_number_id\":\"{}\"", OLGA.phone),
            &format!("\"phone_number_id\":\"{phone}\""),
        )
        .into_bytes()
}

/// The shared route checks the signature before it reads anything: a body no served app
/// signed is 401 whatever it holds (garbage, an unknown number, a served one), so it cannot be
/// used to learn which numbers are served, and nothing is stored. A body signed by a served
/// app for a number nobody serves is kept as foreign under the signer and answered 200, so
/// Meta stops retrying it.
#[tokio::test]
async fn the_shared_route_checks_the_signature_before_anything_else() {
    let tg = TestGate::start().await;
    let forged = |b: &[u8]| Some(wagate::whatsapp::sign(b"not-a-served-secret", b));
    let unknown = text_for_number("999", "wamid.SH-UNKNOWN");
    let served = text_for_number(OLGA.phone, "wamid.SH-SERVED");
    let cases: [(&str, &[u8], Option<String>); 6] = [
        ("unsigned garbage", b"not json at all", None),
        (
            "garbage, forged signature",
            b"not json at all",
            forged(b"not json at all"),
        ),
        ("unsigned, unknown number", &unknown, None),
        ("forged, unknown number", &unknown, forged(&unknown)),
        ("unsigned, served number", &served, None),
        ("forged, served number", &served, forged(&served)),
    ];
    for (what, body, sig) in cases {
        let r = post_shared(&tg, body, sig).await;
        assert_eq!(r.status(), 401, "{what}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    for u in ["olga", "azarya"] {
        assert_eq!(
            tg.store().counts(u).unwrap(),
            (0, 0, 0),
            "nothing stored for {u}"
        );
    }
    // Signed by Olga's app, for a number nobody serves: kept (never dispatched), 200.
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &unknown);
    let r = post_shared(&tg, &unknown, Some(sig)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["users"], serde_json::json!(["olga"]));
    assert_eq!(
        (v["foreign"].as_u64(), v["stored"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(tg.store().counts("olga").unwrap(), (1, 1, 0));
    // Signed by a served app but not JSON: 400, audited under the signer.
    let garbage = b"still not json";
    let sig = wagate::whatsapp::sign(AZARYA.secret.as_bytes(), garbage);
    assert_eq!(post_shared(&tg, garbage, Some(sig)).await.status(), 400);
    let rejected = tg
        .store()
        .audit_entries(Some("azarya"), None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "webhook.rejected")
        .count();
    assert_eq!(rejected, 1);
    settled(&tg, "olga").await;
    assert!(tg.fake.requests().is_empty(), "nothing was answered");
    tg.shutdown().await;
}

/// A client that announces a 100-byte body, sends 1 byte and stalls is answered 408 once the
/// body deadline has passed, and its connection is closed: it holds nothing forever. On both
/// webhook routes.
#[tokio::test]
async fn a_webhook_body_that_stalls_is_answered_408_and_its_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = wagate::http::body::BODY_DEADLINE;
    let tg = TestGate::start().await;
    let stall = |path: &'static str| {
        let addr = tg.gate().addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let t0 = std::time::Instant::now();
            let mut got = Vec::new();
            let read = tokio::time::timeout(
                deadline + std::time::Duration::from_secs(10),
                s.read_to_end(&mut got),
            )
            .await;
            assert!(read.is_ok(), "{path}: the gate still holds the connection");
            (t0.elapsed(), String::from_utf8_lossy(&got).into_owned())
        }
    };
    let (a, b) = tokio::join!(stall("/webhook/whatsapp/olga"), stall("/webhook/whatsapp"));
    for (elapsed, text) in [a, b] {
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.contains("\"error\""),
            "a JSON error like the others: {text}"
        );
        assert!(
            elapsed >= deadline - std::time::Duration::from_millis(100),
            "{elapsed:?}"
        );
    }
    assert_eq!(
        tg.store().counts("olga").unwrap(),
        (0, 0, 0),
        "nothing stored"
    );
    tg.shutdown().await;
}

/// /healthz answers everyone (a liveness probe), but names the users served and their tokens'
/// health only to the operator: a request from loopback that no proxy relayed, as /status.
#[tokio::test]
async fn healthz_is_a_probe_for_anyone_and_details_for_the_operator_only() {
    let tg = TestGate::start().await;
    let local: serde_json::Value = tg
        .client
        .get(tg.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(local["status"], "ok");
    assert_eq!(local["users"], serde_json::json!(["azarya", "olga"]));
    assert_eq!(local["tokens"]["olga"]["state"], "ok");
    for relayed in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let r = tg
            .client
            .get(tg.url("/healthz"))
            .header(relayed, "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{relayed}");
        let body = r.text().await.unwrap();
        assert_eq!(
            body, r#"{"status":"ok"}"#,
            "{relayed}: nothing but liveness"
        );
    }
    tg.shutdown().await;
}

/// Every refusal is JSON `{"error": …}`, a too large body too (axum's own answer is plain
/// text); a 503 says when to try again.
#[tokio::test]
async fn a_too_large_body_is_a_json_error_and_a_503_says_when_to_retry() {
    let tg = TestGate::start().await;
    let huge = vec![b' '; 5 * 1024 * 1024];
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &huge);
    for r in [
        tg.post_signed(OLGA, &huge).await,
        post_shared(&tg, &huge, Some(sig)).await,
    ] {
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("larger"), "{v}");
    }
    // Another process holds the database's write lock longer than the gate waits: 503.
    let db = tg.store().path().to_path_buf();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.RETRY", "hi");
    let r = tg.post_signed(OLGA, &body).await;
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    tg.shutdown().await;
}
