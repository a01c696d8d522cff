//! The script API over the real store: state across events and restarts, lookups of tables,
//! contacts and messages, persisted schedules, run modes, and no way to reach another user.

use crate::common::*;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn project(user_project: &str, rules_yaml: &str) -> (String, String) {
    (
        format!("{user_project}/project.yaml"),
        rules_yaml.to_string(),
    )
}

async fn post(tg: &TestGate, u: TestUser, from: &str, wamid: &str, text: &str) {
    let body = text_webhook(u, from, "Ann", wamid, text);
    assert_eq!(tg.post_signed(u, &body).await.status(), 200);
}

fn texts(tg: &TestGate) -> Vec<String> {
    tg.fake
        .requests()
        .iter()
        .map(|r| r.body["text"]["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn state_persists_across_events_and_restarts() {
    let files = [
        project("olga/count", "rules:\n  - name: count\n    on: message\n    script: c.rhai\n"),
        ("olga/count/c.rhai".into(), "let n = state(\"count\");\nif n == () { n = 0; }\nset_state(\"count\", n + 1);\nreply(event, `#${n + 1}`);\n".into()),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut tg = TestGate::start_with(&files).await;
    for i in 1..=3 {
        post(&tg, OLGA, "33612345678", &format!("wamid.C{i}"), "hi").await;
        tg.fake.wait_for(i, T).await;
    }
    tg.restart().await;
    post(&tg, OLGA, "33612345678", "wamid.C4", "hi").await;
    tg.fake.wait_for(4, T).await;
    assert_eq!(texts(&tg), vec!["#1", "#2", "#3", "#4"]);
    tg.shutdown().await;
}

#[tokio::test]
async fn lookups_read_tables_and_this_users_store() {
    let files = [
        project(
            "olga/tour",
            "tables:\n  participants: participants.csv\nrules:\n  - name: who\n    on: message\n    script: who.rhai\n",
        ),
        ("olga/tour/participants.csv".into(), "phone,name,meeting_point\n33612345678,Ann,Gare de Lyon\n33699999999,Bob,Louvre\n".into()),
        (
            "olga/tour/who.rhai".into(),
            "let p = lookup(\"participants\", event.from);\nlet c = lookup(\"contacts\", event.from);\nlet m = lookup(\"messages\", #{ contact: event.from });\nreply(event, `${p.name} meets at ${p.meeting_point}; contact ${c.name}; ${m.len()} message(s)`);\n".into(),
        ),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tg = TestGate::start_with(&files).await;
    post(&tg, OLGA, "33612345678", "wamid.L1", "where?").await;
    tg.fake.wait_for(1, T).await;
    settled(&tg, "olga").await;
    post(&tg, OLGA, "33612345678", "wamid.L2", "and?").await;
    tg.fake.wait_for(2, T).await;
    // The second run sees the first message, its reply and the second message.
    assert_eq!(
        texts(&tg),
        vec![
            "Ann meets at Gare de Lyon; contact Ann; 1 message(s)",
            "Ann meets at Gare de Lyon; contact Ann; 3 message(s)"
        ]
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_script_cannot_reach_another_users_data_or_name_another_user() {
    let files = [
        project("olga/spy", "rules:\n  - name: spy\n    on: message\n    script: spy.rhai\n"),
        (
            "olga/spy/spy.rhai".into(),
            "let c = lookup(\"contacts\", \"972501112222\");\nlet m = lookup(\"messages\", #{ contact: \"972501112222\" });\nlet s = state(\"secret\");\nsend(\"+15550000000\", #{ template: \"report\", params: [`contact=${c == ()} messages=${m.len()} state=${s == ()}`] });\n".into(),
        ),
        project("azarya/keep", "rules:\n  - name: keep\n    on: message\n    script: keep.rhai\n"),
        ("azarya/keep/keep.rhai".into(), "set_state(\"secret\", \"azarya's\");\n".into()),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tg = TestGate::start_with(&files).await;
    post(&tg, AZARYA, "972501112222", "wamid.AZ", "shalom").await;
    settled(&tg, "azarya").await;
    assert_eq!(
        tg.store()
            .contact_name("azarya", "972501112222")
            .unwrap()
            .as_deref(),
        Some("Ann")
    );
    post(&tg, OLGA, "33612345678", "wamid.OL", "hi").await;
    let reqs = tg.fake.wait_for(1, T).await;
    assert_eq!(
        reqs[0].body["template"]["components"][0]["parameters"][0]["text"],
        "contact=true messages=0 state=true"
    );
    assert_eq!(
        reqs[0].phone_number_id, OLGA.phone,
        "Olga's rule sends as Olga"
    );
    // No function of the API takes a user, a token or a path: naming one is an error.
    for src in [
        "send(\"azarya\", \"+15550000000\", \"hi\")",
        "set_state(\"azarya\", \"k\", 1)",
        "import \"../../azarya/keep/keep\" as k;",
    ] {
        tg.write_rule_file("olga/spy/spy.rhai", src);
        let seen = tg.reload_count();
        let r = tg.next_reload(seen).await;
        if src.starts_with("import") {
            assert_eq!(r.outcome, "rejected", "{src}");
            assert!(r.error.unwrap().contains("inside the project folder"));
        } else {
            assert_eq!(r.outcome, "live", "{src}");
            post(
                &tg,
                OLGA,
                "33612345678",
                &format!("wamid.{}", src.len()),
                "hi",
            )
            .await;
            settled(&tg, "olga").await;
            let run = &tg.store().runs(Some("olga"), Some("spy"), 1).unwrap()[0];
            assert!(
                run.error.as_deref().unwrap().contains("Function not found"),
                "{run:?}"
            );
        }
    }
    tg.shutdown().await;
}

#[tokio::test]
async fn schedules_are_persisted_and_survive_a_reload() {
    let files = [
        project("olga/later", "rules:\n  - name: later\n    on: message\n    script: l.rhai\n    call: on_message\n"),
        (
            "olga/later/l.rhai".into(),
            "fn remind(arg) { send(arg.to, \"reminder\") }\nfn on_message(event) { schedule(3600, \"remind\", #{ to: event.from }); }\n".into(),
        ),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tg = TestGate::start_with(&files).await;
    let before = chrono::Utc::now().timestamp_millis();
    post(&tg, OLGA, "33612345678", "wamid.SC", "hi").await;
    settled(&tg, "olga").await;
    let s = tg.store().schedules("olga").unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].call.as_str(), s[0].state.as_str(), s[0].rule.as_str()),
        ("remind", "pending", "later")
    );
    let due = s[0].due_at_ms - before;
    assert!((3_590_000..3_700_000).contains(&due), "{due}");
    let seen = tg.reload_count();
    tg.write_rule_file(
        "olga/later/l.rhai",
        "fn remind(arg) { send(arg.to, \"reminder v2\") }\nfn on_message(event) { }\n",
    );
    assert_eq!(tg.next_reload(seen).await.outcome, "live");
    assert_eq!(
        tg.store().schedules("olga").unwrap(),
        s,
        "the pending call survives the reload"
    );
    tg.shutdown().await;
}

/// A gate whose project `dir` has `rules_yaml` and the script `g.rhai`, whose runs may go on for
/// 15 s (those that wait for [`release`]).
async fn gate_with_script(dir: &str, rules_yaml: &str, script: &str) -> TestGate {
    let files = [
        project(dir, rules_yaml),
        (format!("{dir}/g.rhai"), script.to_string()),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    TestGate::start_opts(&files, "{ timeout_ms: 15000, max_operations: 0 }").await
}

/// Sets Olga's `release` state of `project` straight in the database: the runs waiting for it
/// end.
fn release(tg: &TestGate, project: &str) {
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    conn.execute(
        "INSERT INTO state (user, project, key, value, updated_at) VALUES ('olga', ?1, 'release', 'true', 0)",
        [project],
    )
    .unwrap();
}

/// Waits for one rule run to be going on (`what`), then checks that /healthz answers while it
/// still does.
async fn answered_while_one_run_goes_on(tg: &TestGate, what: &str) {
    let inflight = tg.gate().runs_in_flight.clone();
    eventually(what, T, || {
        let n = inflight.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let health = tg.client.get(tg.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        inflight.load(Ordering::SeqCst),
        1,
        "answered while the run goes on"
    );
}

/// A rule that runs long holds none of the gate's async workers: webhooks are answered and
/// other contacts' events run while it goes on. (The test runtime has one thread, so no rule
/// may run on it: one that did would stop the gate until it ended.)
#[tokio::test]
async fn a_rule_that_runs_long_holds_no_worker() {
    let tg = gate_with_script(
        "olga/waits",
        "rules:\n  - name: gate\n    on: message\n    script: g.rhai\n",
        "if event.text == \"wait\" { while state(\"release\") != true { } }\nreply(event, \"done \" + event.text);\n",
    )
    .await;
    post(&tg, OLGA, "33611111111", "wamid.W1", "wait").await;
    let inflight = tg.gate().runs_in_flight.clone();
    // While it waits: a webhook is acked and another contact's event is answered.
    answered_while_one_run_goes_on(&tg, "the waiting run to start").await;
    post(&tg, OLGA, "33622222222", "wamid.Q1", "quick").await;
    eventually("the quick event's reply", T, || {
        let t = texts(&tg);
        async move { t.contains(&"done quick".to_string()).then_some(()) }
    })
    .await;
    assert_eq!(
        inflight.load(Ordering::SeqCst),
        1,
        "the waiting run goes on"
    );
    assert!(!texts(&tg).contains(&"done wait".to_string()));
    release(&tg, "olga/waits");
    settled(&tg, "olga").await;
    assert!(texts(&tg).contains(&"done wait".to_string()));
    tg.shutdown().await;
}

/// A rule proven quick that turns slow is cut off on the worker and its event runs again on
/// the blocking pool: the one-thread runtime answers webhooks while the slow run goes on, and
/// the event has one trace, of the run that counted.
#[tokio::test]
async fn a_quick_rule_that_turns_slow_is_cut_off_on_the_worker_and_run_again_off_it() {
    let tg = gate_with_script(
        "olga/turns",
        "rules:\n  - name: gate\n    on: message\n    script: g.rhai\n",
        // Slow until released: a loop of fixed length can outlast the time limit on a busy
        // machine (a debug build, other tests), or end before the test looks.
        "if event.text == \"slow\" { while state(\"release\") != true { } }\nreply(event, \"done \" + event.text);\n",
    )
    .await;
    // Quick events prove the rule (32 in a row; more, in case the machine paused some).
    const QUICK: usize = 64;
    for i in 0..QUICK {
        post(&tg, OLGA, "33633333333", &format!("wamid.T{i}"), "quick").await;
    }
    eventually("the quick replies", T, || {
        let n = texts(&tg).len();
        async move { (n == QUICK).then_some(()) }
    })
    .await;
    post(&tg, OLGA, "33633333333", "wamid.TS", "slow").await;
    answered_while_one_run_goes_on(&tg, "the slow run to go on off the worker").await;
    release(&tg, "olga/turns");
    settled(&tg, "olga").await;
    assert!(texts(&tg).contains(&"done slow".to_string()));
    let runs = tg.store().runs(Some("olga"), None, 5).unwrap();
    let slow: Vec<_> = runs
        .iter()
        .filter(|r| r.event_id == runs[0].event_id)
        .collect();
    assert_eq!(slow.len(), 1, "one trace for the slow event: {runs:?}");
    assert_eq!(slow[0].outcome, "ok", "{:?}", slow[0]);
    tg.shutdown().await;
}

async fn run_mode_case(mode: &str) -> (TestGate, Vec<wagate::store::RunTrace>) {
    let yaml =
        format!("rules:\n  - name: gate\n    on: message\n    script: g.rhai\n    mode: {mode}\n");
    let tg = gate_with_script(
        "olga/modes",
        &yaml,
        "while state(\"release\") != true { }\nreply(event, \"done \" + event.text);\n",
    )
    .await;
    post(&tg, OLGA, "33611111111", "wamid.MA", "A").await;
    let inflight = tg.gate().runs_in_flight.clone();
    eventually("A's run to start", T, || {
        let n = inflight.load(Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    post(&tg, OLGA, "33622222222", "wamid.MB", "B").await;
    let store = tg.store().clone();
    if mode == "single" {
        // B's run is refused at once while A's goes on.
        eventually("B to be skipped", T, || {
            let store = store.clone();
            async move { (!store.runs(Some("olga"), None, 10).ok()?.is_empty()).then_some(()) }
        })
        .await;
    } else {
        eventually("B to wait", T, || {
            let n = inflight.load(Ordering::SeqCst);
            async move { (n == 2).then_some(()) }
        })
        .await;
    }
    release(&tg, "olga/modes");
    settled(&tg, "olga").await;
    let mut runs = tg.store().runs(Some("olga"), None, 10).unwrap();
    runs.reverse();
    (tg, runs)
}

#[tokio::test]
async fn mode_single_skips_a_firing_while_a_run_goes_on() {
    let (tg, runs) = run_mode_case("single").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].outcome.as_str(), runs[0].event_id),
        ("skipped", Some(2))
    );
    assert!(
        runs[0].logs[0].contains("mode: single"),
        "{:?}",
        runs[0].logs
    );
    assert_eq!(runs[1].outcome, "ok");
    let sent: Vec<Value> = tg
        .fake
        .requests()
        .iter()
        .map(|r| r.body["text"]["body"].clone())
        .collect();
    assert_eq!(sent, vec!["done A"]);
    tg.shutdown().await;
}

#[tokio::test]
async fn mode_queued_runs_a_firing_after_the_one_going_on() {
    let (tg, runs) = run_mode_case("queued").await;
    assert_eq!(
        runs.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
        vec!["ok", "ok"]
    );
    tg.fake.wait_for(2, T).await;
    let mut sent: Vec<String> = texts(&tg);
    sent.sort();
    assert_eq!(sent, vec!["done A", "done B"]);
    tg.shutdown().await;
}

/// Thirty contacts raise one count at once: their runs go on in parallel, and a run whose
/// read value another run changed meanwhile goes again, so no step is lost.
#[tokio::test]
async fn a_count_raised_by_many_contacts_at_once_loses_no_step() {
    const N: usize = 30;
    let tg = gate_with_script(
        "olga/tally",
        "rules:\n  - name: tally\n    on: message\n    script: g.rhai\n",
        // Some work between the read and the write, as a real rule has.
        "let n = state(\"n\");\nif n == () { n = 0; }\nlet i = 0;\nwhile i < 20000 { i += 1; }\nset_state(\"n\", n + 1);\nreply(event, `#${n + 1}`);\n",
    )
    .await;
    for i in 0..N {
        post(
            &tg,
            OLGA,
            &format!("336000000{i:02}"),
            &format!("wamid.N{i}"),
            "count me",
        )
        .await;
    }
    eventually("every reply", T, || {
        let n = texts(&tg).len();
        async move { (n >= N).then_some(()) }
    })
    .await;
    settled(&tg, "olga").await;
    let n = tg.store().state_get("olga", "olga/tally", "n").unwrap();
    assert_eq!(n, Some(serde_json::json!(N)), "a step was lost");
    // Each contact got its own number: none read the count another had already used.
    let mut got: Vec<String> = texts(&tg);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), N, "{got:?}");
    tg.shutdown().await;
}

#[tokio::test]
async fn the_id_send_returns_is_the_messages_local_id() {
    let tg = TestGate::start_with(&[
        (
            "olga/audit/project.yaml",
            "rules:\n  - name: sentid\n    on: message\n    script: ids.rhai\n",
        ),
        (
            "olga/audit/ids.rhai",
            "let a = reply(event, \"first\");\nlet b = send(event.from, \"second\");\nset_state(\"ids\", [a, b]);\nlog(b);\n",
        ),
    ])
    .await;
    post(&tg, OLGA, "33612345678", "wamid.ID1", "hi").await;
    tg.fake.wait_for(2, T).await;
    let mut rows = settled(&tg, "olga").await;
    rows.sort_by_key(|r| r.id);
    let keys: Vec<&str> = rows.iter().map(|r| r.idem_key.as_str()).collect();
    let ids = tg
        .store()
        .state_get("olga", "olga/audit", "ids")
        .unwrap()
        .expect("the run stored the ids");
    assert_eq!(
        ids,
        serde_json::json!(keys),
        "the ids are the outbox rows' keys"
    );
    let run = &tg.store().runs(Some("olga"), Some("sentid"), 1).unwrap()[0];
    assert_eq!(run.logs, vec![keys[1].to_string()]);
    // The export's (and the messages table's) local_id of each message is that id too.
    let v = crate::export::export_json(tg.store(), &wagate::export::ExportOptions::default());
    let mut exported: Vec<(String, String)> = v["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "out")
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_string(),
                m["local_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    exported.sort();
    assert_eq!(
        exported,
        vec![
            ("first".to_string(), keys[0].to_string()),
            ("second".to_string(), keys[1].to_string())
        ]
    );
    tg.shutdown().await;
}
