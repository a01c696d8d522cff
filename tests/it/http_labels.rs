//! Refusals at the HTTP edge: a body too large for a known user is that user's in /metrics
//! (as a bad signature is), and a path no route serves (a webhook URL with a trailing slash)
//! gets the same JSON error as every other refusal.

use crate::common::*;

/// The value of the `wagate_webhooks_received_total` series with these labels (0 if absent).
async fn webhooks(tg: &TestGate, user: &str, outcome: &str) -> f64 {
    let text = tg
        .client
        .get(tg.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (u, o) = (format!("user=\"{user}\""), format!("outcome=\"{outcome}\""));
    text.lines()
        .filter(|l| l.starts_with("wagate_webhooks_received_total{"))
        .filter(|l| l.contains(&u) && l.contains(&o))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_too_large_body_for_a_known_user_is_counted_as_that_users() {
    let tg = TestGate::start().await;
    // Metrics are process-wide and other tests post too: count what this one adds, at least.
    let before = webhooks(&tg, "olga", "too_large").await;
    let huge = vec![b' '; 5 * 1024 * 1024];
    let r = tg.post_signed(OLGA, &huge).await;
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger"), "{v}");
    let after = webhooks(&tg, "olga", "too_large").await;
    assert!(after >= before + 1.0, "{before} -> {after}");
    // A user that does not exist never becomes a label: it is an unknown user first.
    let r = tg.post_raw("nobody-here", huge, None).await;
    assert_eq!(r.status(), 404);
    let text = tg
        .client
        .get(tg.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("nobody-here"), "{text}");
    tg.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_answer_a_json_404() {
    let tg = TestGate::start().await;
    for path in [
        "/webhook/whatsapp/olga/",
        "/webhook/whatsapp/olga/extra",
        "/no/such/page",
    ] {
        for post in [false, true] {
            let req = if post {
                tg.client.post(tg.url(path)).body("{}")
            } else {
                tg.client.get(tg.url(path))
            };
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
            assert_eq!(r.headers()["content-type"], "application/json", "{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            let e = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
            if path.starts_with("/webhook/") {
                assert!(e.contains("/webhook/whatsapp/USER"), "{path}: {e}");
            }
        }
    }
    // The routes themselves are unchanged.
    let r = tg
        .client
        .get(tg.url(&format!(
            "/webhook/whatsapp/olga?hub.mode=subscribe&hub.challenge=42&hub.verify_token={}",
            OLGA.verify
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "42".into())
    );
    tg.shutdown().await;
}
