//! The event pipeline: what the services publish (`contract`, in CloudEvents envelopes:
//! `cloudevent`), how a change and its events commit together and reach the broker (`store`,
//! `outbox`), and the broker itself (`bus`: RabbitMQ, or in-process in the embedded default;
//! `topology`: the exchanges and durable queues).
//!
//! A send, followed from the handler to a socket:
//!
//! 1. message-manager's `send` checks the message and makes its outbox record (a
//!    `MessageRecord` naming the chatrooms that hold a copy). `Store::write_statement` writes
//!    the message and an `outbox::OutboxRow` of the record in one statement, then wakes the
//!    relay.
//! 2. The service's `outbox::Relay` reads pending rows in order, has the service render each
//!    record into one `cloudevent::Event` (`OutboxRecord::render`: the chatmessage, and one
//!    `contract::CopyItem` per copy), and publishes them through `bus::EventBus` with publisher
//!    confirms, under the routing key `<event type>.<customer id>`. Rows are marked sent once
//!    confirmed.
//! 3. The gateway's hub (api-gateway `ws::hub`) has bound its queue to the tenants of its open
//!    sockets (`bus::Binder`); it reads each event (`cloudevent::parse`), finds the items of it
//!    (`contract::ParsedEvent::items`) each socket's topics match, and the socket renders those
//!    items' frames (`ParsedEvent::item_frame`) as it sends them.

pub mod bus;
pub mod cloudevent;
pub mod consumer;
pub mod contract;
pub mod outbox;
pub mod store;
pub mod topology;
pub mod typing;

pub use cloudevent::Event;
pub use contract::{EventType, ParsedEvent};
pub use outbox::{OutboxRecord, Relay, RelaySignal};
pub use store::{Change, Store};
