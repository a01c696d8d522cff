//! `wagate bench`: starts gates on temp homes with the fake Cloud API on loopback, drives
//! them, and prints each figure with its target and its ratio to a bare reference (an
//! HMAC-check-and-200 handler on the same stack) measured in the same run, since absolute
//! numbers drift on shared machines. Every loop is bounded in count and time. Speeds are
//! printed, never asserted.

mod child;
mod e2e;
mod home;
mod load;

use super::CliError;
use crate::graph::simulator::Simulator;
use home::{BenchUser, TempHome};
use load::{Arrivals, Shot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The figures a run can measure, in order.
const STEPS: [&str; 6] = ["ingest", "e2e", "reload", "rule", "export", "rest"];

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Webhooks per load run (each unique and signed).
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Only these steps (comma-separated): ingest, e2e, reload, rule, export, rest.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,e2e,reload,rule,export,rest"
    )]
    only: Vec<String>,
    /// Stored messages to export.
    #[arg(long, default_value_t = 1_000_000)]
    export_n: usize,
    /// Users (of ten rules each) in the large at-rest home.
    #[arg(long, default_value_t = 1000)]
    rest_users: usize,
    /// The paced load of the end-to-end latency figure (messages/s).
    #[arg(long, default_value_t = 5000.0)]
    paced_rate: f64,
    /// Runs of every step: each figure printed is the median run's (by the figure's main
    /// number), with the range over all runs beside it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    repeat: u16,
    /// Longest any one load run may take (seconds).
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Internal: run as a child process measuring its own memory.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the child's home.
    #[arg(long, hide = true)]
    home: Option<PathBuf>,
}

/// One line of the table.
struct Row {
    key: &'static str,
    value: String,
    target: String,
    ratio: String,
    met: Option<bool>,
}

fn row(key: &'static str, value: String, target: &str, ratio: String, met: Option<bool>) -> Row {
    Row {
        key,
        value,
        target: target.to_string(),
        ratio,
        met,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints what the store's writer did during a load run of `span`.
/// A row of CPU time per request (the whole process: load, gate and fake Graph alike).
fn cpu_row(key: &'static str, cpu: Duration, n: usize, reference: Option<f64>) -> (Row, f64) {
    let per = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    let ratio = reference.map_or("1.00".to_string(), |r| format!("{:.2}", per / r.max(1e-9)));
    let what = if reference.is_some() {
        "(no target)"
    } else {
        "reference"
    };
    (
        row(
            key,
            format!("{per:.0} µs of CPU per message"),
            what,
            ratio,
            None,
        ),
        per,
    )
}

fn writer_line(step: &str, g: crate::store::GroupCounts, span: Duration) {
    eprintln!(
        "bench: {step}: {} writes in {} commits; the writer was busy {:.0}% of the run",
        g.writes,
        g.commits,
        100.0 * g.busy.as_secs_f64() / span.as_secs_f64().max(1e-9)
    );
}

/// Runs `wagate bench`.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::script::stack::THREAD_STACK)
        .build()?;
    if let Some(kind) = &args.child {
        let home = args.home.clone().unwrap_or_default();
        let line = match kind.as_str() {
            "rest" => rt.block_on(child::rest(&home)),
            "bare-rest" => rt.block_on(child::bare_rest()),
            "export" => child::export(&home, "user0"),
            other => return Err(CliError::usage(format!("unknown bench child `{other}`"))),
        }
        .map_err(|e| CliError::failure(format!("bench child {kind}: {e:#}")))?;
        println!("{line}");
        return Ok(());
    }
    for s in &args.only {
        if !STEPS.contains(&s.as_str()) {
            return Err(CliError::usage(format!(
                "unknown step `{s}`; steps: {}",
                STEPS.join(", ")
            )));
        }
    }
    if args.n == 0 || args.concurrency == 0 {
        return Err(CliError::usage("--n and --concurrency must be at least 1"));
    }
    rt.block_on(main(args))
        .map_err(|e| CliError::failure(format!("bench: {e:#}")))
}

/// The shared context of one run.
struct Bench {
    args: BenchArgs,
    client: reqwest::Client,
    sim: Simulator,
    graph_url: String,
    arrivals: Arrivals,
    users: Vec<BenchUser>,
    cancel: CancellationToken,
    rows: Vec<Row>,
    bare_rate: f64,
    bare_p99: Duration,
    /// CPU per request of the bare reference (µs).
    bare_cpu: f64,
    /// The durable floor's requests per second.
    floor_rate: f64,
}

async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "debug build: figures are not meaningful"
    } else {
        "release build"
    };
    println!(
        "wagate bench: n={} concurrency={} cores={cores} ({build})",
        args.n, args.concurrency
    );
    let cancel = CancellationToken::new();
    let users: Vec<BenchUser> = (0..2).map(BenchUser::numbered).collect();
    let sim = Simulator::new();
    for u in &users {
        sim.expect_token(&u.phone, crate::domain::Secret::new(u.token.clone()));
    }
    let arrivals: Arrivals = Arc::default();
    let graph = load::serve_graph(&sim, arrivals.clone(), cancel.clone()).await?;
    let mut b = Bench {
        client: load::client(args.concurrency),
        graph_url: format!("http://{graph}"),
        sim,
        arrivals,
        users,
        cancel: cancel.clone(),
        rows: Vec::new(),
        bare_rate: 0.0,
        bare_p99: Duration::ZERO,
        bare_cpu: 0.0,
        floor_rate: 0.0,
        args,
    };
    let mut runs = Vec::new();
    let mut result = Ok(());
    for i in 0..b.args.repeat {
        if b.args.repeat > 1 {
            eprintln!("bench: run {} of {}", i + 1, b.args.repeat);
        }
        result = b.steps().await;
        runs.push(std::mem::take(&mut b.rows));
        if result.is_err() {
            break;
        }
    }
    print_table(&medians(runs));
    cancel.cancel();
    result
}

