//! Groups with real parts: the built binary calls the fake Cloud API's Groups API over HTTP
//! with Olga's credentials; the group_lifecycle_update the fake makes for the created group is
//! posted signed to the gate, which stores the group id; invite links, participants, sends to
//! the group (through the outbox, with the group's 24-hour window), deletes, and Graph errors.

use crate::common::{OLGA, TestGate, eventually, now_secs, sent_to_phone, settled};
use crate::contacts::{fails, ok};
use serde_json::{Value, json};
use std::time::Duration;
use wagate::graph::simulator::Fault;

/// A message a participant wrote in group `group_id`, as Meta's group messages webhook
/// gives it (`group_id` on the message).
fn group_message(group_id: &str, from: &str, wamid: &str, text: &str) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": OLGA.waba, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{}", OLGA.phone), "phone_number_id": OLGA.phone},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": from}],
            "messages": [{"from": from, "group_id": group_id, "id": wamid,
                          "timestamp": now_secs().to_string(), "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

async fn post(tg: &TestGate, body: &Value) {
    let r = tg.post_signed(OLGA, body.to_string().as_bytes()).await;
    assert_eq!(r.status(), 200);
}

/// Creates a group through the CLI and delivers Meta's webhook for it; returns its id.
async fn create_group(tg: &TestGate, subject: &str) -> String {
    let cfg = tg.config_path();
    let out = ok(
        &cfg,
        &[
            "groups",
            "olga",
            "create",
            subject,
            "--description",
            "Tour group",
            "--approval",
            "required",
        ],
    )
    .await;
    let request_id = out
        .split("request ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no request id in: {out}"))
        .to_string();
    let stored = tg.store().group(OLGA.name, &request_id).unwrap().unwrap();
    assert_eq!(
        (stored.group_id, stored.state.as_str()),
        (None, "requested")
    );
    let hook = tg
        .fake
        .group_created_webhook(&request_id)
        .expect("the fake holds the group");
    post(tg, &hook).await;
    let store = tg.store().clone();
    eventually("the group id to be stored", Duration::from_secs(10), || {
        let store = store.clone();
        let request_id = request_id.clone();
        async move { store.group(OLGA.name, &request_id).ok().flatten()?.group_id }
    })
    .await
}

#[tokio::test]
async fn create_then_webhook_names_the_group_and_the_cli_manages_it() {
    let tg = TestGate::start_with(&[]).await;
    let cfg = tg.config_path();
    let gid = create_group(&tg, "Paris 2026").await;
    let calls = tg.fake.group_calls();
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("POST", "111222333/groups")
    );
    assert_eq!(
        calls[0].body,
        json!({"messaging_product": "whatsapp", "subject": "Paris 2026", "description": "Tour group",
               "join_approval_mode": "approval_required"})
    );
    let sim = tg.fake.sim_groups();
    assert_eq!(sim[0].id, gid);
    let g = tg.store().group(OLGA.name, &gid).unwrap().unwrap();
    assert_eq!(
        (
            g.state.as_str(),
            g.subject.as_deref(),
            g.invite_link.as_deref(),
            g.join_approval_mode.as_deref()
        ),
        (
            "active",
            Some("Paris 2026"),
            Some(sim[0].invite_link.as_str()),
            Some("approval_required")
        )
    );
    let list = ok(&cfg, &["groups", "olga", "list"]).await;
    assert!(
        list.starts_with(&format!(
            "{gid}  \"Paris 2026\"  active  participants: 0  https://chat.whatsapp.com/"
        )),
        "{list}"
    );
    let remote = ok(&cfg, &["groups", "olga", "list", "--remote"]).await;
    assert_eq!(remote, format!("{gid}  Paris 2026\n1 group(s) on Graph\n"));
    // A group whose webhook never came (e.g. the demo's built-in simulator sends none) is
    // recorded when Graph lists it.
    let g2 = tg.fake.sim_groups();
    let created = ok(&cfg, &["groups", "olga", "create", "Lyon 2027"]).await;
    assert!(
        created.contains("requested group \"Lyon 2027\" (auto_approve)"),
        "{created}"
    );
    let lyon = tg.fake.sim_groups()[g2.len()].id.clone();
    let remote = ok(&cfg, &["groups", "olga", "list", "--remote"]).await;
    assert_eq!(
        remote,
        format!(
            "{gid}  Paris 2026\n{lyon}  Lyon 2027  (new to the gate: recorded)\n2 group(s) on Graph\n"
        )
    );
    assert_eq!(
        tg.store()
            .group(OLGA.name, &lyon)
            .unwrap()
            .unwrap()
            .subject
            .as_deref(),
        Some("Lyon 2027")
    );
    ok(&cfg, &["groups", "olga", "delete", &lyon, "--yes"]).await;

    // Invite link, and a reset that replaces it.
    let link = ok(&cfg, &["groups", "olga", "invite-link", &gid]).await;
    assert_eq!(link.trim(), sim[0].invite_link);
    let reset = ok(&cfg, &["groups", "olga", "invite-link", &gid, "--reset"]).await;
    let new_link = tg.fake.sim_groups()[0].invite_link.clone();
    assert_ne!(new_link, sim[0].invite_link);
    assert!(reset.contains(&new_link), "{reset}");
    let last = tg.fake.group_calls().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path),
        ("POST", format!("{gid}/invite_link"))
    );
    assert_eq!(last.body, json!({"messaging_product": "whatsapp"}));
    assert_eq!(
        tg.store()
            .group(OLGA.name, &gid)
            .unwrap()
            .unwrap()
            .invite_link,
        Some(new_link)
    );

    // Two people join through the link; the participants webhook keeps the store up to date.
    for wa in ["33611111111", "33622222222"] {
        let hook = tg.fake.join_group(&gid, wa).unwrap();
        post(&tg, &hook).await;
    }
    settled(&tg, OLGA.name).await;
    let g = tg.store().group(OLGA.name, &gid).unwrap().unwrap();
    assert_eq!(g.participants, vec!["33611111111", "33622222222"]);
    let show = ok(&cfg, &["groups", "olga", "show", &gid]).await;
    assert!(show.contains("subject: Paris 2026\n"), "{show}");
    assert!(
        show.contains("participants (2): +33611111111, +33622222222\n"),
        "{show}"
    );

    // Remove one: the body Graph receives, and the store.
    let out = ok(
        &cfg,
        &["groups", "olga", "remove", &gid, "+33 6 22 22 22 22"],
    )
    .await;
    assert_eq!(out, format!("removed +33622222222 from group {gid}\n"));
    let last = tg.fake.group_calls().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path),
        ("DELETE", format!("{gid}/participants"))
    );
    assert_eq!(
        last.body,
        json!({"messaging_product": "whatsapp", "participants": [{"user": "33622222222"}]})
    );
    assert_eq!(tg.fake.sim_groups()[0].participants, vec!["33611111111"]);
    assert_eq!(
        tg.store()
            .group(OLGA.name, &gid)
            .unwrap()
            .unwrap()
            .participants,
        vec!["33611111111"]
    );

    // Delete needs --yes.
    let (_, err) = fails(&cfg, &["groups", "olga", "delete", &gid], 2).await;
    assert!(err.contains("cannot be undone: add --yes"), "{err}");
    assert_eq!(tg.fake.sim_groups().len(), 1);
    ok(&cfg, &["groups", "olga", "delete", &gid, "--yes"]).await;
    assert!(tg.fake.sim_groups().is_empty());
    let g = tg.store().group(OLGA.name, &gid).unwrap().unwrap();
    assert_eq!((g.state.as_str(), g.participants.len()), ("deleted", 0));
    // Graph no longer knows it: a clear error, exit 1.
    let (_, err) = fails(&cfg, &["groups", "olga", "show", &gid], 1).await;
    assert!(
        err.contains(&format!(
            "error: Graph could not read group {gid}: invalid parameter"
        )),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
    // Every change made to a group is in Olga's audit log, oldest first; reads are not.
    let changes: Vec<(String, Value)> = tg
        .store()
        .audit_entries(Some(OLGA.name), None, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("group."))
        .map(|e| (e.action, e.details))
        .collect();
    let actions: Vec<&str> = changes.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "group.create",
            "group.create",
            "group.delete",
            "group.invite_link_reset",
            "group.remove",
            "group.delete"
        ]
    );
    assert_eq!(changes[0].1["subject"], "Paris 2026");
    assert_eq!(changes[0].1["join_approval_mode"], "approval_required");
    assert_eq!(changes[2].1["group"], lyon.as_str());
    assert_eq!(changes[3].1, json!({"group": gid}));
    assert!(!changes[3].1.to_string().contains("chat.whatsapp.com"));
    assert_eq!(
        changes[4].1,
        json!({"group": gid, "participants": ["33622222222"]})
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn sends_to_a_group_go_through_the_outbox_within_the_groups_window() {
    let tg = TestGate::start_with(&[]).await;
    let cfg = tg.config_path();
    let gid = create_group(&tg, "Lyon 2027").await;
    // Nobody wrote in the group: free-form is refused before anything is queued.
    let (_, err) = fails(
        &cfg,
        &["groups", "olga", "send", &gid, "--text", "Bonjour"],
        1,
    )
    .await;
    assert!(err.contains(&format!("group {gid}: no participant has written in it, so its 24-hour window is closed; only an approved template can reach it")), "{err}");
    assert!(tg.store().outbox(OLGA.name).unwrap().is_empty());
    // The sender checks the group's window too, for rows queued by anyone.
    let (t, body) = wagate::domain::groups::build(&gid, &json!("sneaky")).unwrap();
    let row = wagate::store::NewOutbound {
        idem_key: "test/direct".into(),
        recipient: format!("group:{gid}"),
        msg_type: t,
        body,
    };
    tg.store().enqueue(OLGA.name, &[row]).unwrap();
    let rows = settled(&tg, OLGA.name).await;
    assert_eq!(rows[0].state, "failed");
    assert_eq!(
        rows[0].error.as_deref(),
        Some(format!("not sent: group {gid}: no participant has written in it, so its 24-hour window is closed; only an approved template can reach it").as_str())
    );
    assert!(sent_to_phone(&tg.fake, OLGA.phone).is_empty());
    // A template always goes.
    let out = ok(
        &cfg,
        &[
            "groups",
            "olga",
            "send",
            &gid,
            "--template",
            "tour_reminder",
            "--language",
            "fr",
        ],
    )
    .await;
    assert!(
        out.starts_with(&format!("sent to group {gid}: wamid.SIM")),
        "{out}"
    );
    // A participant writes in the group: the window opens for the whole group.
    let r = tg
        .post_signed(
            OLGA,
            &group_message(&gid, "33611111111", "wamid.G1", "Salut"),
        )
        .await;
    assert_eq!(r.status(), 200);
    settled(&tg, OLGA.name).await;
    let out = ok(
        &cfg,
        &["groups", "olga", "send", &gid, "--text", "Bonjour à tous"],
    )
    .await;
    assert!(
        out.starts_with(&format!("sent to group {gid}: wamid.SIM")),
        "{out}"
    );
    let bodies = sent_to_phone(&tg.fake, OLGA.phone);
    assert_eq!(
        bodies,
        vec![
            json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": gid, "type": "template",
                   "template": {"name": "tour_reminder", "language": {"code": "fr"}}}),
            json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": gid, "type": "text",
                   "text": {"body": "Bonjour à tous"}}),
        ]
    );
    let rows = tg.store().outbox(OLGA.name).unwrap();
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.state == "sent" && r.recipient == format!("group:{gid}")),
        "{rows:?}"
    );
    // A Graph failure of the send is reported with Graph's reason.
    tg.fake
        .push_fault(Fault::graph(400, 131008, "Required parameter is missing"));
    let (_, err) = fails(
        &cfg,
        &["groups", "olga", "send", &gid, "--text", "again"],
        1,
    )
    .await;
    assert!(err.contains("131008"), "{err}");
    tg.shutdown().await;
}

