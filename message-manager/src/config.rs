use std::net::SocketAddr;

use clap::{Args, Parser};
use common::telemetry::LogFormat;

/// message-manager: the gRPC service for chatmessages and chatroommessages (split deployment).
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
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "message_manager")]
    pub database_schema: String,
    /// RabbitMQ: the relay publishes here, and chat events are consumed from here.
    #[command(flatten)]
    pub amqp: pipeline::bus::AmqpArgs,
    /// Topic exchange for message events.
    #[arg(long, env = "MESSAGE_EVENTS_EXCHANGE", default_value = crate::DEFAULT_EXCHANGE,
          alias = "events-exchange")]
    pub message_events_exchange: String,
    /// chat-manager's exchange, consumed for the membership view.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = pipeline::topology::CHAT_EXCHANGE)]
    pub chat_events_exchange: String,
    /// The durable queue of chat events.
    #[arg(long, env = "CHAT_EVENTS_QUEUE", default_value = crate::DEFAULT_CHAT_EVENTS_QUEUE)]
    pub chat_events_queue: String,
    /// webhook-manager's durable queue of events: declared here too, so events published
    /// before webhook-manager first starts wait for it there. Empty: none (webhook-manager is
    /// not deployed).
    #[arg(long, env = "WEBHOOK_EVENTS_QUEUE", default_value = pipeline::topology::WEBHOOK_EVENTS_QUEUE)]
    pub webhook_events_queue: String,
    /// chat-manager's gRPC URL, asked when the membership view has not caught up.
    #[arg(long, env = "CHAT_MANAGER_URL", required = true)]
    pub chat_manager_url: Option<String>,
    /// How long the membership view vouches for a chat it has not confirmed with chat-manager
    /// (or seen a chat event of): a room deleted without its event arriving stops getting
    /// copies within this. `60s`, `2m`.
    #[arg(long, env = "MEMBERSHIP_MAX_AGE", default_value = "60s",
          value_parser = common::db::parse_timeout)]
    pub membership_max_age: std::time::Duration,
    /// Internal authentication and reflection.
    #[command(flatten)]
    pub grpc: common::grpc_server::GrpcArgs,
    /// gRPC listen address (also where `healthcheck` asks).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:9002",
        global = true
    )]
    pub listen_addr: SocketAddr,
    /// Prometheus metrics listen address (GET /metrics).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: SocketAddr,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("message-manager").chain(args.iter().copied()))
    }

    #[test]
    fn subcommands_need_only_what_they_use() {
        let cli = parse(&["healthcheck"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck)));
        let cli = parse(&["migrate", "--log-format", "json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.serve.log_format, LogFormat::Json);
        if std::env::var_os("CHAT_MANAGER_URL").is_none() {
            let err = parse(&["--database-url", "x", "--amqp-url", "y"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
    }
}
