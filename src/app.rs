//! Wiring: loads a home (config, vault, rules), opens the store, and starts the HTTP server,
//! the dispatcher and the sender on a listener it is handed, under one cancellation token.

use crate::config::{Diagnostics, Home};
use crate::dispatch::Dispatcher;
use crate::graph::simulator::Simulator;
use crate::graph::{GraphClient, GraphError};
use crate::http::{AppParts, AppState, router};
use crate::media::MediaFetcher;
use crate::rules::{RuleRegistry, RuleSet};
use crate::scheduler::{Clock, Scheduler, SystemClock};
use crate::script::ScriptEngine;
use crate::sender::Sender;
use crate::sender::policy::Limits;
use crate::store::{Store, StoreError};
use crate::tokens::TokenKeeper;
use crate::users::Users;
use crate::vault::{Vault, VaultError};
use crate::watcher::Reloader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] Diagnostics),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Graph(#[from] Box<GraphError>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A home read and checked, ready to serve.
pub struct Loaded {
    pub home: Home,
    pub users: Users,
    pub rules: RuleSet,
    pub engine: Arc<ScriptEngine>,
    /// Users left out, and why (their credentials could not be read).
    pub skipped: Vec<(String, String)>,
    /// The vault, to write renewed tokens.
    pub vault: Arc<Vault>,
}

/// Reads the home named by `gate_yaml`: config, credentials, rules. A user whose files have
/// errors (their yaml, a project, a script that does not compile) or whose credentials cannot
/// be read is left out and listed in `skipped`; the others are served.
pub fn load(gate_yaml: &Path) -> Result<Loaded, AppError> {
    let (mut home, bad) = Home::load_serving(gate_yaml)?;
    let mut skipped: Vec<(String, String)> =
        bad.into_iter().map(|(u, d)| (u, d.to_string())).collect();
    let engine = Arc::new(ScriptEngine::new(&home.gate.file.scripts));
    let rules = match RuleSet::compile(&home, &engine) {
        Ok(r) => r,
        Err(d) => {
            // Scripts that do not compile take their project out too, and only it.
            let out = home.leave_out(d.0)?;
            skipped.extend(out.into_iter().map(|(n, ds)| (n, ds.to_string())));
            RuleSet::compile(&home, &engine)?
        }
    };
    let vault = Vault::open_from_env(&home.gate.identity_file)?;
    let (users, failed) = Users::load(&home, &vault);
    skipped.extend(failed.into_iter().map(|(u, e)| (u, e.to_string())));
    Ok(Loaded {
        home,
        users,
        rules,
        engine,
        skipped,
        vault: Arc::new(vault),
    })
}

/// Knobs for tests and benchmarks; production uses the defaults.
#[derive(Clone)]
pub struct Options {
    pub backoff_base: Duration,
    /// Watch the rules folder and reload on change.
    pub watch: bool,
    /// Quiet time after a change before a reload.
    pub reload_debounce: Duration,
    /// Run the scheduler loop (tests may drive `GateHandle::scheduler` by hand instead).
    pub scheduler: bool,
    /// The scheduler's clock.
    pub clock: Arc<dyn Clock>,
    /// Run the token keeper's loop (renewals, credentials changed on disk).
    pub tokens: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backoff_base: Duration::from_secs(1),
            watch: true,
            reload_debounce: Duration::from_millis(100),
            scheduler: true,
            clock: Arc::new(SystemClock),
            tokens: true,
        }
    }
}

/// A running gate.
pub struct GateHandle {
    pub addr: SocketAddr,
    pub store: Store,
    /// The built-in fake Cloud API, when the home asks for `graph.base_url: simulator`.
    pub simulator: Option<Simulator>,
    /// The live rule set.
    pub registry: RuleRegistry,
    /// Rule runs going on right now.
    pub runs_in_flight: Arc<AtomicUsize>,
    /// The scheduler's handles (its loop runs unless `Options::scheduler` is off).
    pub scheduler: Scheduler,
    /// The token keeper (its loop runs with the gate; tests may call it by hand).
    pub tokens: TokenKeeper,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl GateHandle {
    /// Stops accepting, lets work in hand finish (up to `timeout`), and returns.
    pub async fn shutdown(self, timeout: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timed out with work still running");
        }
    }

