//! The users' shipped rules (the repository's `rules/`), end to end: loaded as they ship into a
//! test home, fired by the scheduler at exact local times on a hand-driven clock, answered with
//! signed webhooks shaped like Meta's, checked on what the fake Cloud API received and on the
//! projects' state.
//!
//! Two clocks meet here. Timed rules run on the manual clock (May 2026, when the tour and the
//! consultations are), message rules and the sender on the real one. A webhook carries the real
//! time as WhatsApp's timestamp, which is after May 2026: for the timed rules someone who wrote
//! in the test has written recently (their 24-hour window is open), someone who never wrote
//! has not. Both branches of every reminder (free-form or template) are exercised that way.

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const TOUR: &str = "olga/design-travels/PARIS-2026";
const CONSULTATIONS: &str = "olga/consultations";
const INBOX: &str = "azarya/auto-reply";

const OLGA_OWN: &str = "33639980000";
const ANNA: &str = "33639980001";
const CLAIRE: &str = "33639980002";
const JAMES: &str = "447700900003";
const SOPHIE: &str = "33639980011";
const IRINA: &str = "33639980012";
const EMMA: &str = "447700900013";
const DANA: &str = "972501234567";
const BEN: &str = "972527654321";

/// Every file under the repository's `rules/<under>`, as (path under rules/, text).
fn shipped(under: &str) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut out = Vec::new();
    walk(&root, &root.join(under), &mut out);
    assert!(!out.is_empty(), "nothing shipped under rules/{under}");
    out
}

async fn start(under: &str) -> TestGate {
    let files = shipped(under);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    TestGate::start_manual_time(&files).await
}

fn local(tz: &str, s: &str) -> DateTime<Utc> {
    let tz: Tz = tz.parse().unwrap();
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn paris(s: &str) -> DateTime<Utc> {
    local("Europe/Paris", s)
}

/// A sent message as one line: `+<to> <what>`, where `what` is `template NAME LANG: params
/// [payloads]`, `text: BODY`, `buttons: BODY [id=title, …]` or `location NAME`.
fn line(to: &str, body: &Value) -> String {
    let what = match body["type"].as_str().unwrap_or("") {
        "template" => {
            let t = &body["template"];
            let comps = t["components"].as_array().cloned().unwrap_or_default();
            let mut params = Vec::new();
            let mut payloads = Vec::new();
            for c in &comps {
                for p in c["parameters"].as_array().into_iter().flatten() {
                    match c["type"].as_str() {
                        Some("body") => params.push(p["text"].as_str().unwrap_or("").to_string()),
                        _ => payloads.push(p["payload"].as_str().unwrap_or("").to_string()),
                    }
                }
            }
            let mut s = format!(
                "template {} {}: {}",
                t["name"].as_str().unwrap_or(""),
                t["language"]["code"].as_str().unwrap_or(""),
                params.join(" | ")
            );
            if !payloads.is_empty() {
                s += &format!(" [{}]", payloads.join(", "));
            }
            s
        }
        "text" => format!("text: {}", body["text"]["body"].as_str().unwrap_or("")),
        "interactive" => {
            let i = &body["interactive"];
            let buttons: Vec<String> = i["action"]["buttons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "{}={}",
                        b["reply"]["id"].as_str().unwrap_or(""),
                        b["reply"]["title"].as_str().unwrap_or("")
                    )
                })
                .collect();
            format!(
                "buttons: {} [{}]",
                i["body"]["text"].as_str().unwrap_or(""),
                buttons.join(", ")
            )
        }
        "location" => format!(
            "location {}",
            body["location"]["name"].as_str().unwrap_or("")
        ),
        other => format!("{other}: {body}"),
    };
    format!("+{to} {what}")
}

/// Reads what the gate queued for a user since the last look.
struct Outbox {
    user: &'static str,
    seen: usize,
}

impl Outbox {
    fn new(user: &'static str) -> Self {
        Outbox { user, seen: 0 }
    }

    /// The rows queued since the last call, as sorted lines.
    fn new_lines(&mut self, tg: &TestGate) -> Vec<String> {
        let rows = tg.store().outbox(self.user).unwrap();
        let mut lines: Vec<String> = rows[self.seen..]
            .iter()
            .map(|r| line(&r.recipient.replace('+', ""), &r.body))
            .collect();
        self.seen = rows.len();
        lines.sort();
        lines
    }

