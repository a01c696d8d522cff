//! The HTTP edge (axum): Meta's verification handshake and signed webhooks in (the operator's
//! endpoints, /healthz included, are in [`ops`]).
//! A webhook is verified over its raw bytes, parsed, committed to the store, and only then
//! answered 200. One place maps errors to statuses; clients get a short reason.

use crate::config::UserConfig;
use crate::domain::{Event, EventKind};
use crate::graph::simulator::Simulator;
use crate::rules::RuleRegistry;
use crate::store::{Fate, IngestOutcome, Store};
use crate::users::{UserRuntime, Users};
use crate::whatsapp::{parse_webhook, verify_signature};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use body::WebhookBody;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

pub mod body;
pub mod ops;
pub mod serve;
mod shared;
pub mod status;

/// What the handlers share, behind one `Arc`: axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The handles the handlers share.
pub struct AppParts {
    pub store: Store,
    pub users: Users,
    /// The live rules: an event no rule wants is stored done, not queued for dispatch.
    pub registry: RuleRegistry,
    /// Woken after every commit of new events.
    pub dispatch_wake: Arc<Notify>,
    /// Woken when a webhook brought media to fetch.
    pub media_wake: Arc<Notify>,
    /// How many refused webhooks each user's audit log took this minute (a flood of forged
    /// posts must not flood the log): at most [`REJECTIONS_PER_MINUTE`] entries, then a count.
    pub rejections: Arc<std::sync::Mutex<HashMap<String, RejectionWindow>>>,
}

/// Refused webhooks audited one by one per user and minute; the rest are counted into the
/// next entry.
pub const REJECTIONS_PER_MINUTE: u32 = 60;

/// One user's refused webhooks in the current minute.
#[derive(Debug, Default)]
pub struct RejectionWindow {
    started: Option<std::time::Instant>,
    audited: u32,
    /// Refusals not audited one by one since the last entry.
    pub suppressed: u64,
}

/// Why a request was refused; the one place that picks statuses.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("unknown user")]
    UnknownUser,
    #[error("{0}")]
    NoRoute(&'static str),
    #[error("verification failed")]
    Forbidden,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the store cannot commit right now; retry later")]
    Unavailable,
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("the request body is larger than the gate accepts (server.max_body_bytes)")]
    TooLarge,
}

/// What a 503 asks the client to wait before trying again, in seconds (Meta retries anyway;
/// other clients and proxies learn that the refusal is temporary).
pub const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::UnknownUser | HttpError::NoRoute(_) => StatusCode::NOT_FOUND,
            HttpError::Forbidden => StatusCode::FORBIDDEN,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Timeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let body = Json(json!({ "error": self.to_string() }));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return (status, [(header::RETRY_AFTER, RETRY_AFTER_SECS)], body).into_response();
        }
        (status, body).into_response()
    }
}

/// The gate's routes; `simulator` is mounted at `/simulator` when the home asks for it.
pub fn router(state: AppState, max_body_bytes: usize, simulator: Option<&Simulator>) -> Router {
    let mut app = Router::new()
        .route("/webhook/whatsapp/{user}", get(handshake).post(webhook))
        .route(
            "/webhook/whatsapp",
            get(shared::handshake).post(shared::webhook),
        )
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    if let Some(sim) = simulator {
        app = app.nest("/simulator", sim.router());
    }
    app
}

/// Any other path: a JSON 404 like every other refusal (axum's own is empty). A webhook URL
/// with a trailing slash or an extra segment is told the callback URL's form.
async fn no_route(uri: axum::http::Uri) -> HttpError {
    if uri.path().starts_with("/webhook/") {
        HttpError::NoRoute(
            "no such webhook endpoint: a user's callback URL is /webhook/whatsapp/USER (no trailing slash), the shared one /webhook/whatsapp",
        )
    } else {
        HttpError::NoRoute("no such endpoint")
    }
}

