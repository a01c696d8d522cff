//! Rhai, sandboxed. One hardened [`ScriptEngine`] (limits, no imports, no eval) compiles
//! scripts and `if:` expressions into shared ASTs and runs them. Scripts decide, the host acts:
//! `send`, `reply` and `log` only record into the current run's context; the dispatcher
//! commits the recorded actions after the run, in one transaction.
//!
//! The run context is thread-local: a run is synchronous on one blocking thread, and this keeps
//! the registered functions free of per-run state, so the engine and ASTs are shared by all.

use crate::config::{Diagnostic, ScriptLimits};
use crate::domain::outgoing;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Position, Scope};
use serde_json::Value;
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

/// Something a script asked the host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Queue a message: the recipient, its type and the Cloud API body.
    Send {
        recipient: String,
        msg_type: String,
        body: Value,
    },
}

/// What one run produced. `error` is set when the run failed; its actions are then dropped.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    pub actions: Vec<Action>,
    pub logs: Vec<String>,
    pub error: Option<String>,
}

/// Per-run permissions and limits.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// The user this run acts as, for messages.
    pub user: String,
    pub may_send: bool,
    pub timeout: Duration,
}

struct Current {
    ctx: RunContext,
    deadline: Instant,
    actions: Vec<Action>,
    logs: Vec<String>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

type FnResult<T> = Result<T, Box<EvalAltResult>>;

fn with_current<T>(f: impl FnOnce(&mut Current) -> FnResult<T>) -> FnResult<T> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(cur) => f(cur),
        None => Err("this function can only be called while a rule runs".into()),
    })
}

fn record_send(to: &str, spec: Value, reply_to: Option<&str>) -> FnResult<String> {
    with_current(|cur| {
        if !cur.ctx.may_send {
            return Err(format!(
                "user `{}` may not send messages (permissions.send is false in users/{}.yaml)",
                cur.ctx.user, cur.ctx.user
            )
            .into());
        }
        let (msg_type, body) =
            outgoing::build(to, &spec, reply_to).map_err(|e| -> Box<EvalAltResult> { e.into() })?;
        let n = cur.actions.len();
        cur.actions.push(Action::Send {
            recipient: to.to_string(),
            msg_type,
            body,
        });
        // The local id is the run-local ordinal; the dispatcher makes it unique per event.
        Ok(format!("local:{n}"))
    })
}

fn to_json(d: &Dynamic) -> FnResult<Value> {
    rhai::serde::from_dynamic::<Value>(d)
}

fn event_field(event: &Map, key: &str) -> FnResult<String> {
    event
        .get(key)
        .filter(|v| !v.is_unit())
        .map(|v| v.to_string())
        .ok_or_else(|| format!("reply: the event has no `{key}` (is it a message event?)").into())
}

/// The sandboxed engine shared by every rule of the gate.
pub struct ScriptEngine {
    engine: Engine,
    timeout: Duration,
}

