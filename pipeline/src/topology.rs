//! The exchanges and this system's durable subscribers of them, in one place: the subscriber
//! declares its queue from here, and so does the publisher (`EventBus::with_subscribers`), so
//! events committed before the subscriber first started wait in its queue rather than being
//! dropped.

use crate::bus::SubscriptionSpec;
use crate::contract::{EventType, Resource};

/// The exchange chat-manager publishes to, unless configured otherwise.
pub const CHAT_EXCHANGE: &str = "chat.events";
/// The exchange message-manager publishes to, unless configured otherwise.
pub const MESSAGE_EXCHANGE: &str = "message.events";
/// message-manager's durable queue of chat-manager's events, unless configured otherwise.
pub const CHAT_EVENTS_QUEUE: &str = "message-manager.chat-events";
/// The exchange the gateways share "is typing" signals on, unless configured otherwise.
pub const TYPING_EXCHANGE: &str = "typing.events";
/// webhook-manager's durable queue of both services' events, unless configured otherwise.
pub const WEBHOOK_EVENTS_QUEUE: &str = "webhook-manager.events";

/// The chat events message-manager's membership view follows: every one chat-manager
/// publishes.
pub fn chat_event_types() -> impl Iterator<Item = EventType> {
    EventType::ALL
        .into_iter()
        .filter(|t| matches!(t.resource, Resource::Chat | Resource::Chatroom))
}

/// message-manager's subscription to chat events: a durable queue bound to each chat event
/// type, of every tenant (`chat_created.*`, ...).
pub fn chat_events_subscriber(chat_exchange: &str, queue: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        queue: queue.to_owned(),
        bindings: chat_event_types()
            .map(|t| (chat_exchange.to_owned(), t.any_tenant()))
            .collect(),
        exclusive: false,
        prefetch: 64,
    }
}

/// webhook-manager's subscription: a durable queue bound to every event of both exchanges
/// (each publisher declares the bindings on its own exchange).
pub fn webhook_events_subscriber(
    chat_exchange: &str,
    message_exchange: &str,
    queue: &str,
) -> SubscriptionSpec {
    SubscriptionSpec {
        queue: queue.to_owned(),
        bindings: vec![
            (chat_exchange.to_owned(), "#".to_owned()),
            (message_exchange.to_owned(), "#".to_owned()),
        ],
        exclusive: false,
        prefetch: 64,
    }
}

/// What releases before tenant routing keys bound message-manager's queue to (the bare event
/// types): a subscriber removes these bindings, which match nothing any more.
pub fn legacy_chat_bindings(chat_exchange: &str) -> Vec<(String, String)> {
    chat_event_types()
        .map(|t| (chat_exchange.to_owned(), t.as_str().to_owned()))
        .collect()
}

/// Where a subscriber sets aside the events of `queue` it could not apply: a durable fanout
/// exchange and queue of this name (see `EventBus::declare_set_aside`).
pub fn dead_letter_name(queue: &str) -> String {
    format!("{queue}.dead-letter")
}
