//! Load: signed webhooks POSTed at a fixed concurrency, latencies recorded; the bare
//! reference servers (HMAC check and 200; HMAC check, one reply to Graph and 200); the fake
//! Cloud API with a stamp of when each reply arrived.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One request to make: path, body, signature.
pub struct Shot {
    pub path: String,
    pub body: Bytes,
    pub signature: String,
}

/// What a load run measured.
pub struct LoadResult {
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Latencies of the answered requests, sorted.
    pub latencies: Vec<Duration>,
    /// When each request was sent (ns after `base`); 0 for one never sent.
    pub sent_at: Arc<Vec<AtomicU64>>,
    pub base: Instant,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn pct(&self, p: f64) -> Duration {
        pct(&self.latencies, p)
    }
}

/// The `p` quantile (0..1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// CPU time this process has used so far (user and system, all threads), from
/// /proc/self/stat; zero where there is no /proc.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) closed by `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| -> u64 {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in ticks
    // of 1/100 s on Linux.
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// A client for loopback only (no proxy), keeping `concurrency` connections.
pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// POSTs every shot to `addr` with `concurrency` requests at once; stops at `deadline`.
pub async fn drive(
    client: &reqwest::Client,
    addr: SocketAddr,
    shots: Arc<Vec<Shot>>,
    concurrency: usize,
    deadline: Duration,
) -> LoadResult {
    drive_at(client, addr, shots, concurrency, None, deadline).await
}

/// As [`drive`], shot `i` leaving no sooner than `i / rate` seconds after the start.
pub async fn drive_paced(
    client: &reqwest::Client,
    addr: SocketAddr,
    shots: Arc<Vec<Shot>>,
    concurrency: usize,
    rate: f64,
    deadline: Duration,
) -> LoadResult {
    drive_at(client, addr, shots, concurrency, Some(rate), deadline).await
}

async fn drive_at(
    client: &reqwest::Client,
    addr: SocketAddr,
    shots: Arc<Vec<Shot>>,
    concurrency: usize,
    rate: Option<f64>,
    deadline: Duration,
) -> LoadResult {
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..shots.len()).map(|_| AtomicU64::new(0)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, shots, next, errors, sent_at) = (
            client.clone(),
            shots.clone(),
            next.clone(),
            errors.clone(),
            sent_at.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(shots.len() / concurrency.max(1) + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= shots.len() || base.elapsed() > deadline {
                    break;
                }
                if let Some(rate) = rate {
                    let due = base + Duration::from_secs_f64(i as f64 / rate.max(1e-3));
                    tokio::time::sleep_until(due.into()).await;
                }
                let s = &shots[i];
                let t = Instant::now();
                sent_at[i].store((t - base).as_nanos().max(1) as u64, Ordering::Relaxed);
                let res = client
                    .post(format!("http://{addr}{}", s.path))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", &s.signature)
                    .body(s.body.clone())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap_or_default());
    }
    let elapsed = base.elapsed();
    latencies.sort();
    LoadResult {
        ok: latencies.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies,
        sent_at,
        base,
    }
}

/// The bare reference: checks the HMAC like the gate and answers 200; with `reply`, first
/// POSTs one reply per request to Graph (reqwest), as a gate without a store would; with
/// `durable`, first puts the body on disk (the durable floor).
#[derive(Clone)]
struct Bare {
    secrets: Arc<HashMap<String, (String, String, String)>>,
    reply: Option<(reqwest::Client, String)>,
    durable: Option<Arc<DurableLog>>,
}

/// The durable floor's store: bodies appended to one file, each request answered once an
/// `fdatasync` covers its body. A thread of its own syncs whatever was written since its last
/// sync, so concurrent requests share one sync, as the gate's group commits do.
pub struct DurableLog {
    file: Mutex<std::fs::File>,
    written: AtomicU64,
    synced: tokio::sync::watch::Sender<u64>,
    kick: std::sync::mpsc::SyncSender<()>,
}

