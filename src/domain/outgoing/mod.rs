//! Outgoing messages: the script API's `send` forms (a text, or a map) → the Cloud API request
//! body of shared/reference §1, and the read-receipt body. Pure: no I/O, no clock, no policy
//! (permissions, the 24-hour window and queueing belong to dispatch and the sender). Errors are
//! sentences a script author can act on, each starting with `send:`.
//!
//! | map form | body |
//! |---|---|
//! | `"hi"`, `#{text, preview_url}` | `text{body, preview_url?}` |
//! | `#{image\|video\|audio\|document\|sticker: link_or_id, caption, filename}` | `{link\|id, caption?, filename?}` |
//! | `#{file: path, caption, filename, as}` (type from the extension; uploaded at send time) | `{id, caption?, filename?}` |
//! | `#{location: #{lat, lon, name, address}}` | `location{latitude, longitude, name?, address?}` |
//! | `#{contacts: [#{name, phones, emails, urls, addresses, org, birthday}]}` | `contacts[{name{formatted_name…}, …}]` |
//! | `#{reaction: emoji, message_id}` (`""` removes; `message_id` defaults to the replied-to message) | `reaction{message_id, emoji}` |
//! | `#{buttons: [title or #{id, title}], text, header, footer}` | interactive `button` |
//! | `#{list: [row] or #{button, sections}, text, header, footer}` | interactive `list` |
//! | `#{cta_url, display_text, text, header, footer}` | interactive `cta_url` |
//! | `#{flow, flow_cta, text, flow_token, screen, data, flow_action, mode, header, footer}` | interactive `flow` |
//! | `#{location_request: true, text}` | interactive `location_request_message` |
//! | `#{template, language, params, header, buttons}` or `#{template, language, components}` | `template{name, language, components}` |
//! | `#{raw: <Cloud API message>}` | the message as given, in the envelope |

use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

const MEDIA: &[&str] = &["image", "video", "audio", "document", "sticker"];
// Limits of shared/reference §6; list rows from Meta's list-message page.
const TEXT_MAX: usize = 4096;
const BODY_MAX: usize = 1024;
const HEADER_MAX: usize = 60;
const TITLE_MAX: usize = 20;
const ROW_TITLE_MAX: usize = 24;
const ROW_DESCRIPTION_MAX: usize = 72;
const LIST_ROWS_MAX: usize = 10;

/// An interactive form: its detecting key and its builder (the value of that key, the whole map).
type Interactive = fn(&Value, &Obj) -> Result<Value, String>;
const INTERACTIVE: &[(&str, Interactive)] = &[
    ("buttons", buttons),
    ("list", list),
    ("cta_url", cta_url),
    ("flow", flow),
    ("location_request", location_request),
];

/// Builds the request body for `to`; `context` quotes an earlier message (a reply).
/// Returns the message type and the body.
pub fn build(to: &str, spec: &Value, context: Option<&str>) -> Result<(String, Value), String> {
    if to.trim().is_empty() {
        return Err("send: the recipient is empty".into());
    }
    let (t, obj) = match spec {
        Value::String(s) => ("text".to_string(), text_obj(s, None)?),
        Value::Object(m) => from_map(m, context)?,
        other => {
            return Err(format!(
                "send: expected a text or a map, got {}",
                type_name(other)
            ));
        }
    };
    let mut body = envelope(to)?;
    let t = if t == "raw" {
        merge_raw(&mut body, obj)?
    } else {
        body.insert("type".into(), t.clone().into());
        body.insert(t.clone(), obj);
        t
    };
    // A reaction names its message inside itself; Meta's examples give it no `context`.
    if let Some(c) = context
        && t != "reaction"
    {
        body.entry("context")
            .or_insert_with(|| json!({ "message_id": c }));
    }
    Ok((t, Value::Object(body)))
}

/// The body that marks an incoming message (and those before it) as read; with `typing`, it
/// also shows a typing indicator until the reply or for 25 s (shared/reference §1).
pub fn mark_read(message_id: &str, typing: bool) -> Value {
    let mut b =
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": message_id});
    if typing {
        b["typing_indicator"] = json!({ "type": "text" });
    }
    b
}

/// A phone number as Graph wants it: `+` and digits. Webhooks give wa_ids as bare digits, and
/// Graph prepends the business number's country code to a number without `+` (shared/reference
/// §1), so the `+` is always added. Spaces, dashes, dots and parentheses are dropped.
pub fn normalize_phone(to: &str) -> Result<String, String> {
    super::phone::phone_digits(to)
        .map(|d| format!("+{d}"))
        .map_err(|e| format!("send: {e}"))
}

