//! Project folders compiled into an immutable [`RuleSet`], held by a [`RuleRegistry`] that
//! can swap a new set in atomically (hot reload builds on this). Compiling collects every
//! error of every project, located in its file.

use crate::config::{Diagnostic, Diagnostics, Home, RuleConfig, RunMode, Trigger};
use crate::domain::UserId;
use crate::script::{ScriptEngine, Table};
use arc_swap::ArcSwap;
use rhai::AST;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Condvar, Mutex};

/// Holds a rule to its run mode: how many runs at once, how many waiting.
pub struct RunGate {
    mode: RunMode,
    counts: Mutex<(usize, usize)>, // (running, waiting)
    freed: Condvar,
}

/// A run's place; dropping it frees the place.
pub struct RunPermit<'a>(&'a RunGate);

impl Drop for RunPermit<'_> {
    fn drop(&mut self) {
        let mut c = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.0 -= 1;
        self.0.freed.notify_all();
    }
}

impl RunGate {
    /// A gate for `mode`.
    pub fn new(mode: RunMode) -> Self {
        RunGate {
            mode,
            counts: Mutex::new((0, 0)),
            freed: Condvar::new(),
        }
    }

    /// Takes a place for a run, waiting if the mode says so; `Err` says why the run is
    /// skipped. Blocks the calling (blocking-pool) thread while it waits.
    pub fn enter(&self) -> Result<RunPermit<'_>, String> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let limit = match self.mode {
            RunMode::Single => {
                if c.0 > 0 {
                    return Err("skipped: a run of this rule is still going (mode: single)".into());
                }
                1
            }
            RunMode::Queued(max) => {
                if c.0 > 0 && c.1 >= max {
                    return Err(format!(
                        "skipped: {max} run(s) already waiting (mode: queued, max: {max})"
                    ));
                }
                1
            }
            RunMode::Parallel(max) => max,
        };
        c.1 += 1;
        while c.0 >= limit {
            c = self.freed.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        c.1 -= 1;
        c.0 += 1;
        Ok(RunPermit(self))
    }
}

/// One compiled rule.
pub struct Rule {
    pub name: String,
    pub trigger: Trigger,
    pub catch_up: crate::config::CatchUp,
    pub max_lateness: std::time::Duration,
    pub gate: RunGate,
    pub condition: Option<crate::script::Condition>,
    pub ast: Arc<AST>,
    /// For calling the script's functions when it has top-level `import`s: the functions with
    /// the imports as statements ([`ScriptEngine::compile_calls`]).
    pub calls: Option<Arc<AST>>,
    pub call: Option<String>,
    /// The script as users name it, e.g. `rules/azarya/replies/auto.rhai`.
    pub script_shown: String,
}

/// One compiled project folder; every rule acts as `user` only.
pub struct Project {
    pub user: UserId,
    pub name: String,
    pub timezone: chrono_tz::Tz,
    /// The project's lookup tables, loaded at compile time.
    pub tables: Arc<HashMap<String, Table>>,
    /// Sent instead of free-form messages outside the 24-hour window (a `send` map).
    pub fallback_template: Option<serde_json::Value>,
    /// The project folder: `send(#{file})` reads files from it, and only from it.
    pub dir: std::path::PathBuf,
    pub rules: Vec<Rule>,
    /// sha256 of project.yaml and its scripts, as they went live.
    pub hash: String,
    /// Whether a script of the project may call a function that reads at length or writes
    /// files (`lookup`, `export`): its rules always run on the blocking pool (see
    /// [`crate::dispatch::Placement`]).
    pub may_block: bool,
}

/// Every project of the gate, compiled.
#[derive(Default)]
pub struct RuleSet {
    pub projects: Vec<Project>,
}

