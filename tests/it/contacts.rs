//! The contact book with real parts: labels given by scripts (committed with the run's other
//! effects) and by the CLI, CSV imports through the built binary, and `lookup("contacts",
//! #{label})` driving a bulk template send to every labelled contact over the fake Cloud API.

use crate::common::{self, AZARYA, OLGA, TestGate, sent_to_phone, settled, text_webhook};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

/// Runs the built binary on the home of `cfg` off the async runtime (the gate and the fake
/// Cloud API it may talk to run on it), and checks it printed no secret.
pub async fn wagate(cfg: &Path, args: &[&str]) -> Output {
    let cfg = cfg.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .arg("--config")
            .arg(&cfg)
            .args(&args)
            .env_remove("WAGATE_CONFIG")
            .env_remove("WAGATE_PASSPHRASE")
            .env_remove("WAGATE_LOG")
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for u in [OLGA, AZARYA] {
        for s in [u.token, u.secret, u.verify] {
            assert!(!all.contains(s), "printed a secret: {all}");
        }
    }
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary; it must succeed. Returns stdout.
pub async fn ok(cfg: &Path, args: &[&str]) -> String {
    let out = wagate(cfg, args).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs the binary expecting exit `code`; returns (stdout, stderr).
pub async fn fails(cfg: &Path, args: &[&str], code: i32) -> (String, String) {
    let out = wagate(cfg, args).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

const TOUR_PROJECT: (&str, &str) = (
    "olga/tour/project.yaml",
    r#"rules:
  - name: join
    on: message
    if: 'event.text.starts_with("join")'
    script: book.rhai
    call: join
  - name: leave
    on: message
    if: 'event.text == "leave"'
    script: book.rhai
    call: leave
  - name: announce
    on: message
    if: 'event.text == "announce"'
    script: book.rhai
    call: announce
"#,
);
const TOUR_SCRIPT: (&str, &str) = (
    "olga/tour/book.rhai",
    r#"fn join(ev) {
    let label = if ev.text == "join" { "PARIS-2026" } else { ev.text.sub_string(5) };
    add_label(ev.from, label);
}
fn leave(ev) {
    remove_label(ev.from, "PARIS-2026");
}
fn announce(ev) {
    let all = lookup("contacts", #{ label: "PARIS-2026" });
    for c in all {
        log(`${c.contact} ${c.labels}`);
        send(c.contact, #{ template: "tour_reminder", language: "fr", params: [c.name ?? "friend"] });
    }
}
"#,
);

async fn post_text(tg: &TestGate, from: &str, name: &str, wamid: &str, text: &str) {
    let r = tg
        .post_signed(OLGA, &text_webhook(OLGA, from, name, wamid, text))
        .await;
    assert_eq!(r.status(), 200);
    settled(tg, OLGA.name).await;
}

#[tokio::test]
async fn labels_from_scripts_and_csv_drive_a_bulk_template_send() {
    let tg = TestGate::start_with(&[TOUR_PROJECT, TOUR_SCRIPT]).await;
    let cfg = tg.config_path();
    // Two participants who never wrote come from the tour's list.
    let csv = tg.dir.path().join("paris.csv");
    std::fs::write(
        &csv,
        "name,phone\nAnn Martin,+33 6 11 11 11 11\nBob Roy,33622222222\n",
    )
    .unwrap();
    let out = ok(
        &cfg,
        &[
            "contacts",
            "olga",
            "import",
            csv.to_str().unwrap(),
            "--label",
            "PARIS-2026",
        ],
    )
    .await;
    assert!(
        out.contains("imported 2 contact(s)")
            && out.contains("2 new, 0 already known, 2 newly labelled PARIS-2026"),
        "{out}"
    );
    // Carl joins by writing; Dan writes but joins another tour.
    post_text(&tg, "33633333333", "Carl", "wamid.C1", "join").await;
    post_text(&tg, "33644444444", "Dan", "wamid.D1", "join LYON-2027").await;
    let book = tg
        .store()
        .contact_book(OLGA.name, Some("PARIS-2026"))
        .unwrap();
    let labelled: Vec<&str> = book.iter().map(|c| c.contact.as_str()).collect();
    assert_eq!(labelled, vec!["33611111111", "33622222222", "33633333333"]);
    // The labels are Olga's alone.
    assert!(
        tg.store()
            .contact_book(AZARYA.name, None)
            .unwrap()
            .is_empty()
    );

    post_text(&tg, "33699999999", "Olga", "wamid.O1", "announce").await;
    let bodies: Vec<Value> = sent_to_phone(&tg.fake, OLGA.phone)
        .into_iter()
        .filter(|b| b["type"] == "template")
        .collect();
    // Different recipients go in parallel: compare in order of number.
    let mut got: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["to"].as_str().unwrap().to_string(),
                b["template"]["components"][0]["parameters"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("+33611111111".to_string(), "Ann Martin".to_string()),
            ("+33622222222".to_string(), "Bob Roy".to_string()),
            ("+33633333333".to_string(), "Carl".to_string()),
        ]
    );
    let runs = tg
        .store()
        .runs(Some(OLGA.name), Some("announce"), 1)
        .unwrap();
    assert_eq!(runs[0].logs[0], "33611111111 [\"PARIS-2026\"]");

    // Leaving removes the label; the CLI sees what scripts did, and labels and unlabels too.
    post_text(&tg, "33633333333", "Carl", "wamid.C2", "leave").await;
    let list = ok(&cfg, &["contacts", "olga", "list", "--label", "PARIS-2026"]).await;
    assert!(
        list.ends_with("2 contact(s) labelled PARIS-2026\n"),
        "{list}"
    );
    assert!(
        list.contains("+33611111111  Ann Martin  [PARIS-2026]  never wrote"),
        "{list}"
    );
    let out = ok(
        &cfg,
        &[
            "contacts",
            "olga",
            "label",
            "+33 6 44 44 44 44",
            "PARIS-2026",
            "VIP",
        ],
    )
    .await;
    assert_eq!(
        out,
        "labelled +33644444444 as PARIS-2026, VIP (2 change(s))\n"
    );
    ok(
        &cfg,
        &["contacts", "olga", "unlabel", "33611111111", "PARIS-2026"],
    )
    .await;
    let all = ok(&cfg, &["contacts", "olga", "list"]).await;
    assert!(
        all.contains("+33644444444  Dan         [LYON-2027, PARIS-2026, VIP]  last wrote"),
        "{all}"
    );
    assert!(
        all.contains("+33611111111  Ann Martin  [-]  never wrote"),
        "{all}"
    );
    assert!(all.ends_with("5 contact(s)\n"), "{all}");
    let (_, err) = fails(&cfg, &["contacts", "olga", "label", "33611111111", " "], 2).await;
    assert!(err.contains("a label cannot be empty"), "{err}");
    let (_, err) = fails(&cfg, &["contacts", "olga", "label", "nobody", "X"], 2).await;
    assert!(
        err.contains("`nobody` is not a phone number or wa_id"),
        "{err}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_bad_label_fails_the_run_and_commits_none_of_its_effects() {
    let project = (
        "olga/tour/project.yaml",
        "rules:\n  - name: tag\n    on: message\n    script: tag.rhai\n",
    );
    let script = (
        "olga/tour/tag.rhai",
        "add_label(event.from, \"GOOD\");\nset_state(\"seen\", true);\nadd_label(event.from, event.text);\n",
    );
    let tg = TestGate::start_with(&[project, script]).await;
    post_text(&tg, "33611111111", "Ann", "wamid.A1", "line\nbreak").await;
    let run = &tg.store().runs(Some(OLGA.name), Some("tag"), 1).unwrap()[0];
    let err = run.error.as_deref().unwrap();
    assert!(
        err.starts_with("rules/olga/tour/tag.rhai:3:") || err.contains("tag.rhai:3:"),
        "{err}"
    );
    assert!(
        err.contains("add_label: label \"line\\nbreak\" holds a control character"),
        "{err}"
    );
    let book = tg.store().contact_book(OLGA.name, None).unwrap();
    assert_eq!(
        book[0].labels,
        Vec::<String>::new(),
        "the failed run's labels are dropped"
    );
    assert_eq!(
        tg.store()
            .state_get(OLGA.name, "olga/tour", "seen")
            .unwrap(),
        None
    );
    post_text(&tg, "33611111111", "Ann", "wamid.A2", "PARIS-2026").await;
    let book = tg.store().contact_book(OLGA.name, None).unwrap();
    assert_eq!(book[0].labels, vec!["GOOD", "PARIS-2026"]);
    tg.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_prints_label_changes_and_writes_nothing() {
    let tg = TestGate::start_with(&[TOUR_PROJECT, TOUR_SCRIPT]).await;
    let cfg = tg.config_path();
    let ev = tg.dir.path().join("join.json");
    std::fs::write(
        &ev,
        json!({"kind": "message", "from": "33655555555", "id": "wamid.X", "text": "join", "type": "text", "name": "Eve"}).to_string(),
    )
    .unwrap();
    let out = ok(
        &cfg,
        &[
            "rules",
            "test",
            "olga/tour/join",
            "--event",
            ev.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.contains("would label +33655555555 as PARIS-2026\n"),
        "{out}"
    );
    assert!(out.ends_with("dry run: nothing was sent\n"), "{out}");
    std::fs::write(
        &ev,
        json!({"kind": "message", "from": "33655555555", "id": "wamid.Y", "text": "leave", "type": "text"}).to_string(),
    )
    .unwrap();
    let out = ok(
        &cfg,
        &[
            "rules",
            "test",
            "olga/tour/leave",
            "--event",
            ev.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.contains("would unlabel +33655555555 from PARIS-2026\n"),
        "{out}"
    );
    assert!(
        tg.store().contact_book(OLGA.name, None).unwrap().is_empty(),
        "a dry run writes nothing"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_bad_csv_line_is_named_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    common::write_home(dir.path(), "http://127.0.0.1:9", &[]);
    let cfg = dir.path().join("gate.yaml");
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "phone,name\n+33611111111,Ann\n+33 6 12 ab,Bob\n33633333333,Carl\n",
    )
    .unwrap();
    let (out, err) = fails(
        &cfg,
        &["contacts", "olga", "import", csv.to_str().unwrap()],
        1,
    )
    .await;
    assert_eq!(out, "");
    let shown = csv.display().to_string();
    assert_eq!(
        err,
        format!(
            "error: {shown}:3: `+33 6 12 ab` is not a phone number or wa_id in international form (country code and number, e.g. +33612345678)\nnothing was imported\n"
        )
    );
    std::fs::write(&csv, "tel,name\n+33611111111,Ann\n").unwrap();
    let (_, err) = fails(
        &cfg,
        &["contacts", "olga", "import", csv.to_str().unwrap()],
        1,
    )
    .await;
    assert!(
        err.contains(&format!(
            "{shown}:1: the header needs a `phone` or `wa_id` column; it has: tel, name"
        )),
        "{err}"
    );
    std::fs::write(&csv, "phone,name\n33611111111,Ann,extra\n").unwrap();
    let (_, err) = fails(
        &cfg,
        &["contacts", "olga", "import", csv.to_str().unwrap()],
        1,
    )
    .await;
    assert!(
        err.contains(&format!("{shown}:2: 3 field(s) where the header has 2")),
        "{err}"
    );
    let list = ok(&cfg, &["contacts", "olga", "list"]).await;
    assert_eq!(list, "0 contact(s)\n");
    let (_, err) = fails(&cfg, &["contacts", "nobody", "list"], 1).await;
    assert!(err.contains("no user `nobody`"), "{err}");
    // A good file imports, and again is idempotent.
    std::fs::write(&csv, "phone,name\n33611111111,Ann\n").unwrap();
    ok(
        &cfg,
        &[
            "contacts",
            "olga",
            "import",
            csv.to_str().unwrap(),
            "--label",
            "PARIS-2026",
        ],
    )
    .await;
    let again = ok(
        &cfg,
        &[
            "contacts",
            "olga",
            "import",
            csv.to_str().unwrap(),
            "--label",
            "PARIS-2026",
        ],
    )
    .await;
    assert!(
        again.contains("0 new, 1 already known, 0 newly labelled PARIS-2026"),
        "{again}"
    );
}

#[tokio::test]
async fn lookups_take_a_number_as_typed_and_search_all_messages_for_the_newest_1000() {
    let tg = TestGate::start_with(&[]).await;
    post_text(&tg, "33612345678", "Ann", "wamid.L1", "hello").await;
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    // An old image, then 1,200 newer texts.
    let insert =
        "INSERT INTO messages (user, wamid, direction, contact, type, text, timestamp, status)
                  VALUES ('olga', ?1, 'in', '33699999999', ?2, '', ?3, 'received')";
    conn.execute(insert, rusqlite::params!["wamid.IMG", "image", 1_000])
        .unwrap();
    for i in 0..1200i64 {
        conn.execute(
            insert,
            rusqlite::params![format!("wamid.T{i}"), "text", 2_000 + i],
        )
        .unwrap();
    }
    let store = tg.store();
    let query = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let ann = store
        .lookup_contacts("olga", Some("+33 6 12 34 56 78"), None)
        .unwrap();
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert_eq!(ann[0]["name"], "Ann");
    let by_contact = store
        .lookup_contacts(
            "olga",
            None,
            Some(&query(json!({"contact": "+33612345678"}))),
        )
        .unwrap();
    assert_eq!(by_contact.len(), 1);
    let hers = store
        .lookup_messages(
            "olga",
            None,
            Some(&query(json!({"contact": "+33612345678"}))),
        )
        .unwrap();
    assert_eq!(hers.len(), 1, "{hers:?}");
    assert_eq!(hers[0]["id"], "wamid.L1");
    let images = store
        .lookup_messages("olga", None, Some(&query(json!({"type": "image"}))))
        .unwrap();
    assert_eq!(
        images.len(),
        1,
        "the older image is found behind 1,200 newer texts"
    );
    assert_eq!(images[0]["id"], "wamid.IMG");
    let newest = store
        .lookup_messages("olga", None, Some(&query(json!({}))))
        .unwrap();
    assert_eq!(newest.len(), 1000);
    tg.shutdown().await;
}
