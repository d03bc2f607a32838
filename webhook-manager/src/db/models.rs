//! Rows as stored.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{deliveries, webhooks};

#[derive(Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    pub uri: String,
    pub method: String,
    /// A JSON list of event type names.
    pub event_types: String,
    pub status: String,
    pub secret: String,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = deliveries)]
pub struct DeliveryRow {
    pub id: String,
    pub customer_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: i32,
    pub last_error: String,
    pub tm_next_attempt: NaiveDateTime,
    /// Retries go on for the retry period from here: the creation, or the last retry by hand.
    pub tm_retry_from: NaiveDateTime,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
}

/// What the dispatcher needs of a delivery to attempt it (the body comes with it).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub body: String,
    pub attempts: i32,
    pub tm_next_attempt: NaiveDateTime,
    pub tm_retry_from: NaiveDateTime,
}

/// Without the secret: a row in a log line must not leak it.
impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("customer_id", &self.customer_id)
            .field("name", &self.name)
            .field("uri", &self.uri)
            .field("method", &self.method)
            .field("event_types", &self.event_types)
            .field("status", &self.status)
            .field("secret", &"<redacted>")
            .field("tm_create", &self.tm_create)
            .field("tm_update", &self.tm_update)
            .field("tm_delete", &self.tm_delete)
            .finish()
    }
}
