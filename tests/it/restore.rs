//! `restore` writes only where the home named by --config says, never where the archive's
//! gate.yaml points (another home's database, a folder outside the home); it refuses while a
//! gate serves that home, and a lock left by a dead gate blocks nothing; a second `serve` of
//! one home is refused.

#![cfg(unix)]

use crate::common::bin::*;
use crate::common::*;
use std::path::Path;
use wagate::store::Store;

/// Records an audit entry `action` in the database at `db`.
fn mark(db: &Path, action: &str) {
    Store::open(db)
        .unwrap()
        .audit(wagate::store::GATE, action, &serde_json::json!({}))
        .unwrap();
}

/// The audit actions in the database at `db`.
fn actions(db: &Path) -> Vec<String> {
    Store::open_read_only(db)
        .unwrap()
        .audit_entries(None, None, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Home S at ROOT/s/a/b/home keeps its database at an absolute path and its rules two levels
/// up; returns its live database after writing a backup of it to ROOT/bk.tar.age.
fn backed_up_home_with_outside_paths(root: &Path) -> std::path::PathBuf {
    let s = root.join("s/a/b/home");
    write_home(&s, "http://127.0.0.1:9", &[]);
    let live = root.join("s/live/wagate.db");
    std::fs::write(
        s.join("gate.yaml"),
        format!(
            "storage: {{ path: {} }}\nvault: {{ identity_file: identity.txt }}\nrules_dir: ../../rules\n",
            live.display()
        ),
    )
    .unwrap();
    for (p, text) in [ECHO_PROJECT, ECHO_SCRIPT] {
        write(&root.join("s/a/rules").join(p), text);
    }
    mark(&live, "s-before-backup");
    let out = wagate_cli(&[
        "--config",
        s.join("gate.yaml").to_str().unwrap(),
        "backup",
        "--out",
        root.join("bk.tar.age").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    mark(&live, "s-after-backup");
    live
}

#[test]
fn restore_writes_only_where_the_config_home_says_not_where_the_archive_points() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let s_live = backed_up_home_with_outside_paths(root);
    // Home T, elsewhere, with its own gate.yaml (default places), database and users; beside
    // it, where the archive's `rules_dir: ../../rules` would land, someone else's folder.
    let t = root.join("t/a/b/home");
    write_home(&t, "http://127.0.0.1:9", &[]);
    let t_gate_yaml = std::fs::read_to_string(t.join("gate.yaml")).unwrap();
    mark(&t.join("data/wagate.db"), "t-old");
    write(&root.join("t/a/rules/SENTINEL"), "not the gate's");

    let out = wagate_cli(&[
        "--config",
        t.join("gate.yaml").to_str().unwrap(),
        "restore",
        root.join("bk.tar.age").to_str().unwrap(),
        "--force",
        "--identity",
        root.join("s/a/b/home/identity.txt").to_str().unwrap(),
    ]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    // Nothing outside T moved: the sentinel, and S's live database with what it got since.
    assert_eq!(files_under(&root.join("t/a/rules")), ["SENTINEL"]);
    assert_eq!(
        actions(&s_live),
        ["s-before-backup", "backup", "s-after-backup"]
    );
    // T got the archive where its own gate.yaml says.
    let t_actions = actions(&t.join("data/wagate.db"));
    assert!(
        t_actions.contains(&"s-before-backup".to_string()),
        "{t_actions:?}"
    );
    assert!(!t_actions.contains(&"t-old".to_string()), "{t_actions:?}");
    assert!(t.join("rules/olga/replies/echo.rhai").is_file());
    assert!(t.join("users/olga.yaml").is_file());
    assert!(t.join("credentials/olga.age").is_file());
    // T keeps its gate.yaml (the archive's would send its next `serve` to S's database); the
    // archive's is beside it, and the output says why.
    assert_eq!(
        std::fs::read_to_string(t.join("gate.yaml")).unwrap(),
        t_gate_yaml
    );
    assert!(
        std::fs::read_to_string(t.join("gate.yaml.from-backup"))
            .unwrap()
            .contains("rules_dir: ../../rules")
    );
    assert!(
        text.contains("note: kept this home's gate.yaml")
            && text.contains(&format!(
                "storage.path: `{}` in the archive, `data/wagate.db` here",
                s_live.display()
            ))
            && text.contains("rules_dir: `../../rules` in the archive, `rules` here"),
        "{text}"
    );
}

#[test]
fn restore_into_an_empty_home_refuses_places_outside_it_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let s_live = backed_up_home_with_outside_paths(root);
    write(&root.join("u/a/rules/SENTINEL"), "not the gate's");
    let u = root.join("u/a/b/home");
    std::fs::create_dir_all(&u).unwrap();
    for force in [false, true] {
        let mut args = vec![
            "--config".to_string(),
            u.join("gate.yaml").display().to_string(),
            "restore".into(),
            root.join("bk.tar.age").display().to_string(),
            "--identity".into(),
            root.join("s/a/b/home/identity.txt").display().to_string(),
        ];
        if force {
            args.push("--force".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = wagate_cli(&args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains(
                "refusing to restore: the archive's gate.yaml names places outside the home"
            ) && text.contains(&format!("storage.path `{}`", s_live.display()))
                && text.contains("rules_dir `../../rules`")
                && text.contains("first write a gate.yaml in"),
            "{text}"
        );
    }
    assert!(files_under(&root.join("u/a/b")).is_empty());
    assert_eq!(files_under(&root.join("u/a/rules")), ["SENTINEL"]);
    assert_eq!(
        actions(&s_live),
        ["s-before-backup", "backup", "s-after-backup"]
    );
}

/// The events table's wamids in the database at `db`.
fn wamids(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = conn
        .prepare("SELECT dedupe_key FROM events WHERE user = 'olga' ORDER BY dedupe_key")
        .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|k| k.unwrap().trim_start_matches("msg:").to_string())
        .collect()
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_while_a_gate_serves_the_home_and_not_after_it_died() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (_fake, fake_url, fake_cancel) = serve_fake().await;
    write_home(&home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    let bin = Bin::start(&home, "gate.log", &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &bin, OLGA, "33611110001", "wamid.M1").await,
        200
    );
    let archive = dir.path().join("bk.tar.age");
    let out = wagate_in(&home, &["backup", "--out", archive.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        post(&client, &bin, OLGA, "33611110002", "wamid.M2").await,
        200
    );
    let db = home.join("data/wagate.db");
    let before = inode(&db);

    let out = wagate_in(&home, &["restore", archive.to_str().unwrap(), "--force"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "refusing to restore while `wagate serve` (pid {}) holds this home",
            bin.pid()
        )) && text.contains("stop it first"),
        "{text}"
    );
    // Nothing changed: the same file, with what was acked after the backup; the gate goes on
    // storing into it.
    assert_eq!(inode(&db), before);
    assert_eq!(
        post(&client, &bin, OLGA, "33611110003", "wamid.M3").await,
        200
    );
    assert_eq!(wamids(&db), ["wamid.M1", "wamid.M2", "wamid.M3"]);

    // The gate dies without a word: its lock file stays, and blocks nothing.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &bin.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, _, _) = bin.exited().await;
    assert!(!status.success());
    assert!(home.join("data/wagate.lock").is_file());
    let out = wagate_in(&home, &["restore", archive.to_str().unwrap(), "--force"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(wamids(&db), ["wamid.M1"], "the backup's state");
    fake_cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_of_the_same_home_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_fake, fake_url, fake_cancel) = serve_fake().await;
    write_home(home, &fake_url, &[ECHO_PROJECT, ECHO_SCRIPT]);
    let first = Bin::start(home, "first.log", &[]).await;
    let second = tokio::time::timeout(T, wagate_in(home, &["serve"]))
        .await
        .expect("the second serve gives up at once");
    let text = output_text(&second);
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "cannot serve: `wagate serve` (pid {}) holds this home (lock {}",
            first.pid(),
            home.join("data/wagate.lock").display()
        )),
        "{text}"
    );
    assert!(!text.contains("wagate listening"), "{text}");
    // The first goes on serving.
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &first, OLGA, "33611110001", "wamid.S1").await,
        200
    );
    let (status, _, _) = first.terminate().await;
    assert!(status.success());
    fake_cancel.cancel();
}
