//! Meta's webhook envelope → [`Event`]s. Permissive by design: every entry × change × item
//! becomes an event, unknown fields and types are kept in `raw`, missing `from`/`wa_id`/
//! `profile` are tolerated (username users carry only a business-scoped user id).

use crate::domain::{Event, EventKind};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Why a body could not be read as a webhook at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object")]
    NotObject,
}

/// Parses a webhook body into events, in the order Meta listed them.
///
/// A JSON object that is not a WhatsApp envelope (no `entry` array) yields one `webhook`
/// event holding it, so that nothing acknowledged is silently dropped.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<Event>, ParseError> {
    // serde_json refuses nesting deeper than 128 levels, so absurd bodies fail here without
    // touching the stack further (tests/it/robustness.rs holds it to that).
    let root: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Some(obj) = root.as_object() else {
        return Err(ParseError::NotObject);
    };
    let Some(entries) = obj.get("entry").and_then(Value::as_array) else {
        return Ok(vec![other_event("webhook", None, &root, None)]);
    };
    let mut events = Vec::new();
    for entry in entries {
        let waba_id = entry.get("id").and_then(as_id);
        let changes = entry.get("changes").and_then(Value::as_array);
        for change in changes.into_iter().flatten() {
            let first = events.len();
            parse_change(entry, change, &mut events);
            for ev in &mut events[first..] {
                ev.waba_id = waba_id.clone();
            }
        }
    }
    Ok(events)
}

fn parse_change(entry: &Value, change: &Value, out: &mut Vec<Event>) {
    let field = change
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or("webhook");
    let empty = Value::Object(Map::new());
    let value = change.get("value").unwrap_or(&empty);
    let metadata = value.get("metadata");
    let phone_number_id = metadata
        .and_then(|m| m.get("phone_number_id"))
        .and_then(as_id);
    if field != "messages" {
        out.push(other_event(field, phone_number_id, value, Some(entry)));
        return;
    }
    let contacts = value.get("contacts").and_then(Value::as_array);
    let mut known = false;
    // An item that is not an object is no message: the change is kept whole, below.
    let mut odd = false;
    if let Some(messages) = value.get("messages").and_then(Value::as_array) {
        known = true;
        for m in messages {
            if !m.is_object() {
                odd = true;
                continue;
            }
            out.push(message_event(
                m,
                contacts,
                metadata,
                phone_number_id.clone(),
            ));
        }
    }
    if let Some(statuses) = value.get("statuses").and_then(Value::as_array) {
        known = true;
        for s in statuses {
            if !s.is_object() {
                odd = true;
                continue;
            }
            out.push(status_event(s, metadata, phone_number_id.clone()));
        }
    }
    // Anything else in a `messages` change (errors, message_echoes, calls, groups, shapes yet
    // unseen) is kept as one event of the field, so a rule with `on: webhook` still sees it.
    let leftover = value.as_object().is_some_and(|o| {
        o.keys().any(|k| {
            !matches!(
                k.as_str(),
                "messaging_product" | "metadata" | "contacts" | "messages" | "statuses"
            )
        })
    });
    if leftover || odd || !known {
        out.push(other_event(field, phone_number_id, value, Some(entry)));
    }
}

