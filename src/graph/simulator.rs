//! The fake Cloud API: answers `POST /{version}/{phone_number_id}/messages` as Meta does
//! (shapes from shared/reference), checks the bearer token and the request body, logs what it
//! received, and can be told to fail the next requests (status, Graph error code, delay).
//! `graph.base_url: simulator` mounts it inside the gate at `/simulator`; tests serve it
//! alone on 127.0.0.1:0.

use crate::domain::Secret;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[path = "simulator_groups.rs"]
mod groups;
pub use groups::{GroupCall, SimGroup};
#[path = "simulator_templates.rs"]
mod templates;
pub use templates::{SimTemplate, TEMPLATES_FILE};

/// One request the simulator received, and what it answered.
#[derive(Clone, Debug)]
pub struct SimRequest {
    pub phone_number_id: String,
    pub version: String,
    /// The bearer token sent, if any.
    pub bearer: Option<Secret<String>>,
    pub body: Value,
    pub status: u16,
    /// The wamid given to an accepted message.
    pub wamid: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A planned answer for the next request, instead of the normal one.
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP status to answer; 0 answers normally (after `delay`).
    pub status: u16,
    /// The Graph error object to put under `error`, if any.
    pub error: Option<Value>,
    /// Wait this long before answering (longer than the client timeout = a timeout).
    pub delay: Duration,
    /// A Retry-After header, in seconds.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// A bare HTTP error, e.g. 500 or 503.
    pub fn http(status: u16) -> Fault {
        let error = json!({"message": "An unexpected error has occurred. Please retry your request later.",
                           "type": "OAuthException", "code": 2, "is_transient": true,
                           "fbtrace_id": "AsimFault"});
        Fault {
            status,
            error: Some(error),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    /// A Graph error with `code` (e.g. 131047, 130429, 190) and HTTP `status`.
    pub fn graph(status: u16, code: i64, message: &str) -> Fault {
        let error = json!({"message": format!("(#{code}) {message}"), "type": "OAuthException",
                           "code": code, "error_data": {"messaging_product": "whatsapp", "details": message},
                           "fbtrace_id": "AsimFault"});
        Fault {
            status,
            error: Some(error),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    /// A normal answer that arrives only after `delay`.
    pub fn delay(delay: Duration) -> Fault {
        Fault {
            status: 0,
            error: None,
            delay,
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    media: Mutex<HashMap<String, (Vec<u8>, String)>>,
    requests: Mutex<Vec<SimRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    tokens: Mutex<HashMap<String, Secret<String>>>,
    /// Tokens an exchange replaced, and their number: still valid until they expire.
    retired: Mutex<HashMap<String, String>>,
    /// Token expiry (unix s; 0 never) for debug_token; tokens not listed never expire.
    expiry: Mutex<HashMap<String, i64>>,
    /// Phone numbers by id: what `GET /{phone_number_id}` answers.
    phones: Mutex<HashMap<String, Value>>,
    seq: AtomicU64,
    received: Notify,
    groups: Mutex<groups::GroupState>,
    /// The token the gate now uses for a phone number, asked on every request (the built-in
    /// simulator follows credentials changed while the gate runs).
    live: Mutex<Option<LiveTokens>>,
    /// The templates it knows (`None`: it takes any).
    templates: Mutex<templates::Templates>,
}

/// Which token the gate now uses for a phone number id.
pub type LiveTokens = Arc<dyn Fn(&str) -> Option<Secret<String>> + Send + Sync>;

/// The fake Cloud API. Clones share one log and one fault queue.
#[derive(Clone, Default)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Simulator {
    /// A simulator that accepts any non-empty token until [`Simulator::expect_token`] is used.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, requests for `phone_number_id` must carry `token` (else 401, code 190).
    pub fn expect_token(&self, phone_number_id: &str, token: Secret<String>) {
        lock(&self.inner.tokens).insert(phone_number_id.to_string(), token);
    }

    /// From now on, also accepts for a phone number the token `current` gives for it at the
    /// time of each request: the built-in simulator (`graph.base_url: simulator`) follows the
    /// credentials the gate swaps in while it runs (`wagate creds set`, a renewed token), as
    /// Meta accepts any valid token of the number. The tokens expected before stay accepted.
    pub fn follow_tokens(
        &self,
        current: impl Fn(&str) -> Option<Secret<String>> + Send + Sync + 'static,
    ) {
        *lock(&self.inner.live) = Some(Arc::new(current));
    }

    /// Describes a phone number for `GET /{version}/{phone_number_id}` (a number with an
    /// expected token but no description gets a plain one).
    pub fn add_phone_number(
        &self,
        phone_number_id: &str,
        display_phone_number: &str,
        verified_name: &str,
    ) {
        lock(&self.inner.phones).insert(
            phone_number_id.to_string(),
            json!({
                "display_phone_number": display_phone_number,
                "verified_name": verified_name,
                "quality_rating": "GREEN",
                "code_verification_status": "VERIFIED",
                "name_status": "APPROVED",
                "throughput": {"level": "STANDARD"},
                "id": phone_number_id,
            }),
        );
    }

    /// Sets when `token` expires (unix seconds; 0: never), for debug_token and the exchange.
    pub fn set_token_expiry(&self, token: &str, expires_at: i64) {
        lock(&self.inner.expiry).insert(token.to_string(), expires_at);
    }

    /// The token the simulator now expects for `phone_number_id`, if any (after an exchange,
    /// the new one; the old one stays valid until it expires, as at Meta).
    pub fn expected_token(&self, phone_number_id: &str) -> Option<Secret<String>> {
        lock(&self.inner.tokens).get(phone_number_id).cloned()
    }

    /// Makes a media object downloadable, as if a contact had sent it.
    pub fn add_media(&self, media_id: &str, bytes: Vec<u8>, mime_type: &str) {
        lock(&self.inner.media).insert(media_id.to_string(), (bytes, mime_type.to_string()));
    }

    /// Queues a fault for the next request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.inner.faults).push_back(fault);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Waits until at least `n` requests were received or `timeout` passed; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SimRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.received.notified();
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }

    /// The routes, to serve alone or nest under `/simulator`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{phone_number_id}/messages", post(messages))
            .route("/{version}/{phone_number_id}/media", post(upload_media))
            .route("/{version}/debug_token", get(debug_token))
            .route("/{version}/oauth/access_token", get(exchange_token))
            .route(
                "/{version}/{object_id}",
                get(object).delete(groups::delete_object),
            )
            .merge(groups::routes())
            .route("/_sim/requests", get(list_requests))
            .route("/_sim/media/{media_id}", get(media_download))
            .with_state(self.clone())
    }

    /// Serves the simulator on `listener` until `cancel` fires.
    pub async fn serve(self, listener: tokio::net::TcpListener, cancel: CancellationToken) {
        let app = self.router();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
                                "fbtrace_id": "AsimCheck"}});
    (status, Json(body)).into_response()
}

async fn messages(
    State(sim): State<Simulator>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let bearer = bearer(&headers).map(|t| Secret::new(t.to_string()));
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = lock(&sim.inner.faults).pop_front();
    let delay = fault.as_ref().map(|f| f.delay).unwrap_or_default();
    // The answer is decided, and the request recorded, before any delay: a client that gives
    // up (or dies) while waiting has still reached "Meta", as in real life.
    let (resp, status, wamid) = match fault.filter(|f| f.status != 0) {
        Some(f) => {
            let mut r = (
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(json!({ "error": f.error })),
            )
                .into_response();
            if let Some(s) = f.retry_after {
                r.headers_mut().insert("retry-after", s.into());
            }
            (r, f.status, None)
        }
        None => answer(&sim, &phone_number_id, bearer.as_ref(), &parsed),
    };
    let field = |p: &str| {
        parsed
            .pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (to, msg_type, text) = (field("/to"), field("/type"), field("/text/body"));
    tracing::info!(
        target: "wagate::simulator",
        phone_number_id = %phone_number_id,
        to = %crate::terminal::one_line(&to),
        r#type = %crate::terminal::one_line(&msg_type),
        text = %crate::terminal::one_line(&text),
        status,
        "simulated Cloud API received a message"
    );
    lock(&sim.inner.requests).push(SimRequest {
        phone_number_id,
        version,
        bearer,
        body: parsed,
        status,
        wamid,
        at: std::time::Instant::now(),
    });
    sim.inner.received.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    resp
}

/// The normal answer: checks as Meta does, then accepts with a new wamid.
fn answer(
    sim: &Simulator,
    phone_number_id: &str,
    bearer: Option<&Secret<String>>,
    body: &Value,
) -> (Response, u16, Option<String>) {
    let reject = |status: StatusCode, code: i64, msg: &str| {
        (graph_error(status, code, msg), status.as_u16(), None)
    };
    let Some(token) = bearer.filter(|t| !t.expose().is_empty()) else {
        return reject(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        );
    };
    if lock(&sim.inner.tokens).contains_key(phone_number_id)
        && !accepts(sim, phone_number_id, token.expose())
    {
        return reject(
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: The session is invalid.",
        );
    }
    if let Err(msg) = check_body(body) {
        return reject(StatusCode::BAD_REQUEST, 100, &msg);
    }
    if let Some((code, msg)) = templates::refuse_template(sim, body) {
        return reject(StatusCode::BAD_REQUEST, code, &msg);
    }
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return (
            (StatusCode::OK, Json(json!({"success": true}))).into_response(),
            200,
            None,
        );
    }
    let n = sim.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let wamid = format!("wamid.SIM{phone_number_id}{n:08}");
    let input = body
        .get("to")
        .or_else(|| body.get("recipient"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let wa_id: String = input.chars().filter(char::is_ascii_digit).collect();
    let resp = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": input, "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    });
    (
        (StatusCode::OK, Json(resp)).into_response(),
        200,
        Some(wamid),
    )
}

const TYPES: &[&str] = &[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "template",
    "reaction",
];

/// The checks Graph makes before accepting a message (shared/reference §1).
pub fn check_body(body: &Value) -> Result<(), String> {
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return Err("(#100) The parameter messaging_product is required.".into());
    }
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return match body.get("message_id").and_then(Value::as_str) {
            Some(_) => Ok(()),
            None => Err("(#100) The parameter message_id is required.".into()),
        };
    }
    let to = body
        .get("to")
        .or_else(|| body.get("recipient"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if to.trim().is_empty() {
        return Err("(#100) The parameter to is required.".into());
    }
    let t = body.get("type").and_then(Value::as_str).unwrap_or("text");
    if !TYPES.contains(&t) {
        return Err(format!(
            "(#100) Param type must be one of {{{}}} - got \"{t}\".",
            TYPES.join(", ")
        ));
    }
    let Some(obj) = body.get(t) else {
        return Err(format!("(#100) The parameter {t} is required."));
    };
    if t == "text" {
        let text = obj.get("body").and_then(Value::as_str).unwrap_or("");
        if text.is_empty() {
            return Err("(#100) The parameter text['body'] is required.".into());
        }
        if text.chars().count() > 4096 {
            return Err("(#100) Param text['body'] must be at most 4096 characters long.".into());
        }
    }
    Ok(())
}

/// Takes the next queued fault, if any, after its delay: `Some(response)` to answer with.
async fn take_fault(sim: &Simulator) -> Option<Response> {
    let fault = lock(&sim.inner.faults).pop_front()?;
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    (fault.status != 0).then(|| {
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": fault.error }))).into_response()
    })
}

/// The bearer token of a request, if it has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn bearer_ok(sim: &Simulator, headers: &HeaderMap) -> bool {
    let Some(token) = bearer(headers).filter(|t| !t.is_empty()) else {
        return false;
    };
    token_known(sim, token)
}

