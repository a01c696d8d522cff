//! `send(#{group: "<group_id>", text: "…"})`: a message to a WhatsApp group (Groups API). The
//! map takes the forms of `send(to, map)` (text, media, location, contacts, templates) but not
//! interactive ones, which groups refuse. Free-form messages need the group's 24-hour window
//! open (a participant wrote in the last 24 hours; see domain::groups); templates always go.

use super::api::{err, to_json};
use super::{Action, FnResult, with_current};
use crate::domain::{groups, window};
use rhai::{Dynamic, Engine, EvalAltResult, Map};
use serde_json::Value;

fn send_group(spec: Map) -> FnResult<String> {
    let Value::Object(mut spec) = to_json(&Dynamic::from_map(spec))? else {
        return err("send: expected a map");
    };
    let group = match spec.remove("group") {
        Some(Value::String(g)) => g,
        Some(other) => {
            return err(format!(
                "send: `group` must be a group id text, not {other}"
            ));
        }
        None => {
            return err(
                "send: with one argument, send takes #{ group: \"<group_id>\", text: \"…\" }; to a contact, write send(to, text_or_map)",
            );
        }
    };
    with_current(|cur| {
        if !cur.ctx.may_send {
            return err(format!(
                "user `{}` may not send messages (permissions.send is false in users/{}.yaml)",
                cur.ctx.user, cur.ctx.user
            ));
        }
        let (msg_type, body) = groups::build(&group, &Value::Object(spec))
            .map_err(|e| -> Box<EvalAltResult> { e.into() })?;
        let id = body["to"].as_str().unwrap_or_default().to_string();
        let recipient = groups::recipient(&id);
        if window::needs_window(&msg_type) {
            let last = cur
                .ctx
                .host
                .last_inbound(&recipient)
                .map_err(|e| -> Box<EvalAltResult> { e.into() })?;
            let now = cur.ctx.now.timestamp();
            if !window::within_customer_window(last, now) {
                let when = match last {
                    None => "no participant has written in it".to_string(),
                    Some(t) => format!("its participants last wrote {}h ago", (now - t) / 3600),
                };
                return err(format!(
                    "send: group {id}: {when}, so its 24-hour window is closed: only an approved template can reach it: send(#{{ group: \"{id}\", template: \"name\", language: \"en_US\" }})"
                ));
            }
        }
        let n = cur
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        cur.actions.push(Action::Send {
            recipient,
            msg_type,
            body,
        });
        Ok(format!("local:{n}"))
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("send", send_group);
}