/// A business-scoped user id such as `US.13491208655302741918` (no phone number has a dot).
pub fn is_bsuid(to: &str) -> bool {
    to.contains('.') && to.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn envelope(to: &str) -> Result<Obj, String> {
    let mut body = Obj::new();
    body.insert("messaging_product".into(), "whatsapp".into());
    body.insert("recipient_type".into(), "individual".into());
    // Business-scoped user ids (CC.123…) go in `recipient`, phone numbers in `to`.
    if is_bsuid(to) {
        body.insert("recipient".into(), to.trim().into());
    } else {
        body.insert("to".into(), normalize_phone(to)?.into());
    }
    Ok(body)
}

/// Puts a raw message into the envelope. The recipient stays send's first argument: the host
/// checks permissions and the 24-hour window on it, so a raw body may not redirect the message.
fn merge_raw(body: &mut Obj, raw: Value) -> Result<String, String> {
    let Value::Object(raw) = raw else {
        return Err("send: `raw` must be a Cloud API message map".into());
    };
    let t = raw
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("send: a raw message needs a `type`")?
        .to_string();
    for (k, v) in raw {
        match k.as_str() {
            "to" | "recipient" => {
                return Err(format!(
                    "send: a raw message cannot set `{k}`; the recipient is send's first argument"
                ));
            }
            "messaging_product" if v != "whatsapp" => {
                return Err("send: `messaging_product` can only be \"whatsapp\"".into());
            }
            _ => {
                body.insert(k, v);
            }
        }
    }
    Ok(t)
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

fn one(k: &str, v: impl Into<Value>) -> Value {
    let mut o = Obj::new();
    o.insert(k.into(), v.into());
    Value::Object(o)
}

fn str_field<'a>(m: &'a Obj, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// Refuses keys a form does not take, so a typo is an error rather than a silent drop.
fn only(m: &Obj, what: &str, keys: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "send: {what} does not take `{k}`; it takes {}",
            keys.join(", ")
        )),
        None => Ok(()),
    }
}

fn required<'a>(m: &'a Obj, key: &str, what: &str) -> Result<&'a Value, String> {
    m.get(key)
        .ok_or_else(|| format!("send: {what} needs `{key}`"))
}

/// A non-empty text (a number is taken as its digits, as ids often are).
fn text(v: &Value, what: &str) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if s.is_empty() {
        return Err(format!("send: {what} must be a non-empty text"));
    }
    Ok(s)
}

/// A text of 1 to `max` characters.
fn limited(v: &Value, what: &str, max: usize) -> Result<String, String> {
    let s = text(v, what)?;
    let n = s.chars().count();
    if n > max {
        return Err(format!(
            "send: {what} has {n} characters; WhatsApp allows {max}"
        ));
    }
    Ok(s)
}

fn text_obj(s: &str, preview_url: Option<bool>) -> Result<Value, String> {
    if s.is_empty() {
        return Err("send: the text is empty".into());
    }
    if s.chars().count() > TEXT_MAX {
        return Err(format!(
            "send: the text has {} characters; WhatsApp allows {TEXT_MAX}",
            s.chars().count()
        ));
    }
    let mut o = json!({ "body": s });
    if let Some(p) = preview_url {
        o["preview_url"] = p.into();
    }
    Ok(o)
}

fn from_map(m: &Obj, context: Option<&str>) -> Result<(String, Value), String> {
    let typed = |t: &str, v: Value| Ok((t.to_string(), v));
    if let Some(raw) = m.get("raw") {
        only(m, "a raw message", &["raw"])?;
        return match raw {
            Value::Object(_) => typed("raw", raw.clone()),
            _ => Err("send: `raw` must be a Cloud API message map".into()),
        };
    }
    if let Some(name) = m.get("template") {
        return typed("template", template(name, m)?);
    }
    if let Some(c) = m.get("contacts") {
        only(m, "a contacts message", &["contacts"])?;
        return typed("contacts", contacts(c)?);
    }
    if m.contains_key("file") {
        return super::local_file::file_form(m);
    }
    if let Some(kind) = MEDIA.iter().find(|k| m.contains_key(**k)) {
        return typed(kind, media(kind, m)?);
    }
    for (key, form) in INTERACTIVE {
        if let Some(v) = m.get(*key) {
            return typed("interactive", form(v, m)?);
        }
    }
    if let Some(loc) = m.get("location") {
        only(m, "a location message", &["location"])?;
        return typed("location", location(loc)?);
    }
    if let Some(emoji) = m.get("reaction") {
        return typed("reaction", reaction(emoji, m, context)?);
    }
    if let Some(t) = m.get("text") {
        only(m, "a text message", &["text", "preview_url"])?;
        let t = t.as_str().ok_or("send: `text` must be a text")?;
        let preview = match m.get("preview_url") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err("send: `preview_url` must be true or false".into()),
        };
        return typed("text", text_obj(t, preview)?);
    }
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    Err(format!(
        "send: cannot tell the message type from keys [{}]; use text, template, image, video, audio, document, sticker, location, contacts, reaction, buttons, list, cta_url, flow, location_request or raw",
        keys.join(", ")
    ))
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A media reference: a link (anything with `://`, which no media id has) or an uploaded media id.
fn media_ref(kind: &str, v: &Value) -> Result<Obj, String> {
    let src = text(v, &format!("`{kind}` (a link or a media id)"))?;
    let key = if src.contains("://") { "link" } else { "id" };
    let mut o = Obj::new();
    o.insert(key.into(), src.into());
    Ok(o)
}