/// What both media endpoints answer before looking at the media: a queued fault, or 401
/// (code 190) without a valid bearer token.
async fn refuse_media(sim: &Simulator, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = take_fault(sim).await {
        return Some(r);
    }
    (!bearer_ok(sim, headers))
        .then(|| graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token."))
}

/// GET /{version}/{object_id}: a phone number's description, or a media object's URL.
async fn object(
    State(sim): State<Simulator>,
    Path((version, object_id)): Path<(String, String)>,
    uri: axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Response {
    if lock(&sim.inner.groups)
        .groups
        .iter()
        .any(|g| g.id == object_id)
    {
        return groups::get_object(State(sim), Path((version, object_id)), headers).await;
    }
    let known_phone = lock(&sim.inner.phones).contains_key(&object_id)
        || lock(&sim.inner.tokens).contains_key(&object_id);
    if known_phone {
        return phone_number(&sim, &object_id, &headers).await;
    }
    media_info(&sim, &object_id, &uri, &headers).await
}

/// GET /{version}/{phone_number_id}: what Graph knows of the number, for its own token only.
async fn phone_number(sim: &Simulator, id: &str, headers: &HeaderMap) -> Response {
    if let Some(r) = take_fault(sim).await {
        return r;
    }
    let bearer = bearer(headers).unwrap_or("");
    if bearer.is_empty() || !accepts(sim, id, bearer) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: The session is invalid.",
        );
    }
    let info = lock(&sim.inner.phones).get(id).cloned().unwrap_or_else(|| {
        json!({"display_phone_number": "+1 555-0100", "verified_name": "Simulated business",
               "quality_rating": "GREEN", "code_verification_status": "VERIFIED",
               "name_status": "APPROVED", "throughput": {"level": "STANDARD"}, "id": id})
    });
    Json(info).into_response()
}

