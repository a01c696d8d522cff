//! The CLI at the operator's terminal: Ctrl-C on `send` while Graph's call is in flight, text
//! from contacts shown escaped, and output piped into a reader that leaves early. The real
//! binary, against the fake Cloud API on 127.0.0.1.

use crate::common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use wagate::graph::simulator::{Fault, Simulator};

/// A home whose Graph is a fake of its own, and no gate: only the CLI sends.
async fn home_without_gate() -> (
    tempfile::TempDir,
    Simulator,
    tokio_util::sync::CancellationToken,
) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Simulator::new();
    fake.expect_token(
        OLGA.phone,
        wagate::domain::Secret::new(OLGA.token.to_string()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(fake.clone().serve(listener, cancel.clone()));
    write_home(dir.path(), &url, &[]);
    (dir, fake, cancel)
}

/// `wagate send olga` of a template, started with its stderr piped.
fn spawn_send(home: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(home.join("gate.yaml"))
        .args([
            "send",
            "olga",
            "--to",
            "+33612345678",
            "--template",
            "tour_reminder",
            "--param",
            "Paris",
        ])
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs")
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The state and attempts of the home's only outbox row, once there is one.
fn row_state(home: &std::path::Path) -> Option<(String, i64)> {
    let conn = rusqlite::Connection::open(home.join("data/wagate.db")).ok()?;
    conn.query_row("SELECT state, attempts FROM outbox", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .ok()
}

/// Reads `child`'s stderr lines until one contains `what` (at most 20 s); returns them all.
async fn stderr_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    what: &str,
) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains(what) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "no `{what}` on stderr: {seen}");
    seen
}

/// The rest of the child's output and its exit code, within 20 s.
async fn finish(
    mut child: tokio::process::Child,
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) -> (String, String, Option<i32>) {
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut out).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("the command ends within 20 s");
    let mut err = String::new();
    while let Ok(Ok(Some(l))) =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
    {
        err.push_str(&l);
        err.push('\n');
    }
    (out, err, status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_graph_answers_waits_for_the_answer_and_sends_once() {
    let (dir, fake, cancel) = home_without_gate().await;
    fake.push_fault(Fault::delay(Duration::from_millis(1500)));
    let mut child = spawn_send(dir.path());
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Claimed: the call to Graph is in flight (the fake answers 1.5 s later).
    eventually("the row is being sent", Duration::from_secs(20), || {
        let s = row_state(dir.path());
        async move { s.filter(|(s, _)| s == "sending").map(drop) }
    })
    .await;
    signal(pid, "-INT");
    let said = stderr_until(&mut lines, "waiting for Graph's answer").await;
    assert!(
        said.contains(
            "(up to 5 s) so the message is not sent twice; Ctrl-C again to leave it to the gate"
        ),
        "{said}"
    );
    let (out, err, code) = finish(child, lines).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("sent to +33612345678 as wamid.SIM"),
        "{out}{err}"
    );
    assert_eq!(row_state(dir.path()), Some(("sent".into(), 1)));
    assert_eq!(fake.requests().len(), 1, "{:?}", fake.requests());
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_leaves_at_once() {
    let (dir, fake, cancel) = home_without_gate().await;
    fake.push_fault(Fault::delay(Duration::from_secs(4)));
    let mut child = spawn_send(dir.path());
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    eventually("the row is being sent", Duration::from_secs(20), || {
        let s = row_state(dir.path());
        async move { s.filter(|(s, _)| s == "sending").map(drop) }
    })
    .await;
    signal(pid, "-INT");
    stderr_until(&mut lines, "waiting for Graph's answer").await;
    let left = std::time::Instant::now();
    signal(pid, "-TERM");
    let (out, err, code) = finish(child, lines).await;
    assert_eq!(code, Some(130), "{out}{err}");
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
    assert!(
        err.contains("stopped at once: outbox row 1 stays `sending`"),
        "{err}"
    );
    assert_eq!(row_state(dir.path()).unwrap().0, "sending");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_between_retries_leaves_the_row_queued_for_the_gate() {
    let (dir, fake, cancel) = home_without_gate().await;
    // Transient failures: the row waits (1 s and more) between attempts.
    for _ in 0..8 {
        fake.push_fault(Fault::http(503));
    }
    let mut child = spawn_send(dir.path());
    let pid = child.id().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    eventually("the first attempt failed", Duration::from_secs(20), || {
        let s = row_state(dir.path());
        async move { s.filter(|(s, n)| s == "queued" && *n >= 1).map(drop) }
    })
    .await;
    signal(pid, "-INT");
    let (out, err, code) = finish(child, lines).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "interrupted: outbox row 1 is queued for the running gate (`wagate serve`), which sends it"
        ),
        "{err}"
    );
    assert_eq!(row_state(dir.path()).unwrap().0, "queued");
    cancel.cancel();
}

#[tokio::test]
async fn text_from_contacts_reaches_the_terminal_escaped() {
    let tg = TestGate::start().await;
    let evil = "hello\x1b]0;pwned\x07\x1b[2J";
    let body = text_webhook(OLGA, "33612345678", "Eve\x1b[31m", "wamid.EVIL1", evil);
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    for args in [
        &["status"][..],
        &["contacts", "olga", "list"],
        &["runs"],
        &["audit"],
    ] {
        let o = wagate_in(tg.dir.path(), args).await;
        assert!(o.status.success(), "{args:?}: {}", output_text(&o));
        let all = [o.stdout.as_slice(), o.stderr.as_slice()].concat();
        assert!(
            !all.iter().any(|b| *b == 0x1b || *b == 0x07),
            "{args:?} printed a control byte: {}",
            output_text(&o)
        );
        if args[0] != "audit" {
            assert!(
                output_text(&o).contains("\\u{1b}"),
                "{args:?}: {}",
                output_text(&o)
            );
        }
    }
    let o = wagate_in(tg.dir.path(), &["contacts", "olga", "list"]).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("+33612345678  Eve\\u{1b}[31m"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let tg = TestGate::start().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.PIPE1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    for args in [
        &["runs"][..],
        &["status"],
        &["audit"],
        &["rules", "list"],
        &["contacts", "olga", "list"],
    ] {
        // The reader has left before the command writes its first line.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .arg("--config")
            .arg(tg.config_path())
            .args(args)
            .env_remove("WAGATE_CONFIG")
            .env_remove("WAGATE_PASSPHRASE")
            .stdout(writer)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Not `output()`, which would pipe stdout to this test.
        let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the command ends within 30 s")
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    tg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_whose_stdout_is_closed_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    write_home(dir.path(), "http://127.0.0.1:9", &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gate_yaml = dir.path().join("gate.yaml");
    let text = std::fs::read_to_string(&gate_yaml)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&gate_yaml, text).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(&gate_yaml)
        .arg("serve")
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .env("WAGATE_LOG", "error")
        .stdout(writer)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually("the gate answers", Duration::from_secs(30), || {
        let r = client.get(&url).send();
        async move { r.await.ok().filter(|r| r.status() == 200).map(drop) }
    })
    .await;
    // Still serving after its banner met the closed pipe.
    assert!(child.try_wait().unwrap().is_none(), "the gate died");
    let again = client.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    signal(child.id().unwrap(), "-TERM");
    let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the gate stops within 30 s")
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
