//! The Cloud API Groups API (shared/reference §3 "Groups API"), with the user's token:
//!
//! | call | request | answer |
//! |---|---|---|
//! | create | `POST /{phone_number_id}/groups {messaging_product, subject, description?, join_approval_mode?}` | `{"request_id"}`; the group id arrives in a `group_lifecycle_update` webhook |
//! | list | `GET /{phone_number_id}/groups` | `{"data":[{"id","subject",…}], "paging"?}` |
//! | get | `GET /{group_id}?fields=…` | `{"id","subject","description","participants":[{"wa_id"}],"join_approval_mode",…}` |
//! | invite link | `GET /{group_id}/invite_link`; reset: `POST` same path `{messaging_product}` | `{"invite_link"}` |
//! | remove participants | `DELETE /{group_id}/participants {messaging_product, participants:[{"user"}]}` | `{"success"}` or `{"request_id"}` |
//! | delete | `DELETE /{group_id}` | `{"success"}` |
//!
//! Shapes from Meta's "Group management" reference
//! (developers.facebook.com/documentation/business-messaging/whatsapp/groups/reference/, May
//! 2026: create, invite link with reset, participants, delete; `join_approval_mode` is
//! `auto_approve` or `approval_required`), cross-checked with pywa's group types (GroupDetails:
//! id, subject, description, participants, join_approval_mode, total_participant_count) and
//! with BSP mirrors of the same endpoints (Gupshup's remove-participants body
//! `{"messaging_product":"whatsapp","participants":[{"user":…}]}`).

use super::{GraphClient, GraphError, exec};
use crate::domain::Secret;
use reqwest::Method;
use serde_json::{Value, json};

/// A group as `GET /{group_id}` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: String,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub join_approval_mode: Option<String>,
    /// wa_ids.
    pub participants: Vec<String>,
    pub total_participant_count: Option<u64>,
}

/// How people who open the invite link get in.
pub fn approval_mode(required: bool) -> &'static str {
    if required {
        "approval_required"
    } else {
        "auto_approve"
    }
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Ids come as strings or numbers.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl GraphClient {
    async fn group_call(
        &self,
        method: Method,
        path: &str,
        token: &Secret<String>,
        body: Option<&Value>,
    ) -> Result<Value, GraphError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        exec(req).await
    }

    /// Creates a group; returns the request id that the group_lifecycle_update webhook will
    /// carry with the new group's id.
    pub async fn create_group(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
        subject: &str,
        description: Option<&str>,
        join_approval_mode: Option<&str>,
    ) -> Result<String, GraphError> {
        let mut body = json!({"messaging_product": "whatsapp", "subject": subject});
        if let Some(d) = description {
            body["description"] = d.into();
        }
        if let Some(m) = join_approval_mode {
            body["join_approval_mode"] = m.into();
        }
        let v = self
            .group_call(
                Method::POST,
                &format!("{phone_number_id}/groups"),
                token,
                Some(&body),
            )
            .await?;
        v.get("request_id")
            .and_then(id_of)
            .ok_or_else(|| GraphError::Unexpected("no request_id in the answer".into()))
    }

    /// The groups of a phone number: (id, subject) each.
    pub async fn list_groups(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
    ) -> Result<Vec<(String, Option<String>)>, GraphError> {
        let v = self
            .group_call(
                Method::GET,
                &format!("{phone_number_id}/groups"),
                token,
                None,
            )
            .await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| GraphError::Unexpected("no data in the answer".into()))?;
        Ok(data
            .iter()
            .filter_map(|g| Some((g.get("id").and_then(id_of)?, text(g, "subject"))))
            .collect())
    }

    /// What Graph says of a group.
    pub async fn get_group(
        &self,
        group_id: &str,
        token: &Secret<String>,
    ) -> Result<GroupInfo, GraphError> {
        let v = self
            .group_call(
                Method::GET,
                &format!("{group_id}?fields=subject,description,participants,join_approval_mode,total_participant_count"),
                token,
                None,
            )
            .await?;
        let id = v
            .get("id")
            .and_then(id_of)
            .ok_or_else(|| GraphError::Unexpected("no id in the group answer".into()))?;
        // `participants` is an array, or a paged `{data: […]}`.
        let list = v
            .get("participants")
            .map(|p| p.get("data").unwrap_or(p))
            .and_then(Value::as_array);
        Ok(GroupInfo {
            id,
            subject: text(&v, "subject"),
            description: text(&v, "description"),
            join_approval_mode: text(&v, "join_approval_mode"),
            participants: list
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("wa_id").or_else(|| p.get("user")).and_then(id_of))
                .collect(),
            total_participant_count: v.get("total_participant_count").and_then(Value::as_u64),
        })
    }

    /// The group's invite link; `reset` revokes the current one and returns a new one.
    pub async fn group_invite_link(
        &self,
        group_id: &str,
        token: &Secret<String>,
        reset: bool,
    ) -> Result<String, GraphError> {
        let path = format!("{group_id}/invite_link");
        let v = if reset {
            let body = json!({"messaging_product": "whatsapp"});
            self.group_call(Method::POST, &path, token, Some(&body))
                .await?
        } else {
            self.group_call(Method::GET, &path, token, None).await?
        };
        text(&v, "invite_link")
            .ok_or_else(|| GraphError::Unexpected("no invite_link in the answer".into()))
    }

    /// Removes participants (wa_ids or phone numbers) from a group.
    pub async fn remove_group_participants(
        &self,
        group_id: &str,
        token: &Secret<String>,
        users: &[String],
    ) -> Result<(), GraphError> {
        let participants: Vec<Value> = users.iter().map(|u| json!({ "user": u })).collect();
        let body = json!({"messaging_product": "whatsapp", "participants": participants});
        self.group_call(
            Method::DELETE,
            &format!("{group_id}/participants"),
            token,
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Deletes a group (its participants are removed).
    pub async fn delete_group(
        &self,
        group_id: &str,
        token: &Secret<String>,
    ) -> Result<(), GraphError> {
        self.group_call(Method::DELETE, group_id, token, None)
            .await
            .map(drop)
    }
}
