//! The script API's edges over the real gate: `log` in the gate's own log (and bounded there),
//! phone numbers a table holds as numbers, and the cap on a run's sends.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;
use wagate::store::RunTrace;

const T: Duration = Duration::from_secs(30);

async fn post(tg: &TestGate, from: &str, wamid: &str, text: &str) {
    let body = text_webhook(OLGA, from, "Ann", wamid, text);
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
}

/// The newest traced run of Olga's `rule` that its `if:` did not skip, once there is one
/// newer than `after` (a run id).
async fn run_of(tg: &TestGate, rule: &str, after: i64) -> RunTrace {
    let store = tg.store().clone();
    let rule = rule.to_string();
    eventually(&format!("a run of `{rule}`"), T, || {
        let (store, rule) = (store.clone(), rule.clone());
        async move {
            let runs = store.runs(Some("olga"), Some(&rule), 10).ok()?;
            runs.into_iter()
                .find(|r| r.outcome != "skipped" && r.id > after)
        }
    })
    .await
}

/// The real binary, its log as JSON lines: a script's `log` lines are in it with the user,
/// project and rule, and a run logging 100 000 lines leaves a bounded number there.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_reach_the_gates_log_named_and_bounded() {
    use crate::common::bin::{Bin, serve_fake};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (fake, fake_url, fake_cancel) = serve_fake().await;
    write_home_with(
        home,
        &fake_url,
        &[
            (
                "olga/tour/project.yaml",
                "rules:\n  - name: greet\n    on: message\n    if: 'event.text == \"hi\"'\n    script: greet.rhai\n  - name: flood\n    on: message\n    if: 'event.text == \"flood\"'\n    script: flood.rhai\n",
            ),
            (
                "olga/tour/greet.rhai",
                "log(`${event.name} said ${event.text}`);\nreply(event, \"hello\");\n",
            ),
            (
                "olga/tour/flood.rhai",
                "for i in 0..100000 { log(`line ${i}`); }\nreply(event, \"flooded\");\n",
            ),
        ],
        "{ timeout_ms: 30000, max_operations: 0 }",
    );
    let gate_yaml = home.join("gate.yaml");
    let mut cfg = std::fs::read_to_string(&gate_yaml).unwrap();
    cfg.push_str("log: { format: json }\n");
    std::fs::write(&gate_yaml, cfg).unwrap();
    let bin = Bin::start(home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    for (wamid, text) in [("wamid.LOG1", "hi"), ("wamid.LOG2", "flood")] {
        let body = text_webhook(OLGA, "33612345678", "Ann", wamid, text);
        let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &body);
        let status = client
            .post(bin.url("/webhook/whatsapp/olga"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // Both runs done: their replies went out.
    let sent = fake.wait_for(2, T).await;
    assert_eq!(sent.len(), 2);
    let (status, _, log) = bin.terminate().await;
    assert!(status.success(), "{status:?}");
    fake_cancel.cancel();
    let script: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "wagate::script")
        .collect();
    let greet: Vec<&Value> = script.iter().filter(|l| l["rule"] == "greet").collect();
    assert_eq!(greet.len(), 1, "{greet:?}");
    assert_eq!(
        (
            &greet[0]["level"],
            &greet[0]["user"],
            &greet[0]["project"],
            &greet[0]["text"]
        ),
        (
            &Value::from("INFO"),
            &Value::from("olga"),
            &Value::from("olga/tour"),
            &Value::from("Ann said hi")
        ),
        "{:?}",
        greet[0]
    );
    // The flood: its first 256 lines, then one line counting the rest.
    let flood: Vec<&Value> = script.iter().filter(|l| l["rule"] == "flood").collect();
    assert_eq!(flood.len(), 257, "{} lines", flood.len());
    assert_eq!(flood[0]["text"], "line 0");
    assert_eq!(flood[255]["text"], "line 255");
    let last = flood[256];
    assert_eq!(last["left_out_lines"], 100_000 - 256, "{last:?}");
    assert_eq!(
        (&last["user"], &last["project"]),
        (&"olga".into(), &"olga/tour".into())
    );
    assert!(
        log.len() < 256 * 1024,
        "the gate's log holds {} bytes",
        log.len()
    );
    assert!(!log.contains(OLGA.token) && !log.contains(OLGA.secret));
}

const TOUR: &str = "tables:\n  participants: participants.yaml\nrules:\n  - name: remind\n    on: message\n    if: 'event.text == \"remind\"'\n    script: remind.rhai\n  - name: bad\n    on: message\n    if: 'event.text == \"bad\"'\n    script: bad.rhai\n";

/// A YAML table's phone column is numbers.
const PARTICIPANTS: &str = "- phone: 33612345678\n  name: Ann\n  tour: PARIS-2026\n- phone: 33699999999\n  name: Bob\n  tour: PARIS-2026\n- phone: 4915112345678\n  name: Carl\n  tour: BERLIN-2026\n- phone: -33600000000\n  name: Typo\n  tour: NONE\n";

/// Ann, who just wrote, gets a free-form answer; the other participants of her tour a template:
/// each sent to the number the table holds.
const REMIND: &str = r#"let me = lookup("participants", event.from);
send(me.phone, `See you soon, ${me.name}`);
for p in lookup("participants", #{ tour: me.tour }) {
    if p.phone != me.phone {
        send(p.phone, #{ template: "tour_reminder", language: "fr", params: [p.name] });
    }
}
"#;

const BAD: &str = "let p = lookup(\"participants\", #{ name: \"Typo\" })[0];\nsend(p.phone, #{ template: \"tour_reminder\", language: \"fr\" });\n";

#[tokio::test]
async fn a_phone_number_a_table_holds_as_a_number_is_a_recipient() {
    let tg = TestGate::start_with(&[
        ("olga/tour/project.yaml", TOUR),
        ("olga/tour/participants.yaml", PARTICIPANTS),
        ("olga/tour/remind.rhai", REMIND),
        ("olga/tour/bad.rhai", BAD),
    ])
    .await;
    post(&tg, "33612345678", "wamid.R1", "remind").await;
    let run = run_of(&tg, "remind", 0).await;
    assert_eq!((run.outcome.as_str(), &run.error), ("ok", &None));
    let sent = tg.fake.wait_for(2, T).await;
    let mut to: Vec<(String, String)> = sent
        .iter()
        .map(|r| {
            let b = &r.body;
            let what = match b["type"].as_str() {
                Some("text") => b["text"]["body"].as_str().unwrap_or("").to_string(),
                Some("template") => {
                    format!("template {}", b["template"]["name"].as_str().unwrap_or(""))
                }
                other => format!("{other:?}"),
            };
            (b["to"].as_str().unwrap_or("").to_string(), what)
        })
        .collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            ("+33612345678".to_string(), "See you soon, Ann".to_string()),
            (
                "+33699999999".to_string(),
                "template tour_reminder".to_string()
            )
        ]
    );
    // A negative number is refused, naming it and where it was sent.
    post(&tg, "33612345678", "wamid.R2", "bad").await;
    let run = run_of(&tg, "bad", 0).await;
    let err = run.error.unwrap_or_default();
    assert_eq!(run.outcome, "error");
    assert!(
        err.starts_with(
            "rules/olga/tour/bad.rhai:2:1: send: the recipient -33600000000 is not a phone number"
        ),
        "{err}"
    );
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    tg.shutdown().await;
}

