use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
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

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Exit 0 when the service at LISTEN_ADDR answers SERVING (grpc.health.v1), else 1 with
    /// the reason.
    Healthcheck,
    /// Apply the pending database migrations (creating the schema) and exit.
    Migrate,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// PostgreSQL URL (postgres://...), or a SQLite file path.
    #[arg(long, env = "DATABASE_URL", required = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema this service owns (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "chat_manager")]
    pub database_schema: String,
    /// Connections in the PostgreSQL pool: about two per core of the database's host is
    /// enough (more only queue inside PostgreSQL; measured in BENCHMARKS.md).
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = common::db::DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    /// Longest one PostgreSQL statement may run (`statement_timeout`; not for migrations):
    /// `10s`, `500ms`, `0` for none.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "10s",
          value_parser = common::db::parse_timeout)]
    pub database_statement_timeout: Duration,
    /// Longest a PostgreSQL statement may wait for a lock (`lock_timeout`): `5s`, `0` for none.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT", default_value = "5s",
          value_parser = common::db::parse_timeout)]
    pub database_lock_timeout: Duration,
    /// Apply pending migrations at start (turn off where `chat-manager migrate` runs once per
    /// rollout).
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub run_migrations: bool,
    /// RabbitMQ URL the outbox relay publishes to.
    #[arg(long, env = "AMQP_URL", required = true, hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Topic exchange for chat events.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = crate::DEFAULT_EXCHANGE)]
    pub events_exchange: String,
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

impl ServeConfig {
    /// The PostgreSQL timeouts: the statement and lock timeouts configured, the others their
    /// defaults (a `connect_timeout` in DATABASE_URL wins over the default).
    pub fn db_timeouts(&self) -> common::db::DbTimeouts {
        common::db::DbTimeouts {
            statement: self.database_statement_timeout,
            lock: self.database_lock_timeout,
            ..common::db::DbTimeouts::default()
        }
    }

    /// DATABASE_URL, which `migrate` needs although clap does not require it there.
    pub fn database_url(&self) -> Result<&str, &'static str> {
        self.database_url
            .as_deref()
            .ok_or("DATABASE_URL (or --database-url) is required")
    }
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
        assert!(cli.serve.run_migrations);
    }

    #[test]
    fn subcommands_need_only_what_they_use() {
        let cli = parse(&["healthcheck", "--listen-addr", "0.0.0.0:7001"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck)));
        assert_eq!(cli.serve.listen_addr.to_string(), "0.0.0.0:7001");
        let cli = parse(&["migrate"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        if std::env::var_os("DATABASE_URL").is_none() {
            assert!(cli.serve.database_url().is_err());
        }
    }

    #[test]
    fn run_migrations_takes_boolish_values() {
        let base = ["--database-url", "x", "--amqp-url", "y", "--run-migrations"];
        for (value, expected) in [("false", false), ("0", false), ("true", true), ("1", true)] {
            let mut args = base.to_vec();
            args.push(value);
            assert_eq!(
                parse(&args).unwrap().serve.run_migrations,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn database_timeouts_default_and_parse() {
        let base = ["--database-url", "x", "--amqp-url", "y"];
        if std::env::var_os("DATABASE_STATEMENT_TIMEOUT").is_none()
            && std::env::var_os("DATABASE_LOCK_TIMEOUT").is_none()
        {
            let t = parse(&base).unwrap().serve.db_timeouts();
            assert_eq!(t, common::db::DbTimeouts::default());
            assert_eq!(t.statement, Duration::from_secs(10));
            assert_eq!(t.lock, Duration::from_secs(5));
        }
        let mut args = base.to_vec();
        args.extend([
            "--database-statement-timeout",
            "750ms",
            "--database-lock-timeout",
            "0",
        ]);
        let t = parse(&args).unwrap().serve.db_timeouts();
        assert_eq!(t.statement, Duration::from_millis(750));
        assert_eq!(t.lock, Duration::ZERO);
        let mut args = base.to_vec();
        args.extend(["--database-lock-timeout", "5 hours"]);
        let err = parse(&args).unwrap_err().to_string();
        assert!(err.contains("--database-lock-timeout"), "{err}");
    }
}