    /// Ticks the scheduler every `step` from `from` to `to` (both included) and returns what
    /// each tick queued, as `<local time> <line>`.
    async fn walk(
        &mut self,
        tg: &TestGate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: chrono::Duration,
        tz: Tz,
    ) -> Vec<String> {
        let mut all = Vec::new();
        let mut t = from;
        while t <= to {
            tg.gate().scheduler.tick(t).await;
            let at = t.with_timezone(&tz).format("%m-%d %H:%M").to_string();
            all.extend(self.new_lines(tg).into_iter().map(|l| format!("{at} {l}")));
            t += step;
        }
        all
    }

    /// Waits for the user's events and sends to settle, and returns what was queued since the
    /// last look.
    async fn after_messages(&mut self, tg: &TestGate) -> Vec<String> {
        settled(tg, self.user).await;
        self.new_lines(tg)
    }
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// A Meta `messages` webhook with one message of `kind` (`text`, `button`, `interactive`)
/// from `from`, at WhatsApp time `ts`, shaped like the fixtures in ../shared.
fn message(u: TestUser, from: &str, name: &str, wamid: &str, ts: i64, content: Value) -> Vec<u8> {
    let mut m = json!({"from": from, "id": wamid, "timestamp": ts.to_string()});
    for (k, v) in content.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": u.waba, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{}", u.phone), "phone_number_id": u.phone},
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [m]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

/// A template's quick-reply button, as Meta delivers it (type `button`).
fn quick_reply(payload: &str, title: &str) -> Value {
    json!({"type": "button", "button": {"payload": payload, "text": title},
           "context": {"from": "15550000000", "id": "wamid.TEMPLATE"}})
}

/// A reply button of an interactive message (type `interactive`, `button_reply`).
fn button_reply(id: &str, title: &str) -> Value {
    json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}},
           "context": {"from": "15550000000", "id": "wamid.BUTTONS"}})
}

