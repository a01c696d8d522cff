//! Olga's shipped projects: the PARIS-2026 tour and her consultations.

use super::*;

const TOUR: &str = "olga/design-travels/PARIS-2026";
const CONSULTATIONS: &str = "olga/consultations";

const OLGA_OWN: &str = "33639980000";
const ANNA: &str = "33639980001";
const CLAIRE: &str = "33639980002";
const JAMES: &str = "447700900003";
const SOPHIE: &str = "33639980011";
const IRINA: &str = "33639980012";
const EMMA: &str = "447700900013";

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
