//! Black-box tests of `wagate rules test|list|defs` and `wagate runs`: the built binary on
//! homes in temp dirs, whole outputs compared. Dry runs must neither send nor write.

use crate::common::{self, AZARYA, OLGA, TestGate};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A Graph URL where nothing listens: a dry run that tried to send would fail loudly.
const NOWHERE: &str = "http://127.0.0.1:9";

fn wagate(cfg: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .env_remove("WAGATE_LOG")
        .output()
        .expect("the binary runs");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for u in [OLGA, AZARYA] {
        for s in [u.token, u.secret, u.verify] {
            assert!(!all.contains(s), "printed a secret: {all}");
        }
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary and returns its stdout, which must be a success with nothing on stderr.
fn ok(cfg: &Path, args: &[&str]) -> String {
    let out = wagate(cfg, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "", "{args:?}");
    text(&out.stdout)
}

/// Runs the binary expecting exit `code`; returns (stdout, stderr).
fn fails(cfg: &Path, args: &[&str], code: i32) -> (String, String) {
    let out = wagate(cfg, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

const REPLIES_PROJECT: (&str, &str) = (
    "olga/replies/project.yaml",
    "rules:\n  - name: echo\n    on: message\n    if: 'event.type == \"text\"'\n    script: echo.rhai\n",
);
const REPLIES_SCRIPT: (&str, &str) = (
    "olga/replies/echo.rhai",
    "log(\"from \" + event.name);\nreply(event, \"You said: \" + event.text);\n",
);
const TOUR_PROJECT: (&str, &str) = (
    "olga/tour/project.yaml",
    "rules:
  - name: evening
    on: { cron: \"0 18 * * *\" }
    mode: single
    script: tour.rhai
    call: evening
  - name: departure
    on: { at: \"2099-05-01T08:00\" }
    mode: queued
    max: 3
    script: tour.rhai
    call: departure
",
);
const TOUR_SCRIPT: (&str, &str) = (
    "olga/tour/tour.rhai",
    "fn evening(event) {
    log(`now ${now().format(\"%Y-%m-%d %H:%M\")}, ${event.rule} due ${event.scheduled_for}`);
    set_state(\"last\", now().to_string());
    schedule(now().add_days(1), \"remind\", #{ name: \"Ann\" });
}
fn departure(event) {
    send(\"+33611111111\", #{ template: \"bon_voyage\", language: \"fr\" });
}
fn remind(arg) {
    send(\"+33611111111\", #{ template: \"hello\", params: [arg.name] });
}
",
);
const AZARYA_PROJECT: (&str, &str) = (
    "azarya/daily/project.yaml",
    "rules:\n  - name: morning\n    on: { cron: \"30 7 * * Sun-Thu\" }\n    script: m.rhai\n",
);
const AZARYA_SCRIPT: (&str, &str) = ("azarya/daily/m.rhai", "log(\"good morning\");\n");

fn home(rules: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::write_home(dir.path(), NOWHERE, rules);
    let cfg = dir.path().join("gate.yaml");
    (dir, cfg)
}

fn full_home() -> (tempfile::TempDir, std::path::PathBuf) {
    home(&[
        REPLIES_PROJECT,
        REPLIES_SCRIPT,
        TOUR_PROJECT,
        TOUR_SCRIPT,
        AZARYA_PROJECT,
        AZARYA_SCRIPT,
    ])
}

/// Writes `json` to `name` in `dir` and returns its path as text.
fn event_file(dir: &Path, name: &str, json: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, json).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn dry_run_of_a_reply_rule_prints_what_it_would_send_and_sends_nothing() {
    let (dir, cfg) = full_home();
    let payload = common::text_webhook(OLGA, "33611111111", "Ann", "wamid.T1", "hello");
    let f = event_file(dir.path(), "payload.json", &payload);
    let out = ok(&cfg, &["rules", "test", "olga/replies/echo", "--event", &f]);
    assert_eq!(
        out,
        "rule olga/replies/echo (on: message)
if: event.type == \"text\" → matched
would send to +33611111111 (text, quoting wamid.T1): You said: hello
log: from Ann
dry run: nothing was sent
"
    );
    // An event map works the same; `user` is the project's.
    let map = br#"{"kind": "message", "id": "wamid.M", "from": "33622", "name": "Bo", "type": "text", "text": "hi\nthere", "user": "azarya"}"#;
    let f = event_file(dir.path(), "event.json", map);
    let out = ok(&cfg, &["rules", "test", "olga/replies/echo", "--event", &f]);
    assert_eq!(
        out,
        "rule olga/replies/echo (on: message)
if: event.type == \"text\" → matched
would send to +33622 (text, quoting wamid.M): You said: hi\\nthere
log: from Bo
dry run: nothing was sent
"
    );
    assert!(
        !dir.path().join("data/wagate.db").exists(),
        "a dry run creates no database"
    );
}

#[test]
fn a_false_if_is_reported_as_skipped() {
    let (dir, cfg) = full_home();
    let map = br#"{"kind": "message", "id": "wamid.I", "from": "33622", "name": "Bo", "type": "image", "text": ""}"#;
    let f = event_file(dir.path(), "image.json", map);
    let out = ok(&cfg, &["rules", "test", "olga/replies/echo", "--event", &f]);
    assert_eq!(
        out,
        "rule olga/replies/echo (on: message)
skipped: `if:` was false
dry run: nothing was sent
"
    );
}

#[test]
fn a_script_error_exits_1_located() {
    let (dir, cfg) = home(&[
        REPLIES_PROJECT,
        (
            "olga/replies/echo.rhai",
            "log(\"start\");\nlet n = event.text.len() +;\n",
        ),
    ]);
    // A syntax error is found when the home compiles, located like `check` does.
    let f = event_file(
        dir.path(),
        "e.json",
        &common::text_webhook(OLGA, "33611111111", "Ann", "wamid.E", "x"),
    );
    let (out, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &f],
        1,
    );
    assert_eq!(out, "");
    assert!(
        err.starts_with("error: ") && err.contains("--> rules/olga/replies/echo.rhai:2:"),
        "{err}"
    );
    // A run-time error: the output so far, then `error: file:line:col: message`.
    common::write(
        &dir.path().join("rules/olga/replies/echo.rhai"),
        "log(\"start\");\nreply(event, \"a\");\nthrow \"no program for \" + event.name;\n",
    );
    let (out, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &f],
        1,
    );
    assert_eq!(
        out,
        "rule olga/replies/echo (on: message)\nif: event.type == \"text\" → matched\nlog: start\n"
    );
    assert_eq!(
        err,
        "error: rules/olga/replies/echo.rhai:3:1: no program for Ann\n"
    );
    // An `if:` that fails is placed on its expression in project.yaml.
    common::write(
        &dir.path().join("rules/olga/replies/project.yaml"),
        "rules:\n  - name: echo\n    on: message\n    if: 'event.nope.len() > 1'\n    script: echo.rhai\n",
    );
    let (out, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &f],
        1,
    );
    assert_eq!(out, "rule olga/replies/echo (on: message)\n");
    assert_eq!(
        err,
        "error: rules/olga/replies/project.yaml:4:21: in `if:` of rule `echo`: Function not found: len (())\n"
    );
}

#[test]
fn now_drives_a_timed_rule_and_an_existing_database_is_only_read() {
    let (dir, cfg) = full_home();
    let db = dir.path().join("data/wagate.db");
    let store = wagate::store::Store::open(&db).unwrap();
    let expected = "rule olga/tour/evening (on: cron \"0 18 * * *\")
if: (none)
would set state last = \"2026-05-01T18:00:00+02:00\"
would schedule remind({\"name\":\"Ann\"}) at 2026-05-02T18:00:00+02:00 (2026-05-02T16:00:00Z)
log: now 2026-05-01 18:00, evening due 2026-05-01T18:00:00+02:00
dry run: nothing was sent
";
    // A local time in the project's timezone, or RFC 3339: the same instant.
    for now in ["2026-05-01T18:00", "2026-05-01T16:00:00Z"] {
        let out = ok(&cfg, &["rules", "test", "olga/tour/evening", "--now", now]);
        assert_eq!(out, expected, "--now {now}");
    }
    // A one-off rule fires for its own time; its send is shown, not sent.
    let out = ok(
        &cfg,
        &[
            "rules",
            "test",
            "olga/tour/departure",
            "--now",
            "2099-05-01T08:00",
        ],
    );
    assert_eq!(
        out,
        "rule olga/tour/departure (on: at \"2099-05-01T08:00\")
if: (none)
would send to +33611111111 (template): {\"name\":\"bon_voyage\",\"language\":{\"code\":\"fr\"}}
dry run: nothing was sent
"
    );
    assert!(
        store.outbox(OLGA.name).unwrap().is_empty(),
        "nothing queued"
    );
    assert_eq!(
        store.state_get(OLGA.name, "olga/tour", "last").unwrap(),
        None
    );
    assert!(store.schedules(OLGA.name).unwrap().is_empty());
    assert!(store.runs(None, None, 10).unwrap().is_empty(), "no trace");
    let (_, err) = fails(
        &cfg,
        &["rules", "test", "olga/tour/evening", "--now", "tomorrow"],
        2,
    );
    assert!(
        err.starts_with("error: --now: invalid time `tomorrow`"),
        "{err}"
    );
}

#[test]
fn rules_list_shows_triggers_modes_and_next_firings() {
    let (_dir, cfg) = full_home();
    let header = "USER    RULE                  TRIGGER                  MODE               NEXT (LOCAL, UTC)\n";
    let azarya = "azarya  azarya/daily/morning  cron \"30 7 * * Sun-Thu\"  parallel (max 10)  2026-05-03T07:30:00+03:00 (2026-05-03T04:30:00Z)\n";
    let olga = "\
olga    olga/replies/echo     message                  parallel (max 10)  -
olga    olga/tour/evening     cron \"0 18 * * *\"        single             2026-04-30T18:00:00+02:00 (2026-04-30T16:00:00Z)
olga    olga/tour/departure   at \"2099-05-01T08:00\"    queued (max 3)     2099-05-01T08:00:00+02:00 (2099-05-01T06:00:00Z)
";
    let out = ok(&cfg, &["rules", "list", "--now", "2026-04-30T12:00:00Z"]);
    assert_eq!(out, format!("{header}{azarya}{olga}"));
    // A fixed `at:` is the same whatever the clock says.
    let out = ok(&cfg, &["rules", "list", "olga"]);
    assert!(
        out.lines().any(|l| l
            == "olga  olga/tour/departure  at \"2099-05-01T08:00\"  queued (max 3)     2099-05-01T08:00:00+02:00 (2099-05-01T06:00:00Z)"),
        "{out}"
    );
    let out = ok(
        &cfg,
        &["rules", "list", "olga", "--now", "2100-01-01T00:00"],
    );
    assert!(
        out.contains("at \"2099-05-01T08:00\"  queued (max 3)     passed\n"),
        "{out}"
    );
    let (_, err) = fails(&cfg, &["rules", "list", "nobody"], 1);
    assert_eq!(
        err,
        "error: no user `nobody`; the users are: azarya, olga\n"
    );
    let (_empty, cfg) = home(&[]);
    assert_eq!(ok(&cfg, &["rules", "list"]), "no rules\n");
}

#[test]
fn rules_list_reports_compile_errors_located() {
    let (_dir, cfg) = home(&[REPLIES_PROJECT, ("olga/replies/echo.rhai", "let = 1;\n")]);
    let (out, err) = fails(&cfg, &["rules", "list"], 1);
    assert_eq!(out, "");
    assert!(
        err.starts_with("error: ") && err.contains("--> rules/olga/replies/echo.rhai:1:"),
        "{err}"
    );
    assert!(err.contains("1 | let = 1;"), "{err}");
}

#[test]
fn bad_paths_unknown_rules_and_unfit_events_exit_1_helpfully() {
    let (dir, cfg) = full_home();
    let f = event_file(
        dir.path(),
        "p.json",
        &common::text_webhook(OLGA, "33611111111", "Ann", "wamid.P", "x"),
    );
    let cases: &[(&str, &str)] = &[
        (
            "olga/nope/echo",
            "error: no project `olga/nope` in rules/; the projects are: azarya/daily, olga/replies, olga/tour\n",
        ),
        (
            "olga/replies/nope",
            "error: project `olga/replies` has no rule `nope`; its rules are: echo\n",
        ),
        (
            "olga/tour",
            "error: `olga/tour` is a project; name one of its rules: olga/tour/evening, olga/tour/departure\n",
        ),
        (
            "echo",
            "error: `echo` is not a rule path: write USER/PROJECT…/RULE, e.g. olga/replies/echo\n",
        ),
    ];
    for (path, expected) in cases {
        let (_, err) = fails(&cfg, &["rules", "test", path, "--event", &f], 1);
        assert_eq!(&err, expected, "{path}");
    }
    // An event rule needs an event (a usage error); the event must fit the rule.
    let (_, err) = fails(&cfg, &["rules", "test", "olga/replies/echo"], 2);
    assert!(err.contains("give --event FILE"), "{err}");
    let statuses = common::fixture_for(OLGA, "java-bindambc__textMessageStatusDelivered.json");
    let s = event_file(dir.path(), "s.json", &statuses);
    let (_, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &s],
        1,
    );
    assert!(
        err.starts_with("error: no event in ")
            && err.ends_with("starts rule `echo` (on: message); it holds: status\n"),
        "{err}"
    );
    let (_, err) = fails(
        &cfg,
        &["rules", "test", "olga/tour/evening", "--event", &f],
        1,
    );
    assert!(err.contains("it holds: message"), "{err}");
    let m = event_file(dir.path(), "m.json", br#"{"kind": "status", "id": "x"}"#);
    let (_, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &m],
        1,
    );
    assert_eq!(
        err,
        "error: rule `echo` runs on message, not on events of kind `status`\n"
    );
    let junk = event_file(dir.path(), "j.json", b"[1, 2]");
    let (_, err) = fails(
        &cfg,
        &["rules", "test", "olga/replies/echo", "--event", &junk],
        1,
    );
    assert!(err.contains("is neither a Meta webhook payload"), "{err}");
    let (_, err) = fails(
        &cfg,
        &[
            "rules",
            "test",
            "olga/replies/echo",
            "--event",
            "/nonexistent.json",
        ],
        1,
    );
    assert!(
        err.starts_with("error: cannot read /nonexistent.json"),
        "{err}"
    );
}

#[test]
fn rules_defs_writes_definitions_of_the_script_api() {
    let (dir, cfg) = full_home();
    let out = ok(&cfg, &["rules", "defs"]);
    assert_eq!(
        out,
        "wrote the Rhai definitions of the script API to rules/.defs/wagate.d.rhai
point your editor's Rhai language server at rules/.defs for completion
"
    );
    let defs = std::fs::read_to_string(dir.path().join("rules/.defs/wagate.d.rhai")).unwrap();
    assert!(defs.contains("module static;"), "{defs}");
    for f in [
        "fn send(",
        "fn reply(",
        "fn lookup(",
        "fn schedule(",
        "fn now()",
        "fn export(opts: map) -> map;",
        "fn window_open(",
        "fn add_label(",
    ] {
        assert!(defs.contains(f), "{f} in definitions");
    }
    assert!(!defs.contains("::"), "no Rust paths: {defs}");
    // The folder is not taken for a project.
    assert!(ok(&cfg, &["rules", "list"]).contains("olga/replies/echo"));
    let other = dir.path().join("elsewhere");
    let out = ok(&cfg, &["rules", "defs", "--out", other.to_str().unwrap()]);
    assert!(out.contains("elsewhere/wagate.d.rhai"), "{out}");
    assert!(other.join("wagate.d.rhai").is_file());
}

#[test]
fn runs_without_a_database_say_so() {
    let (_dir, cfg) = full_home();
    assert_eq!(
        ok(&cfg, &["runs"]),
        "no runs yet: there is no database at data/wagate.db (the gate creates it when it first serves)\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_show_a_real_gates_runs_newest_first() {
    let boom = (
        "olga/replies/project.yaml",
        "rules:
  - name: echo
    on: message
    if: 'event.type == \"text\"'
    script: echo.rhai
  - name: boom
    on: message
    if: 'event.text == \"boom\"'
    script: boom.rhai
  - name: picky
    on: message
    if: 'event.nope.len() > 1'
    script: boom.rhai
",
    );
    let boom_script = (
        "olga/replies/boom.rhai",
        "log(\"about to fail\");\nthrow \"kaboom\";\n",
    );
    let tg = TestGate::start_with(&[boom, REPLIES_SCRIPT, boom_script]).await;
    let cfg = tg.config_path();
    let body = common::text_webhook(OLGA, "33611111111", "Ann", "wamid.R1", "hi");
    assert!(tg.post_signed(OLGA, &body).await.status().is_success());
    common::settled(&tg, OLGA.name).await;
    let body = common::text_webhook(OLGA, "33611111111", "Ann", "wamid.R2", "boom");
    assert!(tg.post_signed(OLGA, &body).await.status().is_success());
    common::settled(&tg, OLGA.name).await;
    let c = cfg.clone();
    let out = tokio::task::spawn_blocking(move || ok(&c, &["runs", "olga"]))
        .await
        .unwrap();
    let blocks: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(blocks.len(), 6, "{out}");
    let picky = "  error: rules/olga/replies/project.yaml:12:21: in `if:` of rule `picky`: Function not found: len (())";
    let expected = [
        (
            "olga  olga/replies/picky  error",
            &*format!("  trigger: message (event 2)\n{picky}"),
        ),
        (
            "olga  olga/replies/boom  error",
            "  trigger: message (event 2)\n  log: about to fail\n  error: rules/olga/replies/boom.rhai:2:1: kaboom",
        ),
        (
            "olga  olga/replies/echo  ok",
            "  trigger: message (event 2)\n  log: from Ann\n  action: send to +33611111111 (text, quoting wamid.R2): You said: boom",
        ),
        (
            "olga  olga/replies/picky  error",
            &*format!("  trigger: message (event 1)\n{picky}"),
        ),
        (
            "olga  olga/replies/boom  skipped",
            "  trigger: message (event 1)\n  skipped: `if:` was false",
        ),
        (
            "olga  olga/replies/echo  ok",
            "  trigger: message (event 1)\n  log: from Ann\n  action: send to +33611111111 (text, quoting wamid.R1): You said: hi",
        ),
    ];
    for (block, (head, rest)) in blocks.iter().zip(expected) {
        let (first, details) = block.trim_end().split_once('\n').unwrap();
        // `2026-05-01 10:00:03 Europe/Paris  olga  olga/replies/echo  ok  1.2 ms`
        let (when, what) = first.split_once(" Europe/Paris  ").expect(first);
        assert!(
            chrono::NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{first}"
        );
        assert!(what.starts_with(head) && what.ends_with(" ms"), "{first}");
        assert_eq!(details, rest, "{block}");
    }
    // Filters; other users' runs are theirs.
    let c = cfg.clone();
    let (one, none) = tokio::task::spawn_blocking(move || {
        (
            ok(&c, &["runs", "--rule", "olga/replies/echo", "--limit", "1"]),
            ok(&c, &["runs", "azarya"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(one.matches(" ms\n").count(), 1, "{one}");
    assert!(one.contains("wamid.R2"), "{one}");
    assert_eq!(none, "no runs yet\n");
    // A dry run reads the live store (this contact is known by now) and writes nothing.
    common::write(
        &tg.dir.path().join("rules/olga/peek/project.yaml"),
        "rules:\n  - name: who\n    on: message\n    script: who.rhai\n",
    );
    common::write(
        &tg.dir.path().join("rules/olga/peek/who.rhai"),
        "log(lookup(\"contacts\", event.from).name);\nset_state(\"seen\", true);\n",
    );
    let f = event_file(
        tg.dir.path(),
        "peek.json",
        br#"{"kind": "message", "from": "33611111111", "id": "wamid.P", "type": "text", "text": ""}"#,
    );
    let before = tg.store().runs(None, None, 100).unwrap().len();
    let out = tokio::task::spawn_blocking(move || {
        ok(&cfg, &["rules", "test", "olga/peek/who", "--event", &f])
    })
    .await
    .unwrap();
    assert_eq!(
        out,
        "rule olga/peek/who (on: message)\nif: (none)\nwould set state seen = true\nlog: Ann\ndry run: nothing was sent\n"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(tg.store().runs(None, None, 100).unwrap().len(), before);
    assert_eq!(
        tg.store()
            .state_get(OLGA.name, "olga/peek", "seen")
            .unwrap(),
        None
    );
    tg.shutdown().await;
}
