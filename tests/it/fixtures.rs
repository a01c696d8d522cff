//! Every real webhook payload in ../shared/fixtures/webhooks is accepted (signed → 200),
//! stored, and turned into events without losing an item.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/webhooks")
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture_dir())
        .expect("shared/fixtures/webhooks beside the repository")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Items a payload holds: each message, each status, and each other change.
fn items(v: &Value) -> usize {
    let mut n = 0;
    for e in v["entry"].as_array().into_iter().flatten() {
        for c in e["changes"].as_array().into_iter().flatten() {
            if c["field"] == "messages" {
                let m = c["value"]["messages"].as_array().map_or(0, Vec::len);
                let s = c["value"]["statuses"].as_array().map_or(0, Vec::len);
                n += m + s;
                let other = c["value"].as_object().is_some_and(|o| {
                    o.keys().any(|k| {
                        ![
                            "messaging_product",
                            "metadata",
                            "contacts",
                            "messages",
                            "statuses",
                        ]
                        .contains(&k.as_str())
                    })
                });
                if other || m + s == 0 {
                    n += 1;
                }
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn every_fixture_parses_without_losing_an_item() {
    let all = fixtures();
    assert!(all.len() >= 70, "found only {} fixtures", all.len());
    for (name, bytes) in &all {
        let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let events =
            wagate::whatsapp::parse_webhook(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!events.is_empty(), "{name}: no event");
        assert_eq!(events.len(), items(&v), "{name}: events vs items");
        for ev in &events {
            assert_eq!(ev.map["kind"], ev.kind.as_str(), "{name}");
            assert!(!ev.map["raw"].is_null(), "{name}: raw kept");
            if ev.map["kind"] == "message" {
                assert!(
                    ev.map["from"].is_string(),
                    "{name}: a message has a sender key: {}",
                    ev.map
                );
                assert!(ev.map["type"].is_string(), "{name}");
            }
        }
    }
}

#[test]
fn known_fixtures_are_understood() {
    let parse = |f: &str| {
        let bytes = std::fs::read(fixture_dir().join(f)).unwrap();
        wagate::whatsapp::parse_webhook(&bytes).unwrap()
    };
    let e = &parse("java-bindambc__textMessage.json")[0];
    assert_eq!(
        (e.map["type"].as_str(), e.text()),
        (Some("text"), "hi everyone!")
    );
    assert_eq!(e.map["name"], "Mauricio Binda");
    let e = &parse("php-netflie__a_notification_with_bsuid_only_and_no_from.json")[0];
    assert_eq!(e.map["from"], "BSUID_123");
    let e = &parse("meta-openapi__webhook__interactive-button-reply-message.json")[0];
    assert_eq!(e.map["type"], "interactive");
    assert!(
        !e.text().is_empty(),
        "the chosen button's title is the text"
    );
    let e = &parse("php-netflie__a_status_with_pricing_notification.json")[0];
    assert_eq!(
        (e.map["kind"].as_str(), e.map["status"].as_str()),
        (Some("status"), Some("delivered"))
    );
    assert_eq!(e.map["pricing"]["pricing_model"], "CBP");
    let e = &parse("java-bindambc__rejectedTemplate.json")[0];
    assert_eq!(e.map["kind"], "message_template_status_update");
    let e = &parse("php-netflie__an_unknown_notification.json")[0];
    assert_eq!(e.map["kind"], "message");
    assert!(
        !e.map["raw"]["errors"].is_null(),
        "an unknown message keeps its errors in raw"
    );
}

#[tokio::test]
async fn every_fixture_is_accepted_over_http() {
    let tg = TestGate::start().await;
    for (name, bytes) in fixtures() {
        let resp = tg.post_signed(OLGA, &bytes).await;
        assert_eq!(resp.status(), 200, "{name}");
    }
    // Every distinct body is kept; events are deduplicated by their keys across files (many
    // fixtures reuse placeholder ids such as `wamid.ID`), exactly as Meta's redeliveries are.
    let all = fixtures();
    let distinct_bodies: std::collections::BTreeSet<&Vec<u8>> =
        all.iter().map(|(_, b)| b).collect();
    let keys: std::collections::BTreeSet<String> = all
        .iter()
        .flat_map(|(_, b)| wagate::whatsapp::parse_webhook(b).unwrap())
        .map(|e| e.dedupe_key)
        .collect();
    let (bodies, events, _) = tg.store().counts("olga").unwrap();
    assert_eq!(bodies as usize, distinct_bodies.len());
    assert_eq!(events as usize, keys.len());
    tg.shutdown().await;
}
