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
