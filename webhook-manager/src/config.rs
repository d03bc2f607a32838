use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser};
use common::telemetry::LogFormat;

use crate::address::AddressPolicy;
use crate::deliveries::RetryPolicy;
use crate::dispatch::DispatchSettings;

/// webhook-manager: the gRPC service for webhooks, delivering chat events to customers'
/// servers (split deployment).
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
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "webhook_manager")]
    pub database_schema: String,
    /// RabbitMQ: both services' events are consumed from here.
    #[command(flatten)]
    pub amqp: pipeline::bus::AmqpArgs,
    /// chat-manager's exchange.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = pipeline::topology::CHAT_EXCHANGE)]
    pub chat_events_exchange: String,
    /// message-manager's exchange.
    #[arg(long, env = "MESSAGE_EVENTS_EXCHANGE", default_value = pipeline::topology::MESSAGE_EXCHANGE)]
    pub message_events_exchange: String,
    /// The durable queue of both exchanges' events.
    #[arg(long, env = "WEBHOOK_EVENTS_QUEUE", default_value = crate::DEFAULT_EVENTS_QUEUE)]
    pub webhook_events_queue: String,
    /// Deliver to loopback, private and link-local addresses too (refused by default: a
    /// webhook could otherwise reach inside the cluster).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub webhook_allow_private_addresses: bool,
    /// The wait before a failed attempt's first retry, doubled for each further one (up to an
    /// hour). `5s`, `500ms`.
    #[arg(long, env = "WEBHOOK_FIRST_RETRY", default_value = "5s",
          value_parser = common::db::parse_timeout)]
    pub webhook_first_retry: Duration,
    /// How long a delivery is retried before it is `failed`. `24h`.
    #[arg(long, env = "WEBHOOK_RETRY_FOR", default_value = "24h",
          value_parser = parse_period)]
    pub webhook_retry_for: Duration,
    /// Attempts in flight to one webhook at a time.
    #[arg(long, env = "WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub webhook_endpoint_concurrency: u16,
    /// Internal authentication and reflection.
    #[command(flatten)]
    pub grpc: common::grpc_server::GrpcArgs,
    /// gRPC listen address (also where `healthcheck` asks).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:9003",
        global = true
    )]
    pub listen_addr: SocketAddr,
    /// Prometheus metrics listen address (GET /metrics).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: SocketAddr,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

impl ServeConfig {
    pub fn dispatch(&self) -> DispatchSettings {
        DispatchSettings {
            retry: RetryPolicy {
                first_retry: self.webhook_first_retry,
                retry_for: self.webhook_retry_for,
            },
            address: AddressPolicy {
                allow_private: self.webhook_allow_private_addresses,
            },
            endpoint_concurrency: usize::from(self.webhook_endpoint_concurrency),
            ..DispatchSettings::default()
        }
    }

    pub fn topology(&self) -> crate::Topology {
        crate::Topology {
            chat_exchange: self.chat_events_exchange.clone(),
            message_exchange: self.message_events_exchange.clone(),
            queue: self.webhook_events_queue.clone(),
        }
    }
}

/// A period: `30s`, `15m`, `24h`, `2d`.
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number and a unit (s, m, h, d), e.g. 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d, e.g. 24h")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("webhook-manager").chain(args.iter().copied()))
    }

    #[test]
    fn delivery_settings_come_from_flags_with_the_contract_as_default() {
        let cli = parse(&["--database-url", "x", "--amqp-url", "y"]).unwrap();
        let d = cli.serve.dispatch();
        if std::env::var_os("WEBHOOK_RETRY_FOR").is_none() {
            assert_eq!(d.retry.retry_for, Duration::from_secs(86_400));
            assert_eq!(d.retry.first_retry, Duration::from_secs(5));
            assert!(!d.address.allow_private);
        }
        let cli = parse(&[
            "--database-url",
            "x",
            "--amqp-url",
            "y",
            "--webhook-allow-private-addresses",
            "true",
            "--webhook-retry-for",
            "2d",
            "--webhook-first-retry",
            "200ms",
        ])
        .unwrap();
        let d = cli.serve.dispatch();
        assert!(d.address.allow_private);
        assert_eq!(d.retry.retry_for, Duration::from_secs(2 * 86_400));
        assert_eq!(d.retry.first_retry, Duration::from_millis(200));
        assert!(parse(&["--webhook-retry-for", "soon"]).is_err());
        assert!(matches!(
            parse(&["healthcheck"]).unwrap().command,
            Some(Command::Healthcheck)
        ));
    }
}
