// The tables of webhook-manager's own schema (see migrations/).

diesel::table! {
    webhooks (id) {
        id -> Text,
        customer_id -> Text,
        name -> Text,
        uri -> Text,
        method -> Text,
        event_types -> Text,
        status -> Text,
        secret -> Text,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Text,
        customer_id -> Text,
        webhook_id -> Text,
        event_id -> Text,
        event_type -> Text,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        last_status_code -> Integer,
        last_error -> Text,
        tm_next_attempt -> Timestamp,
        tm_retry_from -> Timestamp,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
    }
}

pub use common::processed::processed_events;
