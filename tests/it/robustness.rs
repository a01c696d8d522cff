//! The signature-check-and-parse path never panics, whatever the bytes: property tests over
//! `verify_signature` and `parse_webhook` (arbitrary bytes, arbitrary JSON in and out of a
//! webhook envelope, absurd nesting), and the HTTP edge answering hostile but correctly
//! signed bodies with 400, then a normal message with 200.

use crate::common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use wagate::whatsapp::{ParseError, SignatureError, parse_webhook, sign, verify_signature};

/// Cases per property: enough to shake the parser, few enough to keep the suite fast.
const CASES: u32 = 256;

/// Nesting far beyond any parser's recursion budget (and any real webhook).
const ABSURD_DEPTH: usize = 100_000;

/// Checks the promises `parse_webhook` makes about a body, and returns its events.
/// Ok only for a JSON object; every event map is an object with `kind` (a string) and `raw`.
fn check_parse(body: &[u8]) -> Result<Vec<wagate::domain::Event>, ParseError> {
    let parsed = parse_webhook(body);
    match serde_json::from_slice::<Value>(body) {
        Err(_) => assert!(parsed.is_err(), "not JSON, yet parsed"),
        Ok(v) if !v.is_object() => assert_eq!(parsed, Err(ParseError::NotObject)),
        Ok(_) => {}
    }
    if let Ok(events) = &parsed {
        for e in events {
            let m = e.map.as_object().expect("an event map is an object");
            assert!(m.get("kind").is_some_and(Value::is_string), "kind in {m:?}");
            assert!(m.contains_key("raw"), "raw in {m:?}");
            assert_eq!(
                m["kind"],
                e.kind.as_str(),
                "map kind matches the event kind"
            );
        }
    }
    parsed
}

/// Keys Meta uses, so that generated objects reach the parser's interesting branches with
/// the wrong shapes, mixed with arbitrary text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "object", "entry", "changes", "field", "value", "messages", "statuses",
            "contacts", "metadata", "phone_number_id", "display_phone_number", "from",
            "from_user_id", "user_id", "wa_id", "id", "type", "text", "body", "profile",
            "name", "username", "timestamp", "context", "interactive", "button_reply",
            "list_reply", "title", "image", "caption", "reaction", "emoji", "status",
            "recipient_id", "errors", "conversation", "pricing", "edit", "message",
        ])
        .prop_map(str::to_string),
        1 => ".{0,10}",
    ]
}

/// Any JSON value, nested at most a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats that read back exactly: serde_json parses long ones with best-effort precision.
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 64.0)),
        ".{0,16}".prop_map(Value::from),
        prop::sample::select(vec![
            "messages",
            "text",
            "whatsapp",
            "111222333",
            "",
            "wamid.X"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A `field` of a change: mostly the one the parser looks into, sometimes anything.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(json!("messages")),
        1 => ".{0,12}".prop_map(Value::from),
        1 => json_value(),
    ]
}

/// `value` wrapped in a webhook envelope, as Meta would send it.
fn envelope(object: Value, field: Value, value: Value) -> Value {
    json!({"object": object, "entry": [{"id": "WABA", "changes": [{"field": field, "value": value}]}]})
}

