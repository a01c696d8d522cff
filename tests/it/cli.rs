//! Black-box tests of the built binary: exit codes, located errors, no secret printed.

use std::path::Path;
use std::process::Output;

fn wagate(args: &[&str]) -> Output {
    crate::common::wagate_cli(args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn init_home() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = wagate(&["init", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = dir.path().join("gate.yaml").to_string_lossy().into_owned();
    (dir, cfg)
}

fn add_user(home: &Path, name: &str, phone: &str) {
    std::fs::write(
        home.join(format!("users/{name}.yaml")),
        format!("user: {name}\nphone_number_id: \"{phone}\"\ntimezone: Europe/Paris\n"),
    )
    .unwrap();
}

#[test]
fn init_makes_a_private_identity_and_a_gitignore_and_never_overwrites() {
    let (dir, _) = init_home();
    let id = dir.path().join("identity.txt");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&id).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let gi = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    for p in ["credentials/", "data/", "identity.txt"] {
        assert!(gi.lines().any(|l| l == p), "{p} in .gitignore");
    }
    let again = wagate(&["init", dir.path().to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("never overwrites"));
}

#[test]
fn init_adds_the_missing_entries_to_an_existing_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitignore"), "target/\n/data").unwrap();
    let out = wagate(&["init", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("added credentials/, identity.txt to the existing .gitignore\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
        "target/\n/data\n\n# wagate: never commit secrets or data\ncredentials/\nidentity.txt\n"
    );
}

#[test]
fn init_refuses_before_making_anything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.txt"), "AGE-SECRET-KEY-1KEEP\n").unwrap();
    let out = wagate(&["init", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["identity.txt"], "nothing made");
    let err = text(&out.stderr);
    assert!(err.contains("identity.txt already exists"), "{err}");
    assert!(err.contains("never overwrites"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("identity.txt")).unwrap(),
        "AGE-SECRET-KEY-1KEEP\n"
    );
}

#[test]
fn creds_set_encrypts_and_prints_no_secret() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let f = dir.path().join("c.json");
    std::fs::write(&f, r#"{"access_token":"EAAsupersecret","app_secret":"appsecretvalue","webhook_verify_token":"verifyvalue"}"#).unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for s in ["EAAsupersecret", "appsecretvalue", "verifyvalue"] {
        assert!(!all.contains(s), "printed a secret: {all}");
    }
    let sealed = std::fs::read(dir.path().join("credentials/olga.age")).unwrap();
    assert!(!sealed.windows(14).any(|w| w == b"EAAsupersecret"));
    let check = wagate(&["--config", &cfg, "check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_eq!(
        text(&check.stdout),
        "ok: 1 user(s), 0 project(s), 0 rule(s)\n"
    );
    // Bad JSON: a clear error that names the field, not the value.
    std::fs::write(&f, r#"{"access_token":"EAAsupersecret","app_secret":"x"}"#).unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("missing field `webhook_verify_token`"),
        "{err}"
    );
    assert!(!err.contains("EAAsupersecret"));
    let out = creds_set(&cfg, "nobody", &f);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no user `nobody`"));
}

#[test]
fn creds_set_refuses_an_expiry_in_milliseconds_and_writes_nothing() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let f = dir.path().join("c.json");
    std::fs::write(&f, r#"{"access_token":"EAAsupersecret","app_secret":"appsecretvalue","webhook_verify_token":"verifyvalue","token_expires_at":1900000000000}"#).unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "credentials field `token_expires_at`: 1900000000000 looks like milliseconds; give unix seconds or RFC 3339\n"
    );
    assert_eq!(text(&out.stdout), "");
    assert!(!dir.path().join("credentials/olga.age").exists());
    // In seconds it is saved, and `check` reads it back.
    std::fs::write(&f, r#"{"access_token":"EAAsupersecret","app_secret":"appsecretvalue","webhook_verify_token":"verifyvalue","token_expires_at":1900000000}"#).unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let check = wagate(&["--config", &cfg, "check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}

/// A token pasted with its newline and a secret copied with a trailing space are saved without
/// them (else every signature check and every request fails), and `creds set` says so; the
/// gate then checks Meta's signature with the secret as Meta has it.
#[test]
fn creds_set_removes_the_spaces_around_a_pasted_value_and_says_so() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let f = dir.path().join("c.json");
    std::fs::write(&f, "{\"access_token\":\" EAAsupersecret\\n\",\"app_secret\":\"appsecretvalue \",\"webhook_verify_token\":\"verifyvalue\"}").unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "note: removed the spaces or line breaks around `access_token`\nnote: removed the spaces or line breaks around `app_secret`\n"
    );
    let vault = wagate::vault::Vault::open(&dir.path().join("identity.txt"), None).unwrap();
    let creds = vault
        .read_credentials(&dir.path().join("credentials/olga.age"))
        .unwrap();
    assert_eq!(creds.access_token.expose(), "EAAsupersecret");
    assert_eq!(creds.app_secret.expose(), "appsecretvalue");
    // A space inside a token is refused, naming the field and not the value.
    std::fs::write(&f, r#"{"access_token":"EAAsuper secret","app_secret":"appsecretvalue","webhook_verify_token":"verifyvalue"}"#).unwrap();
    let out = creds_set(&cfg, "olga", &f);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("field `access_token` has a space"), "{err}");
    assert!(!err.contains("super"), "{err}");
}

#[test]
fn check_reports_every_error_located_and_exits_1() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    std::fs::write(
        dir.path().join("users/azarya.yaml"),
        "user: azarya\nphone_number_id: \"222\"\ntimezone: Mars/Olympus\n",
    )
    .unwrap();
    let proj = dir.path().join("rules/olga/tour");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("project.yaml"),
        "rules:\n  - name: hi\n    on: message\n    script: hi.rhai\n    colour: blue\n",
    )
    .unwrap();
    let err = check_fails(&cfg);
    let expected_tz = "error: unknown timezone `Mars/Olympus`: use an IANA name such as Europe/Paris\n  --> users/azarya.yaml:3:11\n  |\n3 | timezone: Mars/Olympus\n  |           ^";
    assert!(err.contains(expected_tz), "{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");
    assert!(
        err.contains("--> rules/olga/tour/project.yaml:5:5"),
        "{err}"
    );
}

#[test]
fn check_locates_script_syntax_errors() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let f = dir.path().join("c.json");
    std::fs::write(
        &f,
        r#"{"access_token":"a","app_secret":"b","webhook_verify_token":"c"}"#,
    )
    .unwrap();
    assert!(
        wagate(&[
            "--config",
            &cfg,
            "creds",
            "set",
            "olga",
            "--from-file",
            f.to_str().unwrap()
        ])
        .status
        .success()
    );
    let proj = dir.path().join("rules/olga/tour");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("project.yaml"),
        "rules:\n  - name: hi\n    on: message\n    script: hi.rhai\n",
    )
    .unwrap();
    std::fs::write(proj.join("hi.rhai"), "let a = 1;\nlet b = ;\n").unwrap();
    let err = check_fails(&cfg);
    assert!(err.contains("--> rules/olga/tour/hi.rhai:2:"), "{err}");
    assert!(err.contains("2 | let b = ;"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(wagate(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(wagate(&["creds", "set", "olga"]).status.code(), Some(2));
    let out = wagate(&["--config", "/nonexistent/gate.yaml", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_prints_every_error_of_the_home_at_once_as_whole_text() {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let f = dir.path().join("c.json");
    std::fs::write(
        &f,
        r#"{"access_token":"a","app_secret":"b","webhook_verify_token":"c"}"#,
    )
    .unwrap();
    assert!(
        wagate(&[
            "--config",
            &cfg,
            "creds",
            "set",
            "olga",
            "--from-file",
            f.to_str().unwrap()
        ])
        .status
        .success()
    );
    let proj = dir.path().join("rules/olga/tour");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("project.yaml"),
        "tables:\n  people: people.csv\nrules:\n  - name: hi\n    on: message\n    if: event.text ==\n    script: hi.rhai\n  - name: later\n    on: { cron: \"0 25 * * *\" }\n    script: hi.rhai\n",
    )
    .unwrap();
    std::fs::write(proj.join("hi.rhai"), "let a = 1;\nlet b = ;\n").unwrap();
    std::fs::write(proj.join("people.csv"), "a,b\n1,2\n3\n").unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let expected = "\
error: invalid cron expression `0 25 * * *`: hour must be 0–23, not 25
  --> rules/olga/tour/project.yaml:9:9
  |
9 |     on: { cron: \"0 25 * * *\" }
  |         ^

error: table `people`: CSV error: record 2 (line: 3, byte: 8): found record with 1 fields, but the previous record has 2 fields
  --> rules/olga/tour/people.csv:3:1
  |
3 | 3
  | ^

error: in `if:`: Script is incomplete
  --> rules/olga/tour/project.yaml:6:22
  |
6 |     if: event.text ==
  |                      ^

error: Unexpected ';'
  --> rules/olga/tour/hi.rhai:2:9
  |
2 | let b = ;
  |         ^

4 errors
";
    assert_eq!(text(&out.stderr), expected);
}

/// `check` of the home at `cfg`, which must fail (exit 1): what it printed on stderr.
fn check_fails(cfg: &str) -> String {
    let out = wagate(&["--config", cfg, "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// A home with user olga and one project `rules/olga/tour` holding `project` and hi.rhai.
fn home_with_project(project: &str) -> (tempfile::TempDir, String) {
    let (dir, cfg) = init_home();
    add_user(dir.path(), "olga", "111");
    let proj = dir.path().join("rules/olga/tour");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("project.yaml"), project).unwrap();
    std::fs::write(proj.join("hi.rhai"), "let a = 1;\n").unwrap();
    (dir, cfg)
}

#[test]
fn check_locates_a_rule_key_in_its_own_rule() {
    // Only the second rule has `mode:`.
    let (_dir, cfg) = home_with_project(
        "rules:\n  - name: a\n    on: message\n    script: hi.rhai\n  - name: b\n    on: message\n    mode: bogus\n    script: hi.rhai\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.starts_with(
            "\
error: rule `b`: unknown mode `bogus`; use single, queued or parallel
  --> rules/olga/tour/project.yaml:7:11
  |
7 |     mode: bogus
  |           ^
"
        ),
        "{}",
        err
    );
}

#[test]
fn check_locates_a_rule_name_after_a_fallback_template() {
    // A `name:` before `rules:` is not the first rule's.
    let (_dir, cfg) = home_with_project(
        "fallback_template:\n  name: hello_world\nrules:\n  - name: hi\n    on: message\n    script: hi.rhai\n  - name: hi\n    on: message\n    script: hi.rhai\n",
    );
    let err = check_fails(&cfg);
    assert!(
        err.starts_with(
            "\
error: rule name `hi` is used twice in this project
  --> rules/olga/tour/project.yaml:7:11
  |
7 |   - name: hi
  |           ^
"
        ),
        "{}",
        err
    );
}

#[test]
fn check_places_errors_in_a_folded_if_and_a_json_table_where_they_are() {
    let (dir, cfg) = home_with_project(
        "tables:\n  people: people.json\nrules:\n  - name: hi\n    on: message\n    if: >-\n      event.text == \"hi\" &&\n      event.from ==\n    script: hi.rhai\n",
    );
    std::fs::write(
        dir.path().join("rules/olga/tour/people.json"),
        "[\n  {\"id\": 1},\n  {\"id\" 2}\n]\n",
    )
    .unwrap();
    let err = check_fails(&cfg);
    let table = "\
error: table `people`: expected `:`
  --> rules/olga/tour/people.json:3:9
  |
3 |   {\"id\" 2}
  |         ^
";
    assert!(err.contains(table), "{err}");
    let condition = "\
error: in `if:`: Script is incomplete
  --> rules/olga/tour/project.yaml:8:20
  |
8 |       event.from ==
  |                    ^
";
    assert!(err.contains(condition), "{err}");
}

#[test]
fn check_refuses_a_listen_address_or_graph_url_that_cannot_work() {
    let (dir, cfg) = init_home();
    let gate = dir.path().join("gate.yaml");
    let original = std::fs::read_to_string(&gate).unwrap();
    std::fs::write(
        &gate,
        original.replace("\"127.0.0.1:8080\"", "\"not an addr\""),
    )
    .unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "\
error: server.listen `not an addr` is not an address to listen on: write host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or localhost:8080
  --> {cfg}:2:20
  |
2 | server:  {{ listen: \"not an addr\" }}
  |                    ^
"
        )
    );
    std::fs::write(
        &gate,
        original.replace("\"https://graph.facebook.com\"", "\"graph.facebook.com\""),
    )
    .unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: graph.base_url `graph.facebook.com` must be `simulator` or an absolute http(s) URL such as https://graph.facebook.com\n  --> {cfg}:4:22\n"
        )),
        "{err}"
    );
    // A host name is fine: it is looked up when the gate starts.
    std::fs::write(&gate, original.replace("127.0.0.1:8080", "localhost:8080")).unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_does_not_call_the_user_of_an_invalid_user_file_unknown() {
    let (dir, cfg) =
        home_with_project("rules:\n  - name: hi\n    on: message\n    script: hi.rhai\n");
    std::fs::write(
        dir.path().join("users/olga.yaml"),
        "user: olga\nphone_number_id: \"111\"\ntimezone: Mars/Olympus\n",
    )
    .unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "\
error: unknown timezone `Mars/Olympus`: use an IANA name such as Europe/Paris
  --> users/olga.yaml:3:11
  |
3 | timezone: Mars/Olympus
  |           ^

1 error
"
    );
    // With no users/<user>.yaml at all, the project is still reported.
    std::fs::remove_file(dir.path().join("users/olga.yaml")).unwrap();
    let out = wagate(&["--config", &cfg, "check"]);
    assert!(
        text(&out.stderr).contains("is not under a known user"),
        "{}",
        text(&out.stderr)
    );
}

/// `wagate --config CFG creds set USER --from-file F`.
fn creds_set(cfg: &str, user: &str, f: &Path) -> std::process::Output {
    wagate(&[
        "--config",
        cfg,
        "creds",
        "set",
        user,
        "--from-file",
        f.to_str().unwrap(),
    ])
}