    /// Resolves when the gate has been asked to stop.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}

/// The admin token of /status and /metrics, read from the environment variable gate.yaml
/// names (`status.admin_token_env`); never logged.
fn admin_token(cfg: &crate::config::StatusSection) -> Option<Arc<crate::domain::Secret<String>>> {
    let name = cfg.admin_token_env.as_deref()?;
    match std::env::var(name) {
        Ok(t) if !t.trim().is_empty() => {
            Some(Arc::new(crate::domain::Secret::new(t.trim().to_string())))
        }
        _ => {
            tracing::warn!(
                env = name,
                "status.admin_token_env names a variable that is not set; /status and /metrics answer on loopback only"
            );
            None
        }
    }
}

/// Where inbound media goes: `media/` beside the database (`data/media/` by default).
pub fn media_dir(db_path: &Path) -> std::path::PathBuf {
    db_path.parent().unwrap_or(Path::new(".")).join("media")
}

/// Starts the gate on `listener`.
pub async fn start(
    loaded: Loaded,
    listener: TcpListener,
    opts: Options,
) -> Result<GateHandle, AppError> {
    let Loaded {
        home,
        users,
        rules,
        engine,
        vault,
        skipped,
        ..
    } = loaded;
    let addr = listener.local_addr()?;
    let store = Store::open_with(
        &home.gate.db_path,
        Duration::from_millis(home.gate.file.storage.busy_timeout_ms),
    )?;
    let graph_cfg = &home.gate.file.graph;
    let simulator = (graph_cfg.base_url == "simulator").then(Simulator::new);
    let base_url = match &simulator {
        Some(sim) => {
            for (_, u) in users.iter() {
                sim.expect_token(&u.config.phone_number_id, u.creds().access_token.clone());
                sim.add_phone_number(
                    &u.config.phone_number_id,
                    u.config
                        .display_phone_number
                        .as_deref()
                        .unwrap_or("+1 555-0100"),
                    u.config
                        .display_name
                        .as_deref()
                        .unwrap_or(u.config.id.as_str()),
                );
            }
            // Templates declared for it beside gate.yaml are checked as Graph checks them.
            let file = home.gate.home.join(crate::graph::simulator::TEMPLATES_FILE);
            match sim.load_templates(&file) {
                Ok(Some(n)) => {
                    tracing::info!(
                        templates = n,
                        "the simulator checks templates against {}",
                        file.display()
                    )
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(AppError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e,
                    )));
                }
            }
            // Credentials swapped in while serving (`wagate creds set`) are accepted too.
            let live = users.clone();
            sim.follow_tokens(move |phone| {
                live.iter()
                    .find(|(_, u)| u.config.phone_number_id == phone)
                    .map(|(_, u)| u.creds().access_token.clone())
            });
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}/simulator", addr.port())
        }
        None => graph_cfg.base_url.clone(),
    };
    let graph = GraphClient::new(
        &base_url,
        &graph_cfg.version,
        Duration::from_secs(graph_cfg.timeout_secs),
    )
    .map_err(Box::new)?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let dispatch_wake = Arc::new(Notify::new());
    let media_wake = Arc::new(Notify::new());
    let sender_wake = Arc::new(Notify::new());
    let registry = RuleRegistry::new(rules);
    let state = AppState::new(AppParts {
        rejections: Default::default(),
        store: store.clone(),
        users: users.clone(),
        dispatch_wake: dispatch_wake.clone(),
        media_wake: media_wake.clone(),
        registry: registry.clone(),
    });
    let operator_token = admin_token(&home.gate.file.status);
    let ops = crate::http::ops::OpsState {
        store: store.clone(),
        users: users.clone(),
        registry: registry.clone(),
        skipped: Arc::new(skipped),
        admin_token: operator_token.clone(),
    };
    let app = router(
        state,
        home.gate.file.server.max_body_bytes,
        simulator.as_ref(),
    )
    .merge(crate::http::ops::routes(ops))
    .layer(axum::middleware::from_fn_with_state(
        operator_token,
        crate::http::ops::simulator_pages_for_operators,
    ))
    .layer(axum::middleware::from_fn(crate::http::ops::webhook_metrics));
    tracker.spawn(crate::http::serve::serve(
        listener,
        app,
        Duration::from_millis(home.gate.file.server.header_timeout_ms),
        cancel.clone(),
    ));
    let live = registry.snapshot();
    let (hash, projects) = (live.hash(), live.project_hashes());
    store.record_reload("live", &hash, &projects, None)?;
    let names: Vec<String> = live.projects.iter().map(|p| p.name.clone()).collect();
    if let Err(e) = crate::history::record_start(&store, &home.gate, &names) {
        tracing::error!(error = %e, "the configuration's history could not be recorded");
    }
    let runs_in_flight = Arc::new(AtomicUsize::new(0));
    let scheduler = Scheduler {
        store: store.clone(),
        registry: registry.clone(),
        engine: engine.clone(),
        users: users.clone(),
        clock: opts.clock.clone(),
        wake: Arc::new(Notify::new()),
        sender_wake: sender_wake.clone(),
    };
    if opts.scheduler {
        tracker.spawn(scheduler.clone().run(cancel.clone()));
    }
    if opts.watch {
        let reloader = Reloader {
            served: home.users.clone(),
            users_warned: Default::default(),
            gate_yaml: home.gate.gate_yaml.clone(),
            rules_dir: home.gate.rules_dir.clone(),
            engine: engine.clone(),
            registry: registry.clone(),
            store: store.clone(),
            debounce: opts.reload_debounce,
            on_swap: scheduler.wake.clone(),
        };
        // Rules renamed while the gate was down: their pending calls are said at start.
        let zones = home
            .users
            .iter()
            .map(|(id, u)| (id.to_string(), u.timezone))
            .collect();
        tracker.spawn(crate::watcher::orphan_calls(
            store.clone(),
            registry.clone(),
            zones,
        ));
        // Watching starts before `start` returns: a rule saved right after it is not missed.
        if let Some(run) = reloader.watch() {
            let c = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = run => {}
                    _ = c.cancelled() => {}
                }
            });
        }
    }
    let dispatcher = Dispatcher {
        store: store.clone(),
        registry: registry.clone(),
        runs_in_flight: runs_in_flight.clone(),
        engine,
        users: users.clone(),
        wake: dispatch_wake,
        sender_wake: sender_wake.clone(),
        schedule_wake: scheduler.wake.clone(),
        clock: opts.clock.clone(),
        max_parallel: home.gate.file.dispatch.max_parallel.max(1),
        placement: Default::default(),
    };
    tracker.spawn(dispatcher.run(cancel.clone()));
    let media = MediaFetcher {
        store: store.clone(),
        graph: graph.clone(),
        users: users.clone(),
        dir: media_dir(&home.gate.db_path),
        wake: media_wake,
        backoff_base: opts.backoff_base,
    };
    tracker.spawn(media.run(cancel.clone()));
    let tokens = TokenKeeper::new(
        store.clone(),
        graph.clone(),
        users.clone(),
        vault,
        home.gate.home.join("credentials"),
    );
    if opts.tokens {
        tracker.spawn(tokens.clone().run(cancel.clone()));
    }
    let sender = Sender {
        store: store.clone(),
        graph,
        users,
        wake: sender_wake,
        limits: Limits {
            base: opts.backoff_base,
            ..Limits::default()
        },
        max_in_flight: 64,
        uploads: Default::default(),
        rejected: Default::default(),
    };
    tracker.spawn(sender.run(cancel.clone()));
    if let Some(section) = &home.gate.file.backup {
        let vault = Arc::new(Vault::open_from_env(&home.gate.identity_file)?);
        match crate::backup::BackupScheduler::new(
            home.gate.clone(),
            store.clone(),
            vault,
            section,
            opts.clock.clone(),
        ) {
            Ok(b) => {
                tracker.spawn(Arc::new(b).run(cancel.clone()));
            }
            Err(e) => tracing::error!("scheduled backups are off: {e}"),
        }
    }
    Ok(GateHandle {
        addr,
        store,
        simulator,
        registry,
        runs_in_flight,
        scheduler,
        tokens,
        cancel,
        tracker,
    })
}