/// Compares two secrets without leaking where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of lengths too.
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// GET /webhook/whatsapp/{user}: Meta verifying a user's own callback URL.
async fn handshake(
    State(st): State<AppState>,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<String, HttpError> {
    let u = st.users.get(&user).ok_or(HttpError::UnknownUser)?;
    match verify_handshake(&q, [u]) {
        Some((_, challenge)) => {
            tracing::info!(user = %user, "webhook verification handshake accepted");
            Ok(challenge)
        }
        None => {
            tracing::warn!(user = %user, "webhook verification handshake refused");
            Err(HttpError::Forbidden)
        }
    }
}

/// Meta's verification handshake: `hub.mode=subscribe`, a `hub.challenge`, and a
/// `hub.verify_token` equal to the verify token of one of `users` give that user and the
/// challenge to echo. Every candidate's token is compared, each in constant time, so the time
/// taken tells neither whether nor whose token matched. The token itself is never logged.
fn verify_handshake<'a>(
    q: &HashMap<String, String>,
    users: impl IntoIterator<Item = &'a Arc<UserRuntime>>,
) -> Option<(&'a Arc<UserRuntime>, String)> {
    let given = q.get("hub.verify_token");
    let mut matched = None;
    for u in users {
        let same = given.is_some_and(|t| same_secret(t, u.creds().webhook_verify_token.expose()));
        if same && matched.is_none() {
            matched = Some(u);
        }
    }
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    match (mode_ok, matched, q.get("hub.challenge")) {
        (true, Some(u), Some(challenge)) => Some((u, challenge.clone())),
        _ => None,
    }
}

async fn webhook(
    State(st): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Result<WebhookBody, HttpError>,
) -> Result<Json<Value>, HttpError> {
    let u = st.users.get(&user).cloned().ok_or(HttpError::UnknownUser)?;
    // The user first: a body refused (too large, too slow) is then the user's, in /metrics too.
    let WebhookBody(body) = body?;
    let checked = check_signature(&u, &headers, &body).and_then(|()| parse(&user, &body));
    let events = match checked {
        Ok(events) => events,
        Err(e) => return Err(audit_rejection(&st, &user, e, body.len()).await),
    };
    // Another number's or account's events are kept, never dispatched as this user's.
    let items = fates(
        &st,
        &u,
        events.into_iter().map(|e| {
            let owned = owns(&u.config, &e);
            (e, owned)
        }),
    );
    let outcome = commit(&st, &u, body, items).await?;
    Ok(Json(outcome_json(&[(user, outcome)])))
}

/// Whether `e` is `u`'s own traffic (least privilege: only then is it dispatched as `u`).
/// A change's `metadata.phone_number_id` decides. Fields that carry no metadata (template,
/// account and quality updates) name only the WhatsApp Business Account they concern, as
/// `entry.id`: theirs must be `u`'s `business_account_id`. A message or status without a
/// phone number id (missing, empty or not an id), or an event naming neither, is no one's.
fn owns(u: &UserConfig, e: &Event) -> bool {
    match (&e.phone_number_id, &e.kind) {
        (Some(p), _) => *p == u.phone_number_id,
        (None, EventKind::Message | EventKind::Status) => false,
        (None, EventKind::Field(_)) => {
            e.waba_id.is_some() && e.waba_id.as_deref() == u.business_account_id.as_deref()
        }
    }
}

