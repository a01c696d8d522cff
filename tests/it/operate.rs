//! Operating the real binary: `/metrics` parsed and counted exactly, JSON log lines with
//! user/rule/message id and no secret, the admin token of /status and /metrics, graceful
//! shutdown on SIGTERM (exit 0, nothing acked lost, nothing sent twice), and the serve banner.
//! Each test runs its own `wagate serve` process, so process-wide counters start at zero.

#![cfg(unix)]

use crate::common::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use wagate::domain::Secret;
use wagate::graph::simulator::{Fault, Simulator};

/// Deadline of each wait.
const T: Duration = Duration::from_secs(60);

/// The fake Cloud API on 127.0.0.1:0, served by the test process (it outlives the gates).
pub(crate) async fn serve_fake() -> (Simulator, String, CancellationToken) {
    let sim = Simulator::new();
    for u in [OLGA, AZARYA] {
        sim.expect_token(u.phone, Secret::new(u.token.to_string()));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, cancel.clone()));
    (sim, url, cancel)
}

/// `wagate serve` as a child process: stdout collected, stderr to a file in the home.
pub(crate) struct Bin {
    child: Child,
    pub addr: String,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub log: PathBuf,
}

impl Bin {
    pub(crate) async fn start(home: &Path, log_name: &str, env: &[(&str, &str)]) -> Bin {
        let log = home.join(log_name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wagate"));
        cmd.arg("--config")
            .arg(home.join("gate.yaml"))
            .arg("serve")
            .env_remove("WAGATE_CONFIG")
            .env_remove("WAGATE_PASSPHRASE")
            .env("WAGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let found = tokio::time::timeout(T, async {
            while let Ok(Some(line)) = lines.next_line().await {
                stdout.lock().unwrap().push(line.clone());
                if let Some(addr) = line.strip_prefix("wagate listening on http://") {
                    return Some(addr.trim().to_string());
                }
            }
            None
        })
        .await;
        let addr = match found {
            Ok(Some(a)) => a,
            _ => panic!(
                "wagate serve did not listen:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let out = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                out.lock().unwrap().push(line);
            }
        });
        Bin {
            child,
            addr,
            stdout,
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM to this child, by its pid; waits for it to exit.
    pub(crate) async fn terminate(mut self) -> (ExitStatus, Vec<String>, String) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {pid}");
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .expect("the gate stops in time after SIGTERM")
            .expect("wait");
        // Let the stdout reader take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = self.stdout.lock().unwrap().clone();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (status, out, log)
    }
}

/// Posts one signed text message from `from` to `u`; returns the HTTP status.
async fn post(client: &reqwest::Client, bin: &Bin, u: TestUser, from: &str, wamid: &str) -> u16 {
    let body = text_webhook(u, from, "Contact", wamid, &format!("text of {wamid}"));
    let sig = wagate::whatsapp::sign(u.secret.as_bytes(), &body);
    client
        .post(bin.url(&format!("/webhook/whatsapp/{}", u.name)))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// One parsed sample: `name{labels}` as written (labels sorted) → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                name.starts_with("wagate_"),
                "{name} is in the wagate_ namespace"
            );
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{name} has a # TYPE line"));
        match types[family].as_str() {
            "counter" => assert_eq!(name, format!("{family}_total"), "counters end in _total"),
            "histogram" => assert!(
                family.ends_with("_seconds")
                    && ["_sum", "_count", "_bucket"]
                        .iter()
                        .any(|s| name == format!("{family}{s}")),
                "histograms are in seconds: {name}"
            ),
            "gauge" => assert_eq!(name, family),
            other => panic!("unexpected type {other}"),
        }
        let mut ls = parse_labels(labels, line);
        ls.sort();
        let key = if ls.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", ls.join(","))
        };
        assert!(
            samples.insert(key, value).is_none(),
            "one sample per series: {line}"
        );
    }
    samples
}

