//! Rhai, sandboxed. One hardened [`ScriptEngine`] (limits, no eval, no file or network
//! access) runs every rule; scripts are compiled per project folder, where `import` may load
//! only modules of that same folder, resolved once at compile time. Scripts decide, the host
//! acts: `send`, `reply`, `set_state` and `schedule` only record [`Action`]s into the current
//! run; the dispatcher commits them after the run, in one transaction.
//!
//! The run context is thread-local: a run is synchronous on one blocking thread, and this keeps
//! the registered functions free of per-run state, so the engine and ASTs are shared by all.

mod api;
mod book;
mod groups;
pub mod stack;
pub mod tables;
pub mod time;

use crate::config::{Diagnostic, ScriptLimits};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use stack::{MAX_CALL_DEPTH, MAX_EXPR_DEPTH, RUN_STACK};
pub use tables::Table;
pub use time::Time;

/// Something a script asked the host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Queue a message: the recipient, its type and the Cloud API body.
    Send {
        recipient: String,
        msg_type: String,
        body: Value,
    },
    /// Set (or, with `null`, remove) a persistent value of the project.
    SetState { key: String, value: Value },
    /// Call `call(arg)` of the same script at `at`.
    Schedule {
        at: DateTime<Utc>,
        call: String,
        arg: Value,
    },
    /// Give (`add`) or take away a label of a contact of the user's contact book.
    Label {
        contact: String,
        label: String,
        add: bool,
    },
}

/// A compiled `if:` and where it was written, to place its errors at run time as `check`
/// places those of its compilation.
#[derive(Clone, Debug)]
pub struct Condition {
    pub ast: AST,
    /// The text of the file it was written in, and where its value starts (line, column; 0
    /// and 0 when not known).
    src: Arc<str>,
    pos: (usize, usize),
}

/// Why an `if:` could not be evaluated, and where: the line and column in the file it was
/// compiled from (0 and 0 when that is not known).
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// What one run produced. `error` is set when the run failed; its actions are then dropped.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    pub actions: Vec<Action>,
    pub logs: Vec<String>,
    pub error: Option<String>,
}

/// What a script's `export(opts)` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportRequest {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub contact: Option<String>,
    pub incremental: bool,
}

/// What an export wrote (or, in a dry run, would write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportResult {
    pub path: String,
    pub messages: u64,
    pub contacts: u64,
    pub media: u64,
}

/// Reads a run may make of the store, always as its own user and project.
pub trait Host: Send + Sync {
    /// A persistent value of the project.
    fn state(&self, key: &str) -> Result<Option<Value>, String>;
    /// Rows of this user's `contacts` or `messages`: the one with `key`, or all matching
    /// `query`.
    fn lookup(
        &self,
        table: &str,
        key: Option<&str>,
        query: Option<&Map<String, Value>>,
    ) -> Result<Vec<Value>, String>;
    /// The WhatsApp timestamp of a contact's last inbound message (the 24-hour window).
    fn last_inbound(&self, _contact: &str) -> Result<Option<i64>, String> {
        Ok(None)
    }
    /// Substance Export of this user's data (`export(opts)`). Unlike the other actions it runs
    /// during the run, because the script gets its counts back; it writes only a new file under
    /// the user's exports folder (and, incremental, the user's watermark), never in dry runs.
    fn export(&self, _req: &ExportRequest) -> Result<ExportResult, String> {
        Err("export: there is no store to export from here".into())
    }
}

/// A host with nothing in it: no state, no contacts, no messages.
pub struct EmptyHost;

impl Host for EmptyHost {
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
}

/// Per-run identity, permissions, clock and data.
#[derive(Clone)]
pub struct RunContext {
    /// The user this run acts as.
    pub user: String,
    pub may_send: bool,
    /// The user's stores (`contacts`, `messages`) this run may `lookup`.
    pub readable: Vec<String>,
    pub timeout: Duration,
    /// The project timezone and the run's clock.
    pub tz: Tz,
    pub now: DateTime<Utc>,
    /// The project's tables.
    pub tables: Arc<HashMap<String, Table>>,
    pub host: Arc<dyn Host>,
    /// The project's `fallback_template` (a `send` map), used for free-form messages to a
    /// contact outside the 24-hour window.
    pub fallback_template: Option<Value>,
    /// The project folder, whose files `send(#{file})` may send; `None`: no files.
    pub dir: Option<std::path::PathBuf>,
    /// What the run's trigger names the effects it stores with (`ev<event id>` for an event):
    /// with it, the id `send` and `reply` return is the one the message is stored and exported
    /// under (see [`ScriptRun::ids`]); without it (a dry run), `local:<n>`.
    pub key_prefix: Option<String>,
}

impl RunContext {
    /// A context with no tables, an empty host and the real clock (tests, `if:` checks).
    pub fn simple(user: &str, may_send: bool, timeout: Duration, tz: Tz) -> Self {
        RunContext {
            user: user.to_string(),
            may_send,
            readable: crate::config::STORES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout,
            tz,
            now: Utc::now(),
            tables: Arc::new(HashMap::new()),
            host: Arc::new(EmptyHost),
            fallback_template: None,
            dir: None,
            key_prefix: None,
        }
    }
}

