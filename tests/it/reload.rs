//! Hot reload: a saved file goes live; a broken one is refused with its position while the last
//! good version keeps answering; a run in flight finishes on the version it started with.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

async fn reply_text(tg: &TestGate, n: usize, wamid: &str) -> String {
    let body = text_webhook(OLGA, "33612345678", "Ann", wamid, "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let reqs = tg.fake.wait_for(n, T).await;
    assert_eq!(reqs.len(), n);
    reqs[n - 1].body["text"]["body"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_saved_change_goes_live_and_a_broken_one_keeps_the_last_good_version() {
    let tg = TestGate::start().await;
    assert_eq!(reply_text(&tg, 1, "wamid.R1").await, "You said: hello");
    let start = tg.reload_count();
    tg.write_rule_file(
        "olga/replies/echo.rhai",
        "reply(event, \"v2: \" + event.text);\n",
    );
    let r = tg.next_reload(start).await;
    assert_eq!(r.outcome, "live");
    assert_eq!(reply_text(&tg, 2, "wamid.R2").await, "v2: hello");
    // A syntax error: refused with its position, and v2 goes on answering.
    tg.write_rule_file("olga/replies/echo.rhai", "reply(event, \"v3: \" + );\n");
    let r2 = tg.next_reload(start + 1).await;
    assert_eq!(r2.outcome, "rejected");
    let err = r2.error.unwrap();
    assert!(err.contains("--> rules/olga/replies/echo.rhai:1:"), "{err}");
    assert_eq!(r2.hash, r.hash, "the live hash is still v2's");
    assert_eq!(reply_text(&tg, 3, "wamid.R3").await, "v2: hello");
    // A broken project.yaml is refused the same way.
    tg.write_rule_file("olga/replies/echo.rhai", "reply(event, \"v4\");\n");
    tg.next_reload(start + 2).await;
    tg.write_rule_file(
        "olga/replies/project.yaml",
        "rules:\n  - name: echo\n    on: mesage\n    script: echo.rhai\n",
    );
    let r4 = tg.next_reload(start + 3).await;
    assert_eq!(r4.outcome, "rejected");
    assert!(r4.error.unwrap().contains("unknown trigger `mesage`"));
    assert_eq!(reply_text(&tg, 4, "wamid.R4").await, "v4");
    // A new project folder is picked up.
    tg.write_rule_file(
        "olga/replies/project.yaml",
        "rules:\n  - name: echo\n    on: message\n    script: echo.rhai\n",
    );
    tg.next_reload(start + 4).await;
    std::fs::create_dir_all(tg.dir.path().join("rules/olga/second")).unwrap();
    tg.write_rule_file(
        "olga/second/s.rhai",
        "reply(event, \"second saw \" + event.text);\n",
    );
    tg.write_rule_file(
        "olga/second/project.yaml",
        "rules:\n  - name: s\n    on: message\n    script: s.rhai\n",
    );
    let r6 = tg.next_reload(start + 5).await;
    assert!(
        r6.projects.get("olga/second").is_some(),
        "{:?}",
        r6.projects
    );
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.R6", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(6, T).await;
    let rows = settled(&tg, "olga").await;
    assert!(
        rows.iter()
            .any(|r| r.body["text"]["body"] == "second saw hi")
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_run_in_flight_finishes_on_the_version_it_started_with() {
    // v1 waits until the test releases it through the project's state.
    let v1 = "let n = 0;\nwhile state(\"release\") != true { n += 1; }\nreply(event, \"v1 after wait\");\n";
    let scripts = "{ timeout_ms: 15000, max_operations: 0 }";
    let tg = TestGate::start_opts(&[ECHO_PROJECT, ("olga/replies/echo.rhai", v1)], scripts).await;
    let project_hash = |tg: &TestGate| {
        let set = tg.gate().registry.snapshot();
        set.projects
            .iter()
            .find(|p| p.name == "olga/replies")
            .unwrap()
            .hash
            .clone()
    };
    let v1_hash = project_hash(&tg);
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.LONG", "hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let inflight = tg.gate().runs_in_flight.clone();
    eventually("the long run to start", T, || {
        let n = inflight.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let start = tg.reload_count();
    tg.write_rule_file("olga/replies/echo.rhai", "reply(event, \"v2\");\n");
    assert_eq!(tg.next_reload(start).await.outcome, "live");
    // Release v1 by writing the project's state as another process would.
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    conn.execute(
        "INSERT INTO state (user, project, key, value, updated_at) VALUES ('olga', 'olga/replies', 'release', 'true', 0)",
        [],
    )
    .unwrap();
    let reqs = tg.fake.wait_for(1, T).await;
    assert_eq!(reqs[0].body["text"]["body"], "v1 after wait");
    let runs = tg.store().runs(Some("olga"), None, 10).unwrap();
    assert_eq!(runs[0].version.as_deref(), Some(v1_hash.as_str()));
    assert_eq!(reply_text(&tg, 2, "wamid.AFTER").await, "v2");
    let runs = tg.store().runs(Some("olga"), None, 10).unwrap();
    assert_eq!(runs[0].version.as_deref(), Some(project_hash(&tg).as_str()));
    assert_ne!(project_hash(&tg), v1_hash);
    tg.shutdown().await;
}
