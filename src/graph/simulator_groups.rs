//! The fake Cloud API's Groups API (see `graph::groups` for the shapes and their sources):
//! create, list, get, invite link (get, reset), remove participants, delete; with the same
//! bearer check and fault queue as the message endpoints, and group state kept in memory.
//! Tests make Meta's side of the story with [`Simulator::group_created_webhook`] (the
//! `group_lifecycle_update` that names a created group) and [`Simulator::join_group`] (someone
//! joined through the invite link: a `group_participants_update`), then post them signed to
//! the gate. Mounted by `Simulator::router`.

use super::{Simulator, bearer_ok, graph_error, lock, take_fault};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// Participants a group may have besides the business (shared/reference §3).
pub const MAX_PARTICIPANTS: usize = 8;

/// A group the simulator holds.
#[derive(Clone, Debug)]
pub struct SimGroup {
    pub id: String,
    pub phone_number_id: String,
    pub request_id: String,
    pub subject: String,
    pub description: Option<String>,
    pub join_approval_mode: String,
    pub invite_link: String,
    pub participants: Vec<String>,
    pub created_at: i64,
}

/// One Groups API call the simulator received.
#[derive(Clone, Debug)]
pub struct GroupCall {
    pub method: String,
    /// The path after the version, e.g. `111222333/groups` or `<group_id>/invite_link`.
    pub path: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
pub(super) struct GroupState {
    pub(super) groups: Vec<SimGroup>,
    calls: Vec<GroupCall>,
    seq: u64,
}

impl Simulator {
    /// Every Groups API call received so far.
    pub fn group_calls(&self) -> Vec<GroupCall> {
        lock(&self.inner.groups).calls.clone()
    }

    /// The groups alive now.
    pub fn sim_groups(&self) -> Vec<SimGroup> {
        lock(&self.inner.groups).groups.clone()
    }

    /// The `group_lifecycle_update` webhook Meta sends once the group of `request_id` exists
    /// (`None` if no such request).
    pub fn group_created_webhook(&self, request_id: &str) -> Option<Value> {
        let st = lock(&self.inner.groups);
        let g = st.groups.iter().find(|g| g.request_id == request_id)?;
        let item = json!({
            "timestamp": g.created_at.to_string(),
            "group_id": g.id,
            "type": "group_create",
            "request_id": g.request_id,
            "subject": g.subject,
            "description": g.description,
            "invite_link": g.invite_link,
            "join_approval_mode": g.join_approval_mode,
            "added_participants": g.participants.iter().map(|p| json!({"input": p, "wa_id": p})).collect::<Vec<_>>(),
        });
        Some(envelope(&g.phone_number_id, "group_lifecycle_update", item))
    }

    /// Someone joined `group_id` through its invite link: the simulator adds them and returns
    /// the `group_participants_update` webhook Meta sends (`None` if the group is unknown or
    /// full).
    pub fn join_group(&self, group_id: &str, wa_id: &str) -> Option<Value> {
        let mut st = lock(&self.inner.groups);
        let g = st.groups.iter_mut().find(|g| g.id == group_id)?;
        if g.participants.len() >= MAX_PARTICIPANTS {
            return None;
        }
        if !g.participants.iter().any(|p| p == wa_id) {
            g.participants.push(wa_id.to_string());
        }
        let item = json!({
            "timestamp": chrono::Utc::now().timestamp().to_string(),
            "group_id": g.id,
            "type": "group_participants_add",
            "added_participants": [{"input": wa_id, "wa_id": wa_id}],
        });
        Some(envelope(
            &g.phone_number_id,
            "group_participants_update",
            item,
        ))
    }
}

fn envelope(phone_number_id: &str, field: &str, item: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "SIMWABA", "changes": [{"field": field, "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": format!("1555{phone_number_id}"), "phone_number_id": phone_number_id},
            "groups": [item]
        }}]}]
    })
}

/// The routes (same parameter names as the message routes, as the router requires).
pub(super) fn routes() -> Router<Simulator> {
    Router::new()
        .route(
            "/{version}/{phone_number_id}/groups",
            post(create).get(list),
        )
        .route(
            "/{version}/{phone_number_id}/invite_link",
            post(invite_link).get(invite_link),
        )
        .route(
            "/{version}/{phone_number_id}/participants",
            axum::routing::delete(participants),
        )
}

/// `GET /{version}/{id}`: a group if `id` is one, else the media endpoint.
pub(super) async fn get_object(
    State(sim): State<Simulator>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    handle(&sim, Method::GET, id.clone(), &headers, Value::Null, |st, _| {
        let g = find(st, &id)?;
        Ok(json!({
            "id": g.id,
            "subject": g.subject,
            "description": g.description,
            "creation_timestamp": g.created_at,
            "suspended": false,
            "join_approval_mode": g.join_approval_mode,
            "total_participant_count": g.participants.len(),
            "participants": g.participants.iter().map(|p| json!({"wa_id": p})).collect::<Vec<_>>(),
        }))
    })
    .await
}

/// `DELETE /{version}/{group_id}`.
pub(super) async fn delete_object(
    State(sim): State<Simulator>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    handle(
        &sim,
        Method::DELETE,
        id.clone(),
        &headers,
        Value::Null,
        |st, _| {
            find(st, &id)?;
            st.groups.retain(|g| g.id != id);
            Ok(json!({"success": true}))
        },
    )
    .await
}

type Answer = Result<Value, (StatusCode, i64, String)>;

fn bad(msg: impl Into<String>) -> (StatusCode, i64, String) {
    (StatusCode::BAD_REQUEST, 100, msg.into())
}