impl RuleSet {
    /// Compiles every project of `home`; all errors at once.
    pub fn compile(home: &Home, engine: &ScriptEngine) -> Result<RuleSet, Diagnostics> {
        let mut errors = Vec::new();
        let mut projects = Vec::new();
        for p in &home.projects {
            let mut hasher = Sha256::new();
            hasher.update(p.source.as_bytes());
            let mut tables = HashMap::new();
            for (name, path) in &p.tables {
                let shown = home.gate.display_path(path);
                match crate::script::tables::load(path) {
                    Ok(t) => {
                        hasher.update(std::fs::read(path).unwrap_or_default());
                        tables.insert(name.clone(), t);
                    }
                    Err(e) => {
                        let src = std::fs::read_to_string(path).unwrap_or_default();
                        let msg = format!("table `{name}`: {}", e.message);
                        errors.push(Diagnostic::at(
                            &shown,
                            &src,
                            e.line,
                            if e.line > 0 { e.col.max(1) } else { 0 },
                            msg,
                        ));
                    }
                }
            }
            let mut rules = Vec::new();
            // Every table project.yaml names, also one whose file is missing (reported there).
            let written: Vec<String> =
                serde_yaml::from_str::<crate::config::ProjectFile>(&p.source)
                    .map(|f| f.tables.into_keys().collect())
                    .unwrap_or_default();
            let known: Vec<&str> = p
                .tables
                .keys()
                .chain(written.iter().filter(|w| !p.tables.contains_key(*w)))
                .map(String::as_str)
                .collect();
            for r in &p.rules {
                match compile_rule(home, engine, &p.file, &p.source, r, &mut hasher) {
                    Ok(rule) => {
                        for d in unknown_literal_tables(&rule, &r.script, &known) {
                            if !errors.contains(&d) {
                                errors.push(d);
                            }
                        }
                        rules.push(rule)
                    }
                    Err(mut d) => errors.append(&mut d),
                }
            }
            // Modules a script imports are part of the project's content too: without them an
            // edit of only a module would compile to the same hash and never go live.
            let modules = module_files(&p.dir);
            let may_block = p
                .rules
                .iter()
                .map(|r| &r.script)
                .chain(&modules)
                .any(|f| calls_blocking(&std::fs::read_to_string(f).unwrap_or_default()));
            for f in modules {
                hasher.update(
                    f.strip_prefix(&p.dir)
                        .unwrap_or(&f)
                        .to_string_lossy()
                        .as_bytes(),
                );
                hasher.update(std::fs::read(&f).unwrap_or_default());
            }
            projects.push(Project {
                user: p.user.clone(),
                name: p.name.clone(),
                timezone: p.timezone,
                tables: Arc::new(tables),
                fallback_template: p.fallback_template.clone(),
                dir: p.dir.clone(),
                rules,
                hash: hex::encode(hasher.finalize()),
                may_block,
            });
        }
        if errors.is_empty() {
            Ok(RuleSet { projects })
        } else {
            Err(Diagnostics(errors))
        }
    }

