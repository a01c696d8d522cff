//! Phone numbers as people write them, through the real gate and binary: `00CC…` and the
//! `(0)` trunk marker are the same number, a national number is refused before anything is
//! queued, project tables find a number written another way, a `;` CSV is read, duplicate
//! table keys are refused at load, `inject --from` posts digits, status shows one `+`, and
//! `display_phone_number` is kept as digits.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;
use wagate::graph::simulator::Fault;

/// Texts the fake Cloud API received (no read receipts), as (to, body).
fn texts(tg: &TestGate) -> Vec<(String, String)> {
    tg.fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["type"] == "text")
        .map(|b| {
            (
                b["to"].as_str().unwrap_or("").to_string(),
                b["text"]["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn claire_writes(tg: &TestGate, wamid: &str, text: &str) {
    let body = text_webhook(OLGA, "33612345678", "Claire", wamid, text);
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(tg, "olga").await;
}

#[tokio::test]
async fn send_cli_reads_00_and_trunk_forms_and_refuses_a_national_number() {
    let tg = TestGate::start_with(&[]).await;
    claire_writes(&tg, "wamid.C1", "hello").await;
    for (to, text) in [("0033612345678", "one"), ("+33 (0)6 12 34 56 78", "two")] {
        let o = wagate_in(tg.dir.path(), &["send", "olga", "--to", to, "--text", text]).await;
        assert!(o.status.success(), "{to}: {}", output_text(&o));
    }
    assert_eq!(
        texts(&tg),
        vec![
            ("+33612345678".to_string(), "one".to_string()),
            ("+33612345678".to_string(), "two".to_string())
        ]
    );
    let o = wagate_in(
        tg.dir.path(),
        &["send", "olga", "--to", "06 12 34 56 78", "--text", "three"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    let err = output_text(&o);
    assert!(
        err.contains("national number") && err.contains("+33 6 12 34 56 78"),
        "{err}"
    );
    assert_eq!(
        tg.store().outbox("olga").unwrap().len(),
        2,
        "nothing queued"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn script_send_and_window_open_read_the_same_number_and_refuse_a_national_one() {
    let project = (
        "olga/p/project.yaml",
        "rules:\n  - name: intl\n    on: message\n    if: 'event.text == \"intl\"'\n    script: intl.rhai\n  - name: national\n    on: message\n    if: 'event.text == \"national\"'\n    script: national.rhai\n",
    );
    let intl = (
        "olga/p/intl.rhai",
        "if window_open(\"0033 6 12 34 56 78\") { send(\"0033 6 12 34 56 78\", \"A\"); }\nsend(\"+33 (0)6 12 34 56 78\", \"B\");\n",
    );
    let national = ("olga/p/national.rhai", "send(\"06 12 34 56 78\", \"C\");\n");
    let tg = TestGate::start_with(&[project, intl, national]).await;
    claire_writes(&tg, "wamid.C1", "intl").await;
    let got = eventually("two texts", Duration::from_secs(10), || async {
        let t = texts(&tg);
        (t.len() >= 2).then_some(t)
    })
    .await;
    assert_eq!(
        got,
        vec![
            ("+33612345678".to_string(), "A".to_string()),
            ("+33612345678".to_string(), "B".to_string())
        ]
    );
    claire_writes(&tg, "wamid.C2", "national").await;
    let run = &tg
        .store()
        .runs(Some(OLGA.name), Some("national"), 1)
        .unwrap()[0];
    let err = run.error.as_deref().unwrap_or("");
    assert!(err.contains("national number"), "{err}");
    assert_eq!(texts(&tg).len(), 2, "nothing sent to a guessed number");
    tg.shutdown().await;
}

#[tokio::test]
async fn project_tables_find_a_phone_written_another_way_and_read_semicolon_csv() {
    let project = (
        "olga/tour/project.yaml",
        "tables:\n  participants: participants.csv\n  excel: excel.csv\nrules:\n  - name: greet\n    on: message\n    script: greet.rhai\n",
    );
    let participants = (
        "olga/tour/participants.csv",
        "phone,name,language\n+33 6 12 34 56 78,Claire Martin,fr\n0033611111111,Marc,en\n",
    );
    let excel = (
        "olga/tour/excel.csv",
        "phone;greeting\n+33 6 12 34 56 78;Bonjour\n",
    );
    let script = (
        "olga/tour/greet.rhai",
        r#"let p = lookup("participants", event.from);
let x = lookup("excel", event.from);
let m = lookup("participants", "+33611111111");
let f = lookup("participants", #{ phone: event.from });
reply(event, `${p?.name} ${p?.language} ${x?.greeting} ${m?.name} ${f.len()}`);
"#,
    );
    let tg = TestGate::start_with(&[project, participants, excel, script]).await;
    claire_writes(&tg, "wamid.C1", "hi").await;
    let got = eventually("the reply", Duration::from_secs(10), || async {
        texts(&tg).into_iter().next()
    })
    .await;
    assert_eq!(got.1, "Claire Martin fr Bonjour Marc 1");
    tg.shutdown().await;
}

#[tokio::test]
async fn check_refuses_a_table_with_a_duplicate_key_naming_both_lines() {
    let project = (
        "olga/tour/project.yaml",
        "tables:\n  participants: participants.csv\nrules:\n  - name: greet\n    on: message\n    script: greet.rhai\n",
    );
    let script = ("olga/tour/greet.rhai", "log(\"hi\");\n");
    let tg = TestGate::start_with(&[project, script]).await;
    let csv = tg.dir.path().join("rules/olga/tour/participants.csv");
    write(
        &csv,
        "phone,name\n+33 6 12 34 56 78,Claire\n33622222222,Bob\n0033612345678,Claire again\n",
    );
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let out = output_text(&o);
    assert!(out.contains("participants.csv:4:"), "{out}");
    assert!(out.contains("on line 2"), "{out}");
    write(&csv, "phone,name\n33611111111,A\n33611111111,B\n");
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    let out = output_text(&o);
    assert!(
        out.contains("participants.csv:3:") && out.contains("`33611111111` is here and on line 2"),
        "{out}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn inject_posts_digits_and_status_shows_one_plus() {
    let tg = TestGate::start_with(&[]).await;
    // The CLI posts to the address gate.yaml names: the one this gate listens on.
    let addr = tg
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let cfg = tg.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    write(&cfg, &text.replace("127.0.0.1:0", &addr));
    let o = wagate_in(
        tg.dir.path(),
        &[
            "inject",
            "olga",
            "--from",
            "+33 6 12 34 56 78",
            "--text",
            "hi",
            "--wait",
            "0",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    let out = output_text(&o);
    assert!(out.contains("from +33612345678 to `olga`"), "{out}");
    settled(&tg, "olga").await;
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    let contacts: Vec<String> = conn
        .prepare("SELECT contact FROM messages")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(contacts, vec!["33612345678".to_string()]);
    // A send written with + and spaces that Graph refuses: shown with one +.
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            "+33 6 44 55 66 77",
            "--template",
            "hello_world",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let o = wagate_in(tg.dir.path(), &["status"]).await;
    let out = output_text(&o);
    assert!(out.contains("olga to +33644556677 (template)"), "{out}");
    assert!(!out.contains("++"), "{out}");
    tg.shutdown().await;
}

#[tokio::test]
async fn display_phone_number_is_kept_as_digits_and_a_national_one_is_refused() {
    let tg = TestGate::start_with(&[]).await;
    let users = tg.dir.path().join("users/olga.yaml");
    let text = std::fs::read_to_string(&users).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("display_phone_number"))
        .unwrap()
        + 1;
    let with = |n: &str| {
        text.lines()
            .map(|l| {
                if l.starts_with("display_phone_number") {
                    format!("display_phone_number: \"{n}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    write(&users, &with("01 00 00 00 01"));
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let out = output_text(&o);
    assert!(
        out.contains(&format!("users/olga.yaml:{line}:23")) && out.contains("national number"),
        "{out}"
    );
    write(&users, &with("+33 1 00 00 00 01"));
    let o = wagate_in(tg.dir.path(), &["export", "olga", "--out", "-"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["data"]["account"]["display_phone_number"], "33100000001");
    tg.shutdown().await;
}
