use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use api_gateway::app::AppState;
use api_gateway::auth::{TokenRequest, TokenVerifier, mint_token};
use api_gateway::config::{
    Cli, Command, DEFAULT_MAX_TOKEN_HOURS, InternalTokenArgs, SEED_CUSTOMER_ID, ServeConfig,
    TokenArgs,
};
use api_gateway::embedded;
use api_gateway::health::{self, Readiness};
use api_gateway::rate_limit::RateLimit;
use api_gateway::ws::WsSettings;
use api_gateway::ws::hub::{EventHub, HubExchanges};
use clap::Parser;
use common::grpc_client;
use common::service_auth::{InternalKey, ServiceName};
use pipeline::bus::EventBus;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = common::telemetry::init(cli.serve.log_format, "api-gateway");
    let result = match cli.command {
        Some(Command::Healthcheck(args)) => match health::check_ready(args.listen_addr) {
            Ok(()) => {
                println!("ready");
                Ok(())
            }
            Err(why) => {
                eprintln!("not ready: {why}");
                std::process::exit(1);
            }
        },
        Some(Command::Token(args)) => token(&args),
        Some(Command::InternalToken(args)) => internal_token(&args),
        Some(Command::Watch(args)) => api_gateway::ws_client::run(&args).await,
        None => serve(cli.serve).await,
    };
    telemetry.shutdown().await;
    common::exit_code("api-gateway", result)
}

/// `api-gateway token`: prints a token, and on stderr which key signed it.
fn token(args: &TokenArgs) -> Result<(), BoxError> {
    let max_hours = args
        .jwt
        .jwt_max_lifetime
        .map_or(DEFAULT_MAX_TOKEN_HOURS, |max| max.as_secs() / 3600);
    if args.ttl_hours > max_hours {
        return Err(format!(
            "--ttl-hours {}: at most {max_hours} hours ({})",
            args.ttl_hours,
            match args.jwt.jwt_max_lifetime {
                Some(_) => "JWT_MAX_LIFETIME",
                None => "30 days; set JWT_MAX_LIFETIME for another bound",
            }
        )
        .into());
    }
    let split = args.chat_manager_url.is_some();
    let (secret, source) =
        embedded::signing_key(args.jwt.jwt_secret.as_deref(), &args.data_dir, split, false)?;
    let token = mint_token(
        &secret,
        &TokenRequest {
            customer_id: args.customer_id,
            agent_id: args.agent_id,
            agent_name: args.name.clone(),
            permission: args.permission,
            ttl: Duration::from_secs(args.ttl_hours * 3600),
            issuer: args.jwt.jwt_issuer.clone(),
            audience: args.jwt.jwt_audience.clone(),
        },
    )?;
    println!("{token}");
    eprintln!("signed with {source}, valid {} h", args.ttl_hours);
    Ok(())
}

/// `api-gateway internal-token`: a token to call a service directly, as the gateway does.
fn internal_token(args: &InternalTokenArgs) -> Result<(), BoxError> {
    let key = InternalKey::from_config(args.internal_auth_secret.as_deref())?;
    let audience = ServiceName::parse(&args.audience).ok_or("--audience: unknown service")?;
    println!("{}", key.token(ServiceName::ApiGateway, audience));
    Ok(())
}

