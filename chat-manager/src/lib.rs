//! chat-manager: chats and their per-participant chatrooms, over gRPC (`chat.v1.ChatService`).
//!
//! `service()` builds the gRPC service and its outbox relay; `main.rs` serves it on a socket,
//! and the gateway's embedded default calls it in-process. Same code either way.

pub mod chatrooms;
pub mod chats;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;

use common::bus::EventBus;
use common::db::{Db, DbConnection};
use common::outbox::{self, Relay, RelaySignal};
use diesel::Connection;
use proto::chat::v1::chat_service_server::ChatServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chats::Change;
use crate::error::ChatError;

/// CloudEvents `source` of chat-manager's events.
pub const EVENT_SOURCE: &str = "chat-manager";
/// The exchange chat-manager publishes to, unless configured otherwise.
pub const DEFAULT_EXCHANGE: &str = "chat.events";

/// The domain entry point: runs reads, and runs writes in one transaction with their events.
#[derive(Debug, Clone)]
pub struct ChatManager {
    db: Db,
    relay: RelaySignal,
}

impl ChatManager {
    pub fn new(db: Db, relay: RelaySignal) -> Self {
        ChatManager { db, relay }
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, ChatError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ChatError> + Send + 'static,
        T: Send + 'static,
    {
        self.db.run(f).await
    }

    /// Commits the change and the events it implies together, then wakes the relay.
    pub async fn write<T, F>(&self, request_id: Option<String>, f: F) -> Result<T, ChatError>
    where
        F: FnOnce(&mut DbConnection) -> Result<Change<T>, ChatError> + Send + 'static,
        T: Send + 'static,
    {
        let result = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let (value, events) = f(conn)?;
                    outbox::record(conn, EVENT_SOURCE, request_id.as_deref(), &events)?;
                    Ok(value)
                })
            })
            .await;
        if result.is_ok() {
            self.relay.wake();
        }
        result
    }
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
    let relay = Relay::new(db.clone(), bus, exchange, signal.clone());
    let relay_task = tokio::spawn(relay.run(shutdown));
    let grpc = grpc::ChatGrpc::new(ChatManager::new(db, signal));
    (ChatServiceServer::new(grpc), relay_task)
}
