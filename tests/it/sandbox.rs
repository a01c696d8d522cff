//! The sandbox's bounds over the real gate: what a run may leave behind (its log), how deep it
//! may go, and how its failures are placed and traced.

use crate::common::*;
use std::time::Duration;
use wagate::store::RunTrace;

const T: Duration = Duration::from_secs(20);

async fn post(tg: &TestGate, wamid: &str, text: &str) {
    let body = text_webhook(OLGA, "33612345678", "Ann", wamid, text);
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
}

/// The newest traced run of `rule` of Olga's that its `if:` did not skip, once there is one.
async fn run_of(tg: &TestGate, rule: &str) -> RunTrace {
    let store = tg.store().clone();
    let rule = rule.to_string();
    eventually(&format!("a run of `{rule}`"), T, || {
        let (store, rule) = (store.clone(), rule.clone());
        async move {
            let runs = store.runs(Some("olga"), Some(&rule), 10).ok()?;
            runs.into_iter().find(|r| r.outcome != "skipped")
        }
    })
    .await
}

#[tokio::test]
async fn a_runs_log_is_bounded_and_says_what_it_left_out() {
    let tg = TestGate::start_with(&[
        (
            "olga/chatty/project.yaml",
            "rules:\n  - name: chatty\n    on: message\n    script: chatty.rhai\n",
        ),
        // 200 lines of 100 KB each: 20 MB of log, were it all kept.
        (
            "olga/chatty/chatty.rhai",
            "let s = \"\";\ns.pad(100000, 'x');\nfor i in 0..200 { log(s); }\nreply(event, \"done\");\n",
        ),
    ])
    .await;
    post(&tg, "wamid.LOG1", "hi").await;
    let run = run_of(&tg, "chatty").await;
    assert_eq!((run.outcome.as_str(), &run.error), ("ok", &None));
    let total: usize = run.logs.iter().map(String::len).sum();
    assert!(total <= 66 * 1024, "{total} bytes of log kept");
    // Each kept line is cut to 2 KiB, saying by how much.
    assert!(run.logs[0].len() < 2100, "{}", run.logs[0].len());
    assert!(
        run.logs[0].ends_with("… [97952 more bytes]"),
        "{}",
        &run.logs[0][2000..]
    );
    let kept = run.logs.len() - 1;
    assert_eq!(
        run.logs.last().unwrap(),
        &format!(
            "… log truncated: {} more bytes in {} lines (a run keeps 64 KiB of log)",
            (200 - kept) * 100_000,
            200 - kept
        )
    );
    // The run's actions went through.
    tg.fake.wait_for(1, T).await;
    tg.shutdown().await;
}

