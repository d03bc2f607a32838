use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::telemetry::LogFormat;

/// The customer id of the seed tutorial: the embedded default's printed token is for it, so
/// the tutorial's requests line up.
pub const SEED_CUSTOMER_ID: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

/// The longest lifetime `api-gateway token` mints when JWT_MAX_LIFETIME is not set.
pub const DEFAULT_MAX_TOKEN_HOURS: u64 = 30 * 24;

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
    /// Mint a token, signed with JWT_SECRET or, for the embedded default, with the key it
    /// keeps in DATA_DIR (run it where the gateway runs, or pass --data-dir).
    Token(TokenArgs),
    /// Exit 0 when the gateway at LISTEN_ADDR answers GET /readyz with 200, else 1 with the
    /// reason.
    Healthcheck(HealthcheckArgs),
    /// Mint a short-lived token for calling chat-manager or message-manager directly (with
    /// grpcurl, say), signed with INTERNAL_AUTH_SECRET.
    InternalToken(InternalTokenArgs),
    /// Subscribe to a running gateway's WebSocket and print each frame as a JSON line.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// A topic to subscribe to (repeat for more). Default: every chat and chatmessage event of
    /// the seed tutorial's customer.
    #[arg(long = "topic")]
    pub topic: Vec<String>,
    /// The gateway's base URL. Default: the gateway at LISTEN_ADDR (on loopback when that is
    /// an unspecified address), as `healthcheck` asks it.
    #[arg(long)]
    pub url: Option<String>,
    /// Where the gateway listens, when --url is not given.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// The token to connect with. Default: the embedded default's admin token, in
    /// DATA_DIR/admin-token.
    #[arg(long)]
    pub token: Option<String>,
    /// Where the embedded default keeps its admin token.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Stop after this many events (default: until the socket closes or Ctrl-C).
    #[arg(long)]
    pub count: Option<usize>,
}

impl WatchArgs {
    pub fn topics(&self) -> Vec<String> {
        if self.topic.is_empty() {
            ["chat", "messagechat"]
                .iter()
                .map(|resource| format!("customer_id:{SEED_CUSTOMER_ID}:{resource}"))
                .collect()
        } else {
            self.topic.clone()
        }
    }
}

/// How tokens are signed and which ones the gateway accepts: shared by serving and minting.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 signing key of the tokens, at least 32 bytes (`openssl rand -hex 32`). Required
    /// with CHAT_MANAGER_URL; the embedded default otherwise keeps a generated key in DATA_DIR.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// When set, tokens must carry this `iss` claim (and minted ones do).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud` claim (and minted ones do).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// When set, tokens that live longer (from `iat`, or from now) are refused, and the token
    /// command mints none longer: `12h`, `7d`, `90m`.
    #[arg(long, env = "JWT_MAX_LIFETIME", value_parser = parse_lifetime)]
    pub jwt_max_lifetime: Option<Duration>,
}