async fn serve(config: ServeConfig) -> Result<(), BoxError> {
    // Installed first: a SIGTERM during start-up then stops the service cleanly.
    let shutdown = common::shutdown_signal();
    let split = config.chat_manager_url.is_some() || config.message_manager_url.is_some();
    // Refused before anything starts: a missing or weak key.
    let (secret, _) = embedded::signing_key(
        config.jwt.jwt_secret.as_deref(),
        &config.data_dir,
        split,
        true,
    )?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (_, metrics_server) =
        common::metrics::spawn_server(config.metrics_addr, shutdown_rx.clone()).await?;
    tasks.push(metrics_server);

    let (chat, message, webhook, bus) =
        match (&config.chat_manager_url, &config.message_manager_url) {
            (Some(chat), Some(message)) => {
                let key = InternalKey::from_config(config.internal_auth_secret.as_deref())?;
                let endpoint = config
                    .amqp
                    .endpoint("with CHAT_MANAGER_URL: the WebSocket's events come from there")?;
                let client = |url: &str, audience| -> Result<_, BoxError> {
                    Ok(grpc_client::signed(
                        grpc_client::remote(url)?,
                        key.credentials(ServiceName::ApiGateway, audience),
                    ))
                };
                let webhook = match &config.webhook_manager_url {
                    Some(url) => Some(client(url, ServiceName::WebhookManager)?),
                    None => {
                        tracing::warn!(
                            "WEBHOOK_MANAGER_URL is not set: the webhook endpoints answer 503"
                        );
                        None
                    }
                };
                (
                    client(chat, ServiceName::ChatManager)?,
                    client(message, ServiceName::MessageManager)?,
                    webhook,
                    EventBus::amqp(endpoint),
                )
            }
            (None, None) => {
                let embedded = embedded::start(&config.data_dir, shutdown_rx.clone()).await?;
                tasks.extend(embedded.tasks);
                (
                    embedded.chat,
                    embedded.message,
                    Some(embedded.webhook),
                    embedded.bus,
                )
            }
            _ => {
                return Err(
                    "set both CHAT_MANAGER_URL and MESSAGE_MANAGER_URL, or neither (embedded)"
                        .into(),
                );
            }
        };
    let ws = WsSettings {
        max_sockets_per_caller: config.ws_max_sockets_per_caller,
        ..WsSettings::default()
    };
    let hub_bus = bus.clone();
    let (hub, hub_task) = EventHub::start(
        bus,
        &HubExchanges::new(
            &config.chat_events_exchange,
            &config.message_events_exchange,
        )
        .with_typing(&config.typing_exchange),
        &ws,
        shutdown_rx.clone(),
    );
    tasks.push(hub_task);
    let readiness = match split {
        true => Readiness::upstreams(chat.clone(), message.clone(), Some(hub_bus)),
        false => Readiness::InProcess,
    };
    let verifier = TokenVerifier::with_rules(&secret, config.jwt.rules());
    let mut state = AppState::new(chat, message, verifier);
    if let Some(webhook) = webhook {
        state = state.with_webhooks(webhook);
    }
    let state = state
        .with_hub(hub, ws)
        .with_readiness(readiness)
        .with_rate_limits(
            RateLimit {
                per_second: config.rate_limit_per_second,
                burst: config.rate_limit_burst,
            },
            RateLimit {
                per_second: config.auth_failures_per_second,
                burst: config.auth_failure_burst,
            },
        )
        .with_client_ip_header(config.client_ip_header.clone());
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    let addr = listener.local_addr()?;

    if split {
        tracing::info!(%addr, "api-gateway listening");
    } else {
        announce_embedded(&config, &secret, addr)?;
    }

    let http = api_gateway::HttpSettings {
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
    };
    api_gateway::serve(listener, state, http, shutdown).await?;
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// The embedded default's welcome: where it serves, and an admin token for the seed's
/// customer, written to `DATA_DIR/admin-token` (mode 0600) and printed only to a terminal
/// outside a container (a container's terminal output ends up in its log).
fn announce_embedded(
    config: &ServeConfig,
    secret: &[u8],
    addr: std::net::SocketAddr,
) -> Result<(), BoxError> {
    let token = mint_token(
        secret,
        &TokenRequest {
            customer_id: SEED_CUSTOMER_ID.parse()?,
            agent_id: None,
            agent_name: String::new(),
            permission: api_gateway::auth::permission::CUSTOMER_ADMIN,
            ttl: Duration::from_secs(24 * 3600),
            issuer: config.jwt.jwt_issuer.clone(),
            audience: config.jwt.jwt_audience.clone(),
        },
    )?;
    let file = config.data_dir.join("admin-token");
    embedded::write_private(&file, &format!("{token}\n"))?;
    let file = std::path::absolute(&file).unwrap_or(file);
    println!(
        "Chat API (embedded, data in {}) ready at http://{addr}/v1.0",
        config.data_dir.display()
    );
    println!(
        "Admin token for customer {SEED_CUSTOMER_ID}, valid 24 h, in {}:",
        file.display()
    );
    if std::io::stdout().is_terminal() && !in_container() {
        println!("{token}");
        println!("Example: curl 'http://{addr}/v1.0/chats?token={token}'");
    } else {
        println!("(not printed: this output may be kept in a log; read the file)");
        println!(
            "Example: curl \"http://{addr}/v1.0/chats?token=$(cat {})\"",
            file.display()
        );
    }
    Ok(())
}

/// Whether this process runs in a container (Docker, Podman, Kubernetes).
fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}