pub(crate) struct Current {
    pub ctx: RunContext,
    pub deadline: Instant,
    pub actions: Vec<Action>,
    pub logs: Vec<String>,
    /// What the run's log holds and what it left out (see [`api::push_log`]).
    pub log_size: api::LogSize,
    /// This run's own `set_state` writes, read back by `state` before they are committed.
    pub state_writes: BTreeMap<String, Value>,
    /// Functions of the running script taking one argument: what `schedule` may call.
    pub callable: Vec<String>,
    /// The triggering message's sender and WhatsApp timestamp: they are inside the window.
    pub inbound: Option<(String, i64)>,
    /// What the ids of this run's sends start with ([`ScriptRun::ids`]).
    pub send_ids: Option<String>,
    /// The project and rule the run's log lines name in the gate's log ([`ScriptRun::log_as`]).
    pub log_as: Option<(String, String)>,
    /// The messages the run queued so far, and how many it may (0: no limit).
    pub sends: usize,
    pub max_sends: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

pub(crate) type FnResult<T> = Result<T, Box<EvalAltResult>>;

pub(crate) fn with_current<T>(f: impl FnOnce(&mut Current) -> FnResult<T>) -> FnResult<T> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(cur) => f(cur),
        None => Err("this function can only be called while a rule runs".into()),
    })
}

/// One run of a rule's script, for [`ScriptEngine::run_script`].
pub struct ScriptRun<'a> {
    /// The script, or with `imports_first` its functions and top-level imports
    /// ([`ScriptEngine::compile_calls`]).
    pub ast: &'a AST,
    /// The function to call with the input; `None`: the script's body, with `event` in scope.
    pub call: Option<&'a str>,
    pub imports_first: bool,
    /// The script as error messages name it.
    pub file: &'a str,
    /// The ids of the run's sends are this followed by their ordinal (`ev12/olga/tour/greet/0`):
    /// the idempotency keys their outbox rows get. `None`: `local:<n>`.
    pub ids: Option<String>,
    /// The project and rule this run is of: its log lines also go to the gate's log (tracing,
    /// target `wagate::script`) naming them and the user, within the run's log bounds.
    /// `None`: they stay in the run's trace only (a dry run prints them).
    pub log_as: Option<(&'a str, &'a str)>,
}

/// The sandboxed engine shared by every rule of the gate.
pub struct ScriptEngine {
    engine: Engine,
    limits: ScriptLimits,
}

fn harden(engine: &mut Engine, limits: &ScriptLimits) {
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(64);
    engine.disable_symbol("eval");
}

/// Resolves `import "x"` only to `x.rhai` inside one project folder.
struct ProjectResolver {
    dir: PathBuf,
    inner: rhai::module_resolvers::FileModuleResolver,
}

impl rhai::ModuleResolver for ProjectResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<rhai::Shared<rhai::Module>, Box<EvalAltResult>> {
        let p = Path::new(path);
        let inside = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                format!("{path} (imports may only name modules inside the project folder)"),
                pos,
            )));
        }
        // Imports resolve against the project folder, never against another module's place.
        let _ = source;
        self.inner
            .resolve(engine, None, &self.dir.join(p).to_string_lossy(), pos)
    }
}

