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
/// POSTs one reply per request to Graph (reqwest), as a gate without a store would.
#[derive(Clone)]
struct Bare {
    secrets: Arc<HashMap<String, (String, String, String)>>,
    reply: Option<(reqwest::Client, String)>,
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