/// Whether the simulator takes `token` for any number (any non-empty one until tokens are
/// expected): the expected tokens, and exchanged ones until they expire.
fn token_known(sim: &Simulator, token: &str) -> bool {
    let tokens = lock(&sim.inner.tokens);
    !token.is_empty()
        && (tokens.is_empty()
            || tokens.values().any(|t| t.expose() == token)
            || tokens.keys().any(|phone| is_live(sim, phone, token))
            || retired_ok(sim, token))
}

/// Whether `token` is the one the gate now uses for `phone_number_id`
/// ([`Simulator::follow_tokens`]).
fn is_live(sim: &Simulator, phone_number_id: &str, token: &str) -> bool {
    let live = lock(&sim.inner.live).clone();
    live.and_then(|current| current(phone_number_id))
        .is_some_and(|t| !token.is_empty() && t.expose() == token)
}

/// Whether `token` may act for `phone_number_id`: its expected token, or the one an exchange
/// replaced (which, as at Meta, stays valid until its own expiry).
fn accepts(sim: &Simulator, phone_number_id: &str, token: &str) -> bool {
    let expected = lock(&sim.inner.tokens).get(phone_number_id).cloned();
    match expected {
        None => !token.is_empty(),
        Some(t) => {
            t.expose() == token
                || is_live(sim, phone_number_id, token)
                || lock(&sim.inner.retired).get(token).map(String::as_str) == Some(phone_number_id)
                    && retired_ok(sim, token)
        }
    }
}

