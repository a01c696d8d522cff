//! Stopping and starting the real binary: SIGTERM lets the runs and sends in flight finish
//! and exits 0, with nothing acked lost and nothing sent twice across the stop; `serve` prints
//! its users, rules and next firings, and serves the others when one user is misconfigured.

#![cfg(unix)]

use crate::common::bin::*;
use crate::common::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use wagate::graph::simulator::Fault;

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

/// A second SIGTERM (or Ctrl-C) while the first one waits for work in flight stops at once,
/// with exit code 130; the work resumes at the next start and nothing acked is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_the_next_start_finishes_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    // The reply's answer takes longer than Graph's timeout (5 s): the stop has to wait.
    fake.push_fault(Fault::delay(Duration::from_secs(8)));
    let first = Bin::start(home, "first.log", &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &first, OLGA, "33620000001", "wamid.TWICE").await,
        200
    );
    eventually("the reply on the wire", T, || async {
        (!fake.requests().is_empty()).then_some(())
    })
    .await;
    first.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    first.sigterm();
    let (status, out, log) = first.exited().await;
    assert_eq!(status.code(), Some(130), "{out:?}\n{log}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "stopped at once, not after the send's timeout: {:?}",
        t0.elapsed()
    );
    assert!(log.contains("stopped at once"), "{log}");
    // The next start sends again what was in flight (the documented window: the fake had
    // taken the first attempt, whose answer the gate never read).
    let second = Bin::start(home, "second.log", &[]).await;
    eventually("the reply sent again after restart", T, || async {
        let n = fake
            .requests()
            .iter()
            .filter(|r| r.body["context"]["message_id"] == "wamid.TWICE")
            .count();
        (n == 2).then_some(())
    })
    .await;
    let db = wagate::store::Store::open_read_only(&home.join("data/wagate.db")).unwrap();
    let rows = eventually("the row recorded as sent", T, || async {
        let rows = db.outbox("olga").ok()?;
        (rows.len() == 1 && rows[0].state == "sent").then_some(rows)
    })
    .await;
    assert_eq!(rows[0].attempts, 2);
    let (status, _, _) = second.terminate().await;
    assert!(status.success());
    fake_cancel.cancel();
}
