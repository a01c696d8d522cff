//! The real `wagate serve` as a child process, and the fake Cloud API it talks to, for tests
//! that need a process of their own (process-wide metrics, signals, exit codes).

#![cfg(unix)]

use super::*;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use wagate::domain::Secret;
use wagate::graph::simulator::Simulator;

/// Deadline of each wait.
pub const T: Duration = Duration::from_secs(60);

/// The fake Cloud API on 127.0.0.1:0, served by the test process (it outlives the gates).
pub async fn serve_fake() -> (Simulator, String, CancellationToken) {
    let sim = Simulator::new();
    for u in [OLGA, AZARYA] {
        sim.expect_token(u.phone, Secret::new(u.token.to_string()));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, cancel.clone()));
    (sim, url, cancel)
}

/// `wagate serve` as a child process: stdout collected, stderr to a file in the home.
pub struct Bin {
    child: Child,
    pub addr: String,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub log: PathBuf,
}

impl Bin {
    pub async fn start(home: &Path, log_name: &str, env: &[(&str, &str)]) -> Bin {
        let log = home.join(log_name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wagate"));
        cmd.arg("--config")
            .arg(home.join("gate.yaml"))
            .arg("serve")
            .env_remove("WAGATE_CONFIG")
            .env_remove("WAGATE_PASSPHRASE")
            .env("WAGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let found = tokio::time::timeout(T, async {
            while let Ok(Some(line)) = lines.next_line().await {
                stdout.lock().unwrap().push(line.clone());
                if let Some(addr) = line.strip_prefix("wagate listening on http://") {
                    return Some(addr.trim().to_string());
                }
            }
            None
        })
        .await;
        let addr = match found {
            Ok(Some(a)) => a,
            _ => panic!(
                "wagate serve did not listen:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let out = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                out.lock().unwrap().push(line);
            }
        });
        Bin {
            child,
            addr,
            stdout,
            log,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// CPU time the child has used so far (user and system, from /proc/<pid>/stat).
    pub fn cpu(&self) -> Duration {
        let pid = self.child.id().expect("running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
        // The fields after the command name (which may hold spaces) closed by `)`: utime and
        // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
        let rest = stat.rsplit_once(')').expect("stat line").1;
        let ticks: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().expect("ticks"))
            .collect();
        Duration::from_millis((ticks[0] + ticks[1]) * 10)
    }

    /// SIGTERM to this child, by its pid; waits for it to exit.
    pub async fn terminate(self) -> (ExitStatus, Vec<String>, String) {
        self.sigterm();
        self.exited().await
    }

    /// SIGTERM to this child, by its pid, without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {pid}");
    }

    /// Waits for the child to exit: its status, stdout lines and log.
    pub async fn exited(mut self) -> (ExitStatus, Vec<String>, String) {
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .expect("the gate stops in time after SIGTERM")
            .expect("wait");
        // Let the stdout reader take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = self.stdout.lock().unwrap().clone();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (status, out, log)
    }
}

/// Posts one signed text message from `from` to `u`; returns the HTTP status.
pub async fn post(
    client: &reqwest::Client,
    bin: &Bin,
    u: TestUser,
    from: &str,
    wamid: &str,
) -> u16 {
    let body = text_webhook(u, from, "Contact", wamid, &format!("text of {wamid}"));
    let sig = wagate::whatsapp::sign(u.secret.as_bytes(), &body);
    client
        .post(bin.url(&format!("/webhook/whatsapp/{}", u.name)))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
