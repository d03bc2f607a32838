use std::net::SocketAddr;

use clap::Parser;

/// chat-manager: the gRPC service for chats and chatrooms (split deployment).
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// PostgreSQL URL (postgres://...), or a SQLite file path.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// PostgreSQL schema this service owns (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "chat_manager")]
    pub database_schema: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: u32,
    /// RabbitMQ URL the outbox relay publishes to.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: String,
    /// Topic exchange for chat events.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = crate::DEFAULT_EXCHANGE)]
    pub events_exchange: String,
    /// gRPC listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:9001")]
    pub listen_addr: SocketAddr,
}
