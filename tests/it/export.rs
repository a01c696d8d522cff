//! Substance Export over a store seeded through the real gate: every field of the format
//! checked, filters by time and contact, incremental exports, `wagate export`, and scripts'
//! `export(opts)` with its permission and its dry run.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use wagate::export::{Account, ExportOptions, write_export};
use wagate::graph::simulator::Fault;

const T: Duration = Duration::from_secs(20);
pub const ANN: &str = "33611111111";
pub const BOB: &str = "33622222222";
pub const MEDIA_ID: &str = "8472976218001204";

/// What [`seed`] put in the store.
pub struct Seeded {
    /// WhatsApp timestamp of Ann's message.
    pub ann_ts: i64,
    /// The wamid Graph gave the reply to Ann, and its local id.
    pub reply_wamid: String,
    pub reply_local: String,
    /// The local id of the reply to Bob that Graph refused.
    pub bob_local: String,
    pub image_wamid: String,
}

/// Olga's store, seeded through the gate: Ann writes and her reply is read; Bob writes and
/// the reply to him fails before Graph accepts it; an image arrives and is downloaded.
pub async fn seed(tg: &TestGate) -> Seeded {
    let body = text_webhook(OLGA, ANN, "Ann", "wamid.A1", "Bonjour");
    let ann_ts: i64 = serde_json::from_slice::<Value>(&body).unwrap()["entry"][0]["changes"][0]
        ["value"]["messages"][0]["timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    let rows = settled(tg, "olga").await;
    let reply_wamid = rows[0].wamid.clone().expect("reply sent");
    let reply_local = rows[0].idem_key.clone();
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": OLGA.waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": OLGA.phone},
                  "statuses": [{"id": reply_wamid, "status": "read", "timestamp": "1790000000", "recipient_id": ANN}]}}]}]});
    let status = status.to_string().into_bytes();
    assert_eq!(tg.post_signed(OLGA, &status).await.status(), 200);
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let body = text_webhook(OLGA, BOB, "Bob", "wamid.B1", "Hello");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(tg, "olga").await;
    let bob = rows.iter().find(|r| r.recipient == BOB).unwrap();
    assert_eq!(bob.state, "failed");
    let bob_local = bob.idem_key.clone();
    let bytes: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    tg.fake.add_media(MEDIA_ID, bytes, "image/jpeg");
    let body = fixture_for(OLGA, "java-bindambc__imageMessage.json");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let store = tg.store().clone();
    let media = eventually("the image download", T, || {
        let store = store.clone();
        async move {
            store
                .media("olga")
                .ok()?
                .into_iter()
                .find(|m| m.state == "done")
        }
    })
    .await;
    settled(tg, "olga").await;
    Seeded {
        ann_ts,
        reply_wamid,
        reply_local,
        bob_local,
        image_wamid: media.wamid.unwrap(),
    }
}

pub fn olga_account() -> Account {
    Account {
        user: "olga".into(),
        business_account_id: Some(OLGA.waba.into()),
        phone_number_id: OLGA.phone.into(),
        name: None,
        display_phone_number: Some(format!("1555{}", OLGA.phone)),
    }
}