impl ScriptEngine {
    /// An engine with the gate's limits (depths capped to what a run's stack allows: see
    /// [`stack`]) and the script API registered.
    pub fn new(limits: &ScriptLimits) -> Self {
        let limits = &stack::capped(limits);
        let mut engine = Engine::new();
        harden(&mut engine, limits);
        // Runs never resolve imports: ASTs arrive with their modules already embedded.
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.on_progress(|ops| {
            // At every step: a few nested calls may take more stack than there is.
            if let Some(stop) = stack::too_deep() {
                return Some(stop);
            }
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
        engine.on_print(api::push_log);
        engine.on_debug(|s, _, _| api::push_log(s));
        api::register(&mut engine);
        ScriptEngine {
            engine,
            limits: limits.clone(),
        }
    }

    /// The wall-clock limit of one run.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms)
    }

    /// The engine itself, for editor definitions.
    pub fn rhai(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a script file of the project folder `dir`; `import` may load modules of that
    /// folder only. A syntax error is located in `shown`.
    pub fn compile_file(&self, path: &Path, shown: &Path, dir: &Path) -> Result<AST, Diagnostic> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::file(shown, format!("cannot read {}: {e}", shown.display()))
        })?;
        let ast = self.engine.compile(&src).map_err(|e| {
            let pos = e.position();
            Diagnostic::at(
                shown,
                &src,
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
                e.err_type().to_string(),
            )
        })?;
        if !has_imports(&src) {
            return Ok(ast);
        }
        // Embedding a module runs its top level.
        let _stack = stack::Guard::enter();
        self.folder_engine(dir)
            .compile_into_self_contained(&Scope::new(), &src)
            .map_err(|e| {
                let pos = e.position();
                Diagnostic::at(
                    shown,
                    &src,
                    pos.line().unwrap_or(0),
                    pos.position().unwrap_or(0),
                    e.to_string(),
                )
            })
    }

    /// A compile-time engine for the project folder `dir`: it embeds the modules a script
    /// imports into the AST.
    fn folder_engine(&self, dir: &Path) -> Engine {
        let mut ce = Engine::new();
        harden(&mut ce, &self.limits);
        ce.on_progress(|_| stack::too_deep());
        api::register(&mut ce);
        let mut inner = rhai::module_resolvers::FileModuleResolver::new_with_path(dir);
        inner.enable_cache(false);
        ce.set_module_resolver(ProjectResolver {
            dir: dir.to_path_buf(),
            inner,
        });
        ce
    }

    /// For calling the functions of a script (`call:`, `schedule()`), which runs a function
    /// without the script's top level: its functions, with its top-level `import`s as the only
    /// statements, so that the imports can run first and the functions see the modules (see
    /// [`ScriptEngine::run_with_imports`]). `None` when the script has no top-level `import`.
    /// `full` is the script as [`ScriptEngine::compile_file`] compiled it.
    pub fn compile_calls(&self, path: &Path, full: &AST, dir: &Path) -> Option<AST> {
        let src = std::fs::read_to_string(path).ok()?;
        let top_level = |l: &str| l.starts_with("import ");
        if !src.lines().any(top_level) {
            return None;
        }
        // The import lines in their places, every other line blank.
        let imports: Vec<&str> = src
            .lines()
            .map(|l| if top_level(l) { l } else { "" })
            .collect();
        let _stack = stack::Guard::enter();
        let imports = self
            .folder_engine(dir)
            .compile_into_self_contained(&Scope::new(), imports.join("\n"))
            .ok()?;
        Some(imports.merge(&full.clone_functions_only()))
    }

    /// Compiles an `if:` expression written at `pos` (line, col of its value) in `file`. It
    /// keeps the file's text, so that errors at run time are placed in `file` too
    /// ([`ScriptEngine::eval_condition`]).
    pub fn compile_condition(
        &self,
        expr: &str,
        file: &Path,
        file_src: &str,
        pos: (usize, usize),
    ) -> Result<Condition, Diagnostic> {
        let mut ast = self.engine.compile_expression(expr).map_err(|e| {
            let (line, col) = place_in_yaml(file_src, pos, e.position());
            Diagnostic::at(
                file,
                file_src,
                line,
                col,
                format!("in `if:`: {}", e.err_type()),
            )
        })?;
        let (line, col) = place_in_yaml(file_src, pos, Position::new(1, 1));
        ast.set_source(format!("{}:{line}:{col}", file.display()));
        Ok(Condition {
            ast,
            src: file_src.into(),
            pos,
        })
    }

    /// Evaluates an `if:` expression with `event` in scope. Not a bool → error. An error is
    /// placed in the file the expression was compiled from, when it is known.
    pub fn eval_condition(
        &self,
        cond: &Condition,
        event: &Value,
        ctx: &RunContext,
    ) -> Result<bool, ConditionError> {
        let ast = &cond.ast;
        let failed = |pos: Position, message: String| {
            let (line, col) = if pos.is_none() || cond.pos.0 == 0 {
                (0, 0)
            } else {
                place_in_yaml(&cond.src, cond.pos, pos)
            };
            ConditionError { line, col, message }
        };
        let event = rhai::serde::to_dynamic(event)
            .map_err(|e| failed(Position::NONE, format!("the event cannot be given: {e}")))?;
        let outcome = self.in_run(ctx, ast, |engine| {
            let mut scope = Scope::new();
            scope.push_constant("event", event);
            engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        });
        let v = outcome.0.map_err(|e| {
            let (pos, msg) = innermost(&e);
            failed(pos, msg)
        })?;
        v.as_bool().map_err(|t| {
            let msg = format!("it must give true or false; it gave a value of type {t}");
            failed(Position::new(1, 1), msg)
        })
    }

    /// Runs a rule: the function `call` with `arg`, or the script's body with `arg` in scope as
    /// `event`. `file` names the script in error messages.
    pub fn run(
        &self,
        ast: &AST,
        call: Option<&str>,
        arg: &Value,
        ctx: &RunContext,
        file: &str,
    ) -> RunOutcome {
        let run = ScriptRun {
            ast,
            call,
            imports_first: false,
            file,
            ids: None,
            log_as: None,
        };
        self.run_script(run, arg, ctx)
    }

    /// Runs the function `call` of a script compiled with [`ScriptEngine::compile_calls`]:
    /// the script's imports first, then the function, which sees the imported modules.
    pub fn run_with_imports(
        &self,
        calls: &AST,
        call: &str,
        arg: &Value,
        ctx: &RunContext,
        file: &str,
    ) -> RunOutcome {
        let run = ScriptRun {
            ast: calls,
            call: Some(call),
            imports_first: true,
            file,
            ids: None,
            log_as: None,
        };
        self.run_script(run, arg, ctx)
    }

    /// Runs a rule's script with `arg` ([`ScriptRun`] says which part and how).
    pub fn run_script(&self, run: ScriptRun<'_>, arg: &Value, ctx: &RunContext) -> RunOutcome {
        let ScriptRun {
            ast,
            call,
            imports_first,
            file,
            ids,
            log_as,
        } = run;
        let inbound = inbound_of(arg);
        let arg = match rhai::serde::to_dynamic(arg) {
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
        let log_as = log_as.map(|(p, r)| (p.to_string(), r.to_string()));
        let extra = RunExtra {
            inbound,
            send_ids: ids,
            log_as,
        };
        let (result, mut outcome) = self.in_run_with(ctx, ast, extra, |engine| {
            let mut scope = Scope::new();
            match call {
                Some(name) => {
                    let opts = CallFnOptions::new().eval_ast(imports_first);
                    engine.call_fn_with_options::<Dynamic>(opts, &mut scope, ast, name, (arg,))
                }
                None => {
                    scope.push("event", arg);
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

    fn in_run<T>(
        &self,
        ctx: &RunContext,
        ast: &AST,
        f: impl FnOnce(&Engine) -> T,
    ) -> (T, RunOutcome) {
        self.in_run_with(ctx, ast, RunExtra::default(), f)
    }

    /// Runs `f` with a fresh run context installed on this thread, and takes it back after.
    fn in_run_with<T>(
        &self,
        ctx: &RunContext,
        ast: &AST,
        extra: RunExtra,
        f: impl FnOnce(&Engine) -> T,
    ) -> (T, RunOutcome) {
        let RunExtra {
            inbound,
            send_ids,
            log_as,
        } = extra;
        let callable = ast
            .iter_functions()
            .filter(|f| f.params.len() == 1)
            .map(|f| f.name.to_string())
            .collect();
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                ctx: ctx.clone(),
                deadline: Instant::now() + ctx.timeout,
                actions: Vec::new(),
                logs: Vec::new(),
                log_size: api::LogSize::default(),
                state_writes: BTreeMap::new(),
                callable,
                inbound,
                send_ids,
                log_as,
                sends: 0,
                max_sends: self.limits.max_sends,
            })
        });
        // Clear the context even if the engine panics, so the thread is reusable.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                CURRENT.with(|c| c.borrow_mut().take());
            }
        }
        let reset = Reset;
        let stack = stack::Guard::enter();
        let result = f(&self.engine);
        drop(stack);
        let cur = CURRENT.with(|c| c.borrow_mut().take());
        drop(reset);
        let outcome = cur
            .map(|mut c| {
                api::close_log(&mut c);
                RunOutcome {
                    actions: c.actions,
                    logs: c.logs,
                    error: None,
                }
            })
            .unwrap_or_default();
        (result, outcome)
    }
}

