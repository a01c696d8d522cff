//! The template send form: name, language, body parameters (positional or named), header
//! and buttons, or raw components.

use super::*;

pub(super) fn template(name: &Value, m: &Obj) -> Result<Value, String> {
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

pub(super) fn template_header(h: &Value) -> Result<Value, String> {
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
pub(super) fn body_params(p: &Value) -> Result<Vec<Value>, String> {
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
pub(super) fn param(v: &Value, what: &str) -> Result<Value, String> {
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
pub(super) fn template_buttons(b: &Value) -> Result<Vec<Value>, String> {
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

pub(super) fn template_button(
    kind: &str,
    o: &Obj,
    what: &str,
) -> Result<(&'static str, Value), String> {
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