impl DurableLog {
    /// Creates (or appends to) `path`; its sync thread ends with the log.
    pub fn open(path: &std::path::Path) -> std::io::Result<Arc<Self>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let sync = file.try_clone()?;
        let (kick, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let (synced, _) = tokio::sync::watch::channel(0u64);
        let log = Arc::new(DurableLog {
            file: Mutex::new(file),
            written: AtomicU64::new(0),
            synced,
            kick,
        });
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("bench-fsync".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    let Some(log) = weak.upgrade() else { break };
                    // Every body counted here was written before the sync starts.
                    let upto = log.written.load(Ordering::Acquire);
                    if sync.sync_data().is_err() {
                        break;
                    }
                    log.synced.send_replace(upto);
                }
            })?;
        Ok(log)
    }

    /// Appends `body` (length-prefixed) and returns once it is on disk.
    pub async fn append(&self, body: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mine = {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let mut rec = Vec::with_capacity(body.len() + 4);
            rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
            rec.extend_from_slice(body);
            f.write_all(&rec)?;
            self.written.fetch_add(1, Ordering::AcqRel) + 1
        };
        let mut synced = self.synced.subscribe();
        // A kick already queued starts a sync that will count this body too.
        let _ = self.kick.try_send(());
        synced
            .wait_for(|s| *s >= mine)
            .await
            .map(drop)
            .map_err(|_| std::io::Error::other("the sync thread stopped"))
    }
}

async fn bare_webhook(
    State(b): State<Bare>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some((secret, phone, token)) = b.secrets.get(&user) else {
        return StatusCode::NOT_FOUND;
    };
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if crate::whatsapp::verify_signature(secret.as_bytes(), &body, sig).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(log) = &b.durable
        && log.append(&body).await.is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some((client, graph)) = &b.reply {
        // The least a replying gate does: read who wrote, answer them.
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let m = &v["entry"][0]["changes"][0]["value"]["messages"][0];
        let to = m["from"].as_str().unwrap_or_default();
        let text = m["text"]["body"].as_str().unwrap_or_default();
        let reply = serde_json::json!({"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": to, "type": "text", "text": {"body": format!("You said: {text}")}});
        let sent = client
            .post(format!("{graph}/v23.0/{phone}/messages"))
            .bearer_auth(token)
            .json(&reply)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            _ => return StatusCode::BAD_GATEWAY,
        }
    }
    StatusCode::OK
}

/// Serves a bare reference on 127.0.0.1:0 until `cancel`.
pub async fn serve_bare(
    users: &[super::home::BenchUser],
    reply_to: Option<String>,
    durable: Option<Arc<DurableLog>>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let secrets = users
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                (u.secret.clone(), u.phone.clone(), u.token.clone()),
            )
        })
        .collect();
    let bare = Bare {
        secrets: Arc::new(secrets),
        reply: reply_to.map(|g| (client(256), g)),
        durable,
    };
    let app = Router::new()
        .route("/webhook/whatsapp/{user}", post(bare_webhook))
        .with_state(bare);
    serve(app, cancel).await
}

/// Serves `app` on 127.0.0.1:0 until `cancel`.
pub async fn serve(app: Router, cancel: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// A message Graph accepted: to whom, its text, when.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub to: String,
    pub text: String,
    pub at: Instant,
}

/// Replies the fake Cloud API accepted, in arrival order.
pub type Arrivals = Arc<Mutex<Vec<Arrival>>>;

/// Serves the fake Cloud API on 127.0.0.1:0, stamping every message it accepts.
pub async fn serve_graph(
    sim: &crate::graph::simulator::Simulator,
    arrivals: Arrivals,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = sim
        .router()
        .layer(axum::middleware::from_fn_with_state(arrivals, stamp));
    serve(app, cancel).await
}

async fn stamp(State(arrivals): State<Arrivals>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if res.status().is_success()
        && let Some(to) = v.get("to").and_then(|t| t.as_str())
    {
        let text = v["text"]["body"].as_str().unwrap_or_default().to_string();
        let a = Arrival {
            to: to.to_string(),
            text,
            at: Instant::now(),
        };
        arrivals.lock().unwrap_or_else(|p| p.into_inner()).push(a);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::DurableLog;

    /// The floor really keeps what it acks: every appended body is in the file, whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_durable_floor_keeps_every_body_it_acks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bodies.log");
        let log = DurableLog::open(&path).unwrap();
        let bodies: Vec<Vec<u8>> = (0..50).map(|i| format!("body {i}").into_bytes()).collect();
        let mut acks = Vec::new();
        for b in bodies.clone() {
            let log = log.clone();
            acks.push(tokio::spawn(async move { log.append(&b).await }));
        }
        for a in acks {
            a.await.unwrap().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut found = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            found.push(bytes[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        found.sort();
        let mut want = bodies;
        want.sort();
        assert_eq!(found, want);
    }
}
