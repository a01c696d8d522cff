//! The HTTP edge (axum): Meta's verification handshake, signed webhooks in, /healthz.
//! A webhook is verified over its raw bytes, parsed, committed to the store, and only then
//! answered 200. One place maps errors to statuses; clients get a short reason.

use crate::domain::UserId;
use crate::graph::simulator::Simulator;
use crate::store::Store;
use crate::users::Users;
use crate::whatsapp::{parse_webhook, verify_signature};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the handlers share; cheap handles.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub users: Users,
    /// Woken after every commit of new events.
    pub dispatch_wake: Arc<Notify>,
}

/// Why a request was refused; the one place that picks statuses.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("unknown user")]
    UnknownUser,
    #[error("verification failed")]
    Forbidden,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the store cannot commit right now; retry later")]
    Unavailable,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::UnknownUser => StatusCode::NOT_FOUND,
            HttpError::Forbidden => StatusCode::FORBIDDEN,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The gate's routes; `simulator` is mounted at `/simulator` when the home asks for it.
pub fn router(state: AppState, max_body_bytes: usize, simulator: Option<&Simulator>) -> Router {
    let mut app = Router::new()
        .route("/webhook/whatsapp/{user}", get(handshake).post(webhook))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    if let Some(sim) = simulator {
        app = app.nest("/simulator", sim.router());
    }
    app
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

async fn handshake(
    State(st): State<AppState>,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<String, HttpError> {
    let u = st.users.get(&user).ok_or(HttpError::UnknownUser)?;
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    let token_ok = q
        .get("hub.verify_token")
        .is_some_and(|t| same_secret(t, u.creds.webhook_verify_token.expose()));
    match (mode_ok, token_ok, q.get("hub.challenge")) {
        (true, true, Some(challenge)) => {
            tracing::info!(user = %user, "webhook verification handshake accepted");
            Ok(challenge.clone())
        }
        _ => {
            tracing::warn!(user = %user, "webhook verification handshake refused");
            Err(HttpError::Forbidden)
        }
    }
}

async fn webhook(
    State(st): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    let u = st.users.get(&user).cloned().ok_or(HttpError::UnknownUser)?;
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = verify_signature(u.creds.app_secret.expose().as_bytes(), &body, sig) {
        tracing::warn!(user = %user, reason = %e, bytes = body.len(), "webhook refused");
        return Err(HttpError::Unauthorized(e.to_string()));
    }
    let events = parse_webhook(&body).map_err(|e| {
        tracing::warn!(user = %user, reason = %e, "signed webhook is not a JSON object");
        HttpError::BadRequest(e.to_string())
    })?;
    let uid = UserId::parse(&user).map_err(|_| HttpError::UnknownUser)?;
    let phone = u.config.phone_number_id.clone();
    let outcome = st
        .store
        .call(move |s| s.ingest(&uid, &phone, &body, &events))
        .await
        .map_err(|e| {
            tracing::error!(user = %user, error = %e, "webhook not committed; answering 503");
            HttpError::Unavailable
        })?;
    if outcome.new_events > 0 {
        st.dispatch_wake.notify_one();
    }
    if outcome.foreign > 0 {
        tracing::warn!(user = %user, foreign = outcome.foreign, "webhook held events for another phone number; kept, not dispatched");
    }
    tracing::info!(user = %user, new = outcome.new_events, duplicates = outcome.duplicates, "webhook committed");
    Ok(Json(json!({
        "stored": outcome.new_events,
        "duplicates": outcome.duplicates,
        "foreign": outcome.foreign,
    })))
}

async fn healthz(State(st): State<AppState>) -> Json<serde_json::Value> {
    let users: Vec<&String> = st.users.iter().map(|(n, _)| n).collect();
    Json(json!({ "status": "ok", "users": users }))
}