/// A warning about the pinned Graph API version (gate.yaml `graph.version`) if it expires
/// within 90 days, has expired, or is unknown.
pub fn version_warning(home: &Home) -> Option<String> {
    crate::graph::versions::warning(
        &home.gate.file.graph.version,
        chrono::Utc::now().date_naive(),
    )
}

/// `wagate check`: every problem of the home at once: config, users, credentials that do not
/// decrypt, tables, every script and `if:`. Returns the summary line, or all errors.
pub fn check(gate_yaml: &Path) -> Result<String, String> {
    let (home, config_errors) = Home::load_partial(gate_yaml).map_err(|d| d.to_string())?;
    let mut problems: Vec<String> = config_errors.iter().map(ToString::to_string).collect();
    let (users, failed) = match Vault::open_from_env(&home.gate.identity_file) {
        Ok(vault) => Users::load(&home, &vault),
        Err(e) => {
            problems.push(format!("error: {e}"));
            (Users::default(), Vec::new())
        }
    };
    problems.extend(
        failed
            .iter()
            .map(|(u, e)| format!("error: user `{u}`: {e}")),
    );
    problems.extend(rejected_tokens(&home, &users));
    let engine = ScriptEngine::new(&home.gate.file.scripts);
    let rules = RuleSet::compile(&home, &engine).unwrap_or_else(|d| {
        problems.extend(d.0.iter().map(ToString::to_string));
        RuleSet::default()
    });
    let all: Vec<_> = home.projects.iter().collect();
    let past = crate::rules::past_ats(&home, &all, chrono::Utc::now());
    let warnings: String = loose_modes(&home)
        .iter()
        .cloned()
        .chain(home.warnings.iter().map(|w| w.as_warning()))
        .chain(past.iter().cloned())
        .map(|w| format!("{w}\n"))
        .collect();
    if let Some(b) = &home.gate.file.backup
        && let Err(e) = crate::backup::check_section(b)
    {
        problems.push(format!("error: {e}"));
    }
    // The built-in simulator's templates, as `serve` would read them.
    if home.gate.file.graph.base_url == "simulator"
        && let Err(e) = Simulator::new()
            .load_templates(&home.gate.home.join(crate::graph::simulator::TEMPLATES_FILE))
    {
        problems.push(format!("error: {e}"));
    }
    if !problems.is_empty() {
        let n = problems.len();
        let plural = if n == 1 { "" } else { "s" };
        return Err(format!(
            "{warnings}{}\n\n{n} error{plural}",
            problems.join("\n\n")
        ));
    }
    let summary = format!(
        "{warnings}ok: {} user(s), {} project(s), {} rule(s)",
        users.len(),
        rules.projects.len(),
        rules.rule_count()
    );
    Ok(match version_warning(&home) {
        Some(w) => format!("{w}\n{summary}"),
        None => summary,
    })
}

