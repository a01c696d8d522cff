//! An event as rules see it: a kind, the keys that order and deduplicate it, and the `event`
//! map of DESIGN.md (raw JSON kept whole inside it).

use serde_json::Value;

/// What kind of event this is; rules match on it with `on:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An inbound message (`value.messages[]` of the `messages` field).
    Message,
    /// A status of a sent message (`value.statuses[]`).
    Status,
    /// Any other webhook field, named as Meta names it (`message_template_status_update`, …).
    Field(String),
}

impl EventKind {
    /// The `kind` string of the event map.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Message => "message",
            EventKind::Status => "status",
            EventKind::Field(f) => f,
        }
    }

    /// Reads a kind back from its `kind` string.
    pub fn from_name(s: &str) -> Self {
        match s {
            "message" => EventKind::Message,
            "status" => EventKind::Status,
            other => EventKind::Field(other.to_string()),
        }
    }
}

/// One event taken out of a webhook body.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Unique per user: `msg:<wamid>`, `status:<id>:<status>`, or `<field>:<sha256 of raw>`.
    pub dedupe_key: String,
    /// The contact whose events must stay in order (sender or recipient id), if any.
    pub contact: Option<String>,
    /// `metadata.phone_number_id` of the change, used to route and to check ownership.
    pub phone_number_id: Option<String>,
    /// The entry's id: the WhatsApp Business Account id (routes fields without metadata).
    pub waba_id: Option<String>,
    /// The wamid of a message or status, if any.
    pub wamid: Option<String>,
    /// The `event` map given to scripts (an object).
    pub map: Value,
}

impl Event {
    /// The text of a message event, `""` for anything else.
    pub fn text(&self) -> &str {
        self.map.get("text").and_then(Value::as_str).unwrap_or("")
    }
}
