//! Substance Export and the sends Graph refused before accepting them (no wamid): they take
//! their place in time among the stored messages ("oldest first"), and a contact filter finds
//! them however their recipient was written (`+33 6 44 55 66 77`), incremental exports
//! included.

use crate::common::*;
use crate::export::{export_json, olga_account};
use serde_json::{Value, json};
use wagate::export::ExportOptions;
use wagate::graph::simulator::Fault;

const DORA: &str = "33644556677";
const DORA_WRITTEN: &str = "+33 6 44 55 66 77";
const ANN: &str = "33611111111";

/// `wagate send olga --to "+33 6 44 55 66 77" --template …` while Graph refuses it (131026);
/// returns the failed row's creation time (unix s).
async fn failed_send(tg: &TestGate, param: &str) -> i64 {
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let o = wagate_in(
        tg.dir.path(),
        &[
            "send",
            "olga",
            "--to",
            DORA_WRITTEN,
            "--template",
            "owner_note",
            "--language",
            "en",
            "--param",
            param,
        ],
    )
    .await;
    assert!(!o.status.success(), "{}", output_text(&o));
    let rows = settled(tg, "olga").await;
    let row = rows
        .iter()
        .rev()
        .find(|r| r.state == "failed" && r.wamid.is_none())
        .unwrap_or_else(|| panic!("no failed send: {rows:?}"));
    let conn = rusqlite::Connection::open(tg.store().path()).unwrap();
    let ms: i64 = conn
        .query_row(
            "SELECT created_at FROM outbox WHERE idem_key = ?1",
            [&row.idem_key],
            |r| r.get(0),
        )
        .unwrap();
    ms / 1000
}

/// Ann writes, with WhatsApp's time `ts`.
async fn ann_writes_at(tg: &TestGate, wamid: &str, ts: i64) {
    let mut v: Value = serde_json::from_slice(&text_webhook(OLGA, ANN, "Ann", wamid, "Later"))
        .expect("webhook json");
    v["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = ts.to_string().into();
    assert_eq!(
        tg.post_signed(OLGA, v.to_string().as_bytes())
            .await
            .status(),
        200
    );
    settled(tg, "olga").await;
}

fn messages(v: &Value) -> Vec<(String, String, String)> {
    v["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["contact"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
                m["timestamp"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn failed_sends_take_their_place_in_time_and_are_found_by_contact() {
    let tg = TestGate::start_with(&[]).await;
    let failed_at = failed_send(&tg, "first").await;
    // Ann writes a second after the failure: she comes after it in the export.
    ann_writes_at(&tg, "wamid.ANN.LATER", failed_at + 1).await;
    let store = tg.store();
    let full = export_json(store, &ExportOptions::default());
    let got = messages(&full);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        (DORA, "failed"),
        "oldest first: the failed send, then Ann: {got:?}"
    );
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), (ANN, "received"));
    assert!(got[0].2 < got[1].2, "{got:?}");

    // The contact filter, in digits or as written, finds the send written with + and spaces.
    for contact in [DORA, DORA_WRITTEN] {
        let only = export_json(
            store,
            &ExportOptions {
                contact: Some(contact.into()),
                ..Default::default()
            },
        );
        let got = messages(&only);
        assert_eq!(got.len(), 1, "{contact}: {got:?}");
        assert_eq!(got[0].1, "failed");
        assert_eq!(only["data"]["messages"][0]["to"], DORA);
        assert_eq!(only["counts"]["messages"], 1);
    }
    // … and Ann's export does not hold it.
    let only_ann = export_json(
        store,
        &ExportOptions {
            contact: Some(ANN.into()),
            ..Default::default()
        },
    );
    assert_eq!(messages(&only_ann).len(), 1);
    // The progress count agrees with what is written.
    let mut seen = Vec::new();
    let mut progress = |done: u64, total: u64| seen.push((done, total));
    let done = wagate::export::write_export(
        store,
        &olga_account(),
        &ExportOptions {
            contact: Some(DORA.into()),
            ..Default::default()
        },
        Vec::new(),
        Some(&mut progress),
    )
    .unwrap();
    assert_eq!(done.counts.messages, 1);
    assert_eq!(seen.last(), Some(&(1, 1)), "{seen:?}");
    tg.shutdown().await;
}

#[tokio::test]
async fn incremental_exports_carry_failed_sends_in_order_for_every_scope() {
    let tg = TestGate::start_with(&[]).await;
    let store = tg.store();
    let dir = tg.dir.path().join("out");
    let run = |contact: Option<&str>, name: &str| {
        let path = dir.join(name);
        let opts = ExportOptions {
            incremental: true,
            contact: contact.map(str::to_string),
            ..Default::default()
        };
        wagate::export::export_to_file(store, &olga_account(), &opts, &path, None).unwrap();
        serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()).unwrap()
    };
    let first_at = failed_send(&tg, "first").await;
    ann_writes_at(&tg, "wamid.ANN.1", first_at + 1).await;
    let all1 = messages(&run(None, "all1.json"));
    assert_eq!(
        all1.iter()
            .map(|m| (m.0.as_str(), m.1.as_str()))
            .collect::<Vec<_>>(),
        vec![(DORA, "failed"), (ANN, "received")],
    );
    let dora1 = run(Some(DORA_WRITTEN), "dora1.json");
    assert_eq!(dora1["export"]["contact"], DORA);
    assert_eq!(messages(&dora1).len(), 1, "{dora1}");
    // Nothing new: both scopes export nothing.
    assert!(messages(&run(None, "all2.json")).is_empty());
    assert!(messages(&run(Some(DORA), "dora2.json")).is_empty());
    // A second failure, after a message of Ann's that came earlier: in time order again.
    let second_at = failed_send(&tg, "second").await;
    ann_writes_at(&tg, "wamid.ANN.0", second_at - 5).await;
    let all3 = run(None, "all3.json");
    let got = messages(&all3);
    assert_eq!(
        got.iter()
            .map(|m| (m.0.as_str(), m.1.as_str()))
            .collect::<Vec<_>>(),
        vec![(ANN, "received"), (DORA, "failed")],
        "{got:?}"
    );
    assert!(
        all3["data"]["messages"][1]["raw"]
            .to_string()
            .contains("second")
    );
    let dora3 = messages(&run(Some(DORA), "dora3.json"));
    assert_eq!(dora3.len(), 1, "{dora3:?}");
    assert_eq!(
        export_json(store, &ExportOptions::default())["counts"],
        json!({"messages": 4, "contacts": 1, "media": 0})
    );
    tg.shutdown().await;
}
