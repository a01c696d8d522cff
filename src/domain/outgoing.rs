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

// ---- contacts ----

const NAME_PARTS: [&str; 5] = ["prefix", "first_name", "middle_name", "last_name", "suffix"];

fn contacts(c: &Value) -> Result<Value, String> {
    let items = c
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("send: `contacts` is a non-empty array of #{name, phones, emails, …}")?;
    items
        .iter()
        .enumerate()
        .map(|(i, c)| contact(c, i + 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn contact(c: &Value, n: usize) -> Result<Value, String> {
    let what = format!("contact {n}");
    let o = c
        .as_object()
        .ok_or_else(|| format!("send: {what} must be a map #{{name, phones, …}}"))?;
    only(
        o,
        &what,
        &[
            "name",
            "phones",
            "emails",
            "urls",
            "addresses",
            "org",
            "birthday",
        ],
    )?;
    let mut out = Obj::new();
    out.insert("name".into(), contact_name(o.get("name"), &what)?);
    for (list, field) in [
        ("phones", "phone"),
        ("emails", "email"),
        ("urls", "url"),
        ("addresses", ""),
    ] {
        if let Some(v) = o.get(list) {
            out.insert(list.into(), entries(v, list, field, &what)?);
        }
    }
    match o.get("org") {
        None => {}
        Some(Value::String(s)) => {
            out.insert("org".into(), one("company", s.as_str()));
        }
        Some(v @ Value::Object(_)) => {
            out.insert("org".into(), v.clone());
        }
        Some(_) => {
            return Err(format!(
                "send: the `org` of {what} is a company name or #{{company, department, title}}"
            ));
        }
    }
    if let Some(b) = o.get("birthday") {
        let ok = b.as_str().is_some_and(|s| {
            s.len() == 10
                && s.char_indices().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        });
        if !ok {
            return Err(format!(
                "send: the `birthday` of {what} must be a text YYYY-MM-DD"
            ));
        }
        out.insert("birthday".into(), b.clone());
    }
    Ok(Value::Object(out))
}

/// `name` is a text (the formatted name, split at its first space into first and last name,
/// since Graph wants a name part beside `formatted_name`) or the reference's name map, whose
/// `formatted_name` is made from the parts when missing.
fn contact_name(v: Option<&Value>, what: &str) -> Result<Value, String> {
    let need = || {
        format!(
            "send: {what} needs a `name`: a text, or #{{formatted_name, first_name, last_name, …}}"
        )
    };
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            let s = s.trim();
            let mut name = json!({ "formatted_name": s });
            match s.split_once(' ') {
                Some((first, last)) => {
                    name["first_name"] = first.into();
                    name["last_name"] = last.trim().into();
                }
                None => name["first_name"] = s.into(),
            }
            Ok(name)
        }
        Some(Value::Object(o)) => {
            let mut keys = NAME_PARTS.to_vec();
            keys.push("formatted_name");
            only(o, &format!("the name of {what}"), &keys)?;
            let mut name = o.clone();
            if str_field(o, "formatted_name").is_none_or(str::is_empty) {
                let parts: Vec<&str> = NAME_PARTS
                    .iter()
                    .filter_map(|k| str_field(o, k))
                    .filter(|s| !s.is_empty())
                    .collect();
                if parts.is_empty() {
                    return Err(need());
                }
                name.insert("formatted_name".into(), parts.join(" ").into());
            }
            Ok(Value::Object(name))
        }
        _ => Err(need()),
    }
}

/// `phones`, `emails`, `urls`: one or an array of texts or reference maps (`#{phone, type,
/// wa_id}`…); `addresses`: one or an array of maps, as the reference writes them.
fn entries(v: &Value, list: &str, field: &str, what: &str) -> Result<Value, String> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|e| match e {
            Value::String(s) if !field.is_empty() && !s.is_empty() => Ok(one(field, s.as_str())),
            Value::Object(o) if field.is_empty() || o.get(field).is_some_and(Value::is_string) => {
                Ok(e.clone())
            }
            _ if field.is_empty() => Err(format!(
                "send: the `{list}` of {what} are maps #{{street, city, state, zip, country, country_code, type}}"
            )),
            _ => Err(format!(
                "send: the `{list}` of {what} are texts or maps #{{{field}, type}}"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

// ---- interactive ----

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

fn interactive_header(h: &Value, kinds: &[&'static str]) -> Result<Value, String> {
    let (kind, v, filename) = header_parts(h, kinds)?;
    if kind == "text" {
        return Ok(json!({"type": "text", "text": limited(v, "the header", HEADER_MAX)?}));
    }
    let mut media = media_ref(kind, v)?;
    if let Some(f) = filename {
        media.insert("filename".into(), f.into());
    }
    let mut o = one("type", kind);
    o[kind] = Value::Object(media);
    Ok(o)
}

/// The interactive object: `kind`, the body from `text`, `action`, and `header`/`footer`.
fn interactive(kind: &str, what: &str, m: &Obj, action: Value) -> Result<Value, String> {
    let body = required(m, "text", what)?;
    let body = limited(body, &format!("the text of {what}"), BODY_MAX)?;
    let mut o = json!({"type": kind, "body": {"text": body}, "action": action});
    if let Some(h) = m.get("header") {
        // A list header can only be a text (shared/reference §1).
        let kinds: &[&str] = if kind == "list" {
            &["text"]
        } else {
            &["text", "image", "video", "document"]
        };
        o["header"] = interactive_header(h, kinds)?;
    }
    if let Some(f) = m.get("footer") {
        o["footer"] = one("text", limited(f, "the footer", HEADER_MAX)?);
    }
    Ok(o)
}

/// A choice: a title (its own id) or `#{id, title}`; `extra` keys are allowed beside them.
fn choice(v: &Value, what: &str, max: usize, extra: &[&str]) -> Result<(String, String), String> {
    let (id, title) = match v {
        Value::String(s) => (s.clone(), s.clone()),
        Value::Object(o) => {
            let mut keys = vec!["id", "title"];
            keys.extend(extra);
            only(o, what, &keys)?;
            let title = text(required(o, "title", what)?, &format!("the title of {what}"))?;
            let id = match o.get("id") {
                Some(id) => text(id, &format!("the id of {what}"))?,
                None => title.clone(),
            };
            (id, title)
        }
        _ => return Err(format!("send: {what} is a title or #{{id, title}}")),
    };
    if title.is_empty() || title.chars().count() > max {
        return Err(format!(
            "send: the title `{title}` of {what} must have 1 to {max} characters"
        ));
    }
    Ok((id, title))
}

/// WhatsApp needs distinct ids to tell which choice was taken.
fn distinct<'a>(ids: impl IntoIterator<Item = &'a str>, what: &str) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    match ids.into_iter().find(|id| !seen.insert(*id)) {
        Some(id) => Err(format!(
            "send: two {what} have the id `{id}`; give each its own id"
        )),
        None => Ok(()),
    }
}

fn buttons(b: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a buttons message";
    only(m, what, &["buttons", "text", "header", "footer"])?;
    let items = b.as_array().ok_or("send: `buttons` must be an array")?;
    if items.is_empty() || items.len() > 3 {
        return Err(format!(
            "send: WhatsApp allows 1 to 3 buttons, got {}",
            items.len()
        ));
    }
    let choices = items
        .iter()
        .map(|i| choice(i, "a button", TITLE_MAX, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    distinct(choices.iter().map(|(id, _)| id.as_str()), "buttons")?;
    let buttons: Vec<Value> = choices
        .into_iter()
        .map(|(id, title)| json!({"type": "reply", "reply": {"id": id, "title": title}}))
        .collect();
    interactive("button", what, m, json!({ "buttons": buttons }))
}

fn list_row(r: &Value) -> Result<Value, String> {
    let (id, title) = choice(r, "a list row", ROW_TITLE_MAX, &["description"])?;
    let mut row = json!({"id": id, "title": title});
    if let Some(d) = r.get("description") {
        row["description"] = limited(d, "a list row's description", ROW_DESCRIPTION_MAX)?.into();
    }
    Ok(row)
}

fn section(s: &Value) -> Result<Value, String> {
    let o = s
        .as_object()
        .ok_or("send: a list section is #{title, rows}")?;
    only(o, "a list section", &["title", "rows"])?;
    let rows = o
        .get("rows")
        .and_then(Value::as_array)
        .ok_or("send: a list section needs `rows`, an array")?;
    let title = match o.get("title") {
        Some(t) => text(t, "a section title")?,
        None => "Options".into(),
    };
    let rows = rows.iter().map(list_row).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"title": title, "rows": rows}))
}

fn list(l: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a list message";
    only(m, what, &["list", "text", "header", "footer"])?;
    let (button, sections) = match l {
        Value::Array(rows) => ("Menu".to_string(), vec![section(&json!({ "rows": rows }))?]),
        Value::Object(o) => {
            only(o, "`list`", &["button", "sections"])?;
            let secs = o
                .get("sections")
                .and_then(Value::as_array)
                .ok_or("send: `list` needs `sections`, an array of #{title, rows}")?;
            let button = match o.get("button") {
                Some(b) => limited(b, "the list's `button`", TITLE_MAX)?,
                None => "Menu".into(),
            };
            (button, secs.iter().map(section).collect::<Result<_, _>>()?)
        }
        _ => return Err("send: `list` must be an array of rows or #{button, sections}".into()),
    };
    let rows = || {
        sections
            .iter()
            .flat_map(|s| s["rows"].as_array().into_iter().flatten())
    };
    let total = rows().count();
    if total == 0 || total > LIST_ROWS_MAX {
        return Err(format!(
            "send: WhatsApp allows 1 to {LIST_ROWS_MAX} list rows in all, got {total}"
        ));
    }
    distinct(rows().filter_map(|r| r["id"].as_str()), "list rows")?;
    interactive(
        "list",
        what,
        m,
        json!({"button": button, "sections": sections}),
    )
}

fn cta_url(u: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a cta_url message";
    only(
        m,
        what,
        &["cta_url", "display_text", "text", "header", "footer"],
    )?;
    let url = u
        .as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .ok_or("send: `cta_url` must be a link starting with https://")?;
    let display = required(m, "display_text", what)?;
    let display = limited(display, "`display_text` (the button label)", TITLE_MAX)?;
    let action = json!({"name": "cta_url", "parameters": {"display_text": display, "url": url}});
    interactive("cta_url", what, m, action)
}

/// `flow` is the flow's id (digits) or its name; `screen` (and its `data`) opens the flow there.
fn flow(f: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a flow message";
    only(
        m,
        what,
        &[
            "flow",
            "flow_cta",
            "text",
            "flow_token",
            "screen",
            "data",
            "flow_action",
            "mode",
            "header",
            "footer",
        ],
    )?;
    let flow = text(f, "`flow` (a flow id or name)")?;
    let key = if flow.chars().all(|c| c.is_ascii_digit()) {
        "flow_id"
    } else {
        "flow_name"
    };
    let mut p = Obj::new();
    p.insert("flow_message_version".into(), "3".into());
    p.insert(key.into(), flow.into());
    let cta = text(
        required(m, "flow_cta", what)?,
        "`flow_cta` (the button label)",
    )?;
    p.insert("flow_cta".into(), cta.into());
    if let Some(t) = m.get("flow_token") {
        p.insert("flow_token".into(), text(t, "`flow_token`")?.into());
    }
    let action = m.get("flow_action").map(|a| a.as_str());
    match (action, m.get("screen"), m.get("data")) {
        (None | Some(Some("navigate")), Some(s), data) => {
            let mut payload = one("screen", text(s, "`screen`")?);
            match data {
                None => {}
                Some(Value::Object(d)) if d.is_empty() => {}
                Some(d @ Value::Object(_)) => payload["data"] = d.clone(),
                Some(_) => return Err("send: a flow's `data` must be a map".into()),
            }
            p.insert("flow_action".into(), "navigate".into());
            p.insert("flow_action_payload".into(), payload);
        }
        (_, None, Some(_)) => {
            return Err("send: a flow's `data` goes to its `screen`: give `screen` too".into());
        }
        (None, None, None) => {}
        (Some(Some(a @ ("navigate" | "data_exchange"))), None, None) => {
            p.insert("flow_action".into(), a.into());
        }
        (Some(Some("data_exchange")), Some(_), _) => {
            return Err(
                "send: a data_exchange flow asks its endpoint for the first screen; drop `screen`"
                    .into(),
            );
        }
        (Some(_), _, _) => {
            return Err("send: `flow_action` is \"navigate\" or \"data_exchange\"".into());
        }
    }
    match m.get("mode").map(Value::as_str) {
        None => {}
        Some(Some(mode @ ("draft" | "published"))) => {
            p.insert("mode".into(), mode.into());
        }
        Some(_) => return Err("send: a flow's `mode` is \"draft\" or \"published\"".into()),
    }
    interactive("flow", what, m, json!({"name": "flow", "parameters": p}))
}

fn location_request(v: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a location request";
    only(m, what, &["location_request", "text"])?;
    if v != &Value::Bool(true) {
        return Err("send: `location_request` must be true".into());
    }
    let action = json!({ "name": "send_location" });
    interactive("location_request_message", what, m, action)
}

// ---- templates ----

fn template(name: &Value, m: &Obj) -> Result<Value, String> {
    let parts = ["params", "header", "buttons"];
    only(
        m,
        "a template",
        &[
            "template",
            "language",
            "params",
            "header",
            "buttons",
            "components",
        ],
    )?;
    let name = text(name, "`template` (the template's name)")?;
    let language = match m.get("language") {
        None => json!({ "code": "en_US" }),
        Some(Value::String(c)) if !c.is_empty() => json!({ "code": c }),
        Some(Value::Object(o)) if str_field(o, "code").is_some_and(|c| !c.is_empty()) => {
            Value::Object(o.clone())
        }
        Some(_) => {
            return Err(
                "send: a template's `language` is a code such as \"en_US\" (or #{code, policy})"
                    .into(),
            );
        }
    };
    let mut t = json!({"name": name, "language": language});
    let components = if let Some(c) = m.get("components") {
        if parts.iter().any(|k| m.contains_key(*k)) {
            return Err(
                "send: a template takes `components`, or params/header/buttons, not both".into(),
            );
        }
        c.as_array()
            .ok_or("send: a template's `components` must be an array")?
            .clone()
    } else {
        let mut comps = Vec::new();
        if let Some(h) = m.get("header") {
            comps.push(json!({"type": "header", "parameters": [template_header(h)?]}));
        }
        if let Some(p) = m.get("params") {
            let ps = body_params(p)?;
            if !ps.is_empty() {
                comps.push(json!({"type": "body", "parameters": ps}));
            }
        }
        if let Some(b) = m.get("buttons") {
            comps.extend(template_buttons(b)?);
        }
        comps
    };
    if !components.is_empty() {
        t["components"] = components.into();
    }
    Ok(t)
}

fn template_header(h: &Value) -> Result<Value, String> {
    let kinds = ["text", "image", "video", "document", "location"];
    let (kind, v, filename) = header_parts(h, &kinds)?;
    let value = match kind {
        "text" => text(v, "a template header (Graph answers 400 to an empty one)")?.into(),
        "location" => location(v)?,
        _ => {
            let mut media = media_ref(kind, v)?;
            if let Some(f) = filename {
                media.insert("filename".into(), f.into());
            }
            Value::Object(media)
        }
    };
    let mut o = one("type", kind);
    o[kind] = value;
    Ok(o)
}

/// `params`: an array for positional parameters ({{1}}, {{2}}…) or a map for named ones.
fn body_params(p: &Value) -> Result<Vec<Value>, String> {
    match p {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| param(v, &format!("parameter {}", i + 1)))
            .collect(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                let mut p = param(v, &format!("parameter `{k}`"))?;
                p["parameter_name"] = k.as_str().into();
                Ok(p)
            })
            .collect(),
        _ => Err(
            "send: a template's `params` is an array (positional) or a map (named parameters)"
                .into(),
        ),
    }
}

