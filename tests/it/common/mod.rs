//! `TestGate`: a temp home with a real SQLite file, the fake Cloud API on 127.0.0.1:0 and the
//! real gate on 127.0.0.1:0, talking over real HTTP. Helpers sign webhooks like Meta and poll
//! with a deadline instead of sleeping.

#![allow(dead_code)]

pub mod bin;

use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wagate::app::{self, GateHandle, Options};
use wagate::domain::Secret;
use wagate::graph::simulator::Simulator;
use wagate::scheduler::ManualClock;
use wagate::store::Store;

/// Test users: (name, phone_number_id, token, app secret, verify token).
pub const OLGA: TestUser = TestUser {
    name: "olga",
    phone: "111222333",
    waba: "444555666",
    token: "EAAtoken-olga-0123456789",
    secret: "app-secret-olga",
    verify: "verify-olga",
};
pub const AZARYA: TestUser = TestUser {
    name: "azarya",
    phone: "123456789",
    waba: "987654321",
    token: "EAAtoken-azarya-9876543210",
    secret: "app-secret-azarya",
    verify: "verify-azarya",
};

#[derive(Clone, Copy, Debug)]
pub struct TestUser {
    pub name: &'static str,
    pub phone: &'static str,
    pub waba: &'static str,
    pub token: &'static str,
    pub secret: &'static str,
    pub verify: &'static str,
}

/// Olga's default project: replies to every text message, quoting it.
pub const ECHO_PROJECT: (&str, &str) = (
    "olga/replies/project.yaml",
    "rules:\n  - name: echo\n    on: message\n    if: 'event.type == \"text\"'\n    script: echo.rhai\n",
);
pub const ECHO_SCRIPT: (&str, &str) = (
    "olga/replies/echo.rhai",
    "reply(event, \"You said: \" + event.text);\n",
);

pub struct TestGate {
    /// Manual time: no scheduler loop, and the gate's clock (its runs' `now()`) moves only
    /// with [`TestGate::tick`].
    pub clock: Option<Arc<ManualClock>>,
    pub dir: tempfile::TempDir,
    pub fake: Simulator,
    fake_cancel: CancellationToken,
    gate: Option<GateHandle>,
    pub client: reqwest::Client,
}

impl TestGate {
    /// Olga and Azarya, Olga's echo rule.
    pub async fn start() -> TestGate {
        Self::start_with(&[ECHO_PROJECT, ECHO_SCRIPT]).await
    }

    /// Olga and Azarya with the given files under rules/.
    pub async fn start_with(rules: &[(&str, &str)]) -> TestGate {
        Self::start_opts(rules, DEFAULT_SCRIPTS).await
    }

    /// As [`TestGate::start_with`], with `scripts` as gate.yaml's `scripts:` section.
    pub async fn start_opts(rules: &[(&str, &str)], scripts: &str) -> TestGate {
        Self::start_clocked(rules, scripts, None).await
    }