fn retired_ok(sim: &Simulator, token: &str) -> bool {
    let expires_at = token_expiry(sim, token);
    lock(&sim.inner.retired).contains_key(token)
        && (expires_at == 0 || expires_at > chrono::Utc::now().timestamp())
}

fn token_expiry(sim: &Simulator, token: &str) -> i64 {
    lock(&sim.inner.expiry).get(token).copied().unwrap_or(0)
}

/// Records a token call without its secrets.
fn record_call(sim: &Simulator, version: String, what: Value, status: u16) {
    lock(&sim.inner.requests).push(SimRequest {
        phone_number_id: String::new(),
        version,
        bearer: None,
        body: what,
        status,
        wamid: None,
        at: std::time::Instant::now(),
    });
    sim.inner.received.notify_waiters();
}

type Query = axum::extract::Query<HashMap<String, String>>;

/// GET /{version}/debug_token?input_token=…&access_token=app_id|app_secret.
async fn debug_token(
    State(sim): State<Simulator>,
    Path(version): Path<String>,
    axum::extract::Query(q): Query,
) -> Response {
    if let Some(r) = take_fault(&sim).await {
        record_call(
            &sim,
            version,
            json!({"graph": "debug_token"}),
            r.status().as_u16(),
        );
        return r;
    }
    let app = q.get("access_token").map(String::as_str).unwrap_or("");
    let Some((app_id, _)) = app
        .split_once('|')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
    else {
        record_call(&sim, version, json!({"graph": "debug_token"}), 400);
        return graph_error(
            StatusCode::BAD_REQUEST,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        );
    };
    let input = q.get("input_token").map(String::as_str).unwrap_or("");
    let expires_at = token_expiry(&sim, input);
    let now = chrono::Utc::now().timestamp();
    let valid = token_known(&sim, input) && (expires_at == 0 || expires_at > now);
    record_call(
        &sim,
        version,
        json!({"graph": "debug_token", "app_id": app_id}),
        200,
    );
    Json(json!({"data": {
        "app_id": app_id,
        "type": if expires_at == 0 { "SYSTEM_USER" } else { "USER" },
        "application": "wagate simulator",
        "data_access_expires_at": 0,
        "expires_at": expires_at,
        "is_valid": valid,
        "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
    }}))
    .into_response()
}

