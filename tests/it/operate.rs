//! Operating the real binary: `/metrics` parsed and counted exactly, JSON log lines with
//! user/rule/message id and no secret, and the admin token of /status and /metrics. Each test
//! runs its own `wagate serve` process, so process-wide counters start at zero.

#![cfg(unix)]

use crate::common::bin::*;
use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use wagate::graph::simulator::Fault;

/// What Prometheus sends when it scrapes.
const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Scrapes /metrics: OpenMetrics (as Prometheus asks) or the classic text format (a plain
/// client), checked against its content type and parsed.
async fn scrape(client: &reqwest::Client, url: &str, openmetrics: bool) -> BTreeMap<String, f64> {
    let mut req = client.get(url);
    if openmetrics {
        req = req.header("accept", OPENMETRICS);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let want = if openmetrics {
        "application/openmetrics-text; version=1.0.0"
    } else {
        "text/plain; version=0.0.4"
    };
    assert!(ct.starts_with(want), "{ct}");
    parse_metrics(&r.text().await.unwrap(), openmetrics)
}

/// One parsed sample: `name{labels}` as written (labels sorted) → value.
fn parse_metrics(text: &str, openmetrics: bool) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last() == Some(&"# EOF"),
        openmetrics,
        "OpenMetrics text ends with # EOF, the classic format does not"
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
            "counter" if openmetrics => assert_eq!(name, format!("{family}_total")),
            "counter" => assert!(name == family && name.ends_with("_total"), "{name}"),
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
            let m = scrape(&client, &url, true).await;
            // The counter moves as Graph answers, the outbox once the answer is recorded.
            (m.contains_key("wagate_sends_total{code=\"131026\",outcome=\"failed\",user=\"olga\"}")
                && m.get("wagate_outbox_depth{state=\"failed\",user=\"olga\"}") == Some(&1.0)
                && m.get("wagate_outbox_depth{state=\"sent\",user=\"olga\"}") == Some(&2.0))
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
    // A plain client gets the same samples in the classic text format.
    let classic = scrape(&client, &bin.url("/metrics"), false).await;
    for (key, value) in &m {
        if key.starts_with("wagate_webhooks_received")
            || key.starts_with("wagate_sends")
            || key.starts_with("wagate_outbox_depth")
        {
            assert_eq!(classic.get(key), Some(value), "{key}");
        }
    }
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
            let m = scrape(&client, &url, false).await;
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

/// Replies to a contact go one at a time: while the first is on the wire (Graph holds it 3 s),
/// the others wait for it without the sender looking at the outbox again and again. The gate
/// is then idle: it used a quarter of a core looking, now nothing.
#[tokio::test]
async fn replies_waiting_for_a_busy_recipient_take_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    fake.push_fault(Fault::delay(std::time::Duration::from_secs(3)));
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    let bin = Bin::start(home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let status = post(&client, &bin, OLGA, "33611110001", &format!("wamid.B{i}")).await;
        assert_eq!(status, 200);
    }
    let first = fake.wait_for(1, T).await;
    assert_eq!(first.len(), 1, "the first reply is on the wire");
    // The other two replies are queued behind it: from now until Graph answers the first
    // (it holds it 3 s), the gate has nothing to do.
    let db = home.join("data/wagate.db");
    eventually("the two other replies to be queued", T, || {
        let db = db.clone();
        async move {
            let conn = rusqlite::Connection::open(&db).ok()?;
            let queued: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'queued'",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            (queued == 2).then_some(())
        }
    })
    .await;
    let (cpu0, t0) = (bin.cpu(), std::time::Instant::now());
    let second = fake.wait_for(2, T).await;
    let (used, held) = (bin.cpu() - cpu0, t0.elapsed());
    assert_eq!(second.len(), 2, "the second reply follows the first");
    if held > std::time::Duration::from_secs(1) {
        // Recording the first answer and sending the second take a few ms; spinning took a
        // quarter of a core all along.
        assert!(
            used < std::time::Duration::from_millis(150),
            "the gate used {used:?} of CPU in the {held:?} a reply was on the wire"
        );
    } else {
        eprintln!("the machine was too slow (the wait was {held:?}); the CPU is not checked");
    }
    let all = fake.wait_for(3, T).await;
    assert_eq!(all.len(), 3, "every reply went out, one after the other");
    bin.terminate().await;
    fake_cancel.cancel();
}

#[tokio::test]
async fn audit_says_when_older_entries_were_left_out() {
    let tg = TestGate::start().await;
    for i in 0..3 {
        let body = text_webhook(OLGA, "33612345678", "Ann", &format!("wamid.AU{i}"), "hi");
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    settled(&tg, "olga").await;
    let home = tg.dir.path().to_path_buf();
    let o = wagate_in(&home, &["audit", "olga", "--limit", "2"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(shown.lines().count(), 2, "{shown}");
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(note.contains("the newest 2 entries"), "{note}");
    // All of them fit: no note.
    let o = wagate_in(&home, &["audit", "olga", "--limit", "1000"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() > 2);
    assert!(o.stderr.is_empty(), "{}", output_text(&o));
    tg.shutdown().await;
}
