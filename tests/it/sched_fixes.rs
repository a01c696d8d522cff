//! The scheduler's visible edges: a pending `schedule()` call whose rule is renamed (warned
//! at the reload, failed visibly at its due time, listed by the status), users/*.yaml edited
//! while serving (a reload keeps the users as served, and says a restart applies the edit),
//! every-second cron expressions, and crons that can never fire or `at:` times already past.

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::{Arc, Mutex};
use wagate::scheduler::Clock;

fn paris(s: &str) -> DateTime<Utc> {
    let tz: Tz = "Europe/Paris".parse().unwrap();
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// What the gate logs, captured (for the runtime's thread, where reloads run).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Logs to this capture on the current thread until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

const ATTEST: &str = "rules:\n  - name: sched\n    on: message\n    if: 'event.text == \"sched\"'\n    script: s.rhai\n    call: start\n";
const ATTEST_SCRIPT: &str = "fn start(event) { schedule(time(\"2027-04-30T18:00\"), \"later\", #{ to: event.from }); }\nfn later(arg) { send(arg.to, #{ template: \"owner_note\", language: \"en\", params: [\"later ran\"] }); }\n";

#[tokio::test]
async fn a_call_whose_rule_was_renamed_is_warned_at_reload_listed_and_fails_visibly() {
    let tg = TestGate::start_manual_time(&[
        ("olga/attest/project.yaml", ATTEST),
        ("olga/attest/s.rhai", ATTEST_SCRIPT),
    ])
    .await;
    tg.tick(paris("2027-04-30 12:00:00")).await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.ORPH", "sched");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    assert_eq!(tg.store().schedules("olga").unwrap()[0].state, "pending");

    // `wagate status` and the status page list the pending call, due in Olga's time.
    let out = wagate_in(tg.dir.path(), &["status"]).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PENDING SCHEDULE() CALLS (1)\n  2027-04-30 18:00:00 CEST")
            && text.contains("olga  olga/attest/sched: later"),
        "{text}"
    );
    let page = tg
        .client
        .get(tg.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Pending schedule() calls (1)") && page.contains("olga/attest/sched: later"),
        "{page}"
    );

    // Renaming the rule: the reload goes live, and says which pending call lost its rule.
    let logs = Captured::default();
    let guard = logs.install();
    let seen = tg.reload_count();
    tg.write_rule_file(
        "olga/attest/project.yaml",
        &ATTEST.replace("sched\n", "sched2\n"),
    );
    assert_eq!(tg.next_reload(seen).await.outcome, "live");
    let logged = eventually(
        "the orphan warning",
        std::time::Duration::from_secs(20),
        || {
            let t = logs.text();
            async move { t.contains("pending schedule()").then_some(t) }
        },
    )
    .await;
    drop(guard);
    assert!(
        logged.contains("1 pending schedule() call(s) name rules the live rules no longer have: olga/attest/sched (1); the first is due 2027-04-30 18:00:00 CEST"),
        "{logged}"
    );
    let audit = tg.store().audit_entries(Some("olga"), None, 100).unwrap();
    let orphaned = audit
        .iter()
        .find(|e| e.action == "schedule.orphaned")
        .expect("an audit entry for the orphaned calls");
    assert_eq!(orphaned.details["calls"], 1);
    assert_eq!(orphaned.details["rules"][0]["rule"], "olga/attest/sched");

    // At its due time the call cannot run: it fails, traced as a run in error and audited.
    let r = tg.tick(paris("2027-04-30 18:00:05")).await;
    assert!(r.calls.is_empty());
    let row = &tg.store().schedules("olga").unwrap()[0];
    assert_eq!(row.state, "failed");
    let all = tg
        .store()
        .runs(Some("olga"), Some("olga/attest/sched"), 5)
        .unwrap();
    // The run that scheduled it, and the failed call.
    assert_eq!(all.len(), 2, "{all:?}");
    let runs = &all[..1];
    assert_eq!(
        (runs[0].outcome.as_str(), runs[0].trigger.as_deref()),
        ("error", Some("schedule"))
    );
    let err = runs[0].error.as_deref().unwrap_or("");
    assert!(
        err.contains("rule `olga/attest/sched` no longer exists")
            && err.contains("`later` due 2027-04-30 18:00:00 CEST"),
        "{err}"
    );
    let audit = tg.store().audit_entries(Some("olga"), None, 100).unwrap();
    assert!(
        audit.iter().any(|e| e.action == "rule.run"
            && e.details["outcome"] == "error"
            && e.details["rule"] == "sched"),
        "{audit:?}"
    );
    // Nothing was sent, and the status no longer lists it.
    assert!(tg.store().outbox("olga").unwrap().is_empty());
    let text = output_text(&wagate_in(tg.dir.path(), &["status"]).await);
    assert!(text.contains("PENDING SCHEDULE() CALLS (0)"), "{text}");
    assert!(text.contains("no longer exists"), "{text}");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_the_users_as_served_and_says_once_that_a_restart_applies_their_edits() {
    // No timezone in the project: the user's (Europe/Paris) applies.
    let project =
        "rules:\n  - name: evening\n    on: { cron: \"0 18 * * *\" }\n    script: t.rhai\n";
    let script = "send(\"+15550001111\", #{ template: \"timed_note\", params: [event.rule, event.scheduled_for] });\n";
    let tg = TestGate::start_manual_time(&[
        ("olga/remind/project.yaml", project),
        ("olga/remind/t.rhai", script),
    ])
    .await;
    tg.tick(paris("2027-04-24 12:00:00")).await;
    let users_file = tg.dir.path().join("users/olga.yaml");
    let before = std::fs::read_to_string(&users_file).unwrap();
    std::fs::write(
        &users_file,
        before.replace("timezone: Europe/Paris", "timezone: Asia/Tokyo"),
    )
    .unwrap();
    let logs = Captured::default();
    let guard = logs.install();
    let seen = tg.reload_count();
    tg.write_rule_file("olga/remind/t.rhai", &format!("{script}// edited\n"));
    assert_eq!(tg.next_reload(seen).await.outcome, "live");
    // A second rule edit: the same users/ change is not said again.
    tg.write_rule_file("olga/remind/t.rhai", &format!("{script}// edited twice\n"));
    assert_eq!(tg.next_reload(seen + 1).await.outcome, "live");
    drop(guard);
    // 18:00 in Tokyo (11:00 in Paris) does not fire; 18:00 in Paris does.
    let r = tg.tick(paris("2027-04-24 11:00:30")).await;
    assert!(r.fired.is_empty(), "{:?}", r.fired);
    assert_eq!(r.next, Some(paris("2027-04-24 18:00:00")));
    let r = tg.tick(paris("2027-04-24 18:00:00")).await;
    assert_eq!(r.fired.len(), 1);
    let body = &tg.store().outbox("olga").unwrap()[0].body;
    assert_eq!(
        body["template"]["components"][0]["parameters"][1]["text"],
        "2027-04-24T18:00:00+02:00"
    );
    let logged = logs.text();
    assert_eq!(
        logged
            .matches("users/olga.yaml changed; restart the gate to apply it")
            .count(),
        1,
        "{logged}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn every_second_crons_fire_every_second() {
    let mut files = Vec::new();
    for (i, expr) in ["* * * * * *", "*/1 * * * * *", "0-59 * * * * *"]
        .iter()
        .enumerate()
    {
        files.push((
            format!("olga/s{i}/project.yaml"),
            format!(
                "rules:\n  - name: tick{i}\n    on: {{ cron: \"{expr}\" }}\n    script: t.rhai\n"
            ),
        ));
        files.push((
            format!("olga/s{i}/t.rhai"),
            "log(event.scheduled_for);\n".to_string(),
        ));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tg = TestGate::start_manual_time(&files).await;
    // The timers start at the gate's start (the clock's now): tick a few seconds after it (a
    // later first tick would walk, and record as skipped, every second in between).
    let booted = tg.clock.as_ref().unwrap().now();
    let t0 = chrono::DateTime::from_timestamp(booted.timestamp() + 3, 0).unwrap();
    let r = tg.tick(t0).await;
    assert_eq!(r.next, Some(t0 + chrono::Duration::seconds(1)));
    for s in 1..=3 {
        let t = t0 + chrono::Duration::seconds(s);
        let r = tg.tick(t).await;
        let mut fired: Vec<String> = r.fired.iter().map(|(n, _)| n.clone()).collect();
        fired.sort();
        assert_eq!(
            fired,
            ["olga/s0/tick0", "olga/s1/tick1", "olga/s2/tick2"],
            "{s}"
        );
        assert!(r.fired.iter().all(|(_, at)| *at == t));
        assert_eq!(r.next, Some(t + chrono::Duration::seconds(1)));
    }
    tg.shutdown().await;
}

#[tokio::test]
async fn check_refuses_a_cron_that_never_fires_and_warns_about_a_past_at() {
    let home = tempfile::tempdir().unwrap();
    write_home(
        home.path(),
        "http://127.0.0.1:9",
        &[
            (
                "olga/never/project.yaml",
                "rules:\n  - name: feb30\n    on: { cron: \"0 0 30 2 *\" }\n    script: t.rhai\n  - name: apr31\n    on:\n      cron: \"0 0 31 4 *\"\n    script: t.rhai\n",
            ),
            ("olga/never/t.rhai", "log(\"x\");\n"),
        ],
    );
    let out = wagate_in(home.path(), &["check"]).await;
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cron expression `0 0 30 2 *` never fires")
            && text.contains("rules/olga/never/project.yaml:3:")
            && text.contains("cron expression `0 0 31 4 *` never fires")
            && text.contains("rules/olga/never/project.yaml:7:"),
        "{text}"
    );
    // A past `at:` (a year typo) is a warning: check passes and says where it is.
    write(
        &home.path().join("rules/olga/never/project.yaml"),
        "rules:\n  - name: departure\n    on: { at: \"2016-05-01T08:00\" }\n    script: t.rhai\n",
    );
    let out = wagate_in(home.path(), &["check"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        stderr.contains("warning: rules/olga/never/project.yaml:3:16: rule `departure`: `at: 2016-05-01T08:00` (2016-05-01 08:00 CEST) is")
            && stderr.contains("in the past"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_reload_refuses_a_cron_that_never_fires() {
    let project =
        "rules:\n  - name: evening\n    on: { cron: \"0 18 * * *\" }\n    script: t.rhai\n";
    let tg = TestGate::start_manual_time(&[
        ("olga/remind/project.yaml", project),
        ("olga/remind/t.rhai", "log(\"x\");\n"),
    ])
    .await;
    let seen = tg.reload_count();
    tg.write_rule_file(
        "olga/remind/project.yaml",
        &project.replace("0 18 * * *", "0 0 31 4 *"),
    );
    let r = tg.next_reload(seen).await;
    assert_eq!(r.outcome, "rejected");
    let e = r.error.unwrap_or_default();
    assert!(
        e.contains("never fires") && e.contains("rules/olga/remind/project.yaml:3:"),
        "{e}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn restoring_the_live_version_after_a_rejected_edit_is_said_and_recorded() {
    let project =
        "rules:\n  - name: evening\n    on: { cron: \"0 18 * * *\" }\n    script: t.rhai\n";
    let tg = TestGate::start_manual_time(&[
        ("olga/remind/project.yaml", project),
        ("olga/remind/t.rhai", "log(\"x\");\n"),
    ])
    .await;
    let live = tg.store().reloads(1).unwrap()[0].hash.clone();
    let logs = Captured::default();
    let guard = logs.install();
    let seen = tg.reload_count();
    tg.write_rule_file("olga/remind/t.rhai", "log(\"x\" + );\n");
    assert_eq!(tg.next_reload(seen).await.outcome, "rejected");
    tg.write_rule_file("olga/remind/t.rhai", "log(\"x\");\n");
    let back = tg.next_reload(seen + 1).await;
    assert_eq!(
        (back.outcome.as_str(), back.hash.as_str()),
        ("live", live.as_str())
    );
    let logged = eventually(
        "the recovery line",
        std::time::Duration::from_secs(20),
        || {
            let t = logs.text();
            async move { t.contains("rules compile again").then_some(t) }
        },
    )
    .await;
    drop(guard);
    assert!(logged.contains("the rejected edit was undone"), "{logged}");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_rule_renamed_while_the_gate_was_down_is_said_at_start() {
    let mut tg = TestGate::start_manual_time(&[
        ("olga/attest/project.yaml", ATTEST),
        ("olga/attest/s.rhai", ATTEST_SCRIPT),
    ])
    .await;
    tg.tick(paris("2027-04-30 12:00:00")).await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.DOWN", "sched");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let orphaned = |tg: &TestGate| {
        tg.store()
            .audit_entries(Some("olga"), None, 100)
            .unwrap()
            .iter()
            .filter(|e| e.action == "schedule.orphaned")
            .count()
    };
    assert_eq!(orphaned(&tg), 0);
    std::fs::write(
        tg.dir.path().join("rules/olga/attest/project.yaml"),
        ATTEST.replace("sched\n", "renamed\n"),
    )
    .unwrap();
    tg.restart().await;
    eventually(
        "the orphaned calls said at start",
        std::time::Duration::from_secs(20),
        || {
            let n = orphaned(&tg);
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    tg.shutdown().await;
}
