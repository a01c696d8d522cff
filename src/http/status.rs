//! The status page (GET /status): one server-rendered HTML page, no script and no build step,
//! readable on a phone. Every piece of text that users or contacts control (names, rule
//! errors, message text, failure reasons) goes through [`esc`].

use crate::status::{
    Report, TokenHealth, duration_text, expiry_text, health_text, next_text, utc_ms,
};
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:12px;color:#1d2327;background:#f6f7f7}
h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.1em;margin:20px 0 6px}
.sub{color:#646970;margin:0 0 8px}
.card{background:#fff;border:1px solid #dcdcde;border-radius:8px;padding:8px 10px;margin:6px 0;overflow-wrap:anywhere}
.row{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.name{font-weight:600}.muted{color:#646970;font-size:.9em}
.ok{color:#00712e;font-weight:600}.bad{color:#b32d2e;font-weight:600}.warn{color:#996800;font-weight:600}
.err{color:#b32d2e;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85em}
.counts{display:flex;flex-wrap:wrap;gap:8px}.count{background:#fff;border:1px solid #dcdcde;border-radius:8px;padding:6px 10px}
.count b{font-size:1.2em;display:block}
";

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wagate status</title><style>{STYLE}</style></head><body>\
         <h1>wagate status</h1><p class=\"sub\">as of {}</p>",
        esc(&r.now.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    );
    users(&mut h, r);
    rules(&mut h, r);
    calls(&mut h, r);
    runs(&mut h, r);
    outbox(&mut h, r);
    events(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn users(h: &mut String, r: &Report) {
    let _ = write!(h, "<h2 id=\"users\">Users ({})</h2>", r.users.len());
    if r.users.is_empty() {
        h.push_str("<p class=\"muted\">No user is served.</p>");
    }
    for u in &r.users {
        let class = match u.token {
            TokenHealth::Ok => "ok",
            _ => "bad",
        };
        let expiry_class = match u.expires_at {
            Some(t) if t <= r.now => "bad",
            Some(t) if t - r.now < chrono::Duration::days(7) => "warn",
            _ => "muted",
        };
        let display = u
            .display_name
            .as_deref()
            .map(|d| format!(" <span class=\"muted\">{}</span>", esc(d)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<div class=\"card user\"><div class=\"row\"><span class=\"name\">{}</span>{display}</div>\
             <div class=\"row\"><span>token: <span class=\"{class}\">{}</span></span>\
             <span class=\"{expiry_class}\">{}</span></div></div>",
            esc(&u.name),
            esc(&health_text(&u.token)),
            esc(&expiry_text(u, r.now)),
        );
    }
}

fn rules(h: &mut String, r: &Report) {
    let _ = write!(h, "<h2 id=\"rules\">Rules ({})</h2>", r.rules.len());
    if r.rules.is_empty() {
        h.push_str("<p class=\"muted\">No rule is loaded.</p>");
    }
    for x in &r.rules {
        let _ = write!(
            h,
            "<div class=\"card rule\"><div class=\"row\"><span class=\"name\">{}/{}</span>\
             <span class=\"muted\">{}</span></div><div class=\"row\"><span>{}</span>\
             <span>next: {}</span></div></div>",
            esc(&x.project),
            esc(&x.rule),
            esc(&x.user),
            esc(&x.trigger),
            esc(&next_text(x, r.now)),
        );
    }
}

fn calls(h: &mut String, r: &Report) {
    let (calls, total) = &r.calls;
    let shown = if calls.len() as i64 == *total {
        total.to_string()
    } else {
        format!("next {} of {total}", calls.len())
    };
    let _ = write!(
        h,
        "<h2 id=\"calls\">Pending schedule() calls ({shown})</h2>"
    );
    if calls.is_empty() {
        h.push_str("<p class=\"muted\">No schedule() call is pending.</p>");
    }
    for c in calls {
        let _ = write!(
            h,
            "<div class=\"card call\"><div class=\"row\"><span class=\"name\">{}/{}: {}</span>\
             <span class=\"muted\">{}</span></div><div class=\"row\"><span>due {}</span></div></div>",
            esc(&c.project),
            esc(&c.rule),
            esc(&c.call),
            esc(&c.user),
            esc(&crate::status::call_due_text(r, c)),
        );
    }
}

fn runs(h: &mut String, r: &Report) {
    let _ = write!(h, "<h2 id=\"runs\">Last runs ({})</h2>", r.runs.len());
    if r.runs.is_empty() {
        h.push_str("<p class=\"muted\">No rule has run yet.</p>");
    }
    for x in &r.runs {
        let class = match x.outcome.as_str() {
            "ok" => "ok",
            "error" => "bad",
            _ => "muted",
        };
        let detail = match (&x.error, &x.note) {
            (Some(e), _) => format!("<div class=\"err\">{}</div>", esc(e)),
            (None, Some(n)) if x.outcome != "ok" => {
                format!("<div class=\"muted\">{}</div>", esc(n))
            }
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<div class=\"card run\"><div class=\"row\"><span class=\"{class}\">{}</span>\
             <span class=\"name\">{}/{}</span><span class=\"muted\">{} · {} · {}</span></div>{detail}</div>",
            esc(&x.outcome),
            esc(&x.project),
            esc(&x.rule),
            esc(x.trigger.as_deref().unwrap_or("")),
            esc(&utc_ms(x.started_at_ms)),
            esc(&duration_text(x.duration_us)),
        );
    }
}

fn outbox(h: &mut String, r: &Report) {
    h.push_str("<h2 id=\"outbox\">Outbox</h2><div class=\"counts\">");
    for state in ["queued", "sending", "sent", "failed"] {
        let n: i64 = r
            .outbox
            .iter()
            .filter(|(_, s, _)| s == state)
            .map(|(_, _, n)| n)
            .sum();
        let _ = write!(
            h,
            "<div class=\"count\" id=\"outbox-{state}\"><b>{n}</b>{state}</div>"
        );
    }
    let _ = write!(
        h,
        "<div class=\"count\" id=\"events-pending\"><b>{}</b>events waiting</div></div>",
        r.pending.0
    );
    let _ = write!(
        h,
        "<h2 id=\"failures\">Latest failures ({})</h2>",
        r.failures.len()
    );
    if r.failures.is_empty() {
        h.push_str("<p class=\"muted\">No failed send.</p>");
    }
    for f in &r.failures {
        let _ = write!(
            h,
            "<div class=\"card failure\"><div class=\"row\"><span class=\"name\">to {}</span>\
             <span class=\"muted\">{} · {} · {} attempt(s) · {}</span></div><div class=\"err\">{}</div></div>",
            esc(&crate::domain::phone::shown(&f.recipient)),
            esc(&f.user),
            esc(&f.msg_type),
            f.attempts,
            esc(&utc_ms(f.updated_at_ms)),
            esc(&f.error),
        );
    }
}

fn events(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<h2 id=\"webhooks\">Recent webhooks ({})</h2>",
        r.events.len()
    );
    if r.events.is_empty() {
        h.push_str("<p class=\"muted\">No webhook yet.</p>");
    }
    for e in &r.events {
        let who = match (&e.name, &e.contact) {
            (Some(n), Some(c)) => format!("{n} (+{c})"),
            (None, Some(c)) => format!("+{c}"),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<div class=\"card event\"><div class=\"row\"><span class=\"name\">{}</span>\
             <span>{}</span><span class=\"muted\">{} · {} · {}</span></div><div>{}</div></div>",
            esc(&e.kind),
            esc(&who),
            esc(&e.user),
            esc(&e.state),
            esc(&utc_ms(e.created_at_ms)),
            esc(&e.summary),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
