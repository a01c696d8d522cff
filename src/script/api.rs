//! The script API of DESIGN.md, registered on the engine: `send`, `reply`, `log`, `state`,
//! `set_state`, `lookup`, `schedule`, `export`, and time helpers. Every function acts as the run's user
//! and project only; none of them takes a user, a token or a path.

use super::time::{Time, parse_date, parse_time};
use super::{Action, FnResult, with_current};
use crate::domain::{local_file, outgoing, window};
use chrono::{Duration, NaiveTime, Utc};
use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, Map};
use serde_json::Value;

/// The longest line a run's log keeps; the rest of a longer one is cut.
pub const LOG_LINE_MAX: usize = 2 * 1024;
/// The most a run's log keeps in all (each line's newline counted); later lines are counted,
/// not kept.
pub const LOG_RUN_MAX: usize = 64 * 1024;
/// The most lines of a run's log that also go to the gate's log (tracing); the rest are
/// counted in one last line there.
pub const LOG_TRACED_MAX: usize = 256;
/// The target of script log lines in the gate's log.
pub const LOG_TARGET: &str = "wagate::script";

/// How much a run's log holds, and what it left out.
#[derive(Default)]
pub(crate) struct LogSize {
    kept: usize,
    dropped_bytes: usize,
    dropped_lines: usize,
    /// Lines that went to the gate's log, and kept lines that did not (over
    /// [`LOG_TRACED_MAX`]).
    traced: usize,
    untraced: usize,
}

/// Keeps a line of the run's log (also `print` and `debug`).
pub(super) fn push_log(s: &str) {
    let _ = with_current(|cur| {
        log_line(cur, s);
        Ok(())
    });
}

/// Adds `s` to the run's log within its bounds: the log is stored with the run's trace, so a
/// script logging in a loop must not grow the database (or the run's memory) without end. A
/// line longer than [`LOG_LINE_MAX`] is cut (saying how much); once the log holds
/// [`LOG_RUN_MAX`], further lines are only counted, for the marker [`close_log`] adds.
/// A kept line also goes to the gate's log (see [`to_tracing`]).
pub(super) fn log_line(cur: &mut super::Current, s: &str) {
    if cur.log_size.dropped_lines == 0 {
        let line = cut_line(s);
        // An empty line costs its newline: a loop of `log("")` is bounded too.
        let cost = line.len() + 1;
        if cur.log_size.kept + cost <= LOG_RUN_MAX {
            cur.log_size.kept += cost;
            to_tracing(cur, &line);
            cur.logs.push(line);
            return;
        }
    }
    let size = &mut cur.log_size;
    size.dropped_bytes += s.len();
    size.dropped_lines += 1;
}

/// Writes a kept line of a gate's run to the gate's log: info, target [`LOG_TARGET`], with
/// the user, project and rule, at most [`LOG_TRACED_MAX`] lines a run. A dry run (no
/// `log_as`) writes nothing there: it prints its log.
fn to_tracing(cur: &mut super::Current, line: &str) {
    let Some((project, rule)) = &cur.log_as else {
        return;
    };
    let size = &mut cur.log_size;
    if size.traced >= LOG_TRACED_MAX {
        size.untraced += 1;
        return;
    }
    size.traced += 1;
    tracing::info!(target: LOG_TARGET, user = %cur.ctx.user, project = %project, rule = %rule, text = %crate::terminal::one_line(line), "script log");
}

/// `s`, or its first [`LOG_LINE_MAX`] bytes saying how much was cut.
fn cut_line(s: &str) -> String {
    if s.len() <= LOG_LINE_MAX {
        return s.to_string();
    }
    let mut end = LOG_LINE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &s[..end], s.len() - end)
}

/// Ends a run's log: one line saying what was left out, if anything was.
pub(super) fn close_log(cur: &mut super::Current) {
    let size = &cur.log_size;
    if size.dropped_lines > 0 {
        let line = format!(
            "… log truncated: {} more bytes in {} lines (a run keeps {} KiB of log)",
            size.dropped_bytes,
            size.dropped_lines,
            LOG_RUN_MAX / 1024
        );
        cur.logs.push(line);
    }
    let left_out = size.dropped_lines + size.untraced;
    if left_out > 0
        && let Some((project, rule)) = &cur.log_as
    {
        tracing::info!(target: LOG_TARGET, user = %cur.ctx.user, project = %project, rule = %rule, left_out_lines = left_out, "script log truncated: the rest of this run's log is not in the gate's log (`wagate runs` shows the run's trace)");
    }
}

