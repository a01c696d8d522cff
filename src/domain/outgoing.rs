//! Outgoing messages: the script API's `send` forms (a text, or a map) → the Cloud API request
//! body of shared/reference §1. Pure; errors are sentences a script author can act on.

use serde_json::{Map, Value, json};

const MEDIA: &[&str] = &["image", "video", "audio", "document", "sticker"];

/// Builds the request body for `to`; `context` quotes an earlier message (a reply).
/// Returns the message type and the body.
pub fn build(to: &str, spec: &Value, context: Option<&str>) -> Result<(String, Value), String> {
    if to.trim().is_empty() {
        return Err("send: the recipient is empty".into());
    }
    let (t, obj) = match spec {
        Value::String(s) => ("text".to_string(), text_obj(s, false)?),
        Value::Object(m) => from_map(m)?,
        other => {
            return Err(format!(
                "send: expected a text or a map, got {}",
                type_name(other)
            ));
        }
    };
    let mut body = Map::new();
    body.insert("messaging_product".into(), "whatsapp".into());
    body.insert("recipient_type".into(), "individual".into());
    // Business-scoped user ids (CC.123…) go in `recipient`, phone numbers in `to`.
    if is_bsuid(to) {
        body.insert("recipient".into(), to.trim().into());
    } else {
        body.insert("to".into(), normalize_phone(to)?.into());
    }
    body.insert("type".into(), t.clone().into());
    match obj {
        Value::Object(raw) if t == "raw" => {
            let t = raw
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if t.is_empty() {
                return Err("send: a raw message needs a `type`".into());
            }
            for (k, v) in raw {
                body.insert(k, v);
            }
            if let Some(c) = context {
                body.entry("context")
                    .or_insert_with(|| json!({"message_id": c}));
            }
            return Ok((t, Value::Object(body)));
        }
        obj => {
            body.insert(t.clone(), obj);
        }
    }
    if let Some(c) = context {
        body.insert("context".into(), json!({ "message_id": c }));
    }
    Ok((t, Value::Object(body)))
}

/// A phone number as Graph wants it: `+` and digits. Webhooks give wa_ids as bare digits, and
/// Graph prepends the business number's country code to a number without `+` (shared/reference
/// §1), so the `+` is always added. Spaces, dashes, dots and parentheses are dropped.
pub fn normalize_phone(to: &str) -> Result<String, String> {
    let digits: String = to
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '+'))
        .collect();
    if digits.len() < 5 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "send: `{to}` is not a phone number in international form (country code and number, e.g. +33612345678)"
        ));
    }
    Ok(format!("+{digits}"))
}

