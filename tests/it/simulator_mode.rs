//! A home whose Graph is the built-in simulator (`graph.base_url: simulator`, as the demo's):
//! credentials changed while the gate serves are accepted by the simulator, and its own pages
//! (`/simulator/_sim/…`) answer only whom /status answers.

use crate::common::*;
use serde_json::{Value, json};

/// A test gate restarted on its home with `graph.base_url: simulator`.
async fn simulator_gate() -> TestGate {
    let mut tg = TestGate::start().await;
    let path = tg.config_path();
    let yaml = std::fs::read_to_string(&path).unwrap();
    let start = yaml.find("base_url: \"").unwrap() + "base_url: \"".len();
    let end = start + yaml[start..].find('"').unwrap();
    let yaml = format!("{}simulator{}", &yaml[..start], &yaml[end..]);
    std::fs::write(&path, yaml).unwrap();
    tg.restart().await;
    assert!(tg.gate().simulator.is_some(), "simulator mode");
    tg
}

/// Writes Olga's credentials with `token`, as `wagate creds set` does.
fn set_olga_token(tg: &TestGate, token: &str) {
    let home = tg.dir.path();
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    let j = json!({"access_token": token, "app_secret": OLGA.secret, "webhook_verify_token": OLGA.verify});
    let creds = wagate::vault::parse_credentials(j.to_string().as_bytes()).unwrap();
    vault
        .write_credentials(&home.join("credentials/olga.age"), &creds)
        .unwrap();
}

#[tokio::test]
async fn the_simulator_accepts_credentials_set_while_the_gate_serves() {
    let tg = simulator_gate().await;
    let sim = tg.gate().simulator.clone().unwrap();
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.SIMMODE1", "first");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "sent", "{rows:?}");

    // `wagate creds set olga` with a new token; the gate picks it up (its 30 s loop does
    // exactly this call).
    let new_token = "EAAnewOlgaTokenAfterRotation0001";
    set_olga_token(&tg, new_token);
    tg.gate().tokens.reload_changed().await;
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.SIMMODE2", "second");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.state == "sent" && r.wamid.is_some()),
        "{rows:?}"
    );
    let last = sim.requests().pop().unwrap();
    assert_eq!(
        (
            last.bearer.as_ref().map(|b| b.expose().as_str()),
            last.status
        ),
        (Some(new_token), 200)
    );
    assert_eq!(last.body["text"]["body"], "You said: second");
    // The token is not marked rejected.
    let health: Value = tg
        .client
        .get(tg.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["tokens"]["olga"]["state"], "ok", "{health}");
    // A token the gate does not use is still refused.
    let r = tg
        .client
        .post(tg.url(&format!("/simulator/v23.0/{}/messages", OLGA.phone)))
        .bearer_auth("EAAsomeoneElsesToken")
        .json(&json!({"messaging_product": "whatsapp", "to": "33612345678", "type": "text", "text": {"body": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tg.shutdown().await;
}

#[tokio::test]
async fn the_simulators_request_log_is_for_the_operator_only() {
    let tg = simulator_gate().await;
    let url = tg.url("/simulator/_sim/requests");
    let r = tg.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "loopback, not relayed");
    for (h, v) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        let r = tg.client.get(&url).header(h, v).send().await.unwrap();
        assert_eq!(r.status(), 403, "{h}: relayed by a proxy");
        let r = tg
            .client
            .get(tg.url("/simulator/_sim/media/123"))
            .header(h, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{h}: media downloads too");
        // As /status does.
        let r = tg
            .client
            .get(tg.url("/status"))
            .header(h, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // Spelled another way, the path is no page at all.
        let r = tg
            .client
            .get(tg.url("/simulator/%5Fsim/requests"))
            .header(h, v)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{h}: %5Fsim");
    }
    tg.shutdown().await;
}

/// Olga's rule for the template test: the text names which template send to make.
const TEMPLATE_PROJECT: (&str, &str) = (
    "olga/tpl/project.yaml",
    "rules:\n  - name: tpl\n    on: message\n    script: tpl.rhai\n",
);
const TEMPLATE_SCRIPT: (&str, &str) = (
    "olga/tpl/tpl.rhai",
    r#"let t = event.text;
if t == "good" { send(event.from, #{ template: "owner_note", language: "en", params: ["hello"] }); }
if t == "no-params" { send(event.from, #{ template: "owner_note", language: "en", params: [] }); }
if t == "too-many" { send(event.from, #{ template: "owner_note", language: "en", params: ["a", "b"] }); }
if t == "wrong-language" { send(event.from, #{ template: "owner_note", language: "fr", params: ["x"] }); }
if t == "unknown" { send(event.from, #{ template: "owner_note_v2", language: "en", params: ["x"] }); }
"#,
);

#[tokio::test]
async fn the_built_in_simulator_checks_templates_declared_for_it() {
    let mut tg = TestGate::start_with(&[TEMPLATE_PROJECT, TEMPLATE_SCRIPT]).await;
    // The tests' own simulator knows no templates: it takes any.
    let body = text_webhook(OLGA, "33612345678", "Ann", "wamid.TPL0", "no-params");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows[0].state, "sent", "{rows:?}");
    // The demo's file, beside gate.yaml, in simulator mode.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/demo")
        .join(wagate::graph::simulator::TEMPLATES_FILE);
    std::fs::copy(
        &demo,
        tg.dir.path().join(wagate::graph::simulator::TEMPLATES_FILE),
    )
    .unwrap();
    let path = tg.config_path();
    let yaml = std::fs::read_to_string(&path).unwrap();
    let start = yaml.find("base_url: \"").unwrap() + "base_url: \"".len();
    let end = start + yaml[start..].find('"').unwrap();
    std::fs::write(
        &path,
        format!("{}simulator{}", &yaml[..start], &yaml[end..]),
    )
    .unwrap();
    tg.restart().await;
    let cases = [
        ("good", None),
        ("no-params", Some("132000")),
        ("too-many", Some("132000")),
        ("wrong-language", Some("132001")),
        ("unknown", Some("132001")),
    ];
    for (i, (text, code)) in cases.iter().enumerate() {
        let body = text_webhook(
            OLGA,
            "33612345678",
            "Ann",
            &format!("wamid.TPL{}", i + 1),
            text,
        );
        assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
        let rows = settled(&tg, "olga").await;
        let row = rows.last().unwrap();
        match code {
            None => assert_eq!(row.state, "sent", "{text}: {row:?}"),
            Some(code) => {
                assert_eq!(row.state, "failed", "{text}: {row:?}");
                assert!(row.wamid.is_none(), "{text}");
                let error = format!("{:?}", row.error);
                assert!(error.contains(code), "{text}: {error}");
            }
        }
    }
    // A mistake in the file is named with its line and column, and the gate does not start.
    std::fs::write(
        tg.dir.path().join(wagate::graph::simulator::TEMPLATES_FILE),
        "owner_note: { languages: [en], params: 1 }\nurgent_forward: { langs: [en] }\n",
    )
    .unwrap();
    let e = match wagate::app::load(&path) {
        Ok(loaded) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            wagate::app::start(loaded, listener, Default::default())
                .await
                .err()
                .expect("a broken templates file stops the start")
                .to_string()
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("simulator-templates.yaml:2:"), "{e}");
    assert!(e.contains("langs"), "{e}");
    // `check` says so too.
    let o = wagate_in(tg.dir.path(), &["check"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("simulator-templates.yaml:2:"),
        "{}",
        output_text(&o)
    );
    tg.shutdown().await;
}