/// The export of Olga's data as JSON (also checks that the bytes are one valid document).
pub fn export_json(store: &wagate::store::Store, opts: &ExportOptions) -> Value {
    let mut out = Vec::new();
    write_export(store, &olga_account(), opts, &mut out, None).unwrap();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn rfc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

fn by(msgs: &[Value], f: impl Fn(&Value) -> bool) -> &Value {
    let found: Vec<&Value> = msgs.iter().filter(|m| f(m)).collect();
    assert_eq!(found.len(), 1, "{msgs:#?}");
    found[0]
}

#[tokio::test]
async fn a_seeded_store_exports_every_field_of_the_format() {
    let tg = TestGate::start().await;
    let s = seed(&tg).await;
    let v = export_json(tg.store(), &ExportOptions::default());
    let business = format!("1555{}", OLGA.phone);
    assert_eq!(
        keys(&v),
        ["counts", "data", "export", "provider", "timestamp", "user"]
    );
    assert_eq!(v["provider"], "whatsapp_business");
    assert_eq!(v["user"], "olga");
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(
        v["export"],
        json!({"mode": "full", "since": null, "until": null, "contact": null})
    );
    assert_eq!(
        keys(&v["data"]),
        ["account", "contacts", "media", "messages"]
    );
    assert_eq!(
        v["data"]["account"],
        json!({"business_account_id": OLGA.waba, "phone_number_id": OLGA.phone, "name": null,
               "display_phone_number": business})
    );
    let msgs = v["data"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    assert_eq!(
        v["counts"],
        json!({"messages": 5, "contacts": 3, "media": 1})
    );

    let ann = by(msgs, |m| m["id"] == "wamid.A1");
    assert_eq!(
        keys(ann),
        [
            "contact",
            "direction",
            "from",
            "id",
            "raw",
            "status",
            "text",
            "timestamp",
            "to",
            "type"
        ]
    );
    assert_eq!(
        (
            &ann["from"],
            &ann["to"],
            &ann["text"],
            &ann["status"],
            &ann["direction"],
            &ann["type"]
        ),
        (
            &json!(ANN),
            &json!(business),
            &json!("Bonjour"),
            &json!("received"),
            &json!("in"),
            &json!("text")
        )
    );
    assert_eq!(ann["timestamp"], rfc(s.ann_ts));
    assert_eq!(ann["contact"], ANN);
    // The message object as Meta sent it: fields the typed model does not know survive.
    assert_eq!(ann["raw"]["id"], "wamid.A1");
    assert_eq!(ann["raw"]["text"]["body"], "Bonjour");

    let reply = by(msgs, |m| m["id"] == json!(s.reply_wamid));
    assert_eq!(
        keys(reply),
        [
            "contact",
            "direction",
            "from",
            "id",
            "local_id",
            "raw",
            "status",
            "status_at",
            "text",
            "timestamp",
            "to",
            "type"
        ]
    );
    assert_eq!(
        (
            &reply["from"],
            &reply["to"],
            &reply["text"],
            &reply["status"],
            &reply["direction"]
        ),
        (
            &json!(business),
            &json!(ANN),
            &json!("You said: Bonjour"),
            &json!("read"),
            &json!("out")
        )
    );
    assert_eq!(reply["local_id"], json!(s.reply_local));
    assert_eq!(reply["status_at"], rfc(1790000000));
    assert_eq!(reply["raw"]["messaging_product"], "whatsapp");
    let sent_at =
        chrono::DateTime::parse_from_rfc3339(reply["timestamp"].as_str().unwrap()).unwrap();
    assert!(
        (sent_at.timestamp() - s.ann_ts).abs() < 60,
        "send time {sent_at}"
    );

    let failed = by(msgs, |m| m["local_id"] == json!(s.bob_local));
    assert_eq!(
        (
            &failed["id"],
            &failed["to"],
            &failed["status"],
            &failed["direction"],
            &failed["text"]
        ),
        (
            &Value::Null,
            &json!(BOB),
            &json!("failed"),
            &json!("out"),
            &json!("You said: Hello")
        )
    );
    assert!(
        failed["error"].as_str().unwrap().contains("131026"),
        "{}",
        failed["error"]
    );
    let bob = by(msgs, |m| m["id"] == "wamid.B1");
    assert_eq!(
        (&bob["from"], &bob["status"]),
        (&json!(BOB), &json!("received"))
    );

    let image = by(msgs, |m| m["id"] == json!(s.image_wamid));
    assert_eq!(
        (&image["type"], &image["direction"]),
        (&json!("image"), &json!("in"))
    );
    assert_eq!(
        v["data"]["media"],
        json!([{"id": MEDIA_ID, "message_id": s.image_wamid, "mime_type": "image/jpeg",
                "sha256": v["data"]["media"][0]["sha256"], "path": format!("media/olga/{MEDIA_ID}.jpg"),
                "size": 5000, "state": "done", "error": null, "created_at": v["data"]["media"][0]["created_at"]}])
    );
    assert_eq!(v["data"]["media"][0]["sha256"].as_str().unwrap().len(), 64);

    let contacts = v["data"]["contacts"].as_array().unwrap();
    let ann_c = by(contacts, |c| c["id"] == ANN);
    assert_eq!(keys(ann_c), ["id", "last_inbound_at", "name", "updated_at"]);
    assert_eq!(
        (&ann_c["name"], &ann_c["last_inbound_at"]),
        (&json!("Ann"), &json!(rfc(s.ann_ts)))
    );
    assert_eq!(by(contacts, |c| c["id"] == BOB)["name"], "Bob");
    // Azarya's data is not Olga's.
    assert!(!v.to_string().contains(AZARYA.phone));
    tg.shutdown().await;
}

#[tokio::test]
async fn filters_by_contact_and_time_and_incremental_exports() {
    let tg = TestGate::start().await;
    let s = seed(&tg).await;
    let store = tg.store();
    let only_ann = export_json(
        store,
        &ExportOptions {
            contact: Some(format!("+{ANN}")),
            ..Default::default()
        },
    );
    let ids: Vec<&Value> = only_ann["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&&json!("wamid.A1")) && ids.contains(&&json!(s.reply_wamid)));
    assert_eq!(
        only_ann["counts"],
        json!({"messages": 2, "contacts": 1, "media": 0})
    );
    assert_eq!(only_ann["export"]["contact"], ANN);
    let t = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap();
    let later = export_json(
        store,
        &ExportOptions {
            since: Some(t(s.ann_ts + 3600)),
            ..Default::default()
        },
    );
    assert_eq!(
        later["counts"],
        json!({"messages": 0, "contacts": 0, "media": 0})
    );
    let until = |secs: i64| {
        export_json(
            store,
            &ExportOptions {
                until: Some(t(secs)),
                ..Default::default()
            },
        )["counts"]
            .clone()
    };
    assert_eq!(
        until(s.ann_ts + 3600),
        json!({"messages": 5, "contacts": 3, "media": 1})
    );
    assert_eq!(
        until(s.ann_ts - 3600),
        json!({"messages": 0, "contacts": 0, "media": 0})
    );

    // Incremental: everything once, then only what is new or changed.
    let dir = tg.dir.path().join("out");
    let inc = ExportOptions {
        incremental: true,
        ..Default::default()
    };
    let run = |name: &str| {
        let path = dir.join(name);
        let sum =
            wagate::export::export_to_file(store, &olga_account(), &inc, &path, None).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (sum, v)
    };
    let (first, v1) = run("1.json");
    assert_eq!(
        (first.counts.messages, v1["export"]["mode"].as_str()),
        (5, Some("incremental"))
    );
    let (second, _) = run("2.json");
    assert_eq!(
        (
            second.counts.messages,
            second.counts.contacts,
            second.counts.media
        ),
        (0, 0, 0)
    );
    // A status that moves an exported message, and a new message with its reply.
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": OLGA.waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": OLGA.phone},
                  "statuses": [{"id": "wamid.A1", "status": "read", "timestamp": "1790000100", "recipient_id": ANN}]}}]}]});
    assert_eq!(
        tg.post_signed(OLGA, status.to_string().as_bytes())
            .await
            .status(),
        200
    );
    // The reply to it fails before Graph accepts it: a failed send is a change too.
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let body = text_webhook(OLGA, BOB, "Bobby", "wamid.B2", "Again");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let (third, v3) = run("3.json");
    let got: Vec<(String, String)> = v3["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(third.counts.messages, 3, "{got:?}");
    assert!(got.contains(&("Bonjour".into(), "read".into())), "{got:?}");
    assert!(
        got.contains(&("Again".into(), "received".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("You said: Again".into(), "failed".into())),
        "{got:?}"
    );
    assert_eq!(
        v3["data"]["contacts"].as_array().unwrap().len(),
        2,
        "Bob renamed, Ann's message moved"
    );
    let mark = store.export_mark("olga", "*").unwrap().unwrap();
    assert!(mark.rev > 0);
    // A full export is unaffected by the watermark, and an incremental one with `until` is
    // refused.
    assert_eq!(
        export_json(store, &ExportOptions::default())["counts"]["messages"],
        7
    );
    let bad = ExportOptions {
        incremental: true,
        until: Some(t(s.ann_ts)),
        ..Default::default()
    };
    let e = write_export(store, &olga_account(), &bad, Vec::new(), None).unwrap_err();
    assert!(e.to_string().contains("cannot have `until`"), "{e}");
    tg.shutdown().await;
}

#[tokio::test]
async fn wagate_export_writes_under_data_exports_and_to_stdout() {
    let tg = TestGate::start().await;
    seed(&tg).await;
    let cfg = tg.config_path();
    let cfg = cfg.to_str().unwrap();
    let out = wagate_cli(&["--config", cfg, "export", "olga", "--contact", ANN]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("exported 2 message(s), 1 contact(s), 0 media record(s) of `olga` to data/exports/olga/olga-"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(tg.dir.path().join("data/exports/olga"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let v: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(v["counts"]["messages"], 2);
    // Every message is in it, and in the database: their owner alone may read them.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let db = tg.store().path().to_path_buf();
        let wal = db.with_extension("db-wal");
        for f in [&files[0], &db, &wal] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f:?}");
        }
    }
    let out = wagate_cli(&[
        "--config",
        cfg,
        "export",
        "olga",
        "--out",
        "-",
        "--since",
        "2000-01-01",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"]["messages"], 5);
    for t in [OLGA.token, OLGA.secret, OLGA.verify] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(t));
    }
    let out = wagate_cli(&["--config", cfg, "export", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `nobody`"));
    let out = wagate_cli(&["--config", cfg, "export", "olga", "--since", "next week"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    tg.shutdown().await;
}

const EXPORT_PROJECT: (&str, &str) = (
    "olga/archive/project.yaml",
    "rules:\n  - name: archive\n    on: message\n    if: 'event.text == \"export please\"'\n    script: archive.rhai\n",
);
const EXPORT_SCRIPT: (&str, &str) = (
    "olga/archive/archive.rhai",
    "let r = export(#{ contact: event.from, since: \"2000-01-01\" });\nset_state(\"last\", r);\n",
);

#[tokio::test]
async fn scripts_export_their_own_user_only_as_permitted_and_dry_runs_write_nothing() {
    let tg = TestGate::start_with(&[EXPORT_PROJECT, EXPORT_SCRIPT]).await;
    let body = text_webhook(OLGA, ANN, "Ann", "wamid.E1", "export please");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let last = tg
        .store()
        .state_get("olga", "olga/archive", "last")
        .unwrap()
        .expect("the script stored export()'s result");
    assert_eq!(
        (&last["messages"], &last["contacts"], &last["media"]),
        (&json!(1), &json!(1), &json!(0))
    );
    let path = std::path::PathBuf::from(last["path"].as_str().unwrap());
    assert!(
        path.starts_with(tg.dir.path().join("data/exports/olga")),
        "{path:?}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["data"]["messages"][0]["id"], "wamid.E1");
    assert_eq!(v["user"], "olga");

    // A dry run counts and writes nothing.
    let event = tg.dir.path().join("event.json");
    std::fs::write(&event, &body).unwrap();
    let cfg = tg.config_path();
    let out = wagate_cli(&[
        "--config",
        cfg.to_str().unwrap(),
        "rules",
        "test",
        "olga/archive/archive",
        "--event",
        event.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("export: 1 message(s)"), "{stdout}");
    let n = std::fs::read_dir(tg.dir.path().join("data/exports/olga"))
        .unwrap()
        .count();
    assert_eq!(n, 1, "the dry run wrote no file");

    // permissions.export: false → a clear script error, nothing written.
    let user = tg.dir.path().join("users/olga.yaml");
    let text = std::fs::read_to_string(&user).unwrap();
    std::fs::write(
        &user,
        format!("{text}permissions: {{ send: true, export: false }}\n"),
    )
    .unwrap();
    let mut tg = tg;
    tg.restart().await;
    let body = text_webhook(OLGA, ANN, "Ann", "wamid.E2", "export please");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, "olga").await;
    let run = tg
        .store()
        .runs(Some("olga"), Some("archive"), 1)
        .unwrap()
        .remove(0);
    assert_eq!(run.outcome, "error");
    let err = run.error.unwrap();
    assert!(
        err.contains("user `olga` may not export (permissions.export is false in users/olga.yaml)"),
        "{err}"
    );
    assert!(
        err.starts_with("rules/olga/archive/archive.rhai:1:"),
        "{err}"
    );
    let n = std::fs::read_dir(tg.dir.path().join("data/exports/olga"))
        .unwrap()
        .count();
    assert_eq!(n, 1);
    tg.shutdown().await;
}

#[test]
fn export_is_a_script_function_despite_rhai_keeping_the_word() {
    let engine = wagate::script::ScriptEngine::new(&wagate::config::ScriptLimits::default());
    let ctx = wagate::script::RunContext::simple(
        "olga",
        true,
        Duration::from_secs(1),
        chrono_tz::Europe::Paris,
    );
    let run = |src: &str| {
        let ast = engine
            .rhai()
            .compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        engine
            .run(&ast, None, &json!({"kind": "message"}), &ctx, "x.rhai")
            .error
            .unwrap()
    };
    // Parsed in every form; with no store behind the run, each says so.
    for src in [
        "export()",
        "let r = export(#{ since: \"2026-05-01\" });",
        "fn f() { export(#{}) }\nf()",
    ] {
        assert!(run(src).contains("no store to export from"), "{src}");
    }
    let e = run("export(42)");
    assert!(
        e.starts_with("x.rhai:1:") && e.contains("give a map of options"),
        "{e}"
    );
    let e = run("export(#{ contact: \"1\", bogus: 1 })");
    assert!(e.contains("unknown option `bogus`"), "{e}");
    let e = run("export(#{ since: \"next week\" })");
    assert!(e.contains("`since`"), "{e}");
}