/// Ids arrive as strings, sometimes as numbers; both are accepted.
fn as_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds, given as a string or a number.
fn as_timestamp(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        Some(Value::Number(n)) => n.as_i64().map(Value::from).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn message_event(
    m: &Value,
    contacts: Option<&Vec<Value>>,
    metadata: Option<&Value>,
    phone_number_id: Option<String>,
) -> Event {
    let wamid = m.get("id").and_then(as_id);
    let from_phone = m.get("from").and_then(as_id);
    let from_user_id = m.get("from_user_id").and_then(as_id);
    let contact = find_contact(contacts, from_phone.as_deref(), from_user_id.as_deref());
    // A username-only sender may have neither `from` nor `from_user_id` on the message; then
    // the contact entry's wa_id or user_id is the key (shared/reference §4.3, §8).
    let from = from_phone
        .clone()
        .or_else(|| from_user_id.clone())
        .or_else(|| contact.and_then(|c| c.get("wa_id")).and_then(as_id))
        .or_else(|| contact.and_then(|c| c.get("user_id")).and_then(as_id));
    let from_user_id =
        from_user_id.or_else(|| contact.and_then(|c| c.get("user_id")).and_then(as_id));
    let name = contact
        .and_then(|c| str_at(c, &["profile", "name"]))
        .unwrap_or("");
    let username = contact.and_then(|c| str_at(c, &["profile", "username"]));
    let mtype = m.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let media = ["image", "video", "audio", "document", "sticker"]
        .iter()
        .find_map(|t| m.get(*t))
        .cloned()
        .unwrap_or(Value::Null);
    let mut map = Map::new();
    map.insert("kind".into(), "message".into());
    map.insert("id".into(), opt(wamid.clone()));
    map.insert("from".into(), opt(from.clone()));
    map.insert("from_user_id".into(), opt(from_user_id));
    map.insert("name".into(), name.into());
    map.insert("username".into(), opt(username.map(str::to_string)));
    map.insert("type".into(), mtype.into());
    map.insert("text".into(), message_text(m, mtype).into());
    map.insert("timestamp".into(), as_timestamp(m.get("timestamp")));
    map.insert(
        "context".into(),
        m.get("context").cloned().unwrap_or(Value::Null),
    );
    map.insert("media".into(), media);
    map.insert(
        "interactive".into(),
        m.get("interactive").cloned().unwrap_or(Value::Null),
    );
    map.insert("phone_number_id".into(), opt(phone_number_id.clone()));
    map.insert(
        "display_phone_number".into(),
        metadata
            .and_then(|md| md.get("display_phone_number"))
            .and_then(as_id)
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    map.insert("contact".into(), contact.cloned().unwrap_or(Value::Null));
    map.insert("raw".into(), m.clone());
    let dedupe_key = match &wamid {
        Some(id) => format!("msg:{id}"),
        None => format!("msg-noid:{}", digest(m)),
    };
    Event {
        kind: EventKind::Message,
        dedupe_key,
        contact: from,
        phone_number_id,
        waba_id: None,
        wamid,
        map: Value::Object(map),
    }
}

/// The contact entry for a sender: by wa_id, then by user_id, then the only one present.
fn find_contact<'a>(
    contacts: Option<&'a Vec<Value>>,
    phone: Option<&str>,
    user_id: Option<&str>,
) -> Option<&'a Value> {
    let contacts = contacts?;
    let by = |key: &str, want: Option<&str>| {
        want.and_then(|w| {
            contacts
                .iter()
                .find(|c| c.get(key).and_then(as_id).as_deref() == Some(w))
        })
    };
    by("wa_id", phone)
        .or_else(|| by("user_id", user_id))
        .or_else(|| (contacts.len() == 1).then(|| &contacts[0]))
}

/// The human text of a message, as DESIGN.md defines it: the body, the caption, or the chosen
/// button/list title; `""` for anything else (a reaction's emoji, a system notice, an order's
/// note or a flow's reply stay in `raw`, so that `event.text` rules never fire on them).
fn message_text(m: &Value, mtype: &str) -> String {
    let pick = |path: &[&str]| str_at(m, path).map(str::to_string);
    let text = match mtype {
        "text" => pick(&["text", "body"]),
        "image" | "video" | "document" => pick(&[mtype, "caption"]),
        "button" => pick(&["button", "text"]),
        "interactive" => pick(&["interactive", "button_reply", "title"])
            .or_else(|| pick(&["interactive", "list_reply", "title"])),
        // An edit carries the message's new body.
        "edit" => pick(&["edit", "message", "text", "body"]),
        _ => None,
    };
    text.unwrap_or_default()
}

fn status_event(s: &Value, _metadata: Option<&Value>, phone_number_id: Option<String>) -> Event {
    let id = s.get("id").and_then(as_id);
    let status = s.get("status").and_then(Value::as_str).unwrap_or("unknown");
    let recipient = s
        .get("recipient_id")
        .and_then(as_id)
        .or_else(|| s.get("recipient_user_id").and_then(as_id));
    let map = json!({
        "kind": "status",
        "id": id,
        "status": status,
        "recipient": recipient,
        "timestamp": as_timestamp(s.get("timestamp")),
        "errors": s.get("errors").cloned().unwrap_or(Value::Array(vec![])),
        "conversation": s.get("conversation").cloned().unwrap_or(Value::Null),
        "pricing": s.get("pricing").cloned().unwrap_or(Value::Null),
        "phone_number_id": phone_number_id,
        "raw": s,
    });
    let dedupe_key = match &id {
        Some(id) => format!("status:{id}:{status}"),
        None => format!("status-noid:{}", digest(s)),
    };
    Event {
        kind: EventKind::Status,
        dedupe_key,
        contact: recipient,
        phone_number_id,
        waba_id: None,
        wamid: id,
        map,
    }
}

/// An event of a change other than messages and statuses: its kind is the field's name (a
/// field named as one of the gate's own kinds is a `webhook`, so that it never poses as a
/// message, status or scheduled call). Its identity is its content with the entry's id and
/// time: Meta's redelivery repeats all three, while a notification that says the same again
/// later (a template approved, paused, approved again) is a new event.
fn other_event(
    field: &str,
    phone_number_id: Option<String>,
    value: &Value,
    entry: Option<&Value>,
) -> Event {
    let kind = match field {
        "message" | "status" | "schedule" => "webhook",
        f => f,
    };
    let mut map = json!({ "kind": kind, "phone_number_id": phone_number_id, "raw": value });
    if kind != field {
        map["field"] = field.into();
    }
    let id = match entry.map(|e| (e.get("id"), e.get("time"))) {
        Some((None, None)) | None => digest(value),
        Some((id, time)) => digest(&json!([id, time, value])),
    };
    Event {
        kind: EventKind::from_name(kind),
        dedupe_key: format!("{kind}:{id}"),
        contact: None,
        phone_number_id,
        waba_id: None,
        wamid: None,
        map,
    }
}