/// A body parameter: a text or number, `#{currency: #{fallback_value, code, amount_1000}}`,
/// `#{date_time: "fallback text" or #{fallback_value, …}}`, or a Cloud API parameter with `type`.
fn param(v: &Value, what: &str) -> Result<Value, String> {
    let empty = || {
        format!("send: template parameters cannot be empty (Graph answers 400); {what} is empty")
    };
    match v {
        Value::String(s) if s.is_empty() => Err(empty()),
        Value::Null => Err(empty()),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(json!({"type": "text", "text": s}))
        }
        Value::Object(o) if o.contains_key("type") => Ok(v.clone()),
        Value::Object(o) => match o.iter().next().filter(|_| o.len() == 1) {
            Some((k, inner @ Value::Object(_))) if k == "currency" || k == "date_time" => {
                let mut p = one("type", k.as_str());
                p[k] = inner.clone();
                Ok(p)
            }
            Some((k, Value::String(s))) if k == "date_time" && !s.is_empty() => Ok(json!({
                "type": "date_time", "date_time": {"fallback_value": s}
            })),
            _ => Err(format!(
                "send: template {what} is a text, a number, #{{currency: …}}, #{{date_time: …}} or a Cloud API parameter with `type`"
            )),
        },
        Value::Array(_) => Err(format!("send: template {what} cannot be an array")),
    }
}