/// What a run has besides its context: those of [`Current`].
#[derive(Default)]
struct RunExtra {
    inbound: Option<(String, i64)>,
    send_ids: Option<String>,
    log_as: Option<(String, String)>,
}

/// The sender and WhatsApp timestamp of a message event.
fn inbound_of(event: &Value) -> Option<(String, i64)> {
    if event.get("kind").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let from = event.get("from").and_then(Value::as_str)?;
    let ts = event.get("timestamp").and_then(Value::as_i64)?;
    Some((crate::domain::window::contact_key(from), ts))
}

/// Whether a script has an `import` statement (a cheap look before the slower path).
fn has_imports(src: &str) -> bool {
    src.lines().any(|l| l.trim_start().starts_with("import "))
}

/// `file:line:col: message`, with the innermost position (inside the called function).
fn describe(err: &EvalAltResult, file: &str) -> String {
    let (pos, msg) = innermost(err);
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: {msg}"),
        (Some(l), None) => format!("{file}:{l}: {msg}"),
        _ => format!("{file}: {msg}"),
    }
}

/// An error's innermost position (inside the called function) and its message, without it.
fn innermost(err: &EvalAltResult) -> (Position, String) {
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
    (pos, msg)
}

/// Maps a position inside an `if:` expression to project.yaml, across the lines of a
/// multi-line value (`if: >-`).
fn place_in_yaml(src: &str, at: (usize, usize), inner: Position) -> (usize, usize) {
    let inner = (inner.line().unwrap_or(1), inner.position().unwrap_or(1));
    crate::config::diag::place_in_scalar(src, at, inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn limits() -> ScriptLimits {
        ScriptLimits {
            timeout_ms: 200,
            max_string_size: 1000,
            max_array_size: 100,
            max_call_depth: 16,
            ..ScriptLimits::default()
        }
    }

    fn engine() -> ScriptEngine {
        ScriptEngine::new(&limits())
    }

    fn ctx() -> RunContext {
        let mut c = RunContext::simple(
            "azarya",
            true,
            Duration::from_millis(200),
            "Europe/Paris".parse().unwrap(),
        );
        // Friday 2026-04-24 16:30 UTC = 18:30 in Paris.
        c.now = Utc.with_ymd_and_hms(2026, 4, 24, 16, 30, 0).unwrap();
        let p = serde_json::from_value(json!([
            {"phone": "+33611", "name": "Ann", "lang": "fr", "departure": "01.05.2026"},
            {"phone": "+33622", "name": "Bob", "lang": "en", "departure": "2026-05-02"}
        ]))
        .unwrap();
        let mut tables = HashMap::new();
        tables.insert("participants".to_string(), Table::from_rows(p, None));
        c.tables = Arc::new(tables);
        c
    }

    fn event() -> Value {
        // Twenty minutes before the run's clock: inside the 24-hour window.
        json!({"kind": "message", "id": "wamid.1", "from": "33600", "text": "Hi", "type": "text", "timestamp": 1777045800})
    }

    fn run(src: &str) -> RunOutcome {
        let e = engine();
        let ast = e.engine.compile(src).unwrap();
        e.run(&ast, None, &event(), &ctx(), "t.rhai")
    }

    fn ok(src: &str) -> RunOutcome {
        let out = run(src);
        assert_eq!(out.error, None, "{src}");
        out
    }

    fn logs(src: &str) -> Vec<String> {
        ok(src).logs
    }

    #[test]
    fn errors_in_values_are_told_in_script_words_and_located() {
        // A Time inside a map or array: where it is and what to write instead, no Rust names.
        for (src, at) in [
            ("let a = 1;\n  set_state(\"t\", #{ at: now() });", "`at`"),
            ("let a = 1;\n  set_state(\"t\", [1, now()]);", "`[1]`"),
        ] {
            let err = run(src).error.unwrap();
            assert_eq!(
                err,
                format!(
                    "t.rhai:2:3: {at} is a Time, which cannot be stored or sent inside a map or array: write t.to_string() (the instant) or t.format(\"%d.%m.%Y %H:%M\") (a text)"
                )
            );
        }
        let err = run("send(\"+15550001111\", #{ template: \"t\", params: [Fn(\"f\")] })")
            .error
            .unwrap();
        assert!(err.contains("`params[0]` is a Fn"), "{err}");
        assert!(!err.contains("::"), "{err}");
        // A lookup result over the size limit: at the call, also inside a `call:` function.
        let big = "x".repeat(2000);
        let mut c = ctx();
        let rows = serde_json::from_value(json!([{"phone": "+1", "note": big}])).unwrap();
        let mut tables = HashMap::new();
        tables.insert("notes".to_string(), Table::from_rows(rows, None));
        c.tables = Arc::new(tables);
        let e = engine();
        let why = "lookup(\"notes\"): the result is too large for a script: a text in it is longer than max_string_size (`scripts:` in gate.yaml) allows; look up fewer or smaller rows";
        let ast = e
            .engine
            .compile("let a = 1;\nlet r = lookup(\"notes\", \"+1\");")
            .unwrap();
        let err = e.run(&ast, None, &event(), &c, "t.rhai").error.unwrap();
        assert_eq!(err, format!("t.rhai:2:9: {why}"));
        let ast = e
            .engine
            .compile("fn start(event) {\n    let r = lookup(\"notes\", #{ phone: \"+1\" });\n}")
            .unwrap();
        let err = e
            .run(&ast, Some("start"), &event(), &c, "t.rhai")
            .error
            .unwrap();
        assert_eq!(err, format!("t.rhai:2:13: {why}"));
    }

    #[test]
    fn reply_records_a_quoted_send() {
        let out = ok(r#"reply(event, "Hello " + event.text); log("done"); print("p");"#);
        assert_eq!(out.logs, vec!["done", "p"]);
        let Action::Send {
            recipient, body, ..
        } = &out.actions[0]
        else {
            panic!()
        };
        assert_eq!(recipient, "33600");
        assert_eq!(body["text"]["body"], "Hello Hi");
        assert_eq!(body["context"]["message_id"], "wamid.1");
        let out = ok(
            r#"let id = send("+33612345678", #{ template: "tour_reminder", language: "fr", params: ["Ann"] }); log(id);"#,
        );
        assert_eq!(out.logs, vec!["local:0"]);
        let Action::Send { msg_type, .. } = &out.actions[0] else {
            panic!()
        };
        assert_eq!(msg_type, "template");
        // A run whose effects are stored returns the keys they are stored under.
        let e = engine();
        let ast = e
            .engine
            .compile(r#"log(reply(event, "a")); log(send(#{ group: "G1", template: "t" }));"#)
            .unwrap();
        let run = ScriptRun {
            ast: &ast,
            call: None,
            imports_first: false,
            file: "k.rhai",
            ids: Some("ev7/azarya/p/r/".into()),
            log_as: None,
        };
        let out = e.run_script(run, &event(), &ctx());
        assert_eq!(out.logs, vec!["ev7/azarya/p/r/0", "ev7/azarya/p/r/1"]);
    }

    #[test]
    fn a_runs_log_keeps_short_lines_whole_and_is_bounded() {
        let e = ScriptEngine::new(&ScriptLimits {
            timeout_ms: 2000,
            ..ScriptLimits::default()
        });
        let ast = e
            .engine
            .compile("let s = \"\"; s.pad(3000, 'é'); log(\"first\"); for i in 0..100 { log(s) }")
            .unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "l.rhai");
        assert_eq!(out.error, None);
        assert_eq!(out.logs[0], "first");
        // 6000 bytes of two-byte characters: cut at a character boundary.
        assert!(
            out.logs[1].ends_with("… [3952 more bytes]"),
            "{}",
            out.logs[1]
        );
        let kept: usize = out.logs.iter().map(String::len).sum();
        assert!(kept <= api::LOG_RUN_MAX + 100, "{kept}");
        let dropped = 101 - (out.logs.len() - 1);
        assert_eq!(
            out.logs.last().unwrap(),
            &format!(
                "… log truncated: {} more bytes in {dropped} lines (a run keeps 64 KiB of log)",
                dropped * 6000
            )
        );
    }

    #[test]
    fn free_form_outside_the_window_is_refused_or_replaced_by_the_fallback_template() {
        let err = run(r#"send("+15550001111", "hello")"#).error.unwrap();
        assert!(err.contains("has never written to this number"), "{err}");
        assert!(
            err.contains("only an approved template can reach them"),
            "{err}"
        );
        // Templates always go; the event's own sender is inside the window.
        ok(r#"send("+15550001111", #{ template: "hello_world" }); reply(event, "hi");"#);
        let mut c = ctx();
        c.fallback_template =
            Some(json!({"template": "we_miss_you", "language": "fr", "params": ["Ann"]}));
        let e = engine();
        let ast = e
            .engine
            .compile(r#"send("+15550001111", "hello")"#)
            .unwrap();
        let out = e.run(&ast, None, &event(), &c, "f.rhai");
        assert_eq!(out.error, None);
        let Action::Send { msg_type, body, .. } = &out.actions[0] else {
            panic!()
        };
        assert_eq!(
            (msg_type.as_str(), &body["template"]["name"]),
            ("template", &json!("we_miss_you"))
        );
        assert!(
            out.logs[0].contains("outside the 24-hour window"),
            "{:?}",
            out.logs
        );
        // A message older than 24 hours does not open the window.
        let mut old = event();
        old["timestamp"] = json!(1777045800 - 25 * 3600);
        let ast = e.engine.compile("reply(event, \"late\")").unwrap();
        let err = e.run(&ast, None, &old, &ctx(), "o.rhai").error.unwrap();
        assert!(err.contains("last wrote 25h ago"), "{err}");
    }

    #[test]
    fn window_open_says_whether_a_free_form_message_would_go() {
        // The event's sender wrote twenty minutes ago; +15550001111 never wrote.
        let l = logs(r#"log(`${window_open(event.from)} ${window_open("+15550001111")}`);"#);
        assert_eq!(l, vec!["true false"]);
        let e = engine();
        let ast = e
            .engine
            .compile("log(`${window_open(\"33600\")}`)")
            .unwrap();
        let mut old = event();
        old["timestamp"] = json!(1777045800 - 25 * 3600);
        let out = e.run(&ast, None, &old, &ctx(), "w.rhai");
        assert_eq!((out.error, out.logs), (None, vec!["false".to_string()]));
    }

    #[test]
    fn state_reads_its_own_writes_and_records_them() {
        let out = ok(r#"
            log(`${state("n") == ()}`);
            set_state("n", 2);
            set_state("who", #{ name: "Ann", at: now().to_string() });
            log(`${state("n") + 1}`);
            set_state("n", ());
            log(`${state("n") == ()}`);
        "#);
        assert_eq!(out.logs, vec!["true", "3", "true"]);
        assert_eq!(out.actions.len(), 3);
        assert_eq!(
            out.actions[0],
            Action::SetState {
                key: "n".into(),
                value: json!(2)
            }
        );
        assert_eq!(
            out.actions[2],
            Action::SetState {
                key: "n".into(),
                value: Value::Null
            }
        );
        assert!(
            run(r#"set_state("", 1)"#)
                .error
                .unwrap()
                .contains("key is empty")
        );
        assert!(
            run(r#"set_state("t", #{ at: now() })"#)
                .error
                .unwrap()
                .contains("to_string")
        );
    }

    #[test]
    fn lookup_by_key_and_by_fields() {
        let l = logs(
            r#"
            let p = lookup("participants", "+33622");
            log(p.name);
            log(`${lookup("participants", "+1") == ()}`);
            let fr = lookup("participants", #{ lang: "fr" });
            log(`${fr.len()} ${fr[0].name}`);
            log(`${lookup("contacts", "33600") == ()} ${lookup("messages", #{ contact: "1" }).len()}`);
        "#,
        );
        assert_eq!(l, vec!["Bob", "true", "1 Ann", "true 0"]);
        let err = run(r#"lookup("hotels", "x")"#).error.unwrap();
        assert!(
            err.contains("no table `hotels`; this project has participants, contacts, messages"),
            "{err}"
        );
    }

    #[test]
    fn time_helpers_work_in_the_project_timezone() {
        let l = logs(
            r#"
            let t = now();
            log(t.format("%Y-%m-%d %H:%M"));
            log(`${t.hour} ${t.weekday}`);
            let dep = date(lookup("participants", "+33611").departure);
            log(dep.format("%A %d %B"));
            log(`${today().days_until(dep)}`);
            log(`${dep.add_days(-1).add_hours(18) > t}`);
            log(time("2026-03-29T02:30").format("%H:%M %z"));
            log(`${time("2026-05-01T08:00") - time("2026-05-01T07:00")}`);
            log(from_unix(0).date_text());
        "#,
        );
        assert_eq!(
            l,
            vec![
                "2026-04-24 18:30",
                "18 5",
                "Friday 01 May",
                "7",
                "true",
                "03:00 +0200",
                "3600",
                "1970-01-01"
            ]
        );
        assert!(
            run(r#"date("next tuesday")"#)
                .error
                .unwrap()
                .contains("is not a date")
        );
    }

    #[test]
    fn schedule_takes_a_time_a_text_or_seconds() {
        let e = engine();
        let ast = e
            .engine
            .compile(
                r#"
                fn remind(arg) { log(arg.name) }
                fn plan(ev) {
                    schedule(now().add_days(1), "remind", #{ name: "Ann" });
                    schedule("2026-05-01T08:00", "remind", ());
                    schedule(90, "remind", 1);
                }"#,
            )
            .unwrap();
        let out = e.run(&ast, Some("plan"), &event(), &ctx(), "s.rhai");
        assert_eq!(out.error, None);
        let ats: Vec<String> = out
            .actions
            .iter()
            .map(|a| match a {
                Action::Schedule { at, .. } => at.to_rfc3339(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            ats,
            vec![
                "2026-04-25T16:30:00+00:00",
                "2026-05-01T06:00:00+00:00",
                "2026-04-24T16:31:30+00:00"
            ]
        );
        let ast = e.engine.compile(r#"schedule(10, "missing", 1)"#).unwrap();
        let err = e.run(&ast, None, &event(), &ctx(), "s.rhai").error.unwrap();
        assert!(err.contains("no function `missing(arg)`"), "{err}");
        let ast = e
            .engine
            .compile(r#"fn f(a) {} schedule(-1, "f", 1)"#)
            .unwrap();
        assert!(
            e.run(&ast, None, &event(), &ctx(), "s.rhai")
                .error
                .unwrap()
                .contains("negative")
        );
    }

    #[test]
    fn endless_loop_is_cut_off_with_its_position() {
        let out = run("reply(event, \"x\");\nloop { }");
        let err = out.error.unwrap();
        assert!(err.starts_with("t.rhai:2:"), "{err}");
        assert!(out.actions.is_empty(), "a failed run's actions are dropped");
    }

    #[test]
    fn each_sandbox_limit_fails_the_run() {
        let err = run(r#"let s = "x"; loop { s += s; }"#).error.unwrap();
        assert!(err.contains("Length of string"), "{err}");
        let err = run("let a = []; loop { a.push(1); }").error.unwrap();
        assert!(err.contains("Size of array"), "{err}");
        let err = run("fn f(n) { f(n + 1) } f(0)").error.unwrap();
        assert!(
            err.contains("Stack overflow") || err.contains("call stack"),
            "{err}"
        );
        let err = run("let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }")
            .error
            .unwrap();
        assert!(
            err.contains("Size of object map") || err.contains("limit"),
            "{err}"
        );
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(
            engine().engine.compile(&deep).is_err(),
            "expression depth is limited"
        );
        let e = ScriptEngine::new(&ScriptLimits {
            max_operations: 1000,
            ..limits()
        });
        let ast = e
            .engine
            .compile("let i = 0; while i < 100000 { i += 1; }")
            .unwrap();
        let err = e.run(&ast, None, &event(), &ctx(), "o.rhai").error.unwrap();
        assert!(err.contains("more operations than its limit"), "{err}");
    }

    #[test]
    fn a_script_too_deep_for_the_stack_fails_at_run_and_at_compile() {
        let e = ScriptEngine::new(&ScriptLimits {
            max_call_depth: 100_000,
            max_expr_depth: 100_000,
            ..limits()
        });
        assert_eq!(
            (e.limits.max_call_depth, e.limits.max_expr_depth),
            (MAX_CALL_DEPTH, MAX_EXPR_DEPTH)
        );
        // Each level nests calls as arguments: deep on the stack long before the call depth.
        let nested = format!("{}f(n - 1){}", "id(".repeat(24), ")".repeat(24));
        let src =
            format!("fn id(x) {{ x }}\nfn f(n) {{ if n <= 0 {{ return 0; }} {nested} }}\nf(120)");
        let ast = e.engine.compile(&src).unwrap();
        let err = e.run(&ast, None, &event(), &ctx(), "d.rhai").error.unwrap();
        assert!(
            err.contains("the run went too deep") || err.contains("Stack overflow"),
            "{err}"
        );
        // A module's top level runs when a script that imports it compiles.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rec.rhai"), "fn f(n) { f(n + 1) }\nf(0);\n").unwrap();
        std::fs::write(dir.path().join("main.rhai"), "import \"rec\" as r;\n").unwrap();
        let d = e
            .compile_file(
                &dir.path().join("main.rhai"),
                Path::new("main.rhai"),
                dir.path(),
            )
            .unwrap_err();
        assert!(
            d.message.contains("terminated") || d.message.contains("Stack overflow"),
            "{d}"
        );
    }

    #[test]
    fn a_number_is_a_recipient_as_its_digits() {
        // The event's sender (33600) wrote twenty minutes ago: free-form reaches them.
        let out = ok(r#"
            send(33600, "hi");
            send(33612345678, #{ template: "tour_reminder", language: "fr" });
            log(`${window_open(33600)} ${window_open(33612345678)}`);
        "#);
        assert_eq!(out.logs, vec!["true false"]);
        let sent: Vec<(&str, &Value)> = out
            .actions
            .iter()
            .map(|a| match a {
                Action::Send {
                    recipient, body, ..
                } => (recipient.as_str(), &body["to"]),
                _ => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                ("33600", &json!("+33600")),
                ("33612345678", &json!("+33612345678"))
            ]
        );
        for (src, named) in [
            (r#"send(0, "x")"#, "the recipient 0 is not a phone number"),
            (
                r#"send(-33612345678, #{ template: "t" })"#,
                "the recipient -33612345678 is not a phone number",
            ),
            (
                "window_open(-1)",
                "window_open: the recipient -1 is not a phone number",
            ),
            (
                r#"send(33612345678.0, "x")"#,
                "the recipient 33612345678.0 is a decimal number",
            ),
            (
                r#"send(3.3612e10, #{ template: "t" })"#,
                "is a decimal number, not a phone number",
            ),
        ] {
            let out = run(src);
            let err = out.error.unwrap_or_default();
            assert!(err.contains(named), "{src}: {err}");
            assert!(err.starts_with("t.rhai:1:"), "{src}: {err}");
        }
    }

    #[test]
    fn a_run_over_its_sends_limit_fails_and_queues_none() {
        let e = ScriptEngine::new(&ScriptLimits {
            max_sends: 3,
            ..limits()
        });
        let src = |n: usize| {
            format!(
                "for i in 0..{n} {{\n  send(33611110000 + i, #{{ template: \"t\" }});\n}}\nset_state(\"done\", true);"
            )
        };
        let ast = e.engine.compile(src(3)).unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "m.rhai");
        assert_eq!((out.error, out.actions.len()), (None, 4), "at the limit");
        let ast = e.engine.compile(src(4)).unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "m.rhai");
        let err = out.error.unwrap_or_default();
        assert!(err.starts_with("m.rhai:2:3: send: "), "{err}");
        assert!(err.contains("more than 3 messages"), "{err}");
        assert!(err.contains("scripts.max_sends"), "{err}");
        assert!(out.actions.is_empty(), "{:?}", out.actions);
        // Every form counts (reply, group), and a script cannot catch the error and go on.
        let ast = e
            .engine
            .compile(
                r#"reply(event, "a"); send(#{ group: "G1", template: "t" }); send("33600", "b");
                try { send("33600", "c"); } catch (x) { log(`caught ${x}`); }
                set_state("after", true);"#,
            )
            .unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "c.rhai");
        assert!(
            out.error
                .as_deref()
                .unwrap_or_default()
                .contains("more than 3")
        );
        assert!(out.actions.is_empty() && out.logs.is_empty(), "{out:?}");
        // 0: no limit.
        let e = ScriptEngine::new(&ScriptLimits {
            max_sends: 0,
            ..limits()
        });
        let ast = e.engine.compile(src(50)).unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "m.rhai");
        assert_eq!((out.error, out.actions.len()), (None, 51));
        assert_eq!(ScriptLimits::default().max_sends, 1000);
    }

    /// A writer of tracing lines the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Runs `src` as rule `r` of project `p` (or as a dry run), and what it wrote to tracing.
    fn traced(src: &str, log_as: Option<(&str, &str)>) -> (RunOutcome, Vec<Value>) {
        let e = ScriptEngine::new(&ScriptLimits {
            timeout_ms: 20_000,
            max_operations: 0,
            ..limits()
        });
        let ast = e.engine.compile(src).unwrap();
        let buf = Captured::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .json()
            .flatten_event(true)
            .finish();
        let run = ScriptRun {
            ast: &ast,
            call: None,
            imports_first: false,
            file: "l.rhai",
            ids: None,
            log_as,
        };
        let mut c = ctx();
        c.timeout = Duration::from_secs(20);
        let out = tracing::subscriber::with_default(sub, || e.run_script(run, &event(), &c));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["target"] == api::LOG_TARGET)
            .collect();
        (out, lines)
    }

    #[test]
    fn a_runs_log_goes_to_tracing_with_its_names_and_bounded() {
        let (out, lines) = traced(
            "log(\"Ann booked\\nINFO forged\"); print(7);",
            Some(("tour", "greet")),
        );
        assert_eq!(out.logs, vec!["Ann booked\nINFO forged", "7"]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            (
                &lines[0]["level"],
                &lines[0]["user"],
                &lines[0]["project"],
                &lines[0]["rule"],
                &lines[0]["text"]
            ),
            (
                &json!("INFO"),
                &json!("azarya"),
                &json!("tour"),
                &json!("greet"),
                &json!("Ann booked\\nINFO forged")
            ),
            "one line, its newline escaped"
        );
        assert_eq!(lines[1]["text"], "7");
        // A dry run prints its log; nothing goes to tracing.
        let (out, lines) = traced("log(\"x\");", None);
        assert_eq!((out.logs.len(), lines.len()), (1, 0));
        // A flood: the trace keeps 64 KiB (an empty line costs its newline), tracing
        // LOG_TRACED_MAX lines and one saying how many it left out.
        let (out, lines) = traced("for i in 0..100000 { log(\"\"); }", Some(("tour", "greet")));
        assert_eq!(out.error, None);
        assert_eq!(out.logs.len(), api::LOG_RUN_MAX + 1, "{}", out.logs.len());
        assert_eq!(lines.len(), api::LOG_TRACED_MAX + 1);
        let last = lines.last().unwrap();
        assert_eq!(
            (&last["rule"], &last["left_out_lines"]),
            (&json!("greet"), &json!(100_000 - api::LOG_TRACED_MAX))
        );
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
        let err = run("send(\"15550001\", #{ nonsense: 1 })").error.unwrap();
        assert!(err.contains("cannot tell the message type"), "{err}");
        let err = run("reply(#{ kind: \"status\" }, \"x\")").error.unwrap();
        assert!(err.contains("no `from`"), "{err}");
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
        let err = e.eval_condition(&ast, &event(), &ctx()).unwrap_err();
        assert!(err.message.contains("true or false"), "{err:?}");
        assert_eq!((err.line, err.col), (1, 6), "the start of the expression");
        // A runtime error is placed on the line of the `if:` and the column within it.
        let src = "rules:\n  - name: x\n    if: 'event.nosuch.len() > 0'\n";
        let ast = e
            .compile_condition("event.nosuch.len() > 0", Path::new("p.yaml"), src, (3, 9))
            .unwrap();
        let err = e.eval_condition(&ast, &event(), &ctx()).unwrap_err();
        assert_eq!((err.line, err.col), (3, 23), "{err:?}");
        assert!(err.message.contains("len"), "{err:?}");
        // In a folded `if: >-` the expression is one line; the error is placed on the line of
        // the file it was written on, as `check` places compile errors.
        let src = "rules:\n  - name: x\n    if: >-\n      event.text != \"\"\n      && event.nosuch.len() > 0\n";
        let cond = e
            .compile_condition(
                "event.text != \"\" && event.nosuch.len() > 0",
                Path::new("p.yaml"),
                src,
                (3, 9),
            )
            .unwrap();
        let err = e.eval_condition(&cond, &event(), &ctx()).unwrap_err();
        assert_eq!(err.line, 5, "{err:?}");
        assert!(err.col > 9 && err.col <= 32, "{err:?}");
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
    fn imports_only_from_the_project_folder_and_no_eval() {
        let e = engine();
        assert!(e.engine.compile("eval(\"1\")").is_err());
        let dir = tempfile::tempdir().unwrap();
        let proj = dir.path().join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        std::fs::write(proj.join("greet.rhai"), "fn hello(n) { `Hello ${n}` }").unwrap();
        std::fs::write(dir.path().join("secret.rhai"), "fn leak() { 1 }").unwrap();
        std::fs::write(
            proj.join("main.rhai"),
            "import \"greet\" as g;\nlog(g::hello(\"Ann\"));",
        )
        .unwrap();
        let ast = e
            .compile_file(&proj.join("main.rhai"), Path::new("main.rhai"), &proj)
            .unwrap();
        let out = e.run(&ast, None, &event(), &ctx(), "main.rhai");
        assert_eq!((out.error, out.logs), (None, vec!["Hello Ann".to_string()]));
        std::fs::write(
            proj.join("bad.rhai"),
            "import \"../secret\" as s;\ns::leak();",
        )
        .unwrap();
        let d = e
            .compile_file(&proj.join("bad.rhai"), Path::new("bad.rhai"), &proj)
            .unwrap_err();
        assert!(d.message.contains("inside the project folder"), "{d}");
        // A function called alone (`call:`, `schedule()`) sees the top-level imports too.
        std::fs::write(
            proj.join("calls.rhai"),
            "import \"greet\" as g;\nlog(\"top level\");\nfn on_message(event) {\n    log(g::hello(event.from));\n}\n",
        )
        .unwrap();
        let path = proj.join("calls.rhai");
        let full = e
            .compile_file(&path, Path::new("calls.rhai"), &proj)
            .unwrap();
        let calls = e.compile_calls(&path, &full, &proj).unwrap();
        let out = e.run_with_imports(&calls, "on_message", &event(), &ctx(), "calls.rhai");
        assert_eq!(
            (out.error, out.logs),
            (None, vec!["Hello 33600".to_string()]),
            "the imports ran, the rest of the top level did not"
        );
        let out = e.run(&full, Some("on_message"), &event(), &ctx(), "calls.rhai");
        assert!(out.error.is_some(), "without them the module is unknown");
        assert!(
            e.compile_calls(&proj.join("greet.rhai"), &ast, &proj)
                .is_none()
        );
        // An import that was not resolved at compile time cannot load anything at run time.
        let ast = e.engine.compile("import \"greet\" as g;").unwrap();
        assert!(
            e.run(&ast, None, &event(), &ctx(), "i.rhai")
                .error
                .is_some()
        );
    }
}
