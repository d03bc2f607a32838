//! This system's durable subscribers of its exchanges, in one place: the subscriber declares
//! its queue from here, and so does the publisher (`EventBus::with_subscribers`), so events
//! committed before the subscriber first started wait in its queue rather than being dropped.

use crate::bus::SubscriptionSpec;

/// The exchange chat-manager publishes to, unless configured otherwise.
pub const CHAT_EXCHANGE: &str = "chat.events";
/// The exchange message-manager publishes to, unless configured otherwise.
pub const MESSAGE_EXCHANGE: &str = "message.events";
/// message-manager's durable queue of chat-manager's events, unless configured otherwise.
pub const CHAT_EVENTS_QUEUE: &str = "message-manager.chat-events";

/// The chat events message-manager's membership view follows.
pub const CHAT_EVENT_TYPES: [&str; 6] = [
    "chat_created",
    "chat_updated",
    "chat_deleted",
    "chatroom_created",
    "chatroom_updated",
    "chatroom_deleted",
];

/// message-manager's subscription to chat events: a durable queue bound to each chat event
/// type (topic `*` matches whole words only, so the types are bound by name).
pub fn chat_events_subscriber(chat_exchange: &str, queue: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        queue: queue.to_owned(),
        bindings: CHAT_EVENT_TYPES
            .iter()
            .map(|t| (chat_exchange.to_owned(), (*t).to_owned()))
            .collect(),
        exclusive: false,
        prefetch: 64,
    }
}

/// Where a subscriber sets aside the events of `queue` it could not apply: a durable fanout
/// exchange and queue of this name (see `EventBus::declare_set_aside`).
pub fn dead_letter_name(queue: &str) -> String {
    format!("{queue}.dead-letter")
}