impl ScriptEngine {
    /// An engine with the gate's limits and the script API registered.
    pub fn new(limits: &ScriptLimits) -> Self {
        let mut engine = Engine::new();
        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_depth);
        engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
        engine.set_max_string_size(limits.max_string_size);
        engine.set_max_array_size(limits.max_array_size);
        engine.set_max_map_size(limits.max_map_size);
        // No file access through `import`, and no `eval` of strings built at run time.
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.disable_symbol("eval");
        engine.on_progress(|ops| {
            if ops % 256 != 0 {
                return None;
            }
            CURRENT.with(|c| {
                c.borrow()
                    .as_ref()
                    .filter(|cur| Instant::now() > cur.deadline)
                    .map(|cur| {
                        Dynamic::from(format!(
                            "the run took longer than its {} ms limit",
                            cur.ctx.timeout.as_millis()
                        ))
                    })
            })
        });
        engine.on_print(|s| {
            let _ = with_current(|cur| {
                cur.logs.push(s.to_string());
                Ok(())
            });
        });
        engine.on_debug(|s, _, _| {
            let _ = with_current(|cur| {
                cur.logs.push(s.to_string());
                Ok(())
            });
        });
        register_api(&mut engine);
        ScriptEngine {
            engine,
            timeout: Duration::from_millis(limits.timeout_ms),
        }
    }

    /// The wall-clock limit of one run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Compiles a script file; a syntax error is located in `shown`.
    pub fn compile_file(&self, path: &Path, shown: &Path) -> Result<AST, Diagnostic> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::file(shown, format!("cannot read {}: {e}", shown.display()))
        })?;
        self.engine.compile(&src).map_err(|e| {
            let pos = e.position();
            Diagnostic::at(
                shown,
                &src,
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
                e.err_type().to_string(),
            )
        })
    }

    /// Compiles an `if:` expression written at `pos` (line, col of its value) in `file`.
    pub fn compile_condition(
        &self,
        expr: &str,
        file: &Path,
        file_src: &str,
        pos: (usize, usize),
    ) -> Result<AST, Diagnostic> {
        self.engine.compile_expression(expr).map_err(|e| {
            let (line, col) = place_in_yaml(file_src, pos, e.position());
            Diagnostic::at(
                file,
                file_src,
                line,
                col,
                format!("in `if:`: {}", e.err_type()),
            )
        })
    }

    /// Evaluates an `if:` expression with `event` in scope. Not a bool → error.
    pub fn eval_condition(
        &self,
        ast: &AST,
        event: &Value,
        ctx: &RunContext,
    ) -> Result<bool, String> {
        let event = rhai::serde::to_dynamic(event).map_err(|e| e.to_string())?;
        let outcome = self.in_run(ctx, |engine| {
            let mut scope = Scope::new();
            scope.push_constant("event", event);
            engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        });
        let v = outcome.0.map_err(|e| describe(&e, "if:"))?;
        v.as_bool()
            .map_err(|t| format!("`if:` must give true or false, it gave a value of type {t}"))
    }

    /// Runs a rule: the function `call` with `event`, or the script's body with `event` in
    /// scope. `file` names the script in error messages.
    pub fn run(
        &self,
        ast: &AST,
        call: Option<&str>,
        event: &Value,
        ctx: &RunContext,
        file: &str,
    ) -> RunOutcome {
        let event = match rhai::serde::to_dynamic(event) {
            Ok(e) => e,
            Err(e) => {
                return RunOutcome {
                    error: Some(format!(
                        "{file}: the event cannot be given to the script: {e}"
                    )),
                    ..Default::default()
                };
            }
        };
        let (result, mut outcome) = self.in_run(ctx, |engine| {
            let mut scope = Scope::new();
            match call {
                Some(name) => {
                    let opts = CallFnOptions::new().eval_ast(false);
                    engine.call_fn_with_options::<Dynamic>(opts, &mut scope, ast, name, (event,))
                }
                None => {
                    scope.push("event", event);
                    engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast)
                }
            }
        });
        if let Err(e) = result {
            outcome.actions.clear();
            outcome.error = Some(describe(&e, file));
        }
        outcome
    }

    /// Runs `f` with a fresh run context installed on this thread, and takes it back after.
    fn in_run<T>(&self, ctx: &RunContext, f: impl FnOnce(&Engine) -> T) -> (T, RunOutcome) {
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                ctx: ctx.clone(),
                deadline: Instant::now() + ctx.timeout,
                actions: Vec::new(),
                logs: Vec::new(),
            })
        });
        // Clear the context even if the script panics the engine, so the thread is reusable.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                CURRENT.with(|c| c.borrow_mut().take());
            }
        }
        let reset = Reset;
        let result = f(&self.engine);
        let cur = CURRENT.with(|c| c.borrow_mut().take());
        drop(reset);
        let outcome = cur
            .map(|c| RunOutcome {
                actions: c.actions,
                logs: c.logs,
                error: None,
            })
            .unwrap_or_default();
        (result, outcome)
    }
}

/// `file:line:col: message`, with the innermost position (inside the called function).
fn describe(err: &EvalAltResult, file: &str) -> String {
    let mut e = err;
    let mut pos = e.position();
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, p) = e {
        if !inner.position().is_none() {
            pos = inner.position();
        } else if !p.is_none() {
            pos = *p;
        }
        e = inner;
    }
    let msg = match e {
        EvalAltResult::ErrorTerminated(token, _) => token.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => {
            "the run used more operations than its limit".into()
        }
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => {
            let s = other.to_string();
            match s.rfind(" (line ") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    };
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: {msg}"),
        (Some(l), None) => format!("{file}:{l}: {msg}"),
        _ => format!("{file}: {msg}"),
    }
}

/// Maps a position inside an `if:` expression to project.yaml (single-line values; a quote
/// before the expression shifts it by one).
fn place_in_yaml(src: &str, (line, col): (usize, usize), inner: Position) -> (usize, usize) {
    if line == 0 {
        return (0, 0);
    }
    let quoted = src
        .lines()
        .nth(line - 1)
        .and_then(|l| l.chars().nth(col.saturating_sub(1)))
        .is_some_and(|c| c == '\'' || c == '"');
    let inner_col = inner.position().unwrap_or(1);
    (line, col + usize::from(quoted) + inner_col - 1)
}