async fn post(tg: &TestGate, u: TestUser, body: Vec<u8>) {
    let r = tg.post_signed(u, &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

fn state(tg: &TestGate, user: &str, project: &str, key: &str) -> Option<Value> {
    tg.store().state_get(user, project, key).unwrap()
}

/// Every row queued for `user` went out, and the fake Cloud API received exactly those.
async fn all_delivered(tg: &TestGate, u: TestUser) {
    let rows = settled(tg, u.name).await;
    let failed: Vec<_> = rows.iter().filter(|r| r.state != "sent").collect();
    assert!(failed.is_empty(), "not sent: {failed:#?}");
    let mut queued: Vec<String> = rows
        .iter()
        .map(|r| line(&r.recipient.replace('+', ""), &r.body))
        .collect();
    let mut received: Vec<String> = sent_to_phone(&tg.fake, u.phone)
        .iter()
        .map(|b| line(b["to"].as_str().unwrap_or("").trim_start_matches('+'), b))
        .collect();
    queued.sort();
    received.sort();
    assert_eq!(received, queued);
}

#[tokio::test]
async fn paris_2026_reminders_fire_once_at_paris_times_and_buttons_record_answers() {
    let tg = start("olga").await;
    let tz: Tz = "Europe/Paris".parse().unwrap();
    let mut out = Outbox::new("olga");
    tg.gate().scheduler.tick(paris("2026-05-06 12:00")).await;
    // Hour by hour up to the day-before reminders (the consultations of 12 and 13 May fire
    // too; they have their own test). Nobody has written yet: every reminder is a template.
    let sent = out
        .walk(
            &tg,
            paris("2026-05-06 13:00"),
            paris("2026-05-13 10:00"),
            hours(1),
            tz,
        )
        .await;
    let tour: Vec<&String> = sent
        .iter()
        .filter(|l| l.contains("tour_") || l.contains("PARIS-2026"))
        .collect();
    assert_eq!(
        tour,
        [
            "05-07 10:00 +33639980001 template tour_week_before ru: Anna | Paris Design Week 2026 | 14/05/2026 | 11:30 | Aéroport Charles de Gaulle, Terminal 2E",
            "05-07 10:00 +33639980002 template tour_week_before fr: Claire | Paris Design Week 2026 | 14/05/2026 | 15:00 | Hôtel du Petit Moulin, lobby",
            "05-07 10:00 +447700900003 template tour_week_before en: James | Paris Design Week 2026 | 14/05/2026 | 11:30 | Aéroport Charles de Gaulle, Terminal 2E",
            "05-08 10:00 +33639980004 template tour_week_before ru: Marina | Paris Design Week 2026 | 15/05/2026 | 15:00 | Hôtel du Petit Moulin, lobby",
            "05-13 10:00 +33639980001 template tour_day_before ru: Anna | 11:30 | Aéroport Charles de Gaulle, Terminal 2E [PARIS-2026:confirm, PARIS-2026:cancel]",
            "05-13 10:00 +33639980002 template tour_day_before fr: Claire | 15:00 | Hôtel du Petit Moulin, lobby [PARIS-2026:confirm, PARIS-2026:cancel]",
            "05-13 10:00 +447700900003 template tour_day_before en: James | 11:30 | Aéroport Charles de Gaulle, Terminal 2E [PARIS-2026:confirm, PARIS-2026:cancel]",
        ]
    );
    // The same instant again, and a little later: nothing more.
    for t in ["2026-05-13 10:00", "2026-05-13 10:00", "2026-05-13 10:30"] {
        tg.gate().scheduler.tick(paris(t)).await;
    }
    assert_eq!(out.new_lines(&tg), Vec::<String>::new());

    // Anna confirms, Claire cancels (the template's quick-reply buttons); James says nothing.
    let now = now_secs();
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            ANNA,
            "Anna",
            "wamid.A1",
            now,
            quick_reply("PARIS-2026:confirm", "Я приеду"),
        ),
    )
    .await;
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            CLAIRE,
            "Claire",
            "wamid.C1",
            now,
            quick_reply("PARIS-2026:cancel", "Je ne viens pas"),
        ),
    )
    .await;
    assert_eq!(
        out.after_messages(&tg).await,
        [
            "+33639980000 template owner_note en: Claire Martin (+33639980002) cancelled PARIS-2026 (departure 14/05/2026).",
            "+33639980001 text: Спасибо, Anna, до завтра!",
            "+33639980002 text: Dommage, Claire. Olga va vous contacter.",
        ]
    );
    let answer = |phone: &str| {
        state(&tg, "olga", TOUR, &format!("answer:{phone}")).map(|v| v["answer"].clone())
    };
    assert_eq!(answer(ANNA), Some(json!("confirmed")));
    assert_eq!(answer(CLAIRE), Some(json!("cancelled")));
    assert_eq!(answer(JAMES), None);

    // 19:00: Olga's list. 08:00 on the day: Anna (who wrote) gets a message and the meeting
    // point; James (who never wrote) the template; Claire nothing. Marina, a day later.
    let sent = out
        .walk(
            &tg,
            paris("2026-05-13 11:00"),
            paris("2026-05-15 10:00"),
            hours(1),
            tz,
        )
        .await;
    let tour: Vec<&String> = sent
        .iter()
        .filter(|l| !l.contains("Consultations today"))
        .collect();
    assert_eq!(
        tour,
        [
            "05-13 19:00 +33639980000 template owner_note en: PARIS-2026, departing tomorrow: 1 confirmed. / Not confirmed: James Wilson (+447700900003). / Cancelled: Claire Martin (+33639980002).",
            "05-14 08:00 +33639980001 location Aéroport Charles de Gaulle, Terminal 2E",
            "05-14 08:00 +33639980001 text: Доброе утро, Anna! Сегодня в 11:30: Aéroport Charles de Gaulle, Terminal 2E. Ольга вас ждёт.",
            "05-14 08:00 +447700900003 template tour_morning en: James | 11:30 | Aéroport Charles de Gaulle, Terminal 2E",
            "05-14 10:00 +33639980004 template tour_day_before ru: Marina | 15:00 | Hôtel du Petit Moulin, lobby [PARIS-2026:confirm, PARIS-2026:cancel]",
            "05-14 19:00 +33639980000 template owner_note en: PARIS-2026, departing tomorrow: 0 confirmed. / Not confirmed: Marina Sokolova (+33639980004).",
            "05-15 08:00 +33639980004 template tour_morning ru: Marina | 15:00 | Hôtel du Petit Moulin, lobby",
        ]
    );
    all_delivered(&tg, OLGA).await;
    tg.shutdown().await;
}