pub(super) fn err<T>(msg: impl Into<String>) -> FnResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        rhai::Position::NONE,
    )))
}

/// A script value as JSON; a `Time` becomes its RFC 3339 text.
pub(super) fn to_json(d: &Dynamic) -> FnResult<Value> {
    if let Some(t) = d.clone().try_cast::<Time>() {
        return Ok(Value::String(t.to_string()));
    }
    rhai::serde::from_dynamic::<Value>(d).map_err(|e| match not_json(d, "") {
        Some((at, what)) if what == "Time" => format!(
            "{at}is a Time, which cannot be stored or sent inside a map or array: write t.to_string() (the instant) or t.format(\"%d.%m.%Y %H:%M\") (a text)"
        )
        .into(),
        Some((at, what)) => format!(
            "{at}is a {what}, which cannot be stored or sent: use texts, numbers, true/false, arrays and maps"
        )
        .into(),
        None => e,
    })
}

/// The first value inside `d` that has no JSON form: where it is (`` `a.b` `` and a space, or
/// nothing for `d` itself) and its type in a script's words.
fn not_json(d: &Dynamic, path: &str) -> Option<(String, String)> {
    if let Some(m) = d.read_lock::<Map>() {
        return m.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            };
            not_json(v, &p)
        });
    }
    if let Some(a) = d.read_lock::<Array>() {
        return a
            .iter()
            .enumerate()
            .find_map(|(i, v)| not_json(v, &format!("{path}[{i}]")));
    }
    let plain = d.is_unit()
        || d.is_bool()
        || d.is_int()
        || d.is_float()
        || d.is_string()
        || d.is_char()
        || d.is_blob();
    if plain {
        return None;
    }
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("`{path}` ")
    };
    Some((at, shown_type(d)))
}

/// A value's type as scripts name it, never a Rust path (`Time`, `Fn`, `int`, …).
pub(super) fn shown_type(d: &Dynamic) -> String {
    if d.is::<Time>() {
        return "Time".into();
    }
    match d.type_name() {
        "i64" | "i32" => "int".into(),
        "f64" | "f32" => "float".into(),
        "()" => "()".into(),
        other => other.rsplit("::").next().unwrap_or(other).to_string(),
    }
}

/// A lookup's result, refused as a located error when it is larger than a script may hold (the
/// engine's own check would lose the call's position inside a rule's `call:` function).
fn sized(ctx: &rhai::NativeCallContext, table: &str, d: Dynamic) -> FnResult<Dynamic> {
    match ctx.engine().ensure_data_size_within_limits(&d) {
        Ok(()) => Ok(d),
        Err(e) => {
            let why = match *e {
                EvalAltResult::ErrorDataTooLarge(what, _) => match what.as_str() {
                    "Length of string" => "a text in it is longer than max_string_size",
                    "Size of object map" => "a map in it has more keys than max_map_size",
                    _ => "it has more items than max_array_size",
                },
                other => return Err(other.into()),
            };
            err(format!(
                "lookup(\"{table}\"): the result is too large for a script: {why} (`scripts:` in gate.yaml) allows; look up fewer or smaller rows"
            ))
        }
    }
}

pub(super) fn to_dynamic(v: &Value) -> FnResult<Dynamic> {
    rhai::serde::to_dynamic(v)
}

/// Least privilege: sending needs `permissions.send`.
pub(super) fn check_may_send(cur: &super::Current) -> FnResult<()> {
    if cur.ctx.may_send {
        return Ok(());
    }
    err(format!(
        "user `{}` may not send messages (permissions.send is false in users/{}.yaml)",
        cur.ctx.user, cur.ctx.user
    ))
}

