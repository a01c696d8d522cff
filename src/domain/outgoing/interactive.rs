//! Interactive send forms: reply buttons, lists, CTA URL buttons, flows, location requests.

use super::*;

pub(super) fn interactive_header(h: &Value, kinds: &[&'static str]) -> Result<Value, String> {
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
pub(super) fn interactive(kind: &str, what: &str, m: &Obj, action: Value) -> Result<Value, String> {
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
pub(super) fn choice(
    v: &Value,
    what: &str,
    max: usize,
    extra: &[&str],
) -> Result<(String, String), String> {
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
pub(super) fn distinct<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    match ids.into_iter().find(|id| !seen.insert(*id)) {
        Some(id) => Err(format!(
            "send: two {what} have the id `{id}`; give each its own id"
        )),
        None => Ok(()),
    }
}

pub(super) fn buttons(b: &Value, m: &Obj) -> Result<Value, String> {
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

pub(super) fn list_row(r: &Value) -> Result<Value, String> {
    let (id, title) = choice(r, "a list row", ROW_TITLE_MAX, &["description"])?;
    let mut row = json!({"id": id, "title": title});
    if let Some(d) = r.get("description") {
        row["description"] = limited(d, "a list row's description", ROW_DESCRIPTION_MAX)?.into();
    }
    Ok(row)
}

pub(super) fn section(s: &Value) -> Result<Value, String> {
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

pub(super) fn list(l: &Value, m: &Obj) -> Result<Value, String> {
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

pub(super) fn cta_url(u: &Value, m: &Obj) -> Result<Value, String> {
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
pub(super) fn flow(f: &Value, m: &Obj) -> Result<Value, String> {
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

pub(super) fn location_request(v: &Value, m: &Obj) -> Result<Value, String> {
    let what = "a location request";
    only(m, what, &["location_request", "text"])?;
    if v != &Value::Bool(true) {
        return Err("send: `location_request` must be true".into());
    }
    let action = json!({ "name": "send_location" });
    interactive("location_request_message", what, m, action)
}
