//! A misconfigured user is reported and left out; the others are served, and hot reload goes
//! on working for them while that user stays broken.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A project that does not compile at start is left out alone: its user is served (her
/// webhooks are stored, her other projects run), reloads go on for everyone while it stays
/// broken, and fixing it brings it in without a restart.
#[tokio::test]
async fn a_project_that_does_not_compile_is_left_out_alone_and_comes_in_once_fixed() {
    let broken = (
        "azarya/bad/project.yaml",
        "rules:\n  - name: oops\n    on: message\n    script: oops.rhai\n",
    );
    let oops = ("azarya/bad/oops.rhai", "let x = ;\n");
    let mut tg = TestGate::start().await;
    // Break Azarya's rules, then start again on the same home.
    write(&tg.dir.path().join("rules").join(broken.0), broken.1);
    write(&tg.dir.path().join("rules").join(oops.0), oops.1);
    let loaded = wagate::app::load(&tg.config_path()).expect("the home still loads");
    let names: Vec<&String> = loaded.users.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["azarya", "olga"], "both are served");
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, "azarya/bad");
    assert!(
        loaded.skipped[0]
            .1
            .contains("--> rules/azarya/bad/oops.rhai:1:"),
        "{}",
        loaded.skipped[0].1
    );
    assert!(
        wagate::app::check(&tg.config_path()).is_err(),
        "check still fails"
    );
    tg.restart().await;
    let body = text_webhook(AZARYA, "972500000001", "Dan", "wamid.Z1", "hi");
    assert_eq!(
        tg.post_signed(AZARYA, &body).await.status(),
        200,
        "Azarya's webhooks are stored"
    );
    let body = text_webhook(OLGA, "33600000001", "Ann", "wamid.O1", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    tg.fake.wait_for(1, T).await;
    // Olga's edit goes live although Azarya's folder still does not compile.
    let seen = tg.reload_count();
    tg.write_rule_file("olga/replies/echo.rhai", "reply(event, \"v2\");\n");
    let r = tg.next_reload(seen).await;
    assert_eq!(r.outcome, "live", "{:?}", r.error);
    let body = text_webhook(OLGA, "33600000001", "Ann", "wamid.O2", "hi");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let reqs = tg.fake.wait_for(2, T).await;
    assert_eq!(reqs[1].body["text"]["body"], "v2");
    // Azarya fixes her script: it goes live, no restart.
    let seen = tg.reload_count();
    tg.write_rule_file(oops.0, "reply(event, \"fixed\");\n");
    let r = tg.next_reload(seen).await;
    assert_eq!(r.outcome, "live", "{:?}", r.error);
    let body = text_webhook(AZARYA, "972500000001", "Dan", "wamid.Z2", "again");
    assert_eq!(tg.post_signed(AZARYA, &body).await.status(), 200);
    let reqs = tg.fake.wait_for(3, T).await;
    assert_eq!(reqs[2].body["text"]["body"], "fixed");
    assert_eq!(
        reqs.len(),
        3,
        "the message that came while it was broken is not run again"
    );
    tg.shutdown().await;
}