/// Records a send (a local file the body names is resolved inside the project folder first)
/// and returns its id: the key its outbox row, its message and exports carry (or, in a run
/// that stores nothing, `local:<n>`).
pub(super) fn push_send(
    cur: &mut super::Current,
    recipient: String,
    msg_type: String,
    mut body: Value,
) -> FnResult<String> {
    if cur.max_sends > 0 && cur.sends >= cur.max_sends {
        return Err(too_many_sends(cur.max_sends));
    }
    if let Some((kind, path, _)) = local_file::marker(&body) {
        let (full, root) = project_file(cur.ctx.dir.as_deref(), &path)?;
        local_file::set_path(&mut body, &full);
        // The sender checks again, right before the upload, that the file is still inside
        // the folder: by then it may have been replaced by a symlink leading out.
        body[kind.as_str()][local_file::MARKER]["root"] = root.into();
    }
    let n = cur.sends;
    cur.sends += 1;
    cur.actions.push(Action::Send {
        recipient,
        msg_type,
        body,
    });
    Ok(match &cur.send_ids {
        Some(base) => format!("{base}{n}"),
        None => format!("local:{n}"),
    })
}

/// The error of a send over `scripts.max_sends`. It ends the run as the other limits do: a
/// script cannot catch it, so the run fails and none of its messages is queued.
fn too_many_sends(max: usize) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(format!(
            "send: the run asked to queue more than {max} messages, the most one run may (scripts.max_sends in gate.yaml): the run fails and none of its messages is queued"
        )),
        rhai::Position::NONE,
    ))
}

/// A recipient given as a number (a phone column a YAML or JSON table holds as a number):
/// its decimal digits. Zero and negative numbers are no phone numbers.
fn int_recipient(f: &str, to: INT) -> FnResult<String> {
    if to <= 0 {
        return err(format!(
            "{f}: the recipient {to} is not a phone number: a number recipient must be positive, the country code and number in digits (e.g. 33612345678)"
        ));
    }
    Ok(to.to_string())
}

/// A recipient given as a decimal number is refused, even a whole one: a phone number read
/// as a float (e.g. `3.36123E+10` from a spreadsheet) may have lost its last digits, and
/// would reach someone else.
fn float_recipient<T>(f: &str, to: rhai::FLOAT) -> FnResult<T> {
    err(format!(
        "{f}: the recipient {to:?} is a decimal number, not a phone number: give it as text (\"+33612345678\") or as a whole number (33612345678)"
    ))
}

fn record_send(to: &str, spec: Value, reply_to: Option<&str>) -> FnResult<String> {
    with_current(|cur| {
        check_may_send(cur)?;
        let (mut msg_type, mut body) =
            outgoing::build(to, &spec, reply_to).map_err(|e| -> Box<EvalAltResult> { e.into() })?;
        if window::needs_window(&msg_type) {
            let last = last_inbound(cur, to)?;
            if !window::within_customer_window(last, cur.ctx.now.timestamp()) {
                let Some(fallback) = cur.ctx.fallback_template.clone() else {
                    return err(window_closed(to, last, cur.ctx.now.timestamp()));
                };
                (msg_type, body) = outgoing::build(to, &fallback, None)
                    .map_err(|e| -> Box<EvalAltResult> { e.into() })?;
                let line = format!(
                    "{to} is outside the 24-hour window: sent the fallback template `{}` instead",
                    fallback
                        .get("template")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                );
                log_line(cur, &line);
            }
        }
        push_send(cur, to.to_string(), msg_type, body)
    })
}

/// The absolute path of `path`, a file of the project folder, and the folder's: never outside
/// it (no `..`, no absolute path, no symlink leading out), and it must exist.
fn project_file(dir: Option<&std::path::Path>, path: &str) -> FnResult<(String, String)> {
    let Some(dir) = dir else {
        return err("send: this run has no project folder to take files from");
    };
    if !local_file::is_inside(path) {
        return err(format!(
            "send: `{path}`: a file must be named relative to the project folder, without `..`"
        ));
    }
    let root = dir
        .canonicalize()
        .map_err(|e| format!("send: project folder {}: {e}", dir.display()))?;
    let full = root.join(path).canonicalize().map_err(|e| {
        format!(
            "send: `{path}` is not a file of the project folder {}: {e}",
            dir.display()
        )
    })?;
    if !full.starts_with(&root) || !full.is_file() {
        return err(format!(
            "send: `{path}` is not a file inside the project folder {}",
            dir.display()
        ));
    }
    Ok((
        full.to_string_lossy().into_owned(),
        root.to_string_lossy().into_owned(),
    ))
}

