//! The status page as a person sees it: rendered by headless Chromium (Debian's chromium,
//! installed by .ci/run) against the real gate on 127.0.0.1, with a contact whose name holds
//! markup, a failed send and a failing rule; and `wagate status`, the same from a terminal.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wagate::graph::simulator::Fault;

const EVIL_NAME: &str = "<script>alert(\"x\")</script> Eve";

/// A rule that always fails, with markup in its error.
const BROKEN: [(&str, &str); 2] = [
    (
        "olga/broken/project.yaml",
        "rules:\n  - name: explode\n    on: message\n    script: explode.rhai\n",
    ),
    (
        "olga/broken/explode.rhai",
        "throw \"kaboom <img src=x onerror=alert(2)>\";\n",
    ),
];

/// A timed rule.
const EVENING: [(&str, &str); 2] = [
    (
        "olga/tours/project.yaml",
        "rules:\n  - name: evening\n    on: { cron: \"0 18 * * *\" }\n    script: e.rhai\n",
    ),
    ("olga/tours/e.rhai", "log(\"evening\");\n"),
];

/// A gate that has seen a contact named with markup, a send Graph refused and a failing rule;
/// Olga's token expires in three days.
async fn busy_gate() -> TestGate {
    let files = [
        ECHO_PROJECT,
        ECHO_SCRIPT,
        BROKEN[0],
        BROKEN[1],
        EVENING[0],
        EVENING[1],
    ];
    let mut tg = TestGate::start_with(&files).await;
    let home = tg.dir.path().to_path_buf();
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::hours(3 * 24 + 1);
    let creds = wagate::vault::parse_credentials(
        serde_json::json!({"access_token": OLGA.token, "app_secret": OLGA.secret,
            "webhook_verify_token": OLGA.verify, "token_expires_at": expires.to_rfc3339()})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    vault
        .write_credentials(&home.join("credentials/olga.age"), &creds)
        .unwrap();
    tg.restart().await;
    let body = text_webhook(
        OLGA,
        "33612345678",
        EVIL_NAME,
        "wamid.EVIL1",
        "hi <b>bold</b>",
    );
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    settled(&tg, OLGA.name).await;
    tg.fake
        .push_fault(Fault::graph(400, 131026, "Message undeliverable"));
    let body = text_webhook(OLGA, "33612345678", EVIL_NAME, "wamid.EVIL2", "second");
    assert_eq!(tg.post_signed(OLGA, &body).await.status(), 200);
    let rows = settled(&tg, OLGA.name).await;
    assert_eq!(
        rows.iter().filter(|r| r.state == "failed").count(),
        1,
        "{rows:?}"
    );
    tg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_escapes_what_users_control_and_answers_loopback_only() {
    let tg = busy_gate().await;
    let res = tg.client.get(tg.url("/status")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Eve"),
        "{html}"
    );
    assert!(
        !html.contains("<script"),
        "no markup of a contact gets through"
    );
    assert!(
        !html.contains("<img"),
        "no markup of a rule error gets through"
    );
    assert!(html.contains("kaboom &lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("hi &lt;b&gt;bold&lt;/b&gt;"));
    // A request a proxy relayed is not local, whatever its TCP peer.
    let relayed = tg
        .client
        .get(tg.url("/status"))
        .header("forwarded", "for=203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.status(), 403);
    tg.shutdown().await;
}

/// Debian's chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless chromium with `args` (a fresh profile, no network of its own), bounded in
/// time and killed by its pid if it overruns. Returns its stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let out_path = profile.with_extension("out");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // SIGKILL to this pid only
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// The text a person reads: tags dropped, entities decoded, blanks collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_users_rules_runs_outbox_and_webhooks() {
    let Some(bin) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is missing on CI: .ci/run installs Debian's chromium package");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: chromium is not installed (apt-get install -y --no-install-recommends chromium); the status page was NOT rendered !!!!!!!!\n"
        );
        return;
    };
    let tg = busy_gate().await;
    let url = tg.url("/status");
    let work = tempfile::tempdir().unwrap();
    let (dom_profile, shot_profile) = (work.path().join("p1"), work.path().join("p2"));
    let shot = work.path().join("status.png");
    let (b, u) = (bin.clone(), url.clone());
    let dom = tokio::task::spawn_blocking(move || {
        run_chromium(&b, &dom_profile, &["--dump-dom".into(), u])
    })
    .await
    .unwrap();
    let shot_arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || {
        run_chromium(
            &bin,
            &shot_profile,
            &[shot_arg, "--window-size=412,1600".into(), url],
        )
    })
    .await
    .unwrap();

    assert!(!dom.contains("<script"), "no script element in the page");
    let text = visible_text(&dom);
    for seen in [
        "wagate status",
        "Users (2)",
        "azarya token: ok expiry not known",
        "olga token: ok expires 20",
        "(in 3d 0h)",
        "olga/replies/echo olga message next: on each event",
        "olga/tours/evening olga cron \"0 18 * * *\" next: 20",
        "18:00 CE",
        "olga/broken/explode",
        "kaboom <img src=x onerror=alert(2)>",
        "1 failed",
        "Latest failures (1)",
        "to +33612345678",
        "131026",
        &format!("{EVIL_NAME} (+33612345678)"),
        "hi <b>bold</b>",
    ] {
        assert!(
            text.contains(seen),
            "the page shows `{seen}`; it reads:\n{text}"
        );
    }
    // The screenshot is a phone-wide PNG (IHDR width at bytes 16..20).
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 412, "rendered at a phone's width");
    tg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wagate_status_prints_the_same_in_the_terminal() {
    let tg = busy_gate().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(tg.config_path())
        .arg("status")
        .env_remove("WAGATE_PASSPHRASE")
        .env_remove("WAGATE_CONFIG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for seen in [
        "USERS (2)",
        "olga  token ok; expires 20",
        "RULES (3)",
        "olga/tours/evening  cron \"0 18 * * *\"  next: 20",
        "olga/replies/echo  message  next: on each event",
        "error   olga/broken/explode",
        "kaboom <img src=x onerror=alert(2)>",
        "OUTBOX  queued 0  sending 0  sent 1  failed 1",
        "LATEST FAILURES (1)",
        "olga to +33612345678 (text)",
        "RECENT WEBHOOKS",
        &format!("{EVIL_NAME} (+33612345678)"),
    ] {
        assert!(
            text.contains(seen),
            "`wagate status` shows `{seen}`:\n{text}"
        );
    }
    for secret in [OLGA.token, OLGA.secret, OLGA.verify] {
        assert!(!text.contains(secret));
    }
    tg.shutdown().await;
}
