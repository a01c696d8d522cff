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

/// One event a fixture must yield, read by hand from the JSON against DESIGN.md ("`event` is a
/// map") and shared/reference/cloud-api.md §4.
#[derive(Debug)]
enum Want {
    /// A message: `type`, `text`, `from`, `id` (wamid), `name`, `timestamp` (an integer).
    /// `text` is the text body, the media caption, the chosen button/list title or the
    /// template quick reply's `button.text`, and `""` for anything else.
    Msg(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        i64,
    ),
    /// A status: `status`, `recipient`, whether `errors` is non-empty.
    Status(&'static str, &'static str, bool),
    /// Any other webhook field: `kind` is the change's `field`.
    Field(&'static str),
}
use Want::{Field, Msg, Status};

const MB: &str = "Mauricio Binda";
const M1: &str = "1111111111111";
const WN: &str = "wamid.nBgN6TUyN2k5NzAzM5kzNhUCABI8FDNFQjAxQkE5REI4NEUzQ5Y5QTNgAA==";
const SN: &str = "Sheena Nelson";
const S1: &str = "16505551234";
const WS: &str = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
const ID: &str = "wamid.ID";
const T0: i64 = 1669233778;
const CPN: &str = "CUSTOMER_PHONE_NUMBER";

/// Every fixture file and the events it must yield, in order. `text` is what DESIGN.md says:
/// body, caption or chosen button/list title, `""` otherwise (reactions, system notices,
/// orders' notes and flow replies keep theirs in `raw`).
#[rustfmt::skip]
const EXPECTED: &[(&str, &[Want])] = &[
    ("java-bindambc__accountBanned.json", &[Field("account_update")]),
    ("java-bindambc__accountRestricted.json", &[Field("account_update")]),
    ("java-bindambc__accountReview.json", &[Field("account_review_update")]),
    ("java-bindambc__audioMessage.json", &[Msg("audio", "", M1, "wamid.HBzk5zNkE1NNzAzgNNTUyNMDkzIYFDNFNhjMyNjcUCABQjA1NzcDY0M0AA==", MB, 1673033070)]),
    ("java-bindambc__buttonMessage.json", &[Msg("button", "SIM", M1, WN, MB, 1673023653)]),
    ("java-bindambc__contactMessage.json", &[Msg("contacts", "", M1, "wamid.HBgNNEMkNETUyNUCDkzNABIYFDNFQjA1zk5NzAzMhQjA5OTFQjNFQkU3AA==", MB, 1673641462)]),
    ("java-bindambc__documentMessage.json", &[Msg("document", "", M1, "wamid.HBgABIYNNTUyxMEFFk5NzATY2QT0TY2QT0zMDkzNhUCFDNFQjBFMNzARjFDQQ1AA==", MB, 1673034392)]),
    ("java-bindambc__imageMessage.json", &[Msg("image", "", M1, "wamid.HBgODE0NDQwANNTTBGRjkUyNzkzNhUCABIYFDNF5NzAzMDkQjBEQ3NjdBA==", MB, 1673032525)]),
    ("java-bindambc__locationMessage.json", &[Msg("location", "", M1, "wamid.HBgNNVENjUTzk5NzAzMUyNDkzIYFDNBMERNhUCABBMkYzNjhFQzzNEUwAA==", MB, 1673641462)]),
    ("java-bindambc__mediaUploadError.json", &[Status("failed", M1, true)]),
    ("java-bindambc__messageDeleted.json", &[Msg("unsupported", "", M1, WN, MB, 1673026174)]),
    ("java-bindambc__phoneNumberNameUpdate.json", &[Field("phone_number_name_update")]),
    ("java-bindambc__qualityUpdate.json", &[Field("phone_number_quality_update")]),
    ("java-bindambc__reEngagementMessageError.json", &[Status("failed", "5511111111111", true)]),
    ("java-bindambc__reactMessage.json", &[Msg("reaction", "", M1, WN, MB, 1673026587)]),
    ("java-bindambc__rejectedTemplate.json", &[Field("message_template_status_update")]),
    ("java-bindambc__stickerMessage.json", &[Msg("sticker", "", M1, WN, MB, 1673028387)]),
    ("java-bindambc__templateSchedulingForDisabling.json", &[Field("message_template_status_update")]),
    ("java-bindambc__textMessage.json", &[Msg("text", "hi everyone!", M1, WN, MB, 1672947578)]),
    // `from` differs from the only contact's wa_id; that contact's profile still names it.
    ("java-bindambc__textMessage2.json", &[Msg("text", "Good afternoon", "409552778964973", WN, MB, 1673020315)]),
    ("java-bindambc__textMessageStatusDelivered.json", &[Status("delivered", M1, false)]),
    ("java-bindambc__textMessageStatusRead.json", &[Status("read", M1, false)]),
    ("java-bindambc__textMessageStatusSent.json", &[Status("sent", M1, false)]),
    ("java-bindambc__verifiedAccount.json", &[Field("account_update")]),
    ("java-bindambc__videoMessage.json", &[Msg("video", "hello world", M1, "wamid.HBgNNTUyNzk5NzAzMDkzNhUCABIYFDNFQjAwQjVGQUFGOEVDMTUyMTJBAA==", MB, 1673029501)]),
    ("js-secreto__v25-delivered.json", &[Status("delivered", "16315551181", false)]),
    ("js-secreto__v25-incoming.json", &[Msg("text", "this is a text message", "16315551181", "ABGGFlA5Fpa", "test user name", 1504902988)]),
    ("js-secreto__v25-read.json", &[Status("read", "16315551181", false)]),
    ("js-secreto__v25-sent.json", &[Status("sent", "16315551181", false)]),
    ("meta-openapi__webhook__button-message.json", &[Msg("button", "Unsubscribe", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUU0M0MxQzQzMUJCMTMwNUZFOQA=", SN, 1750091045)]),
    ("meta-openapi__webhook__contact-sharing-message.json", &[Msg("contacts", "", S1, WS, SN, 1744344496)]),
    ("meta-openapi__webhook__group-create-message.json", &[Field("group_lifecycle_update")]),
    ("meta-openapi__webhook__group-remove-participants.json", &[Field("group_participants_update")]),
    ("meta-openapi__webhook__group-settings-update.json", &[Field("group_settings_update")]),
    ("meta-openapi__webhook__image-message.json", &[Msg("image", "Taj Mahal", S1, WS, SN, 1744344496)]),
    ("meta-openapi__webhook__interactive-button-reply-message.json", &[Msg("interactive", "Cancel", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZBQzg0MzQ4QjRCM0NGNkVGOAA=", SN, 1750025136)]),
    ("meta-openapi__webhook__interactive-list-reply-message.json", &[Msg("interactive", "Priority Mail Express", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUJDQ0NDM0FEODY4ODkzOTc5RgA=", SN, 1749854575)]),
    ("meta-openapi__webhook__location-message.json", &[Msg("location", "", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTU2MjZEMDBGRkE3MENEMDE0RQA=", SN, 1744344496)]),
    ("meta-openapi__webhook__order-message.json", &[Msg("order", "", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTEyQjFGNzI1QTQxMjI5QTMyOQA=", SN, 1750096325)]),
    ("meta-openapi__webhook__reaction-message.json", &[Msg("reaction", "", S1, WS, SN, 1749419544)]),
    ("meta-openapi__webhook__system-message.json", &[Msg("system", "", S1, "wamid.HBgLMTk4MzU1NTE5NzQVAgASGAoxMTgyMDg2MjY3AA==", "", 1750269342)]),
    ("meta-openapi__webhook__text-message-from-click-to-whatsapp-ad.json", &[Msg("text", "Hello! Can I get more info on this?", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUQ0N0VFMDA2MTQ0RkJFNkNDNAA=", SN, 1750275992)]),
    ("meta-openapi__webhook__text-message-with-context-product-inquiry.json", &[Msg("text", "Is this still available?", S1, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTA2NTUwRkNEMDdFQjJCRUU0NQA=", SN, 1750016800)]),
    ("meta-openapi__webhook__text-message.json", &[Msg("text", "Does it come in another color?", S1, WS, SN, 1749416383)]),
    ("meta-openapi__webhook__unsupported-message.json", &[Msg("unsupported", "", S1, "wamid.HBgLMTQyMDU1NTA3NDkVAgASGBI5N0MwRjg0RTVBNUI1RDA2OTkA", SN, 1750090702)]),
    ("php-netflie__a_button_notification.json", &[Msg("button", "No", "16315551234", ID, "NAME", T0)]),
    ("php-netflie__a_button_reply_notification.json", &[Msg("interactive", "button-text", "PHONE_NUMBER_ID", ID, "NAME", T0)]),
    ("php-netflie__a_contact_notification.json", &[Msg("contacts", "", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__a_flow_notification.json", &[Msg("interactive", "", "PHONE_NUMBER_ID", ID, "NAME", T0)]),
    ("php-netflie__a_forwarded_notification.json", &[Msg("text", "MESSAGE_BODY", "16315551234", ID, "NAME", T0)]),
    ("php-netflie__a_list_notification.json", &[Msg("interactive", "list_reply_title", "PHONE_NUMBER_ID", ID, "NAME", T0)]),
    ("php-netflie__a_location_notification.json", &[Msg("location", "", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__a_marketing_status_notification.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__a_notification.json", &[Msg("button", "No", "16315551234", ID, "NAME", T0)]),
    // No `from`, no `from_user_id`: the sender is the contact's business-scoped user id.
    ("php-netflie__a_notification_with_bsuid_only_and_no_from.json", &[Msg("text", "MESSAGE_BODY", "BSUID_123", ID, "NAME", T0)]),
    ("php-netflie__a_reaction_notification.json", &[Msg("reaction", "", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__a_removed_reaction_notification.json", &[Msg("reaction", "", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__a_service_status_notification.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__a_status_conversation_initiated_notification.json", &[Status("read", CPN, false)]),
    ("php-netflie__a_status_notification.json", &[Status("read", CPN, false)]),
    ("php-netflie__a_status_notification_with_errors.json", &[Status("failed", CPN, true)]),
    ("php-netflie__a_status_notification_without_expiration_time.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__a_status_with_pricing_notification.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__a_sticker_notification.json", &[Msg("sticker", "", "SENDER_PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__a_system_notification.json", &[Msg("system", "", "PHONE_NUMBER", ID, "", T0)]),
    ("php-netflie__a_text_notification.json", &[Msg("text", "MESSAGE_BODY", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__an_authentication_status_notification.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__an_document_notification.json", &[Msg("document", "CAPTION_TEXT", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__an_image_notification.json", &[Msg("image", "CAPTION_TEXT", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__an_order_notification.json", &[Msg("order", "", "PHONE_NUMBER_ID", ID, "NAME", T0)]),
    ("php-netflie__an_unknown_notification.json", &[Msg("unknown", "", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__an_utility_status_notification.json", &[Status("delivered", CPN, false)]),
    ("php-netflie__can_keep_wa_id_priority_when_user_id_is_present.json", &[Msg("text", "MESSAGE_BODY", "PHONE_NUMBER", ID, "NAME", T0)]),
    ("php-netflie__multiple_text_notification.json", &[
        Msg("text", "MESSAGE_BODY", "PHONE_NUMBER", ID, "NAME", T0),
        Msg("text", "MESSAGE_BODY2", "PHONE_NUMBER", ID, "NAME", 1669233779),
    ]),
    // A contact without `profile`: name "".
    ("php-netflie__without_contact_profile_a_notification.json", &[Msg("text", "MESSAGE_BODY", "PHONE_NUMBER", ID, "", T0)]),
];

/// Each event of every fixture matches the hand-written expectation; every fixture file has one.
/// All differences are collected and reported together, one line each.
#[test]
fn every_fixture_is_understood() {
    let all = fixtures();
    let mut bad: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (file, _) in EXPECTED {
        if !seen.insert(*file) {
            bad.push(format!("{file}: listed twice in EXPECTED"));
        }
        if !all.iter().any(|(name, _)| name == file) {
            bad.push(format!("{file}: in EXPECTED but not in the fixture folder"));
        }
    }
    let mut events_checked = 0;
    for (name, bytes) in &all {
        let Some((_, wants)) = EXPECTED.iter().find(|(f, _)| f == name) else {
            bad.push(format!(
                "{name}: fixture without an expectation in EXPECTED"
            ));
            continue;
        };
        let events = match wagate::whatsapp::parse_webhook(bytes) {
            Ok(ev) => ev,
            Err(e) => {
                bad.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        if events.len() != wants.len() {
            bad.push(format!(
                "{name}: expected {} event(s), got {}",
                wants.len(),
                events.len()
            ));
        }
        for (i, (ev, want)) in events.iter().zip(wants.iter()).enumerate() {
            events_checked += 1;
            let m = &ev.map;
            let mut check = |field: &str, expected: Value, got: &Value| {
                if &expected != got {
                    bad.push(format!(
                        "{name} [event {i}] {field}: expected {expected}, got {got}"
                    ));
                }
            };
            match want {
                Msg(ty, text, from, id, who, ts) => {
                    check("kind", "message".into(), &m["kind"]);
                    check("type", (*ty).into(), &m["type"]);
                    check("text", (*text).into(), &m["text"]);
                    check("from", (*from).into(), &m["from"]);
                    check("id", (*id).into(), &m["id"]);
                    check("name", (*who).into(), &m["name"]);
                    check("timestamp", (*ts).into(), &m["timestamp"]);
                    check("Event.wamid", (*id).into(), &ev.wamid.clone().into());
                    check("Event.contact", (*from).into(), &ev.contact.clone().into());
                }
                Status(status, recipient, failed) => {
                    check("kind", "status".into(), &m["kind"]);
                    check("status", (*status).into(), &m["status"]);
                    check("recipient", (*recipient).into(), &m["recipient"]);
                    let has_errors = m["errors"].as_array().is_some_and(|a| !a.is_empty());
                    check("errors non-empty", (*failed).into(), &has_errors.into());
                    check(
                        "Event.contact",
                        (*recipient).into(),
                        &ev.contact.clone().into(),
                    );
                }
                Field(field) => check("kind", (*field).into(), &m["kind"]),
            }
            check("Event.kind", m["kind"].clone(), &ev.kind.as_str().into());
        }
    }
    assert!(
        bad.is_empty(),
        "{} difference(s) over {} fixtures / {events_checked} events:\n{}",
        bad.len(),
        all.len(),
        bad.join("\n")
    );
}