/// `window_open(to)`: whether free-form messages may reach `to` at the run's time (their last
/// inbound message, or the triggering one, is less than 24 hours old). Rules use it to choose
/// between a free-form message and a template, as `send` itself would judge.
fn window_open(to: &str) -> FnResult<bool> {
    // The recipient is read as send reads it: a national number is refused, not guessed.
    if !outgoing::is_bsuid(to) && crate::domain::groups::group_of(to).is_none() {
        crate::domain::phone::phone_digits(to).map_err(|e| format!("window_open: {e}"))?;
    }
    with_current(|cur| {
        let last = last_inbound(cur, to)?;
        Ok(window::within_customer_window(
            last,
            cur.ctx.now.timestamp(),
        ))
    })
}

/// When `to` last wrote (unix s): the stored time, or the message this run answers if newer.
/// Callers judge the window with it: when the message this run answers keeps the window open,
/// that is the answer, and the store is not asked.
fn last_inbound(cur: &super::Current, to: &str) -> FnResult<Option<i64>> {
    let key = window::contact_key(to);
    let own = cur
        .inbound
        .as_ref()
        .filter(|(c, _)| *c == key)
        .map(|(_, t)| *t);
    if window::within_customer_window(own, cur.ctx.now.timestamp()) {
        return Ok(own);
    }
    let stored = cur
        .ctx
        .host
        .last_inbound(&key)
        .map_err(|e| -> Box<EvalAltResult> { e.into() })?;
    Ok(own.max(stored))
}

/// Why a free-form message cannot go to `to`: it names templates, the one way to reach them.
fn window_closed(to: &str, last: Option<i64>, now: i64) -> String {
    let when = match last {
        None => "has never written to this number".to_string(),
        Some(t) => format!("last wrote {}h ago", (now - t) / 3600),
    };
    format!(
        "send: {to} {when}, so the 24-hour customer-service window is closed: only an approved template can reach them: send(to, #{{ template: \"name\", language: \"en_US\", params: [..] }}), or name a fallback_template in project.yaml"
    )
}

/// `reply(event, …)`: to the sender, quoting their message; to a message written in a group,
/// to the group.
fn reply(event: &Map, spec: Value) -> FnResult<String> {
    let group = event
        .get("raw")
        .and_then(|raw| {
            raw.read_lock::<Map>()
                .and_then(|m| m.get("group_id").cloned())
        })
        .filter(|g| g.is_string())
        .map(|g| g.to_string());
    if let Some(g) = group {
        return super::groups::record_group(&g, spec, Some(&event_field(event, "id")?));
    }
    let to = event_field(event, "from")?;
    record_send(&to, spec, Some(&event_field(event, "id")?))
}

fn event_field(event: &Map, key: &str) -> FnResult<String> {
    event
        .get(key)
        .filter(|v| !v.is_unit())
        .map(|v| v.to_string())
        .ok_or_else(|| format!("reply: the event has no `{key}` (is it a message event?)").into())
}

fn now() -> FnResult<Time> {
    with_current(|cur| Ok(Time::new(cur.ctx.now, cur.ctx.tz)))
}

fn tz() -> FnResult<chrono_tz::Tz> {
    with_current(|cur| Ok(cur.ctx.tz))
}

fn state(key: &str) -> FnResult<Dynamic> {
    with_current(|cur| {
        if let Some(v) = cur.state_writes.get(key) {
            return to_dynamic(v);
        }
        match cur
            .ctx
            .host
            .state(key)
            .map_err(|e| -> Box<EvalAltResult> { e.into() })?
        {
            Some(v) => to_dynamic(&v),
            None => Ok(Dynamic::UNIT),
        }
    })
}

fn set_state(key: &str, value: Dynamic) -> FnResult<()> {
    if key.is_empty() {
        return err("set_state: the key is empty");
    }
    let value = if value.is_unit() {
        Value::Null
    } else {
        to_json(&value)?
    };
    with_current(|cur| {
        cur.state_writes.insert(key.to_string(), value.clone());
        cur.actions.push(Action::SetState {
            key: key.to_string(),
            value,
        });
        Ok(())
    })
}

const STORE_TABLES: [&str; 2] = ["contacts", "messages"];

fn lookup_key(table: &str, key: &str) -> FnResult<Dynamic> {
    with_current(|cur| {
        if let Some(t) = cur.ctx.tables.get(table) {
            return match t.get(key) {
                Some(row) => to_dynamic(&Value::Object(row.clone())),
                None => Ok(Dynamic::UNIT),
            };
        }
        if STORE_TABLES.contains(&table) {
            may_read(cur, table)?;
            let rows = cur
                .ctx
                .host
                .lookup(table, Some(key), None)
                .map_err(|e| -> Box<EvalAltResult> { e.into() })?;
            return match rows.into_iter().next() {
                Some(r) => to_dynamic(&r),
                None => Ok(Dynamic::UNIT),
            };
        }
        err(unknown_table(table, cur))
    })
}