proptest! {
    // No regression files: failures print their minimal input instead.
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(body in vec(any::<u8>(), 0..2048)) {
        let _ = check_parse(&body);
    }

    #[test]
    fn json_like_text_never_panics_the_parser(body in r#"[\[\]{}",:0-9a-z.eE+\- \\]{0,256}"#) {
        let _ = check_parse(body.as_bytes());
    }

    #[test]
    fn a_valid_signature_over_any_bytes_verifies_and_one_changed_byte_does_not(
        secret in vec(any::<u8>(), 0..64),
        body in vec(any::<u8>(), 0..2048),
        flip in any::<prop::sample::Index>(),
    ) {
        let sig = sign(&secret, &body);
        prop_assert_eq!(verify_signature(&secret, &body, Some(&sig)), Ok(()));
        // Surrounding whitespace, as some proxies leave it, is tolerated.
        prop_assert_eq!(verify_signature(&secret, &body, Some(&format!(" {sig}\t"))), Ok(()));
        let _ = check_parse(&body);
        if !body.is_empty() {
            let mut altered = body.clone();
            altered[flip.index(body.len())] ^= 0x01;
            prop_assert_eq!(
                verify_signature(&secret, &altered, Some(&sig)),
                Err(SignatureError::Mismatch)
            );
        }
        let mut other = secret.clone();
        other.push(b'x');
        prop_assert_eq!(
            verify_signature(&other, &body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_header_is_refused_without_panicking(
        header in prop_oneof![".{0,80}", "sha256=[0-9a-fA-F]{0,70}", "sha256=.{0,70}"],
        body in vec(any::<u8>(), 0..256),
    ) {
        let got = verify_signature(b"app-secret", &body, Some(&header));
        if header != sign(b"app-secret", &body) {
            prop_assert!(got.is_err(), "{header:?} accepted");
        }
        prop_assert_eq!(verify_signature(b"app-secret", &body, None), Err(SignatureError::Missing));
    }

    #[test]
    fn any_json_in_an_envelope_parses_into_complete_event_maps(
        object in prop_oneof![Just(json!("whatsapp_business_account")), json_value()],
        field in field(),
        value in json_value(),
    ) {
        let body = envelope(object, field, value).to_string();
        let events = check_parse(body.as_bytes());
        prop_assert!(events.is_ok(), "an envelope is an object: {events:?}");
    }

    #[test]
    fn any_json_out_of_an_envelope_parses_if_and_only_if_it_is_an_object(
        value in json_value(),
    ) {
        let parsed = check_parse(value.to_string().as_bytes());
        prop_assert_eq!(parsed.is_ok(), value.is_object());
        // An object without an `entry` array is kept whole as one event.
        if value.is_object() && !value.get("entry").is_some_and(Value::is_array) {
            let events = parsed.unwrap();
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].map["raw"], &value);
        }
    }

    #[test]
    fn any_json_in_place_of_an_entry_or_a_change_parses(
        entries in vec(json_value(), 0..4),
        changes in vec(json_value(), 0..4),
    ) {
        let body = json!({"object": "whatsapp_business_account", "entry": entries}).to_string();
        prop_assert!(check_parse(body.as_bytes()).is_ok());
        let body = json!({"entry": [{"changes": changes}]}).to_string();
        prop_assert!(check_parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn every_message_and_status_object_becomes_one_event_with_its_raw_item(
        messages in vec(json_value(), 0..5),
        statuses in vec(json_value(), 0..5),
        contacts in json_value(),
        metadata in json_value(),
    ) {
        let value = json!({"messaging_product": "whatsapp", "metadata": metadata,
                           "contacts": contacts, "messages": messages, "statuses": statuses});
        let body = envelope(json!("whatsapp_business_account"), json!("messages"), value);
        let events = check_parse(body.to_string().as_bytes()).expect("parses");
        let raw_of = |kind: &str| -> Vec<Value> {
            events.iter().filter(|e| e.map["kind"] == kind).map(|e| e.map["raw"].clone()).collect()
        };
        let objects = |items: &[Value]| -> Vec<Value> {
            items.iter().filter(|v| v.is_object()).cloned().collect()
        };
        prop_assert_eq!(raw_of("message"), objects(&messages));
        prop_assert_eq!(raw_of("status"), objects(&statuses));
        // An item that is no object is no message nor status: the change is kept whole, once,
        // as a catch-all event; with nothing else in the change there is none.
        let odd = messages.iter().chain(&statuses).any(|v| !v.is_object());
        let whole = raw_of("messages");
        prop_assert_eq!(whole.len(), usize::from(odd));
        if odd {
            prop_assert_eq!(&whole[0]["messages"], &Value::from(messages.clone()));
        }
        prop_assert_eq!(
            events.len(),
            raw_of("message").len() + raw_of("status").len() + whole.len()
        );
    }
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut b = vec![b'['; depth];
    b.resize(2 * depth, b']');
    b
}

fn nested_objects(depth: usize) -> Vec<u8> {
    let mut s = r#"{"a":"#.repeat(depth);
    s.push('1');
    s.push_str(&"}".repeat(depth));
    s.into_bytes()
}

/// `inner` as the `value` of a messages change, and as a message of it.
fn deep_in_envelope(inner: &[u8]) -> Vec<Vec<u8>> {
    let wrap = |pre: &str, post: &str| [pre.as_bytes(), inner, post.as_bytes()].concat();
    vec![
        wrap(
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":"#,
            "}]}]}",
        ),
        wrap(
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":["#,
            "]}}]}]}",
        ),
    ]
}

#[test]
fn absurdly_nested_json_is_refused_without_overflowing_the_stack() {
    let mut bodies = vec![
        nested_arrays(ABSURD_DEPTH),
        nested_objects(ABSURD_DEPTH),
        // Unclosed: the parser must give up on depth, not on reaching the end.
        vec![b'['; ABSURD_DEPTH],
    ];
    bodies.extend(deep_in_envelope(&nested_arrays(ABSURD_DEPTH)));
    bodies.extend(deep_in_envelope(&nested_objects(ABSURD_DEPTH)));
    for body in &bodies {
        let got = parse_webhook(body);
        assert!(
            got.is_err(),
            "{} bytes of nesting refused, got {got:?}",
            body.len()
        );
        let sig = sign(b"s", body);
        assert_eq!(verify_signature(b"s", body, Some(&sig)), Ok(()));
    }
}

/// Bytes that look like nothing, from a fixed seed (xorshift), so a failure replays.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn hostile_signed_bodies_get_400_and_the_gate_keeps_answering() {
    let tg = TestGate::start().await;
    let mut zeros = b"[0".to_vec();
    zeros.extend(",0".repeat(512 * 1024).into_bytes());
    zeros.push(b']');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise(64 * 1024, 0x9E37_79B9_7F4A_7C15)),
        ("absurdly nested arrays", nested_arrays(ABSURD_DEPTH)),
        ("absurdly nested objects", nested_objects(ABSURD_DEPTH)),
        (
            "absurd nesting inside an envelope",
            deep_in_envelope(&nested_arrays(ABSURD_DEPTH)).remove(0),
        ),
        ("a 1 MB JSON array of zeros", zeros),
        ("1 MB of zero bytes", vec![0u8; 1024 * 1024]),
        ("an empty body", Vec::new()),
    ];
    for (what, body) in cases {
        let resp = tg.post_signed(OLGA, &body).await;
        assert_eq!(resp.status(), 400, "{what}");
        let v: Value = resp.json().await.expect("a JSON error body");
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    assert_eq!(
        tg.store().counts("olga").unwrap(),
        (0, 0, 0),
        "nothing stored"
    );
    let healthz = tg.client.get(tg.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "the gate is still up");
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.AFTER", "Still there?");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let reqs = tg.fake.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(reqs.len(), 1, "the normal message is answered");
    assert_eq!(reqs[0].body["context"]["message_id"], "wamid.AFTER");
    assert_eq!(reqs[0].body["text"]["body"], "You said: Still there?");
    tg.shutdown().await;
}
