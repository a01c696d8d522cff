//! Edges of the command line, through the built binary: `--out F` replaced only by a complete
//! file (a write that fails half-way leaves the previous F as it was), a malformed USER is a
//! usage error in every command, `--since`/`--until` take the same forms in `audit` and
//! `export`, an empty `WAGATE_CONFIG` is unset, and `test-connection` is audited.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use wagate::graph::simulator::Fault;

/// Olga's home with three messages from Ann, stored (no rule: nothing is sent).
async fn gate_with_messages() -> TestGate {
    let tg = TestGate::start_with(&[]).await;
    for i in 0..3 {
        // Long enough that an export is many blocks of a file size limit.
        let text = format!("message {i} {}", "lorem ipsum ".repeat(200));
        let body = text_webhook(OLGA, "33611111111", "Ann", &format!("wamid.E{i}"), &text);
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    settled(&tg, "olga").await;
    tg
}

/// `wagate --config HOME/gate.yaml ARGS` with files limited to `blocks` blocks of `ulimit -f`
/// (SIGXFSZ ignored, so a write past it fails with EFBIG: a disk that fills up half-way).
async fn wagate_limited(home: &Path, blocks: u64, args: &[&str]) -> Output {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f \"$1\"; shift; exec \"$@\"")
        .arg("sh")
        .arg(blocks.to_string())
        .arg(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(home.join("gate.yaml"))
        .args(args)
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .kill_on_drop(true)
        .output()
        .await
        .expect("sh runs")
}

/// The size of one `ulimit -f` block of this `sh` (512 for dash, 1024 for bash).
async fn ulimit_block(dir: &Path) -> u64 {
    let probe = dir.join("probe");
    let o = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; head -c 4096 /dev/zero > \"$1\"")
        .arg("sh")
        .arg(&probe)
        .output()
        .await
        .unwrap();
    let size = std::fs::metadata(&probe).unwrap().len();
    assert!(size == 512 || size == 1024, "{o:?}: {size}");
    std::fs::remove_file(&probe).unwrap();
    size
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn export_out_replaces_a_file_only_with_a_complete_one_and_says_so() {
    let tg = gate_with_messages().await;
    let home = tg.dir.path();
    let out_dir = tempfile::tempdir().unwrap();
    let f = out_dir.path().join("olga.json");
    let fs = f.to_str().unwrap();

    let o = wagate_in(home, &["export", "olga", "--out", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!stderr(&o).contains("replaced"), "{}", stderr(&o));
    let first = std::fs::read(&f).unwrap();
    assert_eq!(mode(&f), 0o600);

    // Nightly to one name: the new complete file takes its place, and stderr says so.
    let o = wagate_in(home, &["export", "olga", "--out", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        stderr(&o).contains(&format!("replaced the file that was at {fs}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(mode(&f), 0o600);
    let good = std::fs::read(&f).unwrap();
    let v: Value = serde_json::from_slice(&good).unwrap();
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 3);
    assert_eq!(first.len(), good.len());

    // The disk fills up half-way: the export fails, naming F, and F is the previous one.
    let block = ulimit_block(out_dir.path()).await;
    let blocks = (good.len() as u64 / block) / 2;
    assert!(blocks >= 2, "the export is {} bytes", good.len());
    let o = wagate_limited(home, blocks, &["export", "olga", "--out", fs]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot write {fs}")), "{err}");
    assert!(
        err.contains("the file that was there is left as it was"),
        "{err}"
    );
    assert!(std::fs::read(&f).unwrap() == good, "F is untouched");
    assert_eq!(names(out_dir.path()), ["olga.json"], "no partial file left");

    // A rename that cannot happen (F is a folder) leaves no partial export beside it either.
    let folder = out_dir.path().join("folder");
    std::fs::create_dir_all(folder.join("inside")).unwrap();
    let o = wagate_in(home, &["export", "olga", "--out", folder.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert_eq!(names(out_dir.path()), ["folder", "olga.json"]);
    tg.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn backup_out_replaces_a_file_only_with_a_complete_one_and_says_so() {
    let tg = gate_with_messages().await;
    let home = tg.dir.path();
    let out_dir = tempfile::tempdir().unwrap();
    let f = out_dir.path().join("nightly.tar.age");
    let fs = f.to_str().unwrap();

    let o = wagate_in(home, &["backup", "--out", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!stderr(&o).contains("replaced"), "{}", stderr(&o));
    let o = wagate_in(home, &["backup", "--out", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        stderr(&o).contains(&format!("replaced the file that was at {fs}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(mode(&f), 0o600);

    // The disk fills up while the archive is written, well past the database snapshot (a
    // 128 KiB media file makes the archive that much larger than the snapshot): the backup
    // fails, naming F, and the previous backup is still there, whole and verifiable.
    let media = wagate::app::media_dir(&home.join("data/wagate.db")).join("olga");
    std::fs::create_dir_all(&media).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..128 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(media.join("big.bin"), noise).unwrap();
    let o = wagate_in(home, &["backup", "--out", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let good = std::fs::read(&f).unwrap();
    let snap = out_dir.path().join("snap.db");
    tg.store().snapshot_into(&snap).unwrap();
    let snap_len = std::fs::metadata(&snap).unwrap().len();
    std::fs::remove_file(&snap).unwrap();
    let block = ulimit_block(out_dir.path()).await;
    let blocks = (snap_len + good.len() as u64) / 2 / block;
    assert!(
        blocks * block > snap_len + 32 * 1024 && blocks * block + 32 * 1024 < good.len() as u64,
        "snapshot {snap_len} bytes, archive {}",
        good.len()
    );
    let o = wagate_limited(home, blocks, &["backup", "--out", fs]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("{fs}: ")), "{err}");
    assert!(
        err.contains("the file that was there is left as it was"),
        "{err}"
    );
    assert!(std::fs::read(&f).unwrap() == good, "F is untouched");
    assert_eq!(
        names(out_dir.path()),
        ["nightly.tar.age"],
        "nothing left beside it"
    );
    let o = wagate_in(home, &["backup", "verify", fs]).await;
    assert!(o.status.success(), "{}", output_text(&o));

    // Full before the snapshot is even written: the same.
    let o = wagate_limited(home, 1, &["backup", "--out", fs]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(stderr(&o).contains("left as it was"), "{}", stderr(&o));
    assert!(std::fs::read(&f).unwrap() == good, "F is untouched");
    assert_eq!(names(out_dir.path()), ["nightly.tar.age"]);
    tg.shutdown().await;
}

#[tokio::test]
async fn a_malformed_user_is_a_usage_error_in_every_command_and_an_unknown_one_a_failure() {
    let tg = TestGate::start_with(&[ECHO_PROJECT, ECHO_SCRIPT]).await;
    let home = tg.dir.path();
    let event = home.join("event.json");
    std::fs::write(
        &event,
        text_webhook(OLGA, "33611111111", "Ann", "wamid.U1", "hi"),
    )
    .unwrap();
    let event = event.to_str().unwrap();
    let commands = |u: &str| -> Vec<Vec<String>> {
        let rule = format!("{u}/replies/echo");
        let v: Vec<Vec<&str>> = vec![
            vec![
                "send",
                u,
                "--to",
                "33611111111",
                "--text",
                "hi",
                "--wait",
                "0",
            ],
            vec!["export", u, "--out", "-"],
            vec!["audit", u],
            vec!["audit", u, "--verify"],
            vec!["creds", "set", u, "--from-file", event],
            vec!["test-connection", u],
            vec!["token", "refresh", u],
            vec!["rules", "test", &rule, "--event", event],
            vec!["rules", "list", u],
            vec!["contacts", u, "list"],
            vec!["groups", u, "list"],
            vec!["inject", u, "--text", "hi", "--wait", "0"],
            vec!["runs", u],
        ];
        v.into_iter()
            .map(|c| c.into_iter().map(String::from).collect())
            .collect()
    };
    for bad in ["BAD!", "Olga", "a.b"] {
        for args in commands(bad) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = wagate_in(home, &args).await;
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", output_text(&o));
            assert!(
                stderr(&o).starts_with("error: user name"),
                "{args:?}: {}",
                stderr(&o)
            );
        }
    }
    // Well-formed but not in the home: a failure (exit 1) that names it, as before. (`runs`
    // reads history, which may hold a user whose file is gone: it says there are none.)
    for args in commands("nobody") {
        if args[0] == "runs" {
            continue;
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = wagate_in(home, &args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", output_text(&o));
        assert!(
            output_text(&o).contains("nobody"),
            "{args:?}: {}",
            output_text(&o)
        );
    }
    // The gate's own audit entries are not a user's, and not a usage error.
    let o = wagate_in(home, &["audit", "*"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    tg.shutdown().await;
}

#[tokio::test]
async fn export_and_audit_take_the_same_since_and_until() {
    let tg = gate_with_messages().await;
    let home = tg.dir.path();
    let count = |o: &Output| -> u64 {
        assert!(o.status.success(), "{}", output_text(o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["data"]["messages"].as_array().unwrap().len() as u64
    };
    // Ages: the messages came in just now.
    let o = wagate_in(home, &["export", "olga", "--out", "-", "--since", "2h"]).await;
    assert_eq!(count(&o), 3);
    let o = wagate_in(home, &["export", "olga", "--out", "-", "--until", "1d"]).await;
    assert_eq!(count(&o), 0);
    let o = wagate_in(
        home,
        &[
            "export",
            "olga",
            "--out",
            "-",
            "--since",
            "3d",
            "--until",
            "2000-01-01",
        ],
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(2),
        "since after until: {}",
        output_text(&o)
    );
    // Dates and times: the same forms in both commands.
    for since in [
        "2h",
        "90m",
        "2000-01-01",
        "2000-01-01T08:00",
        "2000-01-01T08:00:00Z",
    ] {
        let o = wagate_in(home, &["export", "olga", "--out", "-", "--since", since]).await;
        assert_eq!(count(&o), 3, "{since}");
        let o = wagate_in(home, &["audit", "olga", "--since", since]).await;
        assert!(o.status.success(), "{since}: {}", output_text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("webhook.accepted"),
            "{since}: {}",
            output_text(&o)
        );
    }
    // The same refusal, word for word, for what neither takes.
    for bad in ["next week", "2", "2w"] {
        let e = wagate_in(home, &["export", "olga", "--out", "-", "--since", bad]).await;
        let a = wagate_in(home, &["audit", "--since", bad]).await;
        assert_eq!(e.status.code(), Some(2), "{bad}: {}", output_text(&e));
        assert_eq!(a.status.code(), Some(2), "{bad}: {}", output_text(&a));
        assert_eq!(stderr(&e), stderr(&a), "{bad}");
        assert!(
            stderr(&e).contains("an age (90s, 30m, 2h, 3d)"),
            "{}",
            stderr(&e)
        );
    }
    tg.shutdown().await;
}

#[test]
fn an_empty_wagate_config_means_the_default_gate_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let init = wagate_cli(&["init", dir.path().to_str().unwrap()]);
    assert!(init.status.success(), "{}", output_text(&init));
    let run = |config: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .arg("check")
            .current_dir(dir.path())
            .env("WAGATE_CONFIG", config)
            .env_remove("WAGATE_PASSPHRASE")
            .output()
            .unwrap()
    };
    let o = run("");
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("ok: 0 user(s)"),
        "{}",
        output_text(&o)
    );
    // A value is still taken, and `--config` still wins over it.
    let o = run("elsewhere.yaml");
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(stderr(&o).contains("elsewhere.yaml"), "{}", stderr(&o));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["--config", "gate.yaml", "check"])
        .current_dir(dir.path())
        .env("WAGATE_CONFIG", "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", output_text(&o));
}

/// Olga's audit entries of `action`, as `wagate audit olga` prints them (details parsed).
async fn audited(home: &Path, action: &str) -> Vec<Value> {
    let o = wagate_in(home, &["audit", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(5, ' ');
            let (_, _, _, a, details) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
            );
            (a == action).then(|| serde_json::from_str(details).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn test_connection_is_audited_with_its_outcome_and_no_secret() {
    let tg = TestGate::start_with(&[]).await;
    let home = tg.dir.path();
    assert!(audited(home, "connection.test").await.is_empty());

    let o = wagate_in(home, &["test-connection", "olga"]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    tg.fake.push_fault(Fault::graph(
        401,
        190,
        "Error validating access token: Session has expired",
    ));
    let o = wagate_in(home, &["test-connection", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    tg.fake.push_fault(Fault::graph(
        400,
        100,
        "Unsupported get request. Object with ID '111222333' does not exist",
    ));
    let o = wagate_in(home, &["test-connection", "olga"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));

    let entries = audited(home, "connection.test").await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "token_invalid", "refused"]);
    for e in &entries {
        assert_eq!(e["phone_number_id"], OLGA.phone, "{e}");
        assert_eq!(
            e["fingerprint"].as_str().unwrap().len(),
            16,
            "the token's fingerprint: {e}"
        );
    }
    assert!(
        entries[1]["reason"]
            .as_str()
            .unwrap()
            .contains("Session has expired"),
        "{}",
        entries[1]
    );
    // Azarya's log has none of Olga's checks, and no entry holds a secret.
    let o = wagate_in(home, &["audit"]).await;
    let all = output_text(&o);
    for s in [OLGA.token, OLGA.secret, OLGA.verify, AZARYA.token] {
        assert!(!all.contains(s), "a secret in the audit log: {all}");
    }
    let o = wagate_in(home, &["audit", "azarya"]).await;
    assert!(!output_text(&o).contains("connection.test"));
    tg.shutdown().await;
}