fn lookup_query(table: &str, query: Map) -> FnResult<Array> {
    let q = to_json(&Dynamic::from_map(query))?;
    let q = q.as_object().cloned().unwrap_or_default();
    with_current(|cur| {
        let rows: Vec<Value> = if let Some(t) = cur.ctx.tables.get(table) {
            t.find(&q)
                .into_iter()
                .map(|r| Value::Object(r.clone()))
                .collect()
        } else if STORE_TABLES.contains(&table) {
            may_read(cur, table)?;
            cur.ctx
                .host
                .lookup(table, None, Some(&q))
                .map_err(|e| -> Box<EvalAltResult> { e.into() })?
        } else {
            return err(unknown_table(table, cur));
        };
        rows.iter().map(to_dynamic).collect()
    })
}

/// Least privilege: a store is read only if the user's `permissions.read` lists it.
fn may_read(cur: &super::Current, table: &str) -> FnResult<()> {
    if cur.ctx.readable.iter().any(|t| t == table) {
        return Ok(());
    }
    err(format!(
        "lookup: user `{}` may not read `{table}` (permissions.read in users/{}.yaml lists: [{}])",
        cur.ctx.user,
        cur.ctx.user,
        cur.ctx.readable.join(", ")
    ))
}

fn unknown_table(table: &str, cur: &super::Current) -> String {
    let mut names: Vec<&str> = cur.ctx.tables.keys().map(String::as_str).collect();
    names.sort();
    names.extend(STORE_TABLES);
    format!(
        "lookup: no table `{table}`; this project has {}",
        names.join(", ")
    )
}

/// `schedule(when, call, arg)`: `when` is a Time, a time text, or seconds from now.
fn schedule(when: Dynamic, call: &str, arg: Dynamic) -> FnResult<String> {
    let at = if let Some(t) = when.clone().try_cast::<Time>() {
        t.utc
    } else if let Ok(secs) = when.as_int() {
        if secs < 0 {
            return err("schedule: a delay cannot be negative");
        }
        now()?.utc + Duration::seconds(secs)
    } else if let Some(s) = when.clone().try_cast::<rhai::ImmutableString>() {
        parse_time(&s, tz()?)
            .map_err(|e| -> Box<EvalAltResult> { format!("schedule: {e}").into() })?
            .utc
    } else {
        return err(format!(
            "schedule: `when` must be a Time, a time text or seconds, not {}",
            shown_type(&when)
        ));
    };
    let now = now()?.utc;
    let past = (now - at).to_std().unwrap_or_default();
    if past > crate::scheduler::GRACE {
        // Kept, it would fire at the scheduler's next look, or be recorded as missed while the
        // gate was down: neither is what the script meant.
        return err(format!(
            "schedule: {} is {} in the past; a call can only be scheduled ahead",
            Time::new(at, tz()?),
            crate::scheduler::humanize(past)
        ));
    }
    let arg = if arg.is_unit() {
        Value::Null
    } else {
        to_json(&arg)?
    };
    with_current(|cur| {
        if !cur.callable.iter().any(|f| f == call) {
            return err(format!(
                "schedule: this script has no function `{call}(arg)` to call"
            ));
        }
        let n = cur
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Schedule { .. }))
            .count();
        cur.actions.push(Action::Schedule {
            at,
            call: call.to_string(),
            arg,
        });
        Ok(format!("schedule:{n}"))
    })
}