/// Records a refused webhook in `user`'s audit log (why, and its size; never its content) and
/// gives the error back.
async fn audit_rejection(st: &AppState, user: &str, e: HttpError, bytes: usize) -> HttpError {
    let (status, reason) = match &e {
        HttpError::Unauthorized(r) => (401, r.clone()),
        HttpError::BadRequest(r) => (400, r.clone()),
        other => (0, format!("{other:?}")),
    };
    let suppressed = {
        let mut all = st.rejections.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(user.to_string()).or_default();
        let now = std::time::Instant::now();
        if w.started
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60))
        {
            w.started = Some(now);
            w.audited = 0;
        }
        if w.audited >= REJECTIONS_PER_MINUTE {
            w.suppressed += 1;
            return e;
        }
        w.audited += 1;
        std::mem::take(&mut w.suppressed)
    };
    let mut details = json!({"status": status, "reason": reason, "bytes": bytes});
    if suppressed > 0 {
        details["unaudited_before"] = suppressed.into();
    }
    let user = user.to_string();
    if let Err(err) = st
        .store
        .call(move |s| s.audit(&user, "webhook.rejected", &details))
        .await
    {
        tracing::error!(error = %err, "cannot audit a refused webhook");
    }
    e
}

fn check_signature(u: &UserRuntime, headers: &HeaderMap, body: &Bytes) -> Result<(), HttpError> {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    verify_signature(u.creds().app_secret.expose().as_bytes(), body, sig).map_err(|e| {
        tracing::warn!(user = %u.config.id, reason = %e, bytes = body.len(), "webhook refused");
        HttpError::Unauthorized(e.to_string())
    })
}

fn parse(user: &str, body: &Bytes) -> Result<Vec<Event>, HttpError> {
    parse_webhook(body).map_err(|e| {
        tracing::warn!(user = %user, reason = %e, "webhook body is not a JSON object");
        HttpError::BadRequest(e.to_string())
    })
}

/// What becomes of each event (with whether it is `u`'s): another number's is kept as
/// foreign; `u`'s is dispatched only if a live rule, or `mark_read`, wants its kind.
fn fates(
    st: &AppState,
    u: &UserRuntime,
    events: impl Iterator<Item = (Event, bool)>,
) -> Vec<(Event, Fate)> {
    let rules = st.registry.snapshot();
    let user = u.config.id.as_str();
    events
        .map(|(e, owned)| {
            let fate = if !owned {
                Fate::Foreign
            } else if (u.config.mark_read && e.kind.as_str() == "message")
                || rules.wants(user, e.kind.as_str())
            {
                Fate::Dispatch
            } else {
                Fate::Keep
            };
            (e, fate)
        })
        .collect()
}

/// Commits a body and its events for one user, then wakes the dispatcher.
async fn commit(
    st: &AppState,
    u: &UserRuntime,
    body: Bytes,
    items: Vec<(Event, Fate)>,
) -> Result<IngestOutcome, HttpError> {
    let uid = u.config.id.clone();
    let (field, message_id) = ops::first_field(&items);
    let outcome = st.store.ingest(uid, body, items).await.map_err(|e| {
        tracing::error!(user = %u.config.id, error = %e, "webhook not committed; answering 503");
        HttpError::Unavailable
    })?;
    if outcome.to_dispatch > 0 {
        st.dispatch_wake.notify_one();
    }
    if outcome.new_media > 0 {
        st.media_wake.notify_one();
    }
    if outcome.foreign > 0 {
        tracing::warn!(user = %u.config.id, foreign = outcome.foreign, "webhook held events for another phone number; kept, not dispatched");
    }
    ops::webhook_committed(u.config.id.as_str(), &field, &outcome);
    tracing::info!(user = %u.config.id, message_id = %message_id, field = %field, new = outcome.new_events, duplicates = outcome.duplicates, "webhook committed");
    Ok(outcome)
}

fn outcome_json(outcomes: &[(String, IngestOutcome)]) -> Value {
    let sum = |f: fn(&IngestOutcome) -> usize| outcomes.iter().map(|(_, o)| f(o)).sum::<usize>();
    json!({
        "stored": sum(|o| o.new_events),
        "to_dispatch": sum(|o| o.to_dispatch),
        "duplicates": sum(|o| o.duplicates),
        "foreign": sum(|o| o.foreign),
        "users": outcomes.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
    })
}
