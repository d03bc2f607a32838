use std::net::SocketAddr;

use clap::Parser;

/// message-manager: the gRPC service for chatmessages and chatroommessages (split deployment).
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// PostgreSQL URL (postgres://...), or a SQLite file path.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// PostgreSQL schema this service owns (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "message_manager")]
    pub database_schema: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: u32,
    /// RabbitMQ URL: the relay publishes here, and chat events are consumed from here.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: String,
    /// Topic exchange for message events.
    #[arg(long, env = "MESSAGE_EVENTS_EXCHANGE", default_value = crate::DEFAULT_EXCHANGE)]
    pub events_exchange: String,
    /// chat-manager's exchange, consumed for the membership view.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = "chat.events")]
    pub chat_events_exchange: String,
    /// The durable queue of chat events.
    #[arg(long, env = "CHAT_EVENTS_QUEUE", default_value = crate::DEFAULT_CHAT_EVENTS_QUEUE)]
    pub chat_events_queue: String,
    /// chat-manager's gRPC URL, asked when the membership view has not caught up.
    #[arg(long, env = "CHAT_MANAGER_URL")]
    pub chat_manager_url: String,
    /// gRPC listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:9002")]
    pub listen_addr: SocketAddr,
}
