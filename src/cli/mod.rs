//! The `wagate` command line. Subcommands return `Result<(), CliError>`; only [`main`] turns
//! that into an exit code: 0 ok, 1 failure, 2 usage. No command ever prints a secret.

// Every command prints through these (they shadow std's in this module and its children): a
// reader that closes the pipe early ends the command quietly (see out.rs).
macro_rules! print {
    ($($arg:tt)*) => { $crate::cli::out::print(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::cli::out::println(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::out::println(format_args!($($arg)*)) };
}

mod account;
mod args;
mod backup;
mod bench;
mod config;
mod connection;
mod contacts;
mod export;
mod groups;
mod init;
mod inject;
mod interrupt;
mod out;
mod rules;
mod send;
mod status;
mod trust;

use crate::app;
use crate::vault::{self, Vault};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// A failed command: its message is printed to stderr, then the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    fn failure(message: impl std::fmt::Display) -> Self {
        CliError {
            message: message.to_string(),
            code: 1,
        }
    }

    fn usage(message: impl std::fmt::Display) -> Self {
        CliError {
            message: message.to_string(),
            code: 2,
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::failure(e)
    }
}

#[derive(Parser, Debug)]
#[command(name = "wagate", version, about = "A self-hosted WhatsApp gate")]
struct Cli {
    /// The home's gate.yaml.
    #[arg(
        long,
        global = true,
        env = "WAGATE_CONFIG",
        default_value = "gate.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve webhooks, run rules and send, until Ctrl-C or SIGTERM.
    Serve,
    /// Check the whole home: config, users, credentials, every rule. Exit 1 on any error.
    Check,
    /// Create a working home in DIR (identity, gate.yaml, folders, .gitignore).
    Init { dir: PathBuf },
    /// Manage a user's encrypted credentials.
    Creds {
        #[command(subcommand)]
        action: CredsAction,
    },
    /// Post a signed test message from a contact to the running gate, as Meta would, and show
    /// the reply the (simulated) Cloud API received.
    Inject {
        user: String,
        /// The contact's number (digits).
        #[arg(long, default_value = "15550001111")]
        from: String,
        /// The contact's profile name.
        #[arg(long, default_value = "Demo Contact")]
        name: String,
        /// The message's text (with --button: the pressed button's title).
        #[arg(long)]
        text: String,
        /// Press a reply button instead of typing: the button's id (a rule's `buttons` id).
        #[arg(long)]
        button: Option<String>,
        /// Seconds to wait for a reply (0: do not wait).
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Send one message through the outbox (same checks, retries and record as the rules'
    /// sends) and wait for Graph's answer.
    Send(send::SendArgs),
    /// Ask Graph about USER's phone number with USER's token: is the number reachable, is the
    /// token valid.
    TestConnection { user: String },
    /// Access tokens: renew one now.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The audit log: every operation, hash-chained per user. `--verify` checks the chains.
    Audit {
        /// Only this user's entries (`*`: the gate's own).
        user: Option<String>,
        /// Entries since: an RFC 3339 time, a date or time in UTC (2026-11-24, 2026-11-24T08:00)
        /// or an age (90s, 30m, 2h, 3d).
        #[arg(long)]
        since: Option<String>,
        /// Check every chain; exit 1 if an entry was changed, removed or reordered.
        #[arg(long)]
        verify: bool,
        /// How many entries at most (the latest).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Look at the rules: dry-run one, list them all, write editor definitions.
    Rules {
        #[command(subcommand)]
        action: rules::RulesAction,
    },
    /// A user's contact book: list, label, unlabel, import a CSV.
    Contacts {
        user: String,
        #[command(subcommand)]
        action: contacts::ContactsAction,
    },
    /// A user's WhatsApp groups (Cloud API Groups API): list, create, show, invite-link,
    /// remove, delete, send.
    Groups {
        user: String,
        #[command(subcommand)]
        action: groups::GroupsAction,
    },
    /// The status page as text: users and tokens, rules and next firings, last runs, outbox
    /// and failures, recent webhooks.
    Status,
    /// Measure the gate: durable ingest, end to end, reload, rule cost, export, memory at rest,
    /// each against a bare reference measured in the same run (see README, Performance).
    Bench(bench::BenchArgs),
    /// Recent rule runs from the store, newest first (times in each user's timezone).
    Runs {
        /// Only this user's runs.
        user: Option<String>,
        /// Only runs of this rule: NAME or PROJECT/NAME.
        #[arg(long)]
        rule: Option<String>,
        /// How many runs at most.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Substance Export of one user's data (JSON), to data/exports/USER/ or --out.
    Export(export::ExportArgs),
    /// Write an encrypted backup of the home, or verify one (`backup verify F`).
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty home (the one named by --config).
    Restore(backup::RestoreArgs),
    /// The configuration's history: every version that went live; diff, show, restore.
    Config {
        #[command(subcommand)]
        action: config::ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Renew USER's long-lived token now (fb_exchange_token); the new one is stored encrypted.
    Refresh { user: String },
}

#[derive(Subcommand, Debug)]
enum CredsAction {
    /// Encrypt USER's credentials JSON {access_token, app_secret, webhook_verify_token,
    /// app_id?, token_expires_at?} into credentials/USER.age.
    Set {
        user: String,
        /// Read the JSON from this file.
        #[arg(long, conflicts_with = "stdin", required_unless_present = "stdin")]
        from_file: Option<PathBuf>,
        /// Read the JSON from standard input.
        #[arg(long)]
        stdin: bool,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A dry run reports its own failures; the runner's warning would say it twice.
    let level = match cli.command {
        Command::Serve => "info",
        Command::Rules { .. } => "error",
        _ => "warn",
    };
    // `serve` writes its log as gate.yaml says (`log: { format: json }`); a gate.yaml that
    // cannot be read is reported by the command itself.
    let format = match cli.command {
        Command::Serve => crate::config::load_gate(&cli.config)
            .map(|g| g.file.log.format)
            .unwrap_or_default(),
        _ => crate::config::LogFormat::Text,
    };
    init_tracing(level, format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Error reasons may quote Graph or a contact: no raw control character.
            eprintln!("{}", crate::terminal::block(&e.message));
            ExitCode::from(e.code)
        }
    }
}

/// The command line, with `WAGATE_CONFIG` set but empty taken as unset (`./gate.yaml`), as a
/// shell's `WAGATE_CONFIG= wagate …` or an empty line in a unit file means.
fn parse_args() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    if std::env::var_os("WAGATE_CONFIG").is_some_and(|v| v.is_empty()) {
        cmd = cmd.mut_arg("config", |a| a.env(None::<&str>));
    }
    let matches = cmd.try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

/// Logs to stderr at `default` level, or as env `WAGATE_LOG` says: human-readable lines
/// (colored on a terminal), or one JSON object per line with the fields at the top level.
fn init_tracing(default: &str, format: crate::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WAGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Init { dir } => init::run(&dir),
        Command::Check => check(&cli.config),
        Command::Serve => runtime()?.block_on(serve(&cli.config)),
        Command::Creds {
            action:
                CredsAction::Set {
                    user,
                    from_file,
                    stdin,
                },
        } => creds_set(&cli.config, &user, from_file.as_deref(), stdin),
        Command::Inject {
            user,
            from,
            name,
            text,
            button,
            wait,
        } => runtime()?.block_on(inject::run(
            &cli.config,
            &user,
            &inject::Message {
                from,
                name,
                text,
                button,
            },
            wait,
        )),
        Command::Send(args) => runtime()?.block_on(send::run(&cli.config, args)),
        Command::TestConnection { user } => {
            runtime()?.block_on(connection::run(&cli.config, &user))
        }
        Command::Token {
            action: TokenAction::Refresh { user },
        } => runtime()?.block_on(trust::token_refresh(&cli.config, &user)),
        Command::Audit {
            user,
            since,
            verify,
            limit,
        } => trust::audit(
            &cli.config,
            user.as_deref(),
            since.as_deref(),
            verify,
            limit as usize,
        ),
        Command::Rules { action } => rules::run(&cli.config, action),
        Command::Contacts { user, action } => contacts::run(&cli.config, &user, action),
        Command::Groups { user, action } => {
            runtime()?.block_on(groups::run(&cli.config, &user, action))
        }
        Command::Status => status::run(&cli.config),
        Command::Bench(args) => bench::run(args),
        Command::Runs { user, rule, limit } => rules::runs(
            &cli.config,
            user.as_deref(),
            rule.as_deref(),
            limit as usize,
        ),
        Command::Export(args) => export::run(&cli.config, args),
        Command::Backup(args) => backup::backup(&cli.config, args),
        Command::Restore(args) => backup::restore(&cli.config, args),
        Command::Config { action } => config::run(&cli.config, action),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::script::stack::THREAD_STACK)
        .build()?)
}

fn check(config: &Path) -> Result<(), CliError> {
    let summary = app::check(config).map_err(CliError::failure)?;
    // Warnings go to stderr: stdout keeps the one-line verdict scripts read.
    for line in summary.lines() {
        if line.starts_with("warning:") {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}

async fn serve(config: &Path) -> Result<(), CliError> {
    let loaded = app::load(config).map_err(CliError::failure)?;
    for (name, why) in &loaded.skipped {
        // Through the log, so that a JSON log stays JSON.
        if name.contains('/') {
            tracing::warn!(project = %name, reason = %why, "project left out: the user's webhooks and other projects are served; fixing its files brings it in (hot reload)");
        } else {
            tracing::warn!(user = %name, reason = %why, "user skipped: not served until fixed and the gate restarted (`wagate check` shows every error)");
        }
    }
    if let Some(w) = app::version_warning(&loaded.home) {
        eprintln!("{w}");
    }
    // Held until this returns: `restore` and a second `serve` of this home are refused
    // meanwhile. Taken before the port, which a second gate would otherwise fail on first.
    let _lock = crate::lock::HomeLock::acquire(&loaded.home.gate.db_path, "serve")
        .map_err(|e| CliError::failure(format!("error: cannot serve: {e}; one gate per home")))?;
    let listen = loaded.home.gate.file.server.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| CliError::failure(format!("cannot listen on {listen}: {e}")))?;
    let users = loaded.users.clone();
    let rules = crate::status::rules_of(&loaded.rules);
    let skipped = loaded.skipped.clone();
    let simulated = loaded.home.gate.file.graph.base_url == "simulator";
    // Caught before the gate answers anything: a stop asked from then on is a clean stop.
    let stop = shutdown_signal();
    let gate = app::start(loaded, listener, app::Options::default())
        .await
        .map_err(CliError::failure)?;
    // A gate's stdout may be closed (`serve | head`, a gone terminal): it serves on, and
    // stops as asked, whatever becomes of these lines.
    use std::io::Write;
    let _ = write!(
        std::io::stdout(),
        "{}",
        status::banner(gate.addr, &users, &rules, &skipped, simulated)
    );
    let _ = std::io::stdout().flush();
    stop.await;
    let _ = writeln!(
        std::io::stdout(),
        "stopping: no new connections; finishing the runs and sends in flight… (again to stop at once)"
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        () = gate.shutdown(SHUTDOWN_TIMEOUT) => {}
        () = shutdown_signal() => {
            // Nothing acked is lost: events are committed before their 200, and a send cut
            // off in flight is retried at the next start (the one documented double-send window).
            return Err(CliError {
                message: "stopped at once: the work in hand resumes at the next start".into(),
                code: 130,
            });
        }
    }
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}

/// How long a stop waits for runs and sends in flight.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Ctrl-C or SIGTERM: caught from the call on (not from the first poll), so that a stop asked
/// while the gate starts is not the default death.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn creds_set(
    config: &Path,
    user: &str,
    from_file: Option<&Path>,
    stdin: bool,
) -> Result<(), CliError> {
    let id = args::user_arg(user)?;
    let gate = crate::config::load_gate(config).map_err(CliError::failure)?;
    let user_file = gate.users_dir.join(format!("{id}.yaml"));
    if !user_file.is_file() {
        return Err(CliError::failure(format!(
            "no user `{id}`: create {} first",
            gate.display_path(&user_file).display()
        )));
    }
    let json = match (from_file, stdin) {
        (Some(f), _) => std::fs::read(f)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", f.display())))?,
        (None, true) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        (None, false) => return Err(CliError::usage("give --from-file F or --stdin")),
    };
    let (creds, trimmed) = vault::parse_credentials_noting(&json)?;
    for field in trimmed {
        eprintln!("note: removed the spaces or line breaks around `{field}`");
    }
    let vault = Vault::open_from_env(&gate.identity_file)?;
    let path = gate.credentials_path(&id);
    vault.write_credentials(&path, &creds)?;
    let store = crate::store::Store::open(&gate.db_path)?;
    store.audit(
        id.as_str(),
        "credentials.set",
        &serde_json::json!({
            "fingerprint": crate::sender::fingerprint(creds.access_token.expose()),
            "app_id": creds.app_id,
            "token_expires_at": creds.token_expires_at.map(|t| t.to_rfc3339()),
        }),
    )?;
    println!(
        "saved encrypted credentials for `{id}` to {}",
        gate.display_path(&path).display()
    );
    Ok(())
}
