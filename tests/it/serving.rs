//! A misconfigured user is reported and left out; the others are served, and hot reload goes
//! on working for them while that user stays broken.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_user_whose_script_does_not_compile_is_skipped_and_reloads_go_on_for_the_others() {
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
    assert_eq!(names, ["olga"], "only olga is served");
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, "azarya");
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
    assert_eq!(tg.post_signed(AZARYA, &body).await.status(), 404);
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
    tg.shutdown().await;
}
