//! The bench's child processes, so that a figure of memory is one process's alone:
//! `rest` (a gate on a home, idle), `bare-rest` (the bare reference, idle) and `export`.
//! Each prints one `key=value …` line on stdout and exits.

use std::path::Path;
use std::time::Duration;

/// Resident and peak resident memory of this process (kB), from /proc/self/status.
pub fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How long an idle process is left to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(1500);

/// A gate on `home`, started, answering /healthz, then left idle: its memory at rest.
pub async fn rest(home: &Path) -> anyhow::Result<String> {
    let loaded = crate::app::load(&home.join("gate.yaml"))?;
    let users = loaded.users.len();
    let rules = loaded.rules.rule_count();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gate = crate::app::start(loaded, listener, crate::app::Options::default()).await?;
    healthz(gate.addr).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss, hwm) = memory_kb();
    gate.shutdown(Duration::from_secs(5)).await;
    Ok(format!(
        "users={users} rules={rules} rss_kb={rss} hwm_kb={hwm}"
    ))
}

/// The bare reference server, idle: the memory of the same stack doing nothing else.
pub async fn bare_rest() -> anyhow::Result<String> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let user = super::home::BenchUser::numbered(0);
    let addr = super::load::serve_bare(&[user], None, None, cancel.clone()).await?;
    // One request, as the gate gets its /healthz.
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"POST /webhook/whatsapp/user0 HTTP/1.0\r\ncontent-length: 0\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    tokio::time::sleep(SETTLE).await;
    let (rss, hwm) = memory_kb();
    cancel.cancel();
    Ok(format!("rss_kb={rss} hwm_kb={hwm}"))
}

/// GET /healthz over a bare TCP connection (no client library in the measured process).
async fn healthz(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"),
        "the gate did not answer /healthz"
    );
    Ok(())
}

/// Substance Export of every stored message of `user` in the home's database: how many
/// messages were exported and how long it took, in this process alone (its VmHWM is the
/// export's peak memory).
pub fn export(home: &Path, user: &str) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    match export_once(home, user)? {
        Some(messages) => {
            let secs = started.elapsed().as_secs_f64();
            let (rss, hwm) = memory_kb();
            Ok(format!(
                "messages={messages} secs={secs:.3} rss_kb={rss} hwm_kb={hwm}"
            ))
        }
        None => Ok("export=not-built".into()),
    }
}

/// Runs Substance Export once over the home's database: every message of `user`, streamed to a
/// file under the home, as `wagate export USER` does. Returns how many messages it wrote.
fn export_once(home: &Path, user: &str) -> anyhow::Result<Option<usize>> {
    let loaded = crate::config::Home::load(&home.join("gate.yaml"))?;
    let cfg = loaded
        .users
        .iter()
        .find(|(id, _)| id.as_str() == user)
        .map(|(_, c)| c)
        .ok_or_else(|| anyhow::anyhow!("no user `{user}` in the bench home"))?;
    let store = crate::store::Store::open(&loaded.gate.db_path)?;
    let account = crate::export::Account::of(cfg);
    let out = home.join("data/exports/bench.json");
    let done = crate::export::export_to_file(
        &store,
        &account,
        &crate::export::ExportOptions::default(),
        &out,
        None,
    )?;
    let _ = std::fs::remove_file(&out);
    Ok(Some(done.counts.messages as usize))
}