/// `k="v",k2="v2"` → `["k=\"v\"", …]`, checking names and quoting.
fn parse_labels(mut rest: &str, line: &str) -> Vec<String> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {line}"));
        assert!(
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {k} in {line}"
        );
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("label value closes in {line}"));
        out.push(format!("{k}=\"{}\"", &after[..end]));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    out
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key} in:\n{}",
            m.keys().cloned().collect::<Vec<_>>().join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhooks_runs_sends_and_token_expiry_and_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    // JSON logs, and an expiry for Olga's token (Azarya's stays unknown: no sample).
    let yaml = std::fs::read_to_string(home.join("gate.yaml")).unwrap();
    std::fs::write(
        home.join("gate.yaml"),
        format!("{yaml}log: {{ format: json }}\n"),
    )
    .unwrap();
    let expires = chrono::Utc::now().timestamp() + 10 * 86_400;
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    let creds = wagate::vault::parse_credentials(
        serde_json::json!({"access_token": OLGA.token, "app_secret": OLGA.secret,
            "webhook_verify_token": OLGA.verify, "token_expires_at": expires})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    vault
        .write_credentials(&home.join("credentials/olga.age"), &creds)
        .unwrap();
    // The third reply is refused for good by Graph (131026: undeliverable).
    let bin = Bin::start(home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &bin, OLGA, "33611110001", "wamid.M1").await,
        200
    );
    assert_eq!(
        post(&client, &bin, OLGA, "33611110001", "wamid.M1").await,
        200,
        "redelivery"
    );
    assert_eq!(
        post(&client, &bin, OLGA, "33611110002", "wamid.M2").await,
        200
    );
    eventually("two replies", T, || async {
        (fake.requests().len() >= 2).then_some(())
    })
    .await;
    fake.push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    assert_eq!(
        post(&client, &bin, OLGA, "33611110003", "wamid.M3").await,
        200
    );
    let bad = client
        .post(bin.url("/webhook/whatsapp/olga"))
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let m = eventually("the failed send to be counted", T, || {
        let (client, url) = (client.clone(), bin.url("/metrics"));
        async move {
            let r = client.get(url).send().await.ok()?;
            assert_eq!(r.status(), 200);
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            let m = parse_metrics(&r.text().await.ok()?);
            m.contains_key("wagate_sends_total{code=\"131026\",outcome=\"failed\",user=\"olga\"}")
                .then_some(m)
        }
    })
    .await;
    let w = |field: &str, outcome: &str| {
        get(
            &m,
            &format!(
                "wagate_webhooks_received_total{{field=\"{field}\",outcome=\"{outcome}\",user=\"olga\"}}"
            ),
        )
    };
    assert_eq!(w("messages", "stored"), 3.0);
    assert_eq!(w("messages", "duplicate"), 1.0);
    assert_eq!(w("unknown", "unauthorized"), 1.0);
    assert_eq!(get(&m, "wagate_webhook_ack_seconds_count"), 5.0);
    assert_eq!(get(&m, "wagate_dispatch_lag_seconds_count"), 3.0);
    let echo = "project=\"olga/replies\",rule=\"echo\",user=\"olga\"";
    assert_eq!(
        get(
            &m,
            &format!("wagate_rule_runs_total{{outcome=\"ok\",{echo}}}")
        ),
        3.0
    );
    assert_eq!(
        get(&m, &format!("wagate_rule_run_seconds_count{{{echo}}}")),
        3.0
    );
    assert_eq!(
        get(
            &m,
            "wagate_sends_total{code=\"\",outcome=\"sent\",user=\"olga\"}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "wagate_sends_total{code=\"131026\",outcome=\"failed\",user=\"olga\"}"
        ),
        1.0
    );
    assert_eq!(
        get(&m, "wagate_outbox_depth{state=\"sent\",user=\"olga\"}"),
        2.0
    );
    assert_eq!(
        get(&m, "wagate_outbox_depth{state=\"failed\",user=\"olga\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "wagate_outbox_depth{state=\"queued\",user=\"azarya\"}"),
        0.0
    );
    assert_eq!(get(&m, "wagate_events_pending"), 0.0);
    let left = get(&m, "wagate_token_expires_in_seconds{user=\"olga\"}");
    assert!((left - 10.0 * 86_400.0).abs() < 120.0, "{left}");
    assert!(
        !m.keys()
            .any(|k| k.starts_with("wagate_token_expires_in_seconds{user=\"azarya\"")),
        "no expiry known for azarya: no sample"
    );

    // A rule file that does not compile: a rejected reload is counted.
    std::fs::write(home.join("rules/olga/replies/echo.rhai"), "reply(event, \n").unwrap();
    eventually("a rejected reload to be counted", T, || {
        let (client, url) = (client.clone(), bin.url("/metrics"));
        async move {
            let text = client.get(url).send().await.ok()?.text().await.ok()?;
            let m = parse_metrics(&text);
            (m.get("wagate_reloads_total{outcome=\"rejected\"}")
                .copied()
                .unwrap_or(0.0)
                >= 1.0)
                .then_some(())
        }
    })
    .await;

    let (status, _, log) = bin.terminate().await;
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSON log line ({e}): {l}")))
        .collect();
    let find = |msg: &str, wamid_key: &str, wamid: &str| {
        lines
            .iter()
            .find(|l| l["message"] == msg && l[wamid_key].as_str().is_some_and(|w| w == wamid))
            .unwrap_or_else(|| panic!("a `{msg}` line for {wamid} in:\n{log}"))
            .clone()
    };
    let committed = find("webhook committed", "message_id", "wamid.M2");
    assert_eq!(committed["user"], "olga");
    let ran = find("rule ran", "message_id", "wamid.M2");
    assert_eq!(
        (ran["user"].as_str(), ran["rule"].as_str()),
        (Some("olga"), Some("echo"))
    );
    let sent = lines
        .iter()
        .find(|l| l["message"] == "sent")
        .unwrap_or_else(|| panic!("a `sent` line in:\n{log}"));
    assert_eq!(
        (sent["user"].as_str(), sent["rule"].as_str()),
        (Some("olga"), Some("echo"))
    );
    assert!(
        sent["message_id"]
            .as_str()
            .is_some_and(|w| w.starts_with("wamid.")),
        "{sent}"
    );
    let failed = find("send failed for good", "user", "olga");
    assert_eq!(failed["rule"], "echo");
    for secret in [
        OLGA.token,
        OLGA.secret,
        OLGA.verify,
        AZARYA.token,
        AZARYA.secret,
        AZARYA.verify,
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }
    fake_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_need_the_admin_token_when_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_fake, fake_url, fake_cancel) = serve_fake().await;
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    let yaml = std::fs::read_to_string(home.join("gate.yaml")).unwrap();
    std::fs::write(
        home.join("gate.yaml"),
        format!("{yaml}status: {{ admin_token_env: WAGATE_TEST_ADMIN }}\n"),
    )
    .unwrap();
    let token = "admin-0123456789-secret";
    let bin = Bin::start(home, "gate.log", &[("WAGATE_TEST_ADMIN", token)]).await;
    let client = reqwest::Client::new();
    for path in ["/status", "/metrics"] {
        let code = |req: reqwest::RequestBuilder| async move {
            req.send().await.unwrap().status().as_u16()
        };
        assert_eq!(
            code(client.get(bin.url(path))).await,
            200,
            "{path} from loopback"
        );
        // Through a reverse proxy the peer is loopback too; the proxy's header gives it away.
        let relayed = || {
            client
                .get(bin.url(path))
                .header("x-forwarded-for", "203.0.113.7")
        };
        assert_eq!(code(relayed()).await, 403, "{path} relayed, no token");
        assert_eq!(
            code(relayed().bearer_auth("wrong")).await,
            403,
            "{path} wrong token"
        );
        assert_eq!(
            code(relayed().bearer_auth(token)).await,
            200,
            "{path} with the token"
        );
    }
    let (status, _, log) = bin.terminate().await;
    assert_eq!(status.code(), Some(0));
    assert!(!log.contains(token), "the admin token is never logged");
    fake_cancel.cancel();
}

