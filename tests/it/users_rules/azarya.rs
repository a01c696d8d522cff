//! Azarya's shipped inbox: urgent forward, keyword answers, the auto-reply once a day.

use super::*;

const INBOX: &str = "azarya/auto-reply";
const DANA: &str = "972501234567";
const BEN: &str = "972527654321";

/// The latest local 03:00 in Jerusalem at least five minutes ago (02:00 if 03:00 is just
/// now): a night hour within the last 24 hours, so that replies are inside the window.
fn last_night_in_jerusalem() -> DateTime<Utc> {
    let tz: Tz = "Asia/Jerusalem".parse().unwrap();
    let now = Utc::now();
    let today = now.with_timezone(&tz).date_naive();
    let at = |d: chrono::NaiveDate, h: u32| {
        tz.from_local_datetime(&d.and_hms_opt(h, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    };
    let five = chrono::Duration::minutes(5);
    [at(today, 3), at(today, 2), at(today.pred_opt().unwrap(), 3)]
        .into_iter()
        .find(|t| *t <= now - five)
        .unwrap()
}

#[tokio::test]
async fn azarya_auto_reply_once_per_contact_per_day_keywords_every_time_urgent_forwarded() {
    let tg = start("azarya").await;
    let mut out = Outbox::new("azarya");
    let night = last_night_in_jerusalem().timestamp();
    // A night in Israel: Dana writes twice, Ben once.
    post(
        &tg,
        AZARYA,
        message(
            AZARYA,
            DANA,
            "Dana",
            "wamid.D1",
            night,
            text("Hi, can you call me back?"),
        ),
    )
    .await;
    post(
        &tg,
        AZARYA,
        message(
            AZARYA,
            DANA,
            "Dana",
            "wamid.D2",
            night + 60,
            text("I'll be free after lunch"),
        ),
    )
    .await;
    post(
        &tg,
        AZARYA,
        message(AZARYA, BEN, "", "wamid.B1", night + 120, text("Hello")),
    )
    .await;
    let sent = out.after_messages(&tg).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(
        sent[0].starts_with("+972501234567 text: Hi Dana! Thanks for your message. The office is closed now; Azarya will answer you "),
        "{sent:#?}"
    );
    assert!(
        sent[1].starts_with("+972527654321 text: Hi there! Thanks for your message."),
        "{sent:#?}"
    );
    let day = Utc
        .timestamp_opt(night, 0)
        .unwrap()
        .with_timezone(&"Asia/Jerusalem".parse::<Tz>().unwrap())
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        state(&tg, "azarya", INBOX, &format!("auto-replied:{DANA}")),
        Some(json!(day))
    );
    let second = &tg
        .store()
        .runs(Some("azarya"), Some("auto-reply"), 10)
        .unwrap();
    assert!(
        second.iter().any(|r| r
            .logs
            .iter()
            .any(|l| l == &format!("already auto-replied to {DANA} today"))),
        "the second message's run says why it did not reply"
    );
    // Keywords are answered every time; urgent messages go to Azarya's own phone (he never
    // wrote to his business number, so as his template) and Dana is told.
    post(
        &tg,
        AZARYA,
        message(
            AZARYA,
            DANA,
            "Dana",
            "wamid.D3",
            night + 180,
            text("What is your address?"),
        ),
    )
    .await;
    post(
        &tg,
        AZARYA,
        message(
            AZARYA,
            DANA,
            "Dana",
            "wamid.D4",
            night + 240,
            text("And your address for deliveries?"),
        ),
    )
    .await;
    post(
        &tg,
        AZARYA,
        message(
            AZARYA,
            BEN,
            "Ben",
            "wamid.B2",
            night + 300,
            text("URGENT: the shop window is broken"),
        ),
    )
    .await;
    assert_eq!(
        out.after_messages(&tg).await,
        [
            "+972501234567 text: Hi Dana! The office is at 22 Rothschild Boulevard, Tel Aviv, 3rd floor.",
            "+972501234567 text: Hi Dana! The office is at 22 Rothschild Boulevard, Tel Aviv, 3rd floor.",
            "+972527654321 text: Thank you Ben, your message was forwarded to Azarya's phone right away.",
            "+972549990001 template urgent_forward en: Ben | +972527654321 | URGENT: the shop window is broken",
        ]
    );
    all_delivered(&tg, AZARYA).await;

    // The next day and working hours, as dry runs of the same rule on the same database:
    // the next night replies again; the same night and Monday 10:00 do not.
    let event = tg.dir.path().join("dana.json");
    std::fs::write(
        &event,
        json!({"kind": "message", "id": "wamid.D9", "from": DANA, "name": "Dana", "type": "text", "text": "Still there?"}).to_string(),
    )
    .unwrap();
    let local_night = Utc
        .timestamp_opt(night, 0)
        .unwrap()
        .with_timezone(&"Asia/Jerusalem".parse::<Tz>().unwrap());
    let dry = |now: String| {
        let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
            .arg("--config")
            .arg(tg.config_path())
            .args(["rules", "test", "azarya/auto-reply/auto-reply", "--event"])
            .arg(&event)
            .args(["--now", &now])
            .env_remove("WAGATE_CONFIG")
            .env_remove("WAGATE_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let fmt = |t: chrono::DateTime<Tz>| t.format("%Y-%m-%dT%H:%M").to_string();
    let next_night = dry(fmt(local_night + hours(24)));
    assert!(next_night.contains("would send to +972501234567 (text, quoting wamid.D9): Hi Dana! Thanks for your message."), "{next_night}");
    let same_night = dry(fmt(local_night + hours(1)));
    assert!(!same_night.contains("would send"), "{same_night}");
    assert!(
        same_night.contains("log: already auto-replied to 972501234567 today"),
        "{same_night}"
    );
    let monday_morning = dry("2026-05-11T10:00".into());
    assert!(!monday_morning.contains("would"), "{monday_morning}");
    tg.shutdown().await;
}