/// The main number of a figure: the p99 of a latency (a value starting with its p50), else
/// the first number of its value.
fn main_number(value: &str) -> Option<f64> {
    let from = match value.find("p99 ") {
        Some(i) if value.starts_with("p50 ") => &value[i + 4..],
        _ => value,
    };
    from.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// One row per figure: with one run, its rows; with several, the median run's row of each
/// figure (by [`main_number`]), its value followed by the range over the runs.
fn medians(mut runs: Vec<Vec<Row>>) -> Vec<Row> {
    if runs.len() < 2 {
        return runs.pop().unwrap_or_default();
    }
    let n = runs.len();
    let keys: Vec<&'static str> = runs[0].iter().map(|r| r.key).collect();
    let mut out = Vec::new();
    for key in keys {
        let mut rows: Vec<Row> = runs
            .iter_mut()
            .filter_map(|run| {
                let i = run.iter().position(|r| r.key == key)?;
                Some(run.remove(i))
            })
            .collect();
        rows.sort_by(|a, b| {
            let (a, b) = (main_number(&a.value), main_number(&b.value));
            a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
        });
        let numbers: Vec<f64> = rows.iter().filter_map(|r| main_number(&r.value)).collect();
        let mid = rows.len() / 2;
        let mut median = rows.swap_remove(mid);
        if let (Some(lo), Some(hi)) = (numbers.first(), numbers.last()) {
            median.value = format!("{} [{n} runs: {lo}-{hi}]", median.value);
        }
        out.push(median);
    }
    out
}

impl Bench {
    fn wants(&self, step: &str) -> bool {
        let yes = self.args.only.iter().any(|s| s == step);
        if yes {
            eprintln!("bench: {step}…");
        }
        yes
    }

    async fn steps(&mut self) -> anyhow::Result<()> {
        self.bare().await?;
        if self.wants("ingest") {
            self.durable_floor().await?;
            self.ingest().await?;
        }
        if self.wants("e2e") || self.wants("reload") || self.wants("rule") {
            self.e2e().await?;
        }
        if self.wants("export") {
            self.export().await?;
        }
        if self.wants("rest") {
            self.rest().await?;
        }
        Ok(())
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(self.args.max_secs)
    }

    /// `n` unique webhooks signed for the users in turn, from contacts tagged `run`.
    fn shots(&self, run: u32, n: usize) -> Arc<Vec<Shot>> {
        Arc::new(
            (0..n)
                .map(|i| {
                    let u = &self.users[i % self.users.len()];
                    let from = home::contact(run, i);
                    let body = home::text_webhook(
                        u,
                        &from,
                        &format!("wamid.bench.{run}.{i}"),
                        &format!("m{i}"),
                    );
                    Shot {
                        path: format!("/webhook/whatsapp/{}", u.name),
                        signature: crate::whatsapp::sign(u.secret.as_bytes(), &body),
                        body: body.into(),
                    }
                })
                .collect(),
        )
    }

    /// One load run (contacts tagged `run`) on a bare reference (`durable`: the floor's);
    /// what it did and the CPU it took.
    async fn reference(
        &self,
        durable: Option<Arc<load::DurableLog>>,
        run: u32,
    ) -> anyhow::Result<(load::LoadResult, Duration)> {
        let cancel = self.cancel.child_token();
        let addr = load::serve_bare(&self.users, None, durable, cancel.clone()).await?;
        let shots = self.shots(run, self.args.n);
        let cpu0 = load::cpu_time();
        let r = load::drive(
            &self.client,
            addr,
            shots,
            self.args.concurrency,
            self.deadline(),
        )
        .await;
        let cpu = load::cpu_time() - cpu0;
        cancel.cancel();
        Ok((r, cpu))
    }

    /// The bare reference: HMAC check and 200, on the same stack, same load.
    async fn bare(&mut self) -> anyhow::Result<()> {
        let (r, cpu) = self.reference(None, 1).await?;
        let cpu = cpu_row("bare.cpu", cpu, r.ok, None);
        self.bare_rate = r.rate();
        self.bare_p99 = r.pct(0.99);
        self.rows.push(row(
            "bare.rate",
            format!("{:.0} req/s ({} errors)", r.rate(), r.errors),
            "reference",
            "1.00".into(),
            None,
        ));
        self.rows.push(row(
            "bare.ack",
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} ms",
                ms(r.pct(0.5)),
                ms(r.pct(0.9)),
                ms(r.pct(0.99))
            ),
            "reference",
            "1.00".into(),
            None,
        ));
        self.bare_cpu = cpu.1;
        self.rows.push(cpu.0);
        Ok(())
    }

    /// The durable floor: the bare reference that also appends each body to a file and answers
    /// once an fdatasync (shared by the requests waiting, like a group commit) covers it. No
    /// gate that keeps what it acks can do less on this machine; it has no tables, no dedupe,
    /// no events.
    async fn durable_floor(&mut self) -> anyhow::Result<()> {
        let dir = TempHome::new("floor")?;
        let log = load::DurableLog::open(&dir.dir.join("bodies.log"))?;
        let (r, cpu) = self.reference(Some(log), 9).await?;
        let cpu = cpu_row("floor.cpu", cpu, r.ok, Some(self.bare_cpu));
        self.floor_rate = r.rate();
        self.rows.push(row(
            "floor.rate",
            format!(
                "{:.0} req/s ({} errors); p99 {:.2} ms",
                r.rate(),
                r.errors,
                ms(r.pct(0.99))
            ),
            "reference",
            format!("{:.2}", r.rate() / self.bare_rate.max(1e-9)),
            None,
        ));
        self.rows.push(cpu.0);
        Ok(())
    }

    /// A home for the bench users with `rules` echo rules each, and a gate started on it.
    async fn gate(
        &self,
        tag: &str,
        rules: usize,
    ) -> anyhow::Result<(TempHome, crate::app::GateHandle)> {
        let home = TempHome::new(tag)?;
        home::write_home(&home.dir, &self.graph_url, &self.users, rules)?;
        let loaded = crate::app::load(&home.gate_yaml())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let gate = crate::app::start(loaded, listener, crate::app::Options::default()).await?;
        Ok((home, gate))
    }

    /// (1) Durable ingest: every webhook committed before its 200.
    async fn ingest(&mut self) -> anyhow::Result<()> {
        let (_home, gate) = self.gate("ingest", 0).await?;
        let shots = self.shots(2, self.args.n);
        let g0 = crate::store::group_commit_counts();
        let cpu0 = load::cpu_time();
        let r = load::drive(
            &self.client,
            gate.addr,
            shots,
            self.args.concurrency,
            self.deadline(),
        )
        .await;
        let (stored, _, _) = gate.store.counts("user0")?;
        let cpu = cpu_row(
            "ingest.cpu",
            load::cpu_time() - cpu0,
            r.ok,
            Some(self.bare_cpu),
        )
        .0;
        writer_line(
            "ingest",
            crate::store::group_commit_counts() - g0,
            r.elapsed,
        );
        gate.shutdown(Duration::from_secs(30)).await;
        let ratio = r.rate() / self.bare_rate.max(1e-9);
        self.rows.push(row(
            "ingest.rate",
            format!(
                "{:.0} req/s ({} errors, {} stored for user0)",
                r.rate(),
                r.errors,
                stored
            ),
            ">= 0.50 x bare",
            format!("{ratio:.2}"),
            Some(ratio >= 0.5 && r.errors == 0),
        ));
        self.rows.push(row(
            "ingest.ack",
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} ms",
                ms(r.pct(0.5)),
                ms(r.pct(0.9)),
                ms(r.pct(0.99))
            ),
            "p99 < 20 ms",
            format!("p99 {:.2}", ms(r.pct(0.99)) / ms(self.bare_p99).max(1e-9)),
            Some(r.pct(0.99) < Duration::from_millis(20)),
        ));
        self.rows.push(cpu);
        if self.floor_rate > 0.0 {
            self.rows.push(row(
                "ingest.floor",
                format!(
                    "{:.2} x the durable floor's rate",
                    r.rate() / self.floor_rate
                ),
                "(no target)",
                format!("{ratio:.2}"),
                None,
            ));
        }
        Ok(())
    }

    /// (5) Substance Export of `export_n` stored messages, in a child process.
    async fn export(&mut self) -> anyhow::Result<()> {
        let home = TempHome::new("export")?;
        home::write_home(&home.dir, &self.graph_url, &self.users[..1], 0)?;
        let db = home.dir.join("data/wagate.db");
        let n = self.args.export_n;
        let seeded = Instant::now();
        tokio::task::spawn_blocking(move || {
            crate::store::Store::open(&db)?.seed_messages("user0", n)
        })
        .await??;
        let seed_secs = seeded.elapsed().as_secs_f64();
        let out = child_line(&["--child", "export"], Some(&home.dir)).await?;
        let fields = parse_fields(&out);
        let seeded_note = format!("{n} messages seeded in {seed_secs:.1} s");
        match (
            fields.get("messages"),
            fields.get("secs"),
            fields.get("hwm_kb"),
        ) {
            (Some(m), Some(s), Some(hwm)) => {
                let (m, s, hwm): (f64, f64, f64) = (m.parse()?, s.parse()?, hwm.parse()?);
                let rate = m / s.max(1e-9);
                self.rows.push(row(
                    "export.rate",
                    format!("{rate:.0} messages/s ({seeded_note})"),
                    ">= 200000 messages/s",
                    format!("{:.2}", rate / self.bare_rate.max(1e-9)),
                    Some(rate >= 200_000.0),
                ));
                self.rows.push(row(
                    "export.memory",
                    format!("peak {:.1} MB", hwm / 1024.0),
                    "flat in N",
                    "-".into(),
                    None,
                ));
            }
            _ => {
                for key in ["export.rate", "export.memory"] {
                    self.rows.push(row(
                        key,
                        format!("export: not built on this branch ({seeded_note})"),
                        if key == "export.rate" {
                            ">= 200000 messages/s"
                        } else {
                            "flat in N"
                        },
                        "-".into(),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// (6) Resident memory at rest: the bare reference, a gate of two users, a gate of many
    /// users of ten rules each; each in its own process.
    async fn rest(&mut self) -> anyhow::Result<()> {
        let bare = parse_fields(&child_line(&["--child", "bare-rest"], None).await?);
        let bare_kb: f64 = bare
            .get("rss_kb")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        self.rows.push(row(
            "rest.bare",
            format!("{:.1} MB", bare_kb / 1024.0),
            "reference",
            "1.00".into(),
            None,
        ));
        let many = self.args.rest_users;
        for (key, users, rules, target) in [
            ("rest.2users", 2usize, 1usize, Some(50.0 * 1024.0)),
            ("rest.many", many, 10, None),
        ] {
            let home = TempHome::new("rest")?;
            let list: Vec<BenchUser> = (0..users).map(BenchUser::numbered).collect();
            home::write_home(&home.dir, &self.graph_url, &list, rules)?;
            for u in &list {
                self.sim
                    .expect_token(&u.phone, crate::domain::Secret::new(u.token.clone()));
            }
            let f = parse_fields(&child_line(&["--child", "rest"], Some(&home.dir)).await?);
            let rss: f64 = f.get("rss_kb").and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let what = format!(
                "{:.1} MB with {} users, {} rules",
                rss / 1024.0,
                f.get("users").map_or("?", String::as_str),
                f.get("rules").map_or("?", String::as_str)
            );
            self.rows.push(row(
                key,
                what,
                if target.is_some() {
                    "< 50 MB"
                } else {
                    "(no target)"
                },
                format!("{:.2}", rss / bare_kb.max(1.0)),
                target.map(|t| rss > 0.0 && rss < t),
            ));
        }
        Ok(())
    }
}

/// Runs this binary as a bench child and returns its output line.
async fn child_line(args: &[&str], home: Option<&std::path::Path>) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("bench").args(args).kill_on_drop(true);
    if let Some(h) = home {
        cmd.arg("--home").arg(h);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "bench child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn parse_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<14} {:<62} {:<22} {:<10} met",
        "figure", "value", "target", "vs bare"
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<14} {:<62} {:<22} {:<10} {met}",
            r.key, r.value, r.target, r.ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: &'static str, value: &str) -> Row {
        row(key, value.to_string(), "t", "1.00".into(), None)
    }

    #[test]
    fn several_runs_print_each_figure_of_the_median_run_with_the_range() {
        let runs = vec![
            vec![
                r("a.rate", "300 req/s"),
                r("a.ack", "p50 1.0 p90 2 p99 9.5 ms"),
            ],
            vec![
                r("a.rate", "100 req/s"),
                r("a.ack", "p50 3.0 p90 4 p99 3.5 ms"),
            ],
            vec![
                r("a.rate", "200 req/s"),
                r("a.ack", "p50 2.0 p90 3 p99 5.5 ms"),
            ],
        ];
        let rows = medians(runs);
        let values: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "200 req/s [3 runs: 100-300]",
                "p50 2.0 p90 3 p99 5.5 ms [3 runs: 3.5-9.5]"
            ]
        );
        let one = medians(vec![vec![r("a.rate", "7 req/s")]]);
        assert_eq!(one[0].value, "7 req/s", "one run is printed as it is");
    }
}