/// Users whose current token Graph has rejected (code 190), as the store recorded it.
fn rejected_tokens(home: &Home, users: &Users) -> Vec<String> {
    if !home.gate.db_path.exists() {
        return Vec::new();
    }
    let Ok(store) = Store::open_read_only(&home.gate.db_path) else {
        return Vec::new();
    };
    users
        .iter()
        .filter_map(|(name, u)| {
            let fp = crate::sender::fingerprint(u.creds().access_token.expose());
            let (why, at) = store.token_invalid(name, &fp).ok()??;
            let when = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            Some(format!(
                "error: user `{name}`: Graph rejected its access token on {when} ({why}); its sends are stopped until `wagate creds set {name}` stores a new one (`wagate test-connection {name}` re-checks it)"
            ))
        })
        .collect()
}

/// The identity file and credentials files that others than the owner may read or write:
/// they should be mode 0600 (`wagate init` and `creds set` write them so).
fn loose_modes(home: &Home) -> Vec<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![home.gate.identity_file.clone()];
        if let Ok(dir) = std::fs::read_dir(home.gate.home.join("credentials")) {
            let mut creds: Vec<_> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "age"))
                .collect();
            creds.sort();
            files.extend(creds);
        }
        files
            .iter()
            .filter_map(|f| {
                let mode = std::fs::metadata(f).ok()?.permissions().mode() & 0o777;
                (mode & 0o077 != 0).then(|| {
                    format!(
                        "warning: {} is mode {mode:04o}: others on this machine can read it; run `chmod 600 {}`",
                        home.gate.display_path(f).display(),
                        f.display()
                    )
                })
            })
            .collect()
    }
    #[cfg(not(unix))]
    {
        let _ = home;
        Vec::new()
    }
}