fn opt(v: Option<String>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

/// A stable digest of a JSON value (serde_json keeps key order), for events without an id.
fn digest(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_message_becomes_message_event() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001","phone_number_id":"111"},"contacts":[{"profile":{"name":"Ann"},"wa_id":"33612"}],"messages":[{"from":"33612","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"Hello"},"x_new":1}]}}]}]}"#;
        let ev = parse_webhook(body).unwrap();
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.kind, EventKind::Message);
        assert_eq!(e.dedupe_key, "msg:wamid.A");
        assert_eq!(e.contact.as_deref(), Some("33612"));
        assert_eq!(e.phone_number_id.as_deref(), Some("111"));
        assert_eq!(e.map["name"], "Ann");
        assert_eq!(e.text(), "Hello");
        assert_eq!(e.map["timestamp"], 1700000000);
        assert_eq!(e.map["raw"]["x_new"], 1, "unknown fields survive in raw");
    }

    #[test]
    fn bsuid_only_sender_is_keyed_by_user_id() {
        let body = br#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"contacts":[{"profile":{"name":"N"},"user_id":"US.1"}],"messages":[{"from_user_id":"US.1","id":"w","timestamp":1,"type":"text","text":{"body":"b"}}]}}]}]}"#;
        let e = &parse_webhook(body).unwrap()[0];
        assert_eq!(e.map["from"], "US.1");
        assert_eq!(e.map["name"], "N");
        assert_eq!(e.contact.as_deref(), Some("US.1"));
    }

    #[test]
    fn status_and_other_fields() {
        let body = br#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"w1","status":"read","recipient_id":"9","timestamp":"5"}]}},{"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}"#;
        let ev = parse_webhook(body).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, EventKind::Status);
        assert_eq!(ev[0].dedupe_key, "status:w1:read");
        assert_eq!(ev[0].map["recipient"], "9");
        assert_eq!(
            ev[1].kind,
            EventKind::Field("message_template_status_update".into())
        );
        assert_eq!(ev[1].map["raw"]["event"], "APPROVED");
    }

    #[test]
    fn refuses_non_objects_keeps_odd_objects() {
        assert!(matches!(
            parse_webhook(b"not json"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(parse_webhook(b"[1,2]"), Err(ParseError::NotObject));
        let ev = parse_webhook(br#"{"hello":"world"}"#).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].map["kind"], "webhook");
    }

    /// A template notification for account `waba` at entry time `time`.
    fn template(waba: &str, time: i64, event: &str) -> Vec<u8> {
        json!({"entry": [{"id": waba, "time": time, "changes": [{"field": "message_template_status_update",
            "value": {"event": event, "message_template_id": 777, "message_template_name": "promo"}}]}]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_notification_said_again_later_is_a_new_event_and_a_redelivery_is_not() {
        let key = |body: Vec<u8>| parse_webhook(&body).unwrap()[0].dedupe_key.clone();
        let approved = key(template("1", 1_700_000_001, "APPROVED"));
        let paused = key(template("1", 1_700_000_002, "PAUSED"));
        let approved_again = key(template("1", 1_700_000_003, "APPROVED"));
        assert_ne!(approved, approved_again);
        assert_ne!(approved, paused);
        assert_eq!(approved, key(template("1", 1_700_000_001, "APPROVED")));
        // Another account's identical notification is another event.
        assert_ne!(approved, key(template("2", 1_700_000_001, "APPROVED")));
        assert!(approved.starts_with("message_template_status_update:"));
    }

    #[test]
    fn a_field_named_like_a_gate_kind_is_a_webhook_event() {
        for field in ["message", "status", "schedule"] {
            let body = json!({"entry": [{"changes": [{"field": field, "value": {"x": 1}}]}]});
            let ev = parse_webhook(body.to_string().as_bytes()).unwrap();
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].kind, EventKind::Field("webhook".into()), "{field}");
            assert_eq!(ev[0].map["kind"], "webhook");
            assert_eq!(ev[0].map["field"], field);
            assert_eq!(ev[0].map["raw"]["x"], 1);
        }
    }

    #[test]
    fn items_that_are_not_objects_are_no_messages_and_the_change_is_kept() {
        let body = br#"{"entry":[{"changes":[{"field":"messages","value":{"messages":[null,1,"x",{"from":"33612","id":"wamid.OK","type":"text","text":{"body":"hi"}}],"statuses":[7]}}]}]}"#;
        let ev = parse_webhook(body).unwrap();
        let kinds: Vec<_> = ev.iter().map(|e| e.kind.as_str().to_string()).collect();
        assert_eq!(kinds, ["message", "messages"]);
        assert_eq!(ev[0].wamid.as_deref(), Some("wamid.OK"));
        assert_eq!(
            ev[1].map["raw"]["messages"][1], 1,
            "the whole change is kept"
        );
    }
}