    /// As [`TestGate::start_opts`]; with a manual `clock`, the gate never runs its scheduler
    /// loop (not even before the first tick).
    async fn start_clocked(
        rules: &[(&str, &str)],
        scripts: &str,
        clock: Option<Arc<ManualClock>>,
    ) -> TestGate {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = Simulator::new();
        for u in [OLGA, AZARYA] {
            fake.expect_token(u.phone, Secret::new(u.token.to_string()));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_url = format!("http://{}", listener.local_addr().unwrap());
        let fake_cancel = CancellationToken::new();
        tokio::spawn(fake.clone().serve(listener, fake_cancel.clone()));
        write_home_with(dir.path(), &fake_url, rules, scripts);
        let mut tg = TestGate {
            clock,
            dir,
            fake,
            fake_cancel,
            gate: None,
            client: reqwest::Client::new(),
        };
        tg.boot().await;
        tg
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gate.yaml")
    }

    async fn boot(&mut self) {
        let loaded =
            app::load(&self.config_path()).unwrap_or_else(|e| panic!("home does not load:\n{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = Options {
            backoff_base: Duration::from_millis(20),
            reload_debounce: Duration::from_millis(50),
            scheduler: self.clock.is_none(),
            clock: match &self.clock {
                Some(c) => c.clone(),
                None => Options::default().clock,
            },
            ..Options::default()
        };
        self.gate = Some(
            app::start(loaded, listener, opts)
                .await
                .expect("gate starts"),
        );
    }

    /// As [`TestGate::start_with`], with the scheduler driven by hand (no loop, no real clock:
    /// the gate's clock starts now and moves with [`TestGate::tick`]).
    pub async fn start_manual_time(rules: &[(&str, &str)]) -> TestGate {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        Self::start_clocked(rules, DEFAULT_SCRIPTS, Some(clock)).await
    }

    /// Manual time: sets the gate's clock to `t` and runs one scheduler tick at `t`.
    pub async fn tick(&self, t: chrono::DateTime<chrono::Utc>) -> wagate::scheduler::TickReport {
        if let Some(c) = &self.clock {
            c.set(t);
        }
        self.gate().scheduler.tick(t).await
    }

    /// Stops the gate and starts a new one on the same home (same database file).
    pub async fn restart(&mut self) {
        if let Some(g) = self.gate.take() {
            g.shutdown(Duration::from_secs(10)).await;
        }
        self.boot().await;
    }

    pub fn gate(&self) -> &GateHandle {
        self.gate.as_ref().expect("gate running")
    }

    pub fn store(&self) -> &Store {
        &self.gate().store
    }

    /// Waits until a reload newer than the `seen` newest one is recorded, and returns it.
    pub async fn next_reload(&self, seen: usize) -> wagate::store::ReloadRow {
        let store = self.store().clone();
        eventually("a reload to be recorded", Duration::from_secs(20), || {
            let store = store.clone();
            async move {
                let all = store.reloads(1000).ok()?;
                (all.len() > seen).then(|| all[0].clone())
            }
        })
        .await
    }

    /// How many reloads are recorded so far (the start counts as one).
    pub fn reload_count(&self) -> usize {
        self.store().reloads(1000).unwrap().len()
    }

    /// Writes a file under the home's rules/ (as an editor would: whole, then renamed in).
    pub fn write_rule_file(&self, rel: &str, text: &str) {
        let path = self.dir.path().join("rules").join(rel);
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gate().addr, path)
    }

    /// POSTs `body` to /webhook/whatsapp/{user} with `signature` as X-Hub-Signature-256.
    pub async fn post_raw(
        &self,
        user: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(&format!("/webhook/whatsapp/{user}")))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        req.send().await.expect("gate answers")
    }

    /// POSTs `body` signed with `u`'s app secret, as Meta does.
    pub async fn post_signed(&self, u: TestUser, body: &[u8]) -> reqwest::Response {
        let sig = wagate::whatsapp::sign(u.secret.as_bytes(), body);
        self.post_raw(u.name, body.to_vec(), Some(sig)).await
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gate.take() {
            g.shutdown(Duration::from_secs(10)).await;
        }
        self.fake_cancel.cancel();
    }
}

/// Writes `text` to `path`, creating folders.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes a complete home (gate.yaml, identity, users olga and azarya with encrypted
/// credentials, the given rules) whose Graph base URL is `fake_url`.
pub fn write_home(home: &Path, fake_url: &str, rules: &[(&str, &str)]) {
    write_home_with(home, fake_url, rules, DEFAULT_SCRIPTS)
}

/// The `scripts:` section of test homes.
pub const DEFAULT_SCRIPTS: &str = "{ timeout_ms: 500 }";