/// `export(opts)`: Substance Export of this user's data; opts `since`, `until` (Time or time
/// text), `contact`, `incremental`. Returns `#{path, messages, contacts, media}`.
fn export(opts: Map) -> FnResult<Map> {
    let time = |key: &str| -> FnResult<Option<chrono::DateTime<Utc>>> {
        let Some(v) = opts.get(key).filter(|v| !v.is_unit()) else {
            return Ok(None);
        };
        if let Some(t) = v.clone().try_cast::<Time>() {
            return Ok(Some(t.utc));
        }
        match v.clone().try_cast::<rhai::ImmutableString>() {
            Some(s) => parse_time(&s, tz()?)
                .map(|t| Some(t.utc))
                .map_err(|e| format!("export: `{key}`: {e}").into()),
            None => err(format!(
                "export: `{key}` must be a Time or a time text, not {}",
                shown_type(v)
            )),
        }
    };
    for k in opts.keys() {
        if !["since", "until", "contact", "incremental"].contains(&k.as_str()) {
            return err(format!(
                "export: unknown option `{k}`; the options are since, until, contact, incremental"
            ));
        }
    }
    let req = super::ExportRequest {
        since: time("since")?,
        until: time("until")?,
        contact: opts
            .get("contact")
            .filter(|v| !v.is_unit())
            .map(|v| v.to_string()),
        incremental: opts
            .get("incremental")
            .map(|v| {
                v.as_bool()
                    .map_err(|t| format!("export: `incremental` must be true or false, not {t}"))
            })
            .transpose()?
            .unwrap_or(false),
    };
    with_current(|cur| {
        let started = std::time::Instant::now();
        let done = cur.ctx.host.export(&req);
        // Writing the file is the host's time, not the script's: the run's deadline moves on.
        cur.deadline += started.elapsed();
        let done = done.map_err(|e| -> Box<EvalAltResult> { e.into() })?;
        let line = format!(
            "export: {} message(s), {} contact(s), {} media record(s) to {}",
            done.messages, done.contacts, done.media, done.path
        );
        log_line(cur, &line);
        let mut m = Map::new();
        m.insert("path".into(), done.path.into());
        m.insert("messages".into(), (done.messages as INT).into());
        m.insert("contacts".into(), (done.contacts as INT).into());
        m.insert("media".into(), (done.media as INT).into());
        Ok(m)
    })
}

/// `export` is a Rhai keyword (modules' `export x;`), which scripts never need since imports
/// are resolved per project: it is disabled and `export(opts)` / `export()` parsed as a custom
/// syntax that calls [`export`].
fn register_export(engine: &mut Engine) {
    engine.disable_symbol("export");
    engine.register_custom_syntax_with_state_raw(
        "export",
        |symbols, look_ahead, _state| {
            // Rhai reads `()` as one token (unit); `export()` ends with it.
            Ok(match symbols.len() {
                1 if look_ahead == "()" => Some("()".into()),
                1 => Some("(".into()),
                2 if symbols[1] == "()" => None,
                2 if look_ahead == ")" => Some(")".into()),
                2 => Some("$expr$".into()),
                3 if symbols[2] != ")" => Some(")".into()),
                _ => None,
            })
        },
        false,
        |context, inputs, _state| {
            let pos = inputs.first().map_or(rhai::Position::NONE, |e| e.position());
            let opts = match inputs.first() {
                Some(e) => context.eval_expression_tree(e)?,
                None => Dynamic::from_map(Map::new()),
            };
            let type_name = shown_type(&opts);
            let result = match opts.try_cast::<Map>() {
                Some(m) => export(m),
                None => err(format!(
                    "export: give a map of options, e.g. export(#{{ since: \"2026-05-01\" }}), not {type_name}"
                )),
            };
            result.map(Dynamic::from_map).map_err(|mut e| {
                if e.position().is_none() {
                    e.set_position(pos);
                }
                e
            })
        },
    );
}