impl JwtArgs {
    /// What the verifier checks beyond the signature and `exp`.
    pub fn rules(&self) -> crate::auth::TokenRules {
        crate::auth::TokenRules {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            max_lifetime: self.jwt_max_lifetime,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// HTTP listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// chat-manager's gRPC URL (e.g. http://127.0.0.1:9001). Unset: the embedded default.
    #[arg(long, env = "CHAT_MANAGER_URL")]
    pub chat_manager_url: Option<String>,
    /// message-manager's gRPC URL (e.g. http://127.0.0.1:9002). Required with CHAT_MANAGER_URL.
    #[arg(long, env = "MESSAGE_MANAGER_URL")]
    pub message_manager_url: Option<String>,
    /// webhook-manager's gRPC URL (e.g. http://127.0.0.1:9003), with CHAT_MANAGER_URL. Unset
    /// there: the webhook endpoints answer 503.
    #[arg(long, env = "WEBHOOK_MANAGER_URL")]
    pub webhook_manager_url: Option<String>,
    /// The key calls to chat-manager and message-manager are signed with (at least 32 bytes,
    /// the same in the three processes). Required with CHAT_MANAGER_URL; the embedded default
    /// makes one per start.
    #[arg(long, env = "INTERNAL_AUTH_SECRET", hide_env_values = true)]
    pub internal_auth_secret: Option<String>,
    #[command(flatten)]
    pub amqp: pipeline::bus::AmqpArgs,
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
    /// The exchange the gateways share "is typing" signals on (declared by the gateway).
    #[arg(long, env = "TYPING_EXCHANGE", default_value = pipeline::topology::TYPING_EXCHANGE)]
    pub typing_exchange: String,
    /// Where the embedded default keeps its SQLite files, its key and the admin token.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Prometheus metrics listen address (GET /metrics); in the embedded default it shows the
    /// in-process services' metrics too.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,
    /// Requests per second one caller (an agent, or a customer's customer-level token) may
    /// make, sustained (429 with Retry-After beyond it); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = crate::rate_limit::DEFAULT_PER_SECOND)]
    pub rate_limit_per_second: u32,
    /// Requests one caller may make at once, above the sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = crate::rate_limit::DEFAULT_BURST)]
    pub rate_limit_burst: u32,
    /// Failed authentications per second one client address may make, sustained (then 429
    /// before any token is checked); 0 turns the limit off.
    #[arg(long, env = "AUTH_FAILURES_PER_SECOND", default_value_t = crate::rate_limit::DEFAULT_FAILURES_PER_SECOND)]
    pub auth_failures_per_second: u32,
    /// Failed authentications one client address may make at once.
    #[arg(long, env = "AUTH_FAILURE_BURST", default_value_t = crate::rate_limit::DEFAULT_FAILURE_BURST)]
    pub auth_failure_burst: u32,
    /// Behind a load balancer: the header it puts the client's address in (the last address
    /// of `X-Forwarded-For`, say); failed authentications are counted per that address.
    /// Unset: the connection's peer address. Set it only behind a proxy that overwrites or
    /// appends the header, or clients could name any address.
    #[arg(long, env = "CLIENT_IP_HEADER")]
    pub client_ip_header: Option<http::HeaderName>,
    /// WebSockets one caller (an agent, or a customer-level token) may hold open at once.
    #[arg(long, env = "WS_MAX_SOCKETS_PER_CALLER", default_value_t = crate::ws::DEFAULT_MAX_SOCKETS_PER_CALLER)]
    pub ws_max_sockets_per_caller: u32,
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
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Where the gateway listens (an unspecified address is asked on loopback).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
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
    /// Lifetime in whole hours: at least 1, at most JWT_MAX_LIFETIME (30 days when that is
    /// not set).
    #[arg(long, default_value_t = 24, value_parser = parse_ttl_hours, allow_negative_numbers = true)]
    pub ttl_hours: u64,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Where the embedded default keeps its key (the folder it runs in, `./data`, unless it
    /// was given another).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Set in the split deployment: the key must then come from JWT_SECRET (never from, or
    /// into, DATA_DIR).
    #[arg(long, env = "CHAT_MANAGER_URL", hide = true)]
    pub chat_manager_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InternalTokenArgs {
    /// The service the token is for.
    #[arg(long, value_parser = ["chat-manager", "message-manager", "webhook-manager"])]
    pub audience: String,
    /// The shared internal key (see the configuration table).
    #[arg(long, env = "INTERNAL_AUTH_SECRET", hide_env_values = true)]
    pub internal_auth_secret: Option<String>,
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

/// A token's lifetime in hours: a whole number, at least 1 (a token of 0 hours is expired the
/// moment it is minted). The upper bound depends on JWT_MAX_LIFETIME, checked when minting.
fn parse_ttl_hours(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i64>() {
        Ok(h) if h >= 1 => Ok(h as u64),
        Ok(_) => Err(format!(
            "{s:?}: a token must live at least 1 hour (one of 0 hours or less is expired when minted)"
        )),
        Err(_) => Err(format!("{s:?}: a whole number of hours, e.g. 8")),
    }
}

/// A lifetime: `<n>m`, `<n>h` or `<n>d`, more than zero.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: a whole number with m, h or d, e.g. 12h"))?;
    let secs = match unit {
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?}: the unit is m, h or d, e.g. 12h")),
    };
    match secs {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        Some(_) => Err(format!("{s:?}: must be more than zero")),
        None => Err(format!("{s:?}: too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("api-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn token_lifetimes_must_be_useful_and_bounded() {
        for (ttl, needle) in [
            ("0", "at least 1 hour"),
            ("-1", "at least 1 hour"),
            ("soon", "whole number of hours"),
        ] {
            let err = parse(&["token", "--ttl-hours", ttl])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{ttl}: {err}");
        }
        let Some(Command::Token(args)) = parse(&["token", "--ttl-hours", "8"]).unwrap().command
        else {
            panic!("a token command");
        };
        assert_eq!(args.ttl_hours, 8);
    }

    #[test]
    fn lifetimes_parse_with_their_unit() {
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_lifetime("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["0h", "12", "h", "-1d", "1y", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    /// `token --help` lists what minting uses, not the server's settings.
    #[test]
    fn subcommand_help_shows_only_what_applies() {
        let help = |sub: &str| parse(&[sub, "--help"]).unwrap_err().render().to_string();
        let token = help("token");
        for shown in ["--ttl-hours", "--jwt-secret", "--data-dir", "--agent-id"] {
            assert!(token.contains(shown), "{shown} missing: {token}");
        }
        for hidden in [
            "--listen-addr",
            "--log-format",
            "--metrics-addr",
            "--chat-manager-url",
        ] {
            assert!(!token.contains(hidden), "{hidden} shown: {token}");
        }
        let health = help("healthcheck");
        assert!(health.contains("--listen-addr"), "{health}");
        assert!(!health.contains("--jwt-secret"), "{health}");
    }
}
