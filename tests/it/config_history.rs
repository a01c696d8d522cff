//! Versioned configuration: what went live at start and at each reload is kept; two versions
//! diff; a version restored is written back and reloaded.

use crate::common::*;
use std::time::Duration;
use wagate::history;

const V2: &str = "reply(event, \"Vous avez dit : \" + event.text);\n";
const V3: &str = "reply(event, \"You wrote: \" + event.text);\n";

#[tokio::test]
async fn history_after_reloads_diff_and_restore() {
    let tg = TestGate::start().await;
    // One round trip first: the watcher is up by the time it is answered.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.H0", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, Duration::from_secs(20)).await;
    let store = tg.store().clone();
    let start = store.config_versions(None, 100).unwrap();
    let mut names: Vec<(String, String)> = start
        .iter()
        .map(|v| (v.kind.clone(), v.name.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("gate".to_string(), "gate.yaml".to_string()),
            ("project".into(), "olga/replies".into()),
            ("user".into(), "users/azarya.yaml".into()),
            ("user".into(), "users/olga.yaml".into()),
        ]
    );
    let v1 = store
        .latest_config("project", "olga/replies")
        .unwrap()
        .unwrap();
    assert_eq!(v1.files["echo.rhai"], ECHO_SCRIPT.1);
    assert_eq!(v1.files.len(), 2);

    // Two edits that go live, one that does not compile (not a version: it never went live).
    for text in [V2, V3] {
        let seen = tg.reload_count();
        tg.write_rule_file("olga/replies/echo.rhai", text);
        let r = tg.next_reload(seen).await;
        assert_eq!(r.outcome, "live");
    }
    let seen = tg.reload_count();
    tg.write_rule_file("olga/replies/echo.rhai", "reply(event, ");
    assert_eq!(tg.next_reload(seen).await.outcome, "rejected");
    let store2 = store.clone();
    let versions = eventually(
        "three versions of the project",
        Duration::from_secs(10),
        || {
            let store = store2.clone();
            async move {
                let v = store.config_versions(Some("olga/replies"), 100).ok()?;
                (v.len() >= 3).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(versions.len(), 3, "only what went live");
    let (v3, v2) = (&versions[0], &versions[1]);
    assert_eq!(
        (
            v2.files["echo.rhai"].as_str(),
            v3.files["echo.rhai"].as_str()
        ),
        (V2, V3)
    );
    assert!(v1.id < v2.id && v2.id < v3.id && v2.hash != v3.hash);
    // A restart with nothing changed adds no version.
    let mut tg = tg;
    tg.write_rule_file("olga/replies/echo.rhai", V3);
    tg.restart().await;
    assert_eq!(tg.store().config_versions(None, 100).unwrap().len(), 6);

    // The diff between two versions, as a unified diff.
    let d = history::diff(v2, v3);
    assert_eq!(
        d,
        format!(
            "--- rules/olga/replies/echo.rhai (version {a})\n+++ rules/olga/replies/echo.rhai (version {b})\n@@ -1 +1 @@\n-{V2}+{V3}",
            a = v2.id,
            b = v3.id
        )
    );
    let cfg = tg.config_path();
    let cfg = cfg.to_str().unwrap();
    let out = wagate_cli(&[
        "--config",
        cfg,
        "config",
        "diff",
        &v2.id.to_string(),
        &v3.id.to_string(),
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), d);
    let out = wagate_cli(&["--config", cfg, "config", "history", "olga/replies"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.lines().next().unwrap().contains(&v3.hash[..12]),
        "{listed}"
    );

    // Restore version 1: the files are written back and the running gate reloads them (once
    // it answers, its watcher is up).
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.H1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(2, Duration::from_secs(20)).await;
    let seen = tg.reload_count();
    let out = wagate_cli(&["--config", cfg, "config", "restore", &v1.id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wrote rules/olga/replies/echo.rhai\n"
    );
    assert_eq!(tg.next_reload(seen).await.outcome, "live");
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.H2", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(3, Duration::from_secs(20)).await;
    let sent = sent_to_phone(&tg.fake, OLGA.phone);
    assert_eq!(sent[1]["text"]["body"], "You wrote: hi");
    assert_eq!(sent[2]["text"]["body"], "You said: hi");
    let latest = tg
        .store()
        .latest_config("project", "olga/replies")
        .unwrap()
        .unwrap();
    assert_eq!(latest.hash, v1.hash, "the restored version went live again");
    let out = wagate_cli(&["--config", cfg, "config", "restore", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration version 999"));
    tg.shutdown().await;
}

#[tokio::test]
async fn a_gate_yaml_version_restores_and_the_pinned_version_is_used_for_calls() {
    let mut tg = TestGate::start().await;
    let v1 = tg
        .store()
        .latest_config("gate", "gate.yaml")
        .unwrap()
        .unwrap();
    let cfg = tg.config_path();
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, original.replace("v23.0", "v22.0")).unwrap();
    tg.restart().await;
    let v2 = tg
        .store()
        .latest_config("gate", "gate.yaml")
        .unwrap()
        .unwrap();
    assert_ne!(v1.id, v2.id);
    assert_eq!(
        history::diff(&v1, &v2)
            .lines()
            .filter(|l| l.starts_with('+') || l.starts_with('-'))
            .count(),
        4,
        "headers and one changed line"
    );
    // Every Graph call uses the pinned version.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.V1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, Duration::from_secs(20)).await;
    assert!(tg.fake.requests().iter().all(|r| r.version == "v22.0"));
    let out = wagate_cli(&[
        "--config",
        cfg.to_str().unwrap(),
        "config",
        "restore",
        &v1.id.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("gate.yaml takes effect when the gate next starts")
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), original);
    tg.shutdown().await;
}

#[tokio::test]
async fn check_warns_about_an_expired_or_unknown_pinned_version_and_a_bad_backup_cron() {
    let tg = TestGate::start().await;
    let cfg = tg.config_path();
    let original = std::fs::read_to_string(&cfg).unwrap();
    // Expired versions stay expired, so this holds whatever the date.
    std::fs::write(&cfg, original.replace("v23.0", "v20.0")).unwrap();
    let summary = wagate::app::check(&cfg).unwrap();
    assert!(
        summary.starts_with("warning: Graph API v20.0 expired on 2026-09-24"),
        "{summary}"
    );
    assert!(
        summary.ends_with("ok: 2 user(s), 1 project(s), 1 rule(s)"),
        "{summary}"
    );
    std::fs::write(&cfg, original.replace("v23.0", "v99.0")).unwrap();
    let summary = wagate::app::check(&cfg).unwrap();
    assert!(
        summary.contains("`v99.0` is not one this gate knows"),
        "{summary}"
    );
    std::fs::write(
        &cfg,
        format!("{original}backup: {{ cron: \"at night\", keep: 3 }}\n"),
    )
    .unwrap();
    let e = wagate::app::check(&cfg).unwrap_err();
    assert!(e.contains("gate.yaml `backup.cron`"), "{e}");
    std::fs::write(
        &cfg,
        format!("{original}backup: {{ cron: \"0 3 * * *\" }}\n"),
    )
    .unwrap();
    assert!(wagate::app::check(&cfg).is_ok());
    tg.shutdown().await;
}
