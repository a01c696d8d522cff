//! Messages to a WhatsApp group (Groups API), pure. A group message is an ordinary Cloud API
//! message with `"recipient_type":"group"` and the group id in `to` (shared/reference §1; Meta's
//! "Group messaging" page). Groups take text, media and templates, not interactive messages
//! (shared/reference §3, "No interactive, no read receipts, no edits in groups").
//!
//! Inside the gate a group is addressed as `group:<group_id>`: the outbox's recipient, the
//! messages table's contact and the 24-hour window's key. Meta's Groups pricing page
//! ("How customer service windows work with Groups API") says a message from any participant
//! opens the window for the whole group, and everything else about windows stays the same, so
//! free-form group messages need a participant to have written in the last 24 hours;
//! templates always go.

use super::outgoing;
use serde_json::Value;

/// The prefix of a group's recipient key.
pub const PREFIX: &str = "group:";

/// A group id as Graph gives it (base64-like text, e.g. `Y2FwaV9ncm91cDox…`).
pub fn validate_group_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    let id = id.strip_prefix(PREFIX).unwrap_or(id);
    if id.is_empty() {
        return Err("the group id is empty".into());
    }
    if id.len() > 256
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '.' | '@'))
    {
        return Err(format!(
            "`{id}` is not a group id (see `wagate groups USER list`)"
        ));
    }
    Ok(id.to_string())
}

/// The gate's recipient key of a group: `group:<id>`.
pub fn recipient(group_id: &str) -> String {
    format!("{PREFIX}{group_id}")
}

/// The group id of a recipient key, if it names a group.
pub fn group_of(recipient: &str) -> Option<&str> {
    recipient.strip_prefix(PREFIX)
}

/// Why a free-form message cannot go to group `group_id` whose participants last wrote at
/// `last_inbound` (unix s), at `now`: it names templates, the one way to reach the group.
pub fn window_closed(group_id: &str, last_inbound: Option<i64>, now: i64) -> String {
    let when = match last_inbound {
        None => "no participant has written in it".to_string(),
        Some(t) => format!(
            "its participants last wrote {}h ago",
            (now - t).max(0) / 3600
        ),
    };
    format!(
        "group {group_id}: {when}, so its 24-hour window is closed; only an approved template can reach it"
    )
}

/// Builds the Cloud API body of a message to group `group_id` from a `send` spec (a text or
/// a map as for `send(to, map)`, without quoting). Returns the message type and the body.
pub fn build(group_id: &str, spec: &Value) -> Result<(String, Value), String> {
    build_reply(group_id, spec, None)
}

/// As [`build`], quoting message `context` of the group (a reply).
pub fn build_reply(
    group_id: &str,
    spec: &Value,
    context: Option<&str>,
) -> Result<(String, Value), String> {
    let group_id = validate_group_id(group_id).map_err(|e| format!("send: {e}"))?;
    // The envelope is the one of a 1:1 message; only the recipient differs.
    let (t, mut body) = outgoing::build("+10000000000", spec, context)?;
    if t == "interactive" {
        return Err(
            "send: groups do not take interactive messages (buttons, lists, flows, CTA URLs): send a text, media or a template to a group"
                .into(),
        );
    }
    let obj = body.as_object_mut().ok_or("send: the body is not a map")?;
    obj.remove("recipient");
    obj.insert("recipient_type".into(), "group".into());
    obj.insert("to".into(), group_id.into());
    Ok((t, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const G: &str = "Y2FwaV9ncm91cDoxODA1NTU1MDE3MjoxMjAzNjMyMjI3NzE5NjMwNjcZD";

    #[test]
    fn text_media_and_templates_go_to_the_group() {
        let (t, b) = build(G, &json!("Bonjour à tous")).unwrap();
        assert_eq!(t, "text");
        assert_eq!(
            b,
            json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": G,
                   "type": "text", "text": {"body": "Bonjour à tous"}})
        );
        let (t, b) = build(
            &recipient(G),
            &json!({"image": "https://x/y.jpg", "caption": "Day 1"}),
        )
        .unwrap();
        assert_eq!(
            (t.as_str(), &b["to"], &b["image"]["link"]),
            ("image", &json!(G), &json!("https://x/y.jpg"))
        );
        let (t, b) = build(
            G,
            &json!({"template": "tour_reminder", "language": "fr", "params": ["Paris"]}),
        )
        .unwrap();
        assert_eq!(
            (t.as_str(), &b["recipient_type"]),
            ("template", &json!("group"))
        );
    }

    #[test]
    fn the_window_reason_names_templates() {
        assert_eq!(
            window_closed("G", None, 100),
            "group G: no participant has written in it, so its 24-hour window is closed; only an approved template can reach it"
        );
        assert!(
            window_closed("G", Some(0), 25 * 3600).contains("its participants last wrote 25h ago")
        );
    }

    #[test]
    fn interactive_and_bad_ids_are_refused() {
        let e = build(G, &json!({"buttons": ["Yes", "No"], "text": "Coming?"})).unwrap_err();
        assert!(e.contains("groups do not take interactive messages"), "{e}");
        let e = build(
            G,
            &json!({"raw": {"type": "interactive", "interactive": {}}}),
        )
        .unwrap_err();
        assert!(e.contains("interactive"), "{e}");
        assert!(
            build("", &json!("x"))
                .unwrap_err()
                .contains("group id is empty")
        );
        assert!(
            build("a b", &json!("x"))
                .unwrap_err()
                .contains("not a group id")
        );
        assert_eq!(group_of("group:abc"), Some("abc"));
        assert_eq!(group_of("33611"), None);
    }
}
