//! The shared route, `/webhook/whatsapp`: one Meta app serving several users. Its handshake
//! takes any served user's verify token; its webhooks are checked against the served users'
//! app secrets before anything in them is read, then each event goes to the user owning it.
//! What the per-user route does with an event once it is routed (fates, commit, audit) lives
//! in the parent module and is shared.

use super::body::WebhookBody;
use super::{
    AppState, HttpError, audit_rejection, check_signature, commit, fates, outcome_json, owns,
    parse, verify_handshake,
};
use crate::users::{UserRuntime, Users};
use crate::vault::Credentials;
use crate::whatsapp::verify_signature;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// GET /webhook/whatsapp: Meta verifying the shared callback URL of an app that serves
/// several users. Its verify token is any served user's.
pub(super) async fn handshake(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<String, HttpError> {
    match verify_handshake(&q, st.users.iter().map(|(_, u)| u)) {
        Some((u, challenge)) => {
            tracing::info!(route = "shared", user = %u.config.id, "webhook verification handshake accepted");
            Ok(challenge)
        }
        None => {
            tracing::warn!(route = "shared", "webhook verification handshake refused");
            Err(HttpError::Forbidden)
        }
    }
}

/// POST /webhook/whatsapp. The signature is checked first, against every served app secret:
/// a body no served app signed is 401 and nothing in it is read, so the route tells a
/// stranger nothing about which numbers are served. Then each event goes to the user owning
/// its phone_number_id (or, for fields without metadata, its WhatsApp Business Account id),
/// and the signature must verify with every owner's app secret. Events no user owns are kept
/// (as foreign, under the first owner, or under the signer when no event has an owner, so
/// that Meta stops retrying a number no longer served) and never dispatched.
pub(super) async fn webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    WebhookBody(body): WebhookBody,
) -> Result<Json<Value>, HttpError> {
    let signer = signer(&st.users, &headers, &body)?;
    let events = match parse(signer.config.id.as_str(), &body) {
        Ok(events) => events,
        Err(e) => return Err(audit_rejection(&st, signer.config.id.as_str(), e, body.len()).await),
    };
    let owner_of = |e| st.users.iter().map(|(_, u)| u).find(|u| owns(&u.config, e));
    let owners: Vec<Option<Arc<UserRuntime>>> =
        events.iter().map(|e| owner_of(e).cloned()).collect();
    let mut users: Vec<Arc<UserRuntime>> = Vec::new();
    for u in owners.iter().flatten() {
        if !users.iter().any(|x| x.config.id == u.config.id) {
            users.push(u.clone());
        }
    }
    if users.is_empty() {
        tracing::warn!(route = "shared", user = %signer.config.id, events = events.len(), "webhook for no served phone number or account; kept as foreign");
        users.push(signer);
    }
    for u in &users {
        if let Err(e) = check_signature(u, &headers, &body) {
            return Err(audit_rejection(&st, u.config.id.as_str(), e, body.len()).await);
        }
    }
    let mut outcomes = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let mine = events.iter().zip(&owners).filter_map(|(e, o)| match o {
            Some(o) if o.config.id == u.config.id => Some((e.clone(), true)),
            None if i == 0 => Some((e.clone(), false)),
            _ => None,
        });
        let items = fates(&st, u, mine);
        let outcome = commit(&st, u, body.clone(), items).await?;
        outcomes.push((u.config.id.to_string(), outcome));
    }
    Ok(Json(outcome_json(&outcomes)))
}

/// The first served user (by name) whose app secret verifies the body's X-Hub-Signature-256,
/// or 401. A shared Meta app has one app secret, so each distinct secret is tried once; each
/// check compares in constant time.
fn signer(users: &Users, headers: &HeaderMap, body: &Bytes) -> Result<Arc<UserRuntime>, HttpError> {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    // Our own secrets compared with one another: nothing a client sends is timed here.
    let mut tried: Vec<(Arc<Credentials>, bool)> = Vec::new();
    let mut why = None;
    for (_, u) in users.iter() {
        let creds = u.creds();
        let seen = tried
            .iter()
            .find(|(c, _)| c.app_secret.expose() == creds.app_secret.expose())
            .map(|(_, ok)| *ok);
        let ok = seen.unwrap_or_else(|| {
            let checked = verify_signature(creds.app_secret.expose().as_bytes(), body, sig);
            let ok = checked.is_ok();
            if let Err(e) = checked {
                why.get_or_insert(e.to_string());
            }
            tried.push((creds, ok));
            ok
        });
        if ok {
            return Ok(u.clone());
        }
    }
    let why = why.unwrap_or_else(|| "no user is served".to_string());
    tracing::warn!(route = "shared", reason = %why, bytes = body.len(), "webhook refused: signed by no served app");
    Err(HttpError::Unauthorized(why))
}