/// GET /{version}/oauth/access_token?grant_type=fb_exchange_token&…: a new long-lived token
/// (about 60 days) for a valid, unexpired one. The old one stays valid until its expiry; the
/// requests log shows which token each call carried.
async fn exchange_token(
    State(sim): State<Simulator>,
    Path(version): Path<String>,
    axum::extract::Query(q): Query,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let what = json!({"graph": "fb_exchange_token", "client_id": get("client_id")});
    if let Some(r) = take_fault(&sim).await {
        record_call(&sim, version, what, r.status().as_u16());
        return r;
    }
    if get("grant_type") != "fb_exchange_token"
        || get("client_id").is_empty()
        || get("client_secret").is_empty()
    {
        record_call(&sim, version, what, 400);
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) grant_type, client_id and client_secret are required",
        );
    }
    let old = get("fb_exchange_token").to_string();
    let expires_at = token_expiry(&sim, &old);
    let now = chrono::Utc::now().timestamp();
    if !token_known(&sim, &old) || (expires_at != 0 && expires_at <= now) {
        record_call(&sim, version, what, 400);
        return graph_error(
            StatusCode::BAD_REQUEST,
            190,
            "Error validating access token: Session has expired",
        );
    }
    let n = sim.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let new = format!("EAAsimExchanged{n:06}x{}", now);
    let lifetime = 5_183_944;
    for (phone, t) in lock(&sim.inner.tokens).iter_mut() {
        if t.expose() == &old {
            *t = Secret::new(new.clone());
            lock(&sim.inner.retired).insert(old.clone(), phone.clone());
        }
    }
    lock(&sim.inner.expiry).insert(new.clone(), now + lifetime);
    record_call(&sim, version, what, 200);
    Json(json!({"access_token": new, "token_type": "bearer", "expires_in": lifetime}))
        .into_response()
}

