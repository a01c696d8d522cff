//! The operator's endpoints: GET /healthz (liveness), GET /metrics (Prometheus) and GET /status
//! (the status page), and the webhook metrics layer. /metrics and /status answer only requests
//! from loopback that no proxy relayed; any other request needs the admin token (gate.yaml
//! `status: { admin_token_env: NAME }`) as `Authorization: Bearer …`, else 403. /healthz
//! answers everyone, but tells the users served and their tokens' health only to those.

use crate::domain::Secret;
use crate::domain::{Event, EventKind};
use crate::rules::RuleRegistry;
use crate::store::{IngestOutcome, Store};
use crate::users::Users;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// What the operator endpoints share; cheap handles.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub users: Users,
    pub registry: RuleRegistry,
    /// Users that are not served, and why.
    pub skipped: Arc<Vec<(String, String)>>,
    /// Lets requests from elsewhere than loopback in.
    pub admin_token: Option<Arc<Secret<String>>>,
}

/// GET /healthz, GET /metrics and GET /status.
pub fn routes(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// Headers a reverse proxy adds: a request carrying one came from elsewhere, even though its
/// TCP peer (the proxy) is on loopback.
const RELAYED: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether a request may see the operator endpoints: from loopback and not relayed, or with
/// the admin token.
pub fn allowed(peer: IpAddr, headers: &HeaderMap, admin_token: Option<&Secret<String>>) -> bool {
    let relayed = RELAYED.iter().any(|h| headers.contains_key(*h));
    if peer.is_loopback() && !relayed {
        return true;
    }
    let Some(token) = admin_token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| super::same_secret(given.trim(), token.expose()))
}

fn refuse() -> Response {
    (
        StatusCode::FORBIDDEN,
        "forbidden: this page answers on loopback only, or with the admin token (gate.yaml status.admin_token_env) as Authorization: Bearer\n",
    )
        .into_response()
}

/// A layer over every route: the built-in simulator's own pages (`/simulator/_sim/…`: the log
/// of every message the gate sent, and downloads of contacts' media) answer only whom /status
/// answers (loopback not relayed, or the admin token); its Graph endpoints are left as they are.
pub async fn simulator_pages_for_operators(
    State(admin_token): State<Option<Arc<Secret<String>>>>,
    req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/simulator/_sim") {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(ip) if allowed(ip, req.headers(), admin_token.as_deref()) => next.run(req).await,
        _ => refuse(),
    }
}

/// Liveness for anyone (a load balancer's or a container's probe): `{"status":"ok"}`. For
/// the operator (as /status: loopback not relayed, or the admin token) also the users served
/// and each one's token health (a token Graph rejected with code 190 shows here until new
/// credentials replace it).
async fn healthz(
    State(st): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<Value> {
    if !allowed(peer.ip(), &headers, st.admin_token.as_deref()) {
        return Json(json!({ "status": "ok" }));
    }
    let users: Vec<String> = st.users.iter().map(|(n, _)| n.clone()).collect();
    let mut tokens = serde_json::Map::new();
    for (name, u) in st.users.iter() {
        let (user, fp) = (
            name.clone(),
            crate::sender::fingerprint(u.creds().access_token.expose()),
        );
        let invalid = st
            .store
            .call(move |s| s.token_invalid(&user, &fp))
            .await
            .ok()
            .flatten();
        let health = match invalid {
            None => json!({"state": "ok"}),
            Some((reason, at)) => json!({"state": "invalid", "reason": reason, "since_ms": at}),
        };
        tokens.insert(name.clone(), health);
    }
    Json(json!({ "status": "ok", "users": users, "tokens": tokens }))
}

async fn metrics(
    State(st): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !allowed(peer.ip(), &headers, st.admin_token.as_deref()) {
        return refuse();
    }
    let body = crate::metrics::render(&st.store, &st.users).await;
    // Prometheus asks for OpenMetrics; anything else gets the classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
    } else {
        let text = crate::metrics::to_prometheus_text(&body);
        (
            [(header::CONTENT_TYPE, crate::metrics::PROMETHEUS_TEXT)],
            text,
        )
            .into_response()
    }
}