fn media(kind: &str, m: &Obj) -> Result<Value, String> {
    let keys: &[&str] = match kind {
        "document" => &["document", "caption", "filename"],
        "image" | "video" => &[kind, "caption"],
        _ => &[kind],
    };
    only(m, &format!("{} {kind} message", article(kind)), keys)?;
    let mut o = media_ref(kind, &m[kind])?;
    for k in ["caption", "filename"] {
        if let Some(v) = m.get(k) {
            o.insert(k.into(), text(v, &format!("`{k}`"))?.into());
        }
    }
    Ok(Value::Object(o))
}

fn location(loc: &Value) -> Result<Value, String> {
    let o = loc
        .as_object()
        .ok_or("send: `location` must be #{lat, lon, name, address}")?;
    only(
        o,
        "a location",
        &["lat", "lon", "latitude", "longitude", "name", "address"],
    )?;
    let coord = |k: &str, alt: &str, max: f64| -> Result<f64, String> {
        match o.get(k).or_else(|| o.get(alt)) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|x: &f64| x.abs() <= max)
        .ok_or_else(|| format!("send: a location needs `{k}`, a number from -{max} to {max}"))
    };
    let mut out = json!({"latitude": coord("lat", "latitude", 90.0)?,
                         "longitude": coord("lon", "longitude", 180.0)?});
    for k in ["name", "address"] {
        if let Some(v) = o.get(k) {
            out[k] = text(v, &format!("the location's `{k}`"))?.into();
        }
    }
    Ok(out)
}

fn reaction(emoji: &Value, m: &Obj, context: Option<&str>) -> Result<Value, String> {
    only(m, "a reaction", &["reaction", "message_id"])?;
    let emoji = emoji
        .as_str()
        .ok_or("send: `reaction` is an emoji, or \"\" to remove one")?;
    let id = match (m.get("message_id"), context) {
        (Some(v), _) => text(v, "`message_id`")?,
        (None, Some(c)) => c.to_string(),
        (None, None) => {
            return Err("send: a reaction needs `message_id` (reply(event, #{reaction: …}) reacts to the event)".into());
        }
    };
    Ok(json!({"message_id": id, "emoji": emoji}))
}

/// A header: a text, or a map with one of `kinds` (media by link or id; a document may have
/// a `filename`). Returns the kind, its value and the filename.
fn header_parts<'a>(
    h: &'a Value,
    kinds: &[&'static str],
) -> Result<(&'static str, &'a Value, Option<String>), String> {
    let shape = || {
        format!(
            "send: a header is a text or a map with one of {}",
            kinds.join(", ")
        )
    };
    let o = match h {
        Value::String(_) => return Ok(("text", h, None)),
        Value::Object(o) => o,
        _ => return Err(shape()),
    };
    let kind = *kinds
        .iter()
        .find(|k| o.contains_key(**k))
        .ok_or_else(shape)?;
    let keys: &[&str] = if kind == "document" {
        &[kind, "filename"]
    } else {
        &[kind]
    };
    only(o, &format!("{} {kind} header", article(kind)), keys)?;
    let filename = o
        .get("filename")
        .map(|f| text(f, "`filename`"))
        .transpose()?;
    Ok((kind, &o[kind], filename))
}

mod contacts;
mod interactive;
mod template;
#[cfg(test)]
mod tests;

use contacts::contacts;
use interactive::{buttons, cta_url, flow, list, location_request};
use template::template;
