//! chat-manager: chats and their per-participant chatrooms, over gRPC (`chat.v1.ChatService`).
//!
//! `service()` builds the gRPC service and its outbox relay; `main.rs` serves it on a socket,
//! and the gateway's embedded default calls it in-process. Same code either way.

pub mod chatrooms;
pub mod chats;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod grpc;

use common::db::Db;
use pipeline::bus::EventBus;
use pipeline::{Relay, RelaySignal, Store};
use proto::chat::v1::chat_service_server::ChatServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// CloudEvents `source` of chat-manager's events.
pub const EVENT_SOURCE: &str = "chat-manager";
/// The exchange chat-manager publishes to, unless configured otherwise.
pub const DEFAULT_EXCHANGE: &str = pipeline::topology::CHAT_EXCHANGE;

/// The domain entry point: reads, and writes committed with their events (see `Store`).
pub type ChatManager = Store<events::ChatRecord>;

/// The relay publishing chat-manager's outbox.
pub fn relay(
    db: Db,
    bus: EventBus,
    exchange: &str,
    signal: RelaySignal,
) -> Relay<events::ChatRecord> {
    Relay::new(db, bus, exchange, signal, EVENT_SOURCE)
}

/// The gRPC service over `db`, and its relay publishing to `exchange` on `bus` until
/// `shutdown` turns true.
pub fn service(
    db: Db,
    bus: EventBus,
    exchange: &str,
    shutdown: watch::Receiver<bool>,
) -> (ChatServiceServer<grpc::ChatGrpc>, JoinHandle<()>) {
    let signal = RelaySignal::default();
    let relay = relay(db.clone(), bus, exchange, signal.clone());
    let relay_task = relay.spawn(shutdown.clone());
    tokio::spawn(common::housekeeping::run(
        db.clone(),
        std::time::Duration::from_secs(3600),
        vec![
            pipeline::outbox::HOUSEKEEPING,
            common::housekeeping::IDEMPOTENCY_KEYS,
        ],
        shutdown,
    ));
    let grpc = grpc::ChatGrpc::new(Store::new(db, signal));
    (ChatServiceServer::new(grpc), relay_task)
}
