//! A project's imported modules: a top-level `import` is seen by the function a rule calls
//! and by `schedule()` calls, and editing only the module goes live like editing the rule's
//! own script. The shipped tour keeps its shared code in such a module
//! (`rules/olga/design-travels/PARIS-2026/common.rhai`).

use crate::common::*;
use std::time::Duration;

const PROJECT: (&str, &str) = (
    "olga/greet/project.yaml",
    "rules:\n  - name: greet\n    on: message\n    script: greet.rhai\n    call: on_message\n",
);
const SCRIPT: (&str, &str) = (
    "olga/greet/greet.rhai",
    "fn on_message(event) {\n    import \"helpers\" as h;\n    reply(event, h::greeting(event.name));\n}\n",
);
const HELPERS: (&str, &str) = (
    "olga/greet/helpers.rhai",
    "fn greeting(name) { `Hello ${name}` }\n",
);

async fn reply_to(tg: &TestGate, n: usize, wamid: &str) -> String {
    let body = text_webhook(OLGA, "33612345678", "Ann", wamid, "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let reqs = tg.fake.wait_for(n, Duration::from_secs(20)).await;
    assert_eq!(reqs.len(), n);
    reqs[n - 1].body["text"]["body"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn editing_an_imported_module_goes_live() {
    let tg = TestGate::start_with(&[PROJECT, SCRIPT, HELPERS]).await;
    assert_eq!(reply_to(&tg, 1, "wamid.H1").await, "Hello Ann");
    let start = tg.reload_count();
    let before = tg.gate().registry.snapshot().hash();
    tg.write_rule_file(HELPERS.0, "fn greeting(name) { `Shalom ${name}` }\n");
    let r = tg.next_reload(start).await;
    assert_eq!(r.outcome, "live");
    assert_ne!(
        r.hash, before,
        "the project's content hash covers its modules"
    );
    assert_eq!(reply_to(&tg, 2, "wamid.H2").await, "Shalom Ann");
    tg.shutdown().await;
}

#[tokio::test]
async fn a_top_level_import_is_seen_by_the_called_function_and_by_scheduled_calls() {
    let script = (
        "olga/greet/greet.rhai",
        "import \"helpers\" as h;\n\nfn on_message(event) {\n    reply(event, h::greeting(event.name));\n    schedule(1, \"later\", event.from);\n}\n\nfn later(who) {\n    send(who, h::greeting(\"again\"));\n}\n",
    );
    let tg = TestGate::start_manual_time(&[PROJECT, script, HELPERS]).await;
    assert_eq!(reply_to(&tg, 1, "wamid.T1").await, "Hello Ann");
    settled(&tg, "olga").await;
    let r = tg
        .tick(chrono::Utc::now() + chrono::Duration::seconds(5))
        .await;
    assert_eq!(r.calls.len(), 1, "{r:?}");
    let reqs = tg.fake.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(reqs[1].body["text"]["body"], "Hello again");
    tg.shutdown().await;
}
