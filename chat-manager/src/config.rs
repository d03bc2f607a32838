use std::net::SocketAddr;

use clap::{Args, Parser};
use common::telemetry::LogFormat;

/// chat-manager: the gRPC service for chats and chatrooms (split deployment).
#[derive(Debug, Parser)]
#[command(version, about, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

pub use common::service::Command;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub db: common::db::DbArgs,
    /// PostgreSQL schema this service owns (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "chat_manager")]
    pub database_schema: String,
    /// RabbitMQ, where the outbox relay publishes.
    #[command(flatten)]
    pub amqp: pipeline::bus::AmqpArgs,
    /// Topic exchange for chat events.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = crate::DEFAULT_EXCHANGE,
          alias = "events-exchange")]
    pub chat_events_exchange: String,
    /// message-manager's durable queue of chat events: declared here too, so events published
    /// before message-manager first starts wait for it there.
    #[arg(long, env = "CHAT_EVENTS_QUEUE", default_value = pipeline::topology::CHAT_EVENTS_QUEUE)]
    pub chat_events_queue: String,
    /// message-manager's exchange (webhook-manager's queue binds it too; chat-manager declares
    /// only its own exchange's bindings).
    #[arg(long, env = "MESSAGE_EVENTS_EXCHANGE", default_value = pipeline::topology::MESSAGE_EXCHANGE)]
    pub message_events_exchange: String,
    /// webhook-manager's durable queue of events: declared here too, so events published
    /// before webhook-manager first starts wait for it there. Empty: none (webhook-manager is
    /// not deployed).
    #[arg(long, env = "WEBHOOK_EVENTS_QUEUE", default_value = pipeline::topology::WEBHOOK_EVENTS_QUEUE)]
    pub webhook_events_queue: String,
    /// Internal authentication and reflection.
    #[command(flatten)]
    pub grpc: common::grpc_server::GrpcArgs,
    /// gRPC listen address (also where `healthcheck` asks).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:9001",
        global = true
    )]
    pub listen_addr: SocketAddr,
    /// Prometheus metrics listen address (GET /metrics).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chat-manager").chain(args.iter().copied()))
    }

    #[test]
    fn serving_needs_the_database_and_broker() {
        if std::env::var_os("DATABASE_URL").is_none() && std::env::var_os("AMQP_URL").is_none() {
            let err = parse(&[]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
        let cli = parse(&[
            "--database-url",
            "postgres://db/x",
            "--amqp-url",
            "amqp://b",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert!(cli.serve.db.run_migrations);
    }

    #[test]
    fn subcommands_need_only_what_they_use() {
        let cli = parse(&["healthcheck", "--listen-addr", "0.0.0.0:7001"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck)));
        assert_eq!(cli.serve.listen_addr.to_string(), "0.0.0.0:7001");
        let cli = parse(&["migrate"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        if std::env::var_os("DATABASE_URL").is_none() {
            assert!(cli.serve.db.url().is_err());
        }
    }
}