/// As [`write_home`], with `scripts` as gate.yaml's `scripts:` section.
pub fn write_home_with(home: &Path, fake_url: &str, rules: &[(&str, &str)], scripts: &str) {
    write(
        &home.join("gate.yaml"),
        &format!(
            "server: {{ listen: \"127.0.0.1:0\" }}\nstorage: {{ path: data/wagate.db, busy_timeout_ms: 300 }}\ngraph: {{ base_url: \"{fake_url}\", version: \"v23.0\", timeout_secs: 5 }}\nvault: {{ identity_file: identity.txt }}\nscripts: {scripts}\n"
        ),
    );
    wagate::vault::generate_identity_file(&home.join("identity.txt")).unwrap();
    let vault = wagate::vault::Vault::open(&home.join("identity.txt"), None).unwrap();
    for (u, tz) in [(OLGA, "Europe/Paris"), (AZARYA, "Asia/Jerusalem")] {
        write(
            &home.join(format!("users/{}.yaml", u.name)),
            &format!(
                "user: {}\nphone_number_id: \"{}\"\nbusiness_account_id: \"{}\"\ndisplay_phone_number: \"1555{}\"\ntimezone: {tz}\n# Tests reply to a few contacts many times; pacing has its own tests.\nrecipient_burst: 1000\n",
                u.name, u.phone, u.waba, u.phone
            ),
        );
        let creds = wagate::vault::parse_credentials(
            json!({"access_token": u.token, "app_secret": u.secret, "webhook_verify_token": u.verify})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        vault
            .write_credentials(&home.join(format!("credentials/{}.age", u.name)), &creds)
            .unwrap();
    }
    std::fs::create_dir_all(home.join("rules")).unwrap();
    for (p, text) in rules {
        write(&home.join("rules").join(p), text);
    }
}

/// The current unix time in seconds: webhooks carry WhatsApp's timestamp.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Meta `messages` webhook with one text message from `from` to `u`'s number.
pub fn text_webhook(u: TestUser, from: &str, name: &str, wamid: &str, text: &str) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{}", u.phone), "phone_number_id": u.phone},
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": now_secs().to_string(), "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

/// A fixture from ../shared/fixtures/webhooks with every `metadata.phone_number_id` set to
/// `u`'s number and every entry's id to `u`'s business account (fields without metadata, such
/// as template updates, belong to the account `entry.id` names), so that it is `u`'s own traffic.
pub fn fixture_for(u: TestUser, name: &str) -> Vec<u8> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/webhooks")
        .join(name);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for e in v["entry"].as_array_mut().into_iter().flatten() {
        e["id"] = u.waba.into();
        for c in e["changes"].as_array_mut().into_iter().flatten() {
            if let Some(md) = c["value"].get_mut("metadata") {
                md["phone_number_id"] = u.phone.into();
            }
            // Messages arrive now, as live traffic does (the 24-hour window runs from them).
            for m in c["value"]["messages"].as_array_mut().into_iter().flatten() {
                m["timestamp"] = now_secs().to_string().into();
            }
        }
    }
    v.to_string().into_bytes()
}

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no event of `user` is pending dispatch and no outbox row is queued or in
/// flight, then returns the outbox rows.
pub async fn settled(tg: &TestGate, user: &str) -> Vec<wagate::store::OutboxRow> {
    let store = tg.store().clone();
    let user = user.to_string();
    eventually(
        "dispatch and sends to settle",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            let user = user.clone();
            async move {
                let (_, _, pending) = store.counts(&user).ok()?;
                let rows = store.outbox(&user).ok()?;
                let busy = rows
                    .iter()
                    .any(|r| r.state == "queued" || r.state == "sending");
                (pending == 0 && !busy).then_some(rows)
            }
        },
    )
    .await
}

/// The Cloud API requests the fake received for a phone number id.
pub fn sent_to_phone(fake: &Simulator, phone: &str) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.phone_number_id == phone)
        .map(|r| r.body)
        .collect()
}

/// The built binary run with `args`, nothing taken from the environment's WAGATE_* variables.
pub fn wagate_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(args)
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .output()
        .expect("the binary runs")
}

/// The built binary with `--config HOME/gate.yaml` and `args`, awaited, so that a gate serving
/// in this test's runtime goes on answering meanwhile.
pub async fn wagate_in(home: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(home.join("gate.yaml"))
        .args(args)
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

/// A command's stdout, then its stderr, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
