//! The scheduler with time driven by hand: cron and `at` in the project timezone, DST both
//! ways in Paris and Jerusalem, downtime with catch-up both ways, reloads between firings,
//! `schedule()` calls, a crash mid-firing, and a thousand firings with none doubled.

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn local(tz: &str, s: &str) -> DateTime<Utc> {
    let tz: Tz = tz.parse().unwrap();
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn paris(s: &str) -> DateTime<Utc> {
    local("Europe/Paris", s)
}

/// A project of timed rules, each sending "<rule> <scheduled_for>" to a fixed number.
fn timed(user_project: &str, tz: &str, rules: &[(&str, &str, &str)]) -> Vec<(String, String)> {
    let mut yaml = format!("timezone: {tz}\nrules:\n");
    for (name, on, extra) in rules {
        yaml += &format!("  - name: {name}\n    on: {on}\n    script: t.rhai\n{extra}");
    }
    vec![
        (format!("{user_project}/project.yaml"), yaml),
        (
            format!("{user_project}/t.rhai"),
            "send(\"+15550001111\", #{ template: \"timed_note\", params: [event.rule, event.scheduled_for] });\n".to_string(),
        ),
    ]
}

async fn start(files: &[(String, String)]) -> TestGate {
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    TestGate::start_manual_time(&files).await
}

async fn tick(tg: &TestGate, t: DateTime<Utc>) -> wagate::scheduler::TickReport {
    tg.tick(t).await
}

fn fired(r: &wagate::scheduler::TickReport) -> Vec<String> {
    r.fired
        .iter()
        .map(|(n, t)| format!("{n} {}", t.to_rfc3339()))
        .collect()
}

fn sent(tg: &TestGate) -> Vec<String> {
    let mut rows: Vec<String> = tg
        .store()
        .outbox("olga")
        .unwrap()
        .iter()
        .map(|r| template_text(&r.body))
        .collect();
    rows.sort();
    rows
}

/// A template's name and body parameters as one line: `name p1 p2`.
fn template_text(body: &serde_json::Value) -> String {
    let params = body["template"]["components"][0]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut parts = vec![body["template"]["name"].as_str().unwrap_or("").to_string()];
    parts.extend(
        params
            .iter()
            .map(|p| p["text"].as_str().unwrap_or("").to_string()),
    );
    parts.join(" ")
}

#[tokio::test]
async fn a_cron_rule_fires_once_at_its_local_time() {
    let files = timed(
        "olga/remind",
        "Europe/Paris",
        &[("evening", "{ cron: \"0 18 * * *\" }", "")],
    );
    let tg = start(&files).await;
    let r = tick(&tg, paris("2026-04-24 12:00:00")).await;
    assert!(r.fired.is_empty());
    assert_eq!(r.next, Some(paris("2026-04-24 18:00:00")));
    assert!(
        tick(&tg, paris("2026-04-24 17:59:59"))
            .await
            .fired
            .is_empty()
    );
    let r = tick(&tg, paris("2026-04-24 18:00:00")).await;
    assert_eq!(
        fired(&r),
        vec!["olga/remind/evening 2026-04-24T16:00:00+00:00"]
    );
    assert_eq!(r.next, Some(paris("2026-04-25 18:00:00")));
    // The same instant, again and a little later: nothing more.
    assert!(
        tick(&tg, paris("2026-04-24 18:00:00"))
            .await
            .fired
            .is_empty()
    );
    assert!(
        tick(&tg, paris("2026-04-24 18:00:30"))
            .await
            .fired
            .is_empty()
    );
    assert_eq!(
        sent(&tg),
        vec!["timed_note evening 2026-04-24T18:00:00+02:00"]
    );
    // The run is traced as triggered by the schedule.
    let run = &tg.store().runs(Some("olga"), Some("evening"), 1).unwrap()[0];
    assert_eq!(
        (run.trigger.as_deref(), run.outcome.as_str()),
        (Some("schedule"), "ok")
    );
    // And the message really goes out.
    tg.fake.wait_for(1, T).await;
    tg.shutdown().await;
}

#[tokio::test]
async fn dst_in_paris_and_jerusalem_fires_once_each_way() {
    let mut files = timed(
        "olga/paris",
        "Europe/Paris",
        &[("night", "{ cron: \"30 2 * * *\" }", "")],
    );
    files.extend(timed(
        "olga/israel",
        "Asia/Jerusalem",
        &[("night-il", "{ cron: \"30 1 * * *\" }", "")],
    ));
    let tg = start(&files).await;
    // Walk time minute by minute in UTC and collect what fires.
    async fn walk(tg: &TestGate, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let mut all = Vec::new();
        let mut t = from;
        while t <= to {
            all.extend(fired(&tick(tg, t).await));
            t += chrono::Duration::minutes(1);
        }
        all
    }
    // Spring forward: Jerusalem on Friday 2026-03-27 (02:00 → 03:00), Paris on Sunday the
    // 29th (02:00 → 03:00). Jerusalem's 01:30 exists both nights; Paris's 02:30 does not on
    // the 29th and fires once, at 03:00, the first valid instant after it.
    let spring = walk(
        &tg,
        Utc.with_ymd_and_hms(2026, 3, 26, 20, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 29, 3, 0, 0).unwrap(),
    )
    .await;
    assert_eq!(
        spring,
        vec![
            "olga/israel/night-il 2026-03-26T23:30:00+00:00",
            "olga/paris/night 2026-03-27T01:30:00+00:00",
            "olga/israel/night-il 2026-03-27T22:30:00+00:00",
            "olga/paris/night 2026-03-28T01:30:00+00:00",
            "olga/israel/night-il 2026-03-28T22:30:00+00:00",
            "olga/paris/night 2026-03-29T01:00:00+00:00",
        ]
    );
    // Fall back: 2026-10-25 02:30 happens twice in Paris, 01:30 twice in Jerusalem; each once.
    tick(&tg, paris("2026-10-24 12:00:00")).await;
    let all = walk(
        &tg,
        Utc.with_ymd_and_hms(2026, 10, 24, 21, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 10, 25, 3, 0, 0).unwrap(),
    )
    .await;
    assert_eq!(
        all,
        vec![
            "olga/israel/night-il 2026-10-24T22:30:00+00:00",
            "olga/paris/night 2026-10-25T00:30:00+00:00",
        ],
        "the second 01:30 (Jerusalem, 23:30Z) and the second 02:30 (Paris, 01:30Z) do not fire"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn after_downtime_catch_up_once_fires_once_and_skip_or_too_late_is_recorded() {
    let files = timed(
        "olga/catch",
        "Europe/Paris",
        &[
            ("once", "{ cron: \"0 18 * * *\" }", "    max_lateness: 2h\n"),
            ("skip", "{ cron: \"0 18 * * *\" }", "    catch_up: skip\n"),
            (
                "tight",
                "{ cron: \"0 18 * * *\" }",
                "    max_lateness: 1h\n",
            ),
        ],
    );
    let mut tg = start(&files).await;
    tick(&tg, paris("2026-04-20 12:00:00")).await;
    // The gate is down from before 18:00 on the 20th until 19:30 on the 23rd.
    tg.restart().await;
    let r = tick(&tg, paris("2026-04-23 19:30:00")).await;
    assert_eq!(fired(&r), vec!["olga/catch/once 2026-04-23T16:00:00+00:00"]);
    let skipped: Vec<String> = r
        .skipped
        .iter()
        .map(|(n, t, why)| format!("{n} {} {why}", t.format("%d %H:%M")))
        .collect();
    assert_eq!(skipped.len(), 3 * 4 - 1, "{skipped:#?}");
    assert!(skipped.contains(&"olga/catch/once 20 16:00 missed by 3d 1h while the gate was down; a later instant superseded it".to_string()));
    assert!(
        skipped.contains(
            &"olga/catch/skip 23 16:00 missed by 1h 30m while the gate was down (catch_up: skip)"
                .to_string()
        )
    );
    assert!(skipped.contains(
        &"olga/catch/tight 23 16:00 missed by 1h 30m, beyond max_lateness 1h 0m".to_string()
    ));
    // Every instant is recorded exactly once, fired or skipped.
    let firings = tg.store().firings().unwrap();
    assert_eq!(firings.len(), 12);
    assert_eq!(firings.iter().filter(|f| f.state == "done").count(), 1);
    // Back to normal: the next evening fires for all three.
    let r = tick(&tg, paris("2026-04-24 18:00:10")).await;
    assert_eq!(r.fired.len(), 3);
    assert_eq!(sent(&tg).len(), 4);
    tg.shutdown().await;
}

#[tokio::test]
async fn reloads_recompute_without_firing_early_or_twice_and_removal_cancels() {
    let files = timed(
        "olga/edit",
        "Europe/Paris",
        &[("evening", "{ cron: \"0 18 * * *\" }", "")],
    );
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:00")).await;
    let seen = tg.reload_count();
    let edited = timed(
        "olga/edit",
        "Europe/Paris",
        &[("evening", "{ cron: \"0 19 * * *\" }", "")],
    );
    tg.write_rule_file("olga/edit/project.yaml", &edited[0].1);
    assert_eq!(tg.next_reload(seen).await.outcome, "live");
    let r = tick(&tg, paris("2026-04-24 17:00:00")).await;
    assert_eq!(r.next, Some(paris("2026-04-24 19:00:00")));
    assert!(
        tick(&tg, paris("2026-04-24 18:00:00"))
            .await
            .fired
            .is_empty(),
        "the old time no longer fires"
    );
    assert_eq!(tick(&tg, paris("2026-04-24 19:00:00")).await.fired.len(), 1);
    // A reload that changes nothing about the rule keeps its timer: no second firing.
    tg.write_rule_file(
        "olga/edit/t.rhai",
        "send(\"+15550001111\", \"v2 \" + event.scheduled_for);\n",
    );
    assert_eq!(tg.next_reload(seen + 1).await.outcome, "live");
    assert!(
        tick(&tg, paris("2026-04-24 19:00:30"))
            .await
            .fired
            .is_empty()
    );
    // Removing the rule cancels its future firings.
    tg.write_rule_file(
        "olga/edit/project.yaml",
        "timezone: Europe/Paris\nrules: []\n",
    );
    assert_eq!(tg.next_reload(seen + 2).await.outcome, "live");
    let r = tick(&tg, paris("2026-04-25 19:00:00")).await;
    assert!(r.fired.is_empty());
    assert!(tg.store().timers().unwrap().is_empty());
    assert_eq!(
        sent(&tg),
        vec!["timed_note evening 2026-04-24T19:00:00+02:00"]
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn an_at_rule_fires_once_and_a_scheduled_call_runs_once() {
    let mut files = timed(
        "olga/once",
        "Europe/Paris",
        &[("departure", "{ at: \"2026-05-01T08:00\" }", "")],
    );
    files.push((
        "olga/later/project.yaml".into(),
        "rules:\n  - name: later\n    on: message\n    script: l.rhai\n    call: on_message\n"
            .into(),
    ));
    files.push((
        "olga/later/l.rhai".into(),
        "fn remind(arg) { send(arg.to, #{ template: \"reminder\", params: [`for ${arg.to}`, `at ${now().format(\"%H:%M\")}`] }) }\nfn on_message(event) { schedule(time(\"2026-04-30T18:00\"), \"remind\", #{ to: event.from }); }\n".into(),
    ));
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:00")).await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.SCH", "book me");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    assert!(
        tick(&tg, paris("2026-04-30 17:59:00"))
            .await
            .calls
            .is_empty()
    );
    let r = tick(&tg, paris("2026-04-30 18:00:05")).await;
    assert_eq!(r.calls, vec!["olga/later/later: remind"]);
    assert!(
        tick(&tg, paris("2026-04-30 18:01:00"))
            .await
            .calls
            .is_empty(),
        "once"
    );
    let r = tick(&tg, paris("2026-05-01 08:00:00")).await;
    assert_eq!(
        fired(&r),
        vec!["olga/once/departure 2026-05-01T06:00:00+00:00"]
    );
    assert_eq!(r.next, None, "nothing left to fire");
    assert!(
        tick(&tg, paris("2026-05-02 08:00:00"))
            .await
            .fired
            .is_empty()
    );
    assert_eq!(
        sent(&tg),
        vec![
            "reminder for 33612345678 at 18:00",
            "timed_note departure 2026-05-01T08:00:00+02:00"
        ]
    );
    assert_eq!(tg.store().schedules("olga").unwrap()[0].state, "done");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_firing_cut_short_by_a_crash_runs_again_once() {
    let files = timed(
        "olga/crash",
        "Europe/Paris",
        &[("evening", "{ cron: \"0 18 * * *\" }", "")],
    );
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:00")).await;
    // A firing claimed (timer moved on) whose run never committed: as if the gate died.
    let timer = tg.store().timers().unwrap().remove(0);
    let instant = paris("2026-04-24 18:00:00").timestamp_millis();
    let next = paris("2026-04-25 18:00:00").timestamp_millis();
    assert!(
        tg.store()
            .claim_firing(&timer, instant, Some(next), None)
            .unwrap()
            .is_some()
    );
    assert!(
        tg.store()
            .claim_firing(&timer, instant, Some(next), None)
            .unwrap()
            .is_none(),
        "an instant is claimed once"
    );
    let r = tick(&tg, paris("2026-04-24 18:05:00")).await;
    assert_eq!(r.fired.len(), 1);
    assert!(
        tick(&tg, paris("2026-04-24 18:06:00"))
            .await
            .fired
            .is_empty()
    );
    assert_eq!(
        sent(&tg),
        vec!["timed_note evening 2026-04-24T18:00:00+02:00"]
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn a_thousand_firings_through_restarts_and_repeated_ticks_none_doubled() {
    let files = timed(
        "olga/minute",
        "Asia/Jerusalem",
        &[("every", "{ cron: \"* * * * *\" }", "")],
    );
    let mut tg = start(&files).await;
    let t0 = Utc.with_ymd_and_hms(2026, 10, 24, 20, 0, 30).unwrap();
    tick(&tg, t0).await;
    // The walk crosses Jerusalem's fall-back on 2026-10-25 (02:00 → 01:00): the repeated
    // local hour's 60 minutes fire once each, so 1060 minutes of real time give 1000 firings.
    let mut total = 0;
    for i in 1..=1060 {
        let t = t0 + chrono::Duration::minutes(i);
        total += tick(&tg, t).await.fired.len();
        if i % 7 == 0 {
            total += tick(&tg, t).await.fired.len(); // the same instant again
        }
        if i % 265 == 0 {
            tg.restart().await;
        }
    }
    assert_eq!(total, 1000);
    let firings = tg.store().firings().unwrap();
    assert_eq!(firings.len(), 1000);
    let instants: std::collections::BTreeSet<i64> = firings.iter().map(|f| f.instant_ms).collect();
    assert_eq!(instants.len(), 1000, "every instant once");
    assert!(firings.iter().all(|f| f.state == "done"));
    assert_eq!(tg.store().outbox("olga").unwrap().len(), 1000);
    tg.shutdown().await;
}

/// With the scheduler's own loop and the real clock: a `schedule()` call due in a second runs
/// about then, not at the loop's next look (a minute away when nothing else is due).
#[tokio::test]
async fn a_call_scheduled_seconds_ahead_runs_on_time_with_the_real_clock() {
    let tg = TestGate::start_with(&[
        (
            "olga/soon/project.yaml",
            "rules:\n  - name: ask\n    on: message\n    script: s.rhai\n    call: on_message\n",
        ),
        (
            "olga/soon/s.rhai",
            "fn later(to) { send(to, \"one second later\") }\nfn on_message(event) { schedule(1, \"later\", event.from); }\n",
        ),
    ])
    .await;
    assert!(tg.clock.is_none(), "this test needs the scheduler's loop");
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.SOON1", "hello");
    let asked = std::time::Instant::now();
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    // Bounded well below the minute the loop would otherwise sleep.
    let sent = tg.fake.wait_for(1, T).await;
    let waited = asked.elapsed();
    assert_eq!(sent.len(), 1, "not run within {T:?}");
    assert_eq!(sent[0].body["to"], "+33612345678");
    assert_eq!(sent[0].body["text"]["body"], "one second later");
    assert!(waited >= Duration::from_secs(1), "ran early: {waited:?}");
    tg.shutdown().await;
}

/// A timed rule and message runs raise one count at the same time: a timed run whose read
/// value changed before its commit runs again too, so no step is lost on either side.
#[tokio::test]
async fn timed_runs_and_message_runs_raising_one_count_lose_no_step() {
    let script = "let n = state(\"n\");\nif n == () { n = 0; }\nlet i = 0;\nwhile i < 2000 { i += 1; }\nset_state(\"n\", n + 1);\n";
    let files = vec![
        (
            "olga/tally/project.yaml".to_string(),
            "timezone: Europe/Paris\nrules:\n  - name: minute\n    on: { cron: \"* * * * *\" }\n    script: t.rhai\n  - name: message\n    on: message\n    script: t.rhai\n".to_string(),
        ),
        ("olga/tally/t.rhai".to_string(), script.to_string()),
    ];
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:00")).await;
    const MESSAGES: usize = 20;
    const MINUTES: u32 = 5;
    let ticks = {
        let scheduler = tg.gate().scheduler.clone();
        tokio::spawn(async move {
            let mut fired = 0;
            for m in 1..=MINUTES {
                let r = scheduler
                    .tick(paris(&format!("2026-04-24 12:{m:02}:00")))
                    .await;
                fired += r.fired.len();
            }
            fired
        })
    };
    for i in 0..MESSAGES {
        let body = text_webhook(
            OLGA,
            &format!("336100000{i:02}"),
            "Ann",
            &format!("wamid.TN{i}"),
            "hi",
        );
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    }
    assert_eq!(ticks.await.unwrap(), MINUTES as usize);
    let want = serde_json::json!(MESSAGES + MINUTES as usize);
    settled(&tg, "olga").await;
    let runs = tg.store().runs(Some("olga"), None, 100).unwrap();
    assert_eq!(runs.len(), MESSAGES + MINUTES as usize, "{runs:?}");
    assert!(runs.iter().all(|r| r.outcome == "ok"), "{runs:#?}");
    assert_eq!(
        tg.store().state_get("olga", "olga/tally", "n").unwrap(),
        Some(want)
    );
    tg.shutdown().await;
}

/// A timed run's `send` returns the key its outbox row carries, as a message's run does.
#[tokio::test]
async fn a_timed_runs_send_returns_its_outbox_key() {
    let files = vec![
        (
            "olga/ids/project.yaml".to_string(),
            "timezone: Europe/Paris\nrules:\n  - name: minute\n    on: { cron: \"* * * * *\" }\n    script: t.rhai\n".to_string(),
        ),
        (
            "olga/ids/t.rhai".to_string(),
            "let id = send(\"+15550001111\", #{ template: \"timed_note\", params: [\"a\", \"b\"] });\nset_state(\"id\", id);\n".to_string(),
        ),
    ];
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:00")).await;
    let r = tick(&tg, paris("2026-04-24 12:01:00")).await;
    assert_eq!(r.fired.len(), 1);
    let id = tg.store().state_get("olga", "olga/ids", "id").unwrap();
    let rows = tg.store().outbox("olga").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(id, Some(serde_json::json!(rows[0].idem_key)));
    assert!(rows[0].idem_key.starts_with("fire"), "{}", rows[0].idem_key);
    tg.shutdown().await;
}

/// `schedule()` with a time already past is the script's error, placed at its call, and keeps
/// nothing; a minute late (a time text to the minute) is still "now".
#[tokio::test]
async fn a_call_scheduled_in_the_past_fails_its_run_and_keeps_nothing() {
    let files = vec![
        (
            "olga/later/project.yaml".into(),
            "rules:\n  - name: later\n    on: message\n    script: l.rhai\n    call: on_message\n"
                .into(),
        ),
        (
            "olga/later/l.rhai".into(),
            "fn remind(arg) { send(arg, \"hi\") }\nfn on_message(event) {\n    if event.text == \"late\" {\n        schedule(\"2026-04-24T12:00\", \"remind\", event.from);\n    } else {\n        schedule(\"2026-04-24T11:00\", \"remind\", event.from);\n    }\n}\n".into(),
        ),
    ];
    let tg = start(&files).await;
    tick(&tg, paris("2026-04-24 12:00:30")).await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.PAST", "book me");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let run = &tg.store().runs(Some("olga"), Some("later"), 1).unwrap()[0];
    assert_eq!(run.outcome, "error", "{run:?}");
    let error = run.error.as_deref().unwrap();
    assert!(
        error.contains("2026-04-24T11:00:00+02:00 is 1h 0m in the past")
            && error.contains("l.rhai:6:"),
        "{error}"
    );
    assert!(tg.store().schedules("olga").unwrap().is_empty());
    // Half a minute past: kept, and run at the next tick.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.LATE", "late");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let run = &tg.store().runs(Some("olga"), Some("later"), 1).unwrap()[0];
    assert_eq!(tg.store().schedules("olga").unwrap().len(), 1, "{run:?}");
    let r = tick(&tg, paris("2026-04-24 12:00:40")).await;
    assert_eq!(r.calls, vec!["olga/later/later: remind"]);
    tg.shutdown().await;
}