/// POST /{version}/{phone_number_id}/media: a multipart upload (`messaging_product`, `type`,
/// `file`), checked as Graph does; answers the new media id, which later downloads the file.
async fn upload_media(
    State(sim): State<Simulator>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let bearer = bearer(&headers).map(|t| Secret::new(t.to_string()));
    let (mut product, mut mime, mut file) = (None, None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or("") {
            "messaging_product" => product = field.text().await.ok(),
            "type" => mime = field.text().await.ok(),
            "file" => {
                let name = field.file_name().unwrap_or("").to_string();
                let ctype = field.content_type().unwrap_or("").to_string();
                file = field.bytes().await.ok().map(|b| (name, ctype, b.to_vec()));
            }
            _ => {}
        }
    }
    let refused = if let Some(r) = take_fault(&sim).await {
        Some(r)
    } else if !bearer_ok(&sim, &headers) {
        Some(graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token.",
        ))
    } else if product.as_deref() != Some("whatsapp") {
        Some(graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) The parameter messaging_product is required.",
        ))
    } else if file.is_none() {
        Some(graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) The parameter file is required.",
        ))
    } else if mime.is_none() {
        Some(graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) The parameter type is required.",
        ))
    } else {
        None
    };
    let (name, ctype, bytes) = file.unwrap_or_default();
    let mime = mime.unwrap_or_default();
    let media_id = refused.is_none().then(|| {
        format!(
            "{}",
            900_000_000_000u64 + sim.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    });
    let record = json!({"upload": {"file_name": name, "content_type": ctype, "type": mime,
                                    "size": bytes.len(), "media_id": media_id}});
    let status = refused.as_ref().map(|r| r.status().as_u16()).unwrap_or(200);
    lock(&sim.inner.requests).push(SimRequest {
        phone_number_id,
        version,
        bearer,
        body: record,
        status,
        wamid: None,
        at: std::time::Instant::now(),
    });
    sim.inner.received.notify_waiters();
    if let Some(r) = refused {
        return r;
    }
    let id = media_id.unwrap_or_default();
    lock(&sim.inner.media).insert(id.clone(), (bytes, mime));
    Json(json!({ "id": id })).into_response()
}

/// GET /{version}/{media_id}: the media's URL (on this simulator), type, hash and size.
async fn media_info(
    sim: &Simulator,
    media_id: &str,
    uri: &axum::extract::OriginalUri,
    headers: &HeaderMap,
) -> Response {
    if let Some(r) = refuse_media(sim, headers).await {
        return r;
    }
    let Some((bytes, mime)) = lock(&sim.inner.media).get(media_id).cloned() else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            &format!("Unsupported get request. Object with ID '{media_id}' does not exist"),
        );
    };
    // The download URL lives on this simulator, wherever it is mounted.
    let path = uri.0.path().to_string();
    let prefix = path.rsplitn(3, '/').nth(2).unwrap_or("");
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&bytes))
    };
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("http://{host}{prefix}/_sim/media/{media_id}"),
        "mime_type": mime,
        "sha256": sha,
        "file_size": bytes.len().to_string(),
        "id": media_id,
    }))
    .into_response()
}

/// The download itself: needs the bearer token, as Meta's does.
async fn media_download(
    State(sim): State<Simulator>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse_media(&sim, &headers).await {
        return r;
    }
    match lock(&sim.inner.media).get(&media_id).cloned() {
        Some((bytes, mime)) => ([("content-type", mime)], bytes).into_response(),
        None => graph_error(StatusCode::NOT_FOUND, 100, "media not found"),
    }
}

async fn list_requests(State(sim): State<Simulator>) -> Json<Value> {
    let list: Vec<Value> = sim
        .requests()
        .into_iter()
        .map(|r| {
            json!({"phone_number_id": r.phone_number_id, "version": r.version,
                   "status": r.status, "wamid": r.wamid, "body": r.body})
        })
        .collect();
    Json(Value::Array(list))
}