#[tokio::test]
async fn a_script_deeper_than_its_stack_fails_alone_and_the_gate_goes_on() {
    let nested = format!("{}f(n - 1){}", "id(".repeat(20), ")".repeat(20));
    let wide = format!(
        "fn id(x) {{ x }}\nfn f(n) {{ if n <= 0 {{ return 0; }} {nested} + 1 }}\nf(1000);\n"
    );
    let files = [
        (
            "olga/deep/project.yaml",
            "rules:\n  - name: deep\n    on: message\n    if: 'event.text == \"deep\"'\n    script: deep.rhai\n  - name: wide\n    on: message\n    if: 'event.text == \"wide\"'\n    script: wide.rhai\n  - name: echo\n    on: message\n    if: 'event.text == \"hi\"'\n    script: echo.rhai\n",
        ),
        // Plain recursion, and levels that each nest calls as arguments.
        ("olga/deep/deep.rhai", "fn f(n) { f(n + 1) }\nf(0);\n"),
        ("olga/deep/wide.rhai", wide.as_str()),
        ("olga/deep/echo.rhai", "reply(event, \"still here\");\n"),
    ];
    // A depth far above what any thread's stack holds.
    let tg = TestGate::start_opts(&files, "{ timeout_ms: 5000, max_call_depth: 100000 }").await;
    for (wamid, rule) in [("wamid.D1", "deep"), ("wamid.D2", "wide")] {
        post(&tg, wamid, rule).await;
        let run = run_of(&tg, rule).await;
        let err = run.error.unwrap_or_default();
        assert_eq!(run.outcome, "error", "{rule}");
        assert!(
            err.contains("the run went too deep") || err.contains("Stack overflow"),
            "{rule}: {err}"
        );
        assert!(
            err.starts_with(&format!("rules/olga/deep/{rule}.rhai:")),
            "{err}"
        );
    }
    post(&tg, "wamid.D3", "hi").await;
    let sent = tg.fake.wait_for(1, T).await;
    assert_eq!(sent[0].body["text"]["body"], "still here");
    let health = tg.client.get(tg.url("/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    tg.shutdown().await;
}

#[tokio::test]
async fn an_if_that_fails_is_placed_in_project_yaml_and_audited() {
    let tg = TestGate::start_with(&[
        (
            "olga/picky/project.yaml",
            "rules:\n  - name: picky\n    on: message\n    if: 'event.nosuch.len() > 0'\n    script: p.rhai\n",
        ),
        ("olga/picky/p.rhai", "reply(event, \"never\");\n"),
    ])
    .await;
    post(&tg, "wamid.IF1", "hi").await;
    let run = run_of(&tg, "picky").await;
    // Line 4; `len` is at column 23 of it.
    let expected = "rules/olga/picky/project.yaml:4:23: in `if:` of rule `picky`: Function not found: len (())";
    assert_eq!(
        (run.outcome.as_str(), run.error.as_deref()),
        ("error", Some(expected))
    );
    let audited = tg.store().audit_entries(Some("olga"), None, 100).unwrap();
    let entry = audited
        .iter()
        .find(|a| a.action == "rule.run")
        .expect("the run is audited");
    assert_eq!(entry.details["error"], expected);
    settled(&tg, "olga").await;
    assert!(tg.fake.requests().is_empty());
    tg.shutdown().await;
}

/// Deeply nested data is cloned and dropped by Rhai's own code, where no stack check runs: on
/// a thread of the default 2 MiB this aborted the whole gate (and again at every restart, the
/// event still pending). The real binary, whose threads have room for it, fails that run alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_data_fails_its_run_alone_in_the_real_gate() {
    use crate::common::bin::{Bin, serve_fake};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    write_home_with(
        home,
        &fake_url,
        &[
            (
                "olga/deep/project.yaml",
                "rules:\n  - name: deep\n    on: message\n    if: 'event.text == \"deep\"'\n    script: d.rhai\n",
            ),
            (
                "olga/deep/d.rhai",
                "let a = #{};\nfor i in 0..10000 { a = #{x: a}; }\nreply(event, \"nested\");\n",
            ),
        ],
        "{ timeout_ms: 2000 }",
    );
    let bin = Bin::start(home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    let send = |wamid: &'static str, text: &'static str| {
        let body = text_webhook(OLGA, "33612345678", "Ann", wamid, text);
        let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &body);
        client
            .post(bin.url("/webhook/whatsapp/olga"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
    };
    assert_eq!(send("wamid.DEEP1", "deep").await.unwrap().status(), 200);
    // The run ends (done or cut off by its limits) and is traced: the gate lived through it.
    let db = home.join("data/wagate.db");
    eventually("the deep run's trace", T, || {
        let db = db.clone();
        async move {
            let conn = rusqlite::Connection::open(&db).ok()?;
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM rule_runs WHERE rule = 'deep'",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            (n == 1).then_some(())
        }
    })
    .await;
    // And it goes on answering.
    let health = client.get(bin.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    drop(fake);
    let (status, _, _) = bin.terminate().await;
    assert!(status.success(), "{status:?}");
    fake_cancel.cancel();
}