/// Olga's rows read from the database file: event states by wamid, outbox rows by the wamid
/// they quote.
fn read_db(path: &Path) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut st = conn
        .prepare("SELECT dedupe_key, state FROM events WHERE user = 'olga'")
        .unwrap();
    for row in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (k, s) = row.unwrap();
        events
            .entry(k.trim_start_matches("msg:").to_string())
            .or_default()
            .push(s);
    }
    let mut outbox: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut st = conn
        .prepare("SELECT body, state FROM outbox WHERE user = 'olga'")
        .unwrap();
    for row in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (body, s) = row.unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        let quoted = body["context"]["message_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        outbox.entry(quoted).or_default().push(s);
    }
    (events, outbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_work_in_hand_exits_0_and_loses_or_doubles_nothing() {
    const EVENTS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    // A slow rule beside the echo: dispatch is busy with runs when SIGTERM comes.
    let slow = (
        "olga/slow/project.yaml",
        "rules:\n  - name: think\n    on: message\n    script: think.rhai\n",
    );
    let think = (
        "olga/slow/think.rhai",
        "let n = 0;\nwhile n < 150000 { n += 1; }\nset_state(\"last\", event.id);\n",
    );
    write_home_with(
        home,
        &fake_url,
        &[ECHO_PROJECT, ECHO_SCRIPT, slow, think],
        "{ timeout_ms: 10000, max_operations: 0 }",
    );
    let db = home.join("data/wagate.db");
    // The first replies are answered slowly: they are on the wire when SIGTERM comes.
    for _ in 0..4 {
        fake.push_fault(Fault::delay(Duration::from_millis(1500)));
    }
    let first = Bin::start(home, "first.log", &[]).await;
    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    for i in 0..EVENTS {
        let wamid = format!("wamid.TERM{i:03}");
        let from = format!("3362000000{}", i % 6);
        if post(&client, &first, OLGA, &from, &wamid).await == 200 {
            acked.insert(wamid);
        }
    }
    assert_eq!(acked.len(), EVENTS, "every webhook acked before the stop");
    // SIGTERM while sends are on the wire (the fake holds its answers).
    eventually("a reply on the wire", T, || async {
        (!fake.requests().is_empty()).then_some(())
    })
    .await;
    let (status, out, log) = first.terminate().await;
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM; log:\n{log}");
    assert!(out.iter().any(|l| l.starts_with("stopping")), "{out:?}");
    assert!(out.iter().any(|l| l == "stopped"), "{out:?}");
    assert!(!log.contains("shutdown timed out"), "{log}");
    let taken_at_stop = fake.requests().len();
    let (events, outbox) = read_db(&db);
    for w in &acked {
        assert_eq!(events.get(w).map(Vec::len), Some(1), "{w} committed once");
    }
    let sending: Vec<_> = outbox
        .iter()
        .filter(|(_, s)| s.iter().any(|s| s == "sending"))
        .collect();
    assert!(
        sending.is_empty(),
        "no send left half-done by a graceful stop: {sending:?}"
    );
    let sent_at_stop = outbox.values().flatten().filter(|s| *s == "sent").count();
    assert_eq!(
        sent_at_stop, taken_at_stop,
        "every reply the fake took is recorded as sent"
    );
    eprintln!(
        "at SIGTERM: {taken_at_stop} reply(ies) sent, {} event(s) left pending",
        events
            .values()
            .flatten()
            .filter(|s| *s == "pending")
            .count()
    );

    let second = Bin::start(home, "second.log", &[]).await;
    eventually(
        "every acked event dispatched and answered after the restart",
        T,
        || {
            let db = db.clone();
            let acked = acked.clone();
            async move {
                let (events, outbox) = read_db(&db);
                let done = acked
                    .iter()
                    .all(|w| events.get(w).is_some_and(|s| s == &["done"]));
                let sent = acked
                    .iter()
                    .all(|w| outbox.get(w).is_some_and(|s| s == &["sent"]));
                (done && sent).then_some(())
            }
        },
    )
    .await;
    let (status, _, log) = second.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for r in fake.requests() {
        let quoted = r.body["context"]["message_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *replies.entry(quoted).or_default() += 1;
    }
    for w in &acked {
        assert_eq!(
            replies.get(w),
            Some(&1),
            "{w} answered exactly once across the stop"
        );
    }
    // Every event ran each of its two rules once: none was dispatched twice.
    let conn = Connection::open(&db).unwrap();
    let mut st = conn
        .prepare("SELECT event_id, COUNT(*) FROM rule_runs GROUP BY event_id")
        .unwrap();
    let runs: Vec<(i64, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs.len(), EVENTS, "{runs:?}");
    assert!(runs.iter().all(|(_, n)| *n == 2), "{runs:?}");
    fake_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_users_rules_next_firings_and_skips_a_misconfigured_user() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_fake, fake_url, fake_cancel) = serve_fake().await;
    let cron = (
        "olga/tours/project.yaml",
        "rules:\n  - name: evening\n    on: { cron: \"0 18 * * *\" }\n    script: r.rhai\n",
    );
    let script = ("olga/tours/r.rhai", "log(\"evening\");\n");
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT, cron, script]);
    // Azarya's file is broken: the gate serves Olga and says why Azarya is left out.
    let azarya = home.join("users/azarya.yaml");
    let text = std::fs::read_to_string(&azarya).unwrap();
    std::fs::write(&azarya, text.replace("Asia/Jerusalem", "Mars/Olympus")).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(home.join("gate.yaml"))
        .arg("check")
        .env_remove("WAGATE_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(1),
        "check still fails on the broken user"
    );

    let bin = Bin::start(home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &bin, OLGA, "33611110009", "wamid.S1").await,
        200,
        "olga is served"
    );
    assert_eq!(
        post(&client, &bin, AZARYA, "97250000009", "wamid.S2").await,
        404,
        "azarya is not"
    );
    let (status, out, log) = bin.terminate().await;
    assert_eq!(status.code(), Some(0));
    let out = out.join("\n");
    assert!(out.contains("users: olga\n"), "{out}");
    assert!(out.contains("skipped user: azarya"), "{out}");
    assert!(out.contains("olga/replies/echo (message)"), "{out}");
    assert!(
        out.contains("olga/tours/evening (cron \"0 18 * * *\")"),
        "{out}"
    );
    let next = out
        .lines()
        .skip_while(|l| *l != "next timed firings:")
        .nth(1)
        .unwrap_or_else(|| panic!("next timed firings listed:\n{out}"));
    assert!(
        next.contains("18:00 CE") && next.ends_with("olga/tours/evening"),
        "{next}"
    );
    assert!(
        log.contains("user skipped") && log.contains("azarya"),
        "{log}"
    );
    assert!(log.contains("unknown timezone `Mars/Olympus`"), "{log}");
    fake_cancel.cancel();
}
