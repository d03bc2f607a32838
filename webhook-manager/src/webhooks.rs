//! Webhooks: the rules of their fields, and their changes.

use common::time;
use pipeline::contract::{EventType, Resource};
use proto::webhook::v1 as pb;

use crate::address::{self, AddressPolicy};
use crate::db::models::WebhookRow;
use crate::error::WebhookError;
use crate::signature;

pub const MAX_NAME_CHARS: usize = 1000;
/// Live webhooks a customer may have: each event is recorded once per webhook that lists it.
pub const MAX_WEBHOOKS_PER_CUSTOMER: i64 = 100;

/// `POST` or `PUT`.
pub fn method(value: &str) -> Result<String, WebhookError> {
    match value {
        "" => Ok("POST".into()),
        m if m.eq_ignore_ascii_case("POST") => Ok("POST".into()),
        m if m.eq_ignore_ascii_case("PUT") => Ok("PUT".into()),
        other => Err(WebhookError::invalid(format!(
            "method: must be POST or PUT, not {other:?}"
        ))),
    }
}

/// `enabled` or `disabled`.
pub fn status(value: &str) -> Result<String, WebhookError> {
    match value {
        "enabled" | "disabled" => Ok(value.to_owned()),
        other => Err(WebhookError::invalid(format!(
            "status: must be enabled or disabled, not {other:?}"
        ))),
    }
}

/// The event types a webhook gets when it names none: every chat-level type.
pub fn default_event_types() -> Vec<EventType> {
    EventType::ALL
        .into_iter()
        .filter(|t| matches!(t.resource, Resource::Chat | Resource::Messagechat))
        .collect()
}

/// Known event type names, without repeats, in the order given; none: the default.
pub fn event_types(names: &[String]) -> Result<Vec<EventType>, WebhookError> {
    if names.is_empty() {
        return Ok(default_event_types());
    }
    let mut types = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = EventType::parse(name).ok_or_else(|| {
            WebhookError::invalid(format!(
                "event_types[{i}]: unknown event type {name:?} (one of {})",
                EventType::ALL.map(EventType::as_str).join(", ")
            ))
        })?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

pub fn name(value: &str) -> Result<String, WebhookError> {
    common::validate::text("name", value, MAX_NAME_CHARS).map_err(WebhookError::InvalidArgument)?;
    Ok(value.to_owned())
}

/// A `uri` a webhook may have: well formed and, unless allowed, resolving to public
/// addresses only.
pub async fn uri(value: &str, policy: AddressPolicy) -> Result<String, WebhookError> {
    common::validate::text("uri", value, address::MAX_URI_LEN)
        .map_err(WebhookError::InvalidArgument)?;
    let url = address::parse_uri(value).map_err(|e| WebhookError::invalid(e.to_string()))?;
    policy
        .check(&url)
        .await
        .map_err(|e| WebhookError::invalid(e.to_string()))?;
    Ok(value.to_owned())
}

pub fn stored_event_types(types: &[EventType]) -> String {
    serde_json::to_string(types).expect("event types serialize")
}

/// The event types a stored webhook lists (unknown names, of a later release, are left out).
pub fn listed_event_types(row: &WebhookRow) -> Vec<EventType> {
    serde_json::from_str::<Vec<String>>(&row.event_types)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| EventType::parse(n))
        .collect()
}

/// A new webhook, checked.
pub struct NewWebhook {
    pub customer_id: String,
    pub name: String,
    pub uri: String,
    pub method: String,
    pub event_types: Vec<EventType>,
}

impl NewWebhook {
    pub fn row(&self) -> WebhookRow {
        let now = time::now();
        WebhookRow {
            id: uuid::Uuid::new_v4().to_string(),
            customer_id: self.customer_id.clone(),
            name: self.name.clone(),
            uri: self.uri.clone(),
            method: self.method.clone(),
            event_types: stored_event_types(&self.event_types),
            status: "enabled".into(),
            secret: signature::generate_secret(),
            tm_create: now,
            tm_update: now,
            tm_delete: time::live(),
        }
    }
}

/// A change of a webhook's fields, each checked; `None` leaves a field as it is.
#[derive(Default)]
pub struct WebhookChange {
    pub name: Option<String>,
    pub uri: Option<String>,
    pub method: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub status: Option<String>,
}

impl WebhookChange {
    pub fn apply(self, row: &mut WebhookRow) {
        if let Some(v) = self.name {
            row.name = v;
        }
        if let Some(v) = self.uri {
            row.uri = v;
        }
        if let Some(v) = self.method {
            row.method = v;
        }
        if let Some(v) = self.event_types {
            row.event_types = stored_event_types(&v);
        }
        if let Some(v) = self.status {
            row.status = v;
        }
        row.tm_update = time::now();
    }

    /// Whether it makes the webhook's deliveries due again (enabling it).
    pub fn enables(&self) -> bool {
        self.status.as_deref() == Some("enabled")
    }
}

/// The webhook as answered; its secret only when `with_secret` (on creation and rotation).
pub fn to_proto(row: &WebhookRow, with_secret: bool) -> pb::Webhook {
    pb::Webhook {
        id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        name: row.name.clone(),
        uri: row.uri.clone(),
        method: row.method.clone(),
        event_types: listed_event_types(row)
            .into_iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        status: row.status.clone(),
        secret: if with_secret {
            row.secret.clone()
        } else {
            String::new()
        },
        tm_create: time::format(row.tm_create),
        tm_update: time::format(row.tm_update),
        tm_delete: time::format(row.tm_delete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_naming_the_field() {
        assert_eq!(method("").unwrap(), "POST");
        assert_eq!(method("put").unwrap(), "PUT");
        assert!(
            method("GET")
                .unwrap_err()
                .to_string()
                .starts_with("method: ")
        );
        assert!(
            status("paused")
                .unwrap_err()
                .to_string()
                .starts_with("status: ")
        );
        let err = event_types(&["chat_created".into(), "chat_renamed".into()]).unwrap_err();
        assert!(err.to_string().starts_with("event_types[1]: "), "{err}");
        assert!(name("a\0b").unwrap_err().to_string().starts_with("name: "));
    }

    #[test]
    fn event_types_default_to_the_chat_level_ones_and_repeats_are_dropped() {
        let names: Vec<&str> = default_event_types().iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "chat_created",
                "chat_updated",
                "chat_deleted",
                "messagechat_created",
                "messagechat_updated",
                "messagechat_deleted"
            ]
        );
        let given = event_types(&["chatroom_created".into(), "chatroom_created".into()]).unwrap();
        assert_eq!(given, [EventType::CHATROOM_CREATED]);
    }
}