#[tokio::test]
async fn paris_2026_answers_program_hotel_and_meeting_point_from_its_tables() {
    let tg = start(TOUR).await;
    let mut out = Outbox::new("olga");
    let now = now_secs();
    let ask = [
        (CLAIRE, "Claire", "Bonjour, quel est le programme ?"),
        (JAMES, "James", "Which hotel are we in?"),
        ("33639980004", "Marina", "Где встреча?"),
        (ANNA, "Anna", "Спасибо!"),
        ("33611111111", "Stranger", "What is the program?"),
    ];
    for (i, (from, name, q)) in ask.iter().enumerate() {
        post(
            &tg,
            OLGA,
            message(OLGA, from, name, &format!("wamid.Q{i}"), now, text(q)),
        )
        .await;
    }
    assert_eq!(
        out.after_messages(&tg).await,
        [
            "+33639980002 text: Le programme de Paris Design Week 2026 :\n14/05: Arrivée et dîner de bienvenue au Marais\n15/05: Musée des Arts Décoratifs et showrooms de designers\n16/05: Promenade Art nouveau : Guimard dans le 16e\n17/05: Marché aux puces de Saint-Ouen ; soirée libre\n18/05: Petit-déjeuner ensemble et départs",
            "+33639980004 location Hôtel du Petit Moulin, lobby",
            "+33639980004 text: Встречаемся 15/05/2026 в 15:00: Hôtel du Petit Moulin, lobby, 29-31 rue de Poitou, 75003 Paris.",
            "+447700900003 text: Your hotel: Hôtel du Petit Moulin, 29-31 rue de Poitou, 75003 Paris. Phone: +33 1 42 74 10 10.",
        ],
        "Anna's thanks and the stranger's question wait for Olga"
    );
    all_delivered(&tg, OLGA).await;
    tg.shutdown().await;
}

