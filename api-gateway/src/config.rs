use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::telemetry::LogFormat;

/// The customer id of the seed tutorial: the embedded default's printed token is for it, so
/// the tutorial's requests line up.
pub const SEED_CUSTOMER_ID: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

/// api-gateway: the chat REST API. With no upstream URLs it runs everything in this process
/// (the embedded default); with CHAT_MANAGER_URL and MESSAGE_MANAGER_URL it forwards to the
/// split services.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a token (signed with JWT_SECRET, or the embedded default's key in DATA_DIR).
    Token(TokenArgs),
    /// Exit 0 when the gateway at LISTEN_ADDR answers GET /readyz with 200, else 1 with the
    /// reason.
    Healthcheck,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// HTTP listen address (also where `healthcheck` asks).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen_addr: SocketAddr,
    /// HS256 signing key of the tokens. Required with CHAT_MANAGER_URL; the embedded default
    /// otherwise keeps a generated key in DATA_DIR.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// chat-manager's gRPC URL (e.g. http://127.0.0.1:9001). Unset: the embedded default.
    #[arg(long, env = "CHAT_MANAGER_URL")]
    pub chat_manager_url: Option<String>,
    /// message-manager's gRPC URL (e.g. http://127.0.0.1:9002). Required with CHAT_MANAGER_URL.
    #[arg(long, env = "MESSAGE_MANAGER_URL")]
    pub message_manager_url: Option<String>,
    /// RabbitMQ, where the WebSocket's events come from (split deployment; required with
    /// CHAT_MANAGER_URL). The embedded default uses its in-process bus.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// chat-manager's events exchange.
    #[arg(long, env = "CHAT_EVENTS_EXCHANGE", default_value = "chat.events")]
    pub chat_events_exchange: String,
    /// message-manager's events exchange.
    #[arg(
        long,
        env = "MESSAGE_EVENTS_EXCHANGE",
        default_value = "message.events"
    )]
    pub message_events_exchange: String,
    /// Where the embedded default keeps its SQLite files and generated key.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Prometheus metrics listen address (GET /metrics); in the embedded default it shows the
    /// in-process services' metrics too.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,
    /// Requests per second one token may make, sustained (429 with Retry-After beyond it);
    /// 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = crate::rate_limit::DEFAULT_PER_SECOND)]
    pub rate_limit_per_second: u32,
    /// Requests one token may make at once, above the sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = crate::rate_limit::DEFAULT_BURST)]
    pub rate_limit_burst: u32,
    /// Seconds a client connection may take to send a request's headers, and may stay idle
    /// between requests, before it is closed. Behind a load balancer, set it above the
    /// balancer's idle timeout.
    #[arg(
        long,
        env = "HTTP_HEADER_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub http_header_timeout_secs: u64,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The tenant.
    #[arg(long, default_value = SEED_CUSTOMER_ID)]
    pub customer_id: uuid::Uuid,
    /// The agent identity; without it the token has the `customer` shape (a customer-level
    /// admin with no agent identity).
    #[arg(long)]
    pub agent_id: Option<uuid::Uuid>,
    /// The agent's display name (becomes `target_name` of what the agent posts).
    #[arg(long, default_value = "")]
    pub name: String,
    /// admin, manager, agent, superadmin, or a numeric bit mask.
    #[arg(long, default_value = "admin", value_parser = parse_permission)]
    pub permission: u64,
    /// Lifetime in hours.
    #[arg(long, default_value_t = 24)]
    pub ttl_hours: u64,
}

fn parse_permission(s: &str) -> Result<u64, String> {
    use crate::auth::permission::*;
    match s {
        "admin" => Ok(CUSTOMER_ADMIN),
        "manager" => Ok(CUSTOMER_MANAGER),
        "agent" => Ok(CUSTOMER_AGENT),
        "superadmin" => Ok(PROJECT_SUPER_ADMIN),
        other => {
            let parsed = match other.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => other.parse(),
            };
            parsed.map_err(|_| format!("unknown permission {other:?}: use admin, manager, agent, superadmin or a number"))
        }
    }
}