/// A business-scoped user id such as `US.13491208655302741918` (no phone number has a dot).
pub fn is_bsuid(to: &str) -> bool {
    to.contains('.') && to.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "()",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

fn text_obj(s: &str, preview_url: bool) -> Result<Value, String> {
    if s.is_empty() {
        return Err("send: the text is empty".into());
    }
    if s.chars().count() > 4096 {
        return Err(format!(
            "send: the text has {} characters; WhatsApp allows 4096",
            s.chars().count()
        ));
    }
    let mut o = json!({ "body": s });
    if preview_url {
        o["preview_url"] = true.into();
    }
    Ok(o)
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

fn from_map(m: &Map<String, Value>) -> Result<(String, Value), String> {
    if let Some(raw) = m.get("raw") {
        return match raw {
            Value::Object(_) => Ok(("raw".into(), raw.clone())),
            _ => Err("send: `raw` must be a Cloud API message map".into()),
        };
    }
    if let Some(name) = str_field(m, "template") {
        return Ok(("template".into(), template(name, m)?));
    }
    if let Some(kind) = MEDIA.iter().find(|k| m.contains_key(**k)) {
        return Ok((kind.to_string(), media(kind, m)?));
    }
    if let Some(b) = m.get("buttons") {
        return Ok(("interactive".into(), buttons(b, m)?));
    }
    if let Some(l) = m.get("list") {
        return Ok(("interactive".into(), list(l, m)?));
    }
    if let Some(loc) = m.get("location") {
        return Ok(("location".into(), location(loc)?));
    }
    if let Some(emoji) = m.get("reaction") {
        let id = str_field(m, "message_id").ok_or("send: a reaction needs `message_id`")?;
        return Ok((
            "reaction".into(),
            json!({"message_id": id, "emoji": emoji.as_str().unwrap_or("")}),
        ));
    }
    if let Some(text) = str_field(m, "text") {
        let preview = m
            .get("preview_url")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return Ok(("text".into(), text_obj(text, preview)?));
    }
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    Err(format!(
        "send: cannot tell the message type from keys [{}]; use text, template, image, video, audio, document, sticker, buttons, list, location, reaction or raw",
        keys.join(", ")
    ))
}

fn template(name: &str, m: &Map<String, Value>) -> Result<Value, String> {
    let lang = str_field(m, "language").unwrap_or("en_US");
    let mut t = json!({"name": name, "language": {"code": lang}});
    if let Some(c) = m.get("components") {
        t["components"] = c.clone();
    } else if let Some(Value::Array(params)) = m.get("params") {
        let ps: Vec<Value> = params
            .iter()
            .map(|p| {
                let s = match p {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if s.is_empty() {
                    Err("send: template parameters cannot be empty (Graph answers 400)".to_string())
                } else {
                    Ok(json!({"type": "text", "text": s}))
                }
            })
            .collect::<Result<_, _>>()?;
        if !ps.is_empty() {
            t["components"] = json!([{"type": "body", "parameters": ps}]);
        }
    }
    Ok(t)
}

fn media(kind: &str, m: &Map<String, Value>) -> Result<Value, String> {
    let src =
        str_field(m, kind).ok_or_else(|| format!("send: `{kind}` must be a link or a media id"))?;
    let mut o = if src.starts_with("https://") || src.starts_with("http://") {
        json!({ "link": src })
    } else {
        json!({ "id": src })
    };
    if let Some(c) = str_field(m, "caption") {
        if matches!(kind, "audio" | "sticker") {
            return Err(format!("send: {kind} messages cannot have a caption"));
        }
        o["caption"] = c.into();
    }
    if let Some(f) = str_field(m, "filename") {
        o["filename"] = f.into();
    }
    Ok(o)
}

fn body_text(m: &Map<String, Value>, what: &str) -> Result<String, String> {
    let t = str_field(m, "text").ok_or_else(|| format!("send: {what} need a `text`"))?;
    if t.is_empty() || t.chars().count() > 1024 {
        return Err(format!(
            "send: the text of {what} must have 1 to 1024 characters"
        ));
    }
    Ok(t.to_string())
}

fn add_header_footer(o: &mut Value, m: &Map<String, Value>) {
    if let Some(h) = str_field(m, "header") {
        o["header"] = json!({"type": "text", "text": h});
    }
    if let Some(f) = str_field(m, "footer") {
        o["footer"] = json!({ "text": f });
    }
}

fn buttons(b: &Value, m: &Map<String, Value>) -> Result<Value, String> {
    let items = b.as_array().ok_or("send: `buttons` must be an array")?;
    if items.is_empty() || items.len() > 3 {
        return Err(format!(
            "send: WhatsApp allows 1 to 3 buttons, got {}",
            items.len()
        ));
    }
    let buttons: Vec<Value> = items
        .iter()
        .map(|i| {
            let (id, title) = match i {
                Value::String(s) => (s.clone(), s.clone()),
                Value::Object(o) => {
                    let title = str_field(o, "title").ok_or("send: a button needs a `title`")?;
                    (
                        str_field(o, "id").unwrap_or(title).to_string(),
                        title.to_string(),
                    )
                }
                _ => return Err("send: a button is a title or #{id, title}".to_string()),
            };
            if title.is_empty() || title.chars().count() > 20 {
                return Err(format!(
                    "send: button title `{title}` must have 1 to 20 characters"
                ));
            }
            Ok(json!({"type": "reply", "reply": {"id": id, "title": title}}))
        })
        .collect::<Result<_, _>>()?;
    let mut o = json!({"type": "button", "body": {"text": body_text(m, "buttons")?},
                       "action": {"buttons": buttons}});
    add_header_footer(&mut o, m);
    Ok(o)
}

fn list(l: &Value, m: &Map<String, Value>) -> Result<Value, String> {
    let row = |r: &Value| -> Result<Value, String> {
        match r {
            Value::String(s) => Ok(json!({"id": s, "title": s})),
            Value::Object(o) => {
                let title = str_field(o, "title").ok_or("send: a list row needs a `title`")?;
                let mut v = json!({"id": str_field(o, "id").unwrap_or(title), "title": title});
                if let Some(d) = str_field(o, "description") {
                    v["description"] = d.into();
                }
                Ok(v)
            }
            _ => Err("send: a list row is a title or #{id, title, description}".into()),
        }
    };
    let (button, sections) = match l {
        Value::Array(rows) => (
            "Menu".to_string(),
            vec![
                json!({"title": "Options", "rows": rows.iter().map(row).collect::<Result<Vec<_>, _>>()?}),
            ],
        ),
        Value::Object(o) => {
            let secs = o
                .get("sections")
                .and_then(Value::as_array)
                .ok_or("send: `list` needs `sections`")?;
            let secs = secs
                .iter()
                .map(|s| {
                    let rows = s
                        .get("rows")
                        .and_then(Value::as_array)
                        .ok_or("send: a section needs `rows`")?;
                    Ok(
                        json!({"title": s.get("title").cloned().unwrap_or("Options".into()),
                              "rows": rows.iter().map(row).collect::<Result<Vec<_>, String>>()?}),
                    )
                })
                .collect::<Result<Vec<_>, String>>()?;
            (str_field(o, "button").unwrap_or("Menu").to_string(), secs)
        }
        _ => return Err("send: `list` must be an array of rows or #{button, sections}".into()),
    };
    let total: usize = sections
        .iter()
        .map(|s| s["rows"].as_array().map_or(0, Vec::len))
        .sum();
    if total == 0 || total > 10 {
        return Err(format!(
            "send: WhatsApp allows 1 to 10 list rows in all, got {total}"
        ));
    }
    let mut o = json!({"type": "list", "body": {"text": body_text(m, "lists")?},
                       "action": {"button": button, "sections": sections}});
    add_header_footer(&mut o, m);
    Ok(o)
}

fn location(loc: &Value) -> Result<Value, String> {
    let num = |k: &str, alt: &str| {
        loc.get(k)
            .or_else(|| loc.get(alt))
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("send: a location needs a number `{k}`"))
    };
    let mut o = json!({"latitude": num("lat", "latitude")?, "longitude": num("lon", "longitude")?});
    for k in ["name", "address"] {
        if let Some(v) = loc.get(k).and_then(Value::as_str) {
            o[k] = v.into();
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reply_matches_reference_shape() {
        let (t, b) = build("33612345678", &json!("Hello"), Some("wamid.X")).unwrap();
        assert_eq!(t, "text");
        assert_eq!(
            b,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "+33612345678", "type": "text", "text": {"body": "Hello"},
                   "context": {"message_id": "wamid.X"}})
        );
    }

    #[test]
    fn map_forms() {
        let (t, b) = build(
            "+1 (650) 555-1234",
            &json!({"template": "reminder", "language": "fr", "params": ["Ann", 7]}),
            None,
        )
        .unwrap();
        assert_eq!(t, "template");
        assert_eq!(b["template"]["components"][0]["parameters"][1]["text"], "7");
        assert_eq!(b["to"], "+16505551234");
        let (_, b) = build(
            "15550001",
            &json!({"image": "https://x/y.jpg", "caption": "c"}),
            None,
        )
        .unwrap();
        assert_eq!(
            b["image"],
            json!({"link": "https://x/y.jpg", "caption": "c"})
        );
        let (_, b) = build(
            "15550001",
            &json!({"document": "12345", "filename": "a.pdf"}),
            None,
        )
        .unwrap();
        assert_eq!(b["document"], json!({"id": "12345", "filename": "a.pdf"}));
        let (_, b) = build(
            "15550001",
            &json!({"buttons": ["Yes", {"id": "no", "title": "No"}], "text": "Come?"}),
            None,
        )
        .unwrap();
        assert_eq!(
            b["interactive"]["action"]["buttons"][1]["reply"]["id"],
            "no"
        );
        let (_, b) = build(
            "15550001",
            &json!({"location": {"lat": 48.85, "lon": 2.35, "name": "Louvre"}}),
            None,
        )
        .unwrap();
        assert_eq!(b["location"]["longitude"], 2.35);
        let (t, b) = build(
            "15550001",
            &json!({"raw": {"type": "sticker", "sticker": {"id": "9"}}}),
            None,
        )
        .unwrap();
        assert_eq!((t.as_str(), &b["sticker"]["id"]), ("sticker", &json!("9")));
        let (_, b) = build("US.1349", &json!("hi"), None).unwrap();
        assert_eq!(b["recipient"], "US.1349");
        assert!(b.get("to").is_none());
    }

    #[test]
    fn clear_refusals() {
        assert!(
            build("", &json!("x"), None)
                .unwrap_err()
                .contains("recipient is empty")
        );
        assert!(
            build("15550001", &json!(""), None)
                .unwrap_err()
                .contains("text is empty")
        );
        assert!(
            build("15550001", &json!("a".repeat(4097)), None)
                .unwrap_err()
                .contains("4096")
        );
        assert!(
            build(
                "15550001",
                &json!({"buttons": ["a", "b", "c", "d"], "text": "t"}),
                None
            )
            .unwrap_err()
            .contains("1 to 3")
        );
        assert!(
            build("15550001", &json!({"foo": 1}), None)
                .unwrap_err()
                .contains("cannot tell")
        );
        assert!(
            build("15550001", &json!(5), None)
                .unwrap_err()
                .contains("a number")
        );
    }
}