fn register_api(engine: &mut Engine) {
    engine.register_fn("send", |to: &str, text: &str| {
        record_send(to, Value::from(text), None)
    });
    engine.register_fn("send", |to: &str, spec: Map| {
        record_send(to, to_json(&Dynamic::from_map(spec))?, None)
    });
    engine.register_fn("reply", |event: Map, text: &str| {
        let (to, id) = (event_field(&event, "from")?, event_field(&event, "id")?);
        record_send(&to, Value::from(text), Some(&id))
    });
    engine.register_fn("reply", |event: Map, spec: Map| {
        let (to, id) = (event_field(&event, "from")?, event_field(&event, "id")?);
        record_send(&to, to_json(&Dynamic::from_map(spec))?, Some(&id))
    });
    engine.register_fn("log", |text: &str| {
        with_current(|cur| {
            cur.logs.push(text.to_string());
            Ok(())
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> ScriptEngine {
        ScriptEngine::new(&ScriptLimits {
            timeout_ms: 200,
            ..ScriptLimits::default()
        })
    }

    fn ctx() -> RunContext {
        RunContext {
            user: "azarya".into(),
            may_send: true,
            timeout: Duration::from_millis(200),
        }
    }

    fn event() -> Value {
        json!({"kind": "message", "id": "wamid.1", "from": "33600", "text": "Hi", "type": "text"})
    }

    #[test]
    fn reply_records_a_quoted_send() {
        let e = engine();
        let ast = e
            .engine
            .compile(r#"reply(event, "Hello " + event.text); log("done");"#)
            .unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "r.rhai");
        assert_eq!(out.error, None);
        assert_eq!(out.logs, vec!["done"]);
        let Action::Send {
            recipient, body, ..
        } = &out.actions[0];
        assert_eq!(recipient, "33600");
        assert_eq!(body["text"]["body"], "Hello Hi");
        assert_eq!(body["context"]["message_id"], "wamid.1");
    }

    #[test]
    fn endless_loop_is_cut_off_with_its_position() {
        let e = engine();
        let ast = e
            .engine
            .compile("send(\"15550001\", \"x\");\nloop { }")
            .unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "loop.rhai");
        let err = out.error.unwrap();
        assert!(err.starts_with("loop.rhai:2:"), "{err}");
        assert!(out.actions.is_empty(), "a failed run's actions are dropped");
    }

    #[test]
    fn send_permission_and_bad_forms_are_script_errors() {
        let e = engine();
        let ast = e
            .engine
            .compile("fn act(ev) {\n  send(\"15550001\", \"x\")\n}")
            .unwrap();
        let mut c = ctx();
        c.may_send = false;
        let err = e
            .run(&ast, Some("act"), &event(), &c, "f.rhai")
            .error
            .unwrap();
        assert!(err.contains("may not send"), "{err}");
        assert!(err.starts_with("f.rhai:2:"), "{err}");
        let ast = e
            .engine
            .compile("send(\"15550001\", #{ nonsense: 1 })")
            .unwrap();
        let err = e.run(&ast, None, &event(), &ctx(), "g.rhai").error.unwrap();
        assert!(err.contains("cannot tell the message type"), "{err}");
    }

    #[test]
    fn conditions() {
        let e = engine();
        let src = "if: 'event.text.to_lower().contains(\"hi\")'";
        let ast = e
            .compile_condition(
                "event.text.to_lower().contains(\"hi\")",
                Path::new("p.yaml"),
                src,
                (1, 5),
            )
            .unwrap();
        assert_eq!(e.eval_condition(&ast, &event(), &ctx()), Ok(true));
        let ast = e
            .compile_condition("event.text", Path::new("p.yaml"), src, (1, 5))
            .unwrap();
        assert!(
            e.eval_condition(&ast, &event(), &ctx())
                .unwrap_err()
                .contains("true or false")
        );
        let d = e
            .compile_condition(
                "event.text ==",
                Path::new("p.yaml"),
                "if: 'event.text =='",
                (1, 5),
            )
            .unwrap_err();
        assert_eq!((d.line, d.col > 5), (1, true));
    }

    #[test]
    fn no_imports_no_eval() {
        let e = engine();
        assert!(e.engine.compile("eval(\"1\")").is_err());
        let ast = e.engine.compile("import \"x\" as x;").unwrap();
        assert!(
            e.run(&ast, None, &event(), &ctx(), "i.rhai")
                .error
                .is_some()
        );
    }
}