/// A template's `buttons`, one entry per button in the template's order (`()` for one without
/// a parameter): a text (a quick-reply payload), `#{payload}`, `#{url: suffix}`,
/// `#{copy_code}`, `#{flow_token, data}` or `#{catalog: thumbnail_product_retailer_id}`.
fn template_buttons(b: &Value) -> Result<Vec<Value>, String> {
    let items = b
        .as_array()
        .ok_or("send: a template's `buttons` is an array, one entry per button")?;
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let what = format!("template button {i}");
        let (sub_type, param) = match v {
            Value::Null => continue,
            Value::String(_) | Value::Number(_) => {
                let payload = text(v, &format!("the payload of {what}"))?;
                (
                    "quick_reply",
                    json!({"type": "payload", "payload": payload}),
                )
            }
            Value::Object(o) => {
                let kinds = ["payload", "url", "copy_code", "flow_token", "catalog"];
                let kind = kinds.iter().find(|k| o.contains_key(**k)).ok_or_else(|| {
                    format!(
                        "send: {what} is a payload text or a map with one of {}",
                        kinds.join(", ")
                    )
                })?;
                let keys: &[&str] = if *kind == "flow_token" {
                    &["flow_token", "data"]
                } else {
                    &[kind]
                };
                only(o, &what, keys)?;
                template_button(kind, o, &what)?
            }
            _ => return Err(format!("send: {what} is a payload text or a map")),
        };
        let index = i.to_string();
        out.push(
            json!({"type": "button", "sub_type": sub_type, "index": index, "parameters": [param]}),
        );
    }
    Ok(out)
}