#[tokio::test]
async fn consultations_remind_at_18_paris_record_answers_and_summarise_for_olga() {
    let tg = start("olga").await;
    let tz: Tz = "Europe/Paris".parse().unwrap();
    let mut out = Outbox::new("olga");
    let consultations = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|l| !l.contains("tour_") && !l.contains("PARIS-2026"))
            .collect()
    };
    tg.gate().scheduler.tick(paris("2026-05-10 12:00")).await;
    let sent = out
        .walk(
            &tg,
            paris("2026-05-10 12:30"),
            paris("2026-05-11 18:30"),
            chrono::Duration::minutes(30),
            tz,
        )
        .await;
    assert_eq!(
        consultations(sent),
        [
            "05-11 18:00 +33639980011 template consultation_reminder fr: Sophie | 12/05 | 10:00 [consultation:confirm:C-101, consultation:reschedule:C-101]",
            "05-11 18:00 +33639980012 template consultation_reminder ru: Irina | 12/05 | 14:30 [consultation:confirm:C-102, consultation:reschedule:C-102]",
        ]
    );
    // Sophie confirms, Irina asks for another time (the template's quick-reply buttons).
    // Sophie pressing Irina's button changes nothing.
    let now = now_secs();
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            SOPHIE,
            "Sophie",
            "wamid.S1",
            now,
            quick_reply("consultation:confirm:C-101", "Oui, je serai là"),
        ),
    )
    .await;
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            IRINA,
            "Irina",
            "wamid.I1",
            now,
            quick_reply("consultation:reschedule:C-102", "Перенести"),
        ),
    )
    .await;
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            SOPHIE,
            "Sophie",
            "wamid.S2",
            now,
            quick_reply("consultation:confirm:C-102", "Oui"),
        ),
    )
    .await;
    assert_eq!(
        out.after_messages(&tg).await,
        [
            "+33639980000 template owner_note en: Irina Volkova (+33639980012) asks to move the consultation of 12/05 at 14:30.",
            "+33639980011 text: Merci Sophie, à demain à 10:00 !",
            "+33639980012 text: Хорошо, Irina: Ольга напишет вам, чтобы выбрать другое время.",
        ]
    );
    let answer = |id: &str| {
        state(&tg, "olga", CONSULTATIONS, &format!("answer:{id}")).map(|v| v["answer"].clone())
    };
    assert_eq!(
        (answer("C-101"), answer("C-102")),
        (Some(json!("confirmed")), Some(json!("reschedule")))
    );
    let sent = out
        .walk(
            &tg,
            paris("2026-05-11 19:00"),
            paris("2026-05-12 08:00"),
            hours(1),
            tz,
        )
        .await;
    assert_eq!(
        consultations(sent),
        [
            "05-12 08:00 +33639980000 template owner_note en: Consultations today, 12/05: / 10:00 Sophie Laurent (+33639980011): confirmed / 14:30 Irina Volkova (+33639980012): asked for another time"
        ]
    );

    // Emma writes (her window opens); Olga books Léa from her own phone (hers opens too).
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            EMMA,
            "Emma",
            "wamid.E1",
            now,
            text("Looking forward to Wednesday!"),
        ),
    )
    .await;
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            OLGA_OWN,
            "Olga",
            "wamid.O1",
            now,
            text("book 2026-05-13 16:00 +33639980031 Léa Dubois"),
        ),
    )
    .await;
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            OLGA_OWN,
            "Olga",
            "wamid.O2",
            now,
            text("book tomorrow"),
        ),
    )
    .await;
    assert_eq!(
        out.after_messages(&tg).await,
        [
            "+33639980000 text: Booked B-1: Léa Dubois (+33639980031) on 13/05 at 16:00.",
            "+33639980000 text: To book, write: book 2026-05-12 16:00 33612345678 First Last",
        ]
    );
    assert_eq!(
        state(&tg, "olga", CONSULTATIONS, "booked").unwrap()[0]["phone"],
        json!("33639980031")
    );
    // 18:00: Emma gets reply buttons (her window is open), Léa the template.
    let sent = out
        .walk(
            &tg,
            paris("2026-05-12 09:00"),
            paris("2026-05-12 18:00"),
            hours(1),
            tz,
        )
        .await;
    assert_eq!(
        consultations(sent),
        [
            "05-12 18:00 +33639980031 template consultation_reminder fr: Léa | 13/05 | 16:00 [consultation:confirm:B-1, consultation:reschedule:B-1]",
            "05-12 18:00 +447700900013 buttons: Hello Emma! A reminder of your consultation with Olga tomorrow, 13/05, at 11:00. Will you be there? [consultation:confirm:C-103=Yes, I'll be there, consultation:reschedule:C-103=Another time]",
        ]
    );
    post(
        &tg,
        OLGA,
        message(
            OLGA,
            EMMA,
            "Emma",
            "wamid.E2",
            now,
            button_reply("consultation:confirm:C-103", "Yes, I'll be there"),
        ),
    )
    .await;
    assert_eq!(
        out.after_messages(&tg).await,
        ["+447700900013 text: Thank you Emma, see you tomorrow at 11:00!"]
    );
    // 08:00: Olga has written, so her summary is a plain message.
    let sent = out
        .walk(
            &tg,
            paris("2026-05-12 19:00"),
            paris("2026-05-13 08:00"),
            hours(1),
            tz,
        )
        .await;
    assert_eq!(
        consultations(sent),
        [
            "05-13 08:00 +33639980000 text: Consultations today, 13/05:\n11:00 Emma Clarke (+447700900013): confirmed\n16:00 Léa Dubois (+33639980031): no answer"
        ]
    );
    all_delivered(&tg, OLGA).await;
    tg.shutdown().await;
}

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

#[tokio::test]
async fn every_shipped_project_compiles_in_the_demo_home() {
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["--config", "examples/demo/gate.yaml", "rules", "list"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--now", "2026-05-06T12:00"])
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in [
        "azarya/auto-reply/auto-reply",
        "olga/consultations/evening-reminder",
        "olga/consultations/daily-summary",
        "olga/design-travels/PARIS-2026/week-before",
        "olga/design-travels/PARIS-2026/not-confirmed",
    ] {
        assert!(stdout.contains(rule), "{rule} missing from:\n{stdout}");
    }
}
