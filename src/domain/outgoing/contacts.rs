//! The `contacts` send form: vCard-like contact cards.

use super::*;

const NAME_PARTS: [&str; 5] = ["prefix", "first_name", "middle_name", "last_name", "suffix"];

pub(super) fn contacts(c: &Value) -> Result<Value, String> {
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

pub(super) fn contact(c: &Value, n: usize) -> Result<Value, String> {
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
pub(super) fn contact_name(v: Option<&Value>, what: &str) -> Result<Value, String> {
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
pub(super) fn entries(v: &Value, list: &str, field: &str, what: &str) -> Result<Value, String> {
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