fn template_button(kind: &str, o: &Obj, what: &str) -> Result<(&'static str, Value), String> {
    let val = |k: &str| text(&o[k], &format!("the `{k}` of {what}"));
    Ok(match kind {
        "payload" => (
            "quick_reply",
            json!({"type": "payload", "payload": val(kind)?}),
        ),
        "url" => ("url", json!({"type": "text", "text": val(kind)?})),
        "copy_code" => (
            "copy_code",
            json!({"type": "coupon_code", "coupon_code": val(kind)?}),
        ),
        // Meta's catalog-template example writes the sub_type in capitals.
        "catalog" => (
            "CATALOG",
            json!({"type": "action", "action": {"thumbnail_product_retailer_id": val(kind)?}}),
        ),
        _ => {
            let mut action = one("flow_token", val("flow_token")?);
            match o.get("data") {
                None => {}
                Some(d @ Value::Object(_)) => action["flow_action_data"] = d.clone(),
                Some(_) => return Err(format!("send: the `data` of {what} must be a map")),
            }
            ("flow", json!({"type": "action", "action": action}))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(spec: Value) -> Value {
        build("15550001", &spec, None).unwrap().1
    }

    fn refusal(spec: Value) -> String {
        let e = build("15550001", &spec, None).unwrap_err();
        assert!(e.starts_with("send: "), "{e}");
        e
    }

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
        let b = body(json!({"image": "https://x/y.jpg", "caption": "c"}));
        assert_eq!(
            b["image"],
            json!({"link": "https://x/y.jpg", "caption": "c"})
        );
        let b = body(json!({"document": "12345", "filename": "a.pdf"}));
        assert_eq!(b["document"], json!({"id": "12345", "filename": "a.pdf"}));
        let b = body(json!({"buttons": ["Yes", {"id": "no", "title": "No"}], "text": "Come?"}));
        assert_eq!(
            b["interactive"]["action"]["buttons"][1]["reply"]["id"],
            "no"
        );
        let b = body(json!({"location": {"lat": 48.85, "lon": 2.35, "name": "Louvre"}}));
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
    fn interactive_forms_without_fixture() {
        let b = body(
            json!({"cta_url": "https://shop.example/a?b=1", "display_text": "See dates",
                            "text": "Our next trips", "header": "Trips", "footer": "Olga"}),
        );
        assert_eq!(
            b["interactive"],
            json!({"type": "cta_url", "header": {"type": "text", "text": "Trips"},
                   "body": {"text": "Our next trips"}, "footer": {"text": "Olga"},
                   "action": {"name": "cta_url", "parameters": {"display_text": "See dates",
                                                                "url": "https://shop.example/a?b=1"}}})
        );
        let b = body(json!({"location_request": true, "text": "Where are you?"}));
        assert_eq!(
            b["interactive"],
            json!({"type": "location_request_message", "body": {"text": "Where are you?"},
                   "action": {"name": "send_location"}})
        );
        let b = body(json!({"flow": "Signup", "flow_cta": "Sign up", "text": "Join us"}));
        assert_eq!(
            b["interactive"]["action"],
            json!({"name": "flow", "parameters": {"flow_message_version": "3",
                   "flow_name": "Signup", "flow_cta": "Sign up"}})
        );
        let b = body(
            json!({"flow": 123, "flow_cta": "Go", "text": "t", "flow_action": "data_exchange"}),
        );
        assert_eq!(b["interactive"]["action"]["parameters"]["flow_id"], "123");
        assert_eq!(
            b["interactive"]["action"]["parameters"]["flow_action"],
            "data_exchange"
        );
        let b = body(
            json!({"list": ["A", {"id": "b", "title": "B", "description": "bee"}],
                            "text": "Pick"}),
        );
        assert_eq!(
            b["interactive"]["action"],
            json!({"button": "Menu", "sections": [{"title": "Options", "rows": [
                {"id": "A", "title": "A"}, {"id": "b", "title": "B", "description": "bee"}]}]})
        );
    }

    #[test]
    fn contact_and_template_shorthands() {
        let b = body(
            json!({"contacts": [{"name": "Ann Marie Smith", "phones": "+33 6 12 34 56 78",
                                          "emails": ["ann@example.org"], "org": "Acme"}]}),
        );
        assert_eq!(
            b["contacts"],
            json!([{"name": {"formatted_name": "Ann Marie Smith", "first_name": "Ann",
                             "last_name": "Marie Smith"},
                    "phones": [{"phone": "+33 6 12 34 56 78"}],
                    "emails": [{"email": "ann@example.org"}], "org": {"company": "Acme"}}])
        );
        let b = body(json!({"contacts": [{"name": {"first_name": "Ann", "last_name": "Smith"}}]}));
        assert_eq!(b["contacts"][0]["name"]["formatted_name"], "Ann Smith");
        let b = body(
            json!({"template": "order", "params": {"name": "Ann", "n": 3},
                            "header": "Olga", "buttons": [(), {"copy_code": "X1"}]}),
        );
        assert_eq!(
            b["template"]["components"],
            json!([{"type": "header", "parameters": [{"type": "text", "text": "Olga"}]},
                   {"type": "body", "parameters": [
                       {"type": "text", "text": "Ann", "parameter_name": "name"},
                       {"type": "text", "text": "3", "parameter_name": "n"}]},
                   {"type": "button", "sub_type": "copy_code", "index": "1",
                    "parameters": [{"type": "coupon_code", "coupon_code": "X1"}]}])
        );
        let b = body(
            json!({"template": "t", "header": {"location": {"lat": 1.5, "lon": 2.5}},
                            "params": [{"date_time": "Monday"}]}),
        );
        assert_eq!(
            b["template"]["components"][0]["parameters"][0],
            json!({"type": "location", "location": {"latitude": 1.5, "longitude": 2.5}})
        );
        assert_eq!(
            b["template"]["components"][1]["parameters"][0],
            json!({"type": "date_time", "date_time": {"fallback_value": "Monday"}})
        );
    }

    #[test]
    fn reactions_and_read_receipts() {
        // reply(event, #{reaction: "👍"}) reacts to the event, without a `context`.
        let (t, b) = build("15550001", &json!({"reaction": "👍"}), Some("wamid.E")).unwrap();
        assert_eq!(t, "reaction");
        assert_eq!(
            b["reaction"],
            json!({"message_id": "wamid.E", "emoji": "👍"})
        );
        assert!(b.get("context").is_none());
        let b = body(json!({"reaction": "", "message_id": "wamid.F"}));
        assert_eq!(b["reaction"]["emoji"], "");
        assert_eq!(
            mark_read("wamid.G", false),
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.G"})
        );
        assert_eq!(
            mark_read("wamid.G", true)["typing_indicator"],
            json!({"type": "text"})
        );
    }

    #[test]
    fn clear_refusals() {
        assert!(
            build("", &json!("x"), None)
                .unwrap_err()
                .contains("recipient is empty")
        );
        let cases = [
            (json!(""), "text is empty"),
            (json!("a".repeat(4097)), "4096"),
            (json!(5), "a number"),
            (json!({"foo": 1}), "cannot tell"),
            (
                json!({"buttons": ["a", "b", "c", "d"], "text": "t"}),
                "1 to 3",
            ),
            (
                json!({"buttons": ["a", "a"], "text": "t"}),
                "two buttons have the id `a`",
            ),
            (json!({"buttons": ["a".repeat(21)], "text": "t"}), "1 to 20"),
            (json!({"buttons": [""], "text": "t"}), "1 to 20"),
            (json!({"buttons": ["a"]}), "needs `text`"),
            (
                json!({"buttons": ["a"], "text": "a".repeat(1025)}),
                "allows 1024",
            ),
            (
                json!({"buttons": ["a"], "text": "t", "header": "h".repeat(61)}),
                "allows 60",
            ),
            (
                json!({"buttons": ["a"], "text": "t", "footer": "f".repeat(61)}),
                "allows 60",
            ),
            (
                json!({"buttons": ["a"], "text": "t", "header": {"audio": "1"}}),
                "a header is",
            ),
            (
                json!({"list": ["a"], "text": "t", "header": {"image": "1"}}),
                "a header is a text",
            ),
            (
                json!({"list": (0..11).map(|i| i.to_string()).collect::<Vec<_>>(), "text": "t"}),
                "got 11",
            ),
            (
                json!({"list": {"button": "b".repeat(21), "sections": [{"rows": ["a"]}]}, "text": "t"}),
                "allows 20",
            ),
            (
                json!({"cta_url": "shop.example", "display_text": "x", "text": "t"}),
                "https://",
            ),
            (
                json!({"cta_url": "https://a", "display_text": "d".repeat(21), "text": "t"}),
                "allows 20",
            ),
            (json!({"flow": "f", "text": "t"}), "needs `flow_cta`"),
            (
                json!({"flow": "f", "flow_cta": "c", "text": "t", "data": {}}),
                "give `screen`",
            ),
            (
                json!({"flow": "f", "flow_cta": "c", "text": "t", "mode": "test"}),
                "draft",
            ),
            (
                json!({"location_request": "yes", "text": "t"}),
                "must be true",
            ),
            (
                json!({"audio": "1", "caption": "c"}),
                "an audio message does not take `caption`",
            ),
            (
                json!({"image": "1", "filename": "a.jpg"}),
                "does not take `filename`",
            ),
            (
                json!({"text": "hi", "capton": "x"}),
                "does not take `capton`",
            ),
            (json!({"location": {"lat": 91, "lon": 0}}), "-90 to 90"),
            (json!({"reaction": "👍"}), "needs `message_id`"),
            (
                json!({"template": "t", "params": ["a", ""]}),
                "cannot be empty (Graph answers 400); parameter 2",
            ),
            (
                json!({"template": "t", "params": {"who": ()}}),
                "parameter `who` is empty",
            ),
            (json!({"template": "t", "header": ""}), "template header"),
            (
                json!({"template": "t", "buttons": [""]}),
                "payload of template button 0",
            ),
            (
                json!({"template": "t", "params": ["a"], "components": []}),
                "not both",
            ),
            (json!({"contacts": []}), "non-empty array"),
            (
                json!({"contacts": [{"phones": ["1"]}]}),
                "contact 1 needs a `name`",
            ),
            (
                json!({"contacts": [{"name": "A", "birthday": "1/2/2000"}]}),
                "YYYY-MM-DD",
            ),
            (
                json!({"raw": {"type": "text", "to": "1"}}),
                "cannot set `to`",
            ),
            (json!({"raw": {"text": {}}}), "needs a `type`"),
        ];
        for (spec, want) in cases {
            let e = refusal(spec.clone());
            assert!(e.contains(want), "{spec}: `{e}` lacks `{want}`");
        }
    }

    /// Every message-send request body in shared/fixtures/graph, built from the map a script
    /// author would write (or, for types without a map form, from `#{raw: …}`).
    mod fixtures {
        use super::*;

        const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/graph/");
        const PREFIXES: [&str; 2] = [
            "meta-openapi__phone-number-id-messages__post__",
            "java-bindambc__send__",
        ];
        const SUFFIX: &str = ".request.json";
        /// The number messages are built for when a fixture's `to` is a placeholder.
        const NUMBER: &str = "16505551234";
        /// `#{flow: …}` tells an id (digits) from a name, so the `{{Flow-ID}}` placeholder
        /// is read as this id.
        const FLOW_ID: &str = "1234567890";

        enum Case {
            /// The script's map; a fixture's `context` is passed as `reply` passes it.
            Send(Value),
            /// A type without a map form: `#{raw: <the fixture's message>}` must reproduce it.
            Raw,
            MarkRead {
                typing: bool,
            },
            NotAMessage(String),
        }
        use Case::*;

        fn date_time_1977() -> Value {
            json!({"date_time": {"calendar": "GREGORIAN", "day_of_month": 25, "day_of_week": 5,
                                 "fallback_value": "February 25, 1977", "hour": 15, "minute": 33,
                                 "month": 2, "year": 1977}})
        }

        fn usd_100_99() -> Value {
            json!({"currency": {"amount_1000": 100990, "code": "USD", "fallback_value": "$100.99"}})
        }

        fn meta_contact() -> Value {
            json!({"name": {"first_name": "John", "formatted_name": "John Smith", "last_name": "Smith",
                            "middle_name": "D.", "prefix": "Dr", "suffix": "Jr"},
                   "birthday": "2012-08-18",
                   "phones": [{"phone": "+1 (940) 555-1234", "type": "HOME"},
                              {"phone": "+1 (650) 555-1234", "type": "WORK", "wa_id": "16505551234"}],
                   "emails": [{"email": "test@fb.com", "type": "WORK"},
                              {"email": "test@whatsapp.com", "type": "HOME"}],
                   "urls": [{"type": "WORK", "url": "https://www.facebook.com"},
                            {"type": "HOME", "url": "https://www.whatsapp.com"}],
                   "org": {"company": "WhatsApp", "department": "Design", "title": "Manager"},
                   "addresses": [
                       {"city": "Menlo Park", "country": "United States", "country_code": "us",
                        "state": "CA", "street": "1 Hacker Way", "type": "HOME", "zip": "94025"},
                       {"city": "Menlo Park", "country": "United States", "country_code": "us",
                        "state": "CA", "street": "200 Jefferson Dr", "type": "WORK", "zip": "94025"}]})
        }

        fn meta_list() -> Value {
            let row = |s: u8, r: u8| {
                json!({"id": format!("<LIST_SECTION_{s}_ROW_{r}_ID>"),
                       "title": format!("<SECTION_{s}_ROW_{r}_TITLE>"),
                       "description": format!("<SECTION_{s}_ROW_{r}_DESC>")})
            };
            json!({"list": {"button": "<BUTTON_TEXT>", "sections": [
                       {"title": "<LIST_SECTION_1_TITLE>", "rows": [row(1, 1), row(1, 2)]},
                       {"title": "<LIST_SECTION_2_TITLE>", "rows": [row(2, 1), row(2, 2)]}]},
                   "text": "<BODY_TEXT>", "header": "<HEADER_TEXT>", "footer": "<FOOTER_TEXT>"})
        }

        fn meta_flow(flow: &str, draft: bool) -> Value {
            let (shown, cta) = if draft {
                ("Not shown in draft mode", "Not shown in draft mode")
            } else {
                ("", "Open Flow!")
            };
            let t = |placeholder: &str| {
                if draft {
                    shown.to_string()
                } else {
                    placeholder.to_string()
                }
            };
            let mut f = json!({"flow": flow, "flow_cta": cta, "flow_token": "<FLOW_TOKEN>",
                               "screen": "<SCREEN_ID>", "data": {"<CUSTOM_KEY>": "<CUSTOM_VALUE>"},
                               "text": t("<BODY_TEXT>"), "header": t("<HEADER_TEXT>"),
                               "footer": t("<FOOTER_TEXT>")});
            if draft {
                f["mode"] = "draft".into();
            }
            f
        }

        fn java_buttons(header: Value, n: usize, text: &str) -> Value {
            let b = [("1278454", "YES"), ("1278455", "NO"), ("1278456", "CHANGE")];
            let b: Vec<Value> = b[..n]
                .iter()
                .map(|(id, t)| json!({"id": id, "title": t}))
                .collect();
            json!({"buttons": b, "header": header, "text": text, "footer": "Choose an option:"})
        }

        fn java_sections() -> Vec<Value> {
            let row = |s: u8, r: u8| {
                json!({"id": format!("SECTION_{s}_ROW_{r}_ID"), "title": format!("Title {r}"),
                       "description": format!("SECTION_{s}_ROW_{r}_DESCRIPTION")})
            };
            (1..=2)
                .map(|s| json!({"title": format!("Section {s}"), "rows": (1..=3).map(|r| row(s, r)).collect::<Vec<_>>()}))
                .collect()
        }

        const APPOINTMENT: &str = "Would you like to confirm your appointment for tomorrow?";

        /// One `json!` per entry: a single one for the whole table passes the macro recursion limit.
        macro_rules! table {
            ($($name:literal: $form:tt),* $(,)?) => { vec![$(($name, json!($form))),*] };
        }

        /// Fixture → the map a script would pass to `send`, or "raw" (a type without a map
        /// form: `#{raw: <the fixture's message>}` must reproduce it), "mark_read" (with
        /// typing), or "not a message: …". A fixture's `context` is passed as `reply` does.
        fn cases() -> Vec<(String, Case)> {
            let quick = ["OP_YES_48547", "OP_NO_48548", "OP_CH_48549"];
            let table = table! {
                "expectedMessage1": {"text": "*Hello world!*\nSome code here: \n```hello world code here```", "preview_url": false},
                "expectedMessage2": {"template": "number_confirmation", "language": "pt_BR", "params": ["18754269072"]},
                "expectedMessage3": {"template": "schedule_confirmation3", "language": "pt_BR",
                    "params": ["Mauricio", "04/11/2022", "14:30"], "buttons": quick},
                "expectedMessage4": {"template": "schedule_confirmation3", "language": "pt_BR",
                    "params": ["Mauricio",
                               {"date_time": {"fallback_value": "25/03/2023", "calendar": "GREGORIAN", "month": 3, "hour": 13,
                                              "year": 2023, "day_of_month": 25, "day_of_week": 7, "minute": 50}},
                               {"date_time": {"fallback_value": "14:34", "hour": 14, "minute": 30}}],
                    "buttons": quick},
                "expectedMessage5": {"template": "marketing_music_2", "language": "en_US",
                    "header": {"image": "3196424913981611"},
                    "params": [{"date_time": {"fallback_value": "May 10th, 2023", "calendar": "GREGORIAN", "month": 3, "hour": 10,
                                              "year": 2023, "day_of_month": 26, "day_of_week": 1, "minute": 50}},
                               {"currency": {"fallback_value": "$35", "code": "USD", "amount_1000": 30000}}],
                    "buttons": ["OP_SHN_454584", {"payload": "OP_SPR_454585"}]},
                "expectedMessage6": {"template": "new_classes_pdf",
                    "header": {"document": "928860901494862", "filename": "Class.pdf"},
                    "params": ["Mauricio Binda"], "buttons": [{"url": "career-academy/?trk_ref=globalnav"}]},
                "expectedMessage7": {"audio": "4545454545454"},
                "expectedMessage8": {"template": "video_tm", "header": {"video": "4548775454857854"},
                    "params": ["Mauricio Binda"]},
                "expectedMessage9": {"template": "auth_app", "language": "pt_BR",
                    "header": {"image": 554066036582230_i64}, "params": ["T87-G74-876"]},
                "expectedMessage10": {"contacts": [{
                    "name": {"first_name": "Mauricio", "formatted_name": "Mauricio Binda"},
                    "birthday": "1900-01-01",
                    "phones": [{"phone": "121212121212", "type": "IPHONE"}],
                    "emails": [{"type": "HOME", "email": "mauriciobinda@hotmail.com"}],
                    "urls": [{"type": "WORK", "url": "https://www.google.com"}],
                    "org": {"company": "My company", "department": "IT", "title": "Org title"},
                    "addresses": {"zip": "10011", "country": "United States", "country_code": "US", "city": "New York",
                                  "street": "47 W 13th St", "state": "NY", "type": "WORK"}}]},
                "expectedMessage11": (java_buttons(json!("Appointment confirmation."), 3, APPOINTMENT)),
                "expectedMessage12": {"list": {"button": "choose an option", "sections": java_sections()},
                    "text": "Body message", "header": "Header Text", "footer": "Footer Text"},
                "expectedMessage13": {"location": {"lat": 39.284064, "lon": -84.265742,
                    "name": "Loveland Castle Museum", "address": "12025 Shore Dr, Loveland, OH 45140"}},
                "expectedMessage14": (java_buttons(
                    json!({"image": "https://upload.wikimedia.org/wikipedia/commons/8/87/Tamarama_Beach.jpg"}), 3, APPOINTMENT)),
                "expectedMessage15": (java_buttons(
                    json!({"video": "https://joy1.videvo.net/videvo_files/video/free/2014-04/large_watermarked/Lonely_tree_at_Sunset_slow_motion_CCBY_NatureClip_preview.mp4"}),
                    2, "Do you like this video?")),
                "expectedMessage16": (java_buttons(
                    json!({"document": "https://www.w3.org/WAI/ER/tests/xhtml/testfiles/resources/pdf/dummy.pdf", "filename": "schedule.pdf"}),
                    3, APPOINTMENT)),
                "expectedMessage17": "mark_read",
                "expectedMessage18": "not a message: the body of POST /{phone_number_id}/register",
                "send-audio-message-by-id": {"audio": "<AUDIO_OBJECT_ID>"},
                "send-audio-message-by-url": {"audio": "<http(s)://audio-url>"},
                "send-catalog-message": "raw",
                "send-catalog-template-message": {"template": "intro_catalog_offer",
                    "params": [100, 400, 3], "buttons": [{"catalog": "2lc20305pt"}]},
                "send-contact-message": {"contacts": [meta_contact()]},
                "send-document-message-by-id": {"document": "<DOCUMENT_OBJECT_ID>",
                    "caption": "<DOCUMENT_CAPTION_TO_SEND>", "filename": "<DOCUMENT_FILENAME>"},
                "send-document-message-by-url": {"document": "<http(s)://document-url>",
                    "caption": "<DOCUMENT-CAPTION-TEXT>"},
                "send-draft-flow-by-id": (meta_flow(FLOW_ID, true)),
                "send-draft-flow-by-name": (meta_flow("{{Flow-Name}}", true)),
                "send-flow-template-message": {"template": "<TEMPLATE_NAME>",
                    "buttons": [{"flow_token": "<FLOW_TOKEN>", "data": {"<CUSTOM_KEY>": "<CUSTOM_VALUE>"}}]},
                "send-image-message-by-id": {"image": "<IMAGE_OBJECT_ID>"},
                "send-image-message-by-url": {"image": "http(s)://image-url"},
                "send-list-message": (meta_list()),
                "send-location-message": {"location": {"lat": 37.758056, "lon": -122.425332,
                    "name": "META HQ", "address": "1 Hacker Way, Menlo Park, CA 94025"}},
                "send-message-template-interactive": {"template": "template-name", "language": "language-and-locale-code",
                    "header": {"image": "http(s)://the-image-url"}, "params": ["text-string", usd_100_99(), date_time_1977()],
                    "buttons": ["aGlzIHRoaXMgaXMgY29v", {"payload": "9rwnB8RbYmPF5t2Mn09x4h"}]},
                "send-message-template-media": {"template": "template-name", "language": "language-and-locale-code",
                    "header": {"image": "http(s)://the-image-url"}, "params": ["text-string", usd_100_99(), date_time_1977()]},
                "send-message-template-text": {"template": "template-name", "language": "language-and-locale-code",
                    "params": ["text-string", usd_100_99(), date_time_1977()]},
                "send-multi-product-message": "raw",
                "send-order-details-message": "raw",
                "send-order-status-message": "raw",
                "send-published-flow-by-id": (meta_flow(FLOW_ID, false)),
                "send-published-flow-by-name": (meta_flow("{{Flow-Name}}", false)),
                "send-reply-button": {"text": "<BUTTON_TEXT>", "buttons": [
                    {"id": "<UNIQUE_BUTTON_ID_1>", "title": "<BUTTON_TITLE_1>"},
                    {"id": "<UNIQUE_BUTTON_ID_2>", "title": "<BUTTON_TITLE_2>"}]},
                "send-reply-to-audio-message-by-id": {"audio": "<AUDIO_OBJECT_ID>"},
                "send-reply-to-audio-message-by-url": {"audio": "http(s)://audio-url"},
                "send-reply-to-contact-message": {"contacts": [meta_contact()]},
                "send-reply-to-document-message-by-id": {"document": "<DOCUMENT_OBJECT_ID>",
                    "caption": "<DOCUMENT_CAPTION_TO_SEND>", "filename": "<DOCUMENT_FILENAME>"},
                "send-reply-to-document-message-by-url": {"document": "<http(s)://document-url>",
                    "caption": "<DOCUMENT_CAPTION_TEXT>"},
                "send-reply-to-image-message-by-id": {"image": "<IMAGE_OBJECT_ID>"},
                "send-reply-to-image-message-by-url": {"image": "http(s)://image-url"},
                "send-reply-to-list-message": (meta_list()),
                "send-reply-to-location-message": {"location": {"latitude": 37.758056, "longitude": -122.425332,
                    "name": "META HQ", "address": "1 Hacker Way, Menlo Park, CA 94025"}},
                "send-reply-to-sticker-message-by-id": {"sticker": "<MEDIA_OBJECT_ID>"},
                "send-reply-to-sticker-message-by-url": {"sticker": "<http(s)://sticker-url>"},
                "send-reply-to-text-message": {"text": "<TEXT_MSG_CONTENT>", "preview_url": false},
                "send-reply-to-video-message-by-id": {"video": "<VIDEO_OBJECT_ID>", "caption": "<VIDEO_CAPTION_TEXT>"},
                "send-reply-to-video-message-by-url": {"video": "<http(s)://video-url>", "caption": "<VIDEO_CAPTION_TEXT>"},
                "send-reply-with-reaction-message": {"reaction": "😀", "message_id": "wamid.HBgLM..."},
                // A quick-reply button given a boolean text parameter, and a language policy:
                // raw `components` and a language map.
                "send-sample-issue-resolution-template": {"template": "sample_issue_resolution",
                    "language": {"code": "en_US", "policy": "deterministic"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "*Mr. Jones*"}]},
                        {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "text", "text": true}]},
                        {"type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "text", "text": false}]}]},
                "send-sample-shipping-confirmation-template": {"template": "template-name",
                    "language": "language-and-locale-code", "params": ["text-string", usd_100_99(), date_time_1977()]},
                "send-single-product-message": "raw",
                "send-sticker-message-by-id": {"sticker": "<MEDIA_OBJECT_ID>"},
                "send-sticker-message-by-url": {"sticker": "<http(s)://sticker-url>"},
                "send-test-message": {"template": "hello_world"},
                "send-text-message": {"text": "text-message-content", "preview_url": false},
                "send-text-message-with-preview-url": {"text": "Please visit https://youtu.be/hpltvTEiRrY.", "preview_url": true},
                "send-typing-indicator-and-read-receipt": "mark_read with typing",
                "send-video-message-by-id": {"video": "<VIDEO_OBJECT_ID>", "caption": "<VIDEO_CAPTION_TEXT>"},
                "send-video-message-by-url": {"video": "<http(s)://video-url>", "caption": "<VIDEO_CAPTION_TEXT>"},
            };
            let case = |v: Value| match v.as_str() {
                Some("raw") => Raw,
                Some("mark_read") => MarkRead { typing: false },
                Some("mark_read with typing") => MarkRead { typing: true },
                Some(s) => NotAMessage(s.strip_prefix("not a message: ").unwrap().to_string()),
                None => Send(v),
            };
            table
                .into_iter()
                .map(|(k, v)| (k.to_string(), case(v)))
                .collect()
        }

        /// The fixtures' short names: the file name without its prefix and `.request.json`.
        fn fixture_names() -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(DIR)
                .expect("shared/fixtures/graph beside the repository")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|f| {
                    let short = f.strip_suffix(SUFFIX)?;
                    PREFIXES
                        .iter()
                        .find_map(|p| short.strip_prefix(p))
                        .map(String::from)
                })
                .collect();
            names.sort();
            names
        }

        fn load(name: &str) -> Value {
            let file = PREFIXES
                .iter()
                .map(|p| format!("{DIR}{p}{name}{SUFFIX}"))
                .find(|f| std::path::Path::new(f).exists())
                .unwrap();
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
        }

        /// Removes the differences between Meta's examples and `build` that the reference
        /// allows, on whichever side has them:
        /// - `to`: `build` always writes `+` and digits (reference §1); fixtures write bare
        ///   digits or a placeholder. `run` checks the digits, then the fixture takes ours.
        /// - `recipient_type`: optional, default "individual"; `build` always writes it, five
        ///   OAS examples leave it out.
        /// - `type`: two OAS examples leave it out: send-text-message-with-preview-url (Graph's
        ///   default is text, so it is equivalent) and send-reply-to-list-message (an error in
        ///   Meta's example: without it Graph would read a text message).
        /// - java-bindambc writes interactive types in capitals (BUTTON, LIST), coordinates as
        ///   texts and template button indexes as numbers; the reference and OAS write lower
        ///   case, numbers and texts ("0").
        /// - the `{{Flow-ID}}` placeholder stands for a flow id, which is digits.
        fn normalize(want: &mut Value, got: &mut Value) {
            for k in ["recipient_type", "type"] {
                if want.get(k).is_none() {
                    got.as_object_mut().unwrap().remove(k);
                }
            }
            if let Some(t) = want.pointer_mut("/interactive/type") {
                *t = t.as_str().unwrap().to_lowercase().into();
            }
            for k in ["latitude", "longitude"] {
                if let Some(c) = want.pointer_mut(&format!("/location/{k}"))
                    && let Some(s) = c.as_str()
                {
                    *c = s.parse::<f64>().unwrap().into();
                }
            }
            let components = want
                .pointer_mut("/template/components")
                .and_then(Value::as_array_mut);
            for c in components.into_iter().flatten() {
                if let Some(i) = c.get_mut("index").filter(|i| i.is_number()) {
                    *i = i.to_string().into();
                }
            }
            if let Some(id) = want.pointer_mut("/interactive/action/parameters/flow_id") {
                *id = FLOW_ID.into();
            }
        }

        fn run(name: &str, case: &Case) -> Result<(), String> {
            let mut want = load(name);
            let mut got = match case {
                NotAMessage(what) if want.get("type").is_none() && want.get("status").is_none() => {
                    return Ok(());
                }
                NotAMessage(what) => return Err(format!("{name} is a message, not {what}")),
                MarkRead { typing } => mark_read(want["message_id"].as_str().unwrap(), *typing),
                Send(_) | Raw => {
                    let form = match case {
                        Send(form) => form.clone(),
                        _ => {
                            let mut raw = want.clone();
                            for k in ["messaging_product", "recipient_type", "to"] {
                                raw.as_object_mut().unwrap().remove(k);
                            }
                            json!({ "raw": raw })
                        }
                    };
                    let to = want["to"].as_str().unwrap();
                    let digits = to.trim_start_matches('+');
                    let to = if digits.chars().all(|c| c.is_ascii_digit()) {
                        digits
                    } else {
                        NUMBER
                    };
                    let context = want.pointer("/context/message_id").and_then(Value::as_str);
                    let (t, got) = build(to, &form, context)?;
                    if got["to"] != format!("+{to}") {
                        return Err(format!("{name}: `to` is {}, not +{to}", got["to"]));
                    }
                    if want.get("type").is_some_and(|w| w != t.as_str()) {
                        return Err(format!("{name}: type {t}, not {}", want["type"]));
                    }
                    want["to"] = got["to"].clone();
                    got
                }
            };
            normalize(&mut want, &mut got);
            if got != want {
                return Err(format!("{name}:\n  built   {got}\n  fixture {want}"));
            }
            Ok(())
        }

        #[test]
        fn every_send_fixture_has_a_case() {
            let cases: Vec<String> = cases().into_iter().map(|(n, _)| n).collect();
            let files = fixture_names();
            let untested: Vec<&String> = files.iter().filter(|f| !cases.contains(f)).collect();
            let missing: Vec<&String> = cases.iter().filter(|c| !files.contains(c)).collect();
            assert!(
                untested.is_empty(),
                "fixtures without a case in outgoing::tests::fixtures::cases(): {untested:?}"
            );
            assert!(
                missing.is_empty(),
                "cases without a fixture file: {missing:?}"
            );
            assert_eq!(files.len(), 67);
        }

        #[test]
        fn send_fixtures_are_built_from_script_maps() {
            let failures: Vec<String> = cases()
                .iter()
                .filter_map(|(name, case)| run(name, case).err())
                .collect();
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        }
    }
}