fn register_time(engine: &mut Engine) {
    engine.register_type_with_name::<Time>("Time");
    engine.register_fn("now", now);
    engine.register_fn("today", || {
        Ok::<_, Box<EvalAltResult>>(now()?.start_of_day())
    });
    engine.register_fn("date", |s: &str| -> FnResult<Time> {
        let d = parse_date(s).map_err(|e| -> Box<EvalAltResult> { e.into() })?;
        let tz = tz()?;
        Ok(Time::new(
            super::time::local_to_utc(tz, d.and_time(NaiveTime::MIN)),
            tz,
        ))
    });
    engine.register_fn("time", |s: &str| -> FnResult<Time> {
        parse_time(s, tz()?).map_err(|e| e.into())
    });
    engine.register_fn("add_days", |t: &mut Time, n: INT| t.add_days(n));
    engine.register_fn("add_hours", |t: &mut Time, n: INT| t.add_seconds(n * 3600));
    engine.register_fn("add_minutes", |t: &mut Time, n: INT| t.add_seconds(n * 60));
    engine.register_fn("add_seconds", |t: &mut Time, n: INT| t.add_seconds(n));
    engine.register_fn("start_of_day", |t: &mut Time| t.start_of_day());
    engine.register_fn("format", |t: &mut Time, f: &str| -> FnResult<String> {
        t.format(f).map_err(|e| e.into())
    });
    engine.register_fn("days_until", |a: &mut Time, b: Time| a.days_until(&b));
    engine.register_fn("date_text", |t: &mut Time| {
        t.local().format("%Y-%m-%d").to_string()
    });
    engine.register_fn("to_string", |t: &mut Time| t.to_string());
    engine.register_fn("to_debug", |t: &mut Time| t.to_string());
    engine.register_get("year", |t: &mut Time| t.year());
    engine.register_get("month", |t: &mut Time| t.month());
    engine.register_get("day", |t: &mut Time| t.day());
    engine.register_get("hour", |t: &mut Time| t.hour());
    engine.register_get("minute", |t: &mut Time| t.minute());
    engine.register_get("second", |t: &mut Time| t.second());
    engine.register_get("weekday", |t: &mut Time| t.weekday());
    engine.register_get("unix", |t: &mut Time| t.utc.timestamp());
    engine.register_fn("==", |a: Time, b: Time| a.utc == b.utc);
    engine.register_fn("!=", |a: Time, b: Time| a.utc != b.utc);
    engine.register_fn("<", |a: Time, b: Time| a.utc < b.utc);
    engine.register_fn("<=", |a: Time, b: Time| a.utc <= b.utc);
    engine.register_fn(">", |a: Time, b: Time| a.utc > b.utc);
    engine.register_fn(">=", |a: Time, b: Time| a.utc >= b.utc);
    engine.register_fn("-", |a: Time, b: Time| (a.utc - b.utc).num_seconds());
    engine.register_fn("from_unix", |secs: INT| -> FnResult<Time> {
        let utc =
            chrono::DateTime::<Utc>::from_timestamp(secs, 0).ok_or("from_unix: out of range")?;
        Ok(Time::new(utc, tz()?))
    });
}

/// Registers the whole API on `engine`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("send", |to: &str, text: &str| {
        record_send(to, Value::from(text), None)
    });
    engine.register_fn("send", |to: &str, spec: Map| {
        record_send(to, to_json(&Dynamic::from_map(spec))?, None)
    });
    engine.register_fn("send", |to: INT, text: &str| {
        record_send(&int_recipient("send", to)?, Value::from(text), None)
    });
    engine.register_fn("send", |to: INT, spec: Map| {
        let to = int_recipient("send", to)?;
        record_send(&to, to_json(&Dynamic::from_map(spec))?, None)
    });
    engine.register_fn("send", |to: rhai::FLOAT, _: &str| {
        float_recipient::<String>("send", to)
    });
    engine.register_fn("send", |to: rhai::FLOAT, _: Map| {
        float_recipient::<String>("send", to)
    });
    engine.register_fn("reply", |event: Map, text: &str| {
        reply(&event, Value::from(text))
    });
    engine.register_fn("reply", |event: Map, spec: Map| {
        reply(&event, to_json(&Dynamic::from_map(spec))?)
    });
    engine.register_fn("log", |text: &str| push_log(text));
    engine.register_fn("log", |v: Dynamic| push_log(&v.to_string()));
    engine.register_fn("state", state);
    engine.register_fn("set_state", set_state);
    engine.register_fn(
        "lookup",
        |ctx: rhai::NativeCallContext, table: &str, key: &str| {
            sized(&ctx, table, lookup_key(table, key)?)
        },
    );
    engine.register_fn(
        "lookup",
        |ctx: rhai::NativeCallContext, table: &str, key: INT| {
            sized(&ctx, table, lookup_key(table, &key.to_string())?)
        },
    );
    engine.register_fn(
        "lookup",
        |ctx: rhai::NativeCallContext, table: &str, query: Map| {
            sized(
                &ctx,
                table,
                Dynamic::from_array(lookup_query(table, query)?),
            )
        },
    );
    engine.register_fn("schedule", schedule);
    super::book::register(engine);
    super::groups::register(engine);
    engine.register_fn("window_open", window_open);
    engine.register_fn("window_open", |to: INT| {
        window_open(&int_recipient("window_open", to)?)
    });
    register_export(engine);
    register_time(engine);
}