    /// The projects of one user.
    pub fn for_user<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Project> + 'a {
        self.projects
            .iter()
            .filter(move |p| p.user.as_str() == user)
    }

    /// Whether some rule of `user` starts on events of `kind`.
    pub fn wants(&self, user: &str, kind: &str) -> bool {
        self.for_user(user)
            .any(|p| p.rules.iter().any(|r| r.trigger.matches_kind(kind)))
    }

    /// Each project's content hash, by project name.
    pub fn project_hashes(&self) -> serde_json::Value {
        self.projects
            .iter()
            .map(|p| (p.name.clone(), serde_json::Value::from(p.hash.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// One hash of everything live: the projects' names and hashes.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.projects {
            h.update(p.name.as_bytes());
            h.update([0]);
            h.update(p.hash.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// How many rules in all.
    pub fn rule_count(&self) -> usize {
        self.projects.iter().map(|p| p.rules.len()).sum()
    }
}

/// `lookup("name", …)` (or `"name".lookup(…)`) calls of a rule's script whose table is a
/// string literal naming neither a table of the project nor a store: a typo found by `check`
/// rather than at the first run. A name computed at run time is checked when the call runs.
fn unknown_literal_tables(
    rule: &Rule,
    script: &std::path::Path,
    known: &[&str],
) -> Vec<Diagnostic> {
    use rhai::{ASTNode, Expr, Stmt};
    if rule.ast.iter_functions().any(|f| f.name == "lookup") {
        return Vec::new(); // the script's own `lookup`
    }
    let mut found: Vec<(String, rhai::Position)> = Vec::new();
    rule.ast.walk(&mut |path: &[ASTNode]| {
        let literal_table =
            match path.last() {
                Some(
                    ASTNode::Expr(Expr::FnCall(call, _)) | ASTNode::Stmt(Stmt::FnCall(call, _)),
                ) if call.name == "lookup" && call.namespace.is_empty() => call.args.first(),
                Some(ASTNode::Expr(Expr::Dot(x, ..))) => match &x.rhs {
                    Expr::MethodCall(call, _) if call.name == "lookup" => Some(&x.lhs),
                    _ => None,
                },
                _ => None,
            };
        if let Some(Expr::StringConstant(name, pos)) = literal_table
            && !known.contains(&name.as_str())
            && !crate::config::STORES.contains(&name.as_str())
        {
            found.push((name.to_string(), *pos));
        }
        true
    });
    if found.is_empty() {
        return Vec::new();
    }
    found.sort_by_key(|(_, pos)| (pos.line(), pos.position()));
    let src = std::fs::read_to_string(script).unwrap_or_default();
    let mut names: Vec<&str> = known.to_vec();
    names.extend(crate::config::STORES);
    found
        .into_iter()
        .map(|(name, pos)| {
            Diagnostic::at(
                std::path::Path::new(&rule.script_shown),
                &src,
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
                format!(
                    "lookup: no table `{name}`; this project has {}",
                    names.join(", ")
                ),
            )
        })
        .collect()
}

/// The `.rhai` files of a project folder and of its subfolders that are not projects
/// themselves (what `import` can load), in a stable order.
/// Whether a script's text names `lookup` or `export` (a call, or Rhai's own `export` of a
/// module: either way its rules are kept off the async workers).
fn calls_blocking(src: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    ["lookup", "export"].iter().any(|word| {
        src.match_indices(word).any(|(i, _)| {
            let before = src[..i].chars().next_back();
            let after = src[i + word.len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
    })
}

fn module_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if !path.join("project.yaml").is_file() && out.len() < 10_000 {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "rhai") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn compile_rule(
    home: &Home,
    engine: &ScriptEngine,
    project_file: &std::path::Path,
    project_src: &str,
    r: &RuleConfig,
    hasher: &mut Sha256,
) -> Result<Rule, Vec<Diagnostic>> {
    let shown = home.gate.display_path(&r.script);
    let dir = r.script.parent().unwrap_or(std::path::Path::new("."));
    // Both the `if:` and the script are compiled, so that one error does not hide the other.
    let condition = r
        .condition
        .as_ref()
        .map(|expr| engine.compile_condition(expr, project_file, project_src, r.condition_pos))
        .transpose();
    let ast = match (
        engine.compile_file(&r.script, &shown, dir),
        condition.as_ref(),
    ) {
        (Ok(ast), Ok(_)) => ast,
        (Ok(_), Err(c)) => return Err(vec![c.clone()]),
        (Err(s), Ok(_)) => return Err(vec![s]),
        (Err(s), Err(c)) => return Err(vec![c.clone(), s]),
    };
    let condition = condition.map_err(|c| vec![c])?;
    hasher.update(std::fs::read(&r.script).unwrap_or_default());
    if let Some(name) = &r.call
        && !ast
            .iter_functions()
            .any(|f| f.name == name.as_str() && f.params.len() == 1)
    {
        let (line, col) = r.call_pos;
        return Err(vec![Diagnostic::at(
            project_file,
            project_src,
            line,
            col,
            format!(
                "rule `{}`: {} has no function `{name}(event)`",
                r.name,
                shown.display()
            ),
        )]);
    }
    Ok(Rule {
        name: r.name.clone(),
        trigger: r.trigger.clone(),
        catch_up: r.catch_up,
        max_lateness: r.max_lateness,
        gate: RunGate::new(r.mode),
        condition,
        calls: engine.compile_calls(&r.script, &ast, dir).map(Arc::new),
        ast: Arc::new(ast),
        call: r.call.clone(),
        script_shown: shown.display().to_string(),
    })
}

/// The live rule set; readers take a snapshot, a reload swaps in a whole new set.
#[derive(Clone, Default)]
pub struct RuleRegistry {
    current: Arc<ArcSwap<RuleSet>>,
}

impl RuleRegistry {
    /// A registry serving `set`.
    pub fn new(set: RuleSet) -> Self {
        RuleRegistry {
            current: Arc::new(ArcSwap::from_pointee(set)),
        }
    }

    /// The current set; runs keep the snapshot they started with.
    pub fn snapshot(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Replaces the set atomically.
    pub fn swap(&self, set: RuleSet) {
        self.current.store(Arc::new(set));
    }
}

/// One line per `at:` rule of `projects` whose instant is already past at `now` (a year typo,
/// or a one-off that has fired): `warning: <file>:<line>:<col>: …`. A warning, not an error:
/// an `at:` that fired stays in its file legitimately.
pub fn past_ats(
    home: &Home,
    projects: &[&crate::config::ProjectConfig],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    use crate::domain::schedule::{at_instant, check_at};
    let mut out = Vec::new();
    for p in projects {
        for r in &p.rules {
            let Trigger::At(text) = &r.trigger else {
                continue;
            };
            let Ok(at) = check_at(text) else { continue };
            let instant = at_instant(&at, p.timezone);
            if instant >= now {
                continue;
            }
            // Where the time is written: the first line of project.yaml holding it after `at:`.
            let place = p
                .source
                .lines()
                .enumerate()
                .find_map(|(i, l)| {
                    let a = l.find("at:")?;
                    let c = l[a..].find(text.as_str())? + a;
                    Some(format!(":{}:{}", i + 1, c + 1))
                })
                .unwrap_or_default();
            let ago = crate::scheduler::humanize((now - instant).to_std().unwrap_or_default());
            out.push(format!(
                "warning: {}{place}: rule `{}`: `at: {text}` ({}) is {ago} in the past: it does not fire again (a typo in the year?)",
                home.gate.display_path(&p.file).display(),
                r.name,
                instant.with_timezone(&p.timezone).format("%Y-%m-%d %H:%M %Z"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::calls_blocking;

    #[test]
    fn a_script_that_names_lookup_or_export_may_block() {
        assert!(calls_blocking("let c = lookup(\"contacts\", event.from);"));
        assert!(calls_blocking("let r = export(#{since: 0});"));
        assert!(calls_blocking("let c = \"contacts\".lookup (k);"));
        assert!(calls_blocking("export const GREETING = \"hi\";"));
        assert!(!calls_blocking(
            "reply(event, \"You said: \" + event.text);"
        ));
        assert!(!calls_blocking(
            "let exported = 1; let lookups = 2; my_lookup(3);"
        ));
    }
}
