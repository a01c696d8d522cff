//! Errors in users' files name the right file, line and column, in a user's words: `wagate
//! check` on small homes, each with one mistake.

use std::path::Path;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh home with user olga and one project `rules/olga/tour` holding `project` and hi.rhai
/// (which defines `start(event)`).
fn home_with(project: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::wagate_cli(&["init", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        dir.path().join("users/olga.yaml"),
        "user: olga\nphone_number_id: \"111\"\ntimezone: Europe/Paris\n",
    )
    .unwrap();
    let proj = dir.path().join("rules/olga/tour");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("project.yaml"), project).unwrap();
    std::fs::write(proj.join("hi.rhai"), "fn start(event) { log(\"hi\"); }\n").unwrap();
    let cfg = dir.path().join("gate.yaml").to_string_lossy().into_owned();
    (dir, cfg)
}

fn write(home: &Path, rel: &str, content: &str) {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// What `check` printed on stderr; it must fail (exit 1).
fn check_fails(cfg: &str) -> String {
    let out = crate::common::wagate_cli(&["--config", cfg, "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn a_missing_call_function_is_shown_at_its_own_rules_call() {
    let (_dir, cfg) = home_with(
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n    call: start\n  - name: b\n    on: message\n    script: hi.rhai\n  - name: c\n    on: message\n    script: hi.rhai\n    call: bok\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.contains(
            "\
error: rule `c`: rules/olga/tour/hi.rhai has no function `bok(event)`
  --> rules/olga/tour/project.yaml:12:11
   |
12 |     call: bok
   |           ^
"
        ),
        "{err}"
    );
}

#[test]
fn a_badly_indented_line_is_a_syntax_error_at_that_line() {
    let (_dir, cfg) = home_with(
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n  - name: b\n    on: message\n   bad indent: [\n    script: hi.rhai\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.starts_with(
            "\
error: YAML syntax: did not find expected '-' indicator, while parsing a block collection at line 2 column 3 (check the indentation of this line)
  --> rules/olga/tour/project.yaml:7:4
  |
7 |    bad indent: [
  |    ^
"
        ),
        "{err}"
    );
    assert!(!err.contains("missing field"), "{err}");
}

#[test]
fn a_duplicated_key_is_shown_at_the_duplicate() {
    let (_dir, cfg) = home_with(
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n  - name: b\n    on: message\n    call: start\n    script: hi.rhai\n    call: start\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.starts_with(
            "\
error: rules[1]: duplicate field `call`: written a second time here
  --> rules/olga/tour/project.yaml:9:5
  |
9 |     call: start
  |     ^
"
        ),
        "{err}"
    );
}

#[test]
fn a_cron_hour_out_of_range_says_what_the_range_is() {
    let (_dir, cfg) = home_with(
        "rules:\n  - name: a\n    on:\n      cron: \"0 25 * * *\"\n    script: hi.rhai\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.contains(
            "\
error: invalid cron expression `0 25 * * *`: hour must be 0–23, not 25
  --> rules/olga/tour/project.yaml:4:13
"
        ),
        "{err}"
    );
}

#[test]
fn a_table_or_script_outside_the_project_folder_is_refused_as_such() {
    let (dir, cfg) = home_with(
        "tables:\n  people: ../other/people.csv\nrules:\n  - name: a\n    on: message\n    script: ../other/hi.rhai\n",
    );
    // The files exist: what is wrong is where they are.
    write(
        dir.path(),
        "rules/olga/other/people.csv",
        "phone,name\n1,A\n",
    );
    write(dir.path(), "rules/olga/other/hi.rhai", "let a = 1;\n");
    let err = check_fails(&cfg);
    assert!(
        err.contains(
            "\
error: table `people`: `../other/people.csv` is outside this project folder: tables and scripts must be inside it (a path relative to project.yaml, without `..` or a leading `/`)
  --> rules/olga/tour/project.yaml:2:11
"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "\
error: rule `a`: `../other/hi.rhai` is outside this project folder: tables and scripts must be inside it (a path relative to project.yaml, without `..` or a leading `/`)
  --> rules/olga/tour/project.yaml:6:13
"
        ),
        "{err}"
    );
    assert!(!err.contains("no file"), "{err}");
}

#[test]
fn creds_set_reads_a_json_file_saved_with_a_byte_order_mark() {
    let (dir, cfg) = home_with("rules: []\n");
    let f = dir.path().join("c.json");
    let mut json = b"\xEF\xBB\xBF".to_vec();
    json.extend_from_slice(
        br#"{"access_token":"EAAtok","app_secret":"sec","webhook_verify_token":"vt"}"#,
    );
    std::fs::write(&f, json).unwrap();
    let out = crate::common::wagate_cli(&[
        "--config",
        &cfg,
        "creds",
        "set",
        "olga",
        "--from-file",
        f.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("credentials/olga.age").is_file());
}

#[test]
fn a_lookup_of_a_literal_unknown_table_is_refused_by_check() {
    let (dir, cfg) = home_with(
        "tables:\n  participants: participants.csv\nrules:\n  - name: a\n    on: message\n    script: hi.rhai\n",
    );
    write(
        dir.path(),
        "rules/olga/tour/participants.csv",
        "phone,name\n33611111111,Claire\n",
    );
    write(
        dir.path(),
        "rules/olga/tour/hi.rhai",
        "let p = lookup(\"participants\", event.from);\nlet c = lookup(\"contacts\", event.from);\nlet name = \"partici\" + \"pantz\";\nlet q = lookup(name, event.from);\nfn greet(event) {\n    let r = lookup(\"participantz\", event.from);\n}\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.contains(
            "\
error: lookup: no table `participantz`; this project has participants, contacts, messages
  --> rules/olga/tour/hi.rhai:6:20
  |
6 |     let r = lookup(\"participantz\", event.from);
  |                    ^
"
        ),
        "{err}"
    );
    // Only the literal: a name computed at run time is checked when the call runs.
    assert_eq!(err.matches("no table").count(), 1, "{err}");
}

#[test]
fn a_project_yml_is_named_by_check_as_not_read() {
    let (dir, cfg) = home_with("rules: []\n");
    write(
        dir.path(),
        "rules/olga/notes/project.yml",
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n",
    );
    let out = crate::common::wagate_cli(&["--config", &cfg, "check"]);
    let err = format!("{}{}", text(&out.stderr), text(&out.stdout));
    assert!(
        err.contains(
            "\
warning: project.yml is not read: a project's file must be named project.yaml (did you mean project.yaml?)
  --> rules/olga/notes/project.yml
"
        ),
        "{err}"
    );
    // Beside a project.yaml it is not the project's file either way: no warning.
    write(dir.path(), "rules/olga/tour/project.yml", "rules: []\n");
    let out = crate::common::wagate_cli(&["--config", &cfg, "check"]);
    let all = format!("{}{}", text(&out.stderr), text(&out.stdout));
    assert_eq!(all.matches("is not read").count(), 1, "{all}");
}

#[test]
fn a_reload_tells_of_a_rules_folder_that_is_no_users_and_of_a_project_yml() {
    let (dir, cfg) =
        home_with("rules:\n  - name: a\n    on: message\n    script: hi.rhai\n    call: start\n");
    write(
        dir.path(),
        "rules/Olga/tour/project.yaml",
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n",
    );
    write(dir.path(), "rules/olga/notes/project.yml", "rules: []\n");
    // Olga as the gate serves her (her file as read at start).
    let (start, _) = wagate::config::Home::load_partial(Path::new(&cfg)).unwrap();
    let served = start.users.clone();
    assert_eq!(served.len(), 1);
    let live = ["olga/tour".to_string()].into();
    let (home, _, out) =
        wagate::config::Home::load_served(Path::new(&cfg), &served, &live).unwrap();
    assert!(out.is_empty(), "no project left out");
    assert_eq!(home.projects.len(), 1);
    let shown: Vec<String> = home.warnings.iter().map(|w| w.as_warning()).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown.iter().any(|w| w.starts_with(
            "warning: project `Olga/tour` is not under a known user: its first folder `Olga` must match a file in users/\n  --> rules/Olga/tour/project.yaml"
        )),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|w| w.contains("project.yml is not read")
                && w.contains("rules/olga/notes/project.yml")),
        "{shown:?}"
    );
}

#[test]
fn a_lookup_of_a_table_whose_file_is_missing_is_reported_once_at_the_table() {
    let (dir, cfg) = home_with(
        "tables:\n  hotels: hotels.csv\nrules:\n  - name: a\n    on: message\n    script: hi.rhai\n",
    );
    write(
        dir.path(),
        "rules/olga/tour/hi.rhai",
        "let h = lookup(\"hotels\", event.from);\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.contains("error: table `hotels`: no file `hotels.csv` in this project folder\n  --> rules/olga/tour/project.yaml:2:11"),
        "{err}"
    );
    assert!(!err.contains("no table"), "{err}");
}
