//! `send(#{group: "<group_id>", text: "…"})`: a message to a WhatsApp group (Groups API). The
//! map takes the forms of `send(to, map)` (text, media, location, contacts, templates) but not
//! interactive ones, which groups refuse. Free-form messages need the group's 24-hour window
//! open (a participant wrote in the last 24 hours; see domain::groups); templates always go.

use super::api::{check_may_send, err, push_send, to_json};
use super::{FnResult, with_current};
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
    record_group(&group, Value::Object(spec), None)
}

/// Records a send to `group` (quoting `context`, for a reply to a message written in it).
pub(super) fn record_group(group: &str, spec: Value, context: Option<&str>) -> FnResult<String> {
    with_current(|cur| {
        check_may_send(cur)?;
        let (msg_type, body) = groups::build_reply(group, &spec, context)
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
                return err(format!(
                    "send: {}: send(#{{ group: \"{id}\", template: \"name\", language: \"en_US\" }})",
                    groups::window_closed(&id, last, now)
                ));
            }
        }
        push_send(cur, recipient, msg_type, body)
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("send", send_group);
}

#[cfg(test)]
mod tests {
    use crate::config::ScriptLimits;
    use crate::script::{Action, Host, RunContext, ScriptEngine};
    use serde_json::{Map, Value, json};
    use std::sync::Arc;
    use std::time::Duration;

    /// A store whose only data is when someone last wrote in group `G`.
    struct GroupWindow(Option<i64>);

    impl Host for GroupWindow {
        fn state(&self, _key: &str) -> Result<Option<Value>, String> {
            Ok(None)
        }
        fn lookup(
            &self,
            _t: &str,
            _k: Option<&str>,
            _q: Option<&Map<String, Value>>,
        ) -> Result<Vec<Value>, String> {
            Ok(Vec::new())
        }
        fn last_inbound(&self, contact: &str) -> Result<Option<i64>, String> {
            Ok(if contact == "group:G" { self.0 } else { None })
        }
    }

    fn run(src: &str, last: Option<i64>, may_send: bool) -> crate::script::RunOutcome {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let mut ctx = RunContext::simple("olga", may_send, Duration::from_secs(1), chrono_tz::UTC);
        ctx.host = Arc::new(GroupWindow(last.map(|ago| ctx.now.timestamp() - ago)));
        let ast = e.rhai().compile(src).unwrap();
        e.run(&ast, None, &json!({"kind": "schedule"}), &ctx, "g.rhai")
    }

    #[test]
    fn group_sends_need_the_groups_window_unless_templates() {
        let out = run(r#"send(#{ group: "G", text: "hi" })"#, Some(60), true);
        assert_eq!(out.error, None);
        let Action::Send {
            recipient, body, ..
        } = &out.actions[0]
        else {
            panic!()
        };
        assert_eq!(recipient, "group:G");
        assert_eq!(
            (&body["recipient_type"], &body["to"]),
            (&json!("group"), &json!("G"))
        );
        let err = run(r#"send(#{ group: "G", text: "hi" })"#, None, true)
            .error
            .unwrap();
        assert!(
            err.contains("group G: no participant has written in it"),
            "{err}"
        );
        assert!(
            err.contains(r#"send(#{ group: "G", template: "name""#),
            "{err}"
        );
        let err = run(
            r#"send(#{ group: "G", text: "hi" })"#,
            Some(25 * 3600),
            true,
        )
        .error
        .unwrap();
        assert!(err.contains("its participants last wrote 25h ago"), "{err}");
        let out = run(
            r#"send(#{ group: "G", template: "hello_world" })"#,
            None,
            true,
        );
        assert_eq!(out.error, None);
        let err = run(r#"send(#{ group: "G", template: "x" })"#, None, false)
            .error
            .unwrap();
        assert!(err.contains("may not send"), "{err}");
        let err = run(r#"send(#{ text: "x" })"#, None, true).error.unwrap();
        assert!(err.contains("send takes #{ group: "), "{err}");
    }

    #[test]
    fn labels_are_recorded_and_checked() {
        let out = run(
            r#"add_label("+33 6 11", "  PARIS-2026 "); remove_label(33611, "VIP");"#,
            None,
            false,
        );
        assert_eq!(out.error, None, "labels need no send permission");
        assert_eq!(
            out.actions,
            vec![
                Action::Label {
                    contact: "33611".into(),
                    label: "PARIS-2026".into(),
                    add: true
                },
                Action::Label {
                    contact: "33611".into(),
                    label: "VIP".into(),
                    add: false
                },
            ]
        );
        let err = run(r#"add_label("33611", "")"#, None, true).error.unwrap();
        assert!(
            err.starts_with("g.rhai:1:") && err.contains("add_label: a label cannot be empty"),
            "{err}"
        );
        let err = run(r#"remove_label("bob", "X")"#, None, true)
            .error
            .unwrap();
        assert!(
            err.contains("remove_label: `bob` is not a phone number or wa_id"),
            "{err}"
        );
    }
}