fn find<'a>(
    st: &'a mut GroupState,
    id: &str,
) -> Result<&'a mut SimGroup, (StatusCode, i64, String)> {
    st.groups.iter_mut().find(|g| g.id == id).ok_or_else(|| {
        bad(format!(
            "Unsupported request - method type: get. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ))
    })
}

/// The common part of every group endpoint: a queued fault, the bearer check, then `f` on the
/// state; the call is recorded with the status it got.
async fn handle(
    sim: &Simulator,
    method: Method,
    path: String,
    headers: &HeaderMap,
    body: Value,
    f: impl FnOnce(&mut GroupState, &Value) -> Answer,
) -> Response {
    let record = |status: u16| {
        lock(&sim.inner.groups).calls.push(GroupCall {
            method: method.to_string(),
            path: path.clone(),
            body: body.clone(),
            status,
        });
    };
    if let Some(r) = take_fault(sim).await {
        record(r.status().as_u16());
        return r;
    }
    if !bearer_ok(sim, headers) {
        record(401);
        return graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token.");
    }
    let answer = {
        let mut st = lock(&sim.inner.groups);
        f(&mut st, &body)
    };
    match answer {
        Ok(v) => {
            record(200);
            (StatusCode::OK, Json(v)).into_response()
        }
        Err((status, code, msg)) => {
            record(status.as_u16());
            graph_error(status, code, &format!("(#{code}) {msg}"))
        }
    }
}

fn json_body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn check_product(body: &Value) -> Result<(), (StatusCode, i64, String)> {
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return Err(bad("The parameter messaging_product is required."));
    }
    Ok(())
}

/// A group id in the style of Meta's (base64 of `capi_group:<number>:<n>`).
fn group_id(phone_number_id: &str, n: u64) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let raw = format!("capi_group:{phone_number_id}:{:012}", 120363000000000 + n);
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn create(
    State(sim): State<Simulator>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let body = json_body(&bytes);
    let pnid = phone_number_id.clone();
    handle(&sim, Method::POST, format!("{phone_number_id}/groups"), &headers, body, move |st, b| {
        check_product(b)?;
        let subject = b.get("subject").and_then(Value::as_str).unwrap_or("").trim();
        if subject.is_empty() {
            return Err(bad("The parameter subject is required."));
        }
        if subject.chars().count() > 128 {
            return Err(bad("Param subject must be at most 128 characters long."));
        }
        let description = b.get("description").and_then(Value::as_str);
        if description.is_some_and(|d| d.chars().count() > 2048) {
            return Err(bad("Param description must be at most 2048 characters long."));
        }
        let mode = b.get("join_approval_mode").and_then(Value::as_str).unwrap_or("auto_approve");
        if !matches!(mode, "auto_approve" | "approval_required") {
            return Err(bad(format!(
                "Param join_approval_mode must be one of {{auto_approve, approval_required}} - got \"{mode}\"."
            )));
        }
        st.seq += 1;
        let n = st.seq;
        let request_id = format!("SIMREQ{n:028X}");
        let id = group_id(&pnid, n);
        st.groups.push(SimGroup {
            invite_link: format!("https://chat.whatsapp.com/SIM{n:06}A"),
            id,
            phone_number_id: pnid,
            request_id: request_id.clone(),
            subject: subject.to_string(),
            description: description.map(str::to_string),
            join_approval_mode: mode.to_string(),
            participants: Vec::new(),
            created_at: chrono::Utc::now().timestamp(),
        });
        Ok(json!({ "request_id": request_id }))
    })
    .await
}

async fn list(
    State(sim): State<Simulator>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let pnid = phone_number_id.clone();
    handle(
        &sim,
        Method::GET,
        format!("{phone_number_id}/groups"),
        &headers,
        Value::Null,
        move |st, _| {
            let data: Vec<Value> = st
                .groups
                .iter()
                .filter(|g| g.phone_number_id == pnid)
                .map(|g| json!({"id": g.id, "subject": g.subject, "created_at": g.created_at}))
                .collect();
            Ok(json!({ "data": data, "paging": {"cursors": {"before": "", "after": ""}} }))
        },
    )
    .await
}

async fn invite_link(
    State(sim): State<Simulator>,
    method: Method,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let body = json_body(&bytes);
    let reset = method == Method::POST;
    handle(
        &sim,
        method,
        format!("{id}/invite_link"),
        &headers,
        body,
        move |st, b| {
            if reset {
                check_product(b)?;
            }
            st.seq += 1;
            let n = st.seq;
            let g = find(st, &id)?;
            if reset {
                g.invite_link = format!("https://chat.whatsapp.com/SIM{n:06}R");
            }
            Ok(json!({"messaging_product": "whatsapp", "invite_link": g.invite_link}))
        },
    )
    .await
}

async fn participants(
    State(sim): State<Simulator>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let body = json_body(&bytes);
    handle(
        &sim,
        Method::DELETE,
        format!("{id}/participants"),
        &headers,
        body,
        move |st, b| {
            check_product(b)?;
            let users: Vec<String> = b
                .get("participants")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("user").and_then(Value::as_str))
                .map(|u| u.trim_start_matches('+').to_string())
                .collect();
            if users.is_empty() {
                return Err(bad(
                    "The parameter participants is required: [{\"user\": \"<wa_id>\"}].",
                ));
            }
            if users.len() > MAX_PARTICIPANTS {
                return Err(bad(format!(
                    "Param participants must have at most {MAX_PARTICIPANTS} entries."
                )));
            }
            let g = find(st, &id)?;
            g.participants.retain(|p| !users.contains(p));
            Ok(json!({"success": true}))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_look_like_metas() {
        // Meta's fixture id decodes to `capi_group:18055550172:120363222771963067`.
        let id = group_id("111222333", 1);
        assert!(id.starts_with("Y2FwaV9ncm91cDox"), "{id}");
        assert_ne!(id, group_id("111222333", 2));
    }
}