async fn status(
    State(st): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !allowed(peer.ip(), &headers, st.admin_token.as_deref()) {
        return refuse();
    }
    let rules = crate::status::rules_of(&st.registry.snapshot());
    let (users, skipped) = (st.users.clone(), st.skipped.clone());
    let now = chrono::Utc::now();
    let report = st
        .store
        .call(move |s| crate::status::gather(s, &users, &skipped, &rules, now))
        .await;
    match report {
        Ok(r) => Html(super::status::page(&r)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status page: cannot read the store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, super::RETRY_AFTER_SECS)],
                "the store cannot be read right now\n",
            )
                .into_response()
        }
    }
}

/// Meta's webhook field of an event kind (messages and statuses both come as `messages`).
fn field_of(kind: &EventKind) -> &str {
    match kind {
        EventKind::Message | EventKind::Status => "messages",
        EventKind::Field(f) => f,
    }
}

/// The field of a webhook's first event (`none` for a body without events), and the message
/// id of its first event that has one, for the log line.
pub(super) fn first_field(items: &[(Event, crate::store::Fate)]) -> (String, String) {
    let field = items
        .first()
        .map_or("none", |(e, _)| field_of(&e.kind))
        .to_string();
    let id = items
        .iter()
        .find_map(|(e, _)| e.wamid.clone())
        .unwrap_or_default();
    (field, id)
}

/// Counts a committed webhook: `stored` if it brought new events, `foreign` if it held only
/// another number's, `duplicate` if everything was seen before, `empty` if it held none.
pub(super) fn webhook_committed(user: &str, field: &str, o: &IngestOutcome) {
    let outcome = if o.new_events > 0 {
        "stored"
    } else if o.foreign > 0 {
        "foreign"
    } else if o.duplicates > 0 {
        "duplicate"
    } else {
        "empty"
    };
    crate::metrics::webhook(user, field, outcome);
}

/// A layer over every route: times webhook POSTs (the ack latency) and counts the refused
/// ones by status (the committed ones are counted where they commit, with their field).
pub async fn webhook_metrics(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if req.method() != Method::POST || !path.starts_with("/webhook/whatsapp") {
        return next.run(req).await;
    }
    let t0 = Instant::now();
    let user = path
        .strip_prefix("/webhook/whatsapp/")
        .filter(|u| !u.is_empty())
        .map_or("(shared)".to_string(), str::to_string);
    let res = next.run(req).await;
    crate::metrics::ack(t0.elapsed());
    let outcome = match res.status() {
        s if s.is_success() => None,
        StatusCode::UNAUTHORIZED => Some("unauthorized"),
        StatusCode::BAD_REQUEST => Some("bad_request"),
        StatusCode::NOT_FOUND => Some("unknown_user"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        StatusCode::REQUEST_TIMEOUT => Some("timeout"),
        StatusCode::SERVICE_UNAVAILABLE => Some("unavailable"),
        _ => Some("error"),
    };
    if let Some(outcome) = outcome {
        // Anyone can post to any path: only a user the handler found (it refuses a bad
        // signature, body or commit, and a body too large or too slow, only after that) may
        // become a label.
        let known = matches!(
            outcome,
            "unauthorized" | "bad_request" | "unavailable" | "too_large" | "timeout"
        );
        let user = if known { &user } else { "(unknown)" };
        crate::metrics::webhook(user, "unknown", outcome);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::allowed;
    use crate::domain::Secret;
    use axum::http::HeaderMap;
    use std::net::IpAddr;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_is_let_in_and_elsewhere_needs_the_token() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let local6: IpAddr = "::1".parse().unwrap();
        let far: IpAddr = "203.0.113.7".parse().unwrap();
        let token = Secret::new("s3cret-admin".to_string());
        let bearer = headers(&[("authorization", "Bearer s3cret-admin")]);
        assert!(allowed(local, &HeaderMap::new(), None));
        assert!(allowed(local6, &HeaderMap::new(), None));
        assert!(!allowed(far, &HeaderMap::new(), None));
        assert!(!allowed(far, &bearer, None), "no token configured: never");
        assert!(!allowed(far, &HeaderMap::new(), Some(&token)));
        assert!(allowed(far, &bearer, Some(&token)));
        let wrong = headers(&[("authorization", "Bearer s3cret-admiN")]);
        assert!(!allowed(far, &wrong, Some(&token)));
        let relayed = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert!(
            !allowed(local, &relayed, None),
            "relayed by a proxy on loopback"
        );
        let mut both = relayed.clone();
        both.insert("authorization", "Bearer s3cret-admin".parse().unwrap());
        assert!(allowed(local, &both, Some(&token)));
    }
}