#[tokio::test]
async fn graph_errors_on_group_calls_are_clear_cli_errors() {
    let tg = TestGate::start_with(&[]).await;
    let cfg = tg.config_path();
    tg.fake
        .push_fault(Fault::graph(400, 131009, "Parameter value is not valid"));
    let (out, err) = fails(&cfg, &["groups", "olga", "create", "Paris 2026"], 1).await;
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: Graph refused to create the group: a parameter value is invalid (#131009: (#131009) Parameter value is not valid)\n"
    );
    assert!(
        tg.store().groups(OLGA.name).unwrap().is_empty(),
        "nothing stored on failure"
    );
    tg.fake.push_fault(Fault::http(503));
    let (_, err) = fails(&cfg, &["groups", "olga", "list", "--remote"], 1).await;
    assert!(
        err.starts_with("error: Graph could not list the groups: Graph answered 503"),
        "{err}"
    );
    // Bad arguments are usage errors, before any call.
    let n = tg.fake.group_calls().len();
    let (_, err) = fails(&cfg, &["groups", "olga", "invite-link", "not a group"], 2).await;
    assert!(err.contains("`not a group` is not a group id"), "{err}");
    let (_, err) = fails(
        &cfg,
        &["groups", "olga", "create", "x", "--approval", "maybe"],
        2,
    )
    .await;
    assert!(err.contains("invalid value 'maybe'"), "{err}");
    assert_eq!(tg.fake.group_calls().len(), n);
    // A group Meta has not named yet cannot be used by its request id.
    let out = ok(&cfg, &["groups", "olga", "create", "Nice 2028"]).await;
    let request_id = out
        .split("request ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (_, err) = fails(&cfg, &["groups", "olga", "invite-link", &request_id], 1).await;
    assert!(
        err.contains(&format!("the group of request {request_id} has no id yet")),
        "{err}"
    );
    // Meta refusing a subject it cannot take.
    let long = "x".repeat(129);
    let (_, err) = fails(&cfg, &["groups", "olga", "create", &long], 1).await;
    assert!(
        err.contains("subject must be at most 128 characters"),
        "{err}"
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn scripts_send_to_a_group_but_never_interactive_messages() {
    let project = (
        "olga/tour/project.yaml",
        "rules:\n  - name: group-echo\n    on: message\n    if: 'event.raw.group_id != ()'\n    script: g.rhai\n",
    );
    let script = (
        "olga/tour/g.rhai",
        "let g = event.raw.group_id;\nif event.text == \"menu\" {\n  send(#{ group: g, buttons: [\"Yes\", \"No\"], text: \"Coming?\" });\n} else {\n  send(#{ group: g, text: \"Noted: \" + event.text });\n}\n",
    );
    let tg = TestGate::start_with(&[project, script]).await;
    let gid = create_group(&tg, "Paris 2026").await;
    let r = tg
        .post_signed(
            OLGA,
            &group_message(&gid, "33611111111", "wamid.G1", "bus at 8?"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let rows = settled(&tg, OLGA.name).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, "sent", "{rows:?}");
    assert_eq!(
        sent_to_phone(&tg.fake, OLGA.phone),
        vec![
            json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": gid, "type": "text",
                    "text": {"body": "Noted: bus at 8?"}})
        ]
    );
    let r = tg
        .post_signed(
            OLGA,
            &group_message(&gid, "33611111111", "wamid.G2", "menu"),
        )
        .await;
    assert_eq!(r.status(), 200);
    settled(&tg, OLGA.name).await;
    let run = &tg
        .store()
        .runs(Some(OLGA.name), Some("group-echo"), 1)
        .unwrap()[0];
    let err = run.error.as_deref().unwrap();
    assert!(
        err.contains("g.rhai:3:") && err.contains("groups do not take interactive messages"),
        "{err}"
    );
    assert_eq!(sent_to_phone(&tg.fake, OLGA.phone).len(), 1);
    tg.shutdown().await;
}

#[tokio::test]
async fn metas_group_webhook_examples_keep_the_store_up_to_date() {
    use crate::common::fixture_for;
    let tg = TestGate::start_with(&[]).await;
    const GID: &str = "Y2FwaV9ncm91cDoxODA1NTU1MDE3MjoxMjAzNjMyMjI3NzE5NjMwNjcZD";
    for f in [
        "meta-openapi__webhook__group-create-message.json",
        "meta-openapi__webhook__group-settings-update.json",
    ] {
        let r = tg.post_signed(OLGA, &fixture_for(OLGA, f)).await;
        assert_eq!(r.status(), 200, "{f}");
    }
    let g = tg.store().group(OLGA.name, GID).unwrap().unwrap();
    assert_eq!(
        (
            g.state.as_str(),
            g.subject.as_deref(),
            g.description.as_deref(),
            g.request_id.as_deref()
        ),
        (
            "active",
            Some("your-group-subject"),
            Some("your-group-description"),
            Some("784D93D0C468593037EA0B1ECA245D9C")
        )
    );
    assert_eq!(g.participants, vec!["16505551234", "16505551235"]);
    let r = tg
        .post_signed(
            OLGA,
            &fixture_for(
                OLGA,
                "meta-openapi__webhook__group-remove-participants.json",
            ),
        )
        .await;
    assert_eq!(r.status(), 200);
    let g = tg.store().group(OLGA.name, GID).unwrap().unwrap();
    assert!(g.participants.is_empty(), "{g:?}");
    assert_eq!(tg.store().groups(OLGA.name).unwrap().len(), 1);
    // Another user's store knows nothing of it.
    assert!(tg.store().groups("azarya").unwrap().is_empty());
    tg.shutdown().await;
}

/// `reply(event, …)` to a message written in a group answers in the group, quoting it; a
/// one-to-one message is still answered one-to-one.
#[tokio::test]
async fn a_reply_to_a_group_message_goes_to_the_group() {
    let tg = TestGate::start().await; // Olga's echo rule replies to every text
    let gid = create_group(&tg, "PARIS-2026 participants").await;
    let body = group_message(&gid, "33612345678", "wamid.GRPQ1", "what time tomorrow?");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let body =
        crate::common::text_webhook(OLGA, "33612345678", "Ann", "wamid.ONE1", "and just me?");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, "olga").await;
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    let sent: Vec<Value> = tg
        .fake
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("text").is_some())
        .collect();
    let to_group = sent
        .iter()
        .find(|b| b["context"]["message_id"] == "wamid.GRPQ1")
        .expect("the group message was answered");
    assert_eq!(to_group["recipient_type"], "group");
    assert_eq!(to_group["to"], gid.as_str());
    assert_eq!(to_group["text"]["body"], "You said: what time tomorrow?");
    let to_ann = sent
        .iter()
        .find(|b| b["context"]["message_id"] == "wamid.ONE1")
        .expect("the 1:1 message was answered");
    assert_eq!(to_ann["recipient_type"], "individual");
    assert_eq!(to_ann["to"], "+33612345678");
    tg.shutdown().await;
}