const MANY: &str = "rules:\n  - name: many\n    on: message\n    script: many.rhai\n";

const MANY_SCRIPT: &str = "let n = parse_int(event.text);\nfor i in 0..n {\n    send(33611110000 + i, #{ template: \"tour_reminder\", language: \"fr\" });\n}\nset_state(\"last\", n);\n";

#[tokio::test]
async fn a_run_over_scripts_max_sends_fails_and_queues_nothing() {
    let tg = TestGate::start_opts(
        &[
            ("olga/many/project.yaml", MANY),
            ("olga/many/many.rhai", MANY_SCRIPT),
        ],
        "{ timeout_ms: 5000, max_sends: 5 }",
    )
    .await;
    post(&tg, "33612345678", "wamid.M6", "6").await;
    let over = run_of(&tg, "many", 0).await;
    let expected = "rules/olga/many/many.rhai:3:5: send: the run asked to queue more than 5 messages, the most one run may (scripts.max_sends in gate.yaml): the run fails and none of its messages is queued";
    assert_eq!(
        (over.outcome.as_str(), over.error.as_deref()),
        ("error", Some(expected))
    );
    let audited = tg.store().audit_entries(Some("olga"), None, 100).unwrap();
    let entry = audited
        .iter()
        .find(|a| a.action == "rule.run")
        .expect("the failed run is audited");
    assert_eq!(entry.details["error"], expected);
    assert_eq!(entry.details["rule"], "many", "{:?}", entry.details);
    assert!(settled(&tg, "olga").await.is_empty(), "nothing queued");
    assert_eq!(
        tg.store().state_get("olga", "olga/many", "last").unwrap(),
        None
    );
    // At the cap, the run goes through.
    post(&tg, "33612345678", "wamid.M5", "5").await;
    let at = run_of(&tg, "many", over.id).await;
    assert_eq!((at.outcome.as_str(), &at.error), ("ok", &None));
    tg.fake.wait_for(5, T).await;
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    assert_eq!(tg.fake.requests().len(), 5);
    assert_eq!(
        tg.store().state_get("olga", "olga/many", "last").unwrap(),
        Some(Value::from(5))
    );
    tg.shutdown().await;
}
